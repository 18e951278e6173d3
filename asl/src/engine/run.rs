//! Driving one execution: [`Run`] holds its identity and history, runs
//! states one after another (top-level ones checkpointed to the store),
//! and turns the end, a failure, a timeout or an abort into the outcome.

use super::{AbortSignal, Engine, ExecutionOutcome, Reservation};
use crate::definition::{Definition, Machine};
use crate::error::EngineError;
use crate::history::{EventKind, HistoryEvent};
use crate::states::{self, Flow, Kind, Stop, fail};
use crate::store::{ExecutionRecord, ExecutionStatus};
use crate::timestamp;
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A boxed future, to break the recursion Parallel and Map make.
pub(crate) type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One execution being driven.
pub(crate) struct Run<'e> {
    pub(crate) engine: &'e Engine,
    pub(crate) arn: String,
    pub(crate) name: String,
    pub(crate) machine_name: String,
    pub(crate) machine_arn: String,
    pub(crate) start_time: String,
    /// The execution input (`$$.Execution.Input`).
    pub(crate) input: Value,
    history: Mutex<Hist>,
    /// The top-level state being run, so a Wait there can checkpoint its deadline.
    top_state: Mutex<Option<String>>,
    /// A resumed execution's Wait deadline: (state, Unix nanoseconds), used once.
    resumed_wait: Mutex<Option<(String, i128)>>,
    /// Whether the store has the execution's start (a resumed one: it has).
    saved: AtomicBool,
}

impl<'e> Run<'e> {
    /// A new execution of `def` under the name `reservation` claimed.
    pub(crate) fn new(
        engine: &'e Engine,
        def: &Definition,
        reservation: &Reservation,
        input: Value,
    ) -> Run<'e> {
        Run {
            engine,
            arn: reservation.arn.clone(),
            name: reservation.name.clone(),
            machine_name: def.name.clone(),
            machine_arn: machine_arn(engine, def),
            start_time: timestamp::format_system(engine.clock.now()),
            input,
            history: Mutex::new(Hist::default()),
            top_state: Mutex::new(None),
            resumed_wait: Mutex::new(None),
            saved: AtomicBool::new(false),
        }
    }

    /// The persisted execution `rec`, resuming at `state`.
    pub(crate) fn resumed(
        engine: &'e Engine,
        def: &Definition,
        rec: &ExecutionRecord,
        state: &str,
    ) -> Run<'e> {
        Run {
            engine,
            arn: rec.execution_arn.clone(),
            name: rec.name.clone(),
            machine_name: def.name.clone(),
            machine_arn: machine_arn(engine, def),
            start_time: rec.start_time.clone(),
            input: rec.input.clone(),
            history: Mutex::new(Hist {
                events: rec.history.clone(),
                last: None,
            }),
            top_state: Mutex::new(None),
            // A Wait keeps its schedule across restarts: it sleeps only what is left.
            resumed_wait: Mutex::new(interrupted_wait(&rec.history, state)),
            saved: AtomicBool::new(true),
        }
    }
}

fn machine_arn(engine: &Engine, def: &Definition) -> String {
    format!(
        "arn:aws:states:{}:{}:stateMachine:{}",
        engine.region, engine.account, def.name
    )
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

impl Run<'_> {
    /// Record an event; returns its id.
    pub(crate) fn push(&self, kind: EventKind) -> u64 {
        self.push_at(kind).0
    }

    /// Record an event; returns its id and timestamp.
    pub(crate) fn push_at(&self, kind: EventKind) -> (u64, String) {
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

    /// Checkpoint the running execution: `next` is the state to resume at,
    /// with `next_input`.
    pub(crate) fn save(&self, next: Option<&str>, next_input: Option<&Value>) -> Result<(), EngineError> {
        let Some(store) = &self.engine.store else {
            return Ok(());
        };
        // A store that keeps no checkpoints gets the start only (and the end, from `finish`):
        // the record (the input and the next state's, copied) is not assembled for nothing.
        if self.saved.swap(true, Ordering::Relaxed) && !store.keeps_checkpoints() {
            return Ok(());
        }
        // The history is lent to the record for the save, not copied: a rollout's history runs
        // to thousands of events and is saved after every top-level state. Events pushed
        // meanwhile (none at a checkpoint of the top level) wait for the lock.
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let mut rec = ExecutionRecord {
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
            history: std::mem::take(&mut history.events),
        };
        let saved = store.save(&rec).map_err(EngineError::Store);
        history.events = std::mem::take(&mut rec.history);
        saved
    }

    /// End the execution: the outcome, also saved to the store.
    fn finish(
        &self,
        status: ExecutionStatus,
        output: Option<Value>,
        error: Option<String>,
        cause: Option<String>,
    ) -> Result<ExecutionOutcome, EngineError> {
        // The execution is over: the history is lent to the record for the save, then handed
        // out, never copied (a rollout's runs to thousands of events).
        let history = std::mem::take(&mut self.history.lock().unwrap_or_else(|e| e.into_inner()).events);
        let mut outcome = ExecutionOutcome {
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
                history: std::mem::take(&mut outcome.history),
            };
            let saved = store.save(&rec);
            outcome.history = rec.history;
            saved.map_err(EngineError::Store)?;
        }
        Ok(outcome)
    }

    /// Run the execution's machine `m` from `start` on `input` to its end,
    /// against its `TimeoutSeconds` (counted from `started`) and
    /// [`Engine::abort`].
    pub(crate) async fn drive(
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
        let body = self.run_machine(m, start, input, true);
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

    /// Run the machine `m` (the execution's own when `top`, whose
    /// transitions are checkpointed; else a Parallel branch or a Map
    /// iteration) from `start`; returns its output.
    pub(crate) fn run_machine<'a>(
        &'a self,
        m: &'a Machine,
        start: usize,
        input: Value,
        top: bool,
    ) -> BoxFut<'a, Result<Value, Stop>> {
        Box::pin(async move {
            let mut idx = start;
            let mut input = Arc::new(input);
            // Whether a state with effects (not Pass, Choice or a read-only Task) ended since
            // the last checkpoint: then even a read-only Task checkpoints first, or a crash
            // would run those effects again.
            let mut unsaved = false;
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
                match states::run(self, st, input).await? {
                    Flow::Next(n, out) => {
                        match &st.kind {
                            // A top-level Wait checkpointed itself with its deadline.
                            Kind::Wait(_) => unsaved = false,
                            kind if !repeatable(kind) => unsaved = true,
                            _ => {}
                        }
                        // A Pass or Choice runs at once and decides the same again, a Task
                        // that only reads (a DynamoDB GetItem) reads again, and a Wait
                        // checkpoints itself with its deadline: before those the last
                        // checkpoint stands (a crash runs the state that led there again, as
                        // any state a crash interrupts runs again) — unless a state with effects
                        // ran since, which a read-only Task's checkpoint then records. A
                        // rollout's waits tick through such states every second; each
                        // checkpoint is a synced write.
                        let next = &m.states[n].kind;
                        let checkpoint = !repeatable(next) || (unsaved && matches!(next, Kind::Task(_)));
                        if top && checkpoint {
                            self.save(Some(&m.states[n].name), Some(out.as_ref()))
                                .map_err(Stop::Fatal)?;
                            unsaved = false;
                        }
                        idx = n;
                        input = out;
                    }
                    // The history keeps its own reference; the machine's output is the caller's.
                    Flow::End(out) => return Ok(Arc::unwrap_or_clone(out)),
                }
            }
        })
    }

    /// The deadline a resumed execution's Wait `state` had, once.
    pub(crate) fn take_resumed_wait(&self, state: &str) -> Option<i128> {
        let mut r = self.resumed_wait.lock().unwrap_or_else(|e| e.into_inner());
        match r.take() {
            Some((name, until)) if name == state => Some(until),
            other => {
                *r = other;
                None
            }
        }
    }

    /// Whether `state` is the top-level state being run.
    pub(crate) fn is_top_state(&self, state: &str) -> bool {
        let top = self.top_state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        top.as_deref() == Some(state)
    }
}

/// Whether running a state of this kind again after a crash changes nothing outside the
/// execution: a Pass, a Choice, a Wait (its deadline is kept) or a read-only Task.
fn repeatable(kind: &Kind) -> bool {
    match kind {
        Kind::Pass(_) | Kind::Choice(_) | Kind::Wait(_) => true,
        Kind::Task(task) => reads_only(&task.resource),
        _ => false,
    }
}

/// Whether a Task `resource` only reads, so running it again after a crash changes nothing:
/// the DynamoDB `GetItem` integration (a rollout's control read, every tick).
pub(crate) fn reads_only(resource: &str) -> bool {
    resource == "arn:aws:states:::dynamodb:getItem"
}
