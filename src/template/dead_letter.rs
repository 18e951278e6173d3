//! Where an event goes when it cannot start its pipeline in the stack: one encrypted SQS queue
//! per EventBridge-triggered function, fed from both places an event can be lost.
//!
//! - **EventBridge → Lambda.** EventBridge invokes the function asynchronously; when that
//!   call itself fails (a missing permission, the function deleted, a Lambda service error) it
//!   retries for at most [`EVENT_AGE_SECS`], then sends the event, as it was, to the queue
//!   (the rule target's `DeadLetterConfig`, with an explicit `RetryPolicy`: [`rule`](super::rule)).
//! - **Lambda → the pipeline.** When the function fails (a stage's error, a timeout), Lambda
//!   runs it [`RETRIES`] more times, a minute and then two apart; an event still failing — or
//!   still waiting for a free instance (reserved concurrency) after [`EVENT_AGE_SECS`] — goes
//!   to the queue as an invocation record (`requestPayload` is the event) through the
//!   function's asynchronous on-failure destination (`AWS::Lambda::EventInvokeConfig`).
//!
//! Two retries suffice because every retryable AWS failure has already been retried inside the
//! invocation (the SDK's attempts, the dedup stage's own); what fails three invocations over
//! three minutes is an outage an operator should see (the queue's alarm) and redrive when it is
//! over (`cutover dlq redrive`). An hour bounds both paths because a rollout that starts long
//! after its deployment surprises whoever watches; from the queue, the operator decides. The
//! queue keeps messages 14 days, SQS's longest.
//!
//! Least privilege: the queue policy lets EventBridge send only on behalf of this rule, and the
//! function's role may send only to this queue (and, with a KMS key, encrypt under that key).

use cutover_core::Statement;
use serde_json::json;

use super::function::FunctionPlan;
use super::rule::{EVENTS, RulePlan};
use super::stack::Stack;
use super::{alarms, base, get_att, hardening, reference};

/// Lambda's retries of a failed asynchronous invocation (its default, chosen on purpose).
pub(crate) const RETRIES: u32 = 2;
/// How long EventBridge and Lambda keep trying one event, in seconds.
pub(crate) const EVENT_AGE_SECS: u32 = 3600;
/// 14 days: SQS's longest retention.
const RETENTION_SECS: u32 = 1_209_600;

/// The queue's logical ID (`EcsEventsDeadLetterQueue`).
pub(crate) fn queue_id(pipeline: &str) -> String {
    format!("{}DeadLetterQueue", base(pipeline))
}

/// The function role's permission for its on-failure destination.
pub(crate) fn send_statement(queue: &str) -> Statement {
    Statement::new(
        ["sqs:SendMessage"],
        [get_att(queue, "Arn")],
        "hand an event whose invocations all failed to the dead-letter queue \
         (the asynchronous on-failure destination)",
    )
}

/// The queue of `function`, triggered by `rule` (whose logical ID is `rule_id` in the format
/// rendered): the queue, encrypted; its policy; the function's on-failure destination (and,
/// with a KMS key, the role's use of it); the queue's output and alarm.
pub(crate) fn render(stack: &mut Stack, function: &FunctionPlan, rule: &RulePlan, rule_id: &str) {
    let (pipeline, queue) = (&function.pipeline, &rule.dead_letter_queue);
    let mut properties = json!({"MessageRetentionPeriod": RETENTION_SECS});
    for (key, value) in hardening::queue_encryption() {
        properties[key] = value;
    }
    stack.resources.insert(
        queue.clone(),
        json!({"Type": "AWS::SQS::Queue", "Properties": properties}),
    );
    stack.resources.insert(
        format!("{queue}Policy"),
        json!({
            "Type": "AWS::SQS::QueuePolicy",
            "Properties": {
                "Queues": [reference(queue)],
                "PolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [{
                        "Sid": "EventBridgeDeadLetters",
                        "Effect": "Allow",
                        "Principal": {"Service": EVENTS},
                        "Action": "sqs:SendMessage",
                        "Resource": get_att(queue, "Arn"),
                        "Condition": {"ArnEquals": {"aws:SourceArn": get_att(rule_id, "Arn")}},
                    }],
                },
            },
        }),
    );
    stack.resources.insert(
        format!("{}EventInvokeConfig", function.base),
        json!({
            "Type": "AWS::Lambda::EventInvokeConfig",
            "Properties": {
                "FunctionName": reference(&function.id()),
                "Qualifier": "$LATEST",
                "MaximumRetryAttempts": RETRIES,
                "MaximumEventAgeInSeconds": EVENT_AGE_SECS,
                "DestinationConfig": {"OnFailure": {"Destination": get_att(queue, "Arn")}},
            },
        }),
    );
    stack.resources.insert(
        format!("{queue}KeyPolicy"),
        hardening::kms_key_policy(
            json!([reference(&function.role.id)]),
            "encrypt what the function sends to the dead-letter queue under the stack's KMS key",
            &["kms:GenerateDataKey", "kms:Decrypt"],
        ),
    );
    stack.outputs.insert(
        format!("{queue}Url"),
        json!({
            "Description": format!(
                "Events of pipeline \"{pipeline}\" that EventBridge could not deliver or the function could not \
                 process (`cutover dlq redrive FILE --queue URL`)"
            ),
            "Value": reference(queue),
        }),
    );
    alarms::queue_depth(stack, queue, pipeline);
}

#[cfg(test)]
mod tests {
    use super::super::Format;
    use super::super::testing::{FILTERED, template};
    use super::*;

    #[test]
    fn failed_events_go_to_an_encrypted_queue_from_the_rule_and_the_function() {
        let t = template(FILTERED, Format::Cloudformation);
        let r = &t["Resources"];
        let queue_arn = json!({"Fn::GetAtt": ["EDeadLetterQueue", "Arn"]});
        let target = &r["ERule"]["Properties"]["Targets"][0];
        assert_eq!(target["DeadLetterConfig"]["Arn"], queue_arn);
        assert_eq!(target["RetryPolicy"]["MaximumEventAgeInSeconds"], 3600);
        let invoke = &r["EEventInvokeConfig"]["Properties"];
        assert_eq!(invoke["DestinationConfig"]["OnFailure"]["Destination"], queue_arn);
        assert_eq!(invoke["MaximumRetryAttempts"], 2);
        assert_eq!(invoke["MaximumEventAgeInSeconds"], 3600);
        assert_eq!(invoke["Qualifier"], "$LATEST");
        let queue = &r["EDeadLetterQueue"]["Properties"];
        assert_eq!(queue["MessageRetentionPeriod"], 1_209_600);
        assert_eq!(
            queue["KmsMasterKeyId"],
            json!({"Fn::If": ["HasKmsKey", {"Ref": "KmsKeyArn"}, {"Ref": "AWS::NoValue"}]})
        );
        // EventBridge may send from this rule only; the function's role may send to this queue.
        let policy = &r["EDeadLetterQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"][0];
        assert_eq!(policy["Principal"], json!({"Service": "events.amazonaws.com"}));
        assert_eq!(policy["Action"], "sqs:SendMessage");
        assert_eq!(
            policy["Condition"]["ArnEquals"]["aws:SourceArn"],
            json!({"Fn::GetAtt": ["ERule", "Arn"]})
        );
        let statements = r["ERole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
            .as_array()
            .unwrap();
        assert!(
            statements
                .iter()
                .any(|s| s["Action"] == json!(["sqs:SendMessage"]) && s["Resource"] == json!([queue_arn])),
            "{statements:?}"
        );
        assert_eq!(
            t["Outputs"]["EDeadLetterQueueUrl"]["Value"],
            json!({"Ref": "EDeadLetterQueue"})
        );
    }
}
