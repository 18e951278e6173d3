//! Task: hands its effective input to the engine's
//! [`TaskHandler`](crate::TaskHandler), racing the call against
//! `TimeoutSeconds` and `HeartbeatSeconds` on the engine's clock.

use super::scope::raw_text;
use super::{Failure, Kind, Root, Scope, Shape, Source, Stop};
use crate::clock::Clock;
use crate::definition::NumSource;
use crate::definition::validate::{Validator, num_source};
use crate::engine::{TaskContext, TaskFailure};
use crate::error::EngineError;
use crate::history::EventKind;
use crate::intrinsics::uuid_v4;
use crate::timestamp;
use futures_util::FutureExt as _;
use serde_json::Value;
use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// A compiled Task state.
#[derive(Debug)]
pub(crate) struct Task {
    pub(crate) resource: String,
    pub(crate) timeout: Option<NumSource>,
    pub(crate) heartbeat: Option<NumSource>,
}

pub(crate) const SHAPE: Shape = Shape {
    name: "Task",
    fields: &[
        "Next",
        "End",
        "InputPath",
        "OutputPath",
        "Parameters",
        "ResultSelector",
        "ResultPath",
        "Retry",
        "Catch",
        "Resource",
        "TimeoutSeconds",
        "TimeoutSecondsPath",
        "HeartbeatSeconds",
        "HeartbeatSecondsPath",
        "Credentials",
    ],
    transitions: true,
    io_paths: true,
    optional: &["Parameters", "ResultSelector", "ResultPath", "Retry", "Catch"],
    own_parameters: false,
    compile,
};

fn compile(cx: &mut Validator<'_>, src: &Source<'_>) -> Option<Kind> {
    let o = src.obj;
    let resource = match o.get("Resource") {
        Some(Value::String(r)) if !r.is_empty() => r.clone(),
        _ => {
            cx.err("Resource", "a Task state needs a 'Resource' string");
            String::new()
        }
    };
    let timeout = num_source(cx, o, "TimeoutSeconds", true);
    let heartbeat = num_source(cx, o, "HeartbeatSeconds", true);
    if let (Some(NumSource::Lit(t)), Some(NumSource::Lit(h))) = (&timeout, &heartbeat)
        && h >= t
    {
        cx.err(
            "HeartbeatSeconds",
            "'HeartbeatSeconds' must be smaller than 'TimeoutSeconds'",
        );
    }
    Some(Kind::Task(Task {
        resource,
        timeout,
        heartbeat,
    }))
}

/// One attempt (see `retry`): the handler's result, before
/// `ResultSelector`. `input` is the state's input after `InputPath`.
pub(super) async fn attempt(
    scope: &Scope<'_>,
    task: &Task,
    input: &Value,
    retry_count: u32,
) -> Result<Value, Stop> {
    let token = uuid_v4();
    let effective = match &scope.st.parameters {
        Some(t) => scope.eval(t, input, || scope.context(Some(retry_count), None, Some(&token)))?,
        None => input.clone(),
    };
    let call = Invocation {
        resource: &task.resource,
        retry_count,
        token: &token,
        timeout: seconds(scope, task.timeout.as_ref(), input, "TimeoutSeconds")?,
        heartbeat: seconds(scope, task.heartbeat.as_ref(), input, "HeartbeatSeconds")?,
    };
    invoke(scope, &call, effective).await
}

/// `TimeoutSeconds`/`HeartbeatSeconds` (`field`) for this attempt.
fn seconds(
    scope: &Scope<'_>,
    source: Option<&NumSource>,
    input: &Value,
    field: &str,
) -> Result<Option<Duration>, Stop> {
    Ok(match source {
        None => None,
        Some(NumSource::Lit(n)) => Some(Duration::try_from_secs_f64(*n).unwrap_or(Duration::MAX)),
        Some(NumSource::Path(p)) => {
            let v = scope.select(p, input, Root::Input)?;
            match v.as_u64() {
                Some(n) if n > 0 => Some(Duration::from_secs(n)),
                _ => {
                    return Err(scope.runtime(format!(
                        "The {field}Path field refers to value \"{}\" which is not a valid positive integer: {p}",
                        raw_text(&v)
                    )));
                }
            }
        }
    })
}

/// One call of the handler, apart from its input.
struct Invocation<'a> {
    resource: &'a str,
    retry_count: u32,
    /// `$$.Task.Token` of this attempt.
    token: &'a str,
    timeout: Option<Duration>,
    heartbeat: Option<Duration>,
}

/// How the race between the handler and the two timers ended.
enum Ended {
    /// The handler returned (outer `Err`: it panicked).
    Done(Result<Result<Value, TaskFailure>, Box<dyn Any + Send>>),
    Timeout,
    Heartbeat,
}

/// Call the handler with `input`, recording `TaskScheduled` and the outcome.
async fn invoke(scope: &Scope<'_>, call: &Invocation<'_>, input: Value) -> Result<Value, Stop> {
    let run = scope.run;
    run.push(EventKind::TaskScheduled {
        resource: call.resource.to_string(),
        input: input.clone(),
    });
    let clock: &dyn Clock = &*run.engine.clock;
    let hb = AtomicI64::new(timestamp::to_nanos(clock.now()) as i64);
    let cx = TaskContext {
        execution_arn: &run.arn,
        state_name: &scope.st.name,
        retry_count: call.retry_count,
        task_token: call.token,
        clock,
        heartbeat: &hb,
    };
    let handler = AssertUnwindSafe(run.engine.handler.invoke(call.resource, input, cx)).catch_unwind();
    let ended = tokio::select! {
        biased;
        r = handler => Ended::Done(r),
        _ = timeout_lapse(clock, call.timeout) => Ended::Timeout,
        _ = heartbeat_lapse(clock, &hb, call.heartbeat) => Ended::Heartbeat,
    };
    settle(scope, call, ended)
}

/// Resolves once `timeout` has passed on `clock`; never without one.
async fn timeout_lapse(clock: &dyn Clock, timeout: Option<Duration>) {
    match timeout {
        Some(d) => clock.sleep(d).await,
        None => std::future::pending::<()>().await,
    }
}

/// Resolves once `heartbeat` has passed since the handler last reported
/// progress in `hb`; never without one.
async fn heartbeat_lapse(clock: &dyn Clock, hb: &AtomicI64, heartbeat: Option<Duration>) {
    let Some(h) = heartbeat else {
        return std::future::pending::<()>().await;
    };
    let h_ns = h.as_nanos().min(i64::MAX as u128 / 2) as i64;
    loop {
        let last = hb.load(Ordering::Relaxed);
        let now = timestamp::to_nanos(clock.now()) as i64;
        let left = last.saturating_add(h_ns).saturating_sub(now);
        if left <= 0 {
            return;
        }
        clock.sleep(Duration::from_nanos(left as u64)).await;
    }
}

/// Record how the call ended and turn it into the attempt's result.
fn settle(scope: &Scope<'_>, call: &Invocation<'_>, ended: Ended) -> Result<Value, Stop> {
    let run = scope.run;
    let st = scope.st;
    let resource = call.resource.to_string();
    let failure = match ended {
        Ended::Done(Ok(Ok(v))) => {
            run.push(EventKind::TaskSucceeded {
                resource,
                output: v.clone(),
            });
            return Ok(v);
        }
        Ended::Done(Ok(Err(tf))) if tf.is_interrupt() => {
            return Err(Stop::Fatal(EngineError::Interrupted {
                state: st.name.clone(),
                reason: tf.cause,
            }));
        }
        Ended::Done(Ok(Err(tf))) => {
            run.push(EventKind::TaskFailed {
                resource,
                error: Some(tf.error.clone()),
                cause: Some(tf.cause.clone()),
            });
            Failure {
                error: Some(tf.error),
                cause: Some(tf.cause),
            }
        }
        Ended::Done(Err(panic)) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic".into());
            return Err(Stop::Fatal(EngineError::HandlerPanicked {
                state: st.name.clone(),
                resource,
                message,
            }));
        }
        Ended::Timeout => timed_out(
            scope,
            resource,
            "States.Timeout",
            format!(
                "Task '{}' timed out after {} seconds",
                st.name,
                call.timeout.unwrap_or_default().as_secs_f64()
            ),
        ),
        Ended::Heartbeat => timed_out(
            scope,
            resource,
            "States.HeartbeatTimeout",
            format!(
                "Task '{}' sent no heartbeat for {} seconds",
                st.name,
                call.heartbeat.unwrap_or_default().as_secs_f64()
            ),
        ),
    };
    Err(Stop::Fail(failure))
}

fn timed_out(scope: &Scope<'_>, resource: String, error: &str, cause: String) -> Failure {
    scope.run.push(EventKind::TaskTimedOut {
        resource,
        error: Some(error.into()),
        cause: Some(cause.clone()),
    });
    Failure {
        error: Some(error.into()),
        cause: Some(cause),
    }
}
