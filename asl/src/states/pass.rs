//! Pass: hands its input on, or its `Result` in its place, shaped by
//! `Parameters` and `ResultPath`.

use super::{Flow, Kind, Scope, Shape, Source, Stop};
use crate::definition::validate::Validator;
use serde_json::Value;
use std::borrow::Cow;

/// A compiled Pass state.
#[derive(Debug)]
pub(crate) struct Pass {
    /// `Result`: replaces the (effective) input.
    pub(crate) result: Option<Value>,
}

pub(crate) const SHAPE: Shape = Shape {
    name: "Pass",
    fields: &[
        "Next",
        "End",
        "InputPath",
        "OutputPath",
        "Parameters",
        "Result",
        "ResultPath",
    ],
    transitions: true,
    io_paths: true,
    optional: &["Parameters", "ResultPath"],
    own_parameters: false,
    compile,
};

fn compile(_cx: &mut Validator<'_>, src: &Source<'_>) -> Option<Kind> {
    Some(Kind::Pass(Pass {
        result: src.obj.get("Result").cloned(),
    }))
}

/// `raw` is the state's input, `input` the same after `InputPath`.
pub(super) fn run(scope: &Scope<'_>, pass: &Pass, raw: &Value, input: Cow<'_, Value>) -> Result<Flow, Stop> {
    let effective = match &scope.st.parameters {
        Some(t) => scope.eval(t, &input, || scope.context(None, None, None))?,
        None => input.into_owned(),
    };
    let result = pass.result.clone().unwrap_or(effective);
    let out = scope.result_path(&scope.st.result_path, raw, result)?;
    scope.exit(out)
}
