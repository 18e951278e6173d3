//! The runtime [`Pipeline`]: a built chain of stages, usable as a `tower::Service`. Pipeline
//! files and their loading are in [`crate::config`].

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::config::StageSpec;
use crate::context::{BuildContext, Metrics};
use crate::error::BuildError;
use crate::event::Event;
use crate::outcome::Outcome;
use crate::stage::{BoxFuture, Next, Stage};

/// Builds a chain of stages; on failure, every stage that failed with its 1-based index and type.
pub(crate) async fn build_stages(
    pipeline: &str,
    stages: &[StageSpec],
    cx: &BuildContext,
) -> Result<Pipeline, Vec<(usize, String, BuildError)>> {
    let mut built = Vec::new();
    let mut errors = Vec::new();
    for (i, stage) in stages.iter().enumerate() {
        match stage.build(cx).await {
            Ok(built_stage) => built.push((stage.name.clone(), built_stage)),
            Err(err) => errors.push((i + 1, stage.type_name.clone(), err)),
        }
    }
    if errors.is_empty() {
        Ok(Pipeline::from_stages(pipeline, built).with_metrics(cx.metrics().clone()))
    } else {
        Err(errors)
    }
}

/// A runnable pipeline: a chain of stages, usable as a `tower::Service`.
#[derive(Debug, Clone)]
pub struct Pipeline {
    name: Arc<str>,
    stages: Arc<[Arc<dyn Stage>]>,
    names: Arc<[String]>,
    /// The first stage that is not [transparent to drops](Stage::transparent_to_drops): an
    /// event it [rules out](Stage::rules_out) is dropped without running the chain.
    gate: Option<usize>,
    metrics: Metrics,
}

impl Pipeline {
    /// A pipeline made in code from named stages.
    pub fn from_stages(name: &str, stages: Vec<(String, Arc<dyn Stage>)>) -> Self {
        let (names, stages): (Vec<String>, Vec<Arc<dyn Stage>>) = stages.into_iter().unzip();
        let gate = stages.iter().position(|s| !s.transparent_to_drops());
        Self {
            gate,
            name: name.into(),
            stages: stages.into(),
            names: names.into(),
            metrics: Metrics::default(),
        }
    }

    /// Records into these metrics.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stages' names, in order.
    pub fn stage_names(&self) -> &[String] {
        &self.names
    }

    /// The metrics it records into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Runs one event through the chain.
    pub async fn run(&self, event: Event) -> Outcome {
        let started = Instant::now();
        let outcome = self.decide(event).await;
        let stage = outcome.stage().unwrap_or("");
        self.count(outcome.kind(), stage, 1);
        self.count_time(started);
        outcome
    }

    /// A run of events through this pipeline that counts its metrics as it goes and adds
    /// them once, when it is dropped: for a host that decides many events in a row (replay).
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            pipeline: self,
            started: Instant::now(),
            counts: Vec::new(),
        }
    }

    /// The outcome of one event, not counted.
    async fn decide(&self, event: Event) -> Outcome {
        // Most events are dropped by the first stage that judges them, from their bytes: then
        // the chain is not run (the stages before it are transparent to drops) — the same
        // outcome, without a call per stage.
        let ruled_out = self
            .gate
            .and_then(|k| Some((k, self.stages[k].rules_out(&event)?.into_owned())));
        match ruled_out {
            Some((k, reason)) => Outcome::Dropped {
                stage: self.names[k].clone(),
                reason,
            },
            None => Next::chain(&self.stages, &self.names).run(event).await,
        }
    }

    /// Adds `events` events that ended `kind` at `stage` ("" for none) to the metrics.
    fn count(&self, kind: &str, stage: &str, events: u64) {
        self.metrics.add(
            "cutover_events_total",
            &[("pipeline", &self.name), ("outcome", kind), ("stage", stage)],
            events,
        );
    }

    /// Adds the time since `started` to the time spent deciding events.
    fn count_time(&self, started: Instant) {
        self.metrics.add(
            "cutover_event_micros_total",
            &[("pipeline", &self.name)],
            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        );
    }
}

/// Events run through one [`Pipeline`] in a row ([`Pipeline::batch`]): the same outcomes and
/// the same event counts as [`Pipeline::run`], but counted here and added to the metrics once,
/// when the batch is dropped, rather than per event; and an event the pipeline drops by its
/// bytes alone can be done without an [`Outcome`] ([`Batch::rules_out`]).
///
/// The time it adds to `cutover_event_micros_total` is its whole life, from
/// [`Pipeline::batch`] to its drop — what the host does between its events included — where
/// [`Pipeline::run`] adds each event's own time: a host keeps a batch only while it has events
/// in hand, never while it waits for more.
#[derive(Debug)]
pub struct Batch<'p> {
    pipeline: &'p Pipeline,
    started: Instant,
    /// Events per outcome kind and stage ("" for none).
    counts: Vec<(&'static str, String, u64)>,
}

impl<'p> Batch<'p> {
    /// What [`Pipeline::run`] answers for `event`.
    pub async fn run(&mut self, event: Event) -> Outcome {
        let outcome = self.pipeline.decide(event).await;
        self.count(outcome.kind(), outcome.stage().unwrap_or(""));
        outcome
    }

    /// The name of the stage that drops `event` by its bytes alone ([`Stage::rules_out`],
    /// asked through [`Stage::is_ruled_out`]: no reason is built), if one does: the event is
    /// then done, counted as the drop [`Batch::run`] would give, but no outcome is built.
    /// Otherwise the event still has to be [run](Batch::run).
    pub fn rules_out(&mut self, event: &Event) -> Option<&'p str> {
        let pipeline = self.pipeline;
        let k = pipeline.gate?;
        if !pipeline.stages[k].is_ruled_out(event) {
            return None;
        }
        let stage = pipeline.names[k].as_str();
        self.count("dropped", stage);
        Some(stage)
    }

    fn count(&mut self, kind: &'static str, stage: &str) {
        match self.counts.iter_mut().find(|(k, s, _)| *k == kind && s == stage) {
            Some((_, _, events)) => *events += 1,
            None => self.counts.push((kind, stage.to_owned(), 1)),
        }
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        if self.counts.is_empty() {
            return;
        }
        for (kind, stage, events) in self.counts.drain(..) {
            self.pipeline.count(kind, &stage, events);
        }
        self.pipeline.count_time(self.started);
    }
}

impl tower::Service<Event> for Pipeline {
    type Response = Outcome;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Outcome, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, event: Event) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.run(event).await) })
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Drops events whose bytes lack `needle`, and says so from the bytes too; counts calls.
    #[derive(Debug)]
    struct Needle {
        needle: &'static str,
        processed: AtomicUsize,
    }

    impl Needle {
        fn new(needle: &'static str) -> Arc<Self> {
            Arc::new(Self {
                needle,
                processed: AtomicUsize::new(0),
            })
        }

        fn lacks(&self, event: &Event) -> bool {
            !String::from_utf8_lossy(event.raw()).contains(self.needle)
        }
    }

    impl Stage for Needle {
        fn rules_out(&self, event: &Event) -> Option<Cow<'_, str>> {
            self.lacks(event)
                .then(|| Cow::Owned(format!("no {}", self.needle)))
        }

        fn process<'a>(&'a self, event: Event, next: Next<'a>) -> BoxFuture<'a, Outcome> {
            self.processed.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if self.lacks(&event) {
                    Outcome::dropped(format!("no {}", self.needle))
                } else {
                    next.run(event).await
                }
            })
        }
    }

    /// Hands every event on; transparent to drops or not, as told; counts calls.
    #[derive(Debug)]
    struct Watch {
        transparent: bool,
        processed: AtomicUsize,
    }

    impl Watch {
        fn new(transparent: bool) -> Arc<Self> {
            Arc::new(Self {
                transparent,
                processed: AtomicUsize::new(0),
            })
        }
    }

    impl Stage for Watch {
        fn transparent_to_drops(&self) -> bool {
            self.transparent
        }

        fn process<'a>(&'a self, event: Event, next: Next<'a>) -> BoxFuture<'a, Outcome> {
            self.processed.fetch_add(1, Ordering::SeqCst);
            Box::pin(next.run(event))
        }
    }

    fn pipeline(stages: &[(&str, Arc<dyn Stage>)]) -> Pipeline {
        Pipeline::from_stages(
            "p",
            stages.iter().map(|(n, s)| ((*n).to_owned(), s.clone())).collect(),
        )
    }

    /// A watching stage (transparent to drops or not), then a filter of "green".
    fn watch_then_filter(transparent: bool) -> (Arc<Watch>, Arc<Needle>, Pipeline) {
        let watch = Watch::new(transparent);
        let needle = Needle::new("green");
        let p = pipeline(&[("watch", watch.clone()), ("filter", needle.clone())]);
        (watch, needle, p)
    }

    fn calls<T>(stage: &Arc<T>, count: impl Fn(&T) -> &AtomicUsize) -> usize {
        count(stage).load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn an_event_ruled_out_behind_transparent_stages_skips_the_chain_with_the_same_outcome() {
        let (watch, needle, p) = watch_then_filter(true);
        let out = p.run(Event::from_bytes(b"{\"blue\":1}".to_vec())).await;
        assert_eq!(
            out,
            Outcome::Dropped {
                stage: "filter".into(),
                reason: "no green".into()
            }
        );
        assert_eq!(
            calls(&watch, |w| &w.processed),
            0,
            "the transparent stage is not called"
        );
        assert_eq!(
            calls(&needle, |n| &n.processed),
            0,
            "nor the stage that ruled it out"
        );
        let snapshot = p.metrics().snapshot();
        assert!(
            snapshot.iter().any(|c| c.name == "cutover_events_total"
                && c.labels.iter().any(|(k, v)| k == "stage" && v == "filter")
                && c.value == 1),
            "the drop is counted as the chain would count it: {snapshot:?}"
        );

        // An event it does not rule out runs the whole chain.
        let out = p.run(Event::from_bytes(b"{\"green\":1}".to_vec())).await;
        assert!(out.is_passed());
        assert_eq!(calls(&watch, |w| &w.processed), 1);
        assert_eq!(calls(&needle, |n| &n.processed), 1);
    }

    /// The events counted per outcome and stage, from a snapshot of `p`'s metrics.
    fn events_counted(p: &Pipeline) -> Vec<(String, String, u64)> {
        let mut counted: Vec<_> = p
            .metrics()
            .snapshot()
            .into_iter()
            .filter(|c| c.name == "cutover_events_total")
            .map(|c| {
                let label = |key: &str| {
                    let (_, v) = c.labels.iter().find(|(k, _)| k == key).unwrap();
                    v.clone()
                };
                (label("outcome"), label("stage"), c.value)
            })
            .collect();
        counted.sort();
        counted
    }

    #[tokio::test]
    async fn a_batch_answers_and_counts_as_runs_one_by_one_do_once_it_is_done() {
        let events = ["{\"blue\":1}", "{\"green\":1}", "{\"blue\":2}", "{\"blue\":3}"];
        let (_, _, one_by_one) = watch_then_filter(true);
        let mut expected = Vec::new();
        for e in events {
            expected.push(one_by_one.run(Event::from_bytes(e.as_bytes().to_vec())).await);
        }

        let (watch, needle, p) = watch_then_filter(true);
        let mut batch = p.batch();
        let mut outcomes = Vec::new();
        for e in events {
            outcomes.push(batch.run(Event::from_bytes(e.as_bytes().to_vec())).await);
        }
        assert_eq!(outcomes, expected);
        assert!(
            events_counted(&p).is_empty(),
            "counted when the batch is done, not per event"
        );
        drop(batch);
        assert_eq!(events_counted(&p), events_counted(&one_by_one));
        assert_eq!(
            events_counted(&p),
            [
                ("dropped".to_owned(), "filter".to_owned(), 3),
                ("passed".to_owned(), String::new(), 1)
            ]
        );
        assert!(
            p.metrics()
                .snapshot()
                .iter()
                .any(|c| c.name == "cutover_event_micros_total"),
            "the batch's time is counted"
        );
        assert_eq!(calls(&watch, |w| &w.processed), 1, "only the green event ran");
        assert_eq!(calls(&needle, |n| &n.processed), 1);

        // An event ruled out by its bytes is done, and counted, without an outcome; one that
        // is not still has to be run.
        let mut batch = p.batch();
        assert_eq!(
            batch.rules_out(&Event::from_bytes(b"{\"blue\":4}".to_vec())),
            Some("filter")
        );
        assert_eq!(
            batch.rules_out(&Event::from_bytes(b"{\"green\":2}".to_vec())),
            None
        );
        drop(batch);
        assert_eq!(
            events_counted(&p),
            [
                ("dropped".to_owned(), "filter".to_owned(), 4),
                ("passed".to_owned(), String::new(), 1)
            ]
        );
        assert_eq!(calls(&watch, |w| &w.processed), 1, "nothing more ran");

        // A stage that sees drops rules nothing out: every event is run.
        let (_, _, p) = watch_then_filter(false);
        assert_eq!(
            p.batch().rules_out(&Event::from_bytes(b"{\"blue\":1}".to_vec())),
            None
        );
    }

    #[tokio::test]
    async fn a_stage_that_sees_drops_is_always_called() {
        let (watch, needle, p) = watch_then_filter(false);
        let out = p.run(Event::from_bytes(b"{\"blue\":1}".to_vec())).await;
        assert_eq!(out.stage(), Some("filter"));
        assert_eq!(calls(&watch, |w| &w.processed), 1);
        assert_eq!(calls(&needle, |n| &n.processed), 1);

        // Only the first stage that is not transparent is asked: one behind it may act on
        // what happens after it.
        let first = Needle::new("x");
        let second = Needle::new("green");
        let p = pipeline(&[("first", first.clone()), ("second", second.clone())]);
        let out = p.run(Event::from_bytes(b"{\"x\":1}".to_vec())).await;
        assert_eq!(out.stage(), Some("second"));
        assert_eq!(
            (calls(&first, |n| &n.processed), calls(&second, |n| &n.processed)),
            (1, 1)
        );
    }
}
