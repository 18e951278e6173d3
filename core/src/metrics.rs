//! Counters and histograms a pipeline and its stages record: read by the daemon's `/metrics`
//! (Prometheus text), the Lambda host's EMF lines and `replay`'s summary.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    counters: Arc<[Shard; SHARDS]>,
    histograms: Arc<Mutex<BTreeMap<(String, Labels), Histogram>>>,
}

/// Counters are added to once per event by every thread that decides events: each thread adds
/// to a shard of its own (by its number), so that threads do not contend for one lock (nor
/// pass its cache line between cores); a reading sums the shards.
const SHARDS: usize = 8;

/// One shard's counters, on a cache line (pair) of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(Mutex<Vec<((String, Labels), u64)>>);

/// The shard of the calling thread.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|shard| *shard)
}

impl Metrics {
    /// Adds `by` to a counter.
    pub fn add(&self, name: &str, labels: &[(&str, &str)], by: u64) {
        // A thread that panicked holding a shard left whole counts behind: keep counting.
        let mut counters = self.counters[shard()].0.lock().unwrap_or_else(|e| e.into_inner());
        // Counted once per event: find an existing counter without building its key.
        let same = |(n, l): &(String, Labels)| {
            n == name
                && l.len() == labels.len()
                && l.iter().zip(labels).all(|((k, v), (k2, v2))| k == k2 && v == v2)
        };
        if let Some((_, value)) = counters.iter_mut().find(|(key, _)| same(key)) {
            *value += by;
            return;
        }
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        counters.push(((name.to_owned(), labels), by));
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

    /// Every counter with its labels and value, in the order of their names and labels.
    pub fn snapshot(&self) -> Vec<Counter> {
        let mut sums: BTreeMap<&(String, Labels), u64> = BTreeMap::new();
        let shards: Vec<_> = self
            .counters
            .iter()
            .map(|shard| shard.0.lock().unwrap_or_else(|e| e.into_inner()))
            .collect();
        for (key, value) in shards.iter().flat_map(|counters| counters.iter()) {
            *sums.entry(key).or_default() += value;
        }
        sums.into_iter()
            .map(|((name, labels), value)| Counter {
                name: name.clone(),
                labels: labels.clone(),
                value,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_added_on_many_threads_are_summed_in_one_reading() {
        let metrics = Metrics::default();
        let threads = 2 * SHARDS;
        std::thread::scope(|s| {
            for t in 0..threads {
                let metrics = &metrics;
                s.spawn(move || {
                    for _ in 0..100 {
                        metrics.add("b_total", &[("k", "v")], 1);
                        metrics.add("a_total", &[], 2);
                        if t % 2 == 0 {
                            metrics.add("b_total", &[("k", "w")], 1);
                        }
                    }
                });
            }
        });
        let read: Vec<_> = metrics
            .snapshot()
            .into_iter()
            .map(|c| (c.name, c.labels, c.value))
            .collect();
        let label = |v: &str| vec![("k".to_owned(), v.to_owned())];
        assert_eq!(
            read,
            [
                ("a_total".to_owned(), vec![], 200 * threads as u64),
                ("b_total".to_owned(), label("v"), 100 * threads as u64),
                ("b_total".to_owned(), label("w"), 50 * threads as u64),
            ]
        );
    }
}
