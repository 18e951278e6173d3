//! The AWS SAM [`Dialect`]: the template declares the `AWS::Serverless-2016-10-31` transform,
//! and each function is an `AWS::Serverless::Function` whose rule is an `EventBridgeRule`
//! event, from which SAM makes the rule (named after the function and the event) and the
//! permission for EventBridge to invoke the function. The function keeps the generated
//! least-privilege role, so SAM adds no managed policy.

use serde_json::{Value, json};

use super::function::FunctionPlan;
use super::rule::RulePlan;
use super::stack::{Dialect, Stack};

/// AWS SAM.
#[derive(Debug)]
pub(crate) struct Sam;

impl Dialect for Sam {
    fn transform(&self) -> Option<&'static str> {
        Some("AWS::Serverless-2016-10-31")
    }

    fn function(&self, function: &FunctionPlan) -> Value {
        let mut properties = function.properties(
            |bucket, key| ("CodeUri", json!({"Bucket": bucket, "Key": key})),
            |mode| ("Tracing", mode),
        );
        if let Some(rule) = &function.rule {
            let event = json!({
                "Type": "EventBridgeRule",
                "Properties": {
                    "Pattern": rule.pattern,
                    "DeadLetterConfig": rule.dead_letter_config(),
                    "RetryPolicy": rule.retry_policy(),
                },
            });
            properties.insert("Events".into(), json!({ event_name(function): event }));
        }
        json!({"Type": "AWS::Serverless::Function", "Properties": properties})
    }

    fn rule(&self, _stack: &mut Stack, function: &FunctionPlan, _rule: &RulePlan) -> String {
        // SAM names the rule it makes after the function and the event.
        format!("{}{}", function.id(), event_name(function))
    }
}

/// The name of the function's `EventBridgeRule` event.
fn event_name(function: &FunctionPlan) -> String {
    function.base.clone()
}

#[cfg(test)]
mod tests {
    use super::super::Format;
    use super::super::testing::{FILTERED, template};
    use super::*;

    #[test]
    fn the_rule_becomes_an_event_of_the_function_with_the_same_delivery() {
        let cfn = template(FILTERED, Format::Cloudformation);
        let r = &cfn["Resources"];
        let sam = template(FILTERED, Format::Sam);
        assert_eq!(sam["Transform"], "AWS::Serverless-2016-10-31");
        let f = &sam["Resources"]["EFunction"];
        assert_eq!(f["Type"], "AWS::Serverless::Function");
        let event = &f["Properties"]["Events"]["E"]["Properties"];
        assert_eq!(event["Pattern"], r["ERule"]["Properties"]["EventPattern"]);
        assert_eq!(
            event["DeadLetterConfig"],
            r["ERule"]["Properties"]["Targets"][0]["DeadLetterConfig"]
        );
        assert_eq!(
            event["RetryPolicy"],
            r["ERule"]["Properties"]["Targets"][0]["RetryPolicy"]
        );
        assert_eq!(
            f["Properties"]["Role"],
            json!({"Fn::GetAtt": ["ERole", "Arn"]}),
            "our role, not SAM's"
        );
        assert!(sam["Resources"].get("ERule").is_none());
        assert!(sam["Resources"].get("ERulePermission").is_none());
        assert!(sam["Outputs"].get("ERuleName").is_none());
        assert_eq!(
            sam["Resources"]["EDeadLetterQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"][0]["Condition"]
                ["ArnEquals"]["aws:SourceArn"],
            json!({"Fn::GetAtt": ["EFunctionE", "Arn"]}),
            "EventBridge may send dead letters from SAM's rule"
        );
    }
}
