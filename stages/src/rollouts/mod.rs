//! Steering running rollouts: the operator's control record of each rollout, the audit log of
//! every control action, and the slot that keeps one rollout per service.
//!
//! The canary definition reads a rollout's control record between short waits (the
//! `ReadControl` state, a DynamoDB `GetItem` service integration), so the same definition is
//! steered on both engines: on AWS the record is an item of the rollouts table the stack
//! creates; on the embedded engine the Task resource `arn:aws:states:::dynamodb:getItem` is
//! answered from [`FileRolloutStore`] in the data directory, in `GetItem`'s own shape.
//!
//! A control record holds the *latest* action, which stays in force: `pause` holds until a
//! `resume` replaces it, `abort` ends the rollout through its rollback, and `promote` /
//! `promote-full` name the wait they end (`target`), so a promote that arrives after its wait
//! has ended does nothing.

mod dynamodb;
mod files;
pub mod notify;
pub mod ops;
pub mod view;

use std::fmt;

use cutover_core::{BoxFuture, StageError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub use dynamodb::DynamoRolloutStore;
pub use files::FileRolloutStore;

/// The Task resource the canary reads its control record with.
pub const CONTROL_RESOURCE: &str = "arn:aws:states:::dynamodb:getItem";

/// What an operator asks of a running rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Traffic back to all-blue (verified), then the rollout ends as aborted.
    Abort,
    /// Hold at the current weight; health checks go on, so a sick green still rolls back.
    Pause,
    /// Go on after a pause.
    Resume,
    /// End the current wait now and go on with the next step.
    Promote,
    /// Straight to 100% green (verified), then done.
    PromoteFull,
    /// A new rollout for the deployment of a failed or aborted one (audit only: it acts on the
    /// deployment, not on a running rollout).
    Retry,
}

impl Action {
    /// The name used in records, commands and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Abort => "abort",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Promote => "promote",
            Action::PromoteFull => "promote-full",
            Action::Retry => "retry",
        }
    }

    /// The action `name` names (`abort`, `pause`, `resume`, `promote`, `promote-full`, `retry`).
    pub fn parse(name: &str) -> Option<Action> {
        [
            Action::Abort,
            Action::Pause,
            Action::Resume,
            Action::Promote,
            Action::PromoteFull,
            Action::Retry,
        ]
        .into_iter()
        .find(|a| a.as_str() == name)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rollout's control record: the latest action taken on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Control {
    /// The action.
    pub action: Action,
    /// For `promote` and `promote-full`: the wait (state name) it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Why, as the operator said.
    pub reason: String,
    /// Who: the OS user, the API key's name, or the IAM principal.
    pub actor: String,
    /// When (ISO-8601 UTC).
    pub at: String,
    /// A unique id of this action (its audit entry has the same).
    pub id: String,
}

impl Control {
    /// The record as DynamoDB `GetItem` returns it (`{"Item": {...}}`), keyed by `rollout`.
    pub fn to_get_item(&self, rollout: &str) -> Value {
        json!({ "Item": self.to_item(rollout) })
    }

    /// The record as a DynamoDB item (string attributes).
    pub fn to_item(&self, rollout: &str) -> Map<String, Value> {
        let mut item = Map::new();
        let mut put = |k: &str, v: &str| {
            item.insert(k.to_owned(), json!({ "S": v }));
        };
        put("pk", &control_key(rollout));
        put("sk", CONTROL_SORT_KEY);
        put("action", self.action.as_str());
        if let Some(target) = &self.target {
            put("target", target);
        }
        put("reason", &self.reason);
        put("actor", &self.actor);
        put("at", &self.at);
        put("id", &self.id);
        item
    }

    /// Reads a DynamoDB item back (string attributes); `None` when it is not a control record.
    pub fn from_item(item: &Map<String, Value>) -> Option<Control> {
        let s = |k: &str| item.get(k)?.get("S")?.as_str().map(str::to_owned);
        Some(Control {
            action: Action::parse(&s("action")?)?,
            target: s("target"),
            reason: s("reason").unwrap_or_default(),
            actor: s("actor").unwrap_or_default(),
            at: s("at").unwrap_or_default(),
            id: s("id").unwrap_or_default(),
        })
    }
}

/// The partition key of a rollout's control record.
pub fn control_key(rollout: &str) -> String {
    format!("control#{rollout}")
}

/// The sort key of every control record.
pub const CONTROL_SORT_KEY: &str = "control";

/// One control action as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When (ISO-8601 UTC).
    pub at: String,
    /// The rollout (execution name) it acted on.
    pub rollout: String,
    /// The action.
    pub action: Action,
    /// Why.
    pub reason: String,
    /// Who.
    pub actor: String,
    /// What changed: the state the rollout was in, the wait a promote ends, the rollout a retry
    /// started, the superseding deployment.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub change: Value,
    /// The action's id (the control record's).
    pub id: String,
}

/// Where control records, service slots and the audit log live.
pub trait RolloutStore: Send + Sync + fmt::Debug {
    /// The control record of `rollout`, if any action was taken on it.
    fn control<'a>(&'a self, rollout: &'a str) -> BoxFuture<'a, Result<Option<Control>, StageError>>;

    /// Replaces the control record of `rollout`.
    fn set_control<'a>(
        &'a self,
        rollout: &'a str,
        control: &'a Control,
    ) -> BoxFuture<'a, Result<(), StageError>>;

    /// Appends to the audit log.
    fn audit<'a>(&'a self, entry: &'a AuditEntry) -> BoxFuture<'a, Result<(), StageError>>;

    /// The audit log of `rollout` (all rollouts when `None`), oldest first.
    fn audit_log<'a>(
        &'a self,
        rollout: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<AuditEntry>, StageError>>;

    /// Makes `rollout` the running rollout of `service` unless the slot's holder is a later
    /// deployment (its `at` after this one's): one atomic step, so of two deployments racing
    /// for a service each sees the other once, and an event delivered late cannot hand the
    /// service back to an older version. `at` orders deployments: the time their event says
    /// they happened (milliseconds since the epoch), not when it arrived.
    fn claim_service<'a>(
        &'a self,
        service: &'a str,
        rollout: &'a str,
        at: i64,
    ) -> BoxFuture<'a, Result<Claim, StageError>>;
}

/// What claiming a service's slot did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The slot is the rollout's now; it replaced `previous` (another rollout), if any.
    Taken {
        /// The rollout that held the slot before.
        previous: Option<String>,
    },
    /// A later deployment holds the slot: this one is stale and must not start.
    Later {
        /// The rollout holding the slot.
        holder: String,
        /// Its deployment time (milliseconds since the epoch).
        at: i64,
    },
}

/// A service's slot: the rollout holding it, its deployment time, and the rollout it took the
/// slot from (kept so that a claim retried after a lost answer still learns what it replaced).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// The rollout holding the slot.
    pub rollout: String,
    /// Its deployment time (milliseconds since the epoch).
    pub at: i64,
    /// The rollout it replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
}

impl Slot {
    /// What claiming this slot (`None`: empty) for `rollout`, deployed at `at`, comes to: the
    /// claim, with the slot to write when the rollout takes it over.
    pub fn claim(slot: Option<&Slot>, rollout: &str, at: i64) -> (Claim, Option<Slot>) {
        match slot {
            Some(held) if held.rollout == rollout => (
                Claim::Taken {
                    previous: held.previous.clone(),
                },
                None,
            ),
            Some(held) if held.at > at => (
                Claim::Later {
                    holder: held.rollout.clone(),
                    at: held.at,
                },
                None,
            ),
            _ => {
                let previous = slot.map(|held| held.rollout.clone());
                let taken = Slot {
                    rollout: rollout.to_owned(),
                    at,
                    previous: previous.clone(),
                };
                (Claim::Taken { previous }, Some(taken))
            }
        }
    }
}

/// A unique id for a control action: time, process and a counter.
pub fn action_id(now_nanos: i128) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{now_nanos:x}-{:x}-{:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_control_record_round_trips_through_its_dynamodb_item() {
        let control = Control {
            action: Action::PromoteFull,
            target: Some("Bake50".into()),
            reason: "looks good".into(),
            actor: "alice".into(),
            at: "2026-11-29T05:00:00Z".into(),
            id: "1".into(),
        };
        let item = control.to_item("cats-v3");
        assert_eq!(item["pk"], json!({"S": "control#cats-v3"}));
        assert_eq!(item["action"], json!({"S": "promote-full"}));
        assert_eq!(Control::from_item(&item), Some(control));
        let mut bad = item.clone();
        bad.insert("action".into(), json!({"S": "explode"}));
        assert_eq!(Control::from_item(&bad), None);
    }

    #[test]
    fn actions_parse_from_their_names() {
        for a in ["abort", "pause", "resume", "promote", "promote-full", "retry"] {
            assert_eq!(Action::parse(a).unwrap().as_str(), a);
        }
        assert_eq!(Action::parse("stop"), None);
    }
}
