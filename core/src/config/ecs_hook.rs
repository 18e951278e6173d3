//! `ecs_hook` on a pipeline: the pipeline answers Amazon ECS deployment lifecycle hooks (ECS
//! native blue/green, canary and linear deployments) at the named lifecycle stages.
//!
//! ```toml
//! [pipelines.judge-test-traffic]
//! ecs_hook = { stages = ["POST_TEST_TRAFFIC_SHIFT"], count = 3, callback_delay = "30s", timeout = "15m" }
//! ```
//!
//! Each invocation of the hook runs the pipeline once: one *measurement* (a `health-check`
//! finding green healthy passes it). The hook answers `IN_PROGRESS` until `count` measurements
//! are taken, then `SUCCEEDED` — or `FAILED` as soon as the failure or inconclusive limit is
//! exceeded, or when no verdict is reached within `timeout`. The model is the one the
//! measuring probes share (`cutover_stages::health_check::analysis`); the host is
//! `cutover_stages::ecs_hook`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The lifecycle stages Amazon ECS invokes hooks at (the `lifecycleStages` of a service's
/// `deploymentConfiguration.lifecycleHooks`).
pub const LIFECYCLE_STAGES: [&str; 8] = [
    "RECONCILE_SERVICE",
    "PRE_SCALE_UP",
    "POST_SCALE_UP",
    "TEST_TRAFFIC_SHIFT",
    "POST_TEST_TRAFFIC_SHIFT",
    "PRE_PRODUCTION_TRAFFIC_SHIFT",
    "PRODUCTION_TRAFFIC_SHIFT",
    "POST_PRODUCTION_TRAFFIC_SHIFT",
];

/// `ecs_hook = { … }` of a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EcsHookSpec {
    /// The lifecycle stages this pipeline judges (one pipeline per stage in a file).
    pub stages: Vec<String>,
    /// Measurements (invocations that ran the pipeline) before the hook answers `SUCCEEDED`.
    #[serde(default = "one")]
    pub count: u32,
    /// Failed measurements tolerated (a `health-check` answering unhealthy, a drop).
    #[serde(default)]
    pub failure_limit: u32,
    /// Measurements that could not be made tolerated (a retryable failure of the pipeline).
    #[serde(default)]
    pub inconclusive_limit: u32,
    /// How long ECS waits before asking again after `IN_PROGRESS` (`callBackDelay`, whole
    /// seconds).
    #[serde(default = "default_callback_delay", with = "crate::duration")]
    pub callback_delay: Duration,
    /// The longest one hook may stay `IN_PROGRESS`, from its first invocation; then `FAILED`.
    #[serde(default = "default_timeout", with = "crate::duration")]
    pub timeout: Duration,
    /// Where the state between invocations is kept.
    #[serde(default)]
    pub store: HookStoreSpec,
}

/// Where a hook's state between invocations is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum HookStoreSpec {
    /// Files under the data directory (one process or host: the demo, tests, a daemon).
    Local {
        /// The directory, relative to the data directory.
        #[serde(default = "default_local_path")]
        path: String,
    },
    /// A DynamoDB table with the string partition key `pk` (Lambda: every sandbox shares it).
    Dynamodb {
        /// The table's name.
        table: String,
    },
}

impl Default for HookStoreSpec {
    fn default() -> Self {
        HookStoreSpec::Local {
            path: default_local_path(),
        }
    }
}

fn one() -> u32 {
    1
}
fn default_callback_delay() -> Duration {
    Duration::from_secs(30)
}
fn default_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_local_path() -> String {
    "ecs-hooks".to_owned()
}

impl EcsHookSpec {
    /// Problems with the values, as (field below `ecs_hook`, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.stages.is_empty() {
            out.push((
                "stages".to_owned(),
                format!(
                    "name at least one lifecycle stage: {}",
                    LIFECYCLE_STAGES.join(", ")
                ),
            ));
        }
        for (i, s) in self.stages.iter().enumerate() {
            if !LIFECYCLE_STAGES.contains(&s.as_str()) {
                out.push((
                    format!("stages[{i}]"),
                    format!(
                        "{s:?} is not an ECS lifecycle stage; expected one of: {}",
                        LIFECYCLE_STAGES.join(", ")
                    ),
                ));
            }
        }
        if self.count == 0 {
            out.push(("count".to_owned(), "must be at least 1".to_owned()));
        }
        let delay = self.callback_delay.as_secs();
        if delay == 0 || self.callback_delay.subsec_nanos() != 0 {
            out.push((
                "callback_delay".to_owned(),
                "whole seconds, at least 1s (ECS's callBackDelay is in seconds)".to_owned(),
            ));
        }
        if self.timeout < self.callback_delay {
            out.push((
                "timeout".to_owned(),
                format!(
                    "shorter than callback_delay ({delay}s): the hook would time out before ECS asks again"
                ),
            ));
        }
        match &self.store {
            HookStoreSpec::Local { path } if path.is_empty() => {
                out.push(("store.path".to_owned(), "must not be empty".to_owned()))
            }
            HookStoreSpec::Dynamodb { table } if table.is_empty() => {
                out.push(("store.table".to_owned(), "name the DynamoDB table".to_owned()))
            }
            _ => {}
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_round_trip() {
        let spec: EcsHookSpec = toml::from_str("stages = [\"POST_TEST_TRAFFIC_SHIFT\"]").unwrap();
        assert_eq!(spec.count, 1);
        assert_eq!(spec.callback_delay, Duration::from_secs(30));
        assert_eq!(spec.store, HookStoreSpec::default());
        assert!(spec.problems().is_empty());
        let text = toml::to_string(&spec).unwrap();
        assert_eq!(toml::from_str::<EcsHookSpec>(&text).unwrap(), spec);
        let dynamo: EcsHookSpec = toml::from_str(
            "stages = [\"PRODUCTION_TRAFFIC_SHIFT\"]\nstore = { type = \"dynamodb\", table = \"hooks\" }",
        )
        .unwrap();
        assert_eq!(
            dynamo.store,
            HookStoreSpec::Dynamodb {
                table: "hooks".into()
            }
        );
    }

    #[test]
    fn bad_values_name_the_field() {
        let spec: EcsHookSpec =
            toml::from_str("stages = [\"POST_TEST\"]\ncount = 0\ncallback_delay = \"500ms\"").unwrap();
        let fields: Vec<String> = spec.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["stages[0]", "count", "callback_delay"]);
    }
}
