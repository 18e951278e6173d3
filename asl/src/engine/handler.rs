//! The Task handler contract: a [`TaskHandler`] serves Task states, sees a
//! [`TaskContext`] for each attempt and fails with a [`TaskFailure`];
//! [`NoTasks`] serves machines without Tasks.

use crate::clock::Clock;
use crate::timestamp;
use serde_json::Value;
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};

/// A Task failure as reported by a handler: the Step Functions error name
/// (matched by `Retry`/`Catch` `ErrorEquals`) and a cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFailure {
    /// Error name, e.g. `Canary.Unhealthy` or `States.TaskFailed`.
    pub error: String,
    /// Human-readable cause.
    pub cause: String,
}

const INTERRUPT: &str = "cutover.Interrupted";

impl TaskFailure {
    /// A failure with this error name and cause.
    pub fn new(error: impl Into<String>, cause: impl Into<String>) -> TaskFailure {
        TaskFailure {
            error: error.into(),
            cause: cause.into(),
        }
    }

    /// A sentinel that stops the engine *without* failing the execution, as
    /// if the process had crashed: `start`/`resume` return
    /// [`EngineError::Interrupted`](crate::EngineError::Interrupted) and the
    /// persisted execution stays resumable from its last completed top-level
    /// state.
    pub fn interrupt(reason: impl Into<String>) -> TaskFailure {
        TaskFailure::new(INTERRUPT, reason)
    }

    /// Whether this is the [`TaskFailure::interrupt`] sentinel.
    pub(crate) fn is_interrupt(&self) -> bool {
        self.error == INTERRUPT
    }
}

/// What a handler knows about the Task it runs.
#[derive(Debug, Clone, Copy)]
pub struct TaskContext<'a> {
    /// Execution ARN.
    pub execution_arn: &'a str,
    /// Name of the Task state.
    pub state_name: &'a str,
    /// 0 on the first attempt, then 1, 2, … on retries.
    pub retry_count: u32,
    /// A token unique to this attempt (`$$.Task.Token`).
    pub task_token: &'a str,
    /// The engine's clock (use it for any delay so virtual time works).
    pub clock: &'a dyn Clock,
    /// When the handler last reported progress (Unix nanoseconds).
    pub(crate) heartbeat: &'a AtomicI64,
}

/// Heartbeats of contexts made outside the engine go nowhere.
static DETACHED_HEARTBEAT: AtomicI64 = AtomicI64::new(0);

impl<'a> TaskContext<'a> {
    /// A context outside any execution, to unit-test a handler directly:
    /// first attempt, empty token, heartbeats ignored.
    pub fn detached(execution_arn: &'a str, state_name: &'a str, clock: &'a dyn Clock) -> TaskContext<'a> {
        TaskContext {
            execution_arn,
            state_name,
            retry_count: 0,
            task_token: "",
            clock,
            heartbeat: &DETACHED_HEARTBEAT,
        }
    }

    /// Report progress: resets the `HeartbeatSeconds` timer.
    pub fn heartbeat(&self) {
        let now = timestamp::to_nanos(self.clock.now()) as i64;
        self.heartbeat.store(now, Ordering::Relaxed);
    }
}

/// Serves Task states.
pub trait TaskHandler: Send + Sync + Debug {
    /// Run a Task state's resource with its effective input; Err carries the
    /// Step Functions error name and cause.
    fn invoke<'a>(
        &'a self,
        resource: &'a str,
        input: Value,
        cx: TaskContext<'a>,
    ) -> Pin<Box<dyn Future<Output = Result<Value, TaskFailure>> + Send + 'a>>;
}

/// A handler for machines without Task states: every invocation fails with
/// `States.TaskFailed`.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoTasks;

impl TaskHandler for NoTasks {
    fn invoke<'a>(
        &'a self,
        resource: &'a str,
        _input: Value,
        _cx: TaskContext<'a>,
    ) -> Pin<Box<dyn Future<Output = Result<Value, TaskFailure>> + Send + 'a>> {
        Box::pin(async move {
            Err(TaskFailure::new(
                "States.TaskFailed",
                format!("no handler serves resource '{resource}'"),
            ))
        })
    }
}
