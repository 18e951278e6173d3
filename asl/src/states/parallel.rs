//! Parallel: runs every branch on the same input at once; the output is
//! the array of their outputs, and the first branch failure fails the state.

use super::{Kind, Scope, Shape, Source, Stop};
use crate::definition::validate::Validator;
use crate::definition::{Machine, compile_machine};
use crate::history::EventKind;
use serde_json::Value;
use std::sync::Arc;

/// A compiled Parallel state.
#[derive(Debug)]
pub(crate) struct Parallel {
    pub(crate) branches: Vec<Arc<Machine>>,
}

pub(crate) const SHAPE: Shape = Shape {
    name: "Parallel",
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
        "Branches",
    ],
    transitions: true,
    io_paths: true,
    optional: &["Parameters", "ResultSelector", "ResultPath", "Retry", "Catch"],
    own_parameters: false,
    compile,
};

fn compile(cx: &mut Validator<'_>, src: &Source<'_>) -> Option<Kind> {
    let mut branches = Vec::new();
    match src.obj.get("Branches") {
        Some(Value::Array(a)) if !a.is_empty() => {
            for (n, b) in a.iter().enumerate() {
                let loc = format!("{}.Branches[{n}]", cx.loc);
                if let Some(m) = compile_machine(b, &loc, cx.errs) {
                    branches.push(Arc::new(m));
                }
            }
        }
        _ => cx.err("Branches", "a Parallel state needs a non-empty 'Branches' array"),
    }
    Some(Kind::Parallel(Parallel { branches }))
}

/// One attempt (see `retry`): the branches' outputs, before
/// `ResultSelector`. `input` is the state's input after `InputPath`.
pub(super) async fn attempt(
    scope: &Scope<'_>,
    parallel: &Parallel,
    input: &Value,
    retry_count: u32,
) -> Result<Value, Stop> {
    let run = scope.run;
    let effective = match &scope.st.parameters {
        Some(t) => scope.eval(t, input, || scope.context(Some(retry_count), None, None))?,
        None => input.clone(),
    };
    run.push(EventKind::ParallelStateStarted);
    let branches = parallel
        .branches
        .iter()
        .map(|b| run.run_machine(b, b.start, effective.clone(), false));
    match futures_util::future::try_join_all(branches).await {
        Ok(outs) => {
            run.push(EventKind::ParallelStateSucceeded);
            Ok(Value::Array(outs))
        }
        Err(e) => {
            run.push(EventKind::ParallelStateFailed);
            Err(e)
        }
    }
}
