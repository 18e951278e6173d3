//! The CloudWatch probes: green judged by CloudWatch alarms or by CloudWatch metrics.
//!
//! - `cloudwatch-alarm` reads the named alarms (metric and composite) with `DescribeAlarms`:
//!   a measurement fails when one is in `ALARM`, is inconclusive when one has
//!   `INSUFFICIENT_DATA`, and passes when all are `OK`. A named alarm that does not exist is an
//!   error, not a verdict: the check cannot find out.
//! - `cloudwatch-metric` runs `GetMetricData` over the last `window` (metric queries and metric
//!   math, as in the API) and holds the newest value of every returned series to `condition`
//!   (`result < 0.01`). A series with no data point in the window is inconclusive.
//!
//! Both take `count` measurements `interval` apart with `failure_limit` and
//! `inconclusive_limit`, like the `prometheus` probe ([`super::analysis`]). Alarm names,
//! dimension values and expressions are templates of the Task input (`{target_group}`).
//!
//! ```toml
//! probe = { type = "cloudwatch-alarm", alarms = ["catsndogs-green-5xx", "catsndogs-green-latency"], count = 3, interval = "1m" }
//!
//! [pipelines.health-check.stages.probe]
//! type = "cloudwatch-metric"
//! condition = "result < 0.01"
//! window = "5m"
//! queries = [
//!   { id = "errors", return_data = false, metric = { namespace = "AWS/ApplicationELB", name = "HTTPCode_Target_5XX_Count", stat = "Sum", period = "1m", dimensions = { TargetGroup = "{target_group}", LoadBalancer = "app/catsndogs/0123456789abcdef" } } },
//!   { id = "requests", return_data = false, metric = { namespace = "AWS/ApplicationELB", name = "RequestCount", stat = "Sum", period = "1m", dimensions = { TargetGroup = "{target_group}", LoadBalancer = "app/catsndogs/0123456789abcdef" } } },
//!   { id = "error_rate", expression = "errors / requests" },
//! ]
//! ```
//!
//! The current SDK speaks CloudWatch's Smithy RPC v2 CBOR protocol; the tests answer it from a
//! loopback server speaking that protocol with responses shaped as the API reference documents.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The SDK crate the CloudWatch probes call.
pub use aws_sdk_cloudwatch;
use aws_sdk_cloudwatch::types::{
    AlarmType, Dimension, Metric, MetricDataQuery, MetricStat, ScanBy, StateValue, StatusCode,
};
use aws_smithy_types::DateTime;
use cutover_core::{BoxFuture, BuildContext, BuildError, Clock, Event, FieldError, StageError, Template};
use serde::{Deserialize, Serialize};
use serde_json::{Map, json};

use super::analysis::{self, Condition, Measured};
use super::{HealthProbe, HealthReport};
use crate::aws::aws_error;

/// Configuration of `probe = { type = "cloudwatch-alarm", … }`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudWatchAlarmProbeConfig {
    /// The alarms (metric or composite) that must not be in `ALARM`; each a template.
    pub alarms: Vec<Template>,
    /// Measurements per check.
    #[serde(default = "analysis::one")]
    pub count: u32,
    /// Time between measurements.
    #[serde(default = "analysis::default_interval", with = "crate::duration")]
    pub interval: Duration,
    /// Measurements with an alarm in `ALARM` tolerated.
    #[serde(default)]
    pub failure_limit: u32,
    /// Measurements with an alarm in `INSUFFICIENT_DATA` tolerated.
    #[serde(default)]
    pub inconclusive_limit: u32,
}

/// Configuration of `probe = { type = "cloudwatch-metric", … }`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudWatchMetricProbeConfig {
    /// The `GetMetricData` queries: metrics and metric-math expressions.
    pub queries: Vec<MetricQueryConfig>,
    /// What the newest value of every returned series must meet: `result < 0.01` (operators
    /// `<`, `<=`, `>`, `>=`, `==`, `!=`).
    pub condition: String,
    /// How far back each measurement looks.
    #[serde(default = "default_window", with = "crate::duration")]
    pub window: Duration,
    /// Measurements per check.
    #[serde(default = "analysis::one")]
    pub count: u32,
    /// Time between measurements.
    #[serde(default = "analysis::default_interval", with = "crate::duration")]
    pub interval: Duration,
    /// Failed measurements tolerated.
    #[serde(default)]
    pub failure_limit: u32,
    /// Measurements without a data point tolerated.
    #[serde(default)]
    pub inconclusive_limit: u32,
}

fn default_window() -> Duration {
    Duration::from_secs(300)
}

/// One `MetricDataQuery`: a metric (`metric = { … }`) or an expression.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricQueryConfig {
    /// The query's id: starts with a lower-case letter; letters, digits and `_`.
    pub id: String,
    /// A metric-math expression over other queries' ids (`errors / requests`); a template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<Template>,
    /// A metric and its statistic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<MetricStatConfig>,
    /// Whether this series is judged (`false` for the inputs of an expression).
    #[serde(default = "yes")]
    pub return_data: bool,
}

fn yes() -> bool {
    true
}

/// A metric, its dimensions, statistic and period.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricStatConfig {
    /// `AWS/ApplicationELB`.
    pub namespace: String,
    /// `HTTPCode_Target_5XX_Count`.
    pub name: String,
    /// Dimension name → value (a template).
    #[serde(default)]
    pub dimensions: BTreeMap<String, Template>,
    /// `Sum`, `Average`, `Maximum`, `p99`, …
    pub stat: String,
    /// The period of each data point: 1, 5, 10, 30 seconds or a multiple of a minute.
    #[serde(default = "default_period", with = "crate::duration")]
    pub period: Duration,
}

fn default_period() -> Duration {
    Duration::from_secs(60)
}

impl CloudWatchAlarmProbeConfig {
    pub(super) fn validate(&self) -> Vec<FieldError> {
        let mut errors = self.measurements().validate("probe");
        if self.alarms.is_empty() {
            errors.push(FieldError::new(
                "probe.alarms",
                "name at least one alarm: alarms = [\"my-service-5xx\"]",
            ));
        }
        if self.alarms.len() > 100 {
            errors.push(FieldError::new(
                "probe.alarms",
                "DescribeAlarms reads at most 100 alarms; use a composite alarm over them",
            ));
        }
        for (i, alarm) in self.alarms.iter().enumerate() {
            if alarm.as_str().trim().is_empty() {
                errors.push(FieldError::new(format!("probe.alarms[{i}]"), "must not be empty"));
            }
        }
        errors
    }

    pub(super) async fn build(&self, cx: &BuildContext) -> Result<CloudWatchAlarmProbe, BuildError> {
        if let Some(e) = self.validate().into_iter().next() {
            return Err(BuildError::Field(e));
        }
        Ok(CloudWatchAlarmProbe {
            client: aws_sdk_cloudwatch::Client::new(cx.aws_config().await),
            config: self.clone(),
            clock: cx.clock(),
        })
    }

    /// The alarms' ARNs for the IAM policy: named ones exactly, templated ones by `alarm:*`.
    pub(super) fn alarm_arns(&self) -> Vec<serde_json::Value> {
        let arn = |name: &str| {
            json!({"Fn::Sub": format!(
                "arn:${{AWS::Partition}}:cloudwatch:${{AWS::Region}}:${{AWS::AccountId}}:alarm:{name}"
            )})
        };
        if self.alarms.iter().any(|a| a.as_str().contains('{')) {
            return vec![arn("*")];
        }
        self.alarms.iter().map(|a| arn(a.as_str())).collect()
    }
}

impl CloudWatchMetricProbeConfig {
    pub(super) fn validate(&self) -> Vec<FieldError> {
        let mut errors = self.measurements().validate("probe");
        if let Err(e) = Condition::parse(&self.condition) {
            errors.push(FieldError::new("probe.condition", e));
        }
        if self.queries.is_empty() {
            errors.push(FieldError::new(
                "probe.queries",
                "name at least one query: queries = [{ id = \"errors\", metric = { … } }]",
            ));
        }
        if !self.queries.iter().any(|q| q.return_data) {
            errors.push(FieldError::new(
                "probe.queries",
                "no query has return_data = true: nothing would be judged",
            ));
        }
        if self.window < Duration::from_secs(60) {
            errors.push(FieldError::new(
                "probe.window",
                "must be at least 1m, so a one-minute data point can fall into it",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, query) in self.queries.iter().enumerate() {
            let field = |name: &str| format!("probe.queries[{i}].{name}");
            if !valid_id(&query.id) {
                errors.push(FieldError::new(
                    field("id"),
                    format!(
                        "{:?}: start with a lower-case letter, then letters, digits or _",
                        query.id
                    ),
                ));
            } else if !seen.insert(query.id.as_str()) {
                errors.push(FieldError::new(
                    field("id"),
                    format!("{:?} is used twice", query.id),
                ));
            }
            match (&query.expression, &query.metric) {
                (Some(_), Some(_)) | (None, None) => errors.push(FieldError::new(
                    field("metric"),
                    "give exactly one of `metric = { … }` and `expression = \"…\"`",
                )),
                (None, Some(m)) => errors.extend(m.validate(&field("metric"))),
                (Some(_), None) => {}
            }
        }
        errors
    }

    pub(super) async fn build(&self, cx: &BuildContext) -> Result<CloudWatchMetricProbe, BuildError> {
        if let Some(e) = self.validate().into_iter().next() {
            return Err(BuildError::Field(e));
        }
        let condition =
            Condition::parse(&self.condition).map_err(|e| BuildError::field("probe.condition", e))?;
        Ok(CloudWatchMetricProbe {
            client: aws_sdk_cloudwatch::Client::new(cx.aws_config().await),
            config: self.clone(),
            condition,
            clock: cx.clock(),
        })
    }

    /// The `MetricDataQuery` list for `event`.
    fn queries(&self, event: &Event) -> Result<Vec<MetricDataQuery>, StageError> {
        let invalid = |field: String, e: String| {
            StageError::permanent(format!("field \"{field}\": {e}")).with_kind("HealthCheck.InvalidInput")
        };
        let mut out = Vec::with_capacity(self.queries.len());
        for (i, q) in self.queries.iter().enumerate() {
            let mut query = MetricDataQuery::builder().id(&q.id).return_data(q.return_data);
            if let Some(expression) = &q.expression {
                let text = expression
                    .render(event)
                    .map_err(|e| invalid(format!("probe.queries[{i}].expression"), e.to_string()))?;
                query = query.expression(text);
            }
            if let Some(m) = &q.metric {
                let mut metric = Metric::builder().namespace(&m.namespace).metric_name(&m.name);
                for (name, value) in &m.dimensions {
                    let value = value.render(event).map_err(|e| {
                        invalid(
                            format!("probe.queries[{i}].metric.dimensions.{name}"),
                            e.to_string(),
                        )
                    })?;
                    metric = metric.dimensions(Dimension::builder().name(name).value(value).build());
                }
                let period = i32::try_from(m.period.as_secs()).unwrap_or(i32::MAX);
                query = query.metric_stat(
                    MetricStat::builder()
                        .metric(metric.build())
                        .stat(&m.stat)
                        .period(period)
                        .build(),
                );
            }
            out.push(query.build());
        }
        Ok(out)
    }
}

impl MetricStatConfig {
    fn validate(&self, field: &str) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.namespace.trim().is_empty() {
            errors.push(FieldError::new(format!("{field}.namespace"), "must not be empty"));
        }
        if self.name.trim().is_empty() {
            errors.push(FieldError::new(format!("{field}.name"), "must not be empty"));
        }
        if self.stat.trim().is_empty() {
            errors.push(FieldError::new(
                format!("{field}.stat"),
                "name a statistic: Sum, Average, Maximum, p99, …",
            ));
        }
        let secs = self.period.as_secs();
        let whole = self.period.subsec_nanos() == 0;
        if !whole || !(matches!(secs, 1 | 5 | 10 | 30) || (secs > 0 && secs.is_multiple_of(60))) {
            errors.push(FieldError::new(
                format!("{field}.period"),
                format!(
                    "{:?}: CloudWatch periods are 1s, 5s, 10s, 30s or a multiple of 1m",
                    self.period
                ),
            ));
        }
        errors
    }
}

/// CloudWatch's rule for a query id: `^[a-z][a-zA-Z0-9_]*$`.
fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The `cloudwatch-alarm` [`HealthProbe`].
#[derive(Debug)]
pub struct CloudWatchAlarmProbe {
    client: aws_sdk_cloudwatch::Client,
    config: CloudWatchAlarmProbeConfig,
    clock: Arc<dyn Clock>,
}

impl CloudWatchAlarmProbe {
    /// Every named alarm's state, as `DescribeAlarms` reports it; `Err` when one does not exist.
    async fn states(&self, names: &[String]) -> Result<BTreeMap<String, (String, String)>, StageError> {
        let out = self
            .client
            .describe_alarms()
            .set_alarm_names(Some(names.to_vec()))
            .alarm_types(AlarmType::MetricAlarm)
            .alarm_types(AlarmType::CompositeAlarm)
            .send()
            .await
            .map_err(|e| aws_error("DescribeAlarms", &e))?;
        let mut states = BTreeMap::new();
        let metric = out
            .metric_alarms()
            .iter()
            .map(|a| (a.alarm_name(), a.state_value(), a.state_reason()));
        let composite = out
            .composite_alarms()
            .iter()
            .map(|a| (a.alarm_name(), a.state_value(), a.state_reason()));
        for (name, state, reason) in metric.chain(composite) {
            if let Some(name) = name {
                let state = state.map_or("UNKNOWN", StateValue::as_str).to_owned();
                states.insert(name.to_owned(), (state, reason.unwrap_or_default().to_owned()));
            }
        }
        let missing: Vec<&str> = names
            .iter()
            .filter(|n| !states.contains_key(*n))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(StageError::permanent(format!(
                "DescribeAlarms: no alarm named {}: check probe.alarms and the region",
                missing.join(", ")
            ))
            .with_kind("HealthCheck.InvalidInput"));
        }
        Ok(states)
    }
}

/// One alarm measurement: ALARM fails, INSUFFICIENT_DATA is inconclusive, all OK passes.
fn judge_alarms(states: &BTreeMap<String, (String, String)>) -> Measured {
    let with = |state: &str| -> Vec<String> {
        states
            .iter()
            .filter(|(_, (s, _))| s == state)
            .map(|(name, (_, reason))| format!("{name} ({reason})"))
            .collect()
    };
    let seen: Map<String, serde_json::Value> = [(
        "alarms".to_owned(),
        json!(
            states
                .iter()
                .map(|(name, (state, _))| (name.clone(), json!(state)))
                .collect::<Map<_, _>>()
        ),
    )]
    .into_iter()
    .collect();
    let alarming = with("ALARM");
    if !alarming.is_empty() {
        return Measured::Judged {
            passed: false,
            seen,
            summary: format!("in ALARM: {}", alarming.join(", ")),
        };
    }
    let unknown: Vec<String> = states
        .iter()
        .filter(|(_, (s, _))| s != "OK")
        .map(|(name, (s, _))| format!("{name} {s}"))
        .collect();
    if !unknown.is_empty() {
        return Measured::Inconclusive(unknown.join(", "));
    }
    Measured::Judged {
        passed: true,
        seen,
        summary: "all OK".into(),
    }
}

impl HealthProbe for CloudWatchAlarmProbe {
    fn check<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<HealthReport, StageError>> {
        Box::pin(async move {
            let mut names = Vec::with_capacity(self.config.alarms.len());
            for (i, alarm) in self.config.alarms.iter().enumerate() {
                names.push(alarm.render(event).map_err(|e| {
                    StageError::permanent(format!("field \"probe.alarms[{i}]\": {e}"))
                        .with_kind("HealthCheck.InvalidInput")
                })?);
            }
            // A missing alarm or a permanent AWS error stops the check: it cannot find out.
            let fatal = std::sync::Mutex::new(None);
            let report = self
                .config
                .measurements()
                .run(&self.clock, "no alarm in ALARM", || async {
                    match self.states(&names).await {
                        Ok(states) => judge_alarms(&states),
                        Err(e) => keep_fatal(&fatal, e),
                    }
                })
                .await;
            match fatal.into_inner().ok().flatten() {
                Some(e) => Err(e),
                None => Ok(report),
            }
        })
    }
}

/// A failed call as a measurement: retryable faults are inconclusive; a permanent one (a
/// missing alarm, a rejected query) is kept in `fatal`, ending the check with that error.
fn keep_fatal(fatal: &std::sync::Mutex<Option<StageError>>, error: StageError) -> Measured {
    let text = error.to_string();
    if !error.retryable
        && let Ok(mut slot) = fatal.lock()
    {
        slot.get_or_insert(error);
    }
    Measured::Inconclusive(text)
}

/// The `cloudwatch-metric` [`HealthProbe`].
#[derive(Debug)]
pub struct CloudWatchMetricProbe {
    client: aws_sdk_cloudwatch::Client,
    config: CloudWatchMetricProbeConfig,
    condition: Condition,
    clock: Arc<dyn Clock>,
}

/// Why a metric measurement has no number.
#[derive(Debug)]
pub(crate) enum NoNumber {
    /// The call failed.
    Call(StageError),
    /// A series without data, or CloudWatch could not compute it.
    Data(String),
}

/// Every point of each returned series between `start` and `end`, newest first, by query id
/// (`GetMetricData`, all pages). A series CloudWatch could not compute is [`NoNumber::Data`].
pub(crate) async fn metric_data(
    client: &aws_sdk_cloudwatch::Client,
    queries: &[MetricDataQuery],
    start: std::time::SystemTime,
    end: std::time::SystemTime,
) -> Result<BTreeMap<String, Vec<f64>>, NoNumber> {
    let mut series: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut token = None;
    for _ in 0..10 {
        let out = client
            .get_metric_data()
            .set_metric_data_queries(Some(queries.to_vec()))
            .start_time(DateTime::from(start))
            .end_time(DateTime::from(end))
            .scan_by(ScanBy::TimestampDescending)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| NoNumber::Call(aws_error("GetMetricData", &e)))?;
        for result in out.metric_data_results() {
            let id = result.id().unwrap_or("?").to_owned();
            if let Some(StatusCode::InternalError | StatusCode::Forbidden) = result.status_code() {
                let messages: Vec<&str> = result.messages().iter().filter_map(|m| m.value()).collect();
                return Err(NoNumber::Data(format!(
                    "{id}: {} {}",
                    result.status_code().map_or("", StatusCode::as_str),
                    messages.join("; ")
                )));
            }
            series.entry(id).or_default().extend_from_slice(result.values());
        }
        match out.next_token() {
            Some(next) if !next.is_empty() => token = Some(next.to_owned()),
            _ => break,
        }
    }
    Ok(series)
}

impl CloudWatchMetricProbe {
    /// The newest value of each returned series over the window, by id; or why there is none.
    async fn measure(&self, queries: &[MetricDataQuery]) -> Result<Vec<(String, f64)>, NoNumber> {
        let now = self.clock.now();
        let start = now.checked_sub(self.config.window).unwrap_or(now);
        let series = metric_data(&self.client, queries, start, now).await?;
        let empty: Vec<&str> = series
            .iter()
            .filter(|(_, v)| v.is_empty())
            .map(|(id, _)| id.as_str())
            .collect();
        if series.is_empty() || !empty.is_empty() {
            return Err(NoNumber::Data(format!(
                "no data point in the last {:?} for {}",
                self.config.window,
                if empty.is_empty() {
                    "any query".to_owned()
                } else {
                    empty.join(", ")
                }
            )));
        }
        Ok(series
            .into_iter()
            .filter_map(|(id, v)| v.first().map(|v| (id, *v)))
            .collect())
    }
}

impl HealthProbe for CloudWatchMetricProbe {
    fn check<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<HealthReport, StageError>> {
        Box::pin(async move {
            let queries = self.config.queries(event)?;
            let fatal = std::sync::Mutex::new(None);
            let report = self
                .config
                .measurements()
                .run(&self.clock, &self.config.condition, || async {
                    match self.measure(&queries).await {
                        Ok(series) => {
                            let values = series.iter().map(|(_, v)| *v).collect();
                            let mut measured = Measured::values(&self.condition, values);
                            if let Measured::Judged { seen, .. } = &mut measured {
                                let series: Map<String, serde_json::Value> =
                                    series.into_iter().map(|(id, v)| (id, json!(v))).collect();
                                seen.insert("series".into(), json!(series));
                            }
                            measured
                        }
                        Err(NoNumber::Data(why)) => Measured::Inconclusive(why),
                        Err(NoNumber::Call(e)) => keep_fatal(&fatal, e),
                    }
                })
                .await;
            match fatal.into_inner().ok().flatten() {
                Some(e) => Err(e),
                None => Ok(report),
            }
        })
    }
}

/// A loopback server speaking CloudWatch's Smithy RPC v2 CBOR protocol, for tests (moto does
/// not speak it): each request is checked for the protocol's path and headers and decoded;
/// answers are scripted CBOR maps, timestamps as tag 1 epoch seconds.
#[cfg(test)]
pub(crate) mod rpc_cbor {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use ciborium::Value as Cbor;
    use cutover_core::{AwsSettings, BuildContext, ManualClock};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A request as the server saw it: the operation and the decoded body.
    pub(crate) type Seen = Arc<Mutex<Vec<(String, Cbor)>>>;

    /// Serves `answers` (status, CBOR body) in order, one per request; what it was asked.
    pub(crate) async fn serve(answers: Vec<(u16, Cbor)>) -> (String, Seen) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen: Seen = Arc::default();
        let log = seen.clone();
        let answers = Arc::new(Mutex::new(answers.into_iter()));
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (log, answers) = (log.clone(), answers.clone());
                tokio::spawn(async move {
                    while let Some((head, body)) = read_request(&mut socket).await {
                        let path = head.split_whitespace().nth(1).unwrap_or_default().to_owned();
                        let lower = head.to_ascii_lowercase();
                        assert!(lower.contains("smithy-protocol: rpc-v2-cbor"), "{head}");
                        assert!(lower.contains("content-type: application/cbor"), "{head}");
                        let operation = path
                            .strip_prefix("/service/GraniteServiceVersion20100801/operation/")
                            .unwrap_or_else(|| panic!("not an RPC v2 CBOR path: {path}"))
                            .to_owned();
                        let request: Cbor = ciborium::from_reader(body.as_slice()).unwrap();
                        log.lock().unwrap().push((operation, request));
                        let (status, answer) = answers.lock().unwrap().next().expect("an answer left");
                        let mut bytes = Vec::new();
                        ciborium::into_writer(&answer, &mut bytes).unwrap();
                        let head = format!(
                            "HTTP/1.1 {status} X\r\nsmithy-protocol: rpc-v2-cbor\r\ncontent-type: application/cbor\r\ncontent-length: {}\r\n\r\n",
                            bytes.len()
                        );
                        socket.write_all(head.as_bytes()).await.unwrap();
                        socket.write_all(&bytes).await.unwrap();
                    }
                });
            }
        });
        (url, seen)
    }

    /// One request's head and body, or `None` at the end of the connection.
    async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<(String, Vec<u8>)> {
        let mut data = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&data[..end]).into_owned();
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if data.len() >= end + 4 + length {
                    return Some((head, data[end + 4..end + 4 + length].to_vec()));
                }
            }
            let n = socket.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            data.extend_from_slice(&buf[..n]);
        }
    }

    pub(crate) fn map(entries: Vec<(&str, Cbor)>) -> Cbor {
        Cbor::Map(
            entries
                .into_iter()
                .map(|(k, v)| (Cbor::Text(k.into()), v))
                .collect(),
        )
    }

    pub(crate) fn text(s: &str) -> Cbor {
        Cbor::Text(s.into())
    }

    pub(crate) fn at(epoch: f64) -> Cbor {
        Cbor::Tag(1, Box::new(Cbor::Float(epoch)))
    }

    pub(crate) fn get(value: &Cbor, key: &str) -> Cbor {
        match value {
            Cbor::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_text() == Some(key))
                .map(|(_, v)| v.clone())
                .unwrap_or(Cbor::Null),
            _ => Cbor::Null,
        }
    }

    pub(crate) fn context(url: &str) -> BuildContext {
        BuildContext::new("unused")
            .with_aws(AwsSettings {
                max_attempts: Some(1),
                ..AwsSettings::emulator(url.to_owned())
            })
            .with_clock(Arc::new(ManualClock::new(
                std::time::UNIX_EPOCH + Duration::from_secs(1_764_000_000),
            )))
    }
}

#[cfg(test)]
mod tests {
    //! The probes against [`super::rpc_cbor`]'s server, answering as the CloudWatch API
    //! reference documents `GetMetricData` and `DescribeAlarms` responses.

    use ciborium::Value as Cbor;
    use serde_json::Value;

    use super::rpc_cbor::{at, context, get, map, serve, text};
    use super::*;

    fn event() -> Event {
        Event::from_value(serde_json::json!({"service": "cats", "target_group": "targetgroup/green/0123"}))
    }

    fn alarm(name: &str, state: &str) -> Cbor {
        map(vec![
            ("AlarmName", text(name)),
            (
                "AlarmArn",
                text(&format!("arn:aws:cloudwatch:us-east-1:123456789012:alarm:{name}")),
            ),
            ("StateValue", text(state)),
            ("StateReason", text(&format!("Threshold Crossed: {state}"))),
            ("StateUpdatedTimestamp", at(1_763_999_000.0)),
            ("Namespace", text("AWS/ApplicationELB")),
            ("MetricName", text("HTTPCode_Target_5XX_Count")),
        ])
    }

    fn alarms(metric: Vec<Cbor>, composite: Vec<Cbor>) -> (u16, Cbor) {
        (
            200,
            map(vec![
                ("MetricAlarms", Cbor::Array(metric)),
                ("CompositeAlarms", Cbor::Array(composite)),
            ]),
        )
    }

    fn alarm_config(count: u32, inconclusive_limit: u32) -> CloudWatchAlarmProbeConfig {
        toml::from_str(&format!(
            "alarms = [\"{{service}}-5xx\", \"{{service}}-health\"]\ncount = {count}\ninterval = \"1m\"\ninconclusive_limit = {inconclusive_limit}"
        ))
        .unwrap()
    }

    #[tokio::test]
    async fn an_alarm_in_alarm_fails_and_ok_alarms_pass() {
        let (url, seen) = serve(vec![
            alarms(vec![alarm("cats-5xx", "OK")], vec![alarm("cats-health", "OK")]),
            alarms(vec![alarm("cats-5xx", "ALARM")], vec![alarm("cats-health", "OK")]),
        ])
        .await;
        let probe = alarm_config(3, 0).build(&context(&url)).await.unwrap();
        let report = probe.check(&event()).await.unwrap();
        assert!(!report.healthy);
        assert_eq!(report.checks.len(), 2, "stops at the first failure");
        assert_eq!(report.checks[0]["alarms"]["cats-health"], "OK");
        assert_eq!(report.checks[1]["alarms"]["cats-5xx"], "ALARM");
        assert!(
            report.reason.contains("cats-5xx (Threshold Crossed: ALARM)"),
            "{}",
            report.reason
        );
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].0, "DescribeAlarms");
        assert_eq!(
            get(&seen[0].1, "AlarmNames"),
            Cbor::Array(vec![text("cats-5xx"), text("cats-health")])
        );
        assert_eq!(
            get(&seen[0].1, "AlarmTypes"),
            Cbor::Array(vec![text("MetricAlarm"), text("CompositeAlarm")])
        );
    }

    #[tokio::test]
    async fn insufficient_data_is_inconclusive_and_a_missing_alarm_an_error() {
        let (url, _) = serve(vec![
            alarms(
                vec![alarm("cats-5xx", "INSUFFICIENT_DATA"), alarm("cats-health", "OK")],
                vec![],
            ),
            alarms(vec![alarm("cats-5xx", "OK"), alarm("cats-health", "OK")], vec![]),
            alarms(vec![alarm("cats-5xx", "OK")], vec![]),
        ])
        .await;
        let report = alarm_config(2, 1)
            .build(&context(&url))
            .await
            .unwrap()
            .check(&event())
            .await
            .unwrap();
        assert!(report.healthy, "{}", report.reason);
        assert_eq!(report.checks[0]["passed"], Value::Null);
        assert!(
            report.checks[0]["error"]
                .as_str()
                .unwrap()
                .contains("cats-5xx INSUFFICIENT_DATA")
        );

        let error = alarm_config(1, 0)
            .build(&context(&url))
            .await
            .unwrap()
            .check(&event())
            .await
            .unwrap_err();
        assert!(!error.retryable);
        assert!(
            error.message.contains("no alarm named cats-health"),
            "{}",
            error.message
        );
    }

    fn series(id: &str, values: &[f64]) -> Cbor {
        let stamps = (0..values.len())
            .map(|i| at(1_764_000_000.0 - 60.0 * i as f64))
            .collect();
        map(vec![
            ("Id", text(id)),
            ("Label", text(id)),
            ("Timestamps", Cbor::Array(stamps)),
            (
                "Values",
                Cbor::Array(values.iter().map(|v| Cbor::Float(*v)).collect()),
            ),
            ("StatusCode", text("Complete")),
        ])
    }

    fn metric_data(results: Vec<Cbor>) -> (u16, Cbor) {
        (
            200,
            map(vec![
                ("MetricDataResults", Cbor::Array(results)),
                ("Messages", Cbor::Array(vec![])),
            ]),
        )
    }

    const ERROR_RATE: &str = r#"
        condition = "result < 0.01"
        window = "5m"
        count = 2
        interval = "1m"
        queries = [
          { id = "errors", return_data = false, metric = { namespace = "AWS/ApplicationELB", name = "HTTPCode_Target_5XX_Count", stat = "Sum", dimensions = { TargetGroup = "{target_group}" } } },
          { id = "requests", return_data = false, metric = { namespace = "AWS/ApplicationELB", name = "RequestCount", stat = "Sum", dimensions = { TargetGroup = "{target_group}" } } },
          { id = "error_rate", expression = "errors / requests" },
        ]
    "#;

    #[tokio::test]
    async fn the_newest_value_of_each_series_is_held_to_the_condition() {
        let (url, seen) = serve(vec![
            metric_data(vec![series("error_rate", &[0.002, 0.2])]),
            metric_data(vec![series("error_rate", &[0.05, 0.002])]),
        ])
        .await;
        let config: CloudWatchMetricProbeConfig = toml::from_str(ERROR_RATE).unwrap();
        assert!(config.validate().is_empty(), "{:?}", config.validate());
        let report = config
            .build(&context(&url))
            .await
            .unwrap()
            .check(&event())
            .await
            .unwrap();
        assert!(!report.healthy);
        assert_eq!(
            report.checks[0]["passed"], true,
            "the newest point (0.002) counts, not 0.2"
        );
        assert_eq!(report.checks[0]["series"]["error_rate"], 0.002);
        assert_eq!(report.checks[1]["passed"], false);
        assert!(
            report.reason.contains("1 of 2 measurements failed result < 0.01"),
            "{}",
            report.reason
        );

        let seen = seen.lock().unwrap();
        let (operation, request) = &seen[0];
        assert_eq!(operation, "GetMetricData");
        assert_eq!(get(request, "ScanBy"), text("TimestampDescending"));
        let (Cbor::Tag(1, start), Cbor::Tag(1, end)) = (get(request, "StartTime"), get(request, "EndTime"))
        else {
            panic!("timestamps are tag 1: {request:?}")
        };
        let secs = |v: &Cbor| match v {
            Cbor::Float(f) => *f,
            Cbor::Integer(i) => i128::from(*i) as f64,
            other => panic!("{other:?}"),
        };
        assert_eq!(secs(&end) - secs(&start), 300.0, "the window");
        let Cbor::Array(queries) = get(request, "MetricDataQueries") else {
            panic!()
        };
        assert_eq!(queries.len(), 3);
        assert_eq!(get(&queries[0], "ReturnData"), Cbor::Bool(false));
        assert_eq!(get(&queries[2], "Expression"), text("errors / requests"));
        let stat = get(&queries[0], "MetricStat");
        assert_eq!(get(&stat, "Stat"), text("Sum"));
        assert_eq!(get(&stat, "Period"), Cbor::Integer(60.into()));
        let metric = get(&stat, "Metric");
        assert_eq!(get(&metric, "MetricName"), text("HTTPCode_Target_5XX_Count"));
        assert_eq!(
            get(&metric, "Dimensions"),
            Cbor::Array(vec![map(vec![
                ("Name", text("TargetGroup")),
                ("Value", text("targetgroup/green/0123"))
            ])])
        );
    }

    #[tokio::test]
    async fn no_data_is_inconclusive_and_a_rejected_query_an_error() {
        let rejected = map(vec![
            (
                "__type",
                text("com.amazonaws.cloudwatch#InvalidParameterValueException"),
            ),
            (
                "message",
                text("Error in expression 'error_rate': Unrecognized token"),
            ),
        ]);
        let (url, _) = serve(vec![
            metric_data(vec![series("error_rate", &[])]),
            (400, rejected),
        ])
        .await;
        let config: CloudWatchMetricProbeConfig = toml::from_str(ERROR_RATE).unwrap();
        let config = CloudWatchMetricProbeConfig {
            count: 1,
            inconclusive_limit: 1,
            ..config
        };
        let probe = config.build(&context(&url)).await.unwrap();
        let report = probe.check(&event()).await.unwrap();
        assert!(
            report.healthy,
            "one inconclusive is within the limit: {}",
            report.reason
        );
        assert!(
            report.checks[0]["error"]
                .as_str()
                .unwrap()
                .contains("no data point in the last 300s for error_rate")
        );
        let error = probe.check(&event()).await.unwrap_err();
        assert!(!error.retryable);
        assert!(error.message.contains("Unrecognized token"), "{}", error.message);
    }

    #[test]
    fn bad_configs_name_the_field_and_the_fix() {
        for (text, field, hint) in [
            ("alarms = []", "probe.alarms", "at least one"),
            ("alarms = [\"a\"]\ncount = 0", "probe.count", "at least 1"),
        ] {
            let config: CloudWatchAlarmProbeConfig = toml::from_str(text).unwrap();
            let errors = config.validate();
            assert!(
                errors
                    .iter()
                    .any(|e| e.field == field && e.message.contains(hint)),
                "{text}: {errors:?}"
            );
        }
        for (text, field, hint) in [
            (
                "condition = \"result < 1\"\nqueries = []",
                "probe.queries",
                "at least one",
            ),
            (
                "condition = \"below 1\"\nqueries = [{ id = \"e\", expression = \"1\" }]",
                "probe.condition",
                "result OP NUMBER",
            ),
            (
                "condition = \"result < 1\"\nqueries = [{ id = \"Errors\", expression = \"1\" }]",
                "probe.queries[0].id",
                "lower-case",
            ),
            (
                "condition = \"result < 1\"\nqueries = [{ id = \"e\" }]",
                "probe.queries[0].metric",
                "exactly one",
            ),
            (
                "condition = \"result < 1\"\nqueries = [{ id = \"e\", metric = { namespace = \"N\", name = \"M\", stat = \"Sum\", period = \"90s\" } }]",
                "probe.queries[0].metric.period",
                "multiple of 1m",
            ),
            (
                "condition = \"result < 1\"\nqueries = [{ id = \"e\", expression = \"1\", return_data = false }]",
                "probe.queries",
                "return_data",
            ),
            (
                "condition = \"result < 1\"\nwindow = \"10s\"\nqueries = [{ id = \"e\", expression = \"1\" }]",
                "probe.window",
                "at least 1m",
            ),
        ] {
            let config: CloudWatchMetricProbeConfig = toml::from_str(text).unwrap();
            let errors = config.validate();
            assert!(
                errors
                    .iter()
                    .any(|e| e.field == field && e.message.contains(hint)),
                "{text}: {errors:?}"
            );
        }
    }

    #[test]
    fn the_policy_names_literal_alarms_and_falls_back_to_a_wildcard_for_templates() {
        let literal: CloudWatchAlarmProbeConfig = toml::from_str("alarms = [\"cats-5xx\"]").unwrap();
        let arns = literal.alarm_arns();
        assert_eq!(arns.len(), 1);
        assert!(arns[0]["Fn::Sub"].as_str().unwrap().ends_with(":alarm:cats-5xx"));
        let templated = alarm_config(1, 0);
        assert!(
            templated.alarm_arns()[0]["Fn::Sub"]
                .as_str()
                .unwrap()
                .ends_with(":alarm:*")
        );
    }
}
