//! The AWS Lambda host: a pipeline as a Lambda function (`provided.al2023`, binary `bootstrap`).
//!
//! Configuration: `CUTOVER_CONFIG` names the pipeline file (default `cutover.toml` next to the
//! executable, as `cutover package` bundles it), `CUTOVER_PIPELINE` the pipeline (default: the
//! file's), `CUTOVER_PIPELINES__…` override values. Everything expensive — the AWS
//! configuration, clients, compiled patterns — is built once at init, not per invoke.
//!
//! Three kinds of payloads arrive:
//! - **EventBridge events** (`source` and `detail-type` present): a passed or dropped event is
//!   a successful invocation (the response says which); a failure is an error, so Lambda's
//!   retries and the function's on-failure destination keep the event.
//! - **Step Functions Task input** (anything else): the passed context is the Task's output; a
//!   drop or failure is an error whose type is the stage's error kind (`TrafficShift.NotInSync`),
//!   so the state machine's `Retry`/`Catch` can match it.
//!
//! - **ECS lifecycle hook invocations** (`executionDetails` and `lifecycleStage` present): the
//!   pipeline whose `ecs_hook.stages` names the stage judges it; the response is ECS's
//!   `{hookStatus, callBackDelay, hookDetails}` ([`cutover_stages::ecs_hook`]).
//!
//! Errors carry `Cutover.Retryable` / `Cutover.Failed` when the stage named no kind. Logs are
//! JSON (`tracing`); after every invoke one CloudWatch Embedded Metric Format line goes to
//! stdout (`Rollbacks` counts a traffic shift that sent every request back to blue).
//!
//! ```no_run
//! # async fn run() -> Result<(), lambda_runtime::Error> {
//! let handler = cutover::lambda::LambdaHandler::from_env().await?;
//! cutover::lambda::run(handler).await
//! # }
//! ```

use std::path::PathBuf;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use cutover_core::{BoxFuture, BuildContext, Event, Outcome, Pipeline};
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde_json::{Value, json};

use cutover_stages::ecs_hook::{EcsHooks, is_hook_request};

use crate::{HostError, Hosted};

/// The default name of the bundled pipeline file.
pub const BUNDLED_CONFIG: &str = "cutover.toml";

/// A pipeline as a Lambda handler: a `tower::Service<LambdaEvent<Value>>`.
#[derive(Debug, Clone)]
pub struct LambdaHandler {
    pipeline: Pipeline,
    context: BuildContext,
    hooks: Option<EcsHooks>,
}

impl LambdaHandler {
    /// Hosts a built pipeline (pipelines built in code, with your own stages, welcome).
    pub fn new(pipeline: Pipeline, context: BuildContext) -> Self {
        Self {
            pipeline,
            context,
            hooks: None,
        }
    }

    /// Also answers ECS lifecycle hook invocations with `hooks`.
    pub fn with_hooks(mut self, hooks: Option<EcsHooks>) -> Self {
        self.hooks = hooks;
        self
    }

    /// Loads the pipeline `CUTOVER_CONFIG` / `CUTOVER_PIPELINE` name.
    pub async fn from_env() -> Result<Self, HostError> {
        let config = std::env::var_os("CUTOVER_CONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                std::env::current_exe()
                    .ok()
                    .and_then(|exe| exe.parent().map(|d| d.join(BUNDLED_CONFIG)))
                    .unwrap_or_else(|| PathBuf::from(BUNDLED_CONFIG))
            });
        let name = std::env::var("CUTOVER_PIPELINE").ok().filter(|n| !n.is_empty());
        let Hosted {
            pipeline,
            context,
            hooks,
        } = crate::load(&config, name.as_deref()).await?;
        Ok(Self::new(pipeline, context).with_hooks(hooks))
    }

    /// Runs one payload; `Ok` is the function's response.
    pub async fn handle(&self, payload: Value) -> Result<Value, Diagnostic> {
        if is_hook_request(&payload) {
            return self.answer_hook(payload).await;
        }
        let started = Instant::now();
        let eventbridge = payload.get("detail-type").is_some() && payload.get("source").is_some();
        let outcome = self.pipeline.run(Event::from_value(payload)).await;
        // Embedded work started by this event (a local state machine) must finish before the
        // sandbox freezes.
        self.context.background().drain().await;
        emit_emf(
            self.pipeline.name(),
            &outcome,
            started.elapsed().as_secs_f64() * 1000.0,
        );
        respond(outcome, eventbridge)
    }
}

impl LambdaHandler {
    /// An ECS lifecycle hook invocation: the `hookStatus` answer, or an error (which ECS takes
    /// as a failed hook) when the payload is malformed, no pipeline has `ecs_hook`, or the
    /// hook store cannot be reached.
    async fn answer_hook(&self, payload: Value) -> Result<Value, Diagnostic> {
        let Some(hooks) = &self.hooks else {
            return Err(Diagnostic {
                error_type: "EcsHook.NotConfigured".into(),
                error_message: "an ECS lifecycle hook invocation, but no pipeline of this file has \
                                `ecs_hook = { stages = [...] }`"
                    .into(),
            });
        };
        let started = Instant::now();
        let stage = payload["lifecycleStage"].as_str().unwrap_or("?").to_owned();
        let answer = hooks.answer(payload).await;
        self.context.background().drain().await;
        match answer {
            Ok(response) => {
                let response = serde_json::to_value(response).unwrap_or(Value::Null);
                emit_hook_emf(&stage, &response, started.elapsed().as_secs_f64() * 1000.0);
                Ok(response)
            }
            Err(error) => {
                tracing::warn!(error = %error.message, retryable = error.retryable, "ECS lifecycle hook failed");
                Err(Diagnostic {
                    error_type: error.error_name().to_owned(),
                    error_message: error.message,
                })
            }
        }
    }
}

fn respond(outcome: Outcome, eventbridge: bool) -> Result<Value, Diagnostic> {
    match outcome {
        Outcome::Passed { context } if eventbridge => Ok(json!({"outcome": "passed", "context": context})),
        Outcome::Passed { context } => Ok(Value::Object(context)),
        Outcome::Dropped { stage, reason } if eventbridge => {
            Ok(json!({"outcome": "dropped", "stage": stage, "reason": reason}))
        }
        Outcome::Dropped { stage, reason } => Err(Diagnostic {
            error_type: "Cutover.Dropped".into(),
            error_message: format!("dropped by {stage}: {reason}"),
        }),
        Outcome::Failed { stage, error } => {
            tracing::warn!(%stage, error = %error.message, retryable = error.retryable, "event failed");
            Err(Diagnostic {
                error_type: error.error_name().to_owned(),
                error_message: format!("{stage}: {}", error.message),
            })
        }
    }
}

/// One CloudWatch Embedded Metric Format line per invoke.
fn emit_emf(pipeline: &str, outcome: &Outcome, latency_ms: f64) {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let (passed, dropped, failed) = match outcome {
        Outcome::Passed { .. } => (1, 0, 0),
        Outcome::Dropped { .. } => (0, 1, 0),
        Outcome::Failed { .. } => (0, 0, 1),
    };
    let duplicate = u8::from(matches!(outcome, Outcome::Dropped { stage, .. } if stage == "dedup"));
    let started =
        u8::from(matches!(outcome, Outcome::Passed { context } if context.contains_key("execution")));
    let rollbacks = u8::from(matches!(outcome, Outcome::Passed { context } if sent_back_to_blue(context)));
    let line = json!({
        "_aws": {
            "Timestamp": ms,
            "CloudWatchMetrics": [{
                "Namespace": "cutover",
                "Dimensions": [["Pipeline"], ["Pipeline", "Stage"]],
                "Metrics": [
                    {"Name": "EventsSeen", "Unit": "Count"},
                    {"Name": "Passed", "Unit": "Count"},
                    {"Name": "Dropped", "Unit": "Count"},
                    {"Name": "Failed", "Unit": "Count"},
                    {"Name": "Duplicates", "Unit": "Count"},
                    {"Name": "ExecutionsStarted", "Unit": "Count"},
                    {"Name": "Rollbacks", "Unit": "Count"},
                    {"Name": "Latency", "Unit": "Milliseconds"}
                ]
            }]
        },
        "Pipeline": pipeline,
        "Stage": outcome.stage().unwrap_or("end"),
        "EventsSeen": 1,
        "Passed": passed,
        "Dropped": dropped,
        "Failed": failed,
        "Duplicates": duplicate,
        "ExecutionsStarted": started,
        "Rollbacks": rollbacks,
        "Latency": latency_ms,
    });
    println!("{line}");
}

/// One CloudWatch Embedded Metric Format line per ECS lifecycle hook invocation: its answer
/// (`HookSucceeded`, `HookFailed`, `HookInProgress`) by `Pipeline` and `LifecycleStage`.
fn emit_hook_emf(stage: &str, response: &Value, latency_ms: f64) {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let status = response["hookStatus"].as_str().unwrap_or("");
    let count = |s: &str| u8::from(status == s);
    let line = json!({
        "_aws": {
            "Timestamp": ms,
            "CloudWatchMetrics": [{
                "Namespace": "cutover",
                "Dimensions": [["Pipeline"], ["Pipeline", "LifecycleStage"]],
                "Metrics": [
                    {"Name": "HookSucceeded", "Unit": "Count"},
                    {"Name": "HookFailed", "Unit": "Count"},
                    {"Name": "HookInProgress", "Unit": "Count"},
                    {"Name": "Latency", "Unit": "Milliseconds"}
                ]
            }]
        },
        "Pipeline": response.pointer("/hookDetails/cutover/pipeline").and_then(Value::as_str).unwrap_or("none"),
        "LifecycleStage": stage,
        "HookSucceeded": count("SUCCEEDED"),
        "HookFailed": count("FAILED"),
        "HookInProgress": count("IN_PROGRESS"),
        "Latency": latency_ms,
    });
    println!("{line}");
}

/// Whether a passed outcome is a traffic shift that sent every request back to blue (green 0,
/// blue 100: the canary's rollback step), at the top of the context or under one key (a
/// stage's `result_key`). `cutover template` alarms on the `Rollbacks` metric this feeds.
fn sent_back_to_blue(context: &serde_json::Map<String, Value>) -> bool {
    let all_blue = |m: &serde_json::Map<String, Value>| {
        m.get("green").and_then(Value::as_i64) == Some(0)
            && m.get("blue").and_then(Value::as_i64) == Some(100)
    };
    all_blue(context) || context.values().any(|v| v.as_object().is_some_and(all_blue))
}

impl tower::Service<LambdaEvent<Value>> for LambdaHandler {
    type Response = Value;
    type Error = Diagnostic;
    type Future = BoxFuture<'static, Result<Value, Diagnostic>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: LambdaEvent<Value>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.handle(req.payload).await })
    }
}

/// Serves invocations until the runtime stops. On SIGTERM (which Lambda sends before it shuts
/// an environment down, when an extension is registered) it exits at once and cleanly: every
/// EMF line is written whole at the end of its invocation, and nothing else is held between
/// invocations (a dedup claim ends with its invocation or with its short lease).
pub async fn run(handler: LambdaHandler) -> Result<(), lambda_runtime::Error> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        served = lambda_runtime::run(handler) => served,
        _ = term.recv() => {
            tracing::info!("SIGTERM: the environment is shutting down");
            use std::io::Write as _;
            let _ = std::io::stdout().flush();
            Ok(())
        }
    }
}

/// Tells the Lambda service why the function cannot start (`POST /runtime/init/error` of the
/// Runtime API), so the invocation fails with the reason — a broken pipeline file names its
/// field in the function's error, not only in its logs. Best effort: without a Runtime API
/// (`AWS_LAMBDA_RUNTIME_API` unset or unreachable) it only logs.
pub fn report_init_error(message: &str) {
    tracing::error!(error = %message, "the function cannot start");
    let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API") else {
        return;
    };
    let body = json!({"errorType": "Cutover.InitError", "errorMessage": message}).to_string();
    let request = format!(
        "POST /2018-06-01/runtime/init/error HTTP/1.1\r\nHost: {api}\r\nContent-Type: application/json\r\n\
         Lambda-Runtime-Function-Error-Type: Cutover.InitError\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let sent = std::net::TcpStream::connect(&api).and_then(|mut stream| {
        use std::io::{Read as _, Write as _};
        stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        stream.write_all(request.as_bytes())?;
        // Wait for the answer, so the report is in before the process exits.
        let mut answer = [0u8; 256];
        stream.read(&mut answer).map(drop)
    });
    if let Err(error) = sent {
        tracing::error!(%error, "could not report the init error to the Runtime API");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_core::StageError;

    #[test]
    fn outcomes_map_to_responses_and_error_types() {
        let passed = Outcome::Passed {
            context: json!({"State": "healthy"}).as_object().unwrap().clone(),
        };
        assert_eq!(
            respond(passed.clone(), false).unwrap(),
            json!({"State": "healthy"})
        );
        assert_eq!(respond(passed, true).unwrap()["outcome"], "passed");
        let dropped = Outcome::Dropped {
            stage: "filter".into(),
            reason: "not green".into(),
        };
        assert_eq!(respond(dropped.clone(), true).unwrap()["reason"], "not green");
        assert_eq!(respond(dropped, false).unwrap_err().error_type, "Cutover.Dropped");
        let failed = |e: StageError| Outcome::Failed {
            stage: "traffic-shift".into(),
            error: e,
        };
        let e = respond(
            failed(StageError::retryable("slow").with_kind("TrafficShift.NotInSync")),
            false,
        )
        .unwrap_err();
        assert_eq!(e.error_type, "TrafficShift.NotInSync");
        assert_eq!(e.error_message, "traffic-shift: slow");
        assert_eq!(
            respond(failed(StageError::retryable("x")), true)
                .unwrap_err()
                .error_type,
            "Cutover.Retryable"
        );
        assert_eq!(
            respond(failed(StageError::permanent("x")), true)
                .unwrap_err()
                .error_type,
            "Cutover.Failed"
        );
    }

    #[test]
    fn a_shift_of_all_traffic_to_blue_counts_as_a_rollback() {
        let context = |v: Value| v.as_object().unwrap().clone();
        assert!(sent_back_to_blue(&context(
            json!({"blue": 100, "green": 0, "status": "INSYNC"})
        )));
        assert!(sent_back_to_blue(&context(
            json!({"traffic": {"blue": 100, "green": 0}})
        )));
        assert!(!sent_back_to_blue(&context(json!({"blue": 90, "green": 10}))));
        assert!(!sent_back_to_blue(&context(
            json!({"execution": "arn:aws:states:…"})
        )));
    }
}
