//! The interpreter: runs a [`Definition`] to completion with Task states
//! served by a [`TaskHandler`], time taken from a [`Clock`], and progress
//! saved to an optional [`ExecutionStore`] after every top-level state so
//! [`Engine::resume`] can pick up where a crashed process stopped.
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

use crate::clock::Clock;
use crate::definition::{
    Catcher, Definition, IoPath, Kind, Machine, NumSource, ResultPathSpec, Retrier, State, StrSource,
    WaitSpec,
};
use crate::error::EngineError;
use crate::history::{EventKind, HistoryEvent};
use crate::intrinsics::{IntrinsicError, random_u64, uuid_v4};
use crate::jsonpath::JsonPath;
use crate::payload::Template;
use crate::store::{ExecutionLease, ExecutionRecord, ExecutionStatus, ExecutionStore};
use crate::timestamp;
use futures_util::FutureExt as _;
use futures_util::StreamExt as _;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// A Task failure as reported by a handler: the Step Functions error name
/// (matched by `Retry`/`Catch` `ErrorEquals`) and a cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFailure {
    /// Error name, e.g. `Canary.Unhealthy` or `States.TaskFailed`.
    pub error: String,
    /// Human-readable cause.
    pub cause: String,
}

const INTERRUPT: &str = "cutover.Interrupted";

impl TaskFailure {
    /// A failure with this error name and cause.
    pub fn new(error: impl Into<String>, cause: impl Into<String>) -> TaskFailure {
        TaskFailure {
            error: error.into(),
            cause: cause.into(),
        }
    }

    /// A sentinel that stops the engine *without* failing the execution, as
    /// if the process had crashed: `start`/`resume` return
    /// [`EngineError::Interrupted`] and the persisted execution stays
    /// resumable from its last completed top-level state.
    pub fn interrupt(reason: impl Into<String>) -> TaskFailure {
        TaskFailure::new(INTERRUPT, reason)
    }
}

/// What a handler knows about the Task it runs.
#[derive(Debug, Clone, Copy)]
pub struct TaskContext<'a> {
    /// Execution ARN.
    pub execution_arn: &'a str,
    /// Name of the Task state.
    pub state_name: &'a str,
    /// 0 on the first attempt, then 1, 2, … on retries.
    pub retry_count: u32,
    /// A token unique to this attempt (`$$.Task.Token`).
    pub task_token: &'a str,
    /// The engine's clock (use it for any delay so virtual time works).
    pub clock: &'a dyn Clock,
    heartbeat: &'a AtomicI64,
}

/// Heartbeats of contexts made outside the engine go nowhere.
static DETACHED_HEARTBEAT: AtomicI64 = AtomicI64::new(0);

impl<'a> TaskContext<'a> {
    /// A context outside any execution, to unit-test a handler directly:
    /// first attempt, empty token, heartbeats ignored.
    pub fn detached(execution_arn: &'a str, state_name: &'a str, clock: &'a dyn Clock) -> TaskContext<'a> {
        TaskContext {
            execution_arn,
            state_name,
            retry_count: 0,
            task_token: "",
            clock,
            heartbeat: &DETACHED_HEARTBEAT,
        }
    }

    /// Report progress: resets the `HeartbeatSeconds` timer.
    pub fn heartbeat(&self) {
        let now = timestamp::to_nanos(self.clock.now()) as i64;
        self.heartbeat.store(now, Ordering::Relaxed);
    }
}

/// Serves Task states.
pub trait TaskHandler: Send + Sync + Debug {
    /// Run a Task state's resource with its effective input; Err carries the
    /// Step Functions error name and cause.
    fn invoke<'a>(
        &'a self,
        resource: &'a str,
        input: Value,
        cx: TaskContext<'a>,
    ) -> Pin<Box<dyn Future<Output = Result<Value, TaskFailure>> + Send + 'a>>;
}

/// A handler for machines without Task states: every invocation fails with
/// `States.TaskFailed`.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoTasks;

impl TaskHandler for NoTasks {
    fn invoke<'a>(
        &'a self,
        resource: &'a str,
        _input: Value,
        _cx: TaskContext<'a>,
    ) -> Pin<Box<dyn Future<Output = Result<Value, TaskFailure>> + Send + 'a>> {
        Box::pin(async move {
            Err(TaskFailure::new(
                "States.TaskFailed",
                format!("no handler serves resource '{resource}'"),
            ))
        })
    }
}

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
    handler: Arc<dyn TaskHandler>,
    clock: Arc<dyn Clock>,
    store: Option<Arc<dyn ExecutionStore>>,
    account: String,
    region: String,
    role_arn: String,
    max_events: usize,
    running: Arc<Mutex<HashMap<String, Arc<AbortSignal>>>>,
}

const DEFAULT_MAX_EVENTS: usize = 1_000_000;

/// Raised by [`Engine::abort`].
#[derive(Debug, Default)]
struct AbortSignal {
    notify: tokio::sync::Notify,
    cause: Mutex<Option<String>>,
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

/// Removes an execution from the running set when its driver ends.
struct Running<'e> {
    engine: &'e Engine,
    arn: String,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut g = self.engine.running.lock().unwrap_or_else(|e| e.into_inner());
        g.remove(&self.arn);
    }
}

#[derive(Debug, Clone)]
struct Failure {
    error: Option<String>,
    cause: Option<String>,
}

#[derive(Debug)]
enum Stop {
    Fail(Failure),
    Fatal(EngineError),
}

impl From<Failure> for Stop {
    fn from(f: Failure) -> Stop {
        Stop::Fail(f)
    }
}

/// A payload-template error as the state's failure: `States.Runtime` gets the state's
/// location in its cause (via `rt`), other errors keep theirs.
fn eval_error(e: crate::payload::EvalError, rt: &dyn Fn(String) -> Stop) -> Stop {
    if e.error == "States.Runtime" {
        rt(e.cause)
    } else {
        fail(e.error, e.cause)
    }
}

fn fail(error: &str, cause: impl Into<String>) -> Stop {
    Stop::Fail(Failure {
        error: Some(error.to_string()),
        cause: Some(cause.into()),
    })
}

enum Flow {
    Next(usize, Value),
    End(Value),
}

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

struct Run<'e> {
    engine: &'e Engine,
    arn: String,
    name: String,
    machine_name: String,
    machine_arn: String,
    start_time: String,
    input: Value,
    history: Mutex<Hist>,
    /// The top-level state being run, so a Wait there can checkpoint its deadline.
    top_state: Mutex<Option<String>>,
    /// A resumed execution's Wait deadline: (state, Unix nanoseconds), used once.
    resumed_wait: Mutex<Option<(String, i128)>>,
}

/// The deadline of the Wait state `state` that an interrupted run had started, from its history:
/// a `WaitStarted` of that state after its last `StateEntered`.
fn interrupted_wait(history: &[HistoryEvent], state: &str) -> Option<(String, i128)> {
    for event in history.iter().rev() {
        match &event.kind {
            EventKind::WaitStarted { name, until } if name == state => {
                return timestamp::parse(until).map(|t| (name.clone(), t));
            }
            EventKind::StateEntered { name, .. } if name == state => return None,
            EventKind::StateExited { .. } => return None,
            _ => {}
        }
    }
    None
}

/// History plus a one-entry cache of the last formatted timestamp: on
/// virtual time most events share an instant, and formatting dominates a
/// Pass state's cost.
#[derive(Default)]
struct Hist {
    events: Vec<HistoryEvent>,
    last: Option<(i128, String)>,
}

fn raw_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn error_object(f: &Failure) -> Value {
    let mut m = Map::new();
    m.insert(
        "Error".into(),
        f.error.clone().map(Value::String).unwrap_or(Value::Null),
    );
    m.insert(
        "Cause".into(),
        f.cause.clone().map(Value::String).unwrap_or(Value::Null),
    );
    Value::Object(m)
}

fn matches_error(names: &[String], f: &Failure) -> bool {
    let err = f.error.as_deref();
    let terminal = matches!(err, Some("States.Runtime") | Some("States.DataLimitExceeded"));
    names.iter().any(|n| match n.as_str() {
        "States.ALL" => !terminal,
        "States.TaskFailed" => !terminal && err != Some("States.Timeout"),
        other => err == Some(other),
    })
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
        let run = Run {
            engine: self,
            arn: reservation.arn.clone(),
            name: reservation.name.clone(),
            machine_name: def.name.clone(),
            machine_arn: format!(
                "arn:aws:states:{}:{}:stateMachine:{}",
                self.region, self.account, def.name
            ),
            start_time: timestamp::format_system(self.clock.now()),
            input: input.clone(),
            history: Mutex::new(Hist::default()),
            top_state: Mutex::new(None),
            resumed_wait: Mutex::new(None),
        };
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
        let run = Run {
            engine: self,
            arn: rec.execution_arn.clone(),
            name: rec.name.clone(),
            machine_name: def.name.clone(),
            machine_arn: format!(
                "arn:aws:states:{}:{}:stateMachine:{}",
                self.region, self.account, def.name
            ),
            start_time: rec.start_time.clone(),
            input: rec.input.clone(),
            history: Mutex::new(Hist {
                events: rec.history.clone(),
                last: None,
            }),
            top_state: Mutex::new(None),
            // A Wait keeps its schedule across restarts: it sleeps only what is left.
            resumed_wait: Mutex::new(interrupted_wait(&rec.history, &state)),
        };
        run.push(EventKind::ExecutionResumed { state: state.clone() });
        let input = rec.next_input.clone().unwrap_or(Value::Null);
        run.drive(m, idx, input, started).await
    }
}

impl Run<'_> {
    fn push(&self, kind: EventKind) -> u64 {
        self.push_at(kind).0
    }

    /// Record an event; returns its id and timestamp.
    fn push_at(&self, kind: EventKind) -> (u64, String) {
        let now = timestamp::to_nanos(self.engine.clock.now());
        let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let ts = match &h.last {
            Some((t, s)) if *t == now => s.clone(),
            _ => {
                let s = timestamp::format(now);
                h.last = Some((now, s.clone()));
                s
            }
        };
        let id = h.events.len() as u64 + 1;
        h.events.push(HistoryEvent {
            id,
            previous_event_id: id - 1,
            timestamp: ts.clone(),
            kind,
        });
        (id, ts)
    }

    fn history(&self) -> Vec<HistoryEvent> {
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .events
            .clone()
    }

    fn save(&self, next: Option<&str>, next_input: Option<&Value>) -> Result<(), EngineError> {
        let Some(store) = &self.engine.store else {
            return Ok(());
        };
        let rec = ExecutionRecord {
            execution_arn: self.arn.clone(),
            name: self.name.clone(),
            state_machine: self.machine_name.clone(),
            status: ExecutionStatus::Running,
            input: self.input.clone(),
            start_time: self.start_time.clone(),
            next_state: next.map(String::from),
            next_input: next_input.cloned(),
            output: None,
            error: None,
            cause: None,
            history: self.history(),
        };
        store.save(&rec).map_err(EngineError::Store)
    }

    fn finish(
        &self,
        status: ExecutionStatus,
        output: Option<Value>,
        error: Option<String>,
        cause: Option<String>,
    ) -> Result<ExecutionOutcome, EngineError> {
        // The execution is over: hand the history out instead of copying it.
        let history = std::mem::take(&mut self.history.lock().unwrap_or_else(|e| e.into_inner()).events);
        let outcome = ExecutionOutcome {
            execution_arn: self.arn.clone(),
            status,
            output,
            error,
            cause,
            history,
        };
        if let Some(store) = &self.engine.store {
            let rec = ExecutionRecord {
                execution_arn: self.arn.clone(),
                name: self.name.clone(),
                state_machine: self.machine_name.clone(),
                status,
                input: self.input.clone(),
                start_time: self.start_time.clone(),
                next_state: None,
                next_input: None,
                output: outcome.output.clone(),
                error: outcome.error.clone(),
                cause: outcome.cause.clone(),
                history: outcome.history.clone(),
            };
            store.save(&rec).map_err(EngineError::Store)?;
        }
        Ok(outcome)
    }

    async fn drive(
        &self,
        m: &Machine,
        start: usize,
        input: Value,
        started: std::time::SystemTime,
    ) -> Result<ExecutionOutcome, EngineError> {
        let signal = Arc::new(AbortSignal::default());
        self.engine
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.arn.clone(), signal.clone());
        let _running = Running {
            engine: self.engine,
            arn: self.arn.clone(),
        };
        let body = self.run_machine(m, start, input, true, None);
        let timeout = async {
            match m.timeout_seconds {
                None => std::future::pending::<()>().await,
                Some(secs) => {
                    let elapsed = self
                        .engine
                        .clock
                        .now()
                        .duration_since(started)
                        .unwrap_or_default();
                    let left = Duration::from_secs(secs).saturating_sub(elapsed);
                    self.engine.clock.sleep(left).await
                }
            }
        };
        let result = tokio::select! {
            biased;
            r = body => Some(r),
            _ = signal.notify.notified() => {
                let cause = signal.cause.lock().unwrap_or_else(|e| e.into_inner()).take();
                self.push(EventKind::ExecutionAborted { cause: cause.clone() });
                return self.finish(ExecutionStatus::Aborted, None, None, cause);
            }
            _ = timeout => None,
        };
        match result {
            Some(Ok(output)) => {
                self.push(EventKind::ExecutionSucceeded {
                    output: output.clone(),
                });
                self.finish(ExecutionStatus::Succeeded, Some(output), None, None)
            }
            Some(Err(Stop::Fail(f))) => {
                self.push(EventKind::ExecutionFailed {
                    error: f.error.clone(),
                    cause: f.cause.clone(),
                });
                self.finish(ExecutionStatus::Failed, None, f.error, f.cause)
            }
            Some(Err(Stop::Fatal(e))) => Err(e),
            None => {
                let error = Some("States.Timeout".to_string());
                let cause = Some(format!(
                    "The execution ran longer than its TimeoutSeconds ({}s)",
                    m.timeout_seconds.unwrap_or_default()
                ));
                self.push(EventKind::ExecutionTimedOut {
                    error: error.clone(),
                    cause: cause.clone(),
                });
                self.finish(ExecutionStatus::TimedOut, None, error, cause)
            }
        }
    }

    fn run_machine<'a>(
        &'a self,
        m: &'a Machine,
        start: usize,
        input: Value,
        top: bool,
        _item: Option<usize>,
    ) -> BoxFut<'a, Result<Value, Stop>> {
        Box::pin(async move {
            let mut idx = start;
            let mut input = input;
            loop {
                let st = &m.states[idx];
                let events = self
                    .history
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .events
                    .len();
                if events > self.engine.max_events {
                    return Err(fail(
                        "States.Runtime",
                        format!(
                            "The execution history exceeded {} events (before entering the state '{}')",
                            self.engine.max_events, st.name
                        ),
                    ));
                }
                if top {
                    *self.top_state.lock().unwrap_or_else(|e| e.into_inner()) = Some(st.name.clone());
                }
                match self.run_state(st, input).await? {
                    Flow::Next(n, out) => {
                        if top {
                            self.save(Some(&m.states[n].name), Some(&out))
                                .map_err(Stop::Fatal)?;
                        }
                        idx = n;
                        input = out;
                    }
                    Flow::End(out) => return Ok(out),
                }
            }
        })
    }

    fn context(
        &self,
        st: &State,
        entered: &str,
        retry: Option<u32>,
        item: Option<(usize, &Value)>,
        token: Option<&str>,
    ) -> Value {
        let mut state = Map::new();
        state.insert("Name".into(), Value::String(st.name.clone()));
        state.insert("EnteredTime".into(), Value::String(entered.to_string()));
        if let Some(r) = retry {
            state.insert("RetryCount".into(), Value::from(r));
        }
        let mut c = json!({
            "Execution": {
                "Id": self.arn,
                "Input": self.input,
                "StartTime": self.start_time,
                "Name": self.name,
                "RoleArn": self.engine.role_arn,
                "RedriveCount": 0
            },
            "StateMachine": {"Id": self.machine_arn, "Name": self.machine_name},
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

    fn run_state<'a>(&'a self, st: &'a State, raw: Value) -> BoxFut<'a, Result<Flow, Stop>> {
        Box::pin(async move {
            let (entered_id, entered) = self.push_at(EventKind::StateEntered {
                name: st.name.clone(),
                input: raw.clone(),
            });
            let rt = |cause: String| {
                fail(
                    "States.Runtime",
                    format!(
                        "An error occurred while executing the state '{}' (entered at the event id #{entered_id}). {cause}",
                        st.name
                    ),
                )
            };
            let has_retry = matches!(st.kind, Kind::Task { .. } | Kind::Parallel { .. } | Kind::Map(_));
            let base_retry = if has_retry { Some(0) } else { None };
            let ctx = |retry: Option<u32>| self.context(st, &entered, retry, None, None);

            // InputPath.
            let input = match &st.input_path {
                IoPath::Root => raw.clone(),
                IoPath::Null => Value::Object(Map::new()),
                IoPath::Path(p) => {
                    let root_ctx;
                    let root = if p.is_context() {
                        root_ctx = ctx(base_retry);
                        &root_ctx
                    } else {
                        &raw
                    };
                    p.select(root).ok_or_else(|| {
                        rt(format!(
                            "Invalid path '{p}' : No results for path: {}",
                            p.normalized()
                        ))
                    })?
                }
            };
            let eval_tpl = |t: &Template, v: &Value, retry: Option<u32>| -> Result<Value, Stop> {
                let c = if t.uses_context() { ctx(retry) } else { Value::Null };
                t.eval(v, &c).map_err(|e| eval_error(e, &rt))
            };

            match &st.kind {
                Kind::Pass { result } => {
                    let eff = match &st.parameters {
                        Some(t) => eval_tpl(t, &input, None)?,
                        None => input,
                    };
                    let res = result.clone().unwrap_or(eff);
                    let out = self.apply_result_path(&st.result_path, &raw, res)?;
                    self.exit(st, out, &rt, &ctx)
                }
                Kind::Succeed => {
                    let out = self.output_path(st, input, &rt, &ctx)?;
                    self.push(EventKind::StateExited {
                        name: st.name.clone(),
                        output: out.clone(),
                    });
                    Ok(Flow::End(out))
                }
                Kind::Fail { error, cause } => {
                    let resolve = |s: &StrSource, field: &str| -> Result<Option<String>, Stop> {
                        Ok(match s {
                            StrSource::None => None,
                            StrSource::Lit(x) => Some(x.clone()),
                            StrSource::Path(p) => {
                                let root_ctx;
                                let root = if p.is_context() {
                                    root_ctx = ctx(None);
                                    &root_ctx
                                } else {
                                    &raw
                                };
                                let v = p.select(root).ok_or_else(|| {
                                    rt(format!(
                                        "The JSONPath '{p}' specified for the field '{field}' could not be found in the input '{raw}'"
                                    ))
                                })?;
                                Some(raw_text(&v))
                            }
                            StrSource::Call(f) => {
                                let c = if f.uses_context() { ctx(None) } else { Value::Null };
                                match f.eval(&raw, &c) {
                                    Ok(v) => Some(raw_text(&v)),
                                    Err(IntrinsicError::PathNotFound(p)) => {
                                        return Err(rt(format!(
                                            "The JSONPath '{p}' specified for the field '{field}' could not be found in the input '{raw}'"
                                        )));
                                    }
                                    Err(IntrinsicError::Failure(m)) => {
                                        return Err(fail("States.IntrinsicFailure", m));
                                    }
                                }
                            }
                        })
                    };
                    let error = resolve(error, "ErrorPath")?;
                    let cause = resolve(cause, "CausePath")?;
                    Err(Stop::Fail(Failure { error, cause }))
                }
                Kind::Choice { choices, default } => {
                    let cfn = || ctx(None);
                    let mut next = None;
                    for (rule, n) in choices {
                        if rule.eval(&input, &cfn).map_err(&rt)? {
                            next = Some(*n);
                            break;
                        }
                    }
                    let Some(n) = next.or(*default) else {
                        return Err(fail(
                            "States.NoChoiceMatched",
                            format!(
                                "No Choice Rule matched and no Default is specified in the state '{}'",
                                st.name
                            ),
                        ));
                    };
                    let out = self.output_path(st, input, &rt, &ctx)?;
                    self.push(EventKind::StateExited {
                        name: st.name.clone(),
                        output: out.clone(),
                    });
                    Ok(Flow::Next(n, out))
                }
                Kind::Wait(spec) => {
                    let now = timestamp::to_nanos(self.engine.clock.now());
                    let resumed = {
                        let mut r = self.resumed_wait.lock().unwrap_or_else(|e| e.into_inner());
                        match r.take() {
                            Some((name, until)) if name == st.name => Some(until),
                            other => {
                                *r = other;
                                None
                            }
                        }
                    };
                    let until = match spec {
                        _ if resumed.is_some() => resumed.unwrap_or(now),
                        WaitSpec::Seconds(s) => now + *s as i128 * 1_000_000_000,
                        WaitSpec::Timestamp(t) => *t,
                        WaitSpec::SecondsPath(p) => {
                            let v = self.select_path(p, &input, &ctx, &rt)?;
                            let secs = match &v {
                                Value::Number(n) if n.is_i64() || n.is_u64() => {
                                    n.as_i64().unwrap_or(i64::MAX)
                                }
                                other => {
                                    return Err(rt(format!(
                                        "The SecondsPath parameter cannot be parsed as a long value: {p} == {}",
                                        raw_text(other)
                                    )));
                                }
                            };
                            if secs < 0 {
                                return Err(rt(format!(
                                    "The SecondsPath parameter references a negative value: {p} == {secs}"
                                )));
                            }
                            now + secs as i128 * 1_000_000_000
                        }
                        WaitSpec::TimestampPath(p) => {
                            let v = self.select_path(p, &input, &ctx, &rt)?;
                            match v.as_str().and_then(timestamp::parse) {
                                Some(t) => t,
                                None => {
                                    return Err(rt(format!(
                                        "The TimestampPath parameter does not reference a valid ISO-8601 extended offset date-time format string: {p} == {}",
                                        raw_text(&v)
                                    )));
                                }
                            }
                        }
                    };
                    self.push(EventKind::WaitStarted {
                        name: st.name.clone(),
                        until: timestamp::format(until.max(now)),
                    });
                    // Checkpoint the deadline (top-level states only: only they resume), so
                    // a restarted process waits what is left, not the whole wait again.
                    let top = self.top_state.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    if top.as_deref() == Some(st.name.as_str()) {
                        self.save(Some(&st.name), Some(&raw)).map_err(Stop::Fatal)?;
                    }
                    if until > now {
                        let d = Duration::from_nanos((until - now).min(u64::MAX as i128) as u64);
                        self.engine.clock.sleep(d).await;
                    }
                    self.exit(st, input, &rt, &ctx)
                }
                Kind::Task { .. } | Kind::Parallel { .. } | Kind::Map(_) => {
                    self.run_retryable(st, raw, input, entered_id, &entered, &rt)
                        .await
                }
            }
        })
    }

    fn select_path(
        &self,
        p: &JsonPath,
        input: &Value,
        ctx: &dyn Fn(Option<u32>) -> Value,
        rt: &dyn Fn(String) -> Stop,
    ) -> Result<Value, Stop> {
        let root_ctx;
        let root = if p.is_context() {
            root_ctx = ctx(None);
            &root_ctx
        } else {
            input
        };
        p.select(root).ok_or_else(|| {
            rt(format!(
                "Invalid path '{p}' : No results for path: {}",
                p.normalized()
            ))
        })
    }

    fn apply_result_path(&self, spec: &ResultPathSpec, raw: &Value, result: Value) -> Result<Value, Stop> {
        match spec {
            ResultPathSpec::Discard => Ok(raw.clone()),
            ResultPathSpec::Path(p) if p.is_root() => Ok(result),
            ResultPathSpec::Path(p) => p
                .set(raw.clone(), result)
                .map_err(|m| fail("States.ResultPathMatchFailure", format!("{m} to input '{raw}'"))),
        }
    }

    fn output_path(
        &self,
        st: &State,
        v: Value,
        rt: &dyn Fn(String) -> Stop,
        ctx: &dyn Fn(Option<u32>) -> Value,
    ) -> Result<Value, Stop> {
        match &st.output_path {
            IoPath::Root => Ok(v),
            IoPath::Null => Ok(Value::Object(Map::new())),
            IoPath::Path(p) => self.select_path(p, &v, ctx, rt),
        }
    }

    fn exit(
        &self,
        st: &State,
        v: Value,
        rt: &dyn Fn(String) -> Stop,
        ctx: &dyn Fn(Option<u32>) -> Value,
    ) -> Result<Flow, Stop> {
        let out = self.output_path(st, v, rt, ctx)?;
        self.push(EventKind::StateExited {
            name: st.name.clone(),
            output: out.clone(),
        });
        Ok(match st.next {
            Some(n) => Flow::Next(n, out),
            None => Flow::End(out),
        })
    }

    async fn run_retryable(
        &self,
        st: &State,
        raw: Value,
        input: Value,
        _entered_id: u64,
        entered: &str,
        rt: &(dyn Fn(String) -> Stop + Sync),
    ) -> Result<Flow, Stop> {
        let mut counts = vec![0u32; st.retry.len()];
        let mut retry_count = 0u32;
        let outcome: Result<Value, Stop> = loop {
            match self.attempt(st, &raw, &input, retry_count, entered, rt).await {
                Ok(v) => break Ok(v),
                Err(Stop::Fail(f)) => {
                    let Some(i) = st.retry.iter().position(|r| matches_error(&r.errors, &f)) else {
                        break Err(Stop::Fail(f));
                    };
                    let r: &Retrier = &st.retry[i];
                    if counts[i] >= r.max_attempts {
                        break Err(Stop::Fail(f));
                    }
                    let mut delay = r.interval * r.backoff.powi(counts[i] as i32);
                    if let Some(max) = r.max_delay {
                        delay = delay.min(max);
                    }
                    if r.jitter_full {
                        delay *= (random_u64() >> 11) as f64 / (1u64 << 53) as f64;
                    }
                    counts[i] += 1;
                    retry_count += 1;
                    self.push(EventKind::RetryScheduled {
                        name: st.name.clone(),
                        attempt: retry_count,
                        delay_seconds: delay,
                    });
                    if delay > 0.0 {
                        self.engine
                            .clock
                            .sleep(Duration::from_secs_f64(delay.min(1e9)))
                            .await;
                    }
                }
                Err(other) => break Err(other),
            }
        };
        let ctx = |retry: Option<u32>| self.context(st, entered, retry, None, None);
        match outcome {
            Ok(out) => self.exit(st, out, rt, &ctx),
            Err(Stop::Fail(f)) => {
                let Some(c): Option<&Catcher> = st.catch.iter().find(|c| matches_error(&c.errors, &f)) else {
                    return Err(Stop::Fail(f));
                };
                let out = self.apply_result_path(&c.result_path, &raw, error_object(&f))?;
                self.push(EventKind::StateExited {
                    name: st.name.clone(),
                    output: out.clone(),
                });
                Ok(Flow::Next(c.next, out))
            }
            Err(other) => Err(other),
        }
    }

    /// One attempt: run the Task/Parallel/Map, then ResultSelector and
    /// ResultPath. Returns the state output before OutputPath.
    async fn attempt(
        &self,
        st: &State,
        raw: &Value,
        input: &Value,
        retry_count: u32,
        entered: &str,
        rt: &(dyn Fn(String) -> Stop + Sync),
    ) -> Result<Value, Stop> {
        let ctx_plain = |token: Option<&str>| self.context(st, entered, Some(retry_count), None, token);
        let eval_tpl = |t: &Template, v: &Value, token: Option<&str>| -> Result<Value, Stop> {
            let c = if t.uses_context() {
                ctx_plain(token)
            } else {
                Value::Null
            };
            t.eval(v, &c).map_err(|e| eval_error(e, &rt))
        };
        let result = match &st.kind {
            Kind::Task {
                resource,
                timeout,
                heartbeat,
            } => {
                let token = uuid_v4();
                let eff = match &st.parameters {
                    Some(t) => eval_tpl(t, input, Some(&token))?,
                    None => input.clone(),
                };
                let secs = |s: &Option<NumSource>, field: &str| -> Result<Option<Duration>, Stop> {
                    Ok(match s {
                        None => None,
                        Some(NumSource::Lit(n)) => {
                            Some(Duration::try_from_secs_f64(*n).unwrap_or(Duration::MAX))
                        }
                        Some(NumSource::Path(p)) => {
                            let v = p.select(input).ok_or_else(|| {
                                rt(format!(
                                    "Invalid path '{p}' : No results for path: {}",
                                    p.normalized()
                                ))
                            })?;
                            match v.as_u64() {
                                Some(n) if n > 0 => Some(Duration::from_secs(n)),
                                _ => {
                                    return Err(rt(format!(
                                        "The {field}Path field refers to value \"{}\" which is not a valid positive integer: {p}",
                                        raw_text(&v)
                                    )));
                                }
                            }
                        }
                    })
                };
                let timeout = secs(timeout, "TimeoutSeconds")?;
                let heartbeat = secs(heartbeat, "HeartbeatSeconds")?;
                self.invoke_task(st, resource, eff, retry_count, &token, timeout, heartbeat)
                    .await?
            }
            Kind::Parallel { branches } => {
                let eff = match &st.parameters {
                    Some(t) => eval_tpl(t, input, None)?,
                    None => input.clone(),
                };
                self.push(EventKind::ParallelStateStarted);
                let futs = branches
                    .iter()
                    .map(|b| self.run_machine(b, b.start, eff.clone(), false, None));
                match futures_util::future::try_join_all(futs).await {
                    Ok(outs) => {
                        self.push(EventKind::ParallelStateSucceeded);
                        Value::Array(outs)
                    }
                    Err(e) => {
                        self.push(EventKind::ParallelStateFailed);
                        return Err(e);
                    }
                }
            }
            Kind::Map(spec) => {
                let items = match &spec.items_path {
                    None => input.clone(),
                    Some(p) => {
                        let ctx = |r: Option<u32>| self.context(st, entered, r, None, None);
                        self.select_path(p, input, &ctx, rt)?
                    }
                };
                let Value::Array(items) = items else {
                    return Err(rt(format!(
                        "Items of the Map state must be an array, got: {}",
                        items
                    )));
                };
                let int_path = |p: &JsonPath, field: &str| -> Result<i64, Stop> {
                    let v = p.select(input).ok_or_else(|| {
                        rt(format!(
                            "Invalid path '{p}' : No results for path: {}",
                            p.normalized()
                        ))
                    })?;
                    match v.as_i64() {
                        Some(n) => Ok(n),
                        None => Err(rt(format!(
                            "The {field} field refers to value \"{}\" which is not a valid integer: {p}",
                            raw_text(&v)
                        ))),
                    }
                };
                let max_conc = match &spec.max_concurrency {
                    None => 0,
                    Some(NumSource::Lit(n)) => *n as i64,
                    Some(NumSource::Path(p)) => int_path(p, "MaxConcurrencyPath")?,
                };
                let tol_count = match &spec.tolerated_count {
                    None => None,
                    Some(NumSource::Lit(n)) => Some(*n as i64),
                    Some(NumSource::Path(p)) => {
                        let n = int_path(p, "ToleratedFailureCountPath")?;
                        if n < 0 {
                            return Err(rt("ToleratedFailureCount cannot be negative.".into()));
                        }
                        Some(n)
                    }
                };
                let tol_pct = match &spec.tolerated_pct {
                    None => None,
                    Some(NumSource::Lit(n)) => Some(*n),
                    Some(NumSource::Path(p)) => {
                        let v = p.select(input).ok_or_else(|| {
                            rt(format!(
                                "Invalid path '{p}' : No results for path: {}",
                                p.normalized()
                            ))
                        })?;
                        let Some(n) = v.as_f64() else {
                            return Err(rt(format!(
                                "The ToleratedFailurePercentagePath field refers to value \"{}\" which is not a valid float: {p}",
                                raw_text(&v)
                            )));
                        };
                        if !(0.0..=100.0).contains(&n) {
                            return Err(rt("ToleratedFailurePercentage must be between 0 and 100.".into()));
                        }
                        Some(n)
                    }
                };
                let n_items = items.len();
                let mut item_inputs = Vec::with_capacity(n_items);
                for (i, item) in items.into_iter().enumerate() {
                    item_inputs.push(match &spec.item_selector {
                        Some(t) => {
                            let c = if t.uses_context() {
                                self.context(st, entered, None, Some((i, &item)), None)
                            } else {
                                Value::Null
                            };
                            t.eval(input, &c).map_err(|e| eval_error(e, &rt))?
                        }
                        None => item,
                    });
                }
                self.push(EventKind::MapStateStarted { length: n_items });
                let tolerant = tol_count.is_some() || tol_pct.is_some();
                let limit = if max_conc <= 0 {
                    n_items.max(1)
                } else {
                    max_conc as usize
                };
                let proc_m: &Machine = &spec.processor;
                let mut stream = futures_util::stream::iter(item_inputs.into_iter().enumerate().map(
                    |(i, v)| async move {
                        self.push(EventKind::MapIterationStarted { index: i });
                        let r = self.run_machine(proc_m, proc_m.start, v, false, Some(i)).await;
                        match &r {
                            Ok(_) => self.push(EventKind::MapIterationSucceeded { index: i }),
                            Err(_) => self.push(EventKind::MapIterationFailed { index: i }),
                        };
                        r
                    },
                ))
                .buffered(limit);
                let mut outs = Vec::with_capacity(n_items);
                let mut failures = 0usize;
                let mut first_failure: Option<Stop> = None;
                while let Some(r) = stream.next().await {
                    match r {
                        Ok(v) => outs.push(v),
                        Err(Stop::Fail(f)) if tolerant => {
                            failures += 1;
                            outs.push(error_object(&f));
                            if first_failure.is_none() {
                                first_failure = Some(Stop::Fail(f));
                            }
                        }
                        Err(e) => {
                            self.push(EventKind::MapStateFailed);
                            return Err(e);
                        }
                    }
                }
                drop(stream);
                if tolerant && failures > 0 {
                    let over_count = tol_count.is_some_and(|c| failures as i64 > c);
                    let over_pct =
                        tol_pct.is_some_and(|p| failures as f64 * 100.0 / n_items.max(1) as f64 > p);
                    let within = (tol_count.is_none() || !over_count) && (tol_pct.is_none() || !over_pct);
                    if !within {
                        self.push(EventKind::MapStateFailed);
                        return Err(fail(
                            "States.ExceedToleratedFailureThreshold",
                            format!(
                                "The specified tolerated failure threshold was exceeded: {failures} of {n_items} iterations failed"
                            ),
                        ));
                    }
                }
                self.push(EventKind::MapStateSucceeded);
                Value::Array(outs)
            }
            _ => return Err(rt("internal: not a retryable state".into())),
        };
        let result = match &st.result_selector {
            Some(t) => eval_tpl(t, &result, None)?,
            None => result,
        };
        self.apply_result_path(&st.result_path, raw, result)
    }

    #[allow(clippy::too_many_arguments)]
    async fn invoke_task(
        &self,
        st: &State,
        resource: &str,
        eff: Value,
        retry_count: u32,
        token: &str,
        timeout: Option<Duration>,
        heartbeat: Option<Duration>,
    ) -> Result<Value, Stop> {
        self.push(EventKind::TaskScheduled {
            resource: resource.to_string(),
            input: eff.clone(),
        });
        let clock: &dyn Clock = &*self.engine.clock;
        let hb = AtomicI64::new(timestamp::to_nanos(clock.now()) as i64);
        let cx = TaskContext {
            execution_arn: &self.arn,
            state_name: &st.name,
            retry_count,
            task_token: token,
            clock,
            heartbeat: &hb,
        };
        let call = AssertUnwindSafe(self.engine.handler.invoke(resource, eff, cx)).catch_unwind();
        let timeout_fut = async {
            match timeout {
                Some(d) => clock.sleep(d).await,
                None => std::future::pending::<()>().await,
            }
        };
        let heartbeat_fut = async {
            let Some(h) = heartbeat else {
                return std::future::pending::<()>().await;
            };
            let h_ns = h.as_nanos().min(i64::MAX as u128 / 2) as i64;
            loop {
                let last = hb.load(Ordering::Relaxed);
                let now = timestamp::to_nanos(clock.now()) as i64;
                let left = last.saturating_add(h_ns).saturating_sub(now);
                if left <= 0 {
                    return;
                }
                clock.sleep(Duration::from_nanos(left as u64)).await;
            }
        };
        enum Ended {
            Done(Result<Result<Value, TaskFailure>, Box<dyn std::any::Any + Send>>),
            Timeout,
            Heartbeat,
        }
        let ended = tokio::select! {
            biased;
            r = call => Ended::Done(r),
            _ = timeout_fut => Ended::Timeout,
            _ = heartbeat_fut => Ended::Heartbeat,
        };
        let res = match ended {
            Ended::Done(Ok(Ok(v))) => {
                self.push(EventKind::TaskSucceeded {
                    resource: resource.to_string(),
                    output: v.clone(),
                });
                return Ok(v);
            }
            Ended::Done(Ok(Err(tf))) if tf.error == INTERRUPT => {
                return Err(Stop::Fatal(EngineError::Interrupted {
                    state: st.name.clone(),
                    reason: tf.cause,
                }));
            }
            Ended::Done(Ok(Err(tf))) => {
                self.push(EventKind::TaskFailed {
                    resource: resource.to_string(),
                    error: Some(tf.error.clone()),
                    cause: Some(tf.cause.clone()),
                });
                Failure {
                    error: Some(tf.error),
                    cause: Some(tf.cause),
                }
            }
            Ended::Done(Err(panic)) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic".into());
                return Err(Stop::Fatal(EngineError::HandlerPanicked {
                    state: st.name.clone(),
                    resource: resource.to_string(),
                    message,
                }));
            }
            Ended::Timeout | Ended::Heartbeat => {
                let (error, cause) = if matches!(ended, Ended::Timeout) {
                    (
                        "States.Timeout",
                        format!(
                            "Task '{}' timed out after {} seconds",
                            st.name,
                            timeout.unwrap_or_default().as_secs_f64()
                        ),
                    )
                } else {
                    (
                        "States.HeartbeatTimeout",
                        format!(
                            "Task '{}' sent no heartbeat for {} seconds",
                            st.name,
                            heartbeat.unwrap_or_default().as_secs_f64()
                        ),
                    )
                };
                self.push(EventKind::TaskTimedOut {
                    resource: resource.to_string(),
                    error: Some(error.into()),
                    cause: Some(cause.clone()),
                });
                Failure {
                    error: Some(error.into()),
                    cause: Some(cause),
                }
            }
        };
        Err(Stop::Fail(res))
    }
}
