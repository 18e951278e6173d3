//! Walking a definition's JSON into a [`Machine`]: the machine's own fields,
//! then each state: here the fields every type shares (transitions, I/O
//! paths, `Parameters`, `ResultSelector`, `ResultPath`, `Retry`, `Catch`), the
//! type's own fields in its `states/<type>.rs`, found through its [`Shape`].

use super::validate::{
    Validator, io_path, join, report_unreachable, result_path, target, template, unknown_fields,
};
use super::{IoPath, Machine, State};
use crate::error::ValidationError;
use crate::states::retry::{catchers, retriers};
use crate::states::{self, Shape, Source};
use serde_json::{Map, Value};
use std::collections::HashMap;

const MACHINE_FIELDS: &[&str] = &[
    "StartAt",
    "States",
    "Comment",
    "Version",
    "TimeoutSeconds",
    "QueryLanguage",
    "ProcessorConfig",
];

/// The shared fields only some state types may have (see [`Shape::optional`]).
const OPTIONAL_FIELDS: [&str; 5] = ["Parameters", "ResultSelector", "ResultPath", "Retry", "Catch"];

/// Compile the machine `v` found at `loc` (empty at the top level),
/// recording every problem in `errs`; `None` when it has any.
pub(crate) fn compile_machine(v: &Value, loc: &str, errs: &mut Vec<ValidationError>) -> Option<Machine> {
    let mut cx = Validator::new(errs, loc);
    let Value::Object(obj) = v else {
        cx.err("", "a state machine must be a JSON object");
        return None;
    };
    unknown_fields(&mut cx, obj, "", MACHINE_FIELDS);
    if obj.contains_key("QueryLanguage") && obj.get("QueryLanguage") != Some(&Value::from("JSONPath")) {
        cx.err("QueryLanguage", "only the JSONPath query language is supported");
    }
    let Some(Value::Object(states)) = obj.get("States") else {
        cx.err("States", "'States' must be an object of named states");
        return None;
    };
    if states.is_empty() {
        cx.err("States", "'States' must not be empty");
        return None;
    }
    let index: HashMap<String, usize> = states.keys().enumerate().map(|(i, k)| (k.clone(), i)).collect();
    let start = match obj.get("StartAt") {
        Some(Value::String(s)) => target(&mut cx, &index, "StartAt", "StartAt", s),
        _ => {
            cx.err("StartAt", "'StartAt' (a state name) is required");
            None
        }
    };
    let timeout_seconds = match obj.get("TimeoutSeconds") {
        None => None,
        Some(t) => match t.as_u64() {
            Some(n) if n > 0 => Some(n),
            _ => {
                cx.err("TimeoutSeconds", "'TimeoutSeconds' must be a positive integer");
                None
            }
        },
    };
    let mut out = Vec::with_capacity(states.len());
    for (name, sv) in states {
        let loc = join(loc, &format!("States.{name}"));
        if name.is_empty() || name.chars().count() > 80 {
            cx.errs.push(ValidationError {
                location: loc.clone(),
                message: "state names must be 1 to 80 characters".into(),
            });
        }
        if let Some(s) = compile_state(name, sv, &loc, &index, cx.errs) {
            out.push(s);
        }
    }
    let start = start?;
    if out.len() != states.len() {
        return None;
    }
    report_unreachable(&mut cx, &out, start);
    Some(Machine {
        start,
        states: out,
        index,
        timeout_seconds,
    })
}

/// Compile the state `name` (JSON `v`, at `loc`); `index` maps the
/// machine's state names to their positions.
fn compile_state(
    name: &str,
    v: &Value,
    loc: &str,
    index: &HashMap<String, usize>,
    errs: &mut Vec<ValidationError>,
) -> Option<State> {
    let before = errs.len();
    let mut cx = Validator::new(errs, loc);
    let Value::Object(o) = v else {
        cx.err("", "a state must be a JSON object");
        return None;
    };
    let shape = state_shape(&mut cx, o)?;
    unknown_fields(&mut cx, o, &format!("{} state", shape.name), shape.fields);
    let next = transition(&mut cx, o, shape, index);
    let (input_path, output_path) = if shape.io_paths {
        (
            io_path(&mut cx, o, "InputPath"),
            io_path(&mut cx, o, "OutputPath"),
        )
    } else {
        (IoPath::Root, IoPath::Root)
    };
    for f in OPTIONAL_FIELDS {
        if o.contains_key(f) && !shape.optional.contains(&f) {
            cx.err(f, format!("a {} state cannot have '{f}'", shape.name));
        }
    }
    // Fields a type cannot have are still compiled, so their own problems
    // are reported as well.
    let parameters = if shape.own_parameters {
        None
    } else {
        template(&mut cx, o, "Parameters", true)
    };
    let result_selector = template(&mut cx, o, "ResultSelector", true);
    let result_path = result_path(&mut cx, o.get("ResultPath"), "ResultPath");
    let retry = retriers(&mut cx, o.get("Retry"));
    let catch = catchers(&mut cx, o.get("Catch"), index);
    let kind = (shape.compile)(&mut cx, &Source { obj: o, index })?;
    if cx.count() != before {
        return None;
    }
    Some(State {
        name: name.to_string(),
        type_name: shape.name,
        input_path,
        output_path,
        parameters,
        result_selector,
        result_path,
        next,
        retry,
        catch,
        kind,
    })
}

fn state_shape(cx: &mut Validator<'_>, o: &Map<String, Value>) -> Option<&'static Shape> {
    match o.get("Type") {
        Some(Value::String(t)) => {
            let shape = states::shape(t);
            if shape.is_none() {
                cx.err(
                    "Type",
                    format!(
                        "unknown state Type '{t}' (expected one of {})",
                        states::type_names().join(", ")
                    ),
                );
            }
            shape
        }
        _ => {
            cx.err("Type", "'Type' is required");
            None
        }
    }
}

/// `Next`/`End`: the next state, `None` at the end (or on a problem).
fn transition(
    cx: &mut Validator<'_>,
    o: &Map<String, Value>,
    shape: &Shape,
    index: &HashMap<String, usize>,
) -> Option<usize> {
    if !shape.transitions {
        for f in ["Next", "End"] {
            if o.contains_key(f) {
                cx.err(f, format!("a {} state must not have '{f}'", shape.name));
            }
        }
        return None;
    }
    match (o.get("Next"), o.get("End")) {
        (Some(Value::String(n)), None) | (Some(Value::String(n)), Some(Value::Bool(false))) => {
            target(cx, index, "Next", "Next", n)
        }
        (None, Some(Value::Bool(true))) => None,
        (Some(_), Some(Value::Bool(true))) => {
            cx.err("Next", "a state cannot have both 'Next' and 'End'");
            None
        }
        (None, _) => {
            cx.err("Next", "a non-terminal state needs 'Next' or \"End\": true");
            None
        }
        (Some(_), _) => {
            cx.err("Next", "'Next' must be a state name");
            None
        }
    }
}
