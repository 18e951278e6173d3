//! Loading and validating a state machine definition.
//!
//! [`Definition::parse`] compiles every path, template and Choice rule up
//! front and reports *every* problem at once, each naming the state and the
//! field, so a definition that loads cannot fail later for a structural
//! reason.
//!
//! This module holds the compiled model; `compile.rs` walks the JSON,
//! `validate.rs` holds the checks and field readers every state type shares
//! and `mermaid.rs` draws the diagram; each state type compiles its own
//! fields in `states/<type>.rs`, and `Retry`/`Catch` in `states/retry.rs`.
//!
//! ```
//! use cutover_asl::Definition;
//! let def = Definition::parse(r#"{"StartAt": "A", "States": {"A": {"Type": "Pass", "End": true}}}"#).unwrap();
//! assert!(def.task_resources().is_empty());
//! let err = Definition::parse(r#"{"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "B"}}}"#).unwrap_err();
//! assert!(err.to_string().contains("States.A.Next"));
//! ```

mod compile;
mod mermaid;
pub(crate) mod validate;

pub(crate) use compile::compile_machine;

use crate::error::{ValidationError, ValidationErrors};
use crate::jsonpath::JsonPath;
use crate::payload::Template;
use crate::states::Kind;
use crate::states::retry::{Catcher, Retrier};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// A validated, compiled state machine definition.
#[derive(Debug, Clone)]
pub struct Definition {
    pub(crate) machine: Arc<Machine>,
    pub(crate) source: Value,
    pub(crate) name: String,
}

/// A compiled machine: the top level, a Parallel branch or a Map processor.
#[derive(Debug)]
pub(crate) struct Machine {
    pub(crate) start: usize,
    pub(crate) states: Vec<State>,
    pub(crate) index: HashMap<String, usize>,
    pub(crate) timeout_seconds: Option<u64>,
}

/// `InputPath` / `OutputPath`.
#[derive(Debug)]
pub(crate) enum IoPath {
    /// Absent: the whole value.
    Root,
    /// `null`: an empty object.
    Null,
    Path(JsonPath),
}

/// `ResultPath` (of a state or a catcher).
#[derive(Debug, Clone)]
pub(crate) enum ResultPathSpec {
    /// `null`: keep the input, drop the result.
    Discard,
    Path(JsonPath),
}

/// A number given either literally or as a `…Path` field.
#[derive(Debug)]
pub(crate) enum NumSource {
    Lit(f64),
    Path(JsonPath),
}

/// One compiled state: the fields every type shares, then its own in `kind`.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) name: String,
    pub(crate) type_name: &'static str,
    pub(crate) input_path: IoPath,
    pub(crate) output_path: IoPath,
    pub(crate) parameters: Option<Template>,
    pub(crate) result_selector: Option<Template>,
    pub(crate) result_path: ResultPathSpec,
    pub(crate) next: Option<usize>,
    pub(crate) retry: Vec<Retrier>,
    pub(crate) catch: Vec<Catcher>,
    pub(crate) kind: Kind,
}

impl Definition {
    /// Parse and validate a definition from JSON text.
    pub fn parse(text: &str) -> Result<Definition, ValidationErrors> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| ValidationErrors::one("", format!("the definition is not valid JSON: {e}")))?;
        Definition::from_value(&v)
    }

    /// Validate and compile a definition already parsed as JSON.
    pub fn from_value(v: &Value) -> Result<Definition, ValidationErrors> {
        let mut errs = Vec::new();
        let machine = compile_machine(v, "", &mut errs);
        match machine {
            Some(m) if errs.is_empty() => Ok(Definition {
                machine: Arc::new(m),
                source: v.clone(),
                name: "StateMachine".to_string(),
            }),
            _ => {
                if errs.is_empty() {
                    errs.push(ValidationError {
                        location: String::new(),
                        message: "the definition is invalid".into(),
                    });
                }
                Err(ValidationErrors { errors: errs })
            }
        }
    }

    /// Give the state machine a name (used in ARNs and `$$.StateMachine`).
    pub fn with_name(mut self, name: impl Into<String>) -> Definition {
        self.name = name.into();
        self
    }

    /// The state machine's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The definition as JSON, exactly as loaded.
    pub fn source(&self) -> &Value {
        &self.source
    }

    /// Every distinct Task `Resource`, including those inside Parallel
    /// branches and Map processors, in order of first appearance.
    pub fn task_resources(&self) -> Vec<String> {
        let mut out = Vec::new();
        collect_resources(&self.machine, &mut out);
        out
    }

    /// A Mermaid `stateDiagram-v2` of the machine.
    pub fn to_mermaid(&self) -> String {
        mermaid::render(&self.machine)
    }
}

fn collect_resources(m: &Machine, out: &mut Vec<String>) {
    for s in &m.states {
        match &s.kind {
            Kind::Task(task) if !out.contains(&task.resource) => out.push(task.resource.clone()),
            Kind::Parallel(parallel) => parallel.branches.iter().for_each(|b| collect_resources(b, out)),
            Kind::Map(map) => collect_resources(&map.processor, out),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reports_every_problem() {
        let err = Definition::from_value(&json!({
            "StartAt": "A",
            "States": {
                "A": {"Type": "Pass", "Next": "Nope"},
                "B": {"Type": "Bogus"},
                "C": {"Type": "Task", "End": true, "InputPath": "no-dollar"},
                "D": {"Type": "Choice", "Choices": [{"Variable": "$.x", "Wat": 1, "Next": "A"}]},
                "E": {"Type": "Wait", "End": true},
                "F": {"Type": "Task", "Resource": "r", "End": true, "TimeoutSecond": 5,
                      "Retry": [{"ErrorEquals": ["States.ALL"], "MaxAttempt": 2}]}
            }
        }))
        .unwrap_err();
        let text = err.to_string();
        for needle in [
            "States.A.Next",
            "States.B.Type",
            "States.C.Resource",
            "States.C.InputPath",
            "States.D.Choices[0]",
            "States.E",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
    }

    #[test]
    fn unreachable_and_mermaid() {
        let err = Definition::from_value(&json!({
            "StartAt": "A",
            "States": {"A": {"Type": "Succeed"}, "B": {"Type": "Succeed"}}
        }))
        .unwrap_err();
        assert!(err.to_string().contains("unreachable"));
        let def = Definition::from_value(&json!({
            "StartAt": "A",
            "States": {
                "A": {"Type": "Task", "Resource": "shift", "Next": "B",
                      "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "F"}]},
                "B": {"Type": "Choice", "Choices": [{"Variable": "$.ok", "BooleanEquals": true, "Next": "S"}], "Default": "F"},
                "S": {"Type": "Succeed"},
                "F": {"Type": "Fail", "Error": "X"}
            }
        }))
        .unwrap();
        let m = def.to_mermaid();
        assert!(m.contains("[*] --> A"));
        assert!(m.contains("A --> F: catch States.ALL"));
        assert_eq!(def.task_resources(), vec!["shift".to_string()]);
        assert!(Definition::parse("not json").is_err());
        assert!(Definition::parse("[]").is_err());
    }
}
