//! cutover as a library: load a pipeline file into a `tower::Service` and host it — in your own
//! AWS Lambda function ([`lambda`]) or your own runner ([`load`]).
//!
//! Everything a pipeline needs is linked by this crate: the built-in stages
//! (`cutover-stages`) and the example `notify` plugin. Link your own stage crates beside it
//! and call something in them (typetag only sees linked crates).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use cutover::{Event, load};
//!
//! let hosted = load("pipelines/catsndogs.toml", Some("ecs-events")).await?;
//! let outcome = hosted.pipeline.run(Event::from_bytes(b"{}".to_vec())).await;
//! println!("{outcome}");
//! hosted.context.background().drain().await; // let started rollouts finish
//! # Ok(()) }
//! ```

pub mod lambda;

use std::path::Path;

pub use cutover_core::{self as core, BuildContext, Event, Loader, Outcome, Pipeline};
pub use cutover_stages as stages;

/// A built pipeline with the context its stages share.
#[derive(Debug, Clone)]
pub struct Hosted {
    /// The pipeline; a `tower::Service<Event, Response = Outcome>`.
    pub pipeline: Pipeline,
    /// What its stages share (AWS configuration, clock, background work, metrics).
    pub context: BuildContext,
    /// The file's ECS lifecycle hook pipelines (`ecs_hook`), when it has any.
    pub hooks: Option<cutover_stages::ecs_hook::EcsHooks>,
}

/// Why a pipeline could not be hosted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The file has problems (every one of them).
    #[error("{0}")]
    Load(#[from] cutover_core::LoadErrors),
    /// No such pipeline, or none named where several exist.
    #[error("{0}")]
    Pick(cutover_core::PipelineError),
}

/// Makes sure the built-in stages and the example plugin are linked and registered.
pub fn link_builtin_stages() {
    cutover_stages::link();
    cutover_plugin_notify::link();
}

/// Loads `file` (with `CUTOVER_…` environment overrides) and builds the pipeline `name` (or the
/// file's default), with the data directory of its `[settings]`. `CUTOVER_CLOCK=virtual` runs
/// it on virtual time (waits take no real time: for tests and dry runs).
pub async fn load(file: impl AsRef<Path>, name: Option<&str>) -> Result<Hosted, HostError> {
    link_builtin_stages();
    let file = Loader::from_env().load_file(file)?;
    let spec = file.pick(name).map_err(HostError::Pick)?;
    let mut context = file.build_context();
    if std::env::var("CUTOVER_CLOCK").is_ok_and(|c| c == "virtual") {
        let clock = cutover_stages::state_machine::VirtualTime::starting_at(std::time::SystemTime::now());
        context = context.with_clock(std::sync::Arc::new(clock));
    }
    let pipeline = file.build(&spec.name, &context).await?;
    let hooks = cutover_stages::ecs_hook::EcsHooks::build(&file, &context).await?;
    Ok(Hosted {
        pipeline,
        context,
        hooks,
    })
}
