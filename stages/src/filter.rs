//! `filter`: lets through only the events that mean "a green task is up".
//!
//! The typed options compile into EventBridge event patterns — one per condition, ANDed — and
//! the stage decides with the pattern engine, so the stage and the EventBridge rule that
//! `cutover rule` prints from the same options can never disagree. Most events are rejected
//! from their raw bytes by the patterns' literal prefilters, before any JSON parse; a dropped
//! event carries the condition it failed.
//!
//! ```toml
//! [[pipelines.ecs-events.stages]]
//! type = "filter"
//! cluster = "catsndogsECScluster"
//! green = { container = "cats-green" }
//! # last_status = "RUNNING", desired_status = "RUNNING", detail_type = "ECS Task State Change" are defaults
//! ```
//!
//! ECS resource tags (`green.tags`) are not in task state change events: they are checked in
//! the stage only, after every pattern condition passed, from the source `green.tag_source`
//! names (see [`tags`]).

pub mod tags;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use cutover_core::config::merge_patterns;
use cutover_core::{
    BoxFuture, BuildContext, BuildError, DeployContext, Deployment, Event, FieldError, Next, Outcome, Stage,
    StageConfig, StageError, Statement, ValidateContext,
};
use cutover_pattern::{Pattern, Projection};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value, json};

use self::tags::{TagSource, TagSourceConfig};

cutover_core::register_stage!(
    "filter",
    "Passes only green tasks that reached RUNNING in the cluster; compiles to the EventBridge rule."
);

/// Configuration of the `filter` stage. Every option given must hold (AND); a list inside an
/// option is a choice (OR). An empty list switches a defaulted option off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Cluster names or ARNs the task must run in (one or a list).
    #[serde(
        default,
        deserialize_with = "crate::fields::one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cluster: Vec<String>,
    /// How a green task is recognised.
    #[serde(default)]
    pub green: GreenConfig,
    /// The task's `lastStatus` values that count.
    #[serde(default = "running", deserialize_with = "crate::fields::one_or_many")]
    pub last_status: Vec<String>,
    /// The task's `desiredStatus` values that count: a task that reached RUNNING while ECS
    /// already wants it STOPPED must not trigger.
    #[serde(default = "running", deserialize_with = "crate::fields::one_or_many")]
    pub desired_status: Vec<String>,
    /// EventBridge `detail-type` values.
    #[serde(
        default = "task_state_change",
        deserialize_with = "crate::fields::one_or_many"
    )]
    pub detail_type: Vec<String>,
    /// EventBridge `source` values.
    #[serde(default = "aws_ecs", deserialize_with = "crate::fields::one_or_many")]
    pub source: Vec<String>,
    /// Any EventBridge event pattern, as a TOML table or a JSON string, ANDed with the options
    /// above. It may not constrain a field an option above already constrains.
    #[serde(
        default,
        deserialize_with = "pattern_spec",
        skip_serializing_if = "Option::is_none"
    )]
    pub pattern: Option<Value>,
}

/// How a green task is recognised; every option given must hold.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GreenConfig {
    /// Container names (the seed's `TRIGGER_CONTAINERS`); one container of the task must match.
    #[serde(
        default,
        deserialize_with = "crate::fields::one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub container: Vec<Matcher>,
    /// Task-definition families (`cats-green` of `…:task-definition/cats-green:7`).
    #[serde(
        default,
        deserialize_with = "crate::fields::one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub family: Vec<Matcher>,
    /// ECS service names: the task's group is `service:NAME`.
    #[serde(
        default,
        deserialize_with = "crate::fields::one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service: Vec<Matcher>,
    /// Task groups as ECS writes them (`service:cats-green`, `family:batch`).
    #[serde(
        default,
        deserialize_with = "crate::fields::one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub group: Vec<Matcher>,
    /// The task's `startedBy` (`ecs-svc/…` for service deployments).
    #[serde(
        default,
        deserialize_with = "crate::fields::one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub started_by: Vec<Matcher>,
    /// Container images: a whole reference, or `name:tag` matching any registry
    /// (`cats:v3` matches `…/cats:v3`).
    #[serde(
        default,
        deserialize_with = "crate::fields::one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub image: Vec<Matcher>,
    /// ECS resource tags the task must carry (`deployment = "green"`). Events carry no tags:
    /// these are checked in the stage, from `tag_source`, never in the EventBridge rule.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Where tags come from: `{ type = "event" }` (default: the event's `detail.tags`),
    /// `{ type = "file", path = "tags.json" }`, or `{ type = "ecs" }` (DescribeTasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_source: Option<TagSourceConfig>,
}

/// A string condition: a plain string is exact (or a wildcard if it has `*`);
/// `{ prefix = "…" }`, `{ suffix = "…" }` and `{ wildcard = "…" }` say so explicitly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Matcher {
    /// Exact, or a wildcard when it contains `*`.
    Exact(String),
    /// Starts with.
    Prefix {
        /// The prefix.
        prefix: String,
    },
    /// Ends with.
    Suffix {
        /// The suffix.
        suffix: String,
    },
    /// `*` matches any run of characters.
    Wildcard {
        /// The wildcard pattern.
        wildcard: String,
    },
}

fn running() -> Vec<String> {
    vec!["RUNNING".into()]
}
fn task_state_change() -> Vec<String> {
    vec!["ECS Task State Change".into()]
}
fn aws_ecs() -> Vec<String> {
    vec!["aws.ecs".into()]
}

fn pattern_spec<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(text) => Some(
            serde_json::from_str(&text)
                .map_err(|e| serde::de::Error::custom(format!("the pattern string is not JSON: {e}")))?,
        ),
        other => Some(other),
    })
}

impl Matcher {
    /// The value as an EventBridge pattern value, with `wrap` putting literal text into the
    /// field's format (e.g. `service:` + name).
    fn to_pattern(&self, wrap: &Wrap) -> Vec<Value> {
        match (self, wrap) {
            (Matcher::Exact(s), Wrap::None) if !s.contains('*') => vec![json!(s)],
            (Matcher::Exact(s) | Matcher::Wildcard { wildcard: s }, Wrap::None) => {
                vec![json!({"wildcard": s})]
            }
            (Matcher::Prefix { prefix }, Wrap::None) => vec![json!({"prefix": prefix})],
            (Matcher::Suffix { suffix }, Wrap::None) => vec![json!({"suffix": suffix})],
            (Matcher::Exact(s), Wrap::Service) if !s.contains('*') => vec![json!(format!("service:{s}"))],
            (Matcher::Exact(s) | Matcher::Wildcard { wildcard: s }, Wrap::Service) => {
                vec![json!({"wildcard": format!("service:{s}")})]
            }
            (Matcher::Prefix { prefix }, Wrap::Service) => {
                vec![json!({"prefix": format!("service:{prefix}")})]
            }
            (Matcher::Suffix { suffix }, Wrap::Service) => {
                vec![json!({"wildcard": format!("service:*{suffix}")})]
            }
            (Matcher::Exact(s) | Matcher::Wildcard { wildcard: s }, Wrap::Family) => {
                vec![json!({"wildcard": format!("*:task-definition/{s}:*")})]
            }
            (Matcher::Prefix { prefix }, Wrap::Family) => {
                vec![json!({"wildcard": format!("*:task-definition/{prefix}*")})]
            }
            (Matcher::Suffix { suffix }, Wrap::Family) => {
                vec![json!({"wildcard": format!("*:task-definition/*{suffix}:*")})]
            }
            (Matcher::Exact(s), Wrap::Image) if !s.contains('*') => {
                vec![json!(s), json!({"suffix": format!("/{s}")})]
            }
            (Matcher::Exact(s) | Matcher::Wildcard { wildcard: s }, Wrap::Image) => {
                vec![json!({"wildcard": s}), json!({"wildcard": format!("*/{s}")})]
            }
            (Matcher::Prefix { prefix }, Wrap::Image) => vec![json!({"prefix": prefix})],
            (Matcher::Suffix { suffix }, Wrap::Image) => vec![json!({"suffix": suffix})],
        }
    }

    fn describe(&self) -> String {
        match self {
            Matcher::Exact(s) => s.clone(),
            Matcher::Prefix { prefix } => format!("{prefix}…"),
            Matcher::Suffix { suffix } => format!("…{suffix}"),
            Matcher::Wildcard { wildcard } => wildcard.clone(),
        }
    }
}

enum Wrap {
    None,
    Service,
    Family,
    Image,
}

/// One ANDed condition: its pattern, what it expects, and where to read the actual value.
#[derive(Debug, Clone)]
struct Condition {
    option: &'static str,
    what: &'static str,
    expected: String,
    path: &'static [&'static str],
    pattern: Value,
}

impl FilterConfig {
    fn conditions(&self) -> Vec<Condition> {
        let mut out = Vec::new();
        let mut push = |option: &'static str,
                        what: &'static str,
                        path: &'static [&'static str],
                        values: Vec<Value>,
                        expected: Vec<String>| {
            if values.is_empty() {
                return;
            }
            let mut pattern = Value::Array(values);
            for key in path.iter().rev() {
                pattern = json!({ *key: pattern });
            }
            out.push(Condition {
                option,
                what,
                expected: expected.join(" or "),
                path,
                pattern,
            });
        };
        let g = &self.green;
        let each = |m: &[Matcher], w: Wrap| m.iter().flat_map(|m| m.to_pattern(&w)).collect::<Vec<_>>();
        let describe = |m: &[Matcher]| m.iter().map(Matcher::describe).collect::<Vec<_>>();
        push(
            "green.container",
            "container name",
            &["detail", "containers", "name"],
            each(&g.container, Wrap::None),
            describe(&g.container),
        );
        push(
            "green.family",
            "task definition",
            &["detail", "taskDefinitionArn"],
            each(&g.family, Wrap::Family),
            describe(&g.family),
        );
        push(
            "green.service",
            "group",
            &["detail", "group"],
            each(&g.service, Wrap::Service),
            describe(&g.service)
                .into_iter()
                .map(|s| format!("service:{s}"))
                .collect(),
        );
        push(
            "green.group",
            "group",
            &["detail", "group"],
            each(&g.group, Wrap::None),
            describe(&g.group),
        );
        push(
            "green.started_by",
            "startedBy",
            &["detail", "startedBy"],
            each(&g.started_by, Wrap::None),
            describe(&g.started_by),
        );
        push(
            "green.image",
            "container image",
            &["detail", "containers", "image"],
            each(&g.image, Wrap::Image),
            describe(&g.image),
        );
        let clusters: Vec<Value> = self
            .cluster
            .iter()
            .map(|c| {
                if c.starts_with("arn:") {
                    json!(c)
                } else {
                    json!({"suffix": format!(":cluster/{c}")})
                }
            })
            .collect();
        push(
            "cluster",
            "cluster",
            &["detail", "clusterArn"],
            clusters,
            self.cluster.clone(),
        );
        let exact = |v: &[String]| v.iter().map(|s| json!(s)).collect::<Vec<_>>();
        push(
            "last_status",
            "lastStatus",
            &["detail", "lastStatus"],
            exact(&self.last_status),
            self.last_status.clone(),
        );
        push(
            "desired_status",
            "desiredStatus",
            &["detail", "desiredStatus"],
            exact(&self.desired_status),
            self.desired_status.clone(),
        );
        push(
            "detail_type",
            "detail-type",
            &["detail-type"],
            exact(&self.detail_type),
            self.detail_type.clone(),
        );
        push(
            "source",
            "source",
            &["source"],
            exact(&self.source),
            self.source.clone(),
        );
        if let Some(p) = &self.pattern {
            out.push(Condition {
                option: "pattern",
                what: "event",
                expected: "the custom pattern".into(),
                path: &[],
                pattern: p.clone(),
            });
        }
        // EventBridge matches the fields under one array element together: a name and an image
        // condition mean one container with both. Keep the two as one condition so the stage
        // decides exactly as the compiled rule does.
        if let (Some(n), Some(i)) = (
            out.iter().position(|c| c.option == "green.container"),
            out.iter().position(|c| c.option == "green.image"),
        ) {
            let image = out.remove(i);
            let name = &mut out[n];
            let _ = merge_patterns(&mut name.pattern, &image.pattern, &mut Vec::new());
            name.option = "green.container+image";
            name.what = "container (name, image)";
            name.expected = format!("{} with image {}", name.expected, image.expected);
        }
        out
    }

    /// The one EventBridge pattern all conditions amount to (tags excepted), or the fields two
    /// conditions both constrain.
    pub fn compiled_pattern(&self) -> Result<Value, crate::Error> {
        let mut merged = Value::Object(Map::new());
        for c in self.conditions() {
            merge_patterns(&mut merged, &c.pattern, &mut Vec::new()).map_err(|path| {
                crate::Error::PatternConflict {
                    option: c.option.to_owned(),
                    path,
                }
            })?;
        }
        Ok(merged)
    }
}

#[typetag::serde(name = "filter")]
impl StageConfig for FilterConfig {
    fn build<'a>(&'a self, cx: &'a BuildContext) -> BoxFuture<'a, Result<Arc<dyn Stage>, BuildError>> {
        Box::pin(async move { Ok(Arc::new(Filter::build(self, cx).await?) as Arc<dyn Stage>) })
    }

    fn validate(&self, _cx: &ValidateContext<'_>) -> Vec<FieldError> {
        let mut errors = Vec::new();
        for c in self.conditions() {
            if let Err(e) = Pattern::from_value(&c.pattern) {
                errors.push(FieldError::new(c.option, e.to_string()));
            }
        }
        if let Err(m) = self.compiled_pattern() {
            errors.push(FieldError::new("pattern", m.to_string()));
        }
        if self.green.tag_source.is_some() && self.green.tags.is_empty() {
            errors.push(FieldError::new(
                "green.tag_source",
                "set without green.tags: add the tags to require, or remove it",
            ));
        }
        errors
    }

    fn event_pattern(&self) -> Option<Value> {
        self.compiled_pattern().ok()
    }

    fn checks_beyond_pattern(&self) -> Vec<String> {
        if self.green.tags.is_empty() {
            return Vec::new();
        }
        let tags: Vec<String> = self
            .green
            .tags
            .iter()
            .map(|(k, v)| format!("{k} = {v:?}"))
            .collect();
        vec![format!(
            "ECS tags {} are checked in the filter stage (events carry no tags), not in the rule",
            tags.join(", ")
        )]
    }

    // The rule itself is not this stage's to add: `cutover template` builds it from the
    // pipeline's merged `event_pattern`. Only the tag source may call AWS.
    fn deployment(&self, _cx: &DeployContext<'_>) -> Result<Deployment, FieldError> {
        match &self.green.tag_source {
            None | Some(TagSourceConfig::Event) => Ok(Deployment::default()),
            Some(TagSourceConfig::File { .. }) => Err(FieldError::new(
                "green.tag_source",
                "a tags file is not packaged with the function: use { type = \"ecs\" } \
                 (DescribeTasks) or { type = \"event\" } on AWS",
            )),
            Some(TagSourceConfig::Ecs { .. }) if !cfg!(feature = "ecs") => Err(FieldError::new(
                "green.tag_source",
                "this cutover was built without the `ecs` feature, so { type = \"ecs\" } cannot run; \
                 rebuild with it or use { type = \"event\" }",
            )),
            Some(TagSourceConfig::Ecs { cluster }) => {
                let clusters: Vec<&str> = match cluster {
                    Some(c) => vec![c.as_str()],
                    None => self.cluster.iter().map(String::as_str).collect(),
                };
                let tasks = |cluster: &str| {
                    let name = cluster.rsplit(":cluster/").next().unwrap_or(cluster);
                    json!({"Fn::Sub": format!(
                        "arn:${{AWS::Partition}}:ecs:${{AWS::Region}}:${{AWS::AccountId}}:task/{name}/*"
                    )})
                };
                let resources: Vec<Value> = if clusters.is_empty() {
                    vec![
                        json!({"Fn::Sub": "arn:${AWS::Partition}:ecs:${AWS::Region}:${AWS::AccountId}:task/*"}),
                    ]
                } else {
                    clusters.into_iter().map(tasks).collect()
                };
                Ok(Deployment::default().allow(Statement::new(
                    ["ecs:DescribeTasks"],
                    resources,
                    "read the green task's resource tags (events carry none) in the filter's cluster",
                )))
            }
        }
    }

    fn files(&self) -> Vec<std::path::PathBuf> {
        match &self.green.tag_source {
            Some(TagSourceConfig::File { path }) => vec![path.clone()],
            _ => Vec::new(),
        }
    }
}

#[derive(Debug)]
struct Compiled {
    condition: Condition,
    pattern: Pattern,
    /// Why an event whose bytes rule the condition out is dropped: said of most events, so
    /// written once.
    unseen: String,
}

/// The runtime `filter` stage.
#[derive(Debug)]
pub struct Filter {
    conditions: Vec<Compiled>,
    /// Every condition in one pattern: the rule's pattern, which decides; the conditions alone
    /// only name the reason of a drop.
    merged: Pattern,
    /// The fields the conditions read: an event that passes every prefilter is parsed into
    /// these only.
    projection: Projection,
    tags: Option<(BTreeMap<String, String>, Arc<dyn TagSource>)>,
}

impl Filter {
    /// Builds the runtime filter directly (for embedders and benchmarks).
    pub async fn from_config(config: &FilterConfig) -> Result<Filter, BuildError> {
        Self::build(config, &BuildContext::default()).await
    }

    async fn build(config: &FilterConfig, cx: &BuildContext) -> Result<Filter, BuildError> {
        let merged = config
            .compiled_pattern()
            .map_err(|m| BuildError::field("pattern", m.to_string()))?;
        let merged = Pattern::from_value(&merged).map_err(|e| BuildError::field("pattern", e.to_string()))?;
        // Conditions keep the order of `conditions()`: green first, the one most events fail,
        // so a typical event costs one byte scan and no parse.
        let mut conditions = Vec::new();
        for c in config.conditions() {
            let compiled =
                Pattern::from_value(&c.pattern).map_err(|e| BuildError::field(c.option, e.to_string()))?;
            conditions.push(Compiled {
                unseen: c.mismatch(None),
                condition: c,
                pattern: compiled,
            });
        }
        let projection = Projection::of(conditions.iter().map(|c| &c.pattern));
        let tags = if config.green.tags.is_empty() {
            None
        } else {
            let source = config.green.tag_source.clone().unwrap_or_default();
            Some((config.green.tags.clone(), source.build(cx).await?))
        };
        Ok(Filter {
            conditions,
            merged,
            projection,
            tags,
        })
    }

    /// Decides without running the rest of the chain.
    pub async fn decide(&self, event: &Event) -> Result<Decision, StageError> {
        // Phase 1: raw bytes only.
        if let Some(c) = self.ruled_out_by(event) {
            return Ok(Decision::Drop(c.unseen.clone()));
        }
        // Phase 2: the fields the conditions read, parsed from the bytes (no copies, and the
        // patterns decide on them as on the whole event), or the whole event if an earlier
        // stage parsed it already.
        let invalid = |message: String| StageError::permanent(message).with_kind("InvalidEvent");
        if event.is_parsed() {
            let value = event.json().map_err(|e| invalid(e.to_string()))?;
            if !self.merged.matches(value) {
                return Ok(Decision::Drop(self.reason(|p| p.matches(value), value)));
            }
        } else {
            let projected = self
                .projection
                .parse(event.raw())
                .map_err(|e| invalid(format!("event is not valid JSON: {e}")))?;
            if !self.merged.matches_projected(&projected) {
                return Ok(Decision::Drop(
                    self.reason(|p| p.matches_projected(&projected), &projected.to_value()),
                ));
            }
        }
        if let Some((wanted, source)) = &self.tags {
            // Tags are looked up for the few events that got this far; they need the task ARN
            // and, for the event source, the event's own `tags`.
            let value = event.json().map_err(|e| invalid(e.to_string()))?;
            let task = value
                .pointer("/detail/taskArn")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let have = source.tags(task, value).await?;
            for (k, v) in wanted {
                match have.get(k) {
                    Some(actual) if actual == v => {}
                    Some(actual) => {
                        return Ok(Decision::Drop(format!("tag {k} is {actual:?}, expected {v:?}")));
                    }
                    None => {
                        return Ok(Decision::Drop(format!(
                            "task has no tag {k} (expected {k} = {v:?})"
                        )));
                    }
                }
            }
        }
        Ok(Decision::Pass)
    }
}

/// What the filter decided of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The event goes on down the chain.
    Pass,
    /// The event ends here, dropped for this reason.
    Drop(String),
}

impl Decision {
    /// Whether the event passes.
    pub fn passes(&self) -> bool {
        matches!(self, Decision::Pass)
    }

    /// The drop reason, if dropped.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Decision::Pass => None,
            Decision::Drop(reason) => Some(reason),
        }
    }
}

impl Filter {
    /// The first condition whose prefilter rules the event's bytes out, if any.
    fn ruled_out_by(&self, event: &Event) -> Option<&Compiled> {
        let raw = event.raw();
        self.conditions
            .iter()
            .find(|c| !c.pattern.prefilter().may_match(raw))
    }

    /// Why an event the merged pattern rejects is dropped: the first condition it fails.
    fn reason(&self, matches: impl Fn(&Pattern) -> bool, value: &Value) -> String {
        match self.conditions.iter().find(|c| !matches(&c.pattern)) {
            Some(c) => c.condition.mismatch(Some(value)),
            // Each condition holds for some element of an array, but no one element meets
            // them all, as the pattern (and the EventBridge rule) requires.
            None => "each condition holds, but not on one and the same array element: the pattern \
                     (and the EventBridge rule) needs one container that meets every container condition"
                .to_owned(),
        }
    }
}

impl Condition {
    fn mismatch(&self, event: Option<&Value>) -> String {
        let actual = event.map(|e| actual_values(e, self.path)).unwrap_or_default();
        if self.option == "pattern" {
            return "does not match the custom pattern".into();
        }
        if actual.is_empty() {
            format!("{} is not {} ({})", self.what, self.expected, self.option)
        } else {
            format!(
                "{} is {}, expected {} ({})",
                self.what,
                actual.join(", "),
                self.expected,
                self.option
            )
        }
    }
}

fn actual_values(value: &Value, path: &[&str]) -> Vec<String> {
    fn walk(v: &Value, path: &[&str], out: &mut Vec<String>) {
        match (v, path.split_first()) {
            (Value::Array(items), _) => items.iter().for_each(|i| walk(i, path, out)),
            (Value::Object(m), Some((k, rest))) => {
                if let Some(next) = m.get(*k) {
                    walk(next, rest, out);
                }
            }
            (Value::String(s), None) => out.push(s.clone()),
            (other, None) => out.push(other.to_string()),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if !path.is_empty() {
        walk(value, path, &mut out);
    }
    out
}

impl Stage for Filter {
    /// Phase 1 of [`Filter::decide`]: a condition's prefilter rules the bytes out.
    fn rules_out(&self, event: &Event) -> Option<Cow<'_, str>> {
        self.ruled_out_by(event).map(|c| Cow::Borrowed(c.unseen.as_str()))
    }

    fn process<'a>(&'a self, event: Event, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            match self.decide(&event).await {
                Ok(Decision::Pass) => next.run(event).await,
                Ok(Decision::Drop(reason)) => Outcome::dropped(reason),
                Err(error) => Outcome::failed(error),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_core::Pipeline;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    fn seed() -> FilterConfig {
        toml::from_str("cluster = \"catsndogsECScluster\"\ngreen = { container = \"cats-green\" }").unwrap()
    }

    async fn run(cfg: &FilterConfig, bytes: Vec<u8>) -> Outcome {
        let stage = cfg.build(&BuildContext::new("unused")).await.unwrap();
        Pipeline::from_stages("p", vec![("filter".into(), stage)])
            .run(Event::from_bytes(bytes))
            .await
    }

    #[test]
    fn config_round_trips_through_toml() {
        let text = r#"
            cluster = ["catsndogsECScluster", "arn:aws:ecs:us-west-2:111122223333:cluster/other"]
            last_status = "RUNNING"
            pattern = '{"detail": {"launchType": ["FARGATE"]}}'
            [green]
            container = ["cats-green", { prefix = "cats-" }]
            image = "cats:v3"
            tags = { deployment = "green" }
        "#;
        let cfg: FilterConfig = toml::from_str(text).unwrap();
        let again: FilterConfig = toml::from_str(&toml::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(again.compiled_pattern().unwrap(), cfg.compiled_pattern().unwrap());
        assert_eq!(again.green.container, cfg.green.container);
        assert_eq!(again.green.tags, cfg.green.tags);
    }

    #[test]
    fn seed_options_compile_to_one_narrow_pattern() {
        assert_eq!(
            seed().compiled_pattern().unwrap(),
            json!({
                "detail": {
                    "containers": {"name": ["cats-green"]},
                    "clusterArn": [{"suffix": ":cluster/catsndogsECScluster"}],
                    "lastStatus": ["RUNNING"],
                    "desiredStatus": ["RUNNING"]
                },
                "detail-type": ["ECS Task State Change"],
                "source": ["aws.ecs"]
            })
        );
    }

    #[tokio::test]
    async fn green_running_passes_and_others_are_dropped_with_the_reason() {
        let cfg = seed();
        assert!(run(&cfg, fixture("task-fargate-running.json")).await.is_passed());
        let out = run(&cfg, fixture("task-fargate-provisioning.json")).await;
        assert_eq!(
            out,
            Outcome::Dropped {
                stage: "filter".into(),
                reason: "lastStatus is PROVISIONING, expected RUNNING (last_status)".into()
            }
        );
        let out = run(&cfg, fixture("task-running-desired-stopped.json")).await;
        assert_eq!(out.stage(), Some("filter"));
        assert!(
            format!("{out}").contains("desiredStatus is STOPPED, expected RUNNING"),
            "{out}"
        );
        let out = run(&cfg, fixture("task-ec2-running.json")).await;
        assert!(
            format!("{out}").contains("container name is not cats-green (green.container)"),
            "{out}"
        );
        // That one is ruled out from its bytes (no "cats-green" in them), so a pipeline drops
        // it without running the stage; the provisioning one needs its fields read.
        let stage = cfg.build(&BuildContext::new("unused")).await.unwrap();
        let blue = Event::from_bytes(fixture("task-ec2-running.json"));
        assert_eq!(
            stage.rules_out(&blue).as_deref(),
            Some("container name is not cats-green (green.container)")
        );
        let provisioning = Event::from_bytes(fixture("task-fargate-provisioning.json"));
        assert_eq!(stage.rules_out(&provisioning), None);
    }

    #[tokio::test]
    async fn deciding_never_parses_the_whole_event() {
        let filter = Filter::from_config(&seed()).await.unwrap();
        // Most events: rejected by the byte prefilter.
        let rejected = Event::from_bytes(fixture("task-ec2-running.json"));
        assert!(!filter.decide(&rejected).await.unwrap().passes());
        assert!(!rejected.is_parsed());
        // Events that pass every prefilter: decided on the projected fields, with the reason.
        let late = Event::from_bytes(fixture("task-fargate-provisioning.json"));
        let late_decision = filter.decide(&late).await.unwrap();
        let reason = late_decision.reason().unwrap();
        assert!(reason.contains("lastStatus is PROVISIONING"), "{reason}");
        assert!(!late.is_parsed());
        let accepted = Event::from_bytes(fixture("task-fargate-running.json"));
        assert_eq!(filter.decide(&accepted).await.unwrap(), Decision::Pass);
        assert!(!accepted.is_parsed());
        // Truncated JSON that passes the prefilters is an invalid event, as before.
        let raw = fixture("task-fargate-running.json");
        let truncated = Event::from_bytes(raw[..raw.len() - 3].to_vec());
        let error = filter.decide(&truncated).await.unwrap_err();
        assert_eq!(error.kind.as_deref(), Some("InvalidEvent"), "{error}");
        assert!(!error.retryable);
    }

    #[tokio::test]
    async fn container_conditions_must_hold_for_one_container_as_in_the_rule() {
        let cfg: FilterConfig =
            toml::from_str("green = { container = \"cats-green\" }\npattern = { detail = { containers = { image = [{ suffix = \"/cats:v3\" }] } } }")
                .unwrap();
        let filter = Filter::from_config(&cfg).await.unwrap();
        let rule = Pattern::from_value(&cfg.compiled_pattern().unwrap()).unwrap();
        let mut event: Value = serde_json::from_slice(&fixture("task-fargate-running.json")).unwrap();
        event["detail"]["containers"] = json!([
            {"name": "cats-green", "image": "registry/cats:v2"},
            {"name": "sidecar", "image": "registry/cats:v3"}
        ]);
        let split = Event::from_bytes(serde_json::to_vec(&event).unwrap());
        let split_decision = filter.decide(&split).await.unwrap();
        let reason = split_decision.reason().unwrap();
        assert!(reason.contains("one and the same array element"), "{reason}");
        assert!(!rule.matches(&event));
        event["detail"]["containers"][0]["image"] = json!("registry/cats:v3");
        let one = Event::from_bytes(serde_json::to_vec(&event).unwrap());
        assert_eq!(filter.decide(&one).await.unwrap(), Decision::Pass);
        assert!(rule.matches(&event));
    }

    #[test]
    fn conflicting_options_are_a_validation_error() {
        let cfg: FilterConfig =
            toml::from_str("pattern = { detail = { lastStatus = [\"PENDING\"] } }").unwrap();
        let errors = cfg.validate(&ValidateContext {
            base_dir: std::path::Path::new("."),
            pipelines: &[],
        });
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].message.contains("both constrain \"detail.lastStatus\""),
            "{}",
            errors[0].message
        );
        let ok: FilterConfig =
            toml::from_str("last_status = []\npattern = { detail = { lastStatus = [\"PENDING\"] } }")
                .unwrap();
        assert!(
            ok.validate(&ValidateContext {
                base_dir: std::path::Path::new("."),
                pipelines: &[]
            })
            .is_empty()
        );
    }

    #[test]
    fn invalid_patterns_get_the_aws_message() {
        let cfg: FilterConfig =
            toml::from_str("pattern = { detail = { launchType = [{ nope = 1 }] } }").unwrap();
        let errors = cfg.validate(&ValidateContext {
            base_dir: std::path::Path::new("."),
            pipelines: &[],
        });
        assert!(
            errors[0].message.contains("Event pattern is not valid"),
            "{errors:?}"
        );
    }

    mod typed_vs_compiled {
        use super::*;
        use proptest::prelude::*;

        fn event(
            cluster: usize,
            containers: Vec<(usize, usize)>,
            last: usize,
            desired: usize,
            kind: usize,
            escape: bool,
        ) -> Value {
            let clusters = ["catsndogsECScluster", "staging", "catsndogsECScluster-old"];
            let names = ["cats-green", "cats", "dogs", "cats-green-sidecar"];
            let statuses = ["PROVISIONING", "PENDING", "RUNNING", "STOPPED"];
            let kinds = [
                "ECS Task State Change",
                "ECS Service Action",
                "ECS Container Instance State Change",
            ];
            let arn = format!("arn:aws:ecs:us-west-2:111122223333:cluster/{}", clusters[cluster]);
            json!({
                "source": "aws.ecs",
                "detail-type": kinds[kind],
                "detail": {
                    "clusterArn": if escape { arn.replace('/', "\\/") } else { arn },
                    "containers": containers.iter().map(|&(n, i)| json!({"name": names[n], "image": format!("repo/{}:v3", names[i])})).collect::<Vec<_>>(),
                    "lastStatus": statuses[last],
                    "desiredStatus": statuses[desired],
                    "group": format!("service:{}", names[containers.first().map_or(0, |c| c.0)]),
                    "taskDefinitionArn": format!("arn:aws:ecs:us-west-2:111122223333:task-definition/{}:4", names[containers.first().map_or(1, |c| c.1)]),
                }
            })
        }

        fn configs() -> Vec<FilterConfig> {
            [
                "cluster = \"catsndogsECScluster\"\ngreen = { container = \"cats-green\" }",
                "cluster = [\"staging\", \"catsndogsECScluster\"]\ngreen = { family = \"cats-green\", image = \"cats-green:v3\" }",
                "green = { service = { prefix = \"cats\" }, container = \"cats-*\" }\nlast_status = [\"RUNNING\", \"PENDING\"]",
                "detail_type = []\nlast_status = []\ndesired_status = []\ngreen = { group = { suffix = \"green\" } }",
                "green = { container = \"cats-green\", image = \"cats:v3\" }",
                "green = { container = [\"cats\", \"dogs\"], image = { prefix = \"repo/cats-green\" } }",
            ]
            .iter()
            .map(|t| toml::from_str(t).unwrap())
            .collect()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]
            #[test]
            fn typed_filter_and_compiled_pattern_decide_the_same(
                cluster in 0usize..3,
                containers in proptest::collection::vec((0usize..4, 0usize..4), 0..3),
                last in 0usize..4,
                desired in 0usize..4,
                kind in 0usize..3,
                escape in any::<bool>(),
            ) {
                let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                let value = event(cluster, containers, last, desired, kind, escape);
                let bytes = serde_json::to_vec(&value).unwrap();
                for cfg in configs() {
                    let compiled = Pattern::from_value(&cfg.compiled_pattern().unwrap()).unwrap();
                    let stage = rt.block_on(cfg.build(&BuildContext::new("unused"))).unwrap();
                    let outcome = rt.block_on(Pipeline::from_stages("p", vec![("filter".into(), stage.clone())]).run(Event::from_bytes(bytes.clone())));
                    prop_assert_eq!(outcome.is_passed(), compiled.matches(&value), "{:?} on {}", cfg, value);
                    // The pipeline decides a drop from the bytes when it can (`rules_out`):
                    // the same outcome as running the stage.
                    let event = Event::from_bytes(bytes.clone());
                    let ruled_out = stage.rules_out(&event).map(|r| r.into_owned());
                    let ran = rt.block_on(stage.process(event, Next::end()));
                    if let Some(reason) = &ruled_out {
                        prop_assert_eq!(&ran, &Outcome::dropped(reason.clone()));
                    }
                    match (&outcome, &ran) {
                        (Outcome::Dropped { stage, reason }, Outcome::Dropped { reason: r, .. }) => {
                            prop_assert_eq!(stage, "filter");
                            prop_assert_eq!(reason, r);
                        }
                        (a, b) => prop_assert_eq!(a.kind(), b.kind()),
                    }
                }
            }
        }
    }

    #[test]
    fn family_service_and_image_matchers_read_the_right_fields() {
        let cfg: FilterConfig = toml::from_str(
            "green = { family = \"cats-green\", service = \"cats-green\", image = \"cats:v3\", started_by = { prefix = \"ecs-svc/\" } }",
        )
        .unwrap();
        let p = Pattern::from_value(&cfg.compiled_pattern().unwrap()).unwrap();
        let event: Value = serde_json::from_slice(&fixture("task-fargate-running.json")).unwrap();
        assert!(p.matches(&event));
        let blue: Value = serde_json::from_slice(&fixture("task-ec2-running.json")).unwrap();
        assert!(!p.matches(&blue));
    }
}
