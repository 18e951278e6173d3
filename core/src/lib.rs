//! Stable contracts of cutover: the event model, the [`Stage`] and [`StageConfig`] traits,
//! pipeline loading and validation, outcomes and errors.
//!
//! Everything else — the built-in stages, plugins, the hosts — depends on this crate, and this
//! crate depends on none of them. A pipeline is an ordered chain of stages; each stage is an
//! around-middleware that sees the event, may add to its context, and either calls the rest of
//! the chain (observing its [`Outcome`]) or ends the event itself.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use cutover_core::{Event, Loader};
//!
//! let file = Loader::from_env().load_file("pipelines/catsndogs.toml")?;
//! let pipeline = file.build("ecs-events", &file.build_context()).await?;
//! let outcome = pipeline.run(Event::from_bytes(std::fs::read("event.json")?)).await;
//! println!("{outcome}");
//! # Ok(()) }
//! ```

pub mod config;
pub mod context;
pub mod deploy;
pub mod duration;
pub mod error;
pub mod event;
pub mod fs;
pub mod metrics;
pub mod outcome;
pub mod path;
pub mod pipeline;
mod service;
pub mod stage;
pub mod template;

pub use config::{
    AwsCalls, DEFAULT_DATA_DIR, EcsHookSpec, HookStoreSpec, LIFECYCLE_STAGES, Loader, PipelineFile,
    PipelineSpec, SERVICE_CONTEXT, ServiceConfig, Services, Settings, Siblings, StageSpec,
};
pub use context::{
    AwsSettings, Background, BuildContext, Clock, Counter, HISTOGRAM_BOUNDS, Histogram, ManualClock, Metrics,
    SystemClock,
};
pub use deploy::{DeployContext, Deployment, ServiceScope, Statement};
pub use error::{BuildError, FieldError, LoadError, LoadErrors, PipelineError};
pub use event::{Event, EventError};
pub use outcome::{Outcome, StageError};
pub use path::{FieldPath, PathError};
pub use pipeline::{Batch, Pipeline};
pub use stage::{
    AsAny, BoxFuture, Next, Stage, StageConfig, StageInfo, StageLayer, StageService, ValidateContext,
    registered_stages, typetag_names,
};
pub use template::{Template, TemplateError, ValueTemplate};

#[doc(hidden)]
pub use inventory;
#[doc(hidden)]
pub use typetag;
