//! `health-check`: asks whether green is healthy and writes the answer where a Step Functions
//! Choice state can branch on it.
//!
//! The stage adds `{ "State": "healthy" | "unhealthy", "checks": [ … ], "reason": "…" }` to the
//! context (at its top level, or under `result_key`) and passes the event on either way:
//! *unhealthy is an answer, not a failure* — the state machine decides to roll back. The stage
//! fails only when it cannot find out (a target group that does not exist, AWS throttling).
//! Where the answer comes from is a [`HealthProbe`]:
//!
//! - `http` ([`http`]): real HTTP GETs against green's endpoint, with ELB-style consecutive
//!   healthy/unhealthy thresholds;
//! - `elbv2` ([`elbv2`]): the target health of a target group — every target, not only the
//!   first;
//! - `prometheus` ([`prometheus`]): a PromQL query measured `count` times, each held to a
//!   condition (`result < 0.01`), with failure and inconclusive limits;
//! - `webhook` ([`webhook`]): a POST of the rollout context to a team's own gate; 2xx is
//!   healthy;
//! - `cloudwatch-alarm` and `cloudwatch-metric` ([`cloudwatch`]): named alarms must not be in
//!   `ALARM`; `GetMetricData` queries (metric math too) held to a condition;
//! - `observed-split` ([`observed_split`]): the share of traffic green actually receives over
//!   a window, held to the weight set.
//!
//! `probes = { observed-split = { … } }` names further probes a Task picks with its input's
//! `probe` field (the shipped canary's observed-split gate asks for `"observed-split"`); without
//! one, `probe` answers.
//!
//! The measuring probes share one analysis model ([`analysis`]): `count` measurements, each
//! passed, failed or inconclusive, judged against `failure_limit` and `inconclusive_limit`.
//!
//! ```toml
//! [[pipelines.canary.stages]]
//! type = "health-check"
//! probe = { type = "http", url = "http://127.0.0.2:8080/health", expect_status = "200-299", healthy_threshold = 3, unhealthy_threshold = 2, interval = "1s", timeout = "2s" }
//! ```
//!
//! `url` and `target_group_arn` are templates, so a Task input can name them:
//! `url = "{endpoint}/health"`.

pub mod analysis;
pub(crate) mod client;
pub mod cloudwatch;
pub mod elbv2;
pub mod http;
pub mod observed_split;
pub mod prometheus;
pub mod webhook;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use cutover_core::{
    BoxFuture, BuildContext, BuildError, Event, FieldError, Next, Outcome, Stage, StageConfig, StageError,
    ValidateContext,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use self::cloudwatch::{CloudWatchAlarmProbeConfig, CloudWatchMetricProbeConfig};
use self::elbv2::Elbv2ProbeConfig;
use self::http::HttpProbeConfig;
use self::observed_split::ObservedSplitProbeConfig;
use self::prometheus::PrometheusProbeConfig;
use self::webhook::WebhookProbeConfig;

cutover_core::register_stage!(
    "health-check",
    "Probes green (HTTP, ELBv2 target health, Prometheus, a webhook, or the traffic split actually observed) and adds State = healthy | unhealthy for a Choice state."
);

/// Configuration of the `health-check` stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// How health is judged: `{ type = "http", url = "…" }` or
    /// `{ type = "elbv2", target_group_arn = "…" }`.
    pub probe: ProbeConfig,
    /// Further probes by name, picked by a Task input's `probe` field (`"observed-split"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub probes: BTreeMap<String, ProbeConfig>,
    /// Put the result under this key of the context instead of merging it at the top level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_key: Option<String>,
}

/// The probe backends.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ProbeConfig {
    /// HTTP GETs with thresholds.
    Http(HttpProbeConfig),
    /// ELBv2 `DescribeTargetHealth`.
    Elbv2(Elbv2ProbeConfig),
    /// A PromQL query held to a condition.
    Prometheus(PrometheusProbeConfig),
    /// A POST of the rollout context; 2xx is healthy.
    Webhook(WebhookProbeConfig),
    /// CloudWatch alarms that must not be in `ALARM`.
    CloudwatchAlarm(CloudWatchAlarmProbeConfig),
    /// CloudWatch `GetMetricData` queries held to a condition.
    CloudwatchMetric(CloudWatchMetricProbeConfig),
    /// The traffic split actually observed, held to the weight set.
    ObservedSplit(ObservedSplitProbeConfig),
}

impl ProbeConfig {
    async fn build(&self, cx: &BuildContext) -> Result<Arc<dyn HealthProbe>, BuildError> {
        Ok(match self {
            ProbeConfig::Http(c) => Arc::new(c.build(cx)?),
            ProbeConfig::Elbv2(c) => Arc::new(c.build(cx).await),
            ProbeConfig::Prometheus(c) => Arc::new(c.build(cx)?),
            ProbeConfig::Webhook(c) => Arc::new(c.build(cx)?),
            ProbeConfig::CloudwatchAlarm(c) => Arc::new(c.build(cx).await?),
            ProbeConfig::CloudwatchMetric(c) => Arc::new(c.build(cx).await?),
            ProbeConfig::ObservedSplit(c) => Arc::new(c.build(cx).await?),
        })
    }

    fn validate(&self) -> Vec<FieldError> {
        match self {
            ProbeConfig::Http(c) => c.validate(),
            ProbeConfig::Elbv2(c) => c.validate(),
            ProbeConfig::Prometheus(c) => c.validate(),
            ProbeConfig::Webhook(c) => c.validate(),
            ProbeConfig::CloudwatchAlarm(c) => c.validate(),
            ProbeConfig::CloudwatchMetric(c) => c.validate(),
            ProbeConfig::ObservedSplit(c) => c.validate(),
        }
    }

    fn deployment(&self) -> Result<cutover_core::Deployment, FieldError> {
        use cutover_core::{Deployment, Statement};
        let budget = |per: Duration, times: u64| {
            let secs = per.as_secs().saturating_mul(times).saturating_add(10);
            Deployment::default().timeout(u32::try_from(secs).unwrap_or(900))
        };
        match self {
            ProbeConfig::Http(c) => Ok(budget(
                c.timeout.saturating_add(c.interval),
                u64::from(c.max_checks),
            )),
            ProbeConfig::Prometheus(c) => {
                Ok(Deployment::default().timeout(task_budget(c.measurements().budget(c.timeout))))
            }
            ProbeConfig::CloudwatchAlarm(c) => Ok(Deployment::default()
                .timeout(task_budget(c.measurements().budget(AWS_CALL)))
                .allow(Statement::new(
                    ["cloudwatch:DescribeAlarms"],
                    c.alarm_arns(),
                    "read the state of the alarms that judge green",
                ))),
            ProbeConfig::CloudwatchMetric(c) => Ok(Deployment::default()
                .timeout(task_budget(c.measurements().budget(AWS_CALL)))
                .allow(Statement::new(
                    ["cloudwatch:GetMetricData"],
                    [json!("*")],
                    "read the metrics that judge green; GetMetricData supports no resource-level \
                     permissions, so the resource must be \"*\"",
                ))),
            ProbeConfig::Webhook(c) => Ok(budget(
                c.timeout.saturating_add(c.retry_interval),
                u64::from(c.retries) + 1,
            )),
            ProbeConfig::ObservedSplit(c) => match &c.source {
                observed_split::SplitSourceConfig::Dns { .. } => Err(FieldError::new(
                    "probe.source",
                    "the dns source counts the answers of the embedded DNS server in the same process, which a \
                     Lambda function does not run: use source = { type = \"prometheus\", … } on AWS",
                )),
                observed_split::SplitSourceConfig::Prometheus { timeout, .. } => Ok(budget(
                    c.window.saturating_add(*timeout).saturating_add(*timeout),
                    u64::from(c.count),
                )),
                observed_split::SplitSourceConfig::Alb { delay, .. } => Ok(budget(
                    c.window.saturating_add(*delay).saturating_add(AWS_CALL),
                    u64::from(c.count),
                )
                .allow(Statement::new(
                    ["cloudwatch:GetMetricData"],
                    [json!("*")],
                    "read the ALB's request counts per target group; GetMetricData supports no \
                     resource-level permissions, so the resource must be \"*\"",
                ))),
            },
            ProbeConfig::Elbv2(_) => Ok(Deployment::default().allow(Statement::new(
                ["elasticloadbalancing:DescribeTargetHealth"],
                [json!("*")],
                "read the health of green's targets; DescribeTargetHealth supports no resource-level \
                 permissions, so the resource must be \"*\"",
            ))),
        }
    }
}

/// The answer of one health check: what the Choice state reads.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthReport {
    /// Whether green counts as healthy.
    pub healthy: bool,
    /// What was looked at (one entry per HTTP attempt, or per target).
    pub checks: Vec<Value>,
    /// Why, for humans.
    pub reason: String,
}

impl HealthReport {
    /// `{ "State": "healthy" | "unhealthy", "checks": [...], "reason": "…" }`.
    pub fn to_json(&self) -> Value {
        json!({
            "State": if self.healthy { "healthy" } else { "unhealthy" },
            "checks": self.checks,
            "reason": self.reason,
        })
    }
}

/// A way of judging green's health: HTTP, ELBv2, or a test double.
pub trait HealthProbe: Send + Sync + fmt::Debug {
    /// Judges health for `event` (templates in the probe's configuration read it). `Err` only
    /// when health could not be found out; unhealthy is an `Ok` report.
    fn check<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<HealthReport, StageError>>;
}

#[typetag::serde(name = "health-check")]
impl StageConfig for HealthCheckConfig {
    fn build<'a>(&'a self, cx: &'a BuildContext) -> BoxFuture<'a, Result<Arc<dyn Stage>, BuildError>> {
        Box::pin(async move {
            if let Some(e) = self.own_errors().into_iter().next() {
                return Err(BuildError::Field(e));
            }
            let probe = self.probe.build(cx).await?;
            let mut named = BTreeMap::new();
            for (name, p) in &self.probes {
                named.insert(name.clone(), p.build(cx).await?);
            }
            Ok(
                Arc::new(HealthCheck::new(probe, self.result_key.clone()).with_probes(named))
                    as Arc<dyn Stage>,
            )
        })
    }

    fn validate(&self, _cx: &ValidateContext<'_>) -> Vec<FieldError> {
        self.own_errors()
    }

    fn deployment(
        &self,
        _cx: &cutover_core::DeployContext<'_>,
    ) -> Result<cutover_core::Deployment, FieldError> {
        let mut deployment = self.probe.deployment()?;
        for (name, p) in &self.probes {
            let d = p.deployment().map_err(|e| {
                FieldError::new(e.field.replacen("probe", &format!("probes.{name}"), 1), e.message)
            })?;
            deployment.timeout_secs = deployment.timeout_secs.max(d.timeout_secs);
            deployment.statements.extend(d.statements);
        }
        Ok(deployment)
    }

    fn files(&self) -> Vec<std::path::PathBuf> {
        match &self.probe {
            ProbeConfig::Http(http) => http.ca_file.iter().cloned().collect(),
            ProbeConfig::Elbv2(_)
            | ProbeConfig::Prometheus(_)
            | ProbeConfig::Webhook(_)
            | ProbeConfig::CloudwatchAlarm(_)
            | ProbeConfig::CloudwatchMetric(_)
            | ProbeConfig::ObservedSplit(_) => Vec::new(),
        }
    }
}

analysis::measured_by_fields!(
    PrometheusProbeConfig,
    CloudWatchAlarmProbeConfig,
    CloudWatchMetricProbeConfig,
);

/// The longest one AWS call of a probe is given (the SDK's own retries included).
const AWS_CALL: std::time::Duration = std::time::Duration::from_secs(20);

/// A Task timeout in seconds for a check that may take `check`, with 10 s to spare.
fn task_budget(check: std::time::Duration) -> u32 {
    u32::try_from(check.as_secs().saturating_add(10)).unwrap_or(900)
}

impl HealthCheckConfig {
    fn own_errors(&self) -> Vec<FieldError> {
        let mut errors = self.probe.validate();
        for (name, p) in &self.probes {
            errors.extend(p.validate().into_iter().map(|e| {
                FieldError::new(e.field.replacen("probe", &format!("probes.{name}"), 1), e.message)
            }));
        }
        if self.result_key.as_deref() == Some("") {
            errors.push(FieldError::new("result_key", "must not be empty"));
        }
        errors
    }
}

/// The runtime `health-check` stage.
#[derive(Debug)]
pub struct HealthCheck {
    probe: Arc<dyn HealthProbe>,
    probes: BTreeMap<String, Arc<dyn HealthProbe>>,
    result_key: Option<String>,
}

impl HealthCheck {
    /// A stage asking `probe`.
    pub fn new(probe: Arc<dyn HealthProbe>, result_key: Option<String>) -> Self {
        Self {
            probe,
            probes: BTreeMap::new(),
            result_key,
        }
    }

    /// Also `probes`, picked by name by an input's `probe` field.
    pub fn with_probes(mut self, probes: BTreeMap<String, Arc<dyn HealthProbe>>) -> Self {
        self.probes = probes;
        self
    }

    /// The probe an event asks for: its `probe` field names one of `probes`; else `probe`.
    fn probe_for(&self, event: &Event) -> Result<&Arc<dyn HealthProbe>, StageError> {
        let asked = event
            .json()
            .ok()
            .and_then(|v| v.get("probe"))
            .and_then(Value::as_str);
        match asked {
            None => Ok(&self.probe),
            Some(name) => self.probes.get(name).ok_or_else(|| {
                StageError::permanent(format!(
                    "the input asks for probe {name:?}, which this health-check stage does not have: add \
                     probes.{name} = {{ type = \"{name}\", … }} to it (it has: {})",
                    self.probes.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
                .with_kind("HealthCheck.UnknownProbe")
            }),
        }
    }
}

impl Stage for HealthCheck {
    fn process<'a>(&'a self, mut event: Event, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let probe = match self.probe_for(&event) {
                Ok(p) => p.clone(),
                Err(e) => return Outcome::failed(e),
            };
            match probe.check(&event).await {
                Ok(report) => {
                    tracing::info!(healthy = report.healthy, reason = %report.reason, "health checked");
                    event.add_result(self.result_key.as_deref(), report.to_json());
                    next.run(event).await
                }
                Err(error) => Outcome::failed(error),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed(Result<HealthReport, StageError>);

    impl HealthProbe for Fixed {
        fn check<'a>(&'a self, _event: &'a Event) -> BoxFuture<'a, Result<HealthReport, StageError>> {
            Box::pin(std::future::ready(self.0.clone()))
        }
    }

    async fn run(probe: Fixed, key: Option<&str>) -> Outcome {
        HealthCheck::new(Arc::new(probe), key.map(str::to_owned))
            .process(Event::from_value(json!({})), Next::end())
            .await
    }

    #[tokio::test]
    async fn unhealthy_passes_with_the_state_for_a_choice() {
        let out = run(
            Fixed(Ok(HealthReport {
                healthy: false,
                checks: vec![json!({"status": 500})],
                reason: "2 consecutive checks failed".into(),
            })),
            None,
        )
        .await;
        let Outcome::Passed { context } = out else {
            panic!("unhealthy must pass, got {out}")
        };
        assert_eq!(context["State"], json!("unhealthy"));
        assert_eq!(context["checks"][0]["status"], json!(500));
    }

    #[tokio::test]
    async fn result_key_nests_and_errors_fail() {
        let out = run(
            Fixed(Ok(HealthReport {
                healthy: true,
                checks: vec![],
                reason: "ok".into(),
            })),
            Some("health"),
        )
        .await;
        let Outcome::Passed { context } = out else {
            panic!("expected a pass")
        };
        assert_eq!(context["health"]["State"], json!("healthy"));
        let out = run(
            Fixed(Err(StageError::retryable("throttled").with_kind("Throttling"))),
            None,
        )
        .await;
        assert!(out.is_retryable());
    }

    #[tokio::test]
    async fn an_input_picks_a_named_probe_and_an_unknown_one_is_named() {
        let healthy = |reason: &str| {
            Arc::new(Fixed(Ok(HealthReport {
                healthy: true,
                checks: vec![],
                reason: reason.into(),
            }))) as Arc<dyn HealthProbe>
        };
        let stage = HealthCheck::new(healthy("default"), None)
            .with_probes(BTreeMap::from([("observed-split".to_owned(), healthy("split"))]));
        let reason = |input: Value| {
            let stage = &stage;
            async move {
                match stage.process(Event::from_value(input), Next::end()).await {
                    Outcome::Passed { context } => Ok(context["reason"].clone()),
                    Outcome::Failed { error, .. } => Err(error.message),
                    other => panic!("{other}"),
                }
            }
        };
        assert_eq!(reason(json!({"weight": 10})).await, Ok(json!("default")));
        assert_eq!(
            reason(json!({"weight": 10, "probe": "observed-split"})).await,
            Ok(json!("split"))
        );
        let e = reason(json!({"probe": "latency"})).await.unwrap_err();
        assert!(
            e.contains("probes.latency") && e.contains("it has: observed-split"),
            "{e}"
        );
    }

    #[test]
    fn an_embedded_only_named_probe_is_refused_for_lambda_naming_it() {
        let cfg: HealthCheckConfig = toml::from_str(
            "probe = { type = \"http\", url = \"http://g/\" }\n\
             probes = { observed-split = { type = \"observed-split\", source = { type = \"dns\", record = \"www.catsndogs.lol\" } } }",
        )
        .unwrap();
        let cx = deploy_cx();
        let e = cfg.deployment(&cx).unwrap_err();
        assert_eq!(e.field, "probes.observed-split.source");
        assert!(e.message.contains("type = \"prometheus\""), "{}", e.message);
    }

    /// The deployment context of the first stage of pipeline `health-check`.
    fn deploy_cx() -> cutover_core::DeployContext<'static> {
        cutover_core::DeployContext {
            file: "cutover.toml",
            base_dir: std::path::Path::new("."),
            pipeline: "health-check",
            stage_index: 1,
            stage_name: "health-check",
            pipelines: &[],
            service: None,
        }
    }

    #[test]
    fn every_config_round_trips_through_toml() {
        for text in [
            "probe = { type = \"http\", url = \"http://127.0.0.2:8080/health\" }",
            "result_key = \"health\"\nprobe = { type = \"http\", url = \"{endpoint}/health\", expect_status = \"200,204,300-302\", body_contains = \"ok\", timeout = \"500ms\", interval = \"1s\", healthy_threshold = 2, unhealthy_threshold = 3, max_checks = 5 }",
            "probe = { type = \"elbv2\", target_group_arn = \"arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/green/0123456789abcdef\", min_healthy_percent = 50 }",
            "probe = { type = \"http\", url = \"http://g/\" }\nprobes = { observed-split = { type = \"observed-split\", source = { type = \"dns\", record = \"www.catsndogs.lol\" }, window = \"2s\", tolerance = 3.0 } }",
        ] {
            let cfg: HealthCheckConfig = toml::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert!(
                cfg.validate(&ValidateContext {
                    base_dir: std::path::Path::new("."),
                    pipelines: &[]
                })
                .is_empty(),
                "{text}"
            );
            let again = toml::to_string(&cfg).unwrap();
            let back: HealthCheckConfig = toml::from_str(&again).unwrap_or_else(|e| panic!("{again}: {e}"));
            assert_eq!(
                serde_json::to_value(&cfg).unwrap(),
                serde_json::to_value(&back).unwrap(),
                "{again}"
            );
            let boxed: Box<dyn StageConfig> =
                toml::from_str(&format!("type = \"health-check\"\n{text}")).unwrap();
            assert!(format!("{boxed:?}").contains("HealthCheckConfig"));
        }
    }

    #[test]
    fn cloudwatch_probes_get_least_privilege_and_a_timeout_covering_every_measurement() {
        let cx = deploy_cx();
        let alarm: HealthCheckConfig = toml::from_str(
            "probe = { type = \"cloudwatch-alarm\", alarms = [\"cats-5xx\"], count = 3, interval = \"1m\" }",
        )
        .unwrap();
        let d = alarm.deployment(&cx).unwrap();
        assert_eq!(d.statements.len(), 1);
        assert_eq!(d.statements[0].actions, ["cloudwatch:DescribeAlarms"]);
        let arn = d.statements[0].resources[0]["Fn::Sub"].as_str().unwrap();
        assert!(arn.ends_with(":alarm:cats-5xx"), "{arn}");
        assert!(
            d.timeout_secs >= 3 * 60,
            "three measurements a minute apart: {}",
            d.timeout_secs
        );
        let metric: HealthCheckConfig = toml::from_str(
            "probe = { type = \"cloudwatch-metric\", condition = \"result < 1\", queries = [{ id = \"e\", expression = \"1\" }] }",
        )
        .unwrap();
        let d = metric.deployment(&cx).unwrap();
        assert_eq!(d.statements[0].actions, ["cloudwatch:GetMetricData"]);
        assert_eq!(d.statements[0].resources, [json!("*")]);
    }

    #[test]
    fn bad_configs_name_the_field() {
        for (text, field) in [
            ("probe = { type = \"http\", url = \"ftp://x/\" }", "probe.url"),
            (
                "probe = { type = \"http\", url = \"http://x/\", expect_status = \"2xx\" }",
                "probe.expect_status",
            ),
            (
                "probe = { type = \"http\", url = \"http://x/\", healthy_threshold = 0 }",
                "probe.healthy_threshold",
            ),
            (
                "probe = { type = \"http\", url = \"http://x/\", healthy_threshold = 5, max_checks = 3 }",
                "probe.max_checks",
            ),
            (
                "probe = { type = \"elbv2\", target_group_arn = \"tg\", min_healthy_percent = 101 }",
                "probe.min_healthy_percent",
            ),
        ] {
            let cfg: HealthCheckConfig = toml::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            let errors = cfg.validate(&ValidateContext {
                base_dir: std::path::Path::new("."),
                pipelines: &[],
            });
            assert_eq!(
                errors.first().map(|e| e.field.as_str()),
                Some(field),
                "{text}: {errors:?}"
            );
        }
        let err = toml::from_str::<HealthCheckConfig>(
            "probe = { type = \"http\", url = \"http://x/\", tiemout = \"1s\" }",
        )
        .unwrap_err();
        assert!(err.to_string().contains("tiemout"), "{err}");
    }
}
