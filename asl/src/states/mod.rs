//! The state types, one module each: a type's module holds its compiled
//! form, its [`Shape`] (fields, and which shared fields it takes), the
//! compile step that checks its own fields, and the run step.
//!
//! Running a state always goes the same way ([`run`]): record
//! `StateEntered`, apply `InputPath`, then hand over to the type. Task,
//! Parallel and Map go through [`retry`], which repeats their attempt under
//! `Retry` and routes failures by `Catch`. Every path a state reads goes
//! through [`Scope::select`].

pub(crate) mod choice;
pub(crate) mod fail;
pub(crate) mod map;
pub(crate) mod parallel;
pub(crate) mod pass;
pub(crate) mod retry;
pub(crate) mod scope;
pub(crate) mod succeed;
pub(crate) mod task;
pub(crate) mod wait;

pub(crate) use scope::{Failure, Flow, Root, Scope, Stop, fail};

use crate::definition::State;
use crate::definition::validate::Validator;
use crate::engine::run::{BoxFut, Run};
use crate::history::EventKind;
use retry::Work;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// A state's own part, by type.
#[derive(Debug)]
pub(crate) enum Kind {
    Pass(pass::Pass),
    Task(task::Task),
    Choice(choice::Choice),
    Wait(wait::Wait),
    Succeed,
    Fail(fail::Fail),
    Parallel(parallel::Parallel),
    Map(Box<map::MapState>),
}

/// What compiling needs to know about a state type.
#[derive(Debug)]
pub(crate) struct Shape {
    /// The `Type` value.
    pub(crate) name: &'static str,
    /// Every field the type has, besides `Type` and `Comment`.
    pub(crate) fields: &'static [&'static str],
    /// Whether it moves on with `Next`/`End` (Choice, Succeed and Fail must
    /// not have them).
    pub(crate) transitions: bool,
    /// Whether it has `InputPath`/`OutputPath`.
    pub(crate) io_paths: bool,
    /// Which of `Parameters`, `ResultSelector`, `ResultPath`, `Retry` and
    /// `Catch` it may have.
    pub(crate) optional: &'static [&'static str],
    /// Whether it reads `Parameters` itself (Map: the legacy `ItemSelector`).
    pub(crate) own_parameters: bool,
    /// Compiles the type's own fields, after the shared ones.
    pub(crate) compile: fn(&mut Validator<'_>, &Source<'_>) -> Option<Kind>,
}

/// The state being compiled: its JSON object and the machine's state names
/// (to resolve transitions).
#[derive(Debug)]
pub(crate) struct Source<'a> {
    pub(crate) obj: &'a Map<String, Value>,
    pub(crate) index: &'a HashMap<String, usize>,
}

/// Every type, in the order error messages list them.
const SHAPES: [&Shape; 8] = [
    &pass::SHAPE,
    &task::SHAPE,
    &choice::SHAPE,
    &wait::SHAPE,
    &succeed::SHAPE,
    &fail::SHAPE,
    &parallel::SHAPE,
    &map::SHAPE,
];

/// The type named `name`.
pub(crate) fn shape(name: &str) -> Option<&'static Shape> {
    SHAPES.into_iter().find(|s| s.name == name)
}

/// Every type name.
pub(crate) fn type_names() -> Vec<&'static str> {
    SHAPES.iter().map(|s| s.name).collect()
}

/// Run the state `st` on `raw` (its input before `InputPath`).
pub(crate) fn run<'a>(run: &'a Run<'_>, st: &'a State, raw: Arc<Value>) -> BoxFut<'a, Result<Flow, Stop>> {
    Box::pin(async move {
        let (entered_id, entered) = run.push_at(EventKind::StateEntered {
            name: st.name.clone(),
            input: raw.clone(),
        });
        let scope = Scope::new(run, st, entered_id, entered);
        let input = scope.input_path(&raw)?;
        match &st.kind {
            Kind::Pass(s) => pass::run(&scope, s, &raw, input),
            Kind::Succeed => scope.pass_on(&raw, input, None),
            Kind::Fail(s) => fail::run(&scope, s, &raw),
            Kind::Choice(s) => choice::run(&scope, s, &raw, input),
            Kind::Wait(s) => wait::run(&scope, s, &raw, input).await,
            Kind::Task(s) => retry::run(&scope, Work::Task(s), &raw, &input).await,
            Kind::Parallel(s) => retry::run(&scope, Work::Parallel(s), &raw, &input).await,
            Kind::Map(s) => retry::run(&scope, Work::Map(s), &raw, &input).await,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared compile step trusts each [`Shape`] to agree with its own
    /// field list.
    #[test]
    fn shapes_agree_with_their_fields() {
        assert_eq!(
            type_names(),
            [
                "Pass", "Task", "Choice", "Wait", "Succeed", "Fail", "Parallel", "Map"
            ]
        );
        for s in SHAPES {
            let has = |f: &str| s.fields.contains(&f);
            assert_eq!(has("Next") && has("End"), s.transitions, "{}", s.name);
            assert_eq!(has("InputPath") && has("OutputPath"), s.io_paths, "{}", s.name);
            for f in s.optional {
                assert!(has(f), "{} may have {f} but does not list it", s.name);
            }
            assert!(!s.own_parameters || has("Parameters"), "{}", s.name);
            assert_eq!(shape(s.name).map(|found| found.name), Some(s.name));
        }
        assert!(shape("Bogus").is_none());
    }
}
