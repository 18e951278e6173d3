//! The `prometheus` probe: judges green by a metric — a PromQL instant query over Prometheus's
//! HTTP API, measured `count` times `interval` apart, each measurement held to a condition.
//!
//! ```toml
//! probe = { type = "prometheus", address = "http://127.0.0.1:9090", query = "sum(rate(http_requests_total{{version=\"green\",code=~\"5..\"}}[1m])) / sum(rate(http_requests_total{{version=\"green\"}}[1m]))", condition = "result < 0.01", count = 3, interval = "10s", failure_limit = 0, inconclusive_limit = 1 }
//! ```
//!
//! A measurement *passes* when every sample of the answer meets the condition, *fails* when one
//! does not, and is *inconclusive* when there is no number (an empty vector, NaN, a query
//! error). Green is healthy when the failures stay within `failure_limit` and the inconclusive
//! measurements within `inconclusive_limit` (Argo Rollouts' analysis model); every measurement
//! goes into the report's `checks`, and so into the rollout's history. `query` is a template of
//! the Task input (`{weight}`, `{execution}`): PromQL's own braces are written doubled
//! (`http_requests_total{{code="500"}}`).

use std::sync::Arc;
use std::time::Duration;

use cutover_core::{BoxFuture, BuildContext, BuildError, Clock, Event, FieldError, StageError, Template};
use hyper::{Method, Uri};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use super::analysis::Condition;
use super::analysis::{self, Measured};
use super::http::Tls;
use super::{HealthProbe, HealthReport, client};

/// Configuration of `probe = { type = "prometheus", … }`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusProbeConfig {
    /// The Prometheus server: `http://127.0.0.1:9090`.
    pub address: String,
    /// The PromQL instant query; a template of the Task input (`{{`/`}}` for PromQL's braces).
    pub query: Template,
    /// What each measurement must meet: `result < 0.01`, `result >= 0.99` (operators `<`,
    /// `<=`, `>`, `>=`, `==`, `!=`; every sample of a vector).
    pub condition: String,
    /// Measurements per check.
    #[serde(default = "analysis::one")]
    pub count: u32,
    /// Time between measurements.
    #[serde(default = "analysis::default_interval", with = "crate::duration")]
    pub interval: Duration,
    /// Failed measurements tolerated.
    #[serde(default)]
    pub failure_limit: u32,
    /// Measurements without a number tolerated.
    #[serde(default)]
    pub inconclusive_limit: u32,
    /// How long one query may take.
    #[serde(default = "default_timeout", with = "crate::duration")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

impl PrometheusProbeConfig {
    pub(super) fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if let Err(e) = Condition::parse(&self.condition) {
            errors.push(FieldError::new("probe.condition", e));
        }
        if self.address.parse::<Uri>().map_or(true, |u| u.host().is_none()) {
            errors.push(FieldError::new(
                "probe.address",
                format!("{:?} is not a URL like http://127.0.0.1:9090", self.address),
            ));
        }
        errors.extend(self.measurements().validate("probe"));
        errors
    }

    pub(super) fn build(&self, cx: &BuildContext) -> Result<PrometheusProbe, BuildError> {
        if let Some(e) = self.validate().into_iter().next() {
            return Err(BuildError::Field(e));
        }
        let condition =
            Condition::parse(&self.condition).map_err(|e| BuildError::field("probe.condition", e))?;
        Ok(PrometheusProbe {
            config: self.clone(),
            condition,
            clock: cx.clock(),
            tls: Tls::new(None),
        })
    }
}

/// The Prometheus [`HealthProbe`].
#[derive(Debug)]
pub struct PrometheusProbe {
    config: PrometheusProbeConfig,
    condition: Condition,
    clock: Arc<dyn Clock>,
    tls: Tls,
}

/// One measurement: the numbers, or why there are none.
fn numbers(answer: &Value) -> Result<Vec<f64>, String> {
    if answer["status"] != "success" {
        return Err(format!(
            "query failed: {}",
            answer["error"].as_str().unwrap_or("no error message")
        ));
    }
    let data = &answer["data"];
    let sample = |v: &Value| {
        v.get(1)
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<f64>().ok())
    };
    let values: Vec<Option<f64>> = match data["resultType"].as_str() {
        Some("scalar") => vec![sample(&data["result"])],
        Some("vector") => data["result"]
            .as_array()
            .map(|r| r.iter().map(|s| sample(&s["value"])).collect())
            .unwrap_or_default(),
        other => {
            return Err(format!(
                "a {} answer: use an instant vector or scalar query",
                other.unwrap_or("?")
            ));
        }
    };
    let values: Option<Vec<f64>> = values.into_iter().collect();
    match values {
        Some(v) if !v.is_empty() && v.iter().all(|n| n.is_finite()) => Ok(v),
        Some(v) if v.is_empty() => Err("no samples (an empty vector)".into()),
        _ => Err("no number (NaN or not a sample)".into()),
    }
}

/// The URL of the instant query `query` on the Prometheus at `address`.
fn query_uri(address: &str, query: &str) -> Result<Uri, String> {
    let mut encoded = String::new();
    for b in query.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    let base = address.trim_end_matches('/');
    format!("{base}/api/v1/query?query={encoded}")
        .parse()
        .map_err(|e| format!("the query URL: {e}"))
}

/// One instant query: the numbers of its answer, or why there are none. Shared with the
/// `observed-split` probe's Prometheus source.
pub(super) async fn instant_query(
    tls: &Tls,
    address: &str,
    query: &str,
    timeout: Duration,
) -> Result<Vec<f64>, String> {
    let uri = query_uri(address, query)?;
    let (status, body) = client::send(tls, Method::GET, &uri, None, timeout).await?;
    let answer: Value =
        serde_json::from_slice(&body).map_err(|e| format!("HTTP {status}: not a Prometheus answer: {e}"))?;
    numbers(&answer)
}

impl HealthProbe for PrometheusProbe {
    fn check<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<HealthReport, StageError>> {
        Box::pin(async move {
            let query = self
                .config
                .query
                .render(event)
                .map_err(|e| StageError::permanent(format!("probe.query: {e}")))?;
            query_uri(&self.config.address, &query).map_err(StageError::permanent)?;
            let measurements = self.config.measurements();
            Ok(measurements
                .run(&self.clock, &self.config.condition, || async {
                    let c = &self.config;
                    match instant_query(&self.tls, &c.address, &query, c.timeout).await {
                        Ok(values) => Measured::values(&self.condition, values),
                        Err(error) => Measured::Inconclusive(error),
                    }
                })
                .await)
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn answers_give_numbers_or_say_why_not() {
        let vector = json!({"status": "success", "data": {"resultType": "vector",
            "result": [{"metric": {}, "value": [1.0, "0.25"]}, {"metric": {}, "value": [1.0, "0.5"]}]}});
        assert_eq!(numbers(&vector).unwrap(), vec![0.25, 0.5]);
        let scalar = json!({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "3"]}});
        assert_eq!(numbers(&scalar).unwrap(), vec![3.0]);
        let empty = json!({"status": "success", "data": {"resultType": "vector", "result": []}});
        assert!(numbers(&empty).unwrap_err().contains("empty"));
        let nan = json!({"status": "success", "data": {"resultType": "vector", "result": [{"value": [1.0, "NaN"]}]}});
        assert!(numbers(&nan).unwrap_err().contains("NaN"));
        let error = json!({"status": "error", "error": "parse error"});
        assert!(numbers(&error).unwrap_err().contains("parse error"));
    }
}
