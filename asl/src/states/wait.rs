//! Wait: sleeps on the engine's clock for some seconds or until a
//! timestamp, each given literally or as a path. A top-level Wait
//! checkpoints its deadline, so a resumed execution sleeps only what is left.

use super::scope::raw_text;
use super::{Flow, Kind, Root, Scope, Shape, Source, Stop};
use crate::definition::validate::{Validator, path_field};
use crate::history::EventKind;
use crate::jsonpath::JsonPath;
use crate::timestamp;
use serde_json::Value;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

/// A compiled Wait state: how long to wait.
#[derive(Debug)]
pub(crate) enum Wait {
    Seconds(u64),
    SecondsPath(JsonPath),
    /// Unix nanoseconds.
    Timestamp(i128),
    TimestampPath(JsonPath),
}

pub(crate) const SHAPE: Shape = Shape {
    name: "Wait",
    fields: &[
        "Next",
        "End",
        "InputPath",
        "OutputPath",
        "Seconds",
        "SecondsPath",
        "Timestamp",
        "TimestampPath",
    ],
    transitions: true,
    io_paths: true,
    optional: &[],
    own_parameters: false,
    compile,
};

fn compile(cx: &mut Validator<'_>, src: &Source<'_>) -> Option<Kind> {
    let o = src.obj;
    let fields: Vec<&str> = ["Seconds", "SecondsPath", "Timestamp", "TimestampPath"]
        .into_iter()
        .filter(|f| o.contains_key(*f))
        .collect();
    if fields.len() != 1 {
        cx.err(
            "",
            "a Wait state needs exactly one of Seconds, SecondsPath, Timestamp, TimestampPath",
        );
        return Some(Kind::Wait(Wait::Seconds(0)));
    }
    let f = fields[0];
    let v = &o[f];
    let wait = match f {
        "Seconds" => match v.as_u64() {
            Some(n) => Wait::Seconds(n),
            None => {
                cx.err(f, "'Seconds' must be a non-negative integer");
                Wait::Seconds(0)
            }
        },
        "Timestamp" => match v.as_str().and_then(timestamp::parse) {
            Some(t) => Wait::Timestamp(t),
            None => {
                cx.err(f, "'Timestamp' must be an ISO-8601 date-time with offset");
                Wait::Seconds(0)
            }
        },
        _ => match path_field(cx, v, f) {
            Some(p) if f == "SecondsPath" => Wait::SecondsPath(p),
            Some(p) => Wait::TimestampPath(p),
            None => Wait::Seconds(0),
        },
    };
    Some(Kind::Wait(wait))
}

/// `raw` is the state's input (what a checkpoint resumes with), `input` the
/// same after `InputPath`.
pub(super) async fn run(
    scope: &Scope<'_>,
    wait: &Wait,
    raw: &Arc<Value>,
    input: Cow<'_, Value>,
) -> Result<Flow, Stop> {
    let run = scope.run;
    let name = &scope.st.name;
    let now = timestamp::to_nanos(run.engine.clock.now());
    let until = match run.take_resumed_wait(name) {
        Some(until) => until,
        None => deadline(scope, wait, &input, now)?,
    };
    run.push(EventKind::WaitStarted {
        name: name.clone(),
        until: timestamp::format(until.max(now)),
    });
    // Checkpoint the deadline (top-level states only: only they resume), so
    // a restarted process waits what is left, not the whole wait again.
    if run.is_top_state(name) {
        run.save(Some(name), Some(raw.as_ref())).map_err(Stop::Fatal)?;
    }
    if until > now {
        let d = Duration::from_nanos((until - now).min(u64::MAX as i128) as u64);
        run.engine.clock.sleep(d).await;
    }
    scope.pass_on(raw, input, scope.st.next)
}

/// When the wait ends (Unix nanoseconds), `now` being when it starts.
fn deadline(scope: &Scope<'_>, wait: &Wait, input: &Value, now: i128) -> Result<i128, Stop> {
    Ok(match wait {
        Wait::Seconds(s) => now + *s as i128 * 1_000_000_000,
        Wait::Timestamp(t) => *t,
        Wait::SecondsPath(p) => {
            let v = scope.select(p, input, Root::Context(None))?;
            let secs = match &v {
                Value::Number(n) if n.is_i64() || n.is_u64() => n.as_i64().unwrap_or(i64::MAX),
                other => {
                    return Err(scope.runtime(format!(
                        "The SecondsPath parameter cannot be parsed as a long value: {p} == {}",
                        raw_text(other)
                    )));
                }
            };
            if secs < 0 {
                return Err(scope.runtime(format!(
                    "The SecondsPath parameter references a negative value: {p} == {secs}"
                )));
            }
            now + secs as i128 * 1_000_000_000
        }
        Wait::TimestampPath(p) => {
            let v = scope.select(p, input, Root::Context(None))?;
            match v.as_str().and_then(timestamp::parse) {
                Some(t) => t,
                None => {
                    return Err(scope.runtime(format!(
                        "The TimestampPath parameter does not reference a valid ISO-8601 extended offset date-time format string: {p} == {}",
                        raw_text(&v)
                    )));
                }
            }
        }
    })
}
