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

mod deploy;
mod local;
mod sfn;

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

pub use self::local::{CoreClock, EngineClock, LocalEngine, PipelineTasks, VirtualTime};
pub use self::sfn::SfnEngine;

cutover_core::register_stage!(
    "start-state-machine",
    "Starts one canary execution (Step Functions, or the embedded ASL engine) per event."
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
        #[serde(default = "yes")]
        resume: bool,
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
fn yes() -> bool {
    true
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
            let engine: Arc<dyn StateMachineEngine> = match &self.engine {
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
                    Arc::new(SfnEngine::new(
                        aws_sdk_sfn::Client::new(cx.aws_config().await),
                        state_machine_arn,
                    ))
                }
                EngineConfig::Local {
                    definition,
                    resources,
                    wait,
                    resume,
                } => Arc::new(LocalEngine::build(cx, definition, resources, *wait, *resume).await?),
            };
            Ok(Arc::new(StartStateMachine {
                input: self.input.clone(),
                name: self.name.clone(),
                output: self.output.clone(),
                engine,
            }) as Arc<dyn Stage>)
        })
    }

    fn validate(&self, cx: &ValidateContext<'_>) -> Vec<FieldError> {
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

    fn deployment(&self, cx: &DeployContext<'_>) -> Result<Deployment, FieldError> {
        deploy::deployment(&self.engine, cx)
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
}

impl StartStateMachine {
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
            let input = match self.input.render(&event) {
                Ok(v) => v,
                Err(e) => return Outcome::failed(StageError::permanent(format!("execution input: {e}"))),
            };
            let name = match self.name_for(&event) {
                Ok(n) => n,
                Err(e) => return Outcome::failed(e),
            };
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
