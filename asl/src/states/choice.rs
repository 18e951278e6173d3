//! Choice: goes to the `Next` of the first rule that matches its input, or
//! to `Default`. The rule language itself is `crate::choice`.

use super::{Flow, Kind, Scope, Shape, Source, Stop, fail};
use crate::choice::Rule;
use crate::definition::validate::{Validator, target};
use serde_json::Value;
use std::borrow::Cow;
use std::sync::Arc;

/// A compiled Choice state.
#[derive(Debug)]
pub(crate) struct Choice {
    /// Each rule with the state it leads to.
    pub(crate) choices: Vec<(Rule, usize)>,
    pub(crate) default: Option<usize>,
}

pub(crate) const SHAPE: Shape = Shape {
    name: "Choice",
    fields: &["InputPath", "OutputPath", "Choices", "Default"],
    transitions: false,
    io_paths: true,
    optional: &[],
    own_parameters: false,
    compile,
};

fn compile(cx: &mut Validator<'_>, src: &Source<'_>) -> Option<Kind> {
    let mut choices = Vec::new();
    match src.obj.get("Choices") {
        Some(Value::Array(a)) if !a.is_empty() => {
            for (n, c) in a.iter().enumerate() {
                let f = format!("Choices[{n}]");
                let next = match c.get("Next") {
                    Some(Value::String(s)) => target(cx, src.index, &format!("{f}.Next"), "Next", s),
                    _ => {
                        cx.err(&format!("{f}.Next"), "each Choice rule needs 'Next'");
                        None
                    }
                };
                match Rule::parse(c, true) {
                    Ok(r) => {
                        if let Some(n) = next {
                            choices.push((r, n));
                        }
                    }
                    Err(e) => cx.err(&f, e),
                }
            }
        }
        _ => cx.err("Choices", "a Choice state needs a non-empty 'Choices' array"),
    }
    let default = match src.obj.get("Default") {
        None => None,
        Some(Value::String(s)) => target(cx, src.index, "Default", "Default", s),
        Some(_) => {
            cx.err("Default", "'Default' must be a state name");
            None
        }
    };
    Some(Kind::Choice(Choice { choices, default }))
}

/// `raw` is the state's input, `input` the same after `InputPath`.
pub(super) fn run(
    scope: &Scope<'_>,
    choice: &Choice,
    raw: &Arc<Value>,
    input: Cow<'_, Value>,
) -> Result<Flow, Stop> {
    let context = || scope.context(None, None, None);
    let mut next = None;
    for (rule, n) in &choice.choices {
        if rule
            .eval(&input, &context)
            .map_err(|cause| scope.runtime(cause))?
        {
            next = Some(*n);
            break;
        }
    }
    let Some(n) = next.or(choice.default) else {
        return Err(fail(
            "States.NoChoiceMatched",
            format!(
                "No Choice Rule matched and no Default is specified in the state '{}'",
                scope.st.name
            ),
        ));
    };
    scope.pass_on(raw, input, Some(n))
}
