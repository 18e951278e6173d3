//! Pipeline files: loading, environment overrides, validation, and the runtime [`Pipeline`].
//!
//! A pipeline file is TOML with one or more named pipelines, each an ordered list of stages:
//!
//! ```toml
//! [settings]
//! data_dir = ".cutover"          # where embedded backends keep their files
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

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use serde_json::{Map, Value};

use crate::context::{BuildContext, Metrics};
use crate::error::{BuildError, LoadError, LoadErrors};
use crate::event::Event;
use crate::outcome::Outcome;
use crate::stage::{BoxFuture, Next, Stage, StageConfig, ValidateContext, registered_stages};

/// The prefix of overriding environment variables.
pub const ENV_PREFIX: &str = "CUTOVER_";

/// File-wide settings (`[settings]`).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Where embedded backends keep their files (default `.cutover`, relative to the working
    /// directory).
    pub data_dir: Option<PathBuf>,
    /// The pipeline commands run when none is named (default: the only one).
    pub default_pipeline: Option<String>,
    /// `[settings.aws]`: how long AWS calls may take and how often they are tried.
    pub aws: AwsCalls,
}

/// `[settings.aws]`: limits on every AWS call the file's stages and hosts make, so a hung
/// connection or a throttled API cannot stall a rollout step for ever. Each call is retried by
/// the SDK's standard mode (exponential backoff with jitter) on throttling, 5xx, timeouts and
/// connection errors; the stages make the retried writes safe (owner-guarded, idempotent names).
///
/// ```toml
/// [settings.aws]
/// attempt_timeout = "10s"     # one HTTP attempt, connect to last byte
/// operation_timeout = "60s"   # one call, all its attempts and backoff included
/// max_attempts = 5            # attempts per call (default: AWS_MAX_ATTEMPTS, else 3)
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsCalls {
    /// The longest one HTTP attempt may take before it is abandoned (and retried).
    #[serde(default = "default_attempt_timeout", with = "crate::duration")]
    pub attempt_timeout: std::time::Duration,
    /// The longest one call may take, all its attempts and backoff included.
    #[serde(default = "default_operation_timeout", with = "crate::duration")]
    pub operation_timeout: std::time::Duration,
    /// Attempts per call; unset: `AWS_MAX_ATTEMPTS`, else the SDK's 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
}

impl Default for AwsCalls {
    fn default() -> Self {
        Self {
            attempt_timeout: default_attempt_timeout(),
            operation_timeout: default_operation_timeout(),
            max_attempts: None,
        }
    }
}

fn default_attempt_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}
fn default_operation_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(60)
}

/// A loaded, validated pipeline file.
#[derive(Debug)]
pub struct PipelineFile {
    /// The file as named by the user.
    pub display: String,
    /// Directory of the file; relative paths in stages resolve against it.
    pub base_dir: PathBuf,
    /// `[settings]`.
    pub settings: Settings,
    /// The pipelines, in file order.
    pub pipelines: Vec<PipelineSpec>,
}

/// One pipeline's configuration.
#[derive(Debug)]
pub struct PipelineSpec {
    /// Its name.
    pub name: String,
    /// What it is for.
    pub description: Option<String>,
    /// Its stages, in order.
    pub stages: Vec<StageSpec>,
}

/// One stage's configuration.
#[derive(Debug)]
pub struct StageSpec {
    /// The stage's name in outcomes and metrics: its `name`, or else its `type`.
    pub name: String,
    /// The registered type.
    pub type_name: String,
    /// The typed configuration.
    pub config: Box<dyn StageConfig>,
    /// The stage table as loaded (with `type` first, without `name`), after overrides.
    pub raw: Value,
}

impl PipelineSpec {
    /// The EventBridge event pattern that selects this pipeline's events: the patterns of its
    /// filtering stages ([`StageConfig::event_pattern`]) merged into one. `None` when no stage
    /// filters (the rule would have to match everything); an error names a field two stages
    /// both constrain.
    pub fn event_pattern(&self) -> Result<Option<Value>, String> {
        let mut merged: Option<Value> = None;
        for stage in &self.stages {
            let Some(p) = stage.config.event_pattern() else {
                continue;
            };
            match &mut merged {
                None => merged = Some(p),
                Some(m) => merge_patterns(m, &p, &mut Vec::new()).map_err(|path| {
                    format!(
                        "stage \"{}\" constrains \"{path}\", which an earlier stage already constrains; \
                         an EventBridge rule can hold one condition per field",
                        stage.name
                    )
                })?,
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
    pub fn pick(&self, name: Option<&str>) -> Result<&PipelineSpec, String> {
        let names = || {
            self.pipelines
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match name {
            Some(n) => self
                .pipeline(n)
                .ok_or_else(|| format!("{}: no pipeline \"{n}\"; the file has: {}", self.display, names())),
            None if self.pipelines.len() == 1 => Ok(&self.pipelines[0]),
            None if self.settings.default_pipeline.is_some() => {
                let n = self.settings.default_pipeline.as_deref().unwrap_or_default();
                self.pipeline(n).ok_or_else(|| {
                    format!(
                        "{}: settings.default_pipeline names no pipeline \"{n}\"; the file has: {}",
                        self.display,
                        names()
                    )
                })
            }
            None => Err(format!(
                "{}: the file has several pipelines ({}); choose one with --pipeline",
                self.display,
                names()
            )),
        }
    }

    /// A build context for this file: its settings' data directory and its base directory.
    pub fn build_context(&self) -> BuildContext {
        let aws = &self.settings.aws;
        BuildContext::new(
            self.settings
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(".cutover")),
        )
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
        let spec = self.pick(Some(name)).map_err(|message| {
            LoadErrors(vec![LoadError {
                file: self.display.clone(),
                pipeline: None,
                stage: None,
                field: None,
                message,
            }])
        })?;
        let cx = if cx.has_siblings() {
            cx.clone()
        } else {
            cx.clone().with_siblings(self.siblings())
        };
        let stages = spec
            .stages
            .iter()
            .map(|s| (s.name.as_str(), s.type_name.as_str(), s.config.as_ref()));
        build_stages(&spec.name, stages, &cx).await.map_err(|errors| {
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

    /// Every pipeline of the file as raw stage tables, for stages that run a sibling pipeline
    /// (e.g. a state machine's Task handlers).
    pub fn siblings(&self) -> Siblings {
        Siblings {
            file: self.display.clone(),
            pipelines: self
                .pipelines
                .iter()
                .map(|p| {
                    (
                        p.name.clone(),
                        p.stages.iter().map(|s| (s.name.clone(), s.raw.clone())).collect(),
                    )
                })
                .collect(),
        }
    }
}

/// The pipelines of one file as raw stage tables, so a stage can build a sibling pipeline
/// ([`BuildContext::build_pipeline`]).
#[derive(Debug, Clone, Default)]
pub struct Siblings {
    file: String,
    pipelines: std::collections::BTreeMap<String, Vec<(String, Value)>>,
}

impl Siblings {
    /// The pipeline names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.pipelines.keys().map(String::as_str)
    }

    pub(crate) fn stages(&self, name: &str) -> Option<&[(String, Value)]> {
        self.pipelines.get(name).map(Vec::as_slice)
    }

    pub(crate) fn file(&self) -> &str {
        &self.file
    }
}

/// Builds a chain of stages; on failure, every stage that failed with its 1-based index and type.
pub(crate) async fn build_stages(
    pipeline: &str,
    stages: impl Iterator<Item = (&str, &str, &dyn StageConfig)>,
    cx: &BuildContext,
) -> Result<Pipeline, Vec<(usize, String, BuildError)>> {
    let mut built = Vec::new();
    let mut errors = Vec::new();
    for (i, (name, type_name, config)) in stages.enumerate() {
        match config.build(cx).await {
            Ok(stage) => built.push((name.to_owned(), stage)),
            Err(err) => errors.push((i + 1, type_name.to_owned(), err)),
        }
    }
    if errors.is_empty() {
        Ok(Pipeline::from_stages(pipeline, built).with_metrics(cx.metrics().clone()))
    } else {
        Err(errors)
    }
}

/// Loads pipeline files with environment overrides.
#[derive(Debug, Clone, Default)]
pub struct Loader {
    env: Vec<(String, String)>,
}

impl Loader {
    /// A loader with no overrides.
    pub fn new() -> Self {
        Self::default()
    }

    /// A loader taking overrides from this process's `CUTOVER_PIPELINES__…` and
    /// `CUTOVER_SETTINGS__…` variables.
    pub fn from_env() -> Self {
        Self {
            env: std::env::vars().filter(|(k, _)| is_override(k)).collect(),
        }
    }

    /// Adds one override variable (for tests and embedders).
    pub fn with_var(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        if is_override(&key) {
            self.env.push((key, value.into()));
        }
        self
    }

    /// Loads and validates a file.
    pub fn load_file(&self, path: impl AsRef<Path>) -> Result<PipelineFile, LoadErrors> {
        let path = path.as_ref();
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            LoadErrors(vec![LoadError {
                file: display.clone(),
                pipeline: None,
                stage: None,
                field: None,
                message: format!("cannot read the file: {e}"),
            }])
        })?;
        let base = path.parent().map(Path::to_owned).unwrap_or_default();
        self.load_str(&display, &text, &base)
    }

    /// Loads and validates pipeline TOML read from `display`.
    pub fn load_str(&self, display: &str, text: &str, base_dir: &Path) -> Result<PipelineFile, LoadErrors> {
        let mut errors = Vec::new();
        let err = |pipeline: Option<&str>,
                   stage: Option<(usize, &str)>,
                   field: Option<&str>,
                   message: String| LoadError {
            file: display.to_owned(),
            pipeline: pipeline.map(str::to_owned),
            stage: stage.map(|(i, t)| (i, t.to_owned())),
            field: field.map(str::to_owned),
            message,
        };
        let mut root = match read_toml(text) {
            Ok(v) => v,
            Err(message) => return Err(LoadErrors(vec![err(None, None, None, message)])),
        };
        for (key, value) in &self.env {
            if let Err(message) = apply_override(&mut root, key, value) {
                errors.push(err(
                    None,
                    None,
                    None,
                    format!("environment variable {key}: {message}"),
                ));
            }
        }
        let Value::Object(mut root) = root else {
            return Err(LoadErrors(vec![err(
                None,
                None,
                None,
                "expected a table at the top".into(),
            )]));
        };

        let mut settings = Settings::default();
        if let Some(s) = root.shift_remove("settings") {
            match s {
                Value::Object(mut s) => {
                    match s.shift_remove("data_dir") {
                        Some(Value::String(d)) => settings.data_dir = Some(PathBuf::from(d)),
                        Some(other) => errors.push(err(
                            None,
                            None,
                            Some("settings.data_dir"),
                            format!("expected a path string, found {other}"),
                        )),
                        None => {}
                    }
                    match s.shift_remove("default_pipeline") {
                        Some(Value::String(d)) => settings.default_pipeline = Some(d),
                        Some(other) => errors.push(err(
                            None,
                            None,
                            Some("settings.default_pipeline"),
                            format!("expected a pipeline name, found {other}"),
                        )),
                        None => {}
                    }
                    if let Some(aws) = s.shift_remove("aws") {
                        match serde_path_to_error::deserialize::<_, AwsCalls>(aws) {
                            Ok(aws) => settings.aws = aws,
                            Err(e) => {
                                let path = e.path().to_string();
                                let field = if path == "." {
                                    "settings.aws".to_owned()
                                } else {
                                    format!("settings.aws.{path}")
                                };
                                errors.push(err(None, None, Some(&field), e.into_inner().to_string()));
                            }
                        }
                    }
                    for k in s.keys() {
                        errors.push(err(
                            None,
                            None,
                            None,
                            format!(
                                "unknown setting \"{k}\" in [settings], expected one of: data_dir, default_pipeline, aws"
                            ),
                        ));
                    }
                }
                _ => errors.push(err(
                    None,
                    None,
                    Some("settings"),
                    "expected a table [settings]".into(),
                )),
            }
        }
        let pipelines_value = root.shift_remove("pipelines");
        for k in root.keys() {
            errors.push(err(
                None,
                None,
                None,
                format!("unknown top-level key \"{k}\", expected one of: settings, pipelines"),
            ));
        }
        let pipelines_map = match pipelines_value {
            Some(Value::Object(m)) if !m.is_empty() => m,
            Some(Value::Object(_)) | None => {
                errors.push(err(
                    None,
                    None,
                    None,
                    "no pipelines: add a table [pipelines.NAME] with [[pipelines.NAME.stages]]".into(),
                ));
                Map::new()
            }
            Some(_) => {
                errors.push(err(
                    None,
                    None,
                    Some("pipelines"),
                    "expected tables [pipelines.NAME]".into(),
                ));
                Map::new()
            }
        };
        let pipeline_names: Vec<String> = pipelines_map.keys().cloned().collect();
        let validate_cx = ValidateContext {
            base_dir,
            pipelines: &pipeline_names,
        };

        let mut pipelines = Vec::new();
        for (pname, pvalue) in pipelines_map {
            let Value::Object(mut pmap) = pvalue else {
                errors.push(err(
                    Some(&pname),
                    None,
                    None,
                    "expected a table with `stages`".into(),
                ));
                continue;
            };
            let description = match pmap.shift_remove("description") {
                Some(Value::String(d)) => Some(d),
                Some(_) => {
                    errors.push(err(
                        Some(&pname),
                        None,
                        Some("description"),
                        "expected a string".into(),
                    ));
                    None
                }
                None => None,
            };
            let stages_value = pmap.shift_remove("stages");
            for k in pmap.keys() {
                errors.push(err(
                    Some(&pname),
                    None,
                    None,
                    format!("unknown key \"{k}\", expected one of: description, stages"),
                ));
            }
            let stage_values = match stages_value {
                Some(Value::Array(a)) if !a.is_empty() => a,
                _ => {
                    errors.push(err(
                        Some(&pname),
                        None,
                        None,
                        format!("no stages: add [[pipelines.{pname}.stages]] tables, each with a `type`"),
                    ));
                    continue;
                }
            };
            let mut stages = Vec::new();
            let mut seen_names = BTreeSet::new();
            for (i, svalue) in stage_values.into_iter().enumerate() {
                let index = i + 1;
                let Value::Object(smap) = svalue else {
                    errors.push(err(
                        Some(&pname),
                        Some((index, "?")),
                        None,
                        "expected a table with a `type`".into(),
                    ));
                    continue;
                };
                let type_name = match smap.get("type") {
                    Some(Value::String(t)) => t.clone(),
                    _ => {
                        errors.push(err(
                            Some(&pname),
                            Some((index, "?")),
                            Some("type"),
                            format!("missing stage `type`; registered types: {}", registered_list()),
                        ));
                        continue;
                    }
                };
                let mut ordered = Map::new();
                ordered.insert("type".into(), Value::String(type_name.clone()));
                let mut label = None;
                for (k, v) in smap {
                    match k.as_str() {
                        "type" => {}
                        "name" => label = Some(v),
                        _ => {
                            ordered.insert(k, v);
                        }
                    }
                }
                let name = match label {
                    Some(Value::String(n)) => n,
                    Some(_) => {
                        errors.push(err(
                            Some(&pname),
                            Some((index, &type_name)),
                            Some("name"),
                            "expected a string".into(),
                        ));
                        type_name.clone()
                    }
                    None => type_name.clone(),
                };
                if !seen_names.insert(name.clone()) && name != type_name {
                    errors.push(err(
                        Some(&pname),
                        Some((index, &type_name)),
                        Some("name"),
                        format!("another stage is already named \"{name}\""),
                    ));
                }
                let raw = Value::Object(ordered);
                match serde_path_to_error::deserialize::<_, Box<dyn StageConfig>>(raw.clone()) {
                    Ok(config) => {
                        for fe in config.validate(&validate_cx) {
                            let field = Some(fe.field.as_str()).filter(|f| !f.is_empty());
                            errors.push(err(Some(&pname), Some((index, &type_name)), field, fe.message));
                        }
                        stages.push(StageSpec {
                            name,
                            type_name,
                            config,
                            raw: raw.clone(),
                        });
                    }
                    Err(e) => {
                        let path = e.path().to_string();
                        let is_type = path == "type";
                        let field = Some(path.as_str()).filter(|p| *p != "." && !p.is_empty() && !is_type);
                        let message = humanize(&e.into_inner().to_string(), is_type);
                        errors.push(err(Some(&pname), Some((index, &type_name)), field, message));
                    }
                }
            }
            pipelines.push(PipelineSpec {
                name: pname,
                description,
                stages,
            });
        }
        if errors.is_empty() {
            Ok(PipelineFile {
                display: display.to_owned(),
                base_dir: base_dir.to_owned(),
                settings,
                pipelines,
            })
        } else {
            Err(LoadErrors(errors))
        }
    }
}

fn read_toml(text: &str) -> Result<Value, String> {
    config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize::<Value>())
        .map_err(|e| format!("not valid TOML: {e}"))
}

fn registered_list() -> String {
    registered_stages()
        .iter()
        .map(|s| s.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rewrites serde's messages for people: `unknown field `tabel`, expected one of `table`, `key``
/// becomes `unknown field "tabel", expected one of: table, key`; an unknown stage type lists
/// the registered ones.
fn humanize(message: &str, is_stage_type: bool) -> String {
    if let Some(rest) = message
        .strip_prefix("unknown variant `")
        .filter(|_| is_stage_type)
    {
        let ty = rest.split('`').next().unwrap_or_default();
        return format!(
            "unknown stage type \"{ty}\"; registered types: {}",
            registered_list()
        );
    }
    let (head, list) = match message.split_once(", expected one of ") {
        Some((h, l)) => (h, Some(l)),
        None => (message, None),
    };
    let mut out = quote_backticks(head);
    if let Some(list) = list {
        out.push_str(", expected one of: ");
        out.push_str(&list.replace('`', ""));
    }
    out
}

fn quote_backticks(s: &str) -> String {
    s.replace('`', "\"")
}

fn is_override(key: &str) -> bool {
    key.starts_with("CUTOVER_PIPELINES__") || key.starts_with("CUTOVER_SETTINGS__")
}

fn norm(s: &str) -> String {
    s.to_ascii_uppercase().replace('-', "_")
}

fn apply_override(root: &mut Value, key: &str, raw: &str) -> Result<(), String> {
    let segments: Vec<&str> = key[ENV_PREFIX.len()..].split("__").collect();
    let value = serde_json::from_str::<Value>(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
    let mut cur = root;
    let mut i = 0;
    while i < segments.len() {
        let seg = segments[i];
        let last = i + 1 == segments.len();
        let is_stages =
            matches!(segments.get(i.wrapping_sub(1)), Some(s) if s.eq_ignore_ascii_case("stages")) && i >= 3;
        if is_stages {
            let Value::Array(stages) = cur else {
                return Err("the pipeline has no stage list".into());
            };
            let idx = match seg.parse::<usize>() {
                Ok(n) if n >= 1 && n <= stages.len() => n - 1,
                Ok(n) => {
                    return Err(format!(
                        "there is no stage {n} (the pipeline has {})",
                        stages.len()
                    ));
                }
                Err(_) => {
                    let matches: Vec<usize> = stages
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| {
                            let named = s.get("name").and_then(Value::as_str);
                            let ty = s.get("type").and_then(Value::as_str);
                            named.map(norm).as_deref() == Some(seg)
                                || (named.is_none() && ty.map(norm).as_deref() == Some(seg))
                        })
                        .map(|(i, _)| i)
                        .collect();
                    match matches.as_slice() {
                        [one] => *one,
                        [] => return Err(format!("no stage named or typed \"{seg}\"")),
                        _ => return Err(format!("several stages match \"{seg}\"; use the stage number")),
                    }
                }
            };
            if last {
                return Err("name a field of the stage after its number".into());
            }
            cur = &mut stages[idx];
            i += 1;
            continue;
        }
        let Value::Object(map) = cur else {
            return Err(format!("\"{seg}\" is inside a value that is not a table"));
        };
        let existing = map.keys().find(|k| norm(k) == seg).cloned();
        let k = existing.unwrap_or_else(|| seg.to_ascii_lowercase());
        if last {
            map.insert(k, value);
            return Ok(());
        }
        if i == 1 && !map.contains_key(&k) && segments[0] == "PIPELINES" {
            return Err(format!("no pipeline matches \"{seg}\""));
        }
        cur = map.entry(k).or_insert_with(|| Value::Object(Map::new()));
        i += 1;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humanizes_serde_messages() {
        assert_eq!(
            humanize(
                "unknown field `tabel`, expected one of `table`, `key`, `ttl`",
                false
            ),
            "unknown field \"tabel\", expected one of: table, key, ttl"
        );
        assert!(
            humanize("unknown variant `nope`, expected one of `a`", true)
                .starts_with("unknown stage type \"nope\"; registered types:")
        );
        assert_eq!(
            humanize("unknown variant `x`, expected one of `a`, `b`", false),
            "unknown variant \"x\", expected one of: a, b"
        );
    }

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
            pipelines: Vec::new(),
        };
        let aws = file.build_context().aws_settings().clone();
        assert_eq!(aws.attempt_timeout, Some(std::time::Duration::from_secs(2)));
        assert_eq!(aws.operation_timeout, Some(std::time::Duration::from_secs(60)));
        assert_eq!(aws.max_attempts, Some(5));
    }

    #[test]
    fn overrides_address_stages_by_number_and_type() {
        let mut v = serde_json::json!({"pipelines": {"ecs-events": {"stages": [{"type": "filter"}, {"type": "dedup", "table": "a"}]}}});
        apply_override(&mut v, "CUTOVER_PIPELINES__ECS_EVENTS__STAGES__2__TABLE", "b").unwrap();
        assert_eq!(v["pipelines"]["ecs-events"]["stages"][1]["table"], "b");
        apply_override(
            &mut v,
            "CUTOVER_PIPELINES__ECS_EVENTS__STAGES__FILTER__LAST_STATUS",
            "[\"RUNNING\"]",
        )
        .unwrap();
        assert_eq!(
            v["pipelines"]["ecs-events"]["stages"][0]["last_status"],
            serde_json::json!(["RUNNING"])
        );
        assert!(
            apply_override(&mut v, "CUTOVER_PIPELINES__NOPE__STAGES__1__X", "1")
                .unwrap_err()
                .contains("no pipeline")
        );
        assert!(
            apply_override(&mut v, "CUTOVER_PIPELINES__ECS_EVENTS__STAGES__9__X", "1")
                .unwrap_err()
                .contains("no stage 9")
        );
    }
}
