//! `start-state-machine`: starts one execution of the canary state machine per event that
//! reaches it — on AWS Step Functions, or on the embedded Amazon States Language engine
//! (`cutover-asl`) running the very same definition, with its Task states served by cutover's
//! own stages and pipelines.
//!
//! ```toml
//! [[pipelines.ecs-events.stages]]
//! type = "start-state-machine"
//! input = { cluster = "{detail.clusterArn}", task_definition = "{detail.taskDefinitionArn}" }
//!
//! [pipelines.ecs-events.stages.engine]
//! type = "local"                      # or: type = "step-functions", state_machine_arn = "arn:aws:states:…"
//! definition = "canary.asl.json"
//!
//! [pipelines.ecs-events.stages.engine.resources]
//! "arn:aws:lambda:us-east-1:111122223333:function:cutover-traffic-shift" = "traffic-shift"   # a pipeline of this file
//! "arn:aws:lambda:us-east-1:111122223333:function:cutover-health-check" = { type = "health-check", probe = { type = "http", url = "http://127.0.0.1:8082/" } }
//! ```
//!
//! On AWS, `type = "step-functions"` starts executions of the machine `state_machine_arn`
//! names. For a machine that the stack `cutover template` generates creates, give its
//! `definition` and `resources` instead (same shapes as above, but every resource must name a
//! pipeline: each pipeline is deployed as its own Lambda function, and the template substitutes
//! that function's ARN for the Task `Resource`); the template then sets `state_machine_arn` on
//! the function through the environment override
//! `CUTOVER_PIPELINES__<PIPELINE>__STAGES__<N>__ENGINE__STATE_MACHINE_ARN`:
//!
//! ```toml
//! engine = { type = "step-functions", definition = "canary.asl.json", resources = { "arn:aws:lambda:us-east-1:111122223333:function:cutover-traffic-shift" = "traffic-shift", "arn:aws:lambda:us-east-1:111122223333:function:cutover-health-check" = "health-check" } }
//! ```
//!
//! The execution name is derived from the dedup key by default, so an event that slipped past
//! dedup cannot start a second execution: both engines refuse a second execution of one name,
//! and a repeat with the same input is reported as a duplicate, not an error.

mod control;
mod deploy;
mod local;
mod sfn;
pub mod strategy;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use cutover_core::{
    BoxFuture, BuildContext, BuildError, DeployContext, Deployment, Event, FieldError, Next, Outcome, Stage,
    StageConfig, StageError, Template, ValidateContext, ValueTemplate,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::rollouts::ops::Rollouts;
use crate::rollouts::{Action, AuditEntry, Claim, Control, DynamoRolloutStore, RolloutStore, action_id};

pub use self::control::{ControlConfig, DEFAULT_ROLLOUTS_TABLE, ReadControl};
pub use self::local::{CoreClock, EngineClock, LocalEngine, PipelineTasks, VirtualTime, rollout_store};
pub use self::sfn::SfnEngine;

cutover_core::register_stage!(
    "start-state-machine",
    "Starts one canary execution (Step Functions, or the embedded ASL engine) per event.",
    per_event_templates
);

/// Configuration of the `start-state-machine` stage.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartStateMachineConfig {
    /// The execution input: a table whose strings may hold `{field}` placeholders (a lone
    /// placeholder keeps the field's type).
    #[serde(default = "default_input")]
    pub input: ValueTemplate,
    /// The execution name, a template. Default: derived from the dedup key
    /// (`context.dedup.key`), else from the event id. Invalid characters become `-`; names over
    /// 80 characters are shortened with a hash, deterministically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Template>,
    /// Which engine runs the state machine.
    pub engine: EngineConfig,
    /// The context field the execution ARN is written to.
    #[serde(default = "default_output")]
    pub output: String,
    /// How the rollouts this stage starts are steered (`cutover rollouts`): every execution's
    /// input gets a `control` block the canary's waits read.
    #[serde(default)]
    pub control: ControlConfig,
    /// Webhooks told what each rollout does (started, a step, a failed analysis, an operator
    /// action, the end); sent by the daemon watching the rollouts (`cutover serve`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<crate::rollouts::notify::RolloutNotifyConfig>,
}

/// Which engine runs the state machine.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum EngineConfig {
    /// AWS Step Functions (`StartExecution`).
    StepFunctions {
        /// The state machine's ARN. May be left out when `definition` is given: the stack
        /// `cutover template` generates creates the state machine and sets this field on the
        /// function with an environment override.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        state_machine_arn: String,
        /// For `cutover template`: the Amazon States Language definition (JSON, relative to the
        /// pipeline file) of the state machine the stack creates.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        definition: Option<PathBuf>,
        /// For `cutover template`: the pipeline of this file that serves each Task `Resource`
        /// of `definition`; the stack substitutes the ARN of that pipeline's function.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        resources: BTreeMap<String, Resource>,
    },
    /// The embedded engine.
    Local {
        /// The Amazon States Language definition (JSON), relative to the pipeline file.
        definition: PathBuf,
        /// What serves each Task `Resource`: the name of a pipeline in this file, or an
        /// inline stage table (`{ type = "health-check", … }`).
        #[serde(default)]
        resources: BTreeMap<String, Resource>,
        /// Wait for the execution to finish before the event's outcome is decided (the
        /// outcome then says how it ended). Default: start it and go on, like StartExecution.
        #[serde(default)]
        wait: bool,
        /// Resume unfinished executions found in the data directory when the pipeline is built.
        #[serde(default = "crate::fields::yes")]
        resume: bool,
        /// How long finished executions (record and history) are kept in
        /// `<data_dir>/executions` before they are removed, so the directory does not grow
        /// without bound: checked when the pipeline is built and hourly while it runs.
        /// `"0s"` removes them at the next check; default 14 days.
        #[serde(default = "default_keep_finished", with = "cutover_core::duration")]
        keep_finished: std::time::Duration,
    },
}

/// What serves a Task resource on the embedded engine.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Resource {
    /// A pipeline of the same file; its passed context is the Task's output.
    Pipeline(String),
    /// A single stage (e.g. `health-check`, `traffic-shift`).
    Stage(Box<dyn StageConfig>),
}

fn default_keep_finished() -> std::time::Duration {
    std::time::Duration::from_secs(14 * 24 * 3600)
}

fn default_input() -> ValueTemplate {
    ValueTemplate::new(json!({
        "cluster": "{detail.clusterArn}",
        "group": "{detail.group}",
        "task_definition": "{detail.taskDefinitionArn}",
        "task": "{detail.taskArn}",
        "event_id": "{id}",
    }))
    .unwrap_or_else(|_| unreachable!("the default input template is valid"))
}
fn default_output() -> String {
    "execution".into()
}

/// The outcome of asking an engine to start an execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// A new execution.
    New {
        /// Its ARN.
        arn: String,
        /// How it ended, when the engine waited for it.
        status: Option<String>,
    },
    /// An execution of that name already exists (started by an earlier attempt whose answer
    /// was lost, or by another event of the same deployment).
    Duplicate {
        /// Its ARN.
        arn: String,
        /// Whether it was started with the same input.
        same_input: bool,
    },
}

/// Starts executions.
pub trait StateMachineEngine: Send + Sync + std::fmt::Debug {
    /// Starts an execution named `name` with `input`; a second start of the same name is
    /// [`Started::Duplicate`], saying whether the input was the same.
    fn start<'a>(&'a self, name: &'a str, input: &'a Value) -> BoxFuture<'a, Result<Started, StageError>>;

    /// The status of the execution named `name` (`RUNNING`, `SUCCEEDED`, `FAILED`, `ABORTED`,
    /// `TIMED_OUT`), or `None` when there is none.
    fn status<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<String>, StageError>>;
}

/// A valid Step Functions execution name from any text: letters, digits, `-` and `_`; at most
/// 80 characters (longer names keep their tail and get a hash of the whole).
pub fn execution_name(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            c
        } else {
            '-'
        };
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
    }
    let out = out.trim_matches('-').to_owned();
    if !out.is_empty() && out.len() <= 80 {
        return out;
    }
    let hash: String = Sha256::digest(text.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let tail: String = out
        .chars()
        .rev()
        .take(63)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let tail = tail.trim_start_matches('-');
    if tail.is_empty() {
        hash
    } else {
        format!("{tail}-{hash}")
    }
}

#[typetag::serde(name = "start-state-machine")]
impl StageConfig for StartStateMachineConfig {
    fn build<'a>(&'a self, cx: &'a BuildContext) -> BoxFuture<'a, Result<Arc<dyn Stage>, BuildError>> {
        Box::pin(async move {
            // The service slots live in the rollouts store: on AWS, the table the stack creates.
            // Without one configured, there is nowhere to keep them: no superseding.
            let (engine, rollouts): (Arc<dyn StateMachineEngine>, Option<Arc<dyn RolloutStore>>) = match &self
                .engine
            {
                EngineConfig::StepFunctions {
                    state_machine_arn, ..
                } => {
                    if state_machine_arn.is_empty() {
                        return Err(BuildError::field(
                            "engine.state_machine_arn",
                            "not set: give the state machine's ARN (the stack `cutover template` \
                             generates sets it on the function through an environment override)",
                        ));
                    }
                    let store: Option<Arc<dyn RolloutStore>> = match self.control.table.as_str() {
                        "" => None,
                        table => Some(Arc::new(DynamoRolloutStore::new(
                            aws_sdk_dynamodb::Client::new(cx.aws_config().await),
                            table,
                        ))),
                    };
                    (
                        Arc::new(SfnEngine::new(
                            aws_sdk_sfn::Client::new(cx.aws_config().await),
                            state_machine_arn,
                        )),
                        store,
                    )
                }
                EngineConfig::Local {
                    definition,
                    resources,
                    wait,
                    resume,
                    keep_finished,
                } => (
                    Arc::new(
                        LocalEngine::build(cx, definition, resources, *wait, *resume, Some(*keep_finished))
                            .await?,
                    ),
                    Some(Arc::new(rollout_store(cx))),
                ),
            };
            let embedded = matches!(self.engine, EngineConfig::Local { .. });
            Ok(Arc::new(StartStateMachine {
                input: self.input.clone(),
                name: self.name.clone(),
                output: self.output.clone(),
                engine,
                control: self.control.input(embedded),
                service: self.control.service.clone(),
                // Only a rollout that reads its control record can be aborted by a newer one.
                supersede: rollouts
                    .filter(|_| self.control.supersede && self.reads_control_or_say(cx))
                    .map(|rollouts| Supersede {
                        wait: self.control.supersede_wait,
                        rollouts,
                        clock: cx.clock(),
                    }),
            }) as Arc<dyn Stage>)
        })
    }

    fn validate(&self, cx: &ValidateContext<'_>) -> Vec<FieldError> {
        let mut errors = self.engine_errors(cx);
        for (i, notify) in self.notify.iter().enumerate() {
            errors.extend(notify.validate(i));
        }
        errors
    }

    fn deployment(&self, cx: &DeployContext<'_>) -> Result<Deployment, FieldError> {
        deploy::deployment(&self.engine, &self.control, cx)
    }

    fn files(&self) -> Vec<PathBuf> {
        let (definition, resources) = match &self.engine {
            EngineConfig::StepFunctions {
                definition,
                resources,
                ..
            } => (definition.clone(), resources),
            EngineConfig::Local {
                definition,
                resources,
                ..
            } => (Some(definition.clone()), resources),
        };
        let inline = resources.values().flat_map(|r| match r {
            Resource::Stage(stage) => stage.files(),
            Resource::Pipeline(_) => Vec::new(),
        });
        definition.into_iter().chain(inline).collect()
    }
}

impl StartStateMachineConfig {
    /// The problems of the engine and its definition.
    fn engine_errors(&self, cx: &ValidateContext<'_>) -> Vec<FieldError> {
        match &self.engine {
            EngineConfig::StepFunctions {
                state_machine_arn,
                definition,
                resources,
            } => {
                // With the ARN given (in Lambda, by the template's environment override), the
                // definition is not used and not packaged: only check it when it is the source.
                let mut errors = match definition {
                    Some(definition) if state_machine_arn.is_empty() => {
                        local::validate(cx, definition, resources)
                    }
                    Some(_) => Vec::new(),
                    None if !resources.is_empty() => vec![FieldError::new(
                        "engine.resources",
                        "only used with `definition` (the state machine `cutover template` creates)",
                    )],
                    None => Vec::new(),
                };
                if state_machine_arn.is_empty() && definition.is_none() {
                    errors.push(FieldError::new(
                        "engine.state_machine_arn",
                        "missing: give the ARN of the state machine, or its `definition` and \
                         `resources` for `cutover template` to create it",
                    ));
                } else if !(state_machine_arn.is_empty() || is_state_machine_arn(state_machine_arn)) {
                    errors.push(FieldError::new(
                        "engine.state_machine_arn",
                        format!(
                            "{state_machine_arn:?} is not a state machine ARN (arn:aws:states:REGION:ACCOUNT:stateMachine:NAME)"
                        ),
                    ));
                }
                errors
            }
            EngineConfig::Local {
                definition,
                resources,
                ..
            } => local::validate(cx, definition, resources),
        }
    }

    /// Whether the state machine reads its control record (its definition has the
    /// `ReadControl` resource): only then can it be steered, and superseded. `false` when the
    /// definition is not known here (Step Functions given by ARN only).
    fn reads_control(&self, cx: &BuildContext) -> bool {
        let definition = match &self.engine {
            EngineConfig::StepFunctions { definition, .. } => definition.as_ref(),
            EngineConfig::Local { definition, .. } => Some(definition),
        };
        match definition {
            Some(d) => strategy::definition_text(&cx.config_path(d))
                .is_ok_and(|text| text.contains(crate::rollouts::CONTROL_RESOURCE)),
            // A machine given by ARN only: a rollouts table configured for it says it reads
            // control records (the stack sets the table only for such a machine).
            None => !self.control.table.is_empty(),
        }
    }

    /// [`reads_control`](Self::reads_control), saying why superseding is off when it is not.
    fn reads_control_or_say(&self, cx: &BuildContext) -> bool {
        let reads = self.reads_control(cx);
        if !reads {
            tracing::warn!(
                "control.supersede is on, but the state machine does not read its control record \
                 (no arn:aws:states:::dynamodb:getItem in its definition, or no control.table for a \
                 machine given by ARN): a newer deployment will not abort a running rollout"
            );
        }
        reads
    }

    /// The operations on the rollouts this stage starts (`cutover rollouts`, the daemon's
    /// `/rollouts` API). With `run_tasks` the embedded engine also gets the Task pipelines, to
    /// drive a rollout nobody runs or start a retry in this process; without, it only reads
    /// (and starts no DNS server or other listener a running daemon may hold).
    pub async fn rollouts(&self, cx: &BuildContext, run_tasks: bool) -> Result<Rollouts, BuildError> {
        match &self.engine {
            EngineConfig::StepFunctions {
                state_machine_arn,
                definition,
                ..
            } => {
                if state_machine_arn.is_empty() {
                    return Err(BuildError::field(
                        "engine.state_machine_arn",
                        "not set: give the ARN of the deployed state machine (the stack's output \
                         …StateMachineArn), e.g. with CUTOVER_PIPELINES__<PIPELINE>__STAGES__<N>__ENGINE__STATE_MACHINE_ARN",
                    ));
                }
                let engine = Arc::new(SfnEngine::new(
                    aws_sdk_sfn::Client::new(cx.aws_config().await),
                    state_machine_arn,
                ));
                let table = match self.control.table.as_str() {
                    "" => control::DEFAULT_ROLLOUTS_TABLE,
                    table => table,
                };
                let store = Arc::new(DynamoRolloutStore::new(
                    aws_sdk_dynamodb::Client::new(cx.aws_config().await),
                    table,
                ));
                let definition = definition
                    .as_ref()
                    .and_then(|d| strategy::definition_text(&cx.config_path(d)).ok())
                    .and_then(|text| serde_json::from_str(&text).ok())
                    .unwrap_or(Value::Null);
                Ok(Rollouts::new(
                    engine.clone(),
                    store,
                    engine,
                    cx.clock(),
                    &definition,
                ))
            }
            EngineConfig::Local {
                definition,
                resources,
                ..
            } => {
                let none = BTreeMap::new();
                let resources = if run_tasks { resources } else { &none };
                let engine =
                    Arc::new(LocalEngine::build(cx, definition, resources, false, false, None).await?);
                let source = engine.definition().source().clone();
                Ok(Rollouts::new(
                    engine.clone(),
                    Arc::new(rollout_store(cx)),
                    engine,
                    cx.clock(),
                    &source,
                ))
            }
        }
    }
}

fn is_state_machine_arn(text: &str) -> bool {
    text.starts_with("arn:") && text.contains(":stateMachine:")
}

/// The runtime `start-state-machine` stage.
#[derive(Debug)]
pub struct StartStateMachine {
    input: ValueTemplate,
    name: Option<Template>,
    output: String,
    engine: Arc<dyn StateMachineEngine>,
    /// The `control` block of every execution's input.
    control: Value,
    /// The service a deployment belongs to when the file has no `[services]` table.
    service: Template,
    supersede: Option<Supersede>,
}

/// One rollout per service: what a newer deployment does to the running one.
#[derive(Debug)]
struct Supersede {
    wait: std::time::Duration,
    rollouts: Arc<dyn RolloutStore>,
    clock: Arc<dyn cutover_core::Clock>,
}

/// How often a superseding deployment looks whether the older rollout has ended.
const SUPERSEDE_POLL: std::time::Duration = std::time::Duration::from_secs(1);

impl Supersede {
    /// Makes `name` the service's rollout; a still running older one is aborted (reason
    /// "superseded by `name`") and waited for, so the two never shift one record at once.
    /// `Ok(Some(holder))` when a later deployment already holds the service (this event came
    /// late): then nothing may start.
    async fn hand_over(
        &self,
        service: &str,
        name: &str,
        at: i64,
        engine: &dyn StateMachineEngine,
    ) -> Result<Option<String>, StageError> {
        let older = match self.rollouts.claim_service(service, name, at).await? {
            Claim::Later { holder, .. } => return Ok(Some(holder)),
            Claim::Taken { previous: None } => return Ok(None),
            Claim::Taken {
                previous: Some(older),
            } => older,
        };
        if engine.status(&older).await?.as_deref() != Some("RUNNING") {
            return Ok(None);
        }
        let now = self.clock.now();
        let at = cutover_asl::timestamp::format_system(now);
        let id = action_id(cutover_asl::timestamp::to_nanos(now));
        let already = self.rollouts.control(&older).await?;
        if already.as_ref().is_none_or(|c| c.action != Action::Abort) {
            let reason = format!("superseded by {name}");
            let control = Control {
                action: Action::Abort,
                target: None,
                reason: reason.clone(),
                actor: "cutover".into(),
                at: at.clone(),
                id: id.clone(),
            };
            self.rollouts.set_control(&older, &control).await?;
            self.rollouts
                .audit(&AuditEntry {
                    at,
                    rollout: older.clone(),
                    action: Action::Abort,
                    reason,
                    actor: "cutover".into(),
                    change: json!({"superseded_by": name, "service": service}),
                    id,
                })
                .await?;
            tracing::info!(rollout = %older, superseded_by = %name, "aborting the older rollout of {service}");
        }
        // The older rollout's rollback takes real time (its shift's calls) whatever the clock:
        // the deadline is real time too, or virtual time (replay) could run out at once.
        let deadline = std::time::Instant::now() + self.wait;
        loop {
            self.clock.sleep(SUPERSEDE_POLL).await;
            // On virtual time the sleep above takes no real time: do not spin meanwhile.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            if engine.status(&older).await?.as_deref() != Some("RUNNING") {
                return Ok(None);
            }
            if std::time::Instant::now() >= deadline {
                return Err(StageError::retryable(format!(
                    "the older rollout {older} of {service} is still rolling back after {}s; trying again later",
                    self.wait.as_secs()
                ))
                .with_kind("Rollouts.Superseding"));
            }
        }
    }
}

/// When the event says its deployment happened (its `time`, as EventBridge sets it), in
/// milliseconds since the epoch: what orders two deployments of a service, whatever order their
/// events arrive in.
fn deployed_at(event: &Event) -> Option<i64> {
    let time = event.json().ok()?.get("time")?.as_str()?;
    i64::try_from(cutover_asl::timestamp::parse(time)? / 1_000_000).ok()
}

/// A clock reading in milliseconds since the epoch.
pub(crate) fn millis(t: std::time::SystemTime) -> i64 {
    i64::try_from(cutover_asl::timestamp::to_nanos(t) / 1_000_000).unwrap_or(i64::MAX)
}

impl StartStateMachine {
    /// The service the event's deployment belongs to: its `[services]` entry, else
    /// `control.service` rendered; `None` when the event names none (custom pipelines, which
    /// then have nothing to supersede).
    fn service_of(&self, event: &Event) -> Option<String> {
        let from_table = event
            .context()
            .get(cutover_core::SERVICE_CONTEXT)
            .and_then(|s| s.get("name"))
            .and_then(Value::as_str);
        match from_table {
            Some(name) => Some(name.to_owned()),
            None => self.service.render(event).ok(),
        }
    }

    /// Whether the execution name is derived from the event's dedup key, i.e. names the
    /// deployment: then an execution of that name is this deployment's, whatever its input.
    fn name_is_the_deployments(&self, event: &Event) -> bool {
        self.name.is_none()
            && event
                .context()
                .get("dedup")
                .and_then(|d| d.get("key"))
                .is_some_and(Value::is_string)
    }

    fn name_for(&self, event: &Event) -> Result<String, StageError> {
        let raw = match &self.name {
            Some(t) => t
                .render(event)
                .map_err(|e| StageError::permanent(format!("execution name: {e}")))?,
            None => {
                let key = event
                    .context()
                    .get("dedup")
                    .and_then(|d| d.get("key"))
                    .and_then(Value::as_str);
                match key.or_else(|| event.id()) {
                    Some(k) => k.to_owned(),
                    None => {
                        return Err(StageError::permanent(
                            "no execution name: the event has no dedup key and no id; set `name = \"{…}\"`",
                        ));
                    }
                }
            }
        };
        Ok(execution_name(&raw))
    }
}

impl Stage for StartStateMachine {
    fn process<'a>(&'a self, mut event: Event, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let mut input = match self.input.render(&event) {
                Ok(v) => v,
                Err(e) => return Outcome::failed(StageError::permanent(format!("execution input: {e}"))),
            };
            let service = self.service_of(&event);
            // The rollout's service travels in its control block: the canary passes it to every
            // Task (handlers configured per service pick theirs by it), and `rollouts retry`
            // takes the same service slot superseding does.
            if let Value::Object(fields) = &mut input {
                let control = fields.entry("control").or_insert_with(|| self.control.clone());
                if let (Value::Object(control), Some(service)) = (control, &service)
                    && control
                        .get("service")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                {
                    control.insert("service".into(), Value::String(service.clone()));
                }
            }
            let name = match self.name_for(&event) {
                Ok(n) => n,
                Err(e) => return Outcome::failed(e),
            };
            if let (Some(supersede), Some(service)) = (&self.supersede, &service) {
                let at = deployed_at(&event).unwrap_or_else(|| millis(supersede.clock.now()));
                match supersede
                    .hand_over(service, &name, at, self.engine.as_ref())
                    .await
                {
                    Err(e) => return Outcome::failed(e),
                    Ok(Some(later)) => {
                        tracing::warn!(rollout = %name, later = %later, "a later deployment of {service} holds it: not started");
                        return Outcome::dropped(format!(
                            "stale: a later deployment of {service} ({later}) already holds its rollout slot; \
                             this event arrived after it"
                        ));
                    }
                    Ok(None) => {}
                }
            }
            match self.engine.start(&name, &input).await {
                Err(e) => Outcome::failed(e),
                // The name exists with another input and the name is not the deployment's own
                // (a `name` template that two deployments share): a conflict, not a duplicate.
                Ok(Started::Duplicate {
                    arn,
                    same_input: false,
                }) if !self.name_is_the_deployments(&event) => Outcome::failed(
                    StageError::permanent(format!(
                        "an execution named {name} already exists with a different input ({arn}); \
                             names must be unique per deployment"
                    ))
                    .with_kind("ExecutionAlreadyExists"),
                ),
                // This deployment's execution — started by an earlier attempt whose answer was
                // lost, or by another event of the deployment whose claim this one took over
                // (its input names that event). It is running or done, which is what this
                // attempt was to achieve.
                Ok(Started::Duplicate { arn, .. }) => {
                    tracing::info!(execution = %arn, "execution {name} already exists with the same input: not started again");
                    event
                        .context_mut()
                        .insert(self.output.clone(), Value::String(arn));
                    event
                        .context_mut()
                        .insert(format!("{}_existed", self.output), Value::Bool(true));
                    next.run(event).await
                }
                Ok(Started::New { arn, status }) => {
                    event
                        .context_mut()
                        .insert(self.output.clone(), Value::String(arn));
                    if let Some(status) = status {
                        event
                            .context_mut()
                            .insert(format!("{}_status", self.output), Value::String(status));
                    }
                    next.run(event).await
                }
            }
        })
    }
}

#[cfg(test)]
mod tests;
