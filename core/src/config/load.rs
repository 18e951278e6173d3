//! Loading a pipeline file: TOML, environment overrides, then each part in turn — settings,
//! pipelines, stages — every problem collected, each naming where it is.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::overrides::{apply_override, is_override};
use super::services::{self, Services};
use super::{EcsHookSpec, PipelineFile, PipelineSpec, ServiceConfig, StageSpec, settings};
use crate::error::{LoadError, LoadErrors};
use crate::stage::{StageConfig, ValidateContext, registered_stages};

/// Loads pipeline files with environment overrides.
#[derive(Debug, Clone, Default)]
pub struct Loader {
    env: Vec<(String, String)>,
}

/// The problems found in one file so far.
#[derive(Debug)]
pub(super) struct Problems<'a> {
    file: &'a str,
    errors: Vec<LoadError>,
}

impl<'a> Problems<'a> {
    fn new(file: &'a str) -> Self {
        Self {
            file,
            errors: Vec::new(),
        }
    }

    /// A problem of the file as a whole, or of a setting (`field`).
    pub(super) fn file(&mut self, field: Option<&str>, message: impl Into<String>) {
        self.at(None, None, field, message);
    }

    /// A problem at a pipeline, a stage (1-based index and type) and a field.
    fn at(
        &mut self,
        pipeline: Option<&str>,
        stage: Option<(usize, &str)>,
        field: Option<&str>,
        message: impl Into<String>,
    ) {
        self.errors.push(LoadError {
            file: self.file.to_owned(),
            pipeline: pipeline.map(str::to_owned),
            stage: stage.map(|(i, t)| (i, t.to_owned())),
            field: field.map(str::to_owned),
            message: message.into(),
        });
    }

    fn into_result<T>(self, value: T) -> Result<T, LoadErrors> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(LoadErrors(self.errors))
        }
    }
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
            let mut problems = Problems::new(&display);
            problems.file(None, format!("cannot read the file: {e}"));
            LoadErrors(problems.errors)
        })?;
        let base = path.parent().map(Path::to_owned).unwrap_or_default();
        self.load_str(&display, &text, &base)
    }

    /// Loads and validates pipeline TOML read from `display`.
    pub fn load_str(&self, display: &str, text: &str, base_dir: &Path) -> Result<PipelineFile, LoadErrors> {
        let mut problems = Problems::new(display);
        let mut root = match read_toml(text) {
            Ok(Value::Object(root)) => root,
            Ok(_) => {
                problems.file(None, "expected a table at the top");
                return Err(LoadErrors(problems.errors));
            }
            Err(message) => {
                problems.file(None, message);
                return Err(LoadErrors(problems.errors));
            }
        };
        self.apply_overrides(&mut root, &mut problems);
        let settings = root
            .shift_remove("settings")
            .map(|s| settings::parse(s, &mut problems))
            .unwrap_or_default();
        let services = root
            .shift_remove("services")
            .map(|s| services::parse(s, &mut problems))
            .unwrap_or_default();
        let pipelines_value = root.shift_remove("pipelines");
        for k in root.keys() {
            problems.file(
                None,
                format!("unknown top-level key \"{k}\", expected one of: settings, services, pipelines"),
            );
        }
        let tables = pipeline_tables(pipelines_value, &mut problems);
        let names: Vec<String> = tables.keys().cloned().collect();
        let validate = ValidateContext {
            base_dir,
            pipelines: &names,
        };
        let loading = Loading {
            validate,
            services: &services,
        };
        let pipelines: Vec<PipelineSpec> = tables
            .into_iter()
            .filter_map(|(name, value)| load_pipeline(name, value, &loading, &mut problems))
            .collect();
        one_pipeline_per_hook_stage(&pipelines, &mut problems);
        check_claims(&pipelines, &mut problems);
        problems.into_result(PipelineFile {
            display: display.to_owned(),
            base_dir: base_dir.to_owned(),
            settings,
            services,
            pipelines,
        })
    }

    /// Applies this loader's environment overrides to the file's tree.
    fn apply_overrides(&self, root: &mut Map<String, Value>, problems: &mut Problems<'_>) {
        let mut tree = Value::Object(std::mem::take(root));
        for (key, value) in &self.env {
            if let Err(message) = apply_override(&mut tree, key, value) {
                problems.file(None, format!("environment variable {key}: {message}"));
            }
        }
        if let Value::Object(map) = tree {
            *root = map;
        }
    }
}

/// What loading a stage consults.
struct Loading<'a> {
    validate: ValidateContext<'a>,
    services: &'a Services,
}

/// Two services claiming one resource (a record, a listener) would shift each other's traffic.
fn check_claims(pipelines: &[PipelineSpec], problems: &mut Problems<'_>) {
    let mut owners: std::collections::BTreeMap<String, &str> = std::collections::BTreeMap::new();
    for pipeline in pipelines {
        for (i, stage) in pipeline.stages.iter().enumerate() {
            for s in &stage.per_service {
                for claim in s.config.claims() {
                    match owners.get(claim.as_str()) {
                        Some(owner) if *owner != s.service => problems.at(
                            Some(&pipeline.name),
                            Some((i + 1, &stage.type_name)),
                            None,
                            format!(
                                "services \"{owner}\" and \"{}\" both claim {claim}: give each service its own \
                                 traffic target in [services.{}]",
                                s.service, s.service
                            ),
                        ),
                        Some(_) => {}
                        None => {
                            owners.insert(claim, &s.service);
                        }
                    }
                }
            }
        }
    }
}

/// `pipelines`: a non-empty table of pipeline tables.
fn pipeline_tables(value: Option<Value>, problems: &mut Problems<'_>) -> Map<String, Value> {
    match value {
        Some(Value::Object(m)) if !m.is_empty() => m,
        Some(Value::Object(_)) | None => {
            problems.file(
                None,
                "no pipelines: add a table [pipelines.NAME] with [[pipelines.NAME.stages]]",
            );
            Map::new()
        }
        Some(_) => {
            problems.file(Some("pipelines"), "expected tables [pipelines.NAME]");
            Map::new()
        }
    }
}

/// One `[pipelines.NAME]` table: its description and stages.
fn load_pipeline(
    name: String,
    value: Value,
    loading: &Loading<'_>,
    problems: &mut Problems<'_>,
) -> Option<PipelineSpec> {
    let Value::Object(mut table) = value else {
        problems.at(Some(&name), None, None, "expected a table with `stages`");
        return None;
    };
    let description = match table.shift_remove("description") {
        Some(Value::String(d)) => Some(d),
        Some(_) => {
            problems.at(Some(&name), None, Some("description"), "expected a string");
            None
        }
        None => None,
    };
    let ecs_hook = table
        .shift_remove("ecs_hook")
        .and_then(|v| ecs_hook(&name, v, problems));
    let stages_value = table.shift_remove("stages");
    for k in table.keys() {
        problems.at(
            Some(&name),
            None,
            None,
            format!("unknown key \"{k}\", expected one of: description, ecs_hook, stages"),
        );
    }
    let stage_values = match stages_value {
        Some(Value::Array(a)) if !a.is_empty() => a,
        _ => {
            problems.at(
                Some(&name),
                None,
                None,
                format!("no stages: add [[pipelines.{name}.stages]] tables, each with a `type`"),
            );
            return None;
        }
    };
    let mut seen_names = BTreeSet::new();
    let stages = stage_values
        .into_iter()
        .enumerate()
        .filter_map(|(i, value)| load_stage(&name, i + 1, value, &mut seen_names, loading, problems))
        .collect();
    Some(PipelineSpec {
        name,
        description,
        stages,
        ecs_hook,
    })
}

/// `ecs_hook = { … }` of pipeline `name`.
fn ecs_hook(name: &str, value: Value, problems: &mut Problems<'_>) -> Option<EcsHookSpec> {
    match serde_path_to_error::deserialize::<_, EcsHookSpec>(value) {
        Ok(spec) => {
            let found = spec.problems();
            for (field, message) in &found {
                problems.at(
                    Some(name),
                    None,
                    Some(&format!("ecs_hook.{field}")),
                    message.clone(),
                );
            }
            found.is_empty().then_some(spec)
        }
        Err(e) => {
            let field = field_below("ecs_hook", &e);
            problems.at(Some(name), None, Some(&field), e.into_inner().to_string());
            None
        }
    }
}

/// The field a `serde_path_to_error` error names, below the table `prefix`.
pub(super) fn field_below<E>(prefix: &str, e: &serde_path_to_error::Error<E>) -> String {
    match e.path().to_string() {
        path if path == "." => prefix.to_owned(),
        path => format!("{prefix}.{path}"),
    }
}

/// Each lifecycle stage is answered by one pipeline of a file.
fn one_pipeline_per_hook_stage(pipelines: &[PipelineSpec], problems: &mut Problems<'_>) {
    let mut owner: std::collections::BTreeMap<&str, &str> = std::collections::BTreeMap::new();
    for p in pipelines {
        for stage in p.ecs_hook.iter().flat_map(|h| &h.stages) {
            if let Some(first) = owner.insert(stage, &p.name) {
                problems.at(
                    Some(&p.name),
                    None,
                    Some("ecs_hook.stages"),
                    format!(
                        "{stage} is already answered by pipeline {first:?}: one pipeline per lifecycle stage"
                    ),
                );
            }
        }
    }
}

/// One `[[pipelines.NAME.stages]]` table, parsed once into its typed configuration and
/// validated.
fn load_stage(
    pipeline: &str,
    index: usize,
    value: Value,
    seen_names: &mut BTreeSet<String>,
    loading: &Loading<'_>,
    problems: &mut Problems<'_>,
) -> Option<StageSpec> {
    let Value::Object(table) = value else {
        problems.at(
            Some(pipeline),
            Some((index, "?")),
            None,
            "expected a table with a `type`",
        );
        return None;
    };
    let Some(Value::String(type_name)) = table.get("type").cloned() else {
        problems.at(
            Some(pipeline),
            Some((index, "?")),
            Some("type"),
            format!("missing stage `type`; registered types: {}", registered_list()),
        );
        return None;
    };
    let here = Some((index, type_name.as_str()));
    // `type` first (typetag reads it), `name` is the pipeline's, not the stage's.
    let mut config_table = Map::new();
    config_table.insert("type".into(), Value::String(type_name.clone()));
    let mut label = None;
    for (k, v) in table {
        match k.as_str() {
            "type" => {}
            "name" => label = Some(v),
            _ => {
                config_table.insert(k, v);
            }
        }
    }
    let name = match label {
        Some(Value::String(n)) => n,
        Some(_) => {
            problems.at(Some(pipeline), here, Some("name"), "expected a string");
            type_name.clone()
        }
        None => type_name.clone(),
    };
    if !seen_names.insert(name.clone()) && name != type_name {
        problems.at(
            Some(pipeline),
            here,
            Some("name"),
            format!("another stage is already named \"{name}\""),
        );
    }
    let table = Value::Object(config_table);
    let at = |problems: &mut Problems<'_>, field: Option<&str>, message: String| {
        problems.at(Some(pipeline), here, field, message);
    };
    let references = services::references(&table);
    if references.is_empty() {
        let config = typed_config(&table, &loading.validate, &mut |f, m| at(problems, f, m))?;
        return Some(StageSpec::new(name, type_name, config));
    }
    if loading.services.is_empty() {
        let r = &references[0];
        at(
            problems,
            Some(&r.field),
            format!(
                "names {{service.{}}}, but the file has no [services.NAME] tables to take it from",
                r.path
            ),
        );
        return None;
    }
    let mut complete = true;
    for (service, values) in loading.services.iter() {
        for r in &references {
            if !services::defines(values, &r.path) {
                complete = false;
                at(
                    problems,
                    Some(&r.field),
                    format!(
                        "service \"{service}\" does not define \"{}\" (used as {{service.{}}}): add it to \
                         [services.{service}]",
                        r.path, r.path
                    ),
                );
            }
        }
    }
    if !complete {
        return None;
    }
    let per_event = registered_stages()
        .iter()
        .any(|s| s.name == type_name && s.per_event_templates);
    if per_event {
        let config = typed_config(&table, &loading.validate, &mut |f, m| at(problems, f, m))?;
        return Some(StageSpec::new(name, type_name, config));
    }
    let fields: Arc<[(String, String)]> = services::whole_fields(&table).into();
    let mut per_service = Vec::with_capacity(loading.services.len());
    for (service, values) in loading.services.iter() {
        let mut report = |f: Option<&str>, m: String| at(problems, f, format!("service \"{service}\": {m}"));
        let filled = match services::substitute(&table, values) {
            Ok(v) => v,
            Err((field, message)) => {
                report(Some(&field), message);
                continue;
            }
        };
        if let Some(config) = typed_config(&filled, &loading.validate, &mut report) {
            per_service.push(ServiceConfig {
                service: service.to_owned(),
                values: values.clone(),
                config,
                fields: fields.clone(),
            });
        }
    }
    if per_service.len() != loading.services.len() {
        return None;
    }
    let config = per_service[0].config.clone();
    Some(StageSpec {
        name,
        type_name,
        config,
        per_service,
    })
}

/// One stage table deserialised into its typed configuration and validated; each problem is
/// reported with its field.
fn typed_config(
    table: &Value,
    validate: &ValidateContext<'_>,
    report: &mut dyn FnMut(Option<&str>, String),
) -> Option<Arc<dyn StageConfig>> {
    match serde_path_to_error::deserialize::<_, Box<dyn StageConfig>>(table.clone()) {
        Ok(config) => {
            for fe in config.validate(validate) {
                let field = Some(fe.field.as_str()).filter(|f| !f.is_empty());
                report(field, fe.message);
            }
            Some(Arc::from(config))
        }
        Err(e) => {
            let path = e.path().to_string();
            let is_type = path == "type";
            let field = Some(path.as_str()).filter(|p| *p != "." && !p.is_empty() && !is_type);
            let message = humanize(&e.into_inner().to_string(), is_type);
            report(field, message);
            None
        }
    }
}

/// The file as a JSON tree (tables keep their order).
fn read_toml(text: &str) -> Result<Value, String> {
    config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize::<Value>())
        .map_err(|e| format!("not valid TOML: {e}"))
}

/// The registered stage types, comma-separated.
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

/// serde quotes names in backticks; messages quote them in double quotes.
fn quote_backticks(s: &str) -> String {
    s.replace('`', "\"")
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
}
