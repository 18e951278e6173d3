//! Amazon ECS deployment lifecycle hooks answered by pipelines: ECS native blue/green, canary
//! and linear deployments shift the traffic themselves and ask a Lambda function, at each
//! configured lifecycle stage, whether to go on. A pipeline with
//! `ecs_hook = { stages = [...] }` is that judge.
//!
//! The request and response shapes are ECS's, as documented in "Lambda hooks for Amazon ECS
//! service deployments" and "Lifecycle hooks for Amazon ECS service deployments"
//! (<https://docs.aws.amazon.com/AmazonECS/latest/developerguide/lambda-lifecycle-hooks.html>,
//! <https://docs.aws.amazon.com/AmazonECS/latest/developerguide/deployment-lifecycle-hooks.html>):
//! ECS sends `executionDetails` (`serviceArn`, `targetServiceRevisionArn`, `testTrafficWeights`,
//! `productionTrafficWeights`), `executionId`, `lifecycleStage`, `resourceArn` (the service
//! deployment) and any `hookDetails`; the function answers `hookStatus` `SUCCEEDED`, `FAILED`
//! (ECS rolls back) or `IN_PROGRESS` (ECS asks again after `callBackDelay` seconds, 30 by
//! default), and may return `hookDetails`, which ECS passes to the next invocation.
//!
//! Every invocation runs the stage's pipeline once — one measurement of the analysis model the
//! probes share ([`crate::health_check::analysis`]): passed (a `health-check` found green
//! healthy), failed (unhealthy, or a stage dropped the event) or inconclusive (a retryable
//! failure). The [`Tally`] of one hook execution is kept between invocations in a
//! [`HookStore`] — files in the data directory ([`files`]) or a DynamoDB table
//! ([`dynamodb`]) — under a key of the service deployment, the stage, ECS's execution id and
//! green's production weight (returned in `hookDetails.cutover.key`). Writes are conditional on the version
//! read, so two overlapping invocations count one measurement; once a verdict is stored, every
//! later call of that hook execution gets the same answer; a hook still collecting after
//! `timeout` fails; records expire (`expires_at`, DynamoDB's TTL attribute) a day after that.

pub mod dynamodb;
pub mod files;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use cutover_core::{
    BoxFuture, BuildContext, Clock, EcsHookSpec, Event, HookStoreSpec, LoadErrors, Outcome, Pipeline,
    PipelineFile, StageError,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::health_check::analysis::{Limits, Measurement, Tally, Verdict};

/// What ECS sends a lifecycle hook (the docs' "lifecycle payloads"); unknown fields are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookRequest {
    /// The deployment's state.
    pub execution_details: ExecutionDetails,
    /// This hook execution's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
    /// `POST_TEST_TRAFFIC_SHIFT`, … (see [`cutover_core::LIFECYCLE_STAGES`]).
    pub lifecycle_stage: String,
    /// The service deployment's ARN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_arn: Option<String>,
    /// The hook's configured `hookDetails`, or those the last `IN_PROGRESS` answer returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_details: Option<Value>,
    /// Fields not named here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `executionDetails`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionDetails {
    /// The service's ARN.
    pub service_arn: String,
    /// The service revision being deployed (green).
    pub target_service_revision_arn: String,
    /// Test traffic percentage per service revision ARN.
    #[serde(default)]
    pub test_traffic_weights: BTreeMap<String, Value>,
    /// Production traffic percentage per service revision ARN.
    #[serde(default)]
    pub production_traffic_weights: BTreeMap<String, Value>,
    /// Fields not named here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `hookStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HookStatus {
    /// Go on to the next lifecycle stage.
    Succeeded,
    /// Roll back.
    Failed,
    /// Ask again after `callBackDelay` seconds.
    InProgress,
}

/// What the function answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookResponse {
    /// The verdict.
    pub hook_status: HookStatus,
    /// Seconds until ECS asks again (with `IN_PROGRESS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_back_delay: Option<u64>,
    /// What the next invocation gets back; `reason` says why, `cutover` holds the tally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_details: Option<Value>,
}

/// Whether `payload` is an ECS lifecycle hook invocation.
pub fn is_hook_request(payload: &Value) -> bool {
    payload.get("executionDetails").is_some_and(Value::is_object)
        && payload.get("lifecycleStage").is_some_and(Value::is_string)
}

/// A verdict once reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Final {
    /// `Succeeded` or `Failed`.
    pub status: HookStatus,
    /// Why.
    pub reason: String,
}

/// The state of one hook execution between invocations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRecord {
    /// The store key.
    pub key: String,
    /// The lifecycle stage.
    pub stage: String,
    /// The pipeline judging it.
    pub pipeline: String,
    /// First invocation, milliseconds since the epoch.
    pub first_at_ms: u64,
    /// Invocations so far.
    pub invocations: u32,
    /// Measurements so far.
    pub tally: Tally,
    /// The verdict, once reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Final>,
    /// Bumped by every write; a write expects the version it read.
    pub version: u64,
    /// When the record may be forgotten, seconds since the epoch.
    pub expires_at: u64,
}

/// Where hook records live between invocations.
pub trait HookStore: Send + Sync + fmt::Debug {
    /// The record under `key`, unless absent or expired at `now_s` (seconds since the epoch).
    fn get<'a>(&'a self, key: &'a str, now_s: u64) -> BoxFuture<'a, Result<Option<HookRecord>, StageError>>;
    /// Writes `record` when the stored one has version `record.version - 1` (or, for version
    /// 1, when there is none or it expired at `now_s`). `Ok(false)`: another write came first.
    fn put<'a>(&'a self, record: &'a HookRecord, now_s: u64) -> BoxFuture<'a, Result<bool, StageError>>;
}

/// One lifecycle stage's pipeline, model and store.
#[derive(Debug)]
struct StageJudge {
    pipeline_name: String,
    spec: EcsHookSpec,
    pipeline: Pipeline,
    store: Arc<dyn HookStore>,
}

/// The hooks of a pipeline file: which pipeline answers which lifecycle stage.
#[derive(Debug, Clone)]
pub struct EcsHooks {
    judges: BTreeMap<String, Arc<StageJudge>>,
    clock: Arc<dyn Clock>,
}

/// How long a record outlives its hook's timeout.
const RETENTION: Duration = Duration::from_secs(24 * 3600);

impl EcsHooks {
    /// The hooks `file` declares (`None` when no pipeline has `ecs_hook`), their pipelines
    /// built with `cx`.
    pub async fn build(file: &PipelineFile, cx: &BuildContext) -> Result<Option<Self>, LoadErrors> {
        let mut judges = BTreeMap::new();
        for spec in &file.pipelines {
            let Some(hook) = &spec.ecs_hook else { continue };
            let pipeline = file.build(&spec.name, cx).await?;
            let store: Arc<dyn HookStore> = match &hook.store {
                HookStoreSpec::Local { path } => {
                    Arc::new(files::FileHookStore::new(cx.data_dir().join(path)))
                }
                HookStoreSpec::Dynamodb { table } => Arc::new(dynamodb::DynamoHookStore::new(
                    aws_sdk_dynamodb::Client::new(cx.aws_config().await),
                    table.clone(),
                )),
            };
            let judge = Arc::new(StageJudge {
                pipeline_name: spec.name.clone(),
                spec: hook.clone(),
                pipeline,
                store,
            });
            for stage in &hook.stages {
                judges.insert(stage.clone(), judge.clone());
            }
        }
        Ok((!judges.is_empty()).then(|| Self {
            judges,
            clock: cx.clock(),
        }))
    }

    /// The lifecycle stages answered.
    pub fn stages(&self) -> Vec<&str> {
        self.judges.keys().map(String::as_str).collect()
    }

    /// Answers one invocation. `Err` when the payload is not a lifecycle hook request or the
    /// store refuses permanently (the function fails, which ECS treats as a failed hook); a
    /// store that is throttled or unreachable answers `IN_PROGRESS`, to be asked again.
    pub async fn answer(&self, payload: Value) -> Result<HookResponse, StageError> {
        let request: HookRequest = serde_json::from_value(payload.clone()).map_err(|e| {
            StageError::permanent(format!("not an ECS lifecycle hook request: {e}"))
                .with_kind("EcsHook.BadRequest")
        })?;
        let Some(judge) = self.judges.get(&request.lifecycle_stage) else {
            let reason = format!(
                "no pipeline answers {}: add it to a pipeline's ecs_hook.stages (this file answers {}), \
                 or remove it from the service's lifecycleHooks",
                request.lifecycle_stage,
                self.stages().join(", ")
            );
            tracing::warn!(stage = %request.lifecycle_stage, "{reason}");
            return Ok(respond(&request, HookStatus::Failed, None, &reason, None));
        };
        match judge.answer(&request, payload, self.clock.as_ref()).await {
            // A throttled or unreachable store must not roll a deployment back (a function
            // error does): ask ECS to call again; the hook's own timeout still bounds it.
            Err(e) if e.retryable => {
                tracing::warn!(error = %e.message, "ECS hook store unavailable: IN_PROGRESS");
                let reason = format!(
                    "the hook's state could not be read or written, asking again: {}",
                    e.message
                );
                let delay = judge.spec.callback_delay.as_secs();
                Ok(respond(
                    &request,
                    HookStatus::InProgress,
                    Some(delay),
                    &reason,
                    None,
                ))
            }
            other => other,
        }
    }
}

fn epoch_ms(clock: &dyn Clock) -> u64 {
    clock
        .now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The store key of a hook execution: the service deployment, the stage, ECS's execution id,
/// and green's production weight — `PRODUCTION_TRAFFIC_SHIFT` is invoked at every step of a
/// canary or linear deployment, and each step is judged afresh.
fn key_of(request: &HookRequest) -> String {
    let details = &request.execution_details;
    let deployment = request
        .resource_arn
        .clone()
        .unwrap_or_else(|| format!("{}|{}", details.service_arn, details.target_service_revision_arn));
    let weight = details
        .production_traffic_weights
        .get(&details.target_service_revision_arn)
        .map_or_else(|| "-".to_owned(), Value::to_string);
    format!(
        "{deployment}#{}#{}#{weight}",
        request.lifecycle_stage,
        request.execution_id.as_deref().unwrap_or("-")
    )
}

/// The response, `hookDetails` holding what came in, the reason and the tally.
fn respond(
    request: &HookRequest,
    status: HookStatus,
    delay: Option<u64>,
    reason: &str,
    record: Option<&HookRecord>,
) -> HookResponse {
    // Configured `hookDetails` may arrive as an object or, as CloudFormation declares them, as
    // the text of one.
    let mut details = match &request.hook_details {
        Some(Value::Object(m)) => m.clone(),
        Some(Value::String(text)) => serde_json::from_str(text).unwrap_or_default(),
        _ => Map::new(),
    };
    details.insert("reason".into(), json!(reason));
    match record {
        Some(r) => details.insert(
            "cutover".into(),
            json!({
                "key": r.key, "pipeline": r.pipeline, "invocations": r.invocations,
                "measurements": r.tally.taken(), "passed": r.tally.passed,
                "failed": r.tally.failed, "inconclusive": r.tally.inconclusive,
            }),
        ),
        None => details.remove("cutover"),
    };
    HookResponse {
        hook_status: status,
        call_back_delay: delay,
        hook_details: Some(Value::Object(details)),
    }
}

/// One pipeline run as a measurement; `Err` for a verdict that needs no more (a permanent
/// failure).
fn measurement(outcome: Outcome) -> Result<Measurement, String> {
    match outcome {
        Outcome::Passed { context } => {
            Ok(unhealthy_reason(&context).map_or(Measurement::Passed, Measurement::Failed))
        }
        Outcome::Dropped { stage, reason } => {
            Ok(Measurement::Failed(format!("dropped by {stage}: {reason}")))
        }
        Outcome::Failed { stage, error } if error.retryable => {
            Ok(Measurement::Inconclusive(format!("{stage}: {}", error.message)))
        }
        Outcome::Failed { stage, error } => Err(format!("{stage}: {}", error.message)),
    }
}

/// The reason of a `health-check` that found green unhealthy, at the top of the context or
/// under one key (a `result_key`).
fn unhealthy_reason(context: &Map<String, Value>) -> Option<String> {
    let of = |m: &Map<String, Value>| {
        (m.get("State").and_then(Value::as_str) == Some("unhealthy")).then(|| {
            m.get("reason")
                .and_then(Value::as_str)
                .unwrap_or("unhealthy")
                .to_owned()
        })
    };
    of(context).or_else(|| context.values().filter_map(Value::as_object).find_map(of))
}

impl StageJudge {
    fn limits(&self) -> Limits {
        Limits {
            count: self.spec.count,
            failure_limit: self.spec.failure_limit,
            inconclusive_limit: self.spec.inconclusive_limit,
        }
    }

    async fn answer(
        &self,
        request: &HookRequest,
        payload: Value,
        clock: &dyn Clock,
    ) -> Result<HookResponse, StageError> {
        let now_ms = epoch_ms(clock);
        let now_s = now_ms / 1000;
        let key = key_of(request);
        let record = self.store.get(&key, now_s).await?.unwrap_or_else(|| HookRecord {
            key: key.clone(),
            stage: request.lifecycle_stage.clone(),
            pipeline: self.pipeline_name.clone(),
            first_at_ms: now_ms,
            invocations: 0,
            tally: Tally::default(),
            verdict: None,
            version: 0,
            expires_at: now_s + (self.spec.timeout + RETENTION).as_secs(),
        });
        if let Some(done) = &record.verdict {
            // A repeated call after the verdict: the same answer.
            return Ok(respond(request, done.status, None, &done.reason, Some(&record)));
        }
        let mut next = record.clone();
        next.invocations += 1;
        next.version += 1;
        let elapsed = Duration::from_millis(now_ms.saturating_sub(record.first_at_ms));
        if elapsed > self.spec.timeout {
            next.verdict = Some(Final {
                status: HookStatus::Failed,
                reason: format!(
                    "no verdict within {}s ({} of {} measurements taken): {}",
                    self.spec.timeout.as_secs(),
                    record.tally.taken(),
                    self.spec.count,
                    if record.tally.last.is_empty() {
                        "still collecting"
                    } else {
                        &record.tally.last
                    }
                ),
            });
        } else {
            let mut event = Event::from_value(payload);
            event.add_result(
                Some("hook"),
                json!({"key": key, "stage": request.lifecycle_stage, "invocation": next.invocations,
                       "measurements": record.tally.taken()}),
            );
            match measurement(self.pipeline.run(event).await) {
                Ok(m) => next.tally.record(&m),
                Err(reason) => {
                    next.verdict = Some(Final {
                        status: HookStatus::Failed,
                        reason,
                    })
                }
            }
            if next.verdict.is_none() {
                next.verdict = match next
                    .tally
                    .verdict(&self.limits(), &format!("pipeline {:?}", self.pipeline_name))
                {
                    Verdict::Healthy(reason) => Some(Final {
                        status: HookStatus::Succeeded,
                        reason,
                    }),
                    Verdict::Unhealthy(reason) => Some(Final {
                        status: HookStatus::Failed,
                        reason,
                    }),
                    Verdict::Collecting => None,
                };
            }
        }
        let stored = if self.store.put(&next, now_s).await? {
            next
        } else {
            // An overlapping invocation wrote first: answer from its record, counting nothing twice.
            self.store.get(&key, now_s).await?.unwrap_or(next)
        };
        tracing::info!(stage = %stored.stage, key = %stored.key, invocations = stored.invocations,
            measurements = stored.tally.taken(), verdict = ?stored.verdict, "ECS lifecycle hook answered");
        Ok(match &stored.verdict {
            Some(done) => respond(request, done.status, None, &done.reason, Some(&stored)),
            None => respond(
                request,
                HookStatus::InProgress,
                Some(self.spec.callback_delay.as_secs()),
                &format!(
                    "collecting: {} of {} measurements ({} failed, {} inconclusive)",
                    stored.tally.taken(),
                    self.spec.count,
                    stored.tally.failed,
                    stored.tally.inconclusive
                ),
                Some(&stored),
            ),
        })
    }
}

#[cfg(test)]
mod tests;
