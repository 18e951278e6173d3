//! The EventBridge rule that invokes a pipeline's function: the pattern compiled from the
//! pipeline's filter stages, and a target that retries for at most an hour, then hands the event
//! to the function's dead-letter queue ([`dead_letter`] says why).
//!
//! CloudFormation writes the rule, its target and the permission for EventBridge to invoke the
//! function as resources of their own ([`cloudformation`](super::cloudformation)); SAM derives
//! them from an `EventBridgeRule` event of the function ([`sam`](super::sam)). The target's
//! dead-letter configuration and retry policy read the same in both.

use serde_json::{Value, json};

use super::dead_letter::{self, EVENT_AGE_SECS};
use super::get_att;

/// The service that delivers a rule's events (and may invoke the function for that rule only).
pub(crate) const EVENTS: &str = "events.amazonaws.com";
/// EventBridge's attempts to deliver within [`EVENT_AGE_SECS`] (its maximum; the age bounds it).
const DELIVERY_ATTEMPTS: u32 = 185;

/// A rule invoking one pipeline's function.
#[derive(Debug)]
pub(crate) struct RulePlan {
    /// The rule's description.
    pub(crate) description: String,
    /// The event pattern compiled from the pipeline's filter stages.
    pub(crate) pattern: Value,
    /// How long and how often EventBridge tries to deliver one event to the function.
    pub(crate) retry: RetryPolicy,
    /// The logical ID of the queue that keeps what EventBridge could not deliver.
    pub(crate) dead_letter_queue: String,
}

/// A rule target's retry policy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    /// Most delivery attempts.
    pub(crate) attempts: u32,
    /// Most time spent on one event, in seconds.
    pub(crate) max_event_age_secs: u32,
}

impl RulePlan {
    /// The rule of `pipeline`, matching `pattern`.
    pub(crate) fn new(pipeline: &str, pattern: Value) -> Self {
        Self {
            description: format!("cutover pipeline {pipeline}: compiled from its filter stages"),
            pattern,
            retry: RetryPolicy {
                attempts: DELIVERY_ATTEMPTS,
                max_event_age_secs: EVENT_AGE_SECS,
            },
            dead_letter_queue: dead_letter::queue_id(pipeline),
        }
    }

    /// The target's `DeadLetterConfig`.
    pub(crate) fn dead_letter_config(&self) -> Value {
        json!({ "Arn": get_att(&self.dead_letter_queue, "Arn") })
    }

    /// The target's `RetryPolicy`.
    pub(crate) fn retry_policy(&self) -> Value {
        json!({
            "MaximumRetryAttempts": self.retry.attempts,
            "MaximumEventAgeInSeconds": self.retry.max_event_age_secs,
        })
    }
}
