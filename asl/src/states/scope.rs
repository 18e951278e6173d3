//! What a running state works with: a [`Scope`] for the state just entered
//! (its runtime errors, the `$$` context object, the one path lookup, payload
//! templates, `ResultPath`, `OutputPath` and the exit), and what the state
//! hands back to the driver ([`Flow`] or [`Stop`]).

use super::Kind;
use crate::definition::{IoPath, ResultPathSpec, State};
use crate::engine::run::Run;
use crate::error::EngineError;
use crate::history::EventKind;
use crate::jsonpath::JsonPath;
use crate::payload::{EvalError, Template};
use serde_json::{Map, Value, json};
use std::borrow::Cow;
use std::sync::Arc;

/// Where a state goes next, with its output.
#[derive(Debug)]
pub(crate) enum Flow {
    /// The output is shared with the history's `StateExited` (and the next `StateEntered`).
    Next(usize, Arc<Value>),
    End(Arc<Value>),
}

/// A Step Functions failure: error name and cause, as `Catch` and the
/// execution see them.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub(crate) error: Option<String>,
    pub(crate) cause: Option<String>,
}

/// Why a state did not finish.
#[derive(Debug)]
pub(crate) enum Stop {
    /// It failed (retry, catch, or fail the execution).
    Fail(Failure),
    /// The engine must stop (interrupt, handler panic, store error).
    Fatal(EngineError),
}

impl From<Failure> for Stop {
    fn from(f: Failure) -> Stop {
        Stop::Fail(f)
    }
}

/// A failure with this error name and cause.
pub(crate) fn fail(error: &str, cause: impl Into<String>) -> Stop {
    Stop::Fail(Failure {
        error: Some(error.to_string()),
        cause: Some(cause.into()),
    })
}

/// A value as text in an error cause: strings without their quotes.
pub(crate) fn raw_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// What a `$$` path reads.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Root {
    /// The context object, with `$$.State.RetryCount` when given.
    Context(Option<u32>),
    /// The state input, like a `$` path: how the `…SecondsPath`,
    /// `MaxConcurrencyPath` and `ToleratedFailure…Path` fields have always
    /// read `$$` paths.
    Input,
}

/// The state `st`, entered as event `entered_id` at time `entered`.
pub(crate) struct Scope<'a> {
    pub(crate) run: &'a Run<'a>,
    pub(crate) st: &'a State,
    entered_id: u64,
    entered: String,
}

impl<'a> Scope<'a> {
    pub(crate) fn new(run: &'a Run<'a>, st: &'a State, entered_id: u64, entered: String) -> Scope<'a> {
        Scope {
            run,
            st,
            entered_id,
            entered,
        }
    }

    /// A `States.Runtime` failure of this state: `cause` prefixed with
    /// where it happened, as Step Functions words it.
    pub(crate) fn runtime(&self, cause: String) -> Stop {
        fail(
            "States.Runtime",
            format!(
                "An error occurred while executing the state '{}' (entered at the event id #{}). {cause}",
                self.st.name, self.entered_id
            ),
        )
    }

    /// A payload-template error as this state's failure: `States.Runtime`
    /// gets the state's location in its cause, other errors keep theirs.
    fn eval_error(&self, e: EvalError) -> Stop {
        if e.error == "States.Runtime" {
            self.runtime(e.cause)
        } else {
            fail(e.error, e.cause)
        }
    }

    /// The context object (`$$`): with `$$.State.RetryCount` when `retry` is
    /// given, `$$.Map.Item` inside a Map's `ItemSelector`, `$$.Task.Token`
    /// for a Task's `Parameters`.
    pub(crate) fn context(
        &self,
        retry: Option<u32>,
        item: Option<(usize, &Value)>,
        token: Option<&str>,
    ) -> Value {
        let run = self.run;
        let mut state = Map::new();
        state.insert("Name".into(), Value::String(self.st.name.clone()));
        state.insert("EnteredTime".into(), Value::String(self.entered.clone()));
        if let Some(r) = retry {
            state.insert("RetryCount".into(), Value::from(r));
        }
        let mut c = json!({
            "Execution": {
                "Id": run.arn,
                "Input": run.input,
                "StartTime": run.start_time,
                "Name": run.name,
                "RoleArn": run.engine.role_arn,
                "RedriveCount": 0
            },
            "StateMachine": {"Id": run.machine_arn, "Name": run.machine_name},
            "State": Value::Object(state),
        });
        if let (Some((i, v)), Value::Object(o)) = (item, &mut c) {
            o.insert("Map".into(), json!({"Item": {"Index": i, "Value": v}}));
        }
        if let (Some(t), Value::Object(o)) = (token, &mut c) {
            o.insert("Task".into(), json!({"Token": t}));
        }
        c
    }

    /// The one path lookup: `$$` paths read what `root` says, others
    /// `input`; the context object is only built when read.
    pub(crate) fn lookup(&self, p: &JsonPath, input: &Value, root: Root) -> Option<Value> {
        match root {
            Root::Context(retry) if p.is_context() => p.select(&self.context(retry, None, None)),
            _ => p.select(input),
        }
    }

    /// [`Scope::lookup`], where selecting nothing is a runtime failure.
    pub(crate) fn select(&self, p: &JsonPath, input: &Value, root: Root) -> Result<Value, Stop> {
        self.lookup(p, input, root).ok_or_else(|| {
            self.runtime(format!(
                "Invalid path '{p}' : No results for path: {}",
                p.normalized()
            ))
        })
    }

    /// Evaluate a payload template on `input`; `context` builds the `$$`
    /// object, only when the template reads it.
    pub(crate) fn eval(
        &self,
        t: &Template,
        input: &Value,
        context: impl FnOnce() -> Value,
    ) -> Result<Value, Stop> {
        let c = if t.uses_context() { context() } else { Value::Null };
        t.eval(input, &c).map_err(|e| self.eval_error(e))
    }

    /// `InputPath` applied to the state's input: the input itself (borrowed, not copied) for
    /// the usual `$`.
    pub(crate) fn input_path<'v>(&self, raw: &'v Value) -> Result<Cow<'v, Value>, Stop> {
        // The types that retry see `$$.State.RetryCount` 0 here already.
        let retry = matches!(self.st.kind, Kind::Task(_) | Kind::Parallel(_) | Kind::Map(_)).then_some(0);
        match &self.st.input_path {
            IoPath::Root => Ok(Cow::Borrowed(raw)),
            IoPath::Null => Ok(Cow::Owned(Value::Object(Map::new()))),
            IoPath::Path(p) => self.select(p, raw, Root::Context(retry)).map(Cow::Owned),
        }
    }

    /// Place `result` into `raw` as `spec` (a state's or a catcher's
    /// `ResultPath`) says.
    pub(crate) fn result_path(
        &self,
        spec: &ResultPathSpec,
        raw: &Value,
        result: Value,
    ) -> Result<Value, Stop> {
        match spec {
            ResultPathSpec::Discard => Ok(raw.clone()),
            ResultPathSpec::Path(p) if p.is_root() => Ok(result),
            ResultPathSpec::Path(p) => p
                .set(raw.clone(), result)
                .map_err(|m| fail("States.ResultPathMatchFailure", format!("{m} to input '{raw}'"))),
        }
    }

    /// `OutputPath` applied to `v`.
    pub(crate) fn output_path(&self, v: Value) -> Result<Value, Stop> {
        match &self.st.output_path {
            IoPath::Root => Ok(v),
            IoPath::Null => Ok(Value::Object(Map::new())),
            IoPath::Path(p) => self.select(p, &v, Root::Context(None)),
        }
    }

    /// Leave with the state's effective input, `OutputPath` applied, as its output (a Choice,
    /// a Wait, a Succeed): when neither path selects anything, the output is the very input
    /// the state was entered with, `raw`, shared rather than copied.
    pub(crate) fn pass_on(
        &self,
        raw: &Arc<Value>,
        input: Cow<'_, Value>,
        next: Option<usize>,
    ) -> Result<Flow, Stop> {
        // Only `InputPath` `$` borrows: then the input is `raw`.
        if matches!(input, Cow::Borrowed(_)) && matches!(self.st.output_path, IoPath::Root) {
            return Ok(self.exited_shared(raw.clone(), next));
        }
        let out = self.output_path(input.into_owned())?;
        Ok(self.exited(out, next))
    }

    /// Record `StateExited` with `out` and go to `next` (`None`: the end).
    pub(crate) fn exited(&self, out: Value, next: Option<usize>) -> Flow {
        self.exited_shared(Arc::new(out), next)
    }

    fn exited_shared(&self, out: Arc<Value>, next: Option<usize>) -> Flow {
        self.run.push(EventKind::StateExited {
            name: self.st.name.clone(),
            output: out.clone(),
        });
        match next {
            Some(n) => Flow::Next(n, out),
            None => Flow::End(out),
        }
    }

    /// The usual exit: `OutputPath` on `v`, then on to the state's `Next`.
    pub(crate) fn exit(&self, v: Value) -> Result<Flow, Stop> {
        let out = self.output_path(v)?;
        Ok(self.exited(out, self.st.next))
    }
}
