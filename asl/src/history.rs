//! Execution history, shaped like Step Functions' `GetExecutionHistory`:
//! numbered events, each pointing at the previous one, stamped by the
//! engine's clock.

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
        /// Raw state input.
        input: Value,
    },
    /// A state completed.
    StateExited {
        /// State name.
        name: String,
        /// State output.
        output: Value,
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
