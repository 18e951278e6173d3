//! The ELBv2 probe: green's target group health, read with `DescribeTargetHealth`.
//!
//! Every registered target counts (the seed looked at the first one only). Targets being
//! deregistered (`draining`) are left out; of the rest, at least `min_healthy_percent` must be
//! `healthy` — `initial`, `unhealthy`, `unused` and `unavailable` targets are not. A target
//! group with no targets is unhealthy. The load balancer applies its own thresholds, so one
//! call is one verdict.
//!
//! ```toml
//! probe = { type = "elbv2", target_group_arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/green/0123456789abcdef", min_healthy_percent = 100 }
//! ```

/// The SDK crate [`Elbv2Probe::new`] takes a client of.
pub use aws_sdk_elasticloadbalancingv2;
use cutover_core::{BoxFuture, BuildContext, Event, FieldError, StageError, Template};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{HealthProbe, HealthReport};
use crate::aws::aws_error;

/// Configuration of `probe = { type = "elbv2", … }`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Elbv2ProbeConfig {
    /// The green target group's ARN; a template, so `{target_group_arn}` reads the Task input.
    pub target_group_arn: Template,
    /// The share of targets (draining ones left out) that must be healthy, 0–100.
    #[serde(default = "default_min_healthy_percent")]
    pub min_healthy_percent: u8,
}

fn default_min_healthy_percent() -> u8 {
    100
}

impl Elbv2ProbeConfig {
    pub(super) fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.target_group_arn.as_str().trim().is_empty() {
            errors.push(FieldError::new("probe.target_group_arn", "must not be empty"));
        }
        if self.min_healthy_percent > 100 {
            errors.push(FieldError::new(
                "probe.min_healthy_percent",
                format!("must be between 0 and 100, not {}", self.min_healthy_percent),
            ));
        }
        errors
    }

    pub(super) async fn build(&self, cx: &BuildContext) -> Elbv2Probe {
        Elbv2Probe {
            client: aws_sdk_elasticloadbalancingv2::Client::new(cx.aws_config().await),
            config: self.clone(),
        }
    }
}

/// One target's health as `DescribeTargetHealth` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetState {
    /// Instance id, IP address or Lambda ARN.
    pub id: String,
    /// Its port, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// `healthy`, `initial`, `unhealthy`, `unused`, `draining`, `unavailable`, …
    pub state: String,
    /// The reason code (`Target.ResponseCodeMismatch`), if not healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The reason in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The verdict for a target group's targets.
pub fn evaluate(target_group: &str, targets: &[TargetState], min_healthy_percent: u8) -> HealthReport {
    let checks = targets.iter().map(|t| json!(t)).collect();
    let counted: Vec<&TargetState> = targets.iter().filter(|t| t.state != "draining").collect();
    let healthy = counted.iter().filter(|t| t.state == "healthy").count();
    if counted.is_empty() {
        return HealthReport {
            healthy: false,
            checks,
            reason: format!("{target_group} has no registered targets"),
        };
    }
    // Whole-number percentages, rounded down, so 2 of 3 is 66 % and does not meet 67.
    let percent = healthy * 100 / counted.len();
    let ok = percent >= usize::from(min_healthy_percent);
    let mut reason = format!(
        "{healthy} of {} targets healthy ({percent} %, need {min_healthy_percent} %)",
        counted.len()
    );
    let not_healthy: Vec<String> = counted
        .iter()
        .filter(|t| t.state != "healthy")
        .map(|t| match &t.reason {
            Some(r) => format!("{} {} ({r})", t.id, t.state),
            None => format!("{} {}", t.id, t.state),
        })
        .collect();
    if !not_healthy.is_empty() {
        reason.push_str("; ");
        reason.push_str(&not_healthy.join(", "));
    }
    HealthReport {
        healthy: ok,
        checks,
        reason,
    }
}

/// The ELBv2 [`HealthProbe`].
#[derive(Debug)]
pub struct Elbv2Probe {
    client: aws_sdk_elasticloadbalancingv2::Client,
    config: Elbv2ProbeConfig,
}

impl Elbv2Probe {
    /// A probe for `config` calling `client`.
    pub fn new(client: aws_sdk_elasticloadbalancingv2::Client, config: Elbv2ProbeConfig) -> Self {
        Self { client, config }
    }
}

impl Elbv2Probe {
    /// Every target of the group `arn` with its health, as `DescribeTargetHealth` reports it.
    async fn describe(&self, arn: &str) -> Result<Vec<TargetState>, StageError> {
        let out = self
            .client
            .describe_target_health()
            .target_group_arn(arn)
            .send()
            .await
            .map_err(|e| {
                let mut error = aws_error("DescribeTargetHealth", &e);
                if matches!(
                    error.kind.as_deref(),
                    Some("TargetGroupNotFound" | "ValidationError")
                ) {
                    error.message = format!("field \"probe.target_group_arn\": {}", error.message);
                    error.kind = Some(format!("HealthCheck.{}", error.kind.unwrap_or_default()));
                }
                error
            })?;
        Ok(out
            .target_health_descriptions()
            .iter()
            .map(|d| {
                let health = d.target_health();
                TargetState {
                    id: d.target().and_then(|t| t.id()).unwrap_or_default().to_owned(),
                    port: d.target().and_then(|t| t.port()),
                    state: health
                        .and_then(|h| h.state())
                        .map_or_else(|| "unknown".to_owned(), |s| s.as_str().to_owned()),
                    reason: health.and_then(|h| h.reason()).map(|r| r.as_str().to_owned()),
                    description: health.and_then(|h| h.description()).map(str::to_owned),
                }
            })
            .collect())
    }
}

impl HealthProbe for Elbv2Probe {
    fn check<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<HealthReport, StageError>> {
        Box::pin(async move {
            let arn = self.config.target_group_arn.render(event).map_err(|e| {
                StageError::permanent(format!("field \"probe.target_group_arn\": {e}"))
                    .with_kind("HealthCheck.InvalidInput")
            })?;
            let targets = self.describe(&arn).await?;
            Ok(evaluate(&arn, &targets, self.config.min_healthy_percent))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `DescribeTargetHealth` response as the service sends it (Query protocol XML, the shape
    /// of the API reference's example), with an unhealthy, a healthy, a draining and an initial
    /// target.
    const RECORDED: &str = r#"<DescribeTargetHealthResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/">
  <DescribeTargetHealthResult>
    <TargetHealthDescriptions>
      <member>
        <HealthCheckPort>80</HealthCheckPort>
        <TargetHealth>
          <State>unhealthy</State>
          <Reason>Target.ResponseCodeMismatch</Reason>
          <Description>Health checks failed with these codes: [404]</Description>
        </TargetHealth>
        <Target><Port>80</Port><Id>i-0f76fade</Id></Target>
      </member>
      <member>
        <HealthCheckPort>80</HealthCheckPort>
        <TargetHealth><State>healthy</State></TargetHealth>
        <Target><Port>80</Port><Id>i-0f76fade435676abd</Id></Target>
      </member>
      <member>
        <HealthCheckPort>80</HealthCheckPort>
        <TargetHealth><State>draining</State><Reason>Target.DeregistrationInProgress</Reason></TargetHealth>
        <Target><Port>80</Port><Id>i-0aa11bb22cc33dd44</Id></Target>
      </member>
      <member>
        <HealthCheckPort>80</HealthCheckPort>
        <TargetHealth><State>initial</State><Reason>Elb.RegistrationInProgress</Reason></TargetHealth>
        <Target><Port>80</Port><Id>i-0123456789abcdef0</Id></Target>
      </member>
    </TargetHealthDescriptions>
  </DescribeTargetHealthResult>
  <ResponseMetadata><RequestId>c534f810-f389-11e5-9192-3fff33344cfa</RequestId></ResponseMetadata>
</DescribeTargetHealthResponse>"#;

    /// The recorded response read by the SDK and the probe, from a loopback server.
    async fn recorded() -> Vec<TargetState> {
        let (url, requests) = crate::aws::canned::serve("200 OK", "text/xml", RECORDED).await;
        let cx = cutover_core::BuildContext::new("unused").with_aws(cutover_core::AwsSettings {
            max_attempts: Some(1),
            ..cutover_core::AwsSettings::emulator(url)
        });
        let probe = Elbv2Probe::new(
            aws_sdk_elasticloadbalancingv2::Client::new(cx.aws_config().await),
            Elbv2ProbeConfig {
                target_group_arn: "tg/green".parse().unwrap(),
                min_healthy_percent: 100,
            },
        );
        let targets = probe.describe("tg/green").await.unwrap();
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 1);
        targets
    }

    #[tokio::test]
    async fn every_target_counts_not_only_the_first() {
        let targets = recorded().await;
        assert_eq!(targets.len(), 4);
        assert_eq!(targets[0].port, Some(80));
        assert_eq!(
            targets[0].description.as_deref(),
            Some("Health checks failed with these codes: [404]")
        );
        let report = evaluate("tg/green", &targets, 100);
        assert!(!report.healthy);
        assert!(
            report.reason.starts_with("1 of 3 targets healthy (33 %"),
            "{}",
            report.reason
        );
        assert!(
            report
                .reason
                .contains("i-0f76fade unhealthy (Target.ResponseCodeMismatch)")
        );
        assert!(report.reason.contains("i-0123456789abcdef0 initial"));
        assert_eq!(report.checks.len(), 4, "every target is reported, draining too");
        assert!(evaluate("tg/green", &targets, 33).healthy);
        assert!(!evaluate("tg/green", &targets, 34).healthy);
        // The seed looked at targets[0] only: a healthy first target hid the others.
        let mut first_healthy = targets.clone();
        first_healthy.swap(0, 1);
        assert!(!evaluate("tg/green", &first_healthy, 100).healthy);
    }

    #[tokio::test]
    async fn all_healthy_is_healthy_and_none_is_not() {
        let recorded = recorded().await;
        let mut targets = recorded.clone();
        for t in &mut targets {
            t.state = "healthy".into();
        }
        assert!(evaluate("tg", &targets, 100).healthy);
        let report = evaluate("tg", &[], 0);
        assert!(!report.healthy);
        assert!(report.reason.contains("no registered targets"));
        let draining_only = vec![recorded[2].clone()];
        assert!(!evaluate("tg", &draining_only, 0).healthy);
    }
}
