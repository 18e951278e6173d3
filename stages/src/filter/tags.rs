//! Where the `filter` stage reads a task's ECS resource tags.
//!
//! Task state change events carry no tags, so tag conditions cannot go into the EventBridge
//! rule; the stage asks a [`TagSource`] only for events that already passed every other
//! condition, and caches the answer per task ARN (a task's tags do not change while it runs).
//!
//! - `{ type = "event" }` (default): the event's `detail.tags`, as ECS writes tags in API
//!   responses (`[{ "key": "deployment", "value": "green" }]`) or as a plain object.
//! - `{ type = "file", path = "tags.json" }`: a JSON object from task ARN (or task-definition
//!   family) to an object of tags; relative paths are relative to the pipeline file. Read at
//!   every cache miss, so an operator can edit it while the daemon runs.
//! - `{ type = "ecs" }`: `DescribeTasks` with `include = ["TAGS"]` (cargo feature `ecs`).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cutover_core::{BoxFuture, BuildContext, BuildError, StageError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A task's tags.
pub type Tags = BTreeMap<String, String>;

/// Reads the tags of a task.
pub trait TagSource: Send + Sync + fmt::Debug {
    /// The tags of `task_arn`; `event` is the parsed event it came from.
    fn tags<'a>(&'a self, task_arn: &'a str, event: &'a Value) -> BoxFuture<'a, Result<Tags, StageError>>;
}

/// Configuration of a tag source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum TagSourceConfig {
    /// The event's `detail.tags`.
    #[default]
    Event,
    /// A JSON file mapping task ARNs or families to tags.
    File {
        /// Path of the JSON file.
        path: PathBuf,
    },
    /// ECS `DescribeTasks` (needs the `ecs` cargo feature).
    Ecs {
        /// The cluster to ask (defaults to the event's cluster ARN).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cluster: Option<String>,
    },
}

impl TagSourceConfig {
    pub(crate) async fn build(&self, cx: &BuildContext) -> Result<Arc<dyn TagSource>, BuildError> {
        let source: Arc<dyn TagSource> = match self {
            TagSourceConfig::Event => Arc::new(EventTags),
            TagSourceConfig::File { path } => Arc::new(Cached::new(FileTags {
                path: cx.config_path(path),
            })),
            #[cfg(feature = "ecs")]
            TagSourceConfig::Ecs { cluster } => {
                Arc::new(Cached::new(ecs::EcsTags::new(cx, cluster.clone()).await))
            }
            #[cfg(not(feature = "ecs"))]
            TagSourceConfig::Ecs { .. } => {
                return Err(BuildError::field(
                    "green.tag_source",
                    "this cutover was built without the `ecs` feature; rebuild with `--features ecs` or use { type = \"file\" }",
                ));
            }
        };
        Ok(source)
    }
}

/// Reads `detail.tags` from the event itself.
#[derive(Debug)]
struct EventTags;

impl TagSource for EventTags {
    fn tags<'a>(&'a self, _task: &'a str, event: &'a Value) -> BoxFuture<'a, Result<Tags, StageError>> {
        Box::pin(async move { Ok(event.pointer("/detail/tags").map(parse_tags).unwrap_or_default()) })
    }
}

/// Accepts ECS's `[{key, value}]` list and a plain object.
pub(crate) fn parse_tags(v: &Value) -> Tags {
    match v {
        Value::Array(items) => items
            .iter()
            .filter_map(|t| {
                let k = t.get("key").or_else(|| t.get("Key"))?.as_str()?;
                let v = t.get("value").or_else(|| t.get("Value"))?.as_str()?;
                Some((k.to_owned(), v.to_owned()))
            })
            .collect(),
        Value::Object(m) => m
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect(),
        _ => Tags::new(),
    }
}

#[derive(Debug)]
struct FileTags {
    path: PathBuf,
}

impl TagSource for FileTags {
    fn tags<'a>(&'a self, task: &'a str, event: &'a Value) -> BoxFuture<'a, Result<Tags, StageError>> {
        Box::pin(async move {
            let text = tokio::fs::read(&self.path).await.map_err(|e| {
                StageError::retryable(format!("cannot read tag file {}: {e}", self.path.display()))
            })?;
            let all: Value = serde_json::from_slice(&text).map_err(|e| {
                StageError::permanent(format!(
                    "tag file {} is not a JSON object of tags: {e}",
                    self.path.display()
                ))
            })?;
            let family = event
                .pointer("/detail/taskDefinitionArn")
                .and_then(Value::as_str)
                .and_then(|a| a.rsplit('/').next())
                .and_then(|n| n.split(':').next())
                .unwrap_or_default();
            Ok(all
                .get(task)
                .or_else(|| all.get(family))
                .map(parse_tags)
                .unwrap_or_default())
        })
    }
}

/// Remembers each task's tags.
#[derive(Debug)]
struct Cached<S> {
    inner: S,
    cache: Mutex<HashMap<String, Tags>>,
}

impl<S> Cached<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            cache: Mutex::new(HashMap::new()),
        }
    }
}

/// A cache never grows past this many tasks; it is simply cleared when full.
const CACHE_LIMIT: usize = 10_000;

impl<S: TagSource> TagSource for Cached<S> {
    fn tags<'a>(&'a self, task: &'a str, event: &'a Value) -> BoxFuture<'a, Result<Tags, StageError>> {
        Box::pin(async move {
            if let Some(hit) = self.cache.lock().ok().and_then(|c| c.get(task).cloned()) {
                return Ok(hit);
            }
            let tags = self.inner.tags(task, event).await?;
            if let Ok(mut c) = self.cache.lock() {
                if c.len() >= CACHE_LIMIT {
                    c.clear();
                }
                c.insert(task.to_owned(), tags.clone());
            }
            Ok(tags)
        })
    }
}

#[cfg(feature = "ecs")]
mod ecs {
    use super::*;

    /// Tags from ECS `DescribeTasks`.
    #[derive(Debug)]
    pub(super) struct EcsTags {
        client: aws_sdk_ecs::Client,
        cluster: Option<String>,
    }

    impl EcsTags {
        pub(super) async fn new(cx: &BuildContext, cluster: Option<String>) -> Self {
            Self {
                client: aws_sdk_ecs::Client::new(cx.aws_config().await),
                cluster,
            }
        }
    }

    impl TagSource for EcsTags {
        fn tags<'a>(&'a self, task: &'a str, event: &'a Value) -> BoxFuture<'a, Result<Tags, StageError>> {
            Box::pin(async move {
                let cluster = self.cluster.clone().or_else(|| {
                    event
                        .pointer("/detail/clusterArn")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                });
                let out = self
                    .client
                    .describe_tasks()
                    .set_cluster(cluster)
                    .tasks(task)
                    .include(aws_sdk_ecs::types::TaskField::Tags)
                    .send()
                    .await
                    .map_err(|e| crate::aws::aws_error("ecs:DescribeTasks", &e))?;
                Ok(out
                    .tasks()
                    .first()
                    .map(|t| {
                        t.tags()
                            .iter()
                            .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
                            .collect()
                    })
                    .unwrap_or_default())
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn event_tags_accept_both_shapes() {
        let e = json!({"detail": {"tags": [{"key": "deployment", "value": "green"}]}});
        assert_eq!(
            EventTags
                .tags("t", &e)
                .await
                .unwrap()
                .get("deployment")
                .map(String::as_str),
            Some("green")
        );
        let e = json!({"detail": {"tags": {"deployment": "blue"}}});
        assert_eq!(
            EventTags
                .tags("t", &e)
                .await
                .unwrap()
                .get("deployment")
                .map(String::as_str),
            Some("blue")
        );
    }

    #[tokio::test]
    async fn file_tags_by_task_or_family_and_cached() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tags.json");
        std::fs::write(
            &path,
            r#"{"arn:task/1": {"deployment": "green"}, "cats": {"deployment": "blue"}}"#,
        )
        .unwrap();
        let src = Cached::new(FileTags { path: path.clone() });
        let e = json!({"detail": {"taskDefinitionArn": "arn:aws:ecs:r:a:task-definition/cats:3"}});
        assert_eq!(src.tags("arn:task/1", &e).await.unwrap()["deployment"], "green");
        assert_eq!(src.tags("arn:task/2", &e).await.unwrap()["deployment"], "blue");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            src.tags("arn:task/1", &e).await.unwrap()["deployment"],
            "green",
            "cached"
        );
        let err = src.tags("arn:task/3", &e).await.unwrap_err();
        assert!(
            err.retryable && err.message.contains("cannot read tag file"),
            "{err:?}"
        );
    }
}
