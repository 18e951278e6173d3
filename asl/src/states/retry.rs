//! `Retry` and `Catch`, shared by Task, Parallel and Map: their compiled
//! form and compile step, and [`run`], which repeats a state's attempt
//! under its retriers and routes a final failure through its catchers.

use super::{Failure, Flow, Scope, Stop};
use super::{map::MapState, parallel::Parallel, task::Task};
use crate::definition::ResultPathSpec;
use crate::definition::validate::{Validator, result_path, target, unknown_fields};
use crate::history::EventKind;
use crate::intrinsics::random_u64;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::time::Duration;

/// One `Retry` entry.
#[derive(Debug)]
pub(crate) struct Retrier {
    pub(crate) errors: Vec<String>,
    pub(crate) interval: f64,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: f64,
    pub(crate) max_delay: Option<f64>,
    pub(crate) jitter_full: bool,
}

/// One `Catch` entry.
#[derive(Debug)]
pub(crate) struct Catcher {
    pub(crate) errors: Vec<String>,
    pub(crate) next: usize,
    pub(crate) result_path: ResultPathSpec,
}

impl Retrier {
    /// Seconds to wait before retrying, after `count` retries by this
    /// retrier.
    fn delay(&self, count: u32) -> f64 {
        let mut delay = self.interval * self.backoff.powi(count as i32);
        if let Some(max) = self.max_delay {
            delay = delay.min(max);
        }
        if self.jitter_full {
            delay *= (random_u64() >> 11) as f64 / (1u64 << 53) as f64;
        }
        delay
    }
}

/// Whether `ErrorEquals` `names` covers the failure: `States.ALL` and
/// `States.TaskFailed` never match the terminal `States.Runtime` and
/// `States.DataLimitExceeded`, and `States.TaskFailed` not `States.Timeout`.
fn matches_error(names: &[String], f: &Failure) -> bool {
    let err = f.error.as_deref();
    let terminal = matches!(err, Some("States.Runtime") | Some("States.DataLimitExceeded"));
    names.iter().any(|n| match n.as_str() {
        "States.ALL" => !terminal,
        "States.TaskFailed" => !terminal && err != Some("States.Timeout"),
        other => err == Some(other),
    })
}

/// A failure as the `{"Error": …, "Cause": …}` object a catcher (or a
/// tolerated Map iteration) outputs.
pub(crate) fn error_object(f: &Failure) -> Value {
    let mut m = Map::new();
    m.insert(
        "Error".into(),
        f.error.clone().map(Value::String).unwrap_or(Value::Null),
    );
    m.insert(
        "Cause".into(),
        f.cause.clone().map(Value::String).unwrap_or(Value::Null),
    );
    Value::Object(m)
}

fn error_equals(cx: &mut Validator<'_>, v: &Value, f: &str) -> Vec<String> {
    match v.get("ErrorEquals") {
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_string) => {
            let names: Vec<String> = a.iter().filter_map(|s| s.as_str().map(String::from)).collect();
            if names.iter().any(|n| n == "States.ALL") && names.len() > 1 {
                cx.err(&format!("{f}.ErrorEquals"), "'States.ALL' must appear alone");
            }
            names
        }
        _ => {
            cx.err(
                &format!("{f}.ErrorEquals"),
                "'ErrorEquals' must be a non-empty array of error names",
            );
            Vec::new()
        }
    }
}

/// The `Retry` field `v`.
pub(crate) fn retriers(cx: &mut Validator<'_>, v: Option<&Value>) -> Vec<Retrier> {
    let Some(v) = v else { return Vec::new() };
    let Value::Array(a) = v else {
        cx.err("Retry", "'Retry' must be an array");
        return Vec::new();
    };
    let mut out = Vec::new();
    for (n, r) in a.iter().enumerate() {
        let f = format!("Retry[{n}]");
        let Value::Object(ro) = r else {
            cx.err(&f, "a retrier must be an object");
            continue;
        };
        cx.within(&f, |cx| {
            unknown_fields(
                cx,
                ro,
                "retrier",
                &[
                    "ErrorEquals",
                    "IntervalSeconds",
                    "MaxAttempts",
                    "BackoffRate",
                    "MaxDelaySeconds",
                    "JitterStrategy",
                ],
            )
        });
        let errors = error_equals(cx, r, &f);
        if errors.iter().any(|e| e == "States.ALL") && n + 1 != a.len() {
            cx.err(&f, "a retrier with 'States.ALL' must be the last one");
        }
        let num = |cx: &mut Validator<'_>, k: &str, d: f64, min: f64| -> f64 {
            match r.get(k) {
                None => d,
                Some(x) => match x.as_f64() {
                    Some(n) if n >= min => n,
                    _ => {
                        cx.err(&format!("{f}.{k}"), format!("'{k}' must be a number >= {min}"));
                        d
                    }
                },
            }
        };
        let interval = num(cx, "IntervalSeconds", 1.0, 1.0);
        let max_attempts = num(cx, "MaxAttempts", 3.0, 0.0) as u32;
        let backoff = num(cx, "BackoffRate", 2.0, 1.0);
        let max_delay = r
            .get("MaxDelaySeconds")
            .map(|_| num(cx, "MaxDelaySeconds", 0.0, 1.0));
        let jitter_full = match r.get("JitterStrategy") {
            None => false,
            Some(Value::String(s)) if s == "FULL" => true,
            Some(Value::String(s)) if s == "NONE" => false,
            Some(_) => {
                cx.err(
                    &format!("{f}.JitterStrategy"),
                    "'JitterStrategy' must be FULL or NONE",
                );
                false
            }
        };
        out.push(Retrier {
            errors,
            interval,
            max_attempts,
            backoff,
            max_delay,
            jitter_full,
        });
    }
    out
}

/// The `Catch` field `v`; `index` resolves the catchers' `Next`.
pub(crate) fn catchers(
    cx: &mut Validator<'_>,
    v: Option<&Value>,
    index: &HashMap<String, usize>,
) -> Vec<Catcher> {
    let Some(v) = v else { return Vec::new() };
    let Value::Array(a) = v else {
        cx.err("Catch", "'Catch' must be an array");
        return Vec::new();
    };
    let mut out = Vec::new();
    for (n, c) in a.iter().enumerate() {
        let f = format!("Catch[{n}]");
        let Value::Object(co) = c else {
            cx.err(&f, "a catcher must be an object");
            continue;
        };
        cx.within(&f, |cx| {
            unknown_fields(cx, co, "catcher", &["ErrorEquals", "Next", "ResultPath"])
        });
        let errors = error_equals(cx, c, &f);
        if errors.iter().any(|e| e == "States.ALL") && n + 1 != a.len() {
            cx.err(&f, "a catcher with 'States.ALL' must be the last one");
        }
        let next = match c.get("Next") {
            Some(Value::String(s)) => target(cx, index, &format!("{f}.Next"), "Next", s),
            _ => {
                cx.err(&format!("{f}.Next"), "a catcher needs 'Next'");
                None
            }
        };
        let result_path = result_path(cx, c.get("ResultPath"), &format!("{f}.ResultPath"));
        if let Some(next) = next {
            out.push(Catcher {
                errors,
                next,
                result_path,
            });
        }
    }
    out
}

/// The state types that retry, each with its compiled part.
#[derive(Clone, Copy)]
pub(crate) enum Work<'a> {
    Task(&'a Task),
    Parallel(&'a Parallel),
    Map(&'a MapState),
}

/// Run a Task, Parallel or Map state: attempts under `Retry`, then `Catch`.
/// `raw` is the state's input, `input` the same after `InputPath`.
pub(crate) async fn run(scope: &Scope<'_>, work: Work<'_>, raw: &Value, input: &Value) -> Result<Flow, Stop> {
    match retrying(scope, work, raw, input).await {
        Ok(out) => scope.exit(out),
        Err(Stop::Fail(f)) => catch(scope, raw, f),
        Err(other) => Err(other),
    }
}

/// Attempt until one succeeds or no retrier takes the failure.
async fn retrying(scope: &Scope<'_>, work: Work<'_>, raw: &Value, input: &Value) -> Result<Value, Stop> {
    let st = scope.st;
    let mut counts = vec![0u32; st.retry.len()];
    let mut retry_count = 0u32;
    loop {
        let f = match attempt(scope, work, raw, input, retry_count).await {
            Err(Stop::Fail(f)) => f,
            other => return other,
        };
        let Some(i) = st.retry.iter().position(|r| matches_error(&r.errors, &f)) else {
            return Err(Stop::Fail(f));
        };
        let r = &st.retry[i];
        if counts[i] >= r.max_attempts {
            return Err(Stop::Fail(f));
        }
        let delay = r.delay(counts[i]);
        counts[i] += 1;
        retry_count += 1;
        scope.run.push(EventKind::RetryScheduled {
            name: st.name.clone(),
            attempt: retry_count,
            delay_seconds: delay,
        });
        if delay > 0.0 {
            scope
                .run
                .engine
                .clock
                .sleep(Duration::from_secs_f64(delay.min(1e9)))
                .await;
        }
    }
}

/// One attempt: run the state's work, then `ResultSelector` and
/// `ResultPath`. Returns the state output before `OutputPath`.
async fn attempt(
    scope: &Scope<'_>,
    work: Work<'_>,
    raw: &Value,
    input: &Value,
    retry_count: u32,
) -> Result<Value, Stop> {
    let result = match work {
        Work::Task(task) => super::task::attempt(scope, task, input, retry_count).await?,
        Work::Parallel(parallel) => super::parallel::attempt(scope, parallel, input, retry_count).await?,
        Work::Map(map) => super::map::attempt(scope, map, input).await?,
    };
    let st = scope.st;
    let result = match &st.result_selector {
        Some(t) => scope.eval(t, &result, || scope.context(Some(retry_count), None, None))?,
        None => result,
    };
    scope.result_path(&st.result_path, raw, result)
}

/// Route the failure `f` to the first catcher that matches it, if any.
fn catch(scope: &Scope<'_>, raw: &Value, f: Failure) -> Result<Flow, Stop> {
    let Some(c) = scope.st.catch.iter().find(|c| matches_error(&c.errors, &f)) else {
        return Err(Stop::Fail(f));
    };
    let out = scope.result_path(&c.result_path, raw, error_object(&f))?;
    Ok(scope.exited(out, Some(c.next)))
}
