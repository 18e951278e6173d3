//! The `webhook` probe: POSTs the rollout context (the Task input: weight, execution, what the
//! start-state-machine input carried) to a URL as JSON; a 2xx answer is healthy. A gate a
//! team's own smoke or load test stands behind (Flagger's webhooks).
//!
//! ```toml
//! probe = { type = "webhook", url = "http://smoke-tests.internal/run", timeout = "60s", retries = 2 }
//! ```
//!
//! Any other status is unhealthy at once (the body's first 200 characters are the reason);
//! no answer at all (connection refused, timeout) is tried again up to `retries` times,
//! `retry_interval` apart, then is unhealthy.

use std::sync::Arc;
use std::time::Duration;

use cutover_core::{BoxFuture, BuildContext, BuildError, Clock, Event, FieldError, StageError, Template};
use hyper::{Method, Uri};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::http::Tls;
use super::{HealthProbe, HealthReport, client};

/// Configuration of `probe = { type = "webhook", … }`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookProbeConfig {
    /// Where to POST; a template of the Task input.
    pub url: Template,
    /// How long the hook may take to answer.
    #[serde(default = "default_timeout", with = "crate::duration")]
    pub timeout: Duration,
    /// Further attempts after no answer.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Time between attempts.
    #[serde(default = "default_retry_interval", with = "crate::duration")]
    pub retry_interval: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_retries() -> u32 {
    2
}
fn default_retry_interval() -> Duration {
    Duration::from_secs(2)
}

impl WebhookProbeConfig {
    pub(super) fn validate(&self) -> Vec<FieldError> {
        let text = self.url.as_str();
        if !text.contains('{') && text.parse::<Uri>().map_or(true, |u| u.host().is_none()) {
            return vec![FieldError::new(
                "probe.url",
                format!("{text:?} is not a URL like http://smoke-tests.internal/run"),
            )];
        }
        Vec::new()
    }

    pub(super) fn build(&self, cx: &BuildContext) -> Result<WebhookProbe, BuildError> {
        if let Some(e) = self.validate().into_iter().next() {
            return Err(BuildError::Field(e));
        }
        Ok(WebhookProbe {
            config: self.clone(),
            clock: cx.clock(),
            tls: Tls::new(None),
        })
    }
}

/// The webhook [`HealthProbe`].
#[derive(Debug)]
pub struct WebhookProbe {
    config: WebhookProbeConfig,
    clock: Arc<dyn Clock>,
    tls: Tls,
}

impl HealthProbe for WebhookProbe {
    fn check<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<HealthReport, StageError>> {
        Box::pin(async move {
            let url = self
                .config
                .url
                .render(event)
                .map_err(|e| StageError::permanent(format!("probe.url: {e}")))?;
            let uri: Uri = url
                .parse()
                .map_err(|e| StageError::permanent(format!("probe.url {url:?}: {e}")))?;
            let body = serde_json::to_vec(event.json().map_err(|e| StageError::permanent(e.to_string()))?)
                .map_err(|e| StageError::permanent(e.to_string()))?;
            let mut checks = Vec::new();
            for attempt in 0..=self.config.retries {
                if attempt > 0 {
                    self.clock.sleep(self.config.retry_interval).await;
                }
                match client::send(
                    &self.tls,
                    Method::POST,
                    &uri,
                    Some(body.clone()),
                    self.config.timeout,
                )
                .await
                {
                    Ok((status, answer)) => {
                        let healthy = (200..300).contains(&status);
                        let said: String = String::from_utf8_lossy(&answer).chars().take(200).collect();
                        checks.push(json!({"attempt": attempt + 1, "status": status, "passed": healthy}));
                        let reason = if healthy {
                            format!("{url} answered {status}")
                        } else {
                            format!("{url} answered {status}: {}", said.trim())
                        };
                        return Ok(HealthReport {
                            healthy,
                            checks,
                            reason,
                        });
                    }
                    Err(error) => {
                        checks.push(json!({"attempt": attempt + 1, "passed": false, "error": error}))
                    }
                }
            }
            let last = checks
                .last()
                .and_then(|c| c["error"].as_str())
                .unwrap_or_default()
                .to_owned();
            Ok(HealthReport {
                healthy: false,
                reason: format!("{url} did not answer in {} attempts: {last}", checks.len()),
                checks,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_core::ManualClock;

    use crate::test_support::http_receiver as server;

    fn probe(url: &str) -> WebhookProbe {
        let config: WebhookProbeConfig = toml::from_str(&format!("url = \"{url}\"\nretries = 1")).unwrap();
        let cx =
            BuildContext::default().with_clock(Arc::new(ManualClock::new(std::time::SystemTime::UNIX_EPOCH)));
        config.build(&cx).unwrap()
    }

    #[tokio::test]
    async fn a_2xx_is_healthy_and_gets_the_rollout_context() {
        let (url, seen) = server(vec![204]);
        let event = Event::from_value(json!({"weight": 10, "execution": "cats-3"}));
        let report = probe(&url).check(&event).await.unwrap();
        assert!(report.healthy, "{report:?}");
        let request = seen.recv().unwrap();
        assert!(request.starts_with("POST /hook"), "{request}");
        assert!(
            request.contains("application/json") && request.contains("\"execution\":\"cats-3\""),
            "{request}"
        );
    }

    #[tokio::test]
    async fn other_statuses_and_silence_are_unhealthy_with_the_reason() {
        let (url, _seen) = server(vec![500]);
        let report = probe(&url).check(&Event::from_value(json!({}))).await.unwrap();
        assert!(!report.healthy);
        assert!(report.reason.contains("answered 500: nope"), "{}", report.reason);

        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let report = probe(&format!("http://{closed}/hook"))
            .check(&Event::from_value(json!({})))
            .await
            .unwrap();
        assert!(!report.healthy);
        assert!(
            report.reason.contains("did not answer in 2 attempts"),
            "{}",
            report.reason
        );
    }
}
