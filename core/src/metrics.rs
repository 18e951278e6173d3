//! Counters and histograms a pipeline and its stages record: read by the daemon's `/metrics`
//! (Prometheus text), the Lambda host's EMF lines and `replay`'s summary.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Label names and values of a counter.
pub type Labels = Vec<(String, String)>;

/// One counter's reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counter {
    /// Metric name, e.g. `cutover_events_total`.
    pub name: String,
    /// Its labels.
    pub labels: Labels,
    /// Its value.
    pub value: u64,
}

/// The upper bounds (seconds) of every histogram's buckets: from a quick check to a long bake.
pub const HISTOGRAM_BOUNDS: [f64; 11] = [0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0];

/// One histogram's reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Metric name, e.g. `cutover_rollout_step_seconds`.
    pub name: String,
    /// Its labels.
    pub labels: Labels,
    /// Observations at or below each of [`HISTOGRAM_BOUNDS`] (not cumulative).
    pub buckets: [u64; HISTOGRAM_BOUNDS.len()],
    /// The sum of all observations.
    pub sum: f64,
    /// How many observations.
    pub count: u64,
}

/// Counters and histograms by name and labels; read by the daemon's `/metrics`, the Lambda
/// host's EMF lines and `replay`'s summary.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    counters: Arc<Mutex<BTreeMap<(String, Labels), u64>>>,
    histograms: Arc<Mutex<BTreeMap<(String, Labels), Histogram>>>,
}

impl Metrics {
    /// Adds `by` to a counter.
    pub fn add(&self, name: &str, labels: &[(&str, &str)], by: u64) {
        // Counted once per event: find an existing counter without building its key.
        if let Ok(mut map) = self.counters.lock() {
            let same = |(n, l): &(String, Labels)| {
                n == name
                    && l.len() == labels.len()
                    && l.iter().zip(labels).all(|((k, v), (k2, v2))| k == k2 && v == v2)
            };
            if let Some((_, value)) = map.iter_mut().find(|(key, _)| same(key)) {
                *value += by;
                return;
            }
        }
        let key = (
            name.to_owned(),
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        if let Ok(mut map) = self.counters.lock() {
            *map.entry(key).or_default() += by;
        }
    }

    /// Records one observation (seconds) in a histogram.
    pub fn observe(&self, name: &str, labels: &[(&str, &str)], seconds: f64) {
        let labels: Labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        if let Ok(mut map) = self.histograms.lock() {
            let h = map
                .entry((name.to_owned(), labels.clone()))
                .or_insert_with(|| Histogram {
                    name: name.to_owned(),
                    labels,
                    buckets: [0; HISTOGRAM_BOUNDS.len()],
                    sum: 0.0,
                    count: 0,
                });
            if let Some(i) = HISTOGRAM_BOUNDS.iter().position(|b| seconds <= *b) {
                h.buckets[i] += 1;
            }
            h.sum += seconds;
            h.count += 1;
        }
    }

    /// Every histogram.
    pub fn histograms(&self) -> Vec<Histogram> {
        self.histograms
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every counter with its labels and value.
    pub fn snapshot(&self) -> Vec<Counter> {
        self.counters
            .lock()
            .map(|m| {
                m.iter()
                    .map(|((name, labels), value)| Counter {
                        name: name.clone(),
                        labels: labels.clone(),
                        value: *value,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}
