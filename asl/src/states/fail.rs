//! Fail: fails the execution with an error and cause, each given literally,
//! as a path or as an intrinsic call.

use super::scope::raw_text;
use super::{Failure, Flow, Kind, Root, Scope, Shape, Source, Stop, fail};
use crate::definition::validate::Validator;
use crate::intrinsics::{Intrinsic, IntrinsicError, looks_like_call};
use crate::jsonpath::JsonPath;
use serde_json::{Map, Value};

/// A compiled Fail state.
#[derive(Debug)]
pub(crate) struct Fail {
    pub(crate) error: StrSource,
    pub(crate) cause: StrSource,
}

/// `Error`/`ErrorPath` or `Cause`/`CausePath`.
#[derive(Debug)]
pub(crate) enum StrSource {
    None,
    Lit(String),
    Path(JsonPath),
    Call(Intrinsic),
}

pub(crate) const SHAPE: Shape = Shape {
    name: "Fail",
    fields: &["Error", "ErrorPath", "Cause", "CausePath"],
    transitions: false,
    io_paths: false,
    optional: &[],
    own_parameters: false,
    compile,
};

fn compile(cx: &mut Validator<'_>, src: &Source<'_>) -> Option<Kind> {
    let error = str_source(cx, src.obj, "Error", "ErrorPath");
    let cause = str_source(cx, src.obj, "Cause", "CausePath");
    Some(Kind::Fail(Fail { error, cause }))
}

fn str_source(cx: &mut Validator<'_>, o: &Map<String, Value>, f: &str, pf: &str) -> StrSource {
    match (o.get(f), o.get(pf)) {
        (Some(_), Some(_)) => {
            cx.err(f, format!("use either '{f}' or '{pf}', not both"));
            StrSource::None
        }
        (Some(Value::String(s)), None) => StrSource::Lit(s.clone()),
        (Some(_), None) => {
            cx.err(f, format!("'{f}' must be a string"));
            StrSource::None
        }
        (None, Some(Value::String(s))) => {
            if looks_like_call(s) {
                match Intrinsic::parse(s) {
                    Ok(i) => StrSource::Call(i),
                    Err(e) => {
                        cx.err(pf, e);
                        StrSource::None
                    }
                }
            } else {
                match JsonPath::parse(s) {
                    Ok(p) => StrSource::Path(p),
                    Err(e) => {
                        cx.err(pf, e);
                        StrSource::None
                    }
                }
            }
        }
        (None, Some(_)) => {
            cx.err(pf, format!("'{pf}' must be a path string"));
            StrSource::None
        }
        (None, None) => StrSource::None,
    }
}

/// Always a failure; `raw` is the state's input (Fail has no `InputPath`).
pub(super) fn run(scope: &Scope<'_>, state: &Fail, raw: &Value) -> Result<Flow, Stop> {
    let error = resolve(scope, &state.error, raw, "ErrorPath")?;
    let cause = resolve(scope, &state.cause, raw, "CausePath")?;
    Err(Stop::Fail(Failure { error, cause }))
}

fn resolve(scope: &Scope<'_>, s: &StrSource, raw: &Value, field: &str) -> Result<Option<String>, Stop> {
    let not_found = |p: &str| {
        scope.runtime(format!(
            "The JSONPath '{p}' specified for the field '{field}' could not be found in the input '{raw}'"
        ))
    };
    Ok(match s {
        StrSource::None => None,
        StrSource::Lit(x) => Some(x.clone()),
        StrSource::Path(p) => {
            let v = scope
                .lookup(p, raw, Root::Context(None))
                .ok_or_else(|| not_found(&p.to_string()))?;
            Some(raw_text(&v))
        }
        StrSource::Call(f) => {
            let c = if f.uses_context() {
                scope.context(None, None, None)
            } else {
                Value::Null
            };
            match f.eval(raw, &c) {
                Ok(v) => Some(raw_text(&v)),
                Err(IntrinsicError::PathNotFound(p)) => return Err(not_found(&p)),
                Err(IntrinsicError::Failure(m)) => return Err(fail("States.IntrinsicFailure", m)),
            }
        }
    })
}
