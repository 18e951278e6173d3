//! Pipeline files: what they hold ([`PipelineFile`], [`PipelineSpec`], [`StageSpec`],
//! [`Settings`]), how they are loaded ([`Loader`], `load.rs`; overrides in `overrides.rs`), and
//! building their pipelines. The runnable [`Pipeline`] is in `crate::pipeline`.
//!
//! A pipeline file is TOML with one or more named pipelines, each an ordered list of stages:
//!
//! ```toml
//! [settings]
//! data_dir = ".cutover"          # where embedded backends keep their files (the default)
//!
//! [pipelines.ecs-events]
//! description = "Start one canary per green deployment"
//!
//! [[pipelines.ecs-events.stages]]
//! type = "filter"
//! cluster = "catsndogsECScluster"
//! ```
//!
//! Loading walks everything and returns every problem at once ([`LoadErrors`]), each naming
//! the file, pipeline, stage and field. Environment variables override values without editing
//! the file (Lambda functions are configured this way):
//! `CUTOVER_PIPELINES__ECS_EVENTS__STAGES__2__TABLE=cats-dedup` sets `table` of stage 2
//! (1-based, as in error messages; a stage's `name` or unique `type` works instead of the
//! number), and `CUTOVER_SETTINGS__DATA_DIR=/tmp/x` sets a setting. Names match
//! case-insensitively with `-` written as `_`; a value is read as JSON when it parses as JSON
//! (numbers, booleans, arrays, tables), otherwise as a string.

mod ecs_hook;
mod load;
mod overrides;
mod services;
mod settings;
mod siblings;

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;

pub use ecs_hook::{EcsHookSpec, HookStoreSpec, LIFECYCLE_STAGES};
pub use load::Loader;
pub use overrides::ENV_PREFIX;
pub use services::{SERVICE_CONTEXT, Services};
pub use settings::{AwsCalls, DEFAULT_DATA_DIR, Settings};
pub use siblings::Siblings;

use crate::context::BuildContext;
use crate::error::{BuildError, LoadError, LoadErrors, PipelineError};
use crate::pipeline::{Pipeline, build_stages};
use crate::stage::{Stage, StageConfig};

/// A loaded, validated pipeline file.
#[derive(Debug)]
pub struct PipelineFile {
    /// The file as named by the user.
    pub display: String,
    /// Directory of the file; relative paths in stages resolve against it.
    pub base_dir: PathBuf,
    /// `[settings]`.
    pub settings: Settings,
    /// `[services.<name>]`: empty when the file has none.
    pub services: Services,
    /// The pipelines, in file order.
    pub pipelines: Vec<PipelineSpec>,
}

/// One pipeline's configuration.
#[derive(Debug, Clone)]
pub struct PipelineSpec {
    /// Its name.
    pub name: String,
    /// What it is for.
    pub description: Option<String>,
    /// Its stages, in order.
    pub stages: Vec<StageSpec>,
    /// `ecs_hook = { stages = [...] }`: the ECS lifecycle hook stages it answers.
    pub ecs_hook: Option<EcsHookSpec>,
}

/// One stage's configuration.
#[derive(Debug, Clone)]
pub struct StageSpec {
    /// The stage's name in outcomes and metrics: its `name`, or else its `type`.
    pub name: String,
    /// The registered type.
    pub type_name: String,
    /// The typed configuration, parsed once at load and shared with whoever builds the stage
    /// (this file's hosts, or a stage building a sibling pipeline). For a stage configured per
    /// service, the first service's.
    pub config: Arc<dyn StageConfig>,
    /// One configuration per service when the stage's table names `{service.…}` (and the stage
    /// does not render templates per event); empty otherwise.
    pub per_service: Vec<ServiceConfig>,
}

/// One service's configuration of a stage configured per service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The service's name.
    pub service: String,
    /// The service's values (its table, with `name`).
    pub values: Arc<Value>,
    /// The stage's configuration with the service's values put in.
    pub config: Arc<dyn StageConfig>,
    /// The stage's fields that are exactly one service value, with its key
    /// (`("router.record", "record")`): what `cutover template` overrides per service.
    pub fields: Arc<[(String, String)]>,
}

impl StageSpec {
    /// A stage configured in code (no per-service configurations).
    pub fn new(name: impl Into<String>, type_name: impl Into<String>, config: Arc<dyn StageConfig>) -> Self {
        Self {
            name: name.into(),
            type_name: type_name.into(),
            config,
            per_service: Vec::new(),
        }
    }

    /// Every configuration of the stage: one per service, or the only one.
    pub fn configs(&self) -> Vec<&Arc<dyn StageConfig>> {
        if self.per_service.is_empty() {
            vec![&self.config]
        } else {
            self.per_service.iter().map(|s| &s.config).collect()
        }
    }

    /// The stage's event pattern; configured per service, one pattern matching any service's
    /// events (what they share, and a `$or` of the rest).
    pub fn event_pattern(&self) -> Option<Value> {
        if self.per_service.is_empty() {
            return self.config.event_pattern();
        }
        let patterns: Option<Vec<Value>> = self
            .per_service
            .iter()
            .map(|s| s.config.event_pattern())
            .collect();
        services::any_of(patterns?)
    }

    /// Builds the runtime stage: configured per service, one instance per service behind a
    /// stage that hands each event to its service's.
    pub async fn build(&self, cx: &BuildContext) -> Result<Arc<dyn Stage>, BuildError> {
        if self.per_service.is_empty() {
            return self.config.build(cx).await;
        }
        let mut instances = Vec::with_capacity(self.per_service.len());
        for s in &self.per_service {
            let stage = s.config.build(cx).await.map_err(|e| match e {
                BuildError::Field(mut f) => {
                    f.message = format!("service \"{}\": {}", s.service, f.message);
                    BuildError::Field(f)
                }
                other => BuildError::field("", format!("service \"{}\": {other}", s.service)),
            })?;
            instances.push(crate::service::Instance {
                service: s.service.clone(),
                values: s.values.clone(),
                stage,
            });
        }
        let selects = self.config.event_pattern().is_some();
        Ok(Arc::new(crate::service::PerService::new(instances, selects)))
    }
}

impl PipelineSpec {
    /// The EventBridge event pattern that selects this pipeline's events: the patterns of its
    /// filtering stages ([`StageConfig::event_pattern`]) merged into one. `None` when no stage
    /// filters (the rule would have to match everything); an error names a field two stages
    /// both constrain.
    pub fn event_pattern(&self) -> Result<Option<Value>, PipelineError> {
        let mut merged: Option<Value> = None;
        for stage in &self.stages {
            let Some(p) = stage.event_pattern() else {
                continue;
            };
            match &mut merged {
                None => merged = Some(p),
                Some(m) => {
                    merge_patterns(m, &p, &mut Vec::new()).map_err(|path| PipelineError::PatternConflict {
                        stage: stage.name.clone(),
                        path,
                    })?
                }
            }
        }
        Ok(merged)
    }
}

/// Deep-merges the event pattern `add` into `into` (objects merge; two value lists on one path
/// conflict, and the conflicting path is returned).
pub fn merge_patterns(into: &mut Value, add: &Value, path: &mut Vec<String>) -> Result<(), String> {
    match (into, add) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                path.push(k.clone());
                match a.get_mut(k) {
                    Some(existing) => merge_patterns(existing, v, path)?,
                    None => {
                        a.insert(k.clone(), v.clone());
                    }
                }
                path.pop();
            }
            Ok(())
        }
        _ => Err(path.join(".")),
    }
}

impl PipelineFile {
    /// The pipeline called `name`.
    pub fn pipeline(&self, name: &str) -> Option<&PipelineSpec> {
        self.pipelines.iter().find(|p| p.name == name)
    }

    /// The pipeline to run when the user named none: the only one, or an error listing them.
    pub fn pick(&self, name: Option<&str>) -> Result<&PipelineSpec, PipelineError> {
        let file = || self.display.clone();
        let names = || self.pipelines.iter().map(|p| p.name.clone()).collect();
        match name {
            Some(n) => self.pipeline(n).ok_or_else(|| PipelineError::Unknown {
                file: file(),
                name: n.to_owned(),
                names: names(),
            }),
            None if self.pipelines.len() == 1 => Ok(&self.pipelines[0]),
            None if self.settings.default_pipeline.is_some() => {
                let n = self.settings.default_pipeline.as_deref().unwrap_or_default();
                self.pipeline(n).ok_or_else(|| PipelineError::UnknownDefault {
                    file: file(),
                    name: n.to_owned(),
                    names: names(),
                })
            }
            None => Err(PipelineError::Ambiguous {
                file: file(),
                names: names(),
            }),
        }
    }

    /// A build context for this file: its settings' data directory and its base directory.
    pub fn build_context(&self) -> BuildContext {
        let aws = &self.settings.aws;
        BuildContext::new(self.settings.data_dir())
            .with_base_dir(self.base_dir.clone())
            .with_aws(crate::context::AwsSettings {
                attempt_timeout: Some(aws.attempt_timeout),
                operation_timeout: Some(aws.operation_timeout),
                max_attempts: aws.max_attempts,
                ..Default::default()
            })
    }

    /// Builds one pipeline; every stage that cannot be built is reported.
    pub async fn build(&self, name: &str, cx: &BuildContext) -> Result<Pipeline, LoadErrors> {
        let spec = self.pick(Some(name)).map_err(|e| {
            LoadErrors(vec![LoadError {
                file: self.display.clone(),
                pipeline: None,
                stage: None,
                field: None,
                message: e.to_string(),
            }])
        })?;
        let cx = if cx.has_siblings() {
            cx.clone()
        } else {
            cx.clone().with_siblings(self.siblings())
        };
        build_stages(&spec.name, &spec.stages, &cx)
            .await
            .map_err(|errors| {
                LoadErrors(
                    errors
                        .into_iter()
                        .map(|(index, type_name, err)| {
                            let (field, message) = match err {
                                BuildError::Field(f) => (Some(f.field).filter(|f| !f.is_empty()), f.message),
                                other => (None, other.to_string()),
                            };
                            LoadError {
                                file: self.display.clone(),
                                pipeline: Some(spec.name.clone()),
                                stage: Some((index, type_name)),
                                field,
                                message,
                            }
                        })
                        .collect(),
                )
            })
    }

    /// Every pipeline of the file, for stages that build a sibling pipeline (e.g. a state
    /// machine's Task handlers). Shares the typed configurations.
    pub fn siblings(&self) -> Siblings {
        Siblings::new(&self.display, &self.pipelines)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn aws_settings_are_read_checked_and_applied_to_the_build_context() {
        let stages = "[pipelines.p]\n[[pipelines.p.stages]]\ntype = \"nope\"\n";
        let bad = format!("[settings.aws]\nattempt_timeout = \"10 parsecs\"\nretries = 3\n{stages}");
        let errors = Loader::new()
            .load_str("x.toml", &bad, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(
            errors.contains("settings.aws.attempt_timeout") && errors.contains("invalid duration"),
            "{errors}"
        );
        let fine = "[settings.aws]\nattempt_timeout = \"2s\"\nmax_attempts = 5\n";
        let parsed: AwsCalls = toml::from_str::<toml::Table>(fine).unwrap()["settings"]["aws"]
            .clone()
            .try_into()
            .unwrap();
        assert_eq!(parsed.attempt_timeout, std::time::Duration::from_secs(2));
        assert_eq!(parsed.operation_timeout, std::time::Duration::from_secs(60));
        assert_eq!(parsed.max_attempts, Some(5));
        let file = PipelineFile {
            display: "x.toml".into(),
            base_dir: PathBuf::from("."),
            settings: Settings {
                aws: parsed,
                ..Settings::default()
            },
            services: Services::default(),
            pipelines: Vec::new(),
        };
        let aws = file.build_context().aws_settings().clone();
        assert_eq!(aws.attempt_timeout, Some(std::time::Duration::from_secs(2)));
        assert_eq!(aws.operation_timeout, Some(std::time::Duration::from_secs(60)));
        assert_eq!(aws.max_attempts, Some(5));
    }
}
