//! The analysis model the measuring probes share (Argo Rollouts' shape): a check is `count`
//! measurements, each of which *passes*, *fails* or is *inconclusive* (no number to judge);
//! green is healthy when the failures stay within `failure_limit` and the inconclusive ones
//! within `inconclusive_limit`, and unhealthy as soon as either is exceeded.
//!
//! [`Tally`] is the running count. It is plain data (serde), so a check can also be spread over
//! several calls — the ECS lifecycle hook host keeps one per deployment and stage between
//! invocations, answering `IN_PROGRESS` while [`Tally::verdict`] is still
//! [`Verdict::Collecting`].
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

use serde::{Deserialize, Serialize};

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
    pub fn report(
        &self,
        limits: &Limits,
        condition: &str,
        checks: Vec<serde_json::Value>,
    ) -> super::HealthReport {
        let (healthy, reason) = match self.verdict(limits, condition) {
            Verdict::Healthy(r) => (true, r),
            Verdict::Unhealthy(r) => (false, r),
            Verdict::Collecting => (
                false,
                format!("only {} of {} measurements taken", self.taken(), limits.count),
            ),
        };
        super::HealthReport {
            healthy,
            checks,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
