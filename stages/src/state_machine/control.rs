//! How a rollout is steered while it runs: the `control` block every execution gets in its
//! input (what the canary's waits read), the embedded engine's answer to the canary's
//! `ReadControl` state, and superseding: one rollout per service.
//!
//! ```toml
//! [pipelines.ecs-events.stages.control]
//! tick = "1s"              # how often a wait reads its control record (default 1s embedded, 5s AWS)
//! health_every = "30s"     # while paused, green is still checked this often
//! supersede = true         # a newer deployment of a service aborts the running rollout first
//! observe_split = true     # before each bake, green must receive the weight set (observed-split)
//! ```

use std::time::Duration;

use cutover_core::{BoxFuture, Event, Next, Outcome, Stage, Template};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::rollouts::FileRolloutStore;

/// `control`: how the rollouts this stage starts are steered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// On Step Functions: the DynamoDB table of control records and the audit log (the stack
    /// `cutover template` generates creates it and sets this through an environment override).
    /// Not used by the embedded engine, which keeps them in `<data_dir>/rollouts/`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub table: String,
    /// How often a wait reads its control record: about the longest a control action waits to
    /// take effect. Whole seconds. Default 1s on the embedded engine, 5s on Step Functions
    /// (where each read costs a few state transitions).
    #[serde(
        default,
        with = "cutover_core::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub tick: Option<Duration>,
    /// While a rollout is paused, green is still health-checked this often, so a sick green
    /// rolls back during a pause too.
    #[serde(default = "default_health_every", with = "cutover_core::duration")]
    pub health_every: Duration,
    /// One rollout per service: a newer deployment of a service whose rollout is still running
    /// aborts that rollout (reason "superseded by …") and starts once it has rolled back; an
    /// older one (its event's `time` before the holder's) arriving late starts nothing. On
    /// Step Functions this needs `table` (the slots live there).
    #[serde(default = "crate::fields::yes")]
    pub supersede: bool,
    /// The service a deployment belongs to (a template of the event).
    #[serde(default = "default_service")]
    pub service: Template,
    /// How long a superseding deployment waits for the older rollout to finish rolling back
    /// before its event fails as retryable (and is tried again).
    #[serde(default = "default_supersede_wait", with = "cutover_core::duration")]
    pub supersede_wait: Duration,
    /// Before each bake, check that green actually receives the weight just set: the canary
    /// asks its analysis resource for the `observed-split` probe (give the health-check
    /// pipeline `probes.observed-split`), and rolls back when the split observed is off.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub observe_split: bool,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            table: String::new(),
            tick: None,
            health_every: default_health_every(),
            supersede: true,
            service: default_service(),
            supersede_wait: default_supersede_wait(),
            observe_split: false,
        }
    }
}

fn default_health_every() -> Duration {
    Duration::from_secs(30)
}
fn default_supersede_wait() -> Duration {
    Duration::from_secs(60)
}
fn default_service() -> Template {
    "{detail.clusterArn}|{detail.group}"
        .parse()
        .unwrap_or_else(|_| unreachable!("the default service template is valid"))
}

/// The default table name on AWS when none is configured.
pub const DEFAULT_ROLLOUTS_TABLE: &str = "cutover-rollouts";

impl ControlConfig {
    /// The `control` block of an execution's input: the table, how long each wait tick sleeps
    /// (`wait`) and counts (`tick`), how often green is checked while paused, and the rollout's
    /// service (empty here; the starting stage sets it).
    pub fn input(&self, embedded: bool) -> Value {
        let tick = self
            .tick
            .unwrap_or(Duration::from_secs(if embedded { 1 } else { 5 }))
            .as_secs()
            .max(1);
        let table = if self.table.is_empty() {
            DEFAULT_ROLLOUTS_TABLE
        } else {
            &self.table
        };
        let mut input = json!({
            "table": if embedded { "local" } else { table },
            "wait": tick,
            "tick": tick,
            "health_every": self.health_every.as_secs().max(tick),
            // Filled in per rollout by the starting stage; every Task receives it.
            "service": "",
        });
        if self.observe_split {
            input["observe"] = json!(true);
        }
        input
    }
}

/// The embedded engine's `ReadControl`: answers `arn:aws:states:::dynamodb:getItem` for a
/// control record from the data directory, in `GetItem`'s shape (`{"Item": …}` or `{}`).
#[derive(Debug)]
pub struct ReadControl {
    store: FileRolloutStore,
}

impl ReadControl {
    /// Reads records from `store`.
    pub fn new(store: FileRolloutStore) -> Self {
        Self { store }
    }

    fn rollout_of(input: &Value) -> Option<String> {
        let pk = input.pointer("/Key/pk/S")?.as_str()?;
        pk.strip_prefix("control#").map(str::to_owned)
    }

    fn read(&self, rollout: &str) -> Result<Value, cutover_core::StageError> {
        Ok(match self.store.read_control(rollout)? {
            Some(control) => control.to_get_item(rollout),
            None => json!({}),
        })
    }
}

impl Stage for ReadControl {
    fn process<'a>(&'a self, mut event: Event, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let input = match event.json() {
                Ok(v) => v.clone(),
                Err(e) => return Outcome::failed(cutover_core::StageError::permanent(e.to_string())),
            };
            let Some(rollout) = Self::rollout_of(&input) else {
                return Outcome::failed(
                    cutover_core::StageError::permanent(
                        "ReadControl: the Key must be {\"pk\": {\"S\": \"control#<execution name>\"}, …}",
                    )
                    .with_kind("DynamoDB.ValidationException"),
                );
            };
            match self.read(&rollout) {
                Ok(Value::Object(answer)) => {
                    event.context_mut().extend(answer);
                    next.run(event).await
                }
                Ok(_) => next.run(event).await,
                Err(e) => Outcome::failed(e),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollouts::{Action, Control};
    use std::sync::Arc;

    use cutover_core::Pipeline;

    fn passed(out: Outcome) -> serde_json::Map<String, Value> {
        match out {
            Outcome::Passed { context } => context,
            other => panic!("expected a pass, got {other}"),
        }
    }

    #[tokio::test]
    async fn the_record_is_answered_in_get_items_shape() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileRolloutStore::new(dir.path());
        let read = ReadControl::new(store.clone());
        let pipeline =
            Pipeline::from_stages("control", vec![("read".into(), Arc::new(read) as Arc<dyn Stage>)]);
        let input =
            json!({"TableName": "local", "Key": {"pk": {"S": "control#cats-v3"}, "sk": {"S": "control"}}});
        let out = pipeline.run(Event::from_value(input.clone())).await;
        assert_eq!(passed(out), serde_json::Map::new(), "no record: {{}}");
        store
            .write_control(
                "cats-v3",
                &Control {
                    action: Action::Pause,
                    target: None,
                    reason: "look at the logs".into(),
                    actor: "alice".into(),
                    at: "2026-11-29T05:00:00Z".into(),
                    id: "a1".into(),
                },
            )
            .unwrap();
        let item = passed(pipeline.run(Event::from_value(input)).await);
        assert_eq!(item["Item"]["action"], json!({"S": "pause"}));
        assert_eq!(item["Item"]["reason"], json!({"S": "look at the logs"}));
        let bad = pipeline.run(Event::from_value(json!({"Key": {}}))).await;
        assert!(bad.to_string().contains("control#"), "{bad}");
    }

    #[test]
    fn the_input_block_differs_by_engine() {
        let c = ControlConfig::default();
        assert_eq!(
            c.input(true),
            json!({"table": "local", "wait": 1, "tick": 1, "health_every": 30, "service": ""})
        );
        assert_eq!(
            c.input(false),
            json!({"table": "cutover-rollouts", "wait": 5, "tick": 5, "health_every": 30, "service": ""})
        );
    }
}
