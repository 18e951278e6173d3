//! The validator every compile step reports to, and the field readers the
//! state types share: each reader checks one field, records a problem
//! (location + message) when it is wrong and returns a usable stand-in, so
//! compilation goes on and finds every other problem too.

use super::{IoPath, NumSource, ResultPathSpec, State};
use crate::error::ValidationError;
use crate::jsonpath::JsonPath;
use crate::payload::Template;
use crate::states::Kind;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};

/// Where compilation is (`States.A.Retry[0]`…) and the problems found so far.
pub(crate) struct Validator<'e> {
    pub(crate) errs: &'e mut Vec<ValidationError>,
    pub(crate) loc: String,
}

impl<'e> Validator<'e> {
    pub(crate) fn new(errs: &'e mut Vec<ValidationError>, loc: &str) -> Validator<'e> {
        Validator {
            errs,
            loc: loc.to_string(),
        }
    }

    /// Record a problem with `field` (empty: the current location itself).
    pub(crate) fn err(&mut self, field: &str, msg: impl Into<String>) {
        let location = if field.is_empty() {
            self.loc.clone()
        } else {
            join(&self.loc, field)
        };
        self.errs.push(ValidationError {
            location,
            message: msg.into(),
        });
    }

    /// How many problems have been recorded, to tell whether a step added any.
    pub(crate) fn count(&self) -> usize {
        self.errs.len()
    }

    /// Run `check` with the location moved into `field`.
    pub(crate) fn within(&mut self, field: &str, check: impl FnOnce(&mut Validator<'_>)) {
        let before = self.loc.clone();
        self.loc = join(&before, field);
        check(self);
        self.loc = before;
    }
}

/// `prefix.rest`, or `rest` at the top level.
pub(crate) fn join(prefix: &str, rest: &str) -> String {
    if prefix.is_empty() {
        rest.to_string()
    } else {
        format!("{prefix}.{rest}")
    }
}

/// Reject fields a state type does not have (typos would otherwise be
/// silently ignored). `Comment` is allowed everywhere; JSONata and
/// variables get a specific message.
pub(crate) fn unknown_fields(cx: &mut Validator<'_>, o: &Map<String, Value>, what: &str, allowed: &[&str]) {
    for k in o.keys() {
        if k == "Comment" || k == "Type" || allowed.contains(&k.as_str()) {
            continue;
        }
        if matches!(k.as_str(), "Assign" | "Arguments" | "Output" | "Items") {
            cx.err(
                k,
                format!("'{k}' (JSONata / variables) is not supported: only the JSONPath query language is"),
            );
        } else if what.is_empty() {
            cx.err(k, format!("unknown field '{k}' in a state machine"));
        } else {
            cx.err(k, format!("unknown field '{k}' in a {what}"));
        }
    }
}

/// The state a transition field names: `field` is where to report, `key`
/// the field's name in the message.
pub(crate) fn target(
    cx: &mut Validator<'_>,
    index: &HashMap<String, usize>,
    field: &str,
    key: &str,
    name: &str,
) -> Option<usize> {
    match index.get(name) {
        Some(i) => Some(*i),
        None => {
            cx.err(field, format!("'{key}' names '{name}', which is not a state"));
            None
        }
    }
}

pub(crate) fn path_field(cx: &mut Validator<'_>, v: &Value, f: &str) -> Option<JsonPath> {
    match v {
        Value::String(s) => match JsonPath::parse(s) {
            Ok(p) => Some(p),
            Err(e) => {
                cx.err(f, e);
                None
            }
        },
        _ => {
            cx.err(f, format!("'{f}' must be a JSONPath string"));
            None
        }
    }
}

pub(crate) fn io_path(cx: &mut Validator<'_>, o: &Map<String, Value>, f: &str) -> IoPath {
    match o.get(f) {
        None => IoPath::Root,
        Some(Value::Null) => IoPath::Null,
        Some(v) => match path_field(cx, v, f) {
            Some(p) => IoPath::Path(p),
            None => IoPath::Root,
        },
    }
}

pub(crate) fn result_path(cx: &mut Validator<'_>, v: Option<&Value>, f: &str) -> ResultPathSpec {
    let root = || ResultPathSpec::Path(JsonPath::parse("$").expect("'$' parses"));
    match v {
        None => root(),
        Some(Value::Null) => ResultPathSpec::Discard,
        Some(v) => match path_field(cx, v, f) {
            Some(p) if p.is_reference() => ResultPathSpec::Path(p),
            Some(p) => {
                cx.err(
                    f,
                    format!("'{p}' is not a reference path (only member names and indexes are allowed)"),
                );
                root()
            }
            None => root(),
        },
    }
}

/// A payload template field; `object_only` is false only for Map's
/// `ItemSelector`, which may also be a plain value.
pub(crate) fn template(
    cx: &mut Validator<'_>,
    o: &Map<String, Value>,
    f: &str,
    object_only: bool,
) -> Option<Template> {
    let v = o.get(f)?;
    if object_only && !v.is_object() {
        cx.err(f, format!("'{f}' must be an object"));
        return None;
    }
    match Template::compile(v) {
        Ok(t) => Some(t),
        Err(e) => {
            cx.err(f, e);
            None
        }
    }
}

/// `f` as a literal number, or `{f}Path`; `positive` rules out 0.
pub(crate) fn num_source(
    cx: &mut Validator<'_>,
    o: &Map<String, Value>,
    f: &str,
    positive: bool,
) -> Option<NumSource> {
    let pf = format!("{f}Path");
    match (o.get(f), o.get(&pf)) {
        (Some(_), Some(_)) => {
            cx.err(f, format!("use either '{f}' or '{pf}', not both"));
            None
        }
        (Some(v), None) => match v.as_f64() {
            Some(n) if n >= 0.0 && (!positive || n > 0.0) => Some(NumSource::Lit(n)),
            _ => {
                cx.err(
                    f,
                    format!(
                        "'{f}' must be a {} number",
                        if positive { "positive" } else { "non-negative" }
                    ),
                );
                None
            }
        },
        (None, Some(v)) => path_field(cx, v, &pf).map(NumSource::Path),
        (None, None) => None,
    }
}

/// Report every state of the machine at `cx`'s location that `StartAt`
/// cannot reach (through `Next`, catchers and Choice rules).
pub(crate) fn report_unreachable(cx: &mut Validator<'_>, states: &[State], start: usize) {
    let mut seen = HashSet::new();
    let mut stack = vec![start];
    while let Some(i) = stack.pop() {
        if !seen.insert(i) {
            continue;
        }
        let s = &states[i];
        stack.extend(s.next);
        stack.extend(s.catch.iter().map(|c| c.next));
        if let Kind::Choice(choice) = &s.kind {
            stack.extend(choice.choices.iter().map(|(_, n)| *n));
            stack.extend(choice.default);
        }
    }
    for (i, s) in states.iter().enumerate() {
        if !seen.contains(&i) {
            cx.err(
                &format!("States.{}", s.name),
                format!("state '{}' is unreachable from StartAt", s.name),
            );
        }
    }
}
