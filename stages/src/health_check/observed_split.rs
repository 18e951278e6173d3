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

use cutover_core::{BoxFuture, BuildError, Event, FieldError, StageError, Template};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::analysis::{Limits, Measurement, Tally};
use super::http::Tls;
use super::{HealthProbe, HealthReport, prometheus};
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

/// Where the split is observed. (An ALB source — CloudWatch `RequestCount` per target group
/// — is one more variant here and one more [`SplitSource`].)
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
            _ => {}
        }
        errors
    }

    pub(super) fn build(&self) -> Result<ObservedSplitProbe, BuildError> {
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
