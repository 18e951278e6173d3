//! Execution history, shaped like Step Functions' `GetExecutionHistory`:
//! numbered events, each pointing at the previous one, stamped by the
//! engine's clock.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One history event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEvent {
    /// 1-based, increasing.
    pub id: u64,
    /// The id of the event before this one (0 for the first).
    pub previous_event_id: u64,
    /// ISO-8601 UTC time from the engine's clock.
    pub timestamp: String,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What a [`HistoryEvent`] records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
#[non_exhaustive]
pub enum EventKind {
    /// The execution started.
    ExecutionStarted {
        /// Execution input.
        input: Value,
    },
    /// The execution succeeded.
    ExecutionSucceeded {
        /// Execution output.
        output: Value,
    },
    /// The execution failed.
    ExecutionFailed {
        /// Error name.
        error: Option<String>,
        /// Cause.
        cause: Option<String>,
    },
    /// The execution hit its `TimeoutSeconds`.
    ExecutionTimedOut {
        /// Error name (`States.Timeout`).
        error: Option<String>,
        /// Cause.
        cause: Option<String>,
    },
    /// The execution was stopped by [`Engine::abort`](crate::Engine::abort).
    ExecutionAborted {
        /// Why, if given.
        cause: Option<String>,
    },
    /// The engine resumed a persisted execution.
    ExecutionResumed {
        /// The state it resumed at.
        state: String,
    },
    /// A state was entered.
    StateEntered {
        /// State name.
        name: String,
        /// Raw state input: the same value as the previous state's output, shared, not copied.
        #[serde(with = "shared")]
        input: Arc<Value>,
    },
    /// A state completed.
    StateExited {
        /// State name.
        name: String,
        /// State output (shared with the next state's `StateEntered`).
        #[serde(with = "shared")]
        output: Arc<Value>,
    },
    /// A Task's resource was scheduled.
    TaskScheduled {
        /// Resource.
        resource: String,
        /// Effective input sent to the handler.
        input: Value,
    },
    /// A Task's handler returned.
    TaskSucceeded {
        /// Resource.
        resource: String,
        /// Result.
        output: Value,
    },
    /// A Task's handler failed.
    TaskFailed {
        /// Resource.
        resource: String,
        /// Error name.
        error: Option<String>,
        /// Cause.
        cause: Option<String>,
    },
    /// A Task ran past `TimeoutSeconds` or missed a heartbeat.
    TaskTimedOut {
        /// Resource.
        resource: String,
        /// `States.Timeout` or `States.HeartbeatTimeout`.
        error: Option<String>,
        /// Cause.
        cause: Option<String>,
    },
    /// A retrier matched; the engine waits before the next attempt.
    RetryScheduled {
        /// State name.
        name: String,
        /// Attempt number about to start (1 = first retry).
        attempt: u32,
        /// Delay in seconds.
        delay_seconds: f64,
    },
    /// A Wait state started waiting.
    WaitStarted {
        /// State name.
        name: String,
        /// When it will end.
        until: String,
    },
    /// A Map state started its iterations.
    MapStateStarted {
        /// Number of items.
        length: usize,
    },
    /// A Map iteration started.
    MapIterationStarted {
        /// Item index.
        index: usize,
    },
    /// A Map iteration succeeded.
    MapIterationSucceeded {
        /// Item index.
        index: usize,
    },
    /// A Map iteration failed.
    MapIterationFailed {
        /// Item index.
        index: usize,
    },
    /// All Map iterations finished.
    MapStateSucceeded,
    /// The Map state failed.
    MapStateFailed,
    /// A Parallel state started its branches.
    ParallelStateStarted,
    /// All branches succeeded.
    ParallelStateSucceeded,
    /// A branch failed.
    ParallelStateFailed,
}

/// A state's input and output as history holds them: one value shared by the `StateExited`
/// of a state and the `StateEntered` of the next (a rollout's history holds hundreds of
/// them), written and read as the plain JSON value.
mod shared {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::Value;

    pub(super) fn serialize<S: Serializer>(value: &Arc<Value>, s: S) -> Result<S::Ok, S::Error> {
        value.as_ref().serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<Value>, D::Error> {
        Value::deserialize(d).map(Arc::new)
    }
}
