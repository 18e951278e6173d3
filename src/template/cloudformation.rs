//! The plain CloudFormation [`Dialect`]: an `AWS::Lambda::Function` per pipeline, and its rule
//! as resources of their own — the `AWS::Events::Rule` with the compiled pattern, targeting the
//! function; the `AWS::Lambda::Permission` for EventBridge to invoke the function for that rule
//! only; and an output naming the rule.

use serde_json::{Value, json};

use super::function::FunctionPlan;
use super::rule::{EVENTS, RulePlan};
use super::stack::{Dialect, Stack};
use super::{get_att, reference};

/// The id of the rule's one target.
const TARGET_ID: &str = "cutover";

/// Plain CloudFormation.
#[derive(Debug)]
pub(crate) struct CloudFormation;

impl Dialect for CloudFormation {
    fn transform(&self) -> Option<&'static str> {
        None
    }

    fn function(&self, function: &FunctionPlan) -> Value {
        let properties = function.properties(
            |bucket, key| ("Code", json!({"S3Bucket": bucket, "S3Key": key})),
            |mode| ("TracingConfig", json!({ "Mode": mode })),
        );
        json!({"Type": "AWS::Lambda::Function", "Properties": properties})
    }

    fn rule(&self, stack: &mut Stack, function: &FunctionPlan, rule: &RulePlan) -> String {
        let (id, target) = (format!("{}Rule", function.base), function.id());
        stack.resources.insert(
            id.clone(),
            json!({
                "Type": "AWS::Events::Rule",
                "Properties": {
                    "Description": rule.description,
                    "State": "ENABLED",
                    "EventPattern": rule.pattern,
                    "Targets": [{
                        "Id": TARGET_ID,
                        "Arn": get_att(&target, "Arn"),
                        "DeadLetterConfig": rule.dead_letter_config(),
                        "RetryPolicy": rule.retry_policy(),
                    }],
                },
            }),
        );
        stack.resources.insert(
            format!("{id}Permission"),
            json!({
                "Type": "AWS::Lambda::Permission",
                "Properties": {
                    "Action": "lambda:InvokeFunction",
                    "FunctionName": reference(&target),
                    "Principal": EVENTS,
                    "SourceArn": get_att(&id, "Arn"),
                },
            }),
        );
        stack.outputs.insert(
            format!("{id}Name"),
            json!({
                "Description": format!("The EventBridge rule that triggers pipeline \"{}\"", function.pipeline),
                "Value": reference(&id),
            }),
        );
        id
    }
}

#[cfg(test)]
mod tests {
    use super::super::Format;
    use super::super::testing::{FILTERED, load, settings};
    use super::*;

    #[test]
    fn a_filtered_pipeline_gets_its_rule_and_the_table_its_permissions() {
        let file = load(FILTERED);
        let t = super::super::generate(&file, settings(Format::Cloudformation)).unwrap();
        assert!(t.get("Transform").is_none());
        let r = &t["Resources"];
        assert_eq!(
            r["ERule"]["Properties"]["EventPattern"],
            file.pipelines[0].event_pattern().unwrap().unwrap()
        );
        assert_eq!(
            r["ERulePermission"]["Properties"]["SourceArn"],
            json!({"Fn::GetAtt": ["ERule", "Arn"]})
        );
        assert_eq!(t["Outputs"]["ERuleName"]["Value"], json!({"Ref": "ERule"}));
        assert_eq!(r["EFunction"]["Type"], "AWS::Lambda::Function");
        assert_eq!(r["EFunction"]["Properties"]["Architectures"], json!(["x86_64"]));
        let env = &r["EFunction"]["Properties"]["Environment"]["Variables"];
        assert_eq!(env["CUTOVER_PIPELINE"], "e");
        assert_eq!(
            env["CUTOVER_PIPELINES__E__STAGES__2__STORE__TABLE"],
            json!({"Ref": "EDedupTable"})
        );
        let statements = &r["ERole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"];
        assert_eq!(
            statements[1]["Resource"],
            json!([{"Fn::GetAtt": ["EDedupTable", "Arn"]}])
        );
        assert_eq!(
            r["EDedupTable"]["Properties"]["TimeToLiveSpecification"]["AttributeName"],
            "expires"
        );
        assert_eq!(
            r["EDedupTable"]["Properties"]["SSESpecification"]["KMSMasterKeyId"],
            json!({"Fn::If": ["HasKmsKey", {"Ref": "KmsKeyArn"}, {"Ref": "AWS::NoValue"}]}),
            "a stage's table is encrypted with the stack's key when one is given"
        );
    }
}
