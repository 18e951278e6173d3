//! The analysis model the metric probes share (Argo Rollouts' `AnalysisTemplate` metrics):
//! `count` measurements `interval` apart; each one *passes*, *fails*, or is *inconclusive*
//! (no number, no alarm state, a query error); green is healthy when the failures stay within
//! `failure_limit` and the inconclusive measurements within `inconclusive_limit`. Measuring stops
//! as soon as either limit is exceeded. Every measurement becomes one entry of the report's
//! `checks`, and so of the rollout's history.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cutover_core::{Clock, FieldError};
use serde_json::{Map, Value, json};

use super::HealthReport;

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
        let (mut failed, mut inconclusive, mut checks) = (0u32, 0u32, Vec::new());
        let mut last = String::new();
        for n in 1..=self.count {
            if n > 1 {
                clock.sleep(self.interval).await;
            }
            let mut check = Map::new();
            check.insert("measurement".into(), json!(n));
            match measure().await {
                Measured::Judged {
                    passed,
                    seen,
                    summary,
                } => {
                    if !passed {
                        failed += 1;
                        last = summary;
                    }
                    check.extend(seen);
                    check.insert("passed".into(), json!(passed));
                }
                Measured::Inconclusive(error) => {
                    inconclusive += 1;
                    check.insert("passed".into(), Value::Null);
                    check.insert("error".into(), json!(error));
                    last = error;
                }
            }
            checks.push(Value::Object(check));
            if failed > self.failure_limit || inconclusive > self.inconclusive_limit {
                break;
            }
        }
        let healthy = failed <= self.failure_limit && inconclusive <= self.inconclusive_limit;
        let taken = u32::try_from(checks.len()).unwrap_or(u32::MAX);
        let reason = if healthy {
            format!(
                "{} of {taken} measurements met {what} ({failed} failed, {inconclusive} inconclusive)",
                taken - failed - inconclusive,
            )
        } else if failed > self.failure_limit {
            format!(
                "{failed} of {taken} measurements failed {what} (limit {}): last {last}",
                self.failure_limit
            )
        } else {
            format!(
                "{inconclusive} of {taken} measurements inconclusive (limit {}): {last}",
                self.inconclusive_limit
            )
        };
        HealthReport {
            healthy,
            checks,
            reason,
        }
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
}
