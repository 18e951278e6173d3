//! The embedded engine: `cutover-asl` running a definition file, its Task resources served by
//! pipelines, executions persisted in the data directory (`executions/`, one JSON file each) so
//! a restarted process resumes them from their last completed state.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cutover_asl::{
    Definition, Engine, EngineError, ExecutionStatus, ExecutionStore, FileStore, TaskContext, TaskFailure,
    TaskHandler,
};
use cutover_core::{
    Background, BoxFuture, BuildContext, BuildError, Clock, Event, FieldError, Outcome, Pipeline, StageError,
    ValidateContext,
};
use serde_json::Value;

use super::control::ReadControl;
use super::{Resource, Started, StateMachineEngine};
use crate::rollouts::ops::{Recorded, RolloutSource};
use crate::rollouts::view::{Entry, Happened};
use crate::rollouts::{CONTROL_RESOURCE, FileRolloutStore};

/// The core clock seen through the engine's clock trait, so the engine runs on the same
/// (possibly virtual or accelerated) time as every stage.
#[derive(Debug, Clone)]
pub struct CoreClock(pub Arc<dyn Clock>);

impl cutover_asl::Clock for CoreClock {
    fn now(&self) -> SystemTime {
        self.0.now()
    }

    fn sleep(&self, d: Duration) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        self.0.sleep(d)
    }
}

/// Virtual time for the whole process (replay, tests, the demo's `--virtual-time`): the
/// engine's deadline-ordered virtual clock seen as a core clock, so concurrent sleepers (a
/// Task racing its timeout, several executions) wake in deadline order instead of each
/// pushing time forward.
#[derive(Debug, Clone, Default)]
pub struct VirtualTime(pub Arc<cutover_asl::VirtualClock>);

impl VirtualTime {
    /// Virtual time starting at `start`.
    pub fn starting_at(start: SystemTime) -> Self {
        Self(Arc::new(cutover_asl::VirtualClock::starting_at(start)))
    }
}

impl Clock for VirtualTime {
    fn now(&self) -> SystemTime {
        cutover_asl::Clock::now(self.0.as_ref())
    }

    fn sleep(&self, d: Duration) -> BoxFuture<'_, ()> {
        cutover_asl::Clock::sleep(self.0.as_ref(), d)
    }
}

/// Any engine clock (e.g. `cutover_asl::ScaledClock` for an accelerated demo) seen as a core
/// clock.
#[derive(Debug, Clone)]
pub struct EngineClock(pub Arc<dyn cutover_asl::Clock>);

impl Clock for EngineClock {
    fn now(&self) -> SystemTime {
        self.0.now()
    }

    fn sleep(&self, d: Duration) -> BoxFuture<'_, ()> {
        self.0.sleep(d)
    }
}

/// Serves Task resources with pipelines: the Task input is the event, the passed context the
/// output; a drop or failure fails the Task with the stage's error kind as the error name.
#[derive(Debug, Clone, Default)]
pub struct PipelineTasks {
    handlers: HashMap<String, Pipeline>,
}

impl PipelineTasks {
    /// Serves `resource` with `pipeline`.
    pub fn insert(&mut self, resource: impl Into<String>, pipeline: Pipeline) {
        self.handlers.insert(resource.into(), pipeline);
    }
}

impl TaskHandler for PipelineTasks {
    fn invoke<'a>(
        &'a self,
        resource: &'a str,
        input: Value,
        _cx: TaskContext<'a>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, TaskFailure>> + Send + 'a>> {
        Box::pin(async move {
            let Some(pipeline) = self.handlers.get(resource) else {
                return Err(TaskFailure::new(
                    "States.TaskFailed",
                    format!("no handler is mapped to resource {resource}"),
                ));
            };
            match pipeline.run(Event::from_value(input)).await {
                Outcome::Passed { context } => Ok(Value::Object(context)),
                Outcome::Dropped { stage, reason } => Err(TaskFailure::new(
                    "Cutover.Dropped",
                    format!("{}: dropped by {stage}: {reason}", pipeline.name()),
                )),
                Outcome::Failed { stage, error } => Err(TaskFailure::new(
                    error.error_name(),
                    format!("{}: {stage}: {}", pipeline.name(), error.message),
                )),
            }
        })
    }
}

/// How often an engine looks for executions released by another process.
const RELEASE_SCAN: Duration = Duration::from_secs(1);

/// Runs executions of one definition on the embedded engine.
#[derive(Debug, Clone)]
pub struct LocalEngine {
    engine: Engine,
    definition: Arc<Definition>,
    store: Arc<FileStore>,
    metrics: cutover_core::Metrics,
    background: Background,
    wait: bool,
    /// Histories already read, by execution name: a finished rollout's is read once, a running
    /// one's only in what was appended since.
    histories: Arc<std::sync::Mutex<HashMap<String, ReadHistory>>>,
    /// How long finished executions are kept (`None`: for ever).
    keep_finished: Option<Duration>,
}

/// An execution's history as far as it was read: how many events, where in the history file
/// the next one starts, and the entries rollouts are derived from.
#[derive(Debug, Clone, Default)]
struct ReadHistory {
    events: usize,
    offset: u64,
    entries: Vec<Entry>,
}

/// How often the executions kept past their retention are looked for.
const RETENTION_SCAN: Duration = Duration::from_secs(3600);

/// The definition at `path`, parsed (a strategy file compiled) once for the same text: a file's
/// pipelines are validated, then built, and each reads its definition.
fn read_definition(path: &Path) -> Result<Arc<Definition>, String> {
    static PARSED: super::strategy::TextCache<Arc<Definition>> = super::strategy::TextCache::new();
    let source = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    PARSED.derive(path, source, |source| {
        parse_definition(path, source).map(Arc::new)
    })
}

/// The definition file `path`, whose text is `source`, parsed.
fn parse_definition(path: &Path, source: &str) -> Result<Definition, String> {
    let text = super::strategy::states_language(path, source.to_owned())?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| {
            // canary.asl.json and canary.strategy.toml both run the machine `canary`.
            n.trim_end_matches(".json")
                .trim_end_matches(".asl")
                .trim_end_matches(".toml")
                .trim_end_matches(".strategy")
        })
        .unwrap_or("state-machine");
    Definition::parse(&text)
        .map(|d| d.with_name(name))
        .map_err(|e| format!("{}: {e}", path.display()))
}

pub(super) fn validate(
    cx: &ValidateContext<'_>,
    definition: &Path,
    resources: &BTreeMap<String, Resource>,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let def = match read_definition(&cx.base_dir.join(definition)) {
        Ok(d) => d,
        Err(m) => return vec![FieldError::new("engine.definition", m)],
    };
    for resource in def.task_resources() {
        // The control read is served by cutover itself on both engines.
        if !resources.contains_key(&resource) && resource != CONTROL_RESOURCE {
            errors.push(FieldError::new(
                "engine.resources",
                format!("the definition's Task resource {resource:?} is not mapped: add it with a pipeline name or a stage table"),
            ));
        }
    }
    for (resource, target) in resources {
        match target {
            Resource::Pipeline(name) if !cx.pipelines.iter().any(|p| p == name) => {
                errors.push(FieldError::new(
                    format!("engine.resources.{resource:?}"),
                    format!(
                        "no pipeline {name:?} in this file (it has: {})",
                        cx.pipelines.join(", ")
                    ),
                ))
            }
            Resource::Stage(stage) => {
                for e in stage.validate(cx) {
                    errors.push(FieldError::new(
                        format!("engine.resources.{resource:?}.{}", e.field),
                        e.message,
                    ));
                }
            }
            Resource::Pipeline(_) => {}
        }
    }
    errors
}

impl LocalEngine {
    pub(super) async fn build(
        cx: &BuildContext,
        definition: &Path,
        resources: &BTreeMap<String, Resource>,
        wait: bool,
        resume: bool,
        keep_finished: Option<Duration>,
    ) -> Result<Self, BuildError> {
        let definition = read_definition(&cx.config_path(definition))
            .map_err(|m| BuildError::field("engine.definition", m))?;
        let mut tasks = PipelineTasks::default();
        for (resource, target) in resources {
            let pipeline = match target {
                Resource::Pipeline(name) => cx.build_pipeline(name).await?,
                Resource::Stage(stage) => {
                    let built = stage.build(cx).await?;
                    Pipeline::from_stages(resource, vec![(resource.clone(), built)])
                        .with_metrics(cx.metrics().clone())
                }
            };
            tasks.insert(resource.clone(), pipeline);
        }
        if !resources.contains_key(CONTROL_RESOURCE) {
            let read = ReadControl::new(rollout_store(cx));
            tasks.insert(
                CONTROL_RESOURCE,
                Pipeline::from_stages("control", vec![("read-control".into(), Arc::new(read) as _)])
                    .with_metrics(cx.metrics().clone()),
            );
        }
        let store = FileStore::new(cx.data_path("executions"))
            .map_err(|m| BuildError::Backend(format!("execution store: {m}")))?;
        // A scratch directory (a replay's) is gone after a crash and has no other reader.
        let store = Arc::new(if cx.data_is_scratch() {
            store.scratch()
        } else {
            store
        });
        let engine = Engine::new(
            Arc::new(tasks),
            Arc::new(CoreClock(cx.clock())),
            Some(store.clone() as Arc<dyn ExecutionStore>),
        );
        let this = Self {
            engine,
            definition,
            store,
            metrics: cx.metrics().clone(),
            background: cx.background().clone(),
            wait,
            histories: Arc::default(),
            keep_finished,
        };
        if resume {
            if let Err(error) = this.prune() {
                tracing::warn!(%error, "removing executions past their retention");
            }
            this.resume_unfinished()?;
            this.watch_released();
        }
        Ok(this)
    }

    /// The definition it runs.
    pub fn definition(&self) -> &Arc<Definition> {
        &self.definition
    }

    /// An engine over explicit parts (for embedders and tests).
    pub fn new(
        engine: Engine,
        definition: Arc<Definition>,
        store: Arc<FileStore>,
        background: Background,
        wait: bool,
    ) -> Self {
        Self {
            engine,
            definition,
            store,
            metrics: cutover_core::Metrics::default(),
            background,
            wait,
            histories: Arc::default(),
            keep_finished: None,
        }
    }

    /// Keeps finished executions for `keep` after they ended, then removes them (the next scan,
    /// at build and hourly while resuming).
    pub fn with_retention(mut self, keep: Option<Duration>) -> Self {
        self.keep_finished = keep;
        self
    }

    /// Removes this definition's finished executions that ended longer than the retention ago;
    /// returns how many. Running ones are never removed.
    pub fn prune(&self) -> Result<usize, StageError> {
        let Some(keep) = self.keep_finished else {
            return Ok(0);
        };
        let headers = self
            .store
            .headers()
            .map_err(|e| StageError::retryable(format!("execution store: {e}")))?;
        let now = SystemTime::now();
        let mut removed = 0;
        for h in headers {
            let r = &h.record;
            let ended_long_ago = h
                .saved
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age >= keep);
            if r.state_machine == self.definition.name()
                && r.status != ExecutionStatus::Running
                && ended_long_ago
            {
                self.store
                    .remove(&r.execution_arn)
                    .map_err(|e| StageError::retryable(format!("execution store: {e}")))?;
                if let Ok(mut cached) = self.histories.lock() {
                    cached.remove(&r.name);
                }
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(removed, kept_for = ?keep, "removed finished executions past their retention");
        }
        Ok(removed)
    }

    /// Every second, resumes unfinished executions nobody holds: those another process on the
    /// same data directory released when it stopped (the old daemon of a rolling restart) are
    /// picked up within a second. One that a process still drives keeps its lease and is left
    /// alone.
    fn watch_released(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut since_prune = Duration::ZERO;
            loop {
                tokio::time::sleep(RELEASE_SCAN).await;
                if let Err(error) = this.resume_free() {
                    tracing::debug!(%error, "scanning for released executions");
                }
                since_prune += RELEASE_SCAN;
                if since_prune >= RETENTION_SCAN {
                    since_prune = Duration::ZERO;
                    if let Err(error) = this.prune() {
                        tracing::warn!(%error, "removing executions past their retention");
                    }
                }
            }
        });
    }

    /// Resumes the unfinished executions of this definition whose lease is free now.
    fn resume_free(&self) -> Result<(), BuildError> {
        // Headers only: this runs every second, and running rollouts' histories are long.
        let headers = self
            .store
            .headers()
            .map_err(|e| BuildError::Backend(format!("execution store: {e}")))?;
        let free = headers.into_iter().map(|h| h.record).any(|r| {
            r.status == ExecutionStatus::Running
                && r.state_machine == self.definition.name()
                && matches!(self.store.lease(&r.execution_arn), Ok(Some(_)))
        });
        if free {
            self.resume_unfinished()?;
        }
        Ok(())
    }

    fn resume_unfinished(&self) -> Result<(), BuildError> {
        let unfinished = self
            .engine
            .unfinished()
            .map_err(|e| BuildError::Backend(format!("execution store: {e}")))?;
        for record in unfinished
            .into_iter()
            .filter(|r| r.state_machine == self.definition.name())
        {
            let engine = self.engine.clone();
            let def = self.definition.clone();
            let metrics = self.metrics.clone();
            self.background.spawn(async move {
                match engine.resume(def, &record.execution_arn).await {
                    Ok(mut outcome) => {
                        record_outcome(&metrics, &mut outcome);
                        tracing::info!(execution = %outcome.execution_arn, status = ?outcome.status, "resumed execution finished");
                    }
                    Err(EngineError::AlreadyRunning(arn)) => {
                        tracing::debug!(execution = %arn, "another process is running this execution");
                    }
                    Err(error) => {
                        tracing::error!(execution = %record.execution_arn, %error, "could not resume the execution");
                    }
                }
            });
        }
        Ok(())
    }

    /// The answer to a start of `name`, whose execution `arn` another start holds or held: as
    /// Step Functions answers a repeat of a name, the existing execution, with whether its
    /// input was the same. The holder saves the execution as it begins, which may be a moment
    /// after it answered its own caller (two deliveries of one event at once): that moment is
    /// waited for, up to [`STARTING_WAIT`]; a holder that has still saved nothing by then (in
    /// another process, stalled) fails this start retryably, and a redelivery compares inputs.
    async fn existing(&self, name: &str, arn: String, input: &Value) -> Result<Started, StageError> {
        let deadline = tokio::time::Instant::now() + STARTING_WAIT;
        loop {
            // A blocking file read on the runtime's thread, as in `status`: short, and repeated
            // only while two starts of one name meet.
            match self.store.load(&arn) {
                Ok(Some(existing)) => {
                    return Ok(Started::Duplicate {
                        same_input: &existing.input == input,
                        arn,
                    });
                }
                Ok(None) if tokio::time::Instant::now() < deadline => tokio::time::sleep(STARTING_POLL).await,
                Ok(None) => {
                    return Err(StageError::retryable(format!(
                        "execution {name} is being started by another attempt ({arn}), which has \
                         saved nothing yet"
                    ))
                    .with_kind("ExecutionStarting"));
                }
                Err(e) => return Err(StageError::retryable(format!("execution store: {e}"))),
            }
        }
    }
}

/// How long a start of a name that another start holds waits for the holder to save the
/// execution's first state.
const STARTING_WAIT: Duration = Duration::from_secs(2);

/// How often a start waiting for another start's first save looks for it.
const STARTING_POLL: Duration = Duration::from_millis(10);

/// The embedded rollout store of a data directory: `<data_dir>/rollouts` (not synced to disk
/// in a scratch data directory).
pub fn rollout_store(cx: &BuildContext) -> FileRolloutStore {
    if cx.data_is_scratch() {
        FileRolloutStore::scratch(cx.data_path("rollouts"))
    } else {
        FileRolloutStore::new(cx.data_path("rollouts"))
    }
}

fn status_name(s: &ExecutionStatus) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{s:?}"))
}

impl StateMachineEngine for LocalEngine {
    fn start<'a>(&'a self, name: &'a str, input: &'a Value) -> BoxFuture<'a, Result<Started, StageError>> {
        Box::pin(async move {
            let reservation = match self.engine.reserve(&self.definition, name) {
                Ok(reservation) => reservation,
                Err(EngineError::ExecutionAlreadyExists(arn) | EngineError::AlreadyRunning(arn)) => {
                    return self.existing(name, arn, input).await;
                }
                Err(e) => return Err(StageError::retryable(format!("execution {name}: {e}"))),
            };
            let arn = reservation.execution_arn().to_owned();
            let engine = self.engine.clone();
            let def = self.definition.clone();
            let metrics = self.metrics.clone();
            let input_owned = input.clone();
            if self.wait {
                let mut outcome = engine
                    .start_reserved(def, reservation, input_owned)
                    .await
                    .map_err(|e| StageError::permanent(format!("execution {name}: {e}")))?;
                record_outcome(&metrics, &mut outcome);
                return Ok(Started::New {
                    arn: outcome.execution_arn,
                    status: Some(status_name(&outcome.status)),
                });
            }
            let arn_for_log = arn.clone();
            self.background.spawn(async move {
                match engine.start_reserved(def, reservation, input_owned).await {
                    Ok(mut outcome) => {
                        record_outcome(&metrics, &mut outcome);
                        tracing::info!(execution = %outcome.execution_arn, status = ?outcome.status, "execution finished");
                    }
                    Err(error) => tracing::error!(execution = %arn_for_log, %error, "execution could not run"),
                }
            });
            Ok(Started::New { arn, status: None })
        })
    }

    fn status<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<String>, StageError>> {
        Box::pin(async move {
            let arn = self.engine.execution_arn(&self.definition, name);
            match self.store.load(&arn) {
                Ok(record) => Ok(record.map(|r| status_name(&r.status))),
                Err(e) => Err(StageError::retryable(format!("execution store: {e}"))),
            }
        })
    }
}

/// Counts a finished rollout by how it ended (`cutover_rollouts_total`) and records how long
/// its steps took (`cutover_rollout_step_seconds`: each wait, shift, check and rollback). Takes
/// the outcome's history (it is not needed after).
fn record_outcome(metrics: &cutover_core::Metrics, outcome: &mut cutover_asl::ExecutionOutcome) {
    let history = entries(std::mem::take(&mut outcome.history));
    let rollout = crate::rollouts::view::Rollout::from_history("", &outcome.execution_arn, &history, None);
    metrics.add(
        "cutover_rollouts_total",
        &[("outcome", rollout.phase.as_str())],
        1,
    );
    for line in crate::rollouts::view::history_lines(&history, &[]) {
        let (Some(state), Some(seconds)) = (line.detail["state"].as_str(), line.detail["seconds"].as_f64())
        else {
            continue;
        };
        let step = line.detail.get("wait").is_some()
            || ["Shift", "Check", "Rollback", "HoldCheck"]
                .iter()
                .any(|p| state.starts_with(p));
        if step {
            metrics.observe("cutover_rollout_step_seconds", &[("state", state)], seconds);
        }
    }
}

/// An execution's history as rollout entries, its inputs and outputs moved, not copied (a
/// rollout's history holds hundreds of them).
fn entries(history: Vec<cutover_asl::HistoryEvent>) -> Vec<Entry> {
    use cutover_asl::EventKind;
    let ended = |status: &str, error: Option<String>, cause: Option<String>| Happened::Ended {
        status: status.to_owned(),
        error,
        cause,
    };
    history
        .into_iter()
        .filter_map(|e| {
            let what = match e.kind {
                EventKind::ExecutionStarted { input } => Happened::Started { input },
                EventKind::StateEntered { name, input } => Happened::Entered { state: name, input },
                EventKind::StateExited { name, output } => Happened::Exited { state: name, output },
                EventKind::ExecutionSucceeded { .. } => ended("SUCCEEDED", None, None),
                EventKind::ExecutionFailed { error, cause } => ended("FAILED", error, cause),
                EventKind::ExecutionTimedOut { error, cause } => ended("TIMED_OUT", error, cause),
                EventKind::ExecutionAborted { cause } => ended("ABORTED", None, cause),
                _ => return None,
            };
            Some(Entry {
                at: e.timestamp,
                what,
            })
        })
        .collect()
}

impl RolloutSource for LocalEngine {
    fn list(&self, all: bool) -> BoxFuture<'_, Result<Vec<(String, String)>, StageError>> {
        Box::pin(async move {
            let mut records: Vec<_> = self
                .store
                .headers()
                .map_err(|e| StageError::retryable(format!("execution store: {e}")))?
                .into_iter()
                .map(|h| h.record)
                .filter(|r| r.state_machine == self.definition.name())
                .filter(|r| all || r.status == ExecutionStatus::Running)
                .collect();
            records.sort_by(|a, b| b.start_time.cmp(&a.start_time).then(a.name.cmp(&b.name)));
            Ok(records.into_iter().map(|r| (r.name, r.execution_arn)).collect())
        })
    }

    fn history<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Recorded>, StageError>> {
        Box::pin(async move {
            let arn = self.engine.execution_arn(&self.definition, name);
            let store_error = |e: String| StageError::retryable(format!("execution store: {e}"));
            let Some(header) = self.store.header(&arn).map_err(store_error)? else {
                return Ok(None);
            };
            let mut read = self
                .histories
                .lock()
                .ok()
                .and_then(|cached| cached.get(name).cloned())
                .filter(|r| r.events <= header.history_len)
                .unwrap_or_default();
            if read.events < header.history_len {
                match self
                    .store
                    .history_since(&arn, read.events, read.offset, header.history_len)
                    .map_err(store_error)?
                {
                    Some((events, offset)) => {
                        read.entries.extend(entries(events));
                        read.events = header.history_len;
                        read.offset = offset;
                    }
                    // The older layout keeps the history inline: read it whole, every time.
                    None => {
                        let Some(record) = self.store.load(&arn).map_err(store_error)? else {
                            return Ok(None);
                        };
                        return Ok(Some((arn, entries(record.history))));
                    }
                }
                if let Ok(mut cached) = self.histories.lock() {
                    cached.insert(name.to_owned(), read.clone());
                }
            }
            Ok(Some((arn, read.entries)))
        })
    }

    fn drive<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, StageError>> {
        Box::pin(async move {
            let arn = self.engine.execution_arn(&self.definition, name);
            let running = self
                .store
                .load(&arn)
                .map_err(|e| StageError::retryable(format!("execution store: {e}")))?
                .is_some_and(|r| r.status == ExecutionStatus::Running);
            if !running {
                return Ok(false);
            }
            match self.engine.resume(self.definition.clone(), &arn).await {
                Ok(outcome) => {
                    tracing::info!(execution = %arn, status = ?outcome.status, "drove the rollout to its end");
                    Ok(true)
                }
                // Another process (the daemon) runs it, and reads the control record itself.
                Err(EngineError::AlreadyRunning(_)) => Ok(false),
                Err(e) => Err(StageError::retryable(format!("execution {name}: {e}"))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_definition_is_read_anew_when_its_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.asl.json");
        let machine = |state: &str| {
            format!(r#"{{"StartAt":"{state}","States":{{"{state}":{{"Type":"Pass","End":true}}}}}}"#)
        };
        std::fs::write(&path, machine("A")).unwrap();
        let first = read_definition(&path).unwrap();
        assert!(format!("{first:?}").contains("\"A\""), "{first:?}");
        // Same path, same length, new text: never the remembered one.
        std::fs::write(&path, machine("B")).unwrap();
        let second = read_definition(&path).unwrap();
        assert!(format!("{second:?}").contains("\"B\""), "{second:?}");
        assert!(!format!("{second:?}").contains("\"A\""), "{second:?}");
    }
}
