//! The `observed-split` probe: does green actually receive the share of traffic it was given?
//! Weights that land late (a resolver caching the old answer, a load balancer applying a
//! change later) or old pods scaled down while still receiving traffic are invisible to every
//! other check; this one measures the split over a window and holds it to the weight set.
//!
//! ```toml
//! probe = { type = "observed-split", source = { type = "dns", record = "www.catsndogs.lol" }, weight = "{weight}", tolerance = 5, window = "2s", min_samples = 20, count = 1 }
//! ```
//!
//! Each measurement observes one `window` and counts the requests each side received; it
//! *passes* when green's share is within `tolerance` percentage points of `weight` — exactly 0
//! when the weight is 0 (green must receive nothing before it is scaled down) and exactly all
//! when it is 100 — *fails* otherwise, and is *inconclusive* with fewer than `min_samples`
//! requests. `count`, `failure_limit` and `inconclusive_limit` are the analysis model every
//! measuring probe shares ([`super::analysis`]).
//!
//! Sources ([`SplitSourceConfig`]): the embedded DNS server's answers for a record in this
//! process (the demo's zone), or two Prometheus queries counting each side's requests. The
//! windows are wall-clock time: they observe real traffic, which virtual time does not speed up.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
use cutover_core::{BoxFuture, BuildContext, BuildError, Event, FieldError, StageError, Template};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::analysis::{Limits, Measurement, Tally};
use super::http::Tls;
use super::{HealthProbe, HealthReport, cloudwatch, prometheus};
use crate::traffic_shift::dns::served_store;

/// Configuration of `probe = { type = "observed-split", … }`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservedSplitProbeConfig {
    /// Where the split is observed.
    pub source: SplitSourceConfig,
    /// Green's weight as set, 0–100: a template of the Task input (the canary passes
    /// `weight`).
    #[serde(default = "default_weight")]
    pub weight: Template,
    /// How far green's observed share may be from its weight, in percentage points (weights 0
    /// and 100 are held exactly).
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
    /// How long one measurement observes.
    #[serde(default = "default_window", with = "crate::duration")]
    pub window: Duration,
    /// The fewest requests a window must hold to be judged (fewer: inconclusive).
    #[serde(default = "default_min_samples")]
    pub min_samples: u64,
    /// Measurements per check.
    #[serde(default = "one")]
    pub count: u32,
    /// Measurements off the weight tolerated.
    #[serde(default)]
    pub failure_limit: u32,
    /// Windows with too little traffic (or no answer from the source) tolerated.
    #[serde(default)]
    pub inconclusive_limit: u32,
}

/// Where the split is observed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SplitSourceConfig {
    /// The answers the embedded DNS server of this process gave for `record`: each answer
    /// sends one client to one side.
    Dns {
        /// The weighted name (`www.catsndogs.lol`).
        record: String,
    },
    /// Two PromQL instant queries counting each side's requests over the window
    /// (`sum(increase(http_requests_total{{version="green"}}[1m]))`); templates of the Task
    /// input, PromQL's braces doubled.
    Prometheus {
        /// The Prometheus server: `http://127.0.0.1:9090`.
        address: String,
        /// Green's requests.
        green: Template,
        /// Blue's requests.
        blue: Template,
        /// How long one query may take.
        #[serde(default = "default_query_timeout", with = "crate::duration")]
        timeout: Duration,
    },
    /// An Application Load Balancer's `RequestCount` per target group (CloudWatch,
    /// `AWS/ApplicationELB`), summed over the window. CloudWatch publishes these a minute or
    /// more late: give a `window` of a few minutes and `delay` for the points to land.
    Alb {
        /// The load balancer dimension: `app/catsndogs/0123456789abcdef` (a template).
        load_balancer: Template,
        /// Green's target group dimension: `targetgroup/green/0123456789abcdef` (a template).
        green_target_group: Template,
        /// Blue's target group dimension (a template).
        blue_target_group: Template,
        /// The period of the data points summed: 1m, or a multiple of it.
        #[serde(default = "default_alb_period", with = "crate::duration")]
        period: Duration,
        /// How long to wait after the window before asking, so its points have been published.
        #[serde(default = "default_alb_delay", with = "crate::duration")]
        delay: Duration,
    },
}

fn default_alb_period() -> Duration {
    Duration::from_secs(60)
}
fn default_alb_delay() -> Duration {
    Duration::from_secs(120)
}

fn default_weight() -> Template {
    "{weight}"
        .parse()
        .unwrap_or_else(|_| unreachable!("a valid template"))
}
fn default_tolerance() -> f64 {
    5.0
}
fn default_window() -> Duration {
    Duration::from_secs(10)
}
fn default_min_samples() -> u64 {
    20
}
fn one() -> u32 {
    1
}
fn default_query_timeout() -> Duration {
    Duration::from_secs(5)
}

/// Requests each side received in one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Split {
    /// Blue's requests.
    pub blue: f64,
    /// Green's requests.
    pub green: f64,
}

/// Where a split is observed: waits out the window and counts.
pub trait SplitSource: Send + Sync + fmt::Debug {
    /// The requests each side received over `window` from now; `Err` says why there is no
    /// number (an inconclusive measurement).
    fn observe<'a>(&'a self, event: &'a Event, window: Duration) -> BoxFuture<'a, Result<Split, String>>;
}

/// The embedded DNS server's answer counts.
#[derive(Debug)]
struct DnsAnswers {
    record: String,
}

impl SplitSource for DnsAnswers {
    fn observe<'a>(&'a self, _event: &'a Event, window: Duration) -> BoxFuture<'a, Result<Split, String>> {
        Box::pin(async move {
            let missing = || {
                format!(
                    "no embedded DNS server in this process answers {}: serve it with the traffic-shift stage's \
                     local router (serve = true)",
                    self.record
                )
            };
            let store = served_store(&self.record).ok_or_else(missing)?;
            let before = store.answer_counts();
            tokio::time::sleep(window).await;
            let after = store.answer_counts();
            Ok(Split {
                blue: after.blue.saturating_sub(before.blue) as f64,
                green: after.green.saturating_sub(before.green) as f64,
            })
        })
    }
}

/// Two Prometheus queries.
#[derive(Debug)]
struct PrometheusCounts {
    address: String,
    green: Template,
    blue: Template,
    timeout: Duration,
    tls: Tls,
}

impl PrometheusCounts {
    async fn count(&self, query: &Template, event: &Event) -> Result<f64, String> {
        let query = query.render(event).map_err(|e| e.to_string())?;
        let values = prometheus::instant_query(&self.tls, &self.address, &query, self.timeout).await?;
        Ok(values.iter().sum())
    }
}

impl SplitSource for PrometheusCounts {
    fn observe<'a>(&'a self, event: &'a Event, window: Duration) -> BoxFuture<'a, Result<Split, String>> {
        Box::pin(async move {
            tokio::time::sleep(window).await;
            Ok(Split {
                green: self.count(&self.green, event).await?,
                blue: self.count(&self.blue, event).await?,
            })
        })
    }
}

/// An ALB's `RequestCount` per target group, from CloudWatch.
#[derive(Debug)]
struct AlbRequestCounts {
    client: aws_sdk_cloudwatch::Client,
    load_balancer: Template,
    green: Template,
    blue: Template,
    period: Duration,
    delay: Duration,
    clock: Arc<dyn cutover_core::Clock>,
}

impl AlbRequestCounts {
    fn query(&self, id: &str, target_group: &Template, event: &Event) -> Result<MetricDataQuery, String> {
        let render =
            |t: &Template, field: &str| t.render(event).map_err(|e| format!("probe.source.{field}: {e}"));
        let dimension = |name: &str, value: String| Dimension::builder().name(name).value(value).build();
        let metric = Metric::builder()
            .namespace("AWS/ApplicationELB")
            .metric_name("RequestCount")
            .dimensions(dimension(
                "LoadBalancer",
                render(&self.load_balancer, "load_balancer")?,
            ))
            .dimensions(dimension(
                "TargetGroup",
                render(target_group, &format!("{id}_target_group"))?,
            ))
            .build();
        let period = i32::try_from(self.period.as_secs()).unwrap_or(i32::MAX);
        Ok(MetricDataQuery::builder()
            .id(id)
            .metric_stat(
                MetricStat::builder()
                    .metric(metric)
                    .stat("Sum")
                    .period(period)
                    .build(),
            )
            .return_data(true)
            .build())
    }
}

impl SplitSource for AlbRequestCounts {
    fn observe<'a>(&'a self, event: &'a Event, window: Duration) -> BoxFuture<'a, Result<Split, String>> {
        Box::pin(async move {
            let queries = [
                self.query("green", &self.green, event)?,
                self.query("blue", &self.blue, event)?,
            ];
            // The window is the traffic from now on; its points are asked for once published.
            let start = self.clock.now();
            self.clock.sleep(window.saturating_add(self.delay)).await;
            let end = start + window;
            let series = cloudwatch::metric_data(&self.client, &queries, start, end)
                .await
                .map_err(|e| match e {
                    cloudwatch::NoNumber::Call(e) => e.message,
                    cloudwatch::NoNumber::Data(why) => why,
                })?;
            let sum = |id: &str| series.get(id).map_or(0.0, |v| v.iter().sum());
            Ok(Split {
                green: sum("green"),
                blue: sum("blue"),
            })
        })
    }
}

/// Judges one window's split against the weight set.
pub fn judge(split: Split, weight: u8, tolerance: f64, min_samples: u64) -> Measurement {
    let total = split.blue + split.green;
    if total < min_samples as f64 || total <= 0.0 {
        return Measurement::Inconclusive(format!(
            "{total} requests in the window, fewer than min_samples ({min_samples})"
        ));
    }
    let observed = 100.0 * split.green / total;
    let seen = format!(
        "green received {} of {total} requests ({observed:.1}%) with weight {weight}%",
        split.green
    );
    let within = match weight {
        0 => split.green == 0.0,
        100 => split.blue == 0.0,
        w => (observed - f64::from(w)).abs() <= tolerance,
    };
    if within {
        Measurement::Passed
    } else {
        Measurement::Failed(seen)
    }
}

impl ObservedSplitProbeConfig {
    pub(super) fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if !(self.tolerance.is_finite() && (0.0..=50.0).contains(&self.tolerance)) {
            errors.push(FieldError::new("probe.tolerance", "percentage points, 0–50"));
        }
        if self.window.is_zero() {
            errors.push(FieldError::new("probe.window", "must be longer than 0s"));
        }
        if self.count == 0 {
            errors.push(FieldError::new("probe.count", "must be at least 1"));
        }
        match &self.source {
            SplitSourceConfig::Dns { record } if record.trim().is_empty() => {
                errors.push(FieldError::new("probe.source.record", "name the weighted record"));
            }
            SplitSourceConfig::Prometheus { address, .. }
                if address.parse::<hyper::Uri>().map_or(true, |u| u.host().is_none()) =>
            {
                errors.push(FieldError::new(
                    "probe.source.address",
                    format!("{address:?} is not a URL like http://127.0.0.1:9090"),
                ));
            }
            SplitSourceConfig::Alb { period, .. }
                if period.as_secs() == 0 || !period.as_secs().is_multiple_of(60) =>
            {
                errors.push(FieldError::new(
                    "probe.source.period",
                    "ALB metrics have 1-minute points: 1m or a multiple of it",
                ));
            }
            SplitSourceConfig::Alb { .. } if self.window < Duration::from_secs(60) => {
                errors.push(FieldError::new(
                    "probe.window",
                    "the alb source sums 1-minute points: a window of at least 1m (a few minutes is better)",
                ));
            }
            _ => {}
        }
        errors
    }

    pub(super) async fn build(&self, cx: &BuildContext) -> Result<ObservedSplitProbe, BuildError> {
        if let Some(e) = self.validate().into_iter().next() {
            return Err(BuildError::Field(e));
        }
        let source: Arc<dyn SplitSource> = match &self.source {
            SplitSourceConfig::Dns { record } => Arc::new(DnsAnswers {
                record: record.clone(),
            }),
            SplitSourceConfig::Prometheus {
                address,
                green,
                blue,
                timeout,
            } => Arc::new(PrometheusCounts {
                address: address.clone(),
                green: green.clone(),
                blue: blue.clone(),
                timeout: *timeout,
                tls: Tls::new(None),
            }),
            SplitSourceConfig::Alb {
                load_balancer,
                green_target_group,
                blue_target_group,
                period,
                delay,
            } => Arc::new(AlbRequestCounts {
                client: aws_sdk_cloudwatch::Client::new(cx.aws_config().await),
                load_balancer: load_balancer.clone(),
                green: green_target_group.clone(),
                blue: blue_target_group.clone(),
                period: *period,
                delay: *delay,
                clock: cx.clock(),
            }),
        };
        Ok(ObservedSplitProbe {
            config: self.clone(),
            source,
        })
    }
}

/// The `observed-split` [`HealthProbe`].
#[derive(Debug)]
pub struct ObservedSplitProbe {
    config: ObservedSplitProbeConfig,
    source: Arc<dyn SplitSource>,
}

impl ObservedSplitProbe {
    /// A probe observing `source` (a test double, or a source of your own).
    pub fn new(config: ObservedSplitProbeConfig, source: Arc<dyn SplitSource>) -> Self {
        Self { config, source }
    }
}

impl HealthProbe for ObservedSplitProbe {
    fn check<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<HealthReport, StageError>> {
        Box::pin(async move {
            let c = &self.config;
            let text = c
                .weight
                .render(event)
                .map_err(|e| StageError::permanent(format!("probe.weight: {e}")))?;
            let weight = text
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|w| *w <= 100)
                .ok_or_else(|| {
                    StageError::permanent(format!("probe.weight: {text:?} is not a weight 0–100"))
                })?;
            let limits = Limits {
                count: c.count,
                failure_limit: c.failure_limit,
                inconclusive_limit: c.inconclusive_limit,
            };
            let (mut tally, mut checks) = (Tally::default(), Vec::new());
            for n in 1..=c.count {
                let observed = self.source.observe(event, c.window).await;
                let m = match &observed {
                    Ok(split) => judge(*split, weight, c.tolerance, c.min_samples),
                    Err(why) => Measurement::Inconclusive(why.clone()),
                };
                let mut check =
                    json!({"measurement": n, "set": weight, "passed": matches!(m, Measurement::Passed)});
                if let Ok(split) = observed {
                    let total = split.blue + split.green;
                    check["blue"] = json!(split.blue);
                    check["green"] = json!(split.green);
                    if total > 0.0 {
                        check["observed"] = json!((1000.0 * split.green / total).round() / 10.0);
                    }
                }
                if let Measurement::Failed(why) | Measurement::Inconclusive(why) = &m {
                    check["error"] = json!(why);
                }
                tally.record(&m);
                checks.push(check);
                if tally.exceeded(&limits) {
                    break;
                }
            }
            let condition = match weight {
                0 | 100 => format!("the split {}/{weight} exactly", 100 - weight),
                w => format!("green within ±{} of {w}%", c.tolerance),
            };
            Ok(tally.report(&limits, &condition, checks))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ALB source against a loopback server speaking CloudWatch's RPC v2 CBOR (moto does
    /// not): two `RequestCount` Sum queries by target group, the window's points summed.
    #[tokio::test]
    async fn the_alb_source_sums_request_counts_per_target_group() {
        use ciborium::Value as Cbor;

        use crate::health_check::cloudwatch::rpc_cbor::{at, context, get, map, serve, text};

        let series = |id: &str, values: &[f64]| {
            map(vec![
                ("Id", text(id)),
                ("Label", text("RequestCount")),
                (
                    "Timestamps",
                    Cbor::Array(
                        (0..values.len())
                            .map(|i| at(1_764_000_120.0 - 60.0 * i as f64))
                            .collect(),
                    ),
                ),
                (
                    "Values",
                    Cbor::Array(values.iter().map(|v| Cbor::Float(*v)).collect()),
                ),
                ("StatusCode", text("Complete")),
            ])
        };
        let answer = |green: &[f64], blue: &[f64]| {
            (
                200,
                map(vec![(
                    "MetricDataResults",
                    Cbor::Array(vec![series("green", green), series("blue", blue)]),
                )]),
            )
        };
        // Agreeing with 10%, then green receiving a third while set to 10%.
        let (url, seen) = serve(vec![
            answer(&[48.0, 52.0], &[450.0, 450.0]),
            answer(&[300.0], &[600.0]),
        ])
        .await;
        let config: ObservedSplitProbeConfig = toml::from_str(
            r#"source = { type = "alb", load_balancer = "app/catsndogs/0123", green_target_group = "{green_tg}", blue_target_group = "targetgroup/blue/0456", delay = "0s" }
               window = "2m"
               count = 2
               failure_limit = 0"#,
        )
        .unwrap();
        assert!(config.validate().is_empty(), "{:?}", config.validate());
        let probe = config.build(&context(&url)).await.unwrap();
        let event = Event::from_value(json!({"weight": 10, "green_tg": "targetgroup/green/0123"}));
        let report = probe.check(&event).await.unwrap();
        assert!(!report.healthy, "{report:?}");
        assert_eq!(report.checks[0]["green"], 100.0);
        assert_eq!(report.checks[0]["blue"], 900.0);
        assert_eq!(report.checks[0]["passed"], true);
        assert_eq!(report.checks[1]["passed"], false);
        assert!(
            report
                .reason
                .contains("green received 300 of 900 requests (33.3%) with weight 10%"),
            "{}",
            report.reason
        );

        let seen = seen.lock().unwrap();
        let (operation, request) = &seen[0];
        assert_eq!(operation, "GetMetricData");
        let Cbor::Array(queries) = get(request, "MetricDataQueries") else {
            panic!("{request:?}")
        };
        let stat = get(&queries[0], "MetricStat");
        assert_eq!(get(&stat, "Stat"), text("Sum"));
        let metric = get(&stat, "Metric");
        assert_eq!(get(&metric, "Namespace"), text("AWS/ApplicationELB"));
        assert_eq!(get(&metric, "MetricName"), text("RequestCount"));
        assert_eq!(
            get(&metric, "Dimensions"),
            Cbor::Array(vec![
                map(vec![
                    ("Name", text("LoadBalancer")),
                    ("Value", text("app/catsndogs/0123"))
                ]),
                map(vec![
                    ("Name", text("TargetGroup")),
                    ("Value", text("targetgroup/green/0123"))
                ]),
            ])
        );
    }

    #[test]
    fn the_alb_source_wants_minute_points() {
        let config: ObservedSplitProbeConfig = toml::from_str(
            r#"source = { type = "alb", load_balancer = "l", green_target_group = "g", blue_target_group = "b", period = "30s" }
               window = "10s""#,
        )
        .unwrap();
        let fields: Vec<String> = config.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["probe.source.period"]);
        let config = ObservedSplitProbeConfig {
            source: SplitSourceConfig::Alb {
                load_balancer: "l".parse().unwrap(),
                green_target_group: "g".parse().unwrap(),
                blue_target_group: "b".parse().unwrap(),
                period: Duration::from_secs(60),
                delay: Duration::ZERO,
            },
            ..config
        };
        let fields: Vec<String> = config.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["probe.window"]);
    }

    #[test]
    fn the_split_is_held_to_the_weight_exactly_at_0_and_100() {
        let split = |blue, green| Split { blue, green };
        assert_eq!(judge(split(90.0, 10.0), 10, 5.0, 20), Measurement::Passed);
        assert_eq!(judge(split(86.0, 14.0), 10, 5.0, 20), Measurement::Passed);
        assert!(
            matches!(judge(split(100.0, 0.0), 10, 5.0, 20), Measurement::Failed(w) if w.contains("0 of 100 requests (0.0%) with weight 10%"))
        );
        assert_eq!(judge(split(100.0, 0.0), 0, 5.0, 20), Measurement::Passed);
        assert!(
            matches!(judge(split(99.0, 1.0), 0, 5.0, 20), Measurement::Failed(_)),
            "weight 0: green gets nothing"
        );
        assert!(
            matches!(judge(split(1.0, 99.0), 100, 5.0, 20), Measurement::Failed(_)),
            "weight 100: blue gets nothing"
        );
        assert!(
            matches!(judge(split(5.0, 5.0), 50, 5.0, 20), Measurement::Inconclusive(w) if w.contains("min_samples"))
        );
    }

    #[test]
    fn configs_round_trip_and_bad_ones_name_the_field() {
        let text = "type = \"observed-split\"\nsource = { type = \"prometheus\", address = \"http://127.0.0.1:9090\", green = \"sum(x{{v=\\\"g\\\"}})\", blue = \"sum(x{{v=\\\"b\\\"}})\" }\ntolerance = 2.5\nwindow = \"30s\"";
        let c: super::super::ProbeConfig = toml::from_str(text).unwrap();
        let again = toml::to_string(&c).unwrap();
        let back: super::super::ProbeConfig = toml::from_str(&again).unwrap();
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            serde_json::to_value(&back).unwrap()
        );
        let bad: ObservedSplitProbeConfig =
            toml::from_str("source = { type = \"dns\", record = \"\" }\ntolerance = 80.0").unwrap();
        let fields: Vec<String> = bad.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["probe.tolerance", "probe.source.record"]);
    }
}
