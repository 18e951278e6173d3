//! Succeed: ends the machine (or the branch / iteration) with its input (`Scope::pass_on`).

use super::{Kind, Shape, Source};
use crate::definition::validate::Validator;

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
