//! Succeed: ends the machine (or the branch / iteration) with its input.

use super::{Flow, Kind, Scope, Shape, Source, Stop};
use crate::definition::validate::Validator;
use serde_json::Value;

pub(crate) const SHAPE: Shape = Shape {
    name: "Succeed",
    fields: &["InputPath", "OutputPath"],
    transitions: false,
    io_paths: true,
    optional: &[],
    own_parameters: false,
    compile,
};

fn compile(_cx: &mut Validator<'_>, _src: &Source<'_>) -> Option<Kind> {
    Some(Kind::Succeed)
}

pub(super) fn run(scope: &Scope<'_>, input: Value) -> Result<Flow, Stop> {
    let out = scope.output_path(input)?;
    Ok(scope.exited(out, None))
}
