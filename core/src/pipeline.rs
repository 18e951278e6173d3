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
        // Most events are dropped by the first stage that judges them, from their bytes: then
        // the chain is not run (the stages before it are transparent to drops) — the same
        // outcome, without a call per stage.
        let ruled_out = self
            .gate
            .and_then(|k| Some((k, self.stages[k].rules_out(&event)?.into_owned())));
        let outcome = match ruled_out {
            Some((k, reason)) => Outcome::Dropped {
                stage: self.names[k].clone(),
                reason,
            },
            None => Next::chain(&self.stages, &self.names).run(event).await,
        };
        let stage = outcome.stage().unwrap_or("");
        self.metrics.add(
            "cutover_events_total",
            &[
                ("pipeline", &self.name),
                ("outcome", outcome.kind()),
                ("stage", stage),
            ],
            1,
        );
        self.metrics.add(
            "cutover_event_micros_total",
            &[("pipeline", &self.name)],
            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        );
        outcome
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
