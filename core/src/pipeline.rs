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
    metrics: Metrics,
}

impl Pipeline {
    /// A pipeline made in code from named stages.
    pub fn from_stages(name: &str, stages: Vec<(String, Arc<dyn Stage>)>) -> Self {
        let (names, stages): (Vec<String>, Vec<Arc<dyn Stage>>) = stages.into_iter().unzip();
        Self {
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
        let outcome = Next::chain(&self.stages, &self.names).run(event).await;
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
