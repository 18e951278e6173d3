//! The stack's CloudWatch alarms, each notifying the optional `AlarmTopicArn` (SNS) when it
//! fires and when it clears, and one output naming them all:
//!
//! - per function: `Errors` and `Throttles` (any in a minute);
//! - per dead-letter queue: messages visible (more than none);
//! - per state machine: `ExecutionsFailed` and `ExecutionsTimedOut` (any in a minute);
//! - per stack: rollbacks — the `Rollbacks` field of the Lambda host's EMF line (a traffic shift
//!   that sent every request back to blue), counted by a metric filter on each function's log
//!   group into the stack's own metric `cutover/<stack>/Rollbacks`.
//!
//! Metrics that only exist while something happens treat missing data as fine; the queue's
//! depth keeps its last state instead, because SQS stops reporting a queue that sits idle —
//! exactly when forgotten dead letters would.

use serde_json::{Map, Value, json};

use super::function::FunctionPlan;
use super::stack::Stack;
use super::{get_att, hardening, reference};

const TOPIC: &str = "AlarmTopicArn";
const HAS_TOPIC: &str = "HasAlarmTopic";
/// Seconds per evaluated period: Lambda, SQS and Step Functions report every minute.
const PERIOD: u32 = 60;
/// The name of the rollback metric, in the EMF line and in the stack's namespace.
pub(crate) const ROLLBACKS: &str = "Rollbacks";

/// The notification parameter.
pub(crate) fn parameters() -> Map<String, Value> {
    let mut p = Map::new();
    p.insert(
        TOPIC.into(),
        json!({
            "Type": "String",
            "Default": "",
            "Description": "ARN of an SNS topic notified when an alarm fires and when it clears; empty: no notifications",
        }),
    );
    p
}

/// The condition the parameter drives.
pub(crate) fn conditions() -> Map<String, Value> {
    let mut c = Map::new();
    c.insert(
        HAS_TOPIC.into(),
        json!({"Fn::Not": [{"Fn::Equals": [reference(TOPIC), ""]}]}),
    );
    c
}

/// One metric alarm.
struct Alarm<'a> {
    description: String,
    namespace: Value,
    metric: &'a str,
    dimensions: Value,
    statistic: &'a str,
    comparison: &'a str,
    threshold: u32,
    missing: &'a str,
}

impl Alarm<'_> {
    /// `metric` summed over a minute, alarming at one or more.
    fn any<'a>(description: String, namespace: &str, metric: &'a str, dimensions: Value) -> Alarm<'a> {
        Alarm {
            description,
            namespace: json!(namespace),
            metric,
            dimensions,
            statistic: "Sum",
            comparison: "GreaterThanOrEqualToThreshold",
            threshold: 1,
            missing: "notBreaching",
        }
    }

    fn add(self, stack: &mut Stack, id: String) {
        let notify = json!({"Fn::If": [HAS_TOPIC, [reference(TOPIC)], hardening::no_value()]});
        let mut properties = json!({
            "AlarmDescription": self.description,
            "Namespace": self.namespace,
            "MetricName": self.metric,
            "Statistic": self.statistic,
            "Period": PERIOD,
            "EvaluationPeriods": 1,
            "Threshold": self.threshold,
            "ComparisonOperator": self.comparison,
            "TreatMissingData": self.missing,
            "AlarmActions": notify.clone(),
            "OKActions": notify,
        });
        if !self.dimensions.is_null() {
            properties["Dimensions"] = self.dimensions;
        }
        stack.resources.insert(
            id.clone(),
            json!({"Type": "AWS::CloudWatch::Alarm", "Properties": properties}),
        );
        stack.alarms.push(id);
    }
}

fn dimension(name: &str, value: Value) -> Value {
    json!([{"Name": name, "Value": value}])
}

/// A function's errors and throttles.
pub(crate) fn function(stack: &mut Stack, function: &FunctionPlan) {
    let (base, pipeline) = (&function.base, &function.pipeline);
    let dims = dimension("FunctionName", reference(&function.id()));
    Alarm::any(
        format!(
            "The function of pipeline \"{pipeline}\" failed (a stage's error or a timeout; see its log group). \
             Failed EventBridge events are retried, then kept in the dead-letter queue"
        ),
        "AWS/Lambda",
        "Errors",
        dims.clone(),
    )
    .add(stack, format!("{base}ErrorsAlarm"));
    Alarm::any(
        format!(
            "The function of pipeline \"{pipeline}\" was throttled: its reserved concurrency \
             (ReservedConcurrency) or the account's is exhausted"
        ),
        "AWS/Lambda",
        "Throttles",
        dims,
    )
    .add(stack, format!("{base}ThrottlesAlarm"));
}

/// A dead-letter queue holding messages.
pub(crate) fn queue_depth(stack: &mut Stack, queue: &str, pipeline: &str) {
    Alarm {
        description: format!(
            "Events of pipeline \"{pipeline}\" wait in its dead-letter queue: fix the cause, then \
             `cutover dlq redrive FILE --queue URL` (the stack's {queue}Url output)"
        ),
        namespace: json!("AWS/SQS"),
        metric: "ApproximateNumberOfMessagesVisible",
        dimensions: dimension("QueueName", get_att(queue, "QueueName")),
        statistic: "Maximum",
        comparison: "GreaterThanThreshold",
        threshold: 0,
        missing: "ignore",
    }
    .add(stack, format!("{queue}Alarm"));
}

/// A state machine's failed and timed-out executions.
pub(crate) fn state_machine(stack: &mut Stack, machine: &str) {
    let dims = dimension("StateMachineArn", reference(machine));
    for (metric, what) in [
        (
            "ExecutionsFailed",
            "failed (a rollback ends an execution of the shipped canary as failed; see its history)",
        ),
        ("ExecutionsTimedOut", "timed out"),
    ] {
        Alarm::any(
            format!("An execution of the state machine {machine} {what}"),
            "AWS/States",
            metric,
            dims.clone(),
        )
        .add(stack, format!("{machine}{metric}Alarm"));
    }
}

/// Counts the rollbacks every function reports into the stack's metric, and alarms on any.
pub(crate) fn rollbacks(stack: &mut Stack, functions: &[FunctionPlan]) {
    let namespace = json!({"Fn::Sub": "cutover/${AWS::StackName}"});
    for function in functions {
        stack.resources.insert(
            format!("{}RollbacksMetricFilter", function.base),
            json!({
                "Type": "AWS::Logs::MetricFilter",
                "Properties": {
                    "LogGroupName": reference(&function.log_group_id()),
                    "FilterPattern": format!("{{ $.{ROLLBACKS} = 1 }}"),
                    "MetricTransformations": [{
                        "MetricNamespace": namespace,
                        "MetricName": ROLLBACKS,
                        "MetricValue": "1",
                    }],
                },
            }),
        );
    }
    Alarm {
        namespace,
        ..Alarm::any(
            "A canary rolled back: a traffic shift sent every request back to blue (see the state machine's \
             execution history for why)"
                .into(),
            "",
            ROLLBACKS,
            Value::Null,
        )
    }
    .add(stack, format!("{ROLLBACKS}Alarm"));
}

/// The output naming every alarm.
pub(crate) fn name_them(stack: &mut Stack) {
    if stack.alarms.is_empty() {
        return;
    }
    let names: Vec<Value> = stack.alarms.iter().map(|id| reference(id)).collect();
    stack.outputs.insert(
        "Alarms".into(),
        json!({
            "Description": "The stack's CloudWatch alarms (notifying AlarmTopicArn when set)",
            "Value": {"Fn::Join": [", ", names]},
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::super::Format;
    use super::super::testing::{FILTERED, template};
    use super::*;

    #[test]
    fn alarms_watch_functions_queues_and_rollbacks_and_notify_the_optional_topic() {
        let t = template(FILTERED, Format::Cloudformation);
        let r = t["Resources"].as_object().unwrap();
        let alarms: Vec<&str> = r
            .iter()
            .filter(|(_, v)| v["Type"] == "AWS::CloudWatch::Alarm")
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(
            alarms,
            [
                "EErrorsAlarm",
                "EThrottlesAlarm",
                "EDeadLetterQueueAlarm",
                "RollbacksAlarm"
            ]
        );
        let dlq = &r["EDeadLetterQueueAlarm"]["Properties"];
        assert_eq!(dlq["MetricName"], "ApproximateNumberOfMessagesVisible");
        assert_eq!(dlq["ComparisonOperator"], "GreaterThanThreshold");
        assert_eq!(dlq["Threshold"], 0);
        assert_eq!(
            dlq["AlarmActions"],
            json!({"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]})
        );
        assert_eq!(
            r["ERollbacksMetricFilter"]["Properties"]["FilterPattern"],
            "{ $.Rollbacks = 1 }"
        );
        assert_eq!(t["Parameters"]["AlarmTopicArn"]["Default"], "");
        let names = &t["Outputs"]["Alarms"]["Value"]["Fn::Join"][1];
        assert_eq!(names.as_array().unwrap().len(), alarms.len());
    }
}
