//! `cutover-asl`: an embedded [Amazon States Language] engine (JSONPath
//! query language) that runs real Step Functions definitions in-process.
//!
//! * [`Definition`] loads and validates a definition, reporting every
//!   problem at once; it also lists Task resources and draws a Mermaid
//!   diagram.
//! * [`Engine`] runs executions: Task states are served by a pluggable
//!   [`TaskHandler`], time comes from a [`Clock`] ([`VirtualClock`] makes a
//!   canary with hour-long Waits finish instantly), the history mirrors
//!   `GetExecutionHistory`, and an optional [`ExecutionStore`] makes
//!   executions resumable after a crash.
//! * [`conformance`] replays recorded AWS executions.
//!
//! ```
//! use cutover_asl::{Definition, Engine, ExecutionStatus, TaskContext, TaskFailure, TaskHandler, VirtualClock};
//! use serde_json::{json, Value};
//! use std::{future::Future, pin::Pin, sync::Arc};
//!
//! #[derive(Debug)]
//! struct Shift;
//! impl TaskHandler for Shift {
//!     fn invoke<'a>(&'a self, _resource: &'a str, input: Value, _cx: TaskContext<'a>)
//!         -> Pin<Box<dyn Future<Output = Result<Value, TaskFailure>> + Send + 'a>> {
//!         Box::pin(async move { Ok(json!({"weight": input["weight"]})) })
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let def = Definition::parse(r#"{"StartAt": "Shift", "States": {
//!     "Shift": {"Type": "Task", "Resource": "shift", "Parameters": {"weight": 10}, "End": true}}}"#).unwrap();
//! let engine = Engine::new(Arc::new(Shift), Arc::new(VirtualClock::new()), None);
//! let out = engine.start(Arc::new(def), "exec-1", json!({})).await.unwrap();
//! assert_eq!(out.status, ExecutionStatus::Succeeded);
//! assert_eq!(out.output, Some(json!({"weight": 10})));
//! # });
//! ```
//!
//! # Semantics worth knowing
//!
//! * Invariant: a [`Definition`] that loads has every `Next`/`Default`/catch
//!   target resolved, every path, template, intrinsic call and Choice rule
//!   compiled, and every state reachable; execution never fails for a
//!   structural reason.
//! * Invariant: with a store, a record is saved before the first state and
//!   after every completed top-level transition; [`Engine::resume`] restarts
//!   the state that was running, so completed top-level Tasks never run
//!   again. States *inside* a Parallel branch or Map iteration are not
//!   checkpointed: resuming re-runs the whole Parallel/Map state.
//! * Errors follow Step Functions: `States.ALL` matches everything except
//!   `States.Runtime` (bad paths, bad Wait values…), `States.TaskFailed`
//!   everything but `States.Timeout`; runtime causes read
//!   "An error occurred while executing the state 'X' (entered at the event id #N). …".
//! * On [`VirtualClock`], only sleeping on the clock takes time. A Task
//!   racing `TimeoutSeconds`/`HeartbeatSeconds` against work that awaits
//!   something else (real I/O) loses the race as soon as the executor is
//!   idle; fake handlers should model latency with `cx.clock.sleep`.
//!
//! [Amazon States Language]: https://states-language.net/spec.html

mod choice;
pub mod clock;
pub mod conformance;
pub mod definition;
pub mod engine;
pub mod error;
pub mod history;
pub mod intrinsics;
pub mod jsonpath;
mod payload;
mod states;
pub mod store;
pub mod timestamp;

pub use clock::{Clock, ScaledClock, VirtualClock, WallClock};
pub use definition::Definition;
pub use engine::{Engine, ExecutionOutcome, NoTasks, Reservation, TaskContext, TaskFailure, TaskHandler};
pub use error::{EngineError, ValidationError, ValidationErrors};
pub use history::{EventKind, HistoryEvent};
pub use store::{
    ExecutionLease, ExecutionRecord, ExecutionStatus, ExecutionStore, FileStore, MemoryStore, RecordHeader,
};
