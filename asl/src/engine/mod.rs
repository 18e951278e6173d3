//! The interpreter: runs a [`Definition`] to completion with Task states
//! served by a [`TaskHandler`], time taken from a [`Clock`], and progress
//! saved to an optional [`ExecutionStore`] after every top-level state so
//! [`Engine::resume`] can pick up where a crashed process stopped.
//!
//! This module is the API; `handler.rs` holds the Task handler contract and
//! `run.rs` drives one execution from state to state (the states themselves
//! run in `states/`).
//!
//! ```
//! use cutover_asl::{Definition, Engine, ExecutionStatus, NoTasks, VirtualClock};
//! use std::sync::Arc;
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let def = Arc::new(Definition::parse(r#"{"StartAt": "W", "States": {
//!     "W": {"Type": "Wait", "Seconds": 3600, "Next": "P"},
//!     "P": {"Type": "Pass", "Result": "done", "End": true}}}"#).unwrap());
//! let engine = Engine::new(Arc::new(NoTasks), Arc::new(VirtualClock::new()), None);
//! let out = engine.start(def, "run-1", serde_json::json!({})).await.unwrap();
//! assert_eq!(out.status, ExecutionStatus::Succeeded);
//! assert_eq!(out.output, Some(serde_json::json!("done")));
//! # });
//! ```

mod handler;
pub(crate) mod run;

pub use handler::{NoTasks, TaskContext, TaskFailure, TaskHandler};

use crate::clock::Clock;
use crate::definition::Definition;
use crate::error::EngineError;
use crate::history::{EventKind, HistoryEvent};
use crate::store::{ExecutionLease, ExecutionRecord, ExecutionStatus, ExecutionStore};
use crate::timestamp;
use run::Run;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The result of a finished execution.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExecutionOutcome {
    /// Execution ARN (also its id in the store).
    pub execution_arn: String,
    /// `Succeeded`, `Failed`, `TimedOut` or `Aborted`.
    pub status: ExecutionStatus,
    /// Output when succeeded.
    pub output: Option<Value>,
    /// Error name when failed.
    pub error: Option<String>,
    /// Cause when failed.
    pub cause: Option<String>,
    /// Full history.
    pub history: Vec<HistoryEvent>,
}

/// Runs executions.
#[derive(Debug, Clone)]
pub struct Engine {
    pub(crate) handler: Arc<dyn TaskHandler>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) store: Option<Arc<dyn ExecutionStore>>,
    account: String,
    region: String,
    pub(crate) role_arn: String,
    pub(crate) max_events: usize,
    /// Executions this engine (or a clone) is driving, to abort them.
    pub(crate) running: Arc<Mutex<HashMap<String, Arc<AbortSignal>>>>,
}

const DEFAULT_MAX_EVENTS: usize = 1_000_000;

/// Raised by [`Engine::abort`].
#[derive(Debug, Default)]
pub(crate) struct AbortSignal {
    pub(crate) notify: tokio::sync::Notify,
    pub(crate) cause: Mutex<Option<String>>,
}

/// A claimed execution name, from [`Engine::reserve`]; holds the store's
/// lease until the execution it starts has finished (or until dropped).
#[derive(Debug)]
pub struct Reservation {
    arn: String,
    name: String,
    _lease: Option<ExecutionLease>,
}

impl Reservation {
    /// The execution ARN.
    pub fn execution_arn(&self) -> &str {
        &self.arn
    }
}

impl Engine {
    /// An engine serving Tasks with `handler`, reading time from `clock`,
    /// persisting to `store` when given.
    pub fn new(
        handler: Arc<dyn TaskHandler>,
        clock: Arc<dyn Clock>,
        store: Option<Arc<dyn ExecutionStore>>,
    ) -> Engine {
        Engine {
            handler,
            clock,
            store,
            account: "000000000000".into(),
            region: "local".into(),
            role_arn: "arn:aws:iam::000000000000:role/cutover-local".into(),
            max_events: DEFAULT_MAX_EVENTS,
            running: Arc::default(),
        }
    }

    /// Use another account id, region and role ARN in ARNs and `$$`.
    pub fn with_identity(
        mut self,
        account: impl Into<String>,
        region: impl Into<String>,
        role_arn: impl Into<String>,
    ) -> Engine {
        self.account = account.into();
        self.region = region.into();
        self.role_arn = role_arn.into();
        self
    }

    /// Fail executions whose history grows past `n` events (default
    /// 1,000,000), so a definition that loops forever cannot spin forever on
    /// virtual time.
    pub fn with_max_events(mut self, n: usize) -> Engine {
        self.max_events = n;
        self
    }

    /// Stop a running execution (started or resumed by this engine or a
    /// clone of it): it ends with status `Aborted` at its next await point.
    /// Returns false when no such execution is running here.
    pub fn abort(&self, execution_arn: &str, cause: Option<String>) -> bool {
        let g = self.running.lock().unwrap_or_else(|e| e.into_inner());
        match g.get(execution_arn) {
            Some(sig) => {
                *sig.cause.lock().unwrap_or_else(|e| e.into_inner()) = cause;
                sig.notify.notify_one();
                true
            }
            None => false,
        }
    }

    /// The engine's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The ARN an execution named `name` of `def` gets.
    pub fn execution_arn(&self, def: &Definition, name: &str) -> String {
        format!(
            "arn:aws:states:{}:{}:execution:{}:{}",
            self.region, self.account, def.name, name
        )
    }

    /// Persisted executions that have not finished (to resume after a
    /// restart).
    pub fn unfinished(&self) -> Result<Vec<ExecutionRecord>, EngineError> {
        let store = self.store.as_ref().ok_or(EngineError::NoStore)?;
        store.list_unfinished().map_err(EngineError::Store)
    }

    /// Start an execution and run it to completion.
    pub async fn start(
        &self,
        def: Arc<Definition>,
        name: &str,
        input: Value,
    ) -> Result<ExecutionOutcome, EngineError> {
        let reservation = self.reserve(&def, name)?;
        self.start_reserved(def, reservation, input).await
    }

    /// Claims the name `name` for a new execution of `def` without running
    /// it yet: fails with [`EngineError::ExecutionAlreadyExists`] when the
    /// store holds that execution, and with [`EngineError::AlreadyRunning`]
    /// while another engine (here or in another process) is starting or
    /// running it. Lets a caller answer "started" before it spawns
    /// [`Engine::start_reserved`].
    pub fn reserve(&self, def: &Definition, name: &str) -> Result<Reservation, EngineError> {
        let arn = self.execution_arn(def, name);
        let lease = match &self.store {
            None => None,
            Some(store) => {
                let lease = store
                    .lease(&arn)
                    .map_err(EngineError::Store)?
                    .ok_or_else(|| EngineError::AlreadyRunning(arn.clone()))?;
                if store.load(&arn).map_err(EngineError::Store)?.is_some() {
                    return Err(EngineError::ExecutionAlreadyExists(arn));
                }
                Some(lease)
            }
        };
        Ok(Reservation {
            arn,
            name: name.to_string(),
            _lease: lease,
        })
    }

    /// Runs the execution `reservation` claimed, to completion.
    pub async fn start_reserved(
        &self,
        def: Arc<Definition>,
        reservation: Reservation,
        input: Value,
    ) -> Result<ExecutionOutcome, EngineError> {
        let run = Run::new(self, &def, &reservation, input.clone());
        run.push(EventKind::ExecutionStarted { input: input.clone() });
        let m = &def.machine;
        run.save(Some(&m.states[m.start].name), Some(&input))?;
        let outcome = run.drive(m, m.start, input, self.clock.now()).await;
        drop(reservation);
        outcome
    }

    /// Continue a persisted, unfinished execution from its last completed
    /// top-level state. A finished execution just returns its outcome.
    pub async fn resume(&self, def: Arc<Definition>, id: &str) -> Result<ExecutionOutcome, EngineError> {
        let store = self.store.as_ref().ok_or(EngineError::NoStore)?;
        // Accept a bare execution name too (Step Functions names hold no `:`).
        let arn = if id.starts_with("arn:") {
            id.to_string()
        } else {
            self.execution_arn(&def, id)
        };
        // Whoever holds the lease is driving the execution; the record is read
        // after taking it, so a run that finished meanwhile is seen finished.
        let _lease = store
            .lease(&arn)
            .map_err(EngineError::Store)?
            .ok_or_else(|| EngineError::AlreadyRunning(arn.clone()))?;
        let rec = store
            .load(&arn)
            .map_err(EngineError::Store)?
            .ok_or_else(|| EngineError::ExecutionNotFound(id.to_string()))?;
        if rec.status == ExecutionStatus::Running
            && self
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&rec.execution_arn)
        {
            return Err(EngineError::AlreadyRunning(rec.execution_arn));
        }
        if rec.status != ExecutionStatus::Running {
            return Ok(ExecutionOutcome {
                execution_arn: rec.execution_arn,
                status: rec.status,
                output: rec.output,
                error: rec.error,
                cause: rec.cause,
                history: rec.history,
            });
        }
        let m = &def.machine;
        let state = rec.next_state.clone().unwrap_or_default();
        let Some(&idx) = m.index.get(&state) else {
            return Err(EngineError::DefinitionMismatch {
                id: rec.execution_arn,
                state,
            });
        };
        let started = timestamp::parse(&rec.start_time)
            .map(timestamp::from_nanos)
            .unwrap_or_else(|| self.clock.now());
        let run = Run::resumed(self, &def, &rec, &state);
        run.push(EventKind::ExecutionResumed { state: state.clone() });
        let input = rec.next_input.clone().unwrap_or(Value::Null);
        run.drive(m, idx, input, started).await
    }
}

#[cfg(test)]
mod checkpoint_tests {
    use std::sync::{Arc, Mutex};

    use serde_json::{Value, json};

    use super::*;
    use crate::clock::VirtualClock;
    use crate::definition::Definition;
    use crate::store::{ExecutionRecord, ExecutionStore, MemoryStore};

    /// Records the state each checkpoint resumes at.
    #[derive(Debug, Default)]
    struct Checkpoints {
        inner: MemoryStore,
        at: Mutex<Vec<String>>,
        /// Says it keeps no checkpoints (as a scratch directory's store).
        scratch: bool,
        saves: std::sync::atomic::AtomicUsize,
    }

    impl ExecutionStore for Checkpoints {
        fn keeps_checkpoints(&self) -> bool {
            !self.scratch
        }

        fn save(&self, record: &ExecutionRecord) -> Result<(), String> {
            self.saves.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if let Some(next) = &record.next_state {
                self.at.lock().unwrap().push(next.clone());
            }
            self.inner.save(record)
        }
        fn load(&self, id: &str) -> Result<Option<ExecutionRecord>, String> {
            self.inner.load(id)
        }
        fn list_unfinished(&self) -> Result<Vec<ExecutionRecord>, String> {
            self.inner.list_unfinished()
        }
    }

    #[derive(Debug)]
    struct Answer;

    impl TaskHandler for Answer {
        fn invoke<'a>(
            &'a self,
            _resource: &'a str,
            _input: Value,
            _cx: TaskContext<'a>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, TaskFailure>> + Send + 'a>>
        {
            Box::pin(async { Ok(json!({})) })
        }
    }

    /// A tick loop: a Task with effects, then Wait → read-only Task → Pass → Choice, three
    /// times; run on a store that keeps checkpoints or not.
    async fn tick_loop(scratch: bool) -> Arc<Checkpoints> {
        let def = Definition::parse(
            &json!({
                "StartAt": "Shift",
                "States": {
                    "Shift": {"Type": "Task", "Resource": "arn:aws:lambda:us-east-1:1:function:shift", "ResultPath": null, "Next": "Read"},
                    "Read": {"Type": "Task", "Resource": "arn:aws:states:::dynamodb:getItem", "ResultPath": null, "Next": "Count"},
                    "Count": {"Type": "Pass", "Parameters": {"n.$": "States.MathAdd($.n, 1)"}, "Next": "More"},
                    "More": {"Type": "Choice", "Choices": [{"Variable": "$.n", "NumericLessThan": 3, "Next": "Tick"}], "Default": "Done"},
                    "Tick": {"Type": "Wait", "Seconds": 1, "Next": "Read"},
                    "Done": {"Type": "Succeed"}
                }
            })
            .to_string(),
        )
        .unwrap();
        let store = Arc::new(Checkpoints {
            scratch,
            ..Checkpoints::default()
        });
        let engine = Engine::new(
            Arc::new(Answer),
            Arc::new(VirtualClock::new()),
            Some(store.clone()),
        );
        let out = engine
            .start(Arc::new(def.with_name("m")), "e", json!({"n": 0}))
            .await
            .unwrap();
        assert_eq!(out.status, crate::store::ExecutionStatus::Succeeded);
        assert_eq!(out.output, Some(json!({"n": 3})));
        store
    }

    /// A read-only Task (DynamoDB getItem) checkpoints only when a state with effects ran since
    /// the last checkpoint; a tick loop of Wait → read → Choice checkpoints once per tick.
    #[tokio::test]
    async fn a_read_only_task_checkpoints_only_after_effects() {
        let store = tick_loop(false).await;
        let at = store.at.lock().unwrap().clone();
        // Start; before the first read (the shift's effect is recorded); each tick's deadline,
        // not the reads after it; the end.
        assert_eq!(at, ["Shift", "Read", "Tick", "Tick", "Done"], "{at:?}");
    }

    /// A store that keeps no checkpoints gets the start and the end, nothing between.
    #[tokio::test]
    async fn a_store_without_checkpoints_gets_the_start_and_the_end() {
        let store = tick_loop(true).await;
        assert_eq!(*store.at.lock().unwrap(), ["Shift"]);
        assert_eq!(store.saves.load(std::sync::atomic::Ordering::SeqCst), 2);
        let kept = tick_loop(false).await;
        assert_eq!(kept.saves.load(std::sync::atomic::Ordering::SeqCst), 6);
    }
}
