//! Where an event goes when it cannot start its pipeline in the stack: one encrypted SQS queue
//! per EventBridge-triggered function, fed from both places an event can be lost.
//!
//! - **EventBridge → Lambda.** EventBridge invokes the function asynchronously; when that
//!   call itself fails (a missing permission, the function deleted, a Lambda service error) it
//!   retries for at most [`EVENT_AGE_SECS`], then sends the event, as it was, to the queue
//!   (the rule target's `DeadLetterConfig`, with an explicit `RetryPolicy`).
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

use serde_json::{Value, json};

use super::yaml::COMMENT;
use super::{Stack, alarms, base, get_att, hardening, reference};

/// Lambda's retries of a failed asynchronous invocation (its default, chosen on purpose).
pub(crate) const RETRIES: u32 = 2;
/// How long EventBridge and Lambda keep trying one event, in seconds.
pub(crate) const EVENT_AGE_SECS: u32 = 3600;
/// EventBridge's attempts to deliver within [`EVENT_AGE_SECS`] (its maximum; the age bounds it).
const DELIVERY_ATTEMPTS: u32 = 185;
/// 14 days: SQS's longest retention.
const RETENTION_SECS: u32 = 1_209_600;

/// The queue's logical ID (`EcsEventsDeadLetterQueue`).
pub(crate) fn queue_id(pipeline: &str) -> String {
    format!("{}DeadLetterQueue", base(pipeline))
}

/// The rule target's `DeadLetterConfig`.
pub(crate) fn rule_dead_letter_config(queue: &str) -> Value {
    json!({ "Arn": get_att(queue, "Arn") })
}

/// The rule target's `RetryPolicy`.
pub(crate) fn rule_retry_policy() -> Value {
    json!({
        "MaximumRetryAttempts": DELIVERY_ATTEMPTS,
        "MaximumEventAgeInSeconds": EVENT_AGE_SECS,
    })
}

/// The function role's statement for its on-failure destination.
pub(crate) fn statement(queue: &str) -> Value {
    json!({
        COMMENT: "hand an event whose invocations all failed to the dead-letter queue \
                  (the asynchronous on-failure destination)",
        "Effect": "Allow",
        "Action": ["sqs:SendMessage"],
        "Resource": [get_att(queue, "Arn")],
    })
}

/// The queue (encrypted by the hardening pass), its policy, the function's on-failure
/// destination (and, with a KMS key, the role's use of it), the queue's alarm and output.
/// `rule` is the logical ID of the rule whose dead letters EventBridge may send.
pub(crate) fn resources(
    stack: &mut Stack,
    pipeline: &str,
    queue: &str,
    (function, role): (&str, &str),
    rule: &str,
) {
    stack.resources.insert(
        queue.to_owned(),
        json!({
            "Type": "AWS::SQS::Queue",
            "Properties": {"MessageRetentionPeriod": RETENTION_SECS},
        }),
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
                        "Principal": {"Service": "events.amazonaws.com"},
                        "Action": "sqs:SendMessage",
                        "Resource": get_att(queue, "Arn"),
                        "Condition": {"ArnEquals": {"aws:SourceArn": get_att(rule, "Arn")}},
                    }],
                },
            },
        }),
    );
    stack.resources.insert(
        format!("{}EventInvokeConfig", base(pipeline)),
        json!({
            "Type": "AWS::Lambda::EventInvokeConfig",
            "Properties": {
                "FunctionName": reference(function),
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
            json!([reference(role)]),
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
