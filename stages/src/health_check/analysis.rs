//! The analysis model the measuring probes share (Argo Rollouts' `AnalysisTemplate` metrics):
//! a check is `count` measurements `interval` apart; each one *passes*, *fails* or is
//! *inconclusive* (no number, no alarm state, a query error); green is healthy when the
//! failures stay within `failure_limit` and the inconclusive measurements within
//! `inconclusive_limit`, and unhealthy as soon as either is exceeded (measuring stops there).
//! Every measurement becomes one entry of the report's `checks`, and so of the rollout's
//! history.
//!
//! [`Tally`] is the running count. It is plain data (serde), so a check can also be spread over
//! several calls — the ECS lifecycle hook host keeps one per deployment and stage between
//! invocations, answering `IN_PROGRESS` while [`Tally::verdict`] is still
//! [`Verdict::Collecting`]. Within one call, [`Measurements::run`] takes the measurements.
//!
//! ```
//! use cutover_stages::health_check::analysis::{Limits, Measurement, Tally, Verdict};
//!
//! let limits = Limits { count: 3, failure_limit: 0, inconclusive_limit: 1 };
//! let mut tally = Tally::default();
//! tally.record(&Measurement::Passed);
//! assert!(matches!(tally.verdict(&limits, "result < 0.01"), Verdict::Collecting));
//! tally.record(&Measurement::Inconclusive("no samples".into()));
//! tally.record(&Measurement::Passed);
//! assert!(matches!(tally.verdict(&limits, "result < 0.01"), Verdict::Healthy(_)));
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cutover_core::{Clock, FieldError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::HealthReport;

/// How many measurements a check takes and how many bad ones it tolerates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Measurements per check.
    pub count: u32,
    /// Failed measurements tolerated.
    pub failure_limit: u32,
    /// Measurements without a number tolerated.
    pub inconclusive_limit: u32,
}

/// One measurement's result.
#[derive(Debug, Clone, PartialEq)]
pub enum Measurement {
    /// It met the condition.
    Passed,
    /// It did not; what was seen.
    Failed(String),
    /// There was nothing to judge; why.
    Inconclusive(String),
}

/// The running count of one check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Measurements that passed.
    pub passed: u32,
    /// Measurements that failed.
    pub failed: u32,
    /// Measurements without a number.
    pub inconclusive: u32,
    /// What the last bad measurement saw (for the reason).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last: String,
}

/// Where a check stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Enough measurements, within the limits; the reason.
    Healthy(String),
    /// A limit is exceeded; the reason.
    Unhealthy(String),
    /// Fewer than `count` measurements so far, none of the limits exceeded.
    Collecting,
}

impl Tally {
    /// Counts one measurement.
    pub fn record(&mut self, measurement: &Measurement) {
        match measurement {
            Measurement::Passed => self.passed += 1,
            Measurement::Failed(seen) => {
                self.failed += 1;
                self.last = seen.clone();
            }
            Measurement::Inconclusive(why) => {
                self.inconclusive += 1;
                self.last = why.clone();
            }
        }
    }

    /// Measurements taken.
    pub fn taken(&self) -> u32 {
        self.passed + self.failed + self.inconclusive
    }

    /// Whether a limit is exceeded (no later measurement can make the check healthy).
    pub fn exceeded(&self, limits: &Limits) -> bool {
        self.failed > limits.failure_limit || self.inconclusive > limits.inconclusive_limit
    }

    /// The verdict so far; `condition` names what each measurement was held to, for reasons.
    pub fn verdict(&self, limits: &Limits, condition: &str) -> Verdict {
        let taken = self.taken();
        if self.failed > limits.failure_limit {
            return Verdict::Unhealthy(format!(
                "{} of {taken} measurements failed {condition} (limit {}): last {}",
                self.failed, limits.failure_limit, self.last
            ));
        }
        if self.inconclusive > limits.inconclusive_limit {
            return Verdict::Unhealthy(format!(
                "{} of {taken} measurements inconclusive (limit {}): {}",
                self.inconclusive, limits.inconclusive_limit, self.last
            ));
        }
        if taken < limits.count {
            return Verdict::Collecting;
        }
        Verdict::Healthy(format!(
            "{} of {taken} measurements met {condition} ({} failed, {} inconclusive)",
            self.passed, self.failed, self.inconclusive
        ))
    }

    /// The health report of a finished check: healthy only on a [`Verdict::Healthy`] (a check
    /// that stopped short of `count` is unhealthy, saying so).
    pub fn report(&self, limits: &Limits, condition: &str, checks: Vec<serde_json::Value>) -> HealthReport {
        let (healthy, reason) = match self.verdict(limits, condition) {
            Verdict::Healthy(r) => (true, r),
            Verdict::Unhealthy(r) => (false, r),
            Verdict::Collecting => (
                false,
                format!("only {} of {} measurements taken", self.taken(), limits.count),
            ),
        };
        HealthReport {
            healthy,
            checks,
            reason,
        }
    }
}

/// `count`, `interval`, `failure_limit`, `inconclusive_limit`: how many measurements and how
/// many bad ones are tolerated. Each metric probe's configuration has these four fields (flat,
/// so `deny_unknown_fields` still catches typos) and hands them over as this.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Measurements {
    pub(crate) count: u32,
    pub(crate) interval: Duration,
    pub(crate) failure_limit: u32,
    pub(crate) inconclusive_limit: u32,
}

/// `measurements()` for configurations with the four flat fields.
macro_rules! measured_by_fields {
    ($($config:ty),+ $(,)?) => {
        $(impl $config {
            /// The count, interval and limits.
            pub(crate) fn measurements(&self) -> $crate::health_check::analysis::Measurements {
                $crate::health_check::analysis::Measurements {
                    count: self.count,
                    interval: self.interval,
                    failure_limit: self.failure_limit,
                    inconclusive_limit: self.inconclusive_limit,
                }
            }
        })+
    };
}
pub(crate) use measured_by_fields;

/// The default `count`: one measurement.
pub(crate) fn one() -> u32 {
    1
}

/// The default `interval` between measurements.
pub(crate) fn default_interval() -> Duration {
    Duration::from_secs(10)
}

/// What one measurement found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Measured {
    /// A verdict, with what was seen (merged into the history entry) and a short summary.
    Judged {
        /// Whether the measurement met the probe's condition.
        passed: bool,
        /// What was seen, e.g. `{"values": [0.2]}` or `{"alarms": {...}}`.
        seen: Map<String, Value>,
        /// The seen values in words, for the reason.
        summary: String,
    },
    /// No verdict possible: why.
    Inconclusive(String),
}

impl Measured {
    /// Numbers held to `condition`: passed when every one meets it; no numbers is inconclusive.
    pub(crate) fn values(condition: &Condition, values: Vec<f64>) -> Measured {
        if values.is_empty() {
            return Measured::Inconclusive("no data points".into());
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Measured::Inconclusive(format!("no number in {values:?} (NaN or infinite)"));
        }
        let passed = values.iter().all(|v| condition.holds(*v));
        let summary = format!("{values:?}");
        let mut seen = Map::new();
        seen.insert("values".into(), json!(values));
        Measured::Judged {
            passed,
            seen,
            summary,
        }
    }
}

impl Measurements {
    /// The count and the limits, without the interval.
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            count: self.count,
            failure_limit: self.failure_limit,
            inconclusive_limit: self.inconclusive_limit,
        }
    }

    /// The problems of the settings, fields named under `prefix` (`probe`).
    pub(crate) fn validate(&self, prefix: &str) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.count == 0 {
            errors.push(FieldError::new(
                format!("{prefix}.count"),
                "must be at least 1 (the number of measurements per check)",
            ));
        }
        errors
    }

    /// The longest a check can take, given how long one measurement may take.
    pub(crate) fn budget(&self, per_measurement: Duration) -> Duration {
        per_measurement
            .saturating_add(self.interval)
            .saturating_mul(self.count)
    }

    /// Takes the measurements and judges them; `what` names the condition in the reason
    /// (`result < 0.01`, `no alarm in ALARM`).
    pub(crate) async fn run<F, Fut>(&self, clock: &Arc<dyn Clock>, what: &str, mut measure: F) -> HealthReport
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Measured>,
    {
        let limits = self.limits();
        let (mut tally, mut checks) = (Tally::default(), Vec::new());
        for n in 1..=self.count {
            if n > 1 {
                clock.sleep(self.interval).await;
            }
            let mut check = Map::new();
            check.insert("measurement".into(), json!(n));
            let measurement = match measure().await {
                Measured::Judged {
                    passed,
                    seen,
                    summary,
                } => {
                    check.extend(seen);
                    check.insert("passed".into(), json!(passed));
                    if passed {
                        Measurement::Passed
                    } else {
                        Measurement::Failed(summary)
                    }
                }
                Measured::Inconclusive(error) => {
                    check.insert("passed".into(), Value::Null);
                    check.insert("error".into(), json!(error));
                    Measurement::Inconclusive(error)
                }
            };
            tally.record(&measurement);
            checks.push(Value::Object(check));
            if tally.exceeded(&limits) {
                break;
            }
        }
        tally.report(&limits, what, checks)
    }
}

/// `result OP number`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Condition {
    op: Op,
    threshold: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Condition {
    /// Reads `result < 0.01`.
    pub fn parse(text: &str) -> Result<Condition, String> {
        let hint = "write it as `result OP NUMBER`, OP one of < <= > >= == !=, e.g. `result < 0.01`";
        let rest = text
            .trim()
            .strip_prefix("result")
            .ok_or_else(|| format!("{text:?}: {hint}"))?
            .trim_start();
        let (op, number) = [
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<", Op::Lt),
            (">", Op::Gt),
        ]
        .iter()
        .find_map(|(s, op)| rest.strip_prefix(s).map(|n| (*op, n.trim())))
        .ok_or_else(|| format!("{text:?}: {hint}"))?;
        let threshold = number
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .ok_or_else(|| format!("{text:?}: {number:?} is not a number; {hint}"))?;
        Ok(Condition { op, threshold })
    }

    /// Whether `value` meets it.
    pub fn holds(&self, value: f64) -> bool {
        let t = self.threshold;
        match self.op {
            Op::Lt => value < t,
            Op::Le => value <= t,
            Op::Gt => value > t,
            Op::Ge => value >= t,
            Op::Eq => value == t,
            Op::Ne => value != t,
        }
    }
}

#[cfg(test)]
mod tests {
    use cutover_core::ManualClock;

    use super::*;

    #[test]
    fn conditions_parse_and_hold() {
        let c = Condition::parse("result < 0.01").unwrap();
        assert!(c.holds(0.0) && !c.holds(0.01));
        assert!(Condition::parse("result>=0.99").unwrap().holds(0.99));
        assert!(Condition::parse("result != 0").unwrap().holds(1.0));
        for bad in ["x < 1", "result ~ 1", "result < lots", "result < inf"] {
            let e = Condition::parse(bad).unwrap_err();
            assert!(
                e.contains("result OP NUMBER") || e.contains("not a number"),
                "{bad}: {e}"
            );
        }
    }

    async fn measured(script: &[Option<f64>]) -> HealthReport {
        let m = Measurements {
            count: u32::try_from(script.len()).unwrap(),
            interval: Duration::from_secs(1),
            failure_limit: 1,
            inconclusive_limit: 1,
        };
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(std::time::SystemTime::UNIX_EPOCH));
        let condition = Condition::parse("result < 0.5").unwrap();
        let mut at = 0;
        let report = m
            .run(&clock, "result < 0.5", || {
                let next = script[at];
                at += 1;
                std::future::ready(match next {
                    Some(v) => Measured::values(&condition, vec![v]),
                    None => Measured::Inconclusive("no data points".into()),
                })
            })
            .await;
        assert!(report.checks.len() <= script.len());
        report
    }

    #[tokio::test]
    async fn limits_decide_and_measuring_stops_once_exceeded() {
        let ok = measured(&[Some(0.1), Some(0.9), None, Some(0.2)]).await;
        assert!(ok.healthy, "{}", ok.reason);
        assert_eq!(ok.checks.len(), 4);
        assert_eq!(ok.checks[1]["passed"], json!(false));
        assert_eq!(ok.checks[2]["passed"], Value::Null);
        assert!(
            ok.reason.starts_with("2 of 4 measurements met result < 0.5"),
            "{}",
            ok.reason
        );

        let failed = measured(&[Some(0.9), Some(0.1), Some(0.8), Some(0.1)]).await;
        assert!(!failed.healthy);
        assert_eq!(failed.checks.len(), 3, "stops at the second failure");
        assert!(
            failed.reason.contains("2 of 3 measurements failed"),
            "{}",
            failed.reason
        );
        assert!(failed.reason.contains("last [0.8]"), "{}", failed.reason);

        let blind = measured(&[None, Some(0.1), None]).await;
        assert!(!blind.healthy);
        assert!(
            blind.reason.contains("2 of 3 measurements inconclusive"),
            "{}",
            blind.reason
        );
    }

    #[test]
    fn no_numbers_or_nan_is_inconclusive() {
        let c = Condition::parse("result < 1").unwrap();
        assert!(matches!(Measured::values(&c, vec![]), Measured::Inconclusive(_)));
        assert!(matches!(
            Measured::values(&c, vec![0.1, f64::NAN]),
            Measured::Inconclusive(_)
        ));
        assert!(matches!(
            Measured::values(&c, vec![0.1, 2.0]),
            Measured::Judged { passed: false, .. }
        ));
    }

    const LIMITS: Limits = Limits {
        count: 3,
        failure_limit: 1,
        inconclusive_limit: 0,
    };

    #[test]
    fn collects_until_count_then_judges_by_the_limits() {
        let mut t = Tally::default();
        t.record(&Measurement::Failed("0.2".into()));
        assert_eq!(t.verdict(&LIMITS, "c"), Verdict::Collecting);
        t.record(&Measurement::Passed);
        t.record(&Measurement::Passed);
        let Verdict::Healthy(reason) = t.verdict(&LIMITS, "result < 0.1") else {
            panic!("{t:?}")
        };
        assert_eq!(
            reason,
            "2 of 3 measurements met result < 0.1 (1 failed, 0 inconclusive)"
        );
    }

    #[test]
    fn a_limit_exceeded_is_unhealthy_at_once_with_the_last_reading() {
        let mut t = Tally::default();
        t.record(&Measurement::Inconclusive("no samples".into()));
        let Verdict::Unhealthy(reason) = t.verdict(&LIMITS, "c") else {
            panic!("{t:?}")
        };
        assert!(
            reason.contains("1 of 1 measurements inconclusive (limit 0): no samples"),
            "{reason}"
        );
        let mut t = Tally::default();
        t.record(&Measurement::Failed("0.3".into()));
        t.record(&Measurement::Failed("0.5".into()));
        assert!(t.exceeded(&LIMITS));
        assert!(matches!(t.verdict(&LIMITS, "c"), Verdict::Unhealthy(r) if r.contains("last 0.5")));
    }

    #[test]
    fn a_tally_round_trips_as_json() {
        let mut t = Tally::default();
        t.record(&Measurement::Failed("x".into()));
        let back: Tally = serde_json::from_value(serde_json::to_value(&t).unwrap()).unwrap();
        assert_eq!(back, t);
    }
}
