//! Rollout operations, the same on both engines: list, status, history, and the control
//! actions (abort, promote, pause, resume, retry) with their audit — what `cutover rollouts`
//! and the daemon's `/rollouts` API call.

use std::fmt;
use std::sync::Arc;

use cutover_core::{BoxFuture, Clock, StageError};
use serde_json::{Value, json};

use super::view::{Entry, Line, Phase, Rollout, history_lines, steps_of};
use super::{Action, AuditEntry, Control, RolloutStore, action_id};
use crate::state_machine::{Started, StateMachineEngine};

/// An execution's ARN and its history.
pub type Recorded = (String, Vec<Entry>);

/// Where an engine's executions are read from.
pub trait RolloutSource: Send + Sync + fmt::Debug {
    /// The executions (name, ARN), newest first; only running ones unless `all`.
    fn list(&self, all: bool) -> BoxFuture<'_, Result<Vec<(String, String)>, StageError>>;

    /// The ARN and history of the execution `name`, or `None`.
    fn history<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Recorded>, StageError>>;

    /// Drives the execution `name` to its end in this process when no process is running it
    /// (the embedded engine when no daemon is up), so an abort really rolls back. Returns
    /// whether it did. Step Functions always runs its executions: `false`.
    fn drive<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, StageError>> {
        let _ = name;
        Box::pin(async { Ok(false) })
    }
}

/// Why an operation was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpsError {
    /// No rollout has this name, ARN or prefix.
    #[error("no rollout {0:?}: `cutover rollouts list FILE --all` shows them")]
    Unknown(String),
    /// The prefix names several rollouts.
    #[error("{prefix:?} names several rollouts ({}): give more of the name", .matches.join(", "))]
    Ambiguous {
        /// What was given.
        prefix: String,
        /// What it matches.
        matches: Vec<String>,
    },
    /// The rollout has ended; only `retry` acts on an ended rollout.
    #[error("rollout {id} has already ended ({phase}); {hint}")]
    Ended {
        /// The rollout.
        id: String,
        /// How it ended.
        phase: &'static str,
        /// What can be done instead.
        hint: &'static str,
    },
    /// `promote` without `--full` ends a wait, and the rollout is in none.
    #[error(
        "rollout {id} is not waiting (it is in {step}); promote ends a wait: try again when it bakes, or use --full"
    )]
    NotWaiting {
        /// The rollout.
        id: String,
        /// The state it is in.
        step: String,
    },
    /// `retry` of a rollout that is running or succeeded.
    #[error("rollout {id} is {phase}: only a rolled-back, aborted or failed rollout can be retried")]
    NotRetryable {
        /// The rollout.
        id: String,
        /// How it stands.
        phase: &'static str,
    },
    /// A control action needs a reason.
    #[error("give a reason (--reason TEXT): it goes to the audit log")]
    NoReason,
    /// The store or the engine failed.
    #[error("{0}")]
    Backend(#[from] StageError),
}

/// What a control action did.
#[derive(Debug, Clone, PartialEq)]
pub struct Acted {
    /// The rollout acted on (for `retry`: the new one).
    pub rollout: String,
    /// The audit entry written.
    pub audit: AuditEntry,
    /// Whether this process drove the rollout to its end (no other process was running it).
    pub drove: bool,
}

/// The operations on one pipeline's rollouts.
#[derive(Debug, Clone)]
pub struct Rollouts {
    source: Arc<dyn RolloutSource>,
    store: Arc<dyn RolloutStore>,
    engine: Arc<dyn StateMachineEngine>,
    clock: Arc<dyn Clock>,
    steps: Vec<u64>,
    /// The state machine definition, for those who draw it (the dashboard).
    definition: Arc<Value>,
}

impl Rollouts {
    /// Operations over `source`'s executions, steered through `store`, started (retry) on
    /// `engine`; `definition` gives the steps.
    pub fn new(
        source: Arc<dyn RolloutSource>,
        store: Arc<dyn RolloutStore>,
        engine: Arc<dyn StateMachineEngine>,
        clock: Arc<dyn Clock>,
        definition: &Value,
    ) -> Self {
        Self {
            source,
            store,
            engine,
            clock,
            steps: steps_of(definition),
            definition: Arc::new(definition.clone()),
        }
    }

    /// The state machine definition the rollouts run (Amazon States Language JSON).
    pub fn definition(&self) -> &Value {
        &self.definition
    }

    /// The store of control records and audit entries.
    pub fn store(&self) -> &Arc<dyn RolloutStore> {
        &self.store
    }

    /// Running rollouts (all recent ones with `all`), newest first.
    pub async fn list(&self, all: bool) -> Result<Vec<Rollout>, OpsError> {
        let mut out = Vec::new();
        for (name, _) in self.source.list(all).await? {
            if let Some(r) = self.load(&name).await? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// The rollout `id` names: an execution name, ARN, unique prefix of a name, or else a
    /// unique part of one.
    pub async fn resolve(&self, id: &str) -> Result<String, OpsError> {
        let name = id.rsplit(':').next().unwrap_or(id);
        if self.source.history(name).await?.is_some() {
            return Ok(name.to_owned());
        }
        let names: Vec<String> = self
            .source
            .list(true)
            .await?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        // A unique prefix, else a unique part (names derived from long dedup keys start alike).
        let mut matches: Vec<String> = names.iter().filter(|n| n.starts_with(name)).cloned().collect();
        if matches.is_empty() {
            matches = names.into_iter().filter(|n| n.contains(name)).collect();
        }
        match matches.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(OpsError::Unknown(id.to_owned())),
            _ => Err(OpsError::Ambiguous {
                prefix: id.to_owned(),
                matches,
            }),
        }
    }

    async fn load(&self, name: &str) -> Result<Option<Rollout>, OpsError> {
        let Some((arn, history)) = self.source.history(name).await? else {
            return Ok(None);
        };
        let control = self.store.control(name).await?;
        let mut rollout = Rollout::from_history(name, &arn, &history, control);
        rollout.steps = self.steps.clone();
        Ok(Some(rollout))
    }

    /// One rollout.
    pub async fn status(&self, id: &str) -> Result<Rollout, OpsError> {
        let name = self.resolve(id).await?;
        self.load(&name)
            .await?
            .ok_or_else(|| OpsError::Unknown(id.to_owned()))
    }

    /// Its history: transitions, weights, health results, operator actions.
    pub async fn history(&self, id: &str) -> Result<(Rollout, Vec<Line>), OpsError> {
        let name = self.resolve(id).await?;
        let (arn, history) = self
            .source
            .history(&name)
            .await?
            .ok_or_else(|| OpsError::Unknown(id.to_owned()))?;
        let audit = self.store.audit_log(Some(&name)).await?;
        let control = self.store.control(&name).await?;
        let mut rollout = Rollout::from_history(&name, &arn, &history, control);
        rollout.steps = self.steps.clone();
        Ok((rollout, history_lines(&history, &audit)))
    }

    /// Takes a control action on the rollout `id`: writes its control record (the running
    /// rollout reads it within a tick) and the audit entry. `retry` instead starts a new
    /// rollout of the same deployment, named `<id>-retry-N`, linked to the old one. With
    /// `drive`, a rollout no process is running is run here to its end (a command-line tool
    /// does this; a daemon resumes such rollouts itself).
    pub async fn act(
        &self,
        id: &str,
        action: Action,
        reason: &str,
        actor: &str,
        drive: bool,
    ) -> Result<Acted, OpsError> {
        if reason.trim().is_empty() {
            return Err(OpsError::NoReason);
        }
        let rollout = self.status(id).await?;
        if action == Action::Retry {
            return self.retry(&rollout, reason, actor).await;
        }
        if rollout.phase.ended() {
            return Err(OpsError::Ended {
                id: rollout.id,
                phase: rollout.phase.as_str(),
                hint: "`cutover rollouts retry` starts a new rollout of its deployment",
            });
        }
        let target = match action {
            Action::Promote => match &rollout.window {
                Some(w) => Some(w.name.clone()),
                None => {
                    return Err(OpsError::NotWaiting {
                        id: rollout.id,
                        step: rollout.step.unwrap_or_else(|| "no state yet".into()),
                    });
                }
            },
            _ => None,
        };
        let now = self.clock.now();
        let at = cutover_asl::timestamp::format_system(now);
        let control_id = action_id(cutover_asl::timestamp::to_nanos(now));
        let control = Control {
            action,
            target: target.clone(),
            reason: reason.to_owned(),
            actor: actor.to_owned(),
            at: at.clone(),
            id: control_id.clone(),
        };
        self.store.set_control(&rollout.id, &control).await?;
        let audit = AuditEntry {
            at,
            rollout: rollout.id.clone(),
            action,
            reason: reason.to_owned(),
            actor: actor.to_owned(),
            change: json!({
                "from": {
                    "phase": rollout.phase.as_str(),
                    "step": rollout.step,
                    "weights": rollout.weights.map(|(blue, green)| json!({"blue": blue, "green": green})),
                    "wait": rollout.window.as_ref().map(|w| &w.name),
                },
                "ends_wait": target,
            }),
            id: control_id,
        };
        self.store.audit(&audit).await?;
        // Nobody may be running it (the embedded engine without a daemon): then this process
        // runs it on, so the action takes effect (an abort rolls back) before the command ends.
        let drove = drive && self.source.drive(&rollout.id).await?;
        Ok(Acted {
            rollout: rollout.id,
            audit,
            drove,
        })
    }

    async fn retry(&self, old: &Rollout, reason: &str, actor: &str) -> Result<Acted, OpsError> {
        if !matches!(old.phase, Phase::RolledBack | Phase::Aborted | Phase::Failed) {
            return Err(OpsError::NotRetryable {
                id: old.id.clone(),
                phase: old.phase.as_str(),
            });
        }
        let base = old.id.split("-retry-").next().unwrap_or(&old.id).to_owned();
        let mut n = 1;
        let name = loop {
            let candidate = format!("{base}-retry-{n}");
            if self.source.history(&candidate).await?.is_none() {
                break candidate;
            }
            n += 1;
        };
        let mut input = old.input.clone();
        if let Value::Object(fields) = &mut input {
            fields.insert("retry_of".into(), json!(old.id));
        }
        let started = self.engine.start(&name, &input).await?;
        let arn = match started {
            Started::New { arn, .. } | Started::Duplicate { arn, .. } => arn,
        };
        let now = self.clock.now();
        let audit = AuditEntry {
            at: cutover_asl::timestamp::format_system(now),
            rollout: old.id.clone(),
            action: Action::Retry,
            reason: reason.to_owned(),
            actor: actor.to_owned(),
            change: json!({"retry": name, "execution": arn, "from": {"phase": old.phase.as_str()}}),
            id: action_id(cutover_asl::timestamp::to_nanos(now)),
        };
        self.store.audit(&audit).await?;
        // The new rollout is the service's now: the slot superseding uses, which the starting
        // stage wrote into the control block.
        if let Some(service) = service_of(&old.input) {
            let at = crate::state_machine::millis(self.clock.now());
            self.store.claim_service(&service, &name, at).await?;
        }
        Ok(Acted {
            rollout: name,
            audit,
            drove: false,
        })
    }
}

/// The service slot of a rollout from its input: `control.service`, or for rollouts started
/// before it was recorded there, the default identity `cluster|group`.
fn service_of(input: &Value) -> Option<String> {
    if let Some(service) = input
        .pointer("/control/service")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        return Some(service.to_owned());
    }
    let cluster = input.get("cluster").and_then(Value::as_str)?;
    let group = input.get("group").and_then(Value::as_str)?;
    Some(format!("{cluster}|{group}"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use cutover_core::SystemClock;

    use super::*;
    use crate::rollouts::FileRolloutStore;
    use crate::rollouts::view::Happened;

    /// Executions held in memory; `start` records what was started.
    #[derive(Debug, Default)]
    struct Fake {
        executions: Mutex<BTreeMap<String, Vec<Entry>>>,
    }

    fn at(s: u32) -> String {
        format!("2026-11-29T05:00:{s:02}.000Z")
    }

    impl Fake {
        fn add(&self, name: &str, history: Vec<Happened>) {
            let entries = history
                .into_iter()
                .enumerate()
                .map(|(i, what)| Entry {
                    at: at(u32::try_from(i).unwrap()),
                    what,
                })
                .collect();
            self.executions.lock().unwrap().insert(name.to_owned(), entries);
        }
    }

    impl RolloutSource for Fake {
        fn list(&self, _all: bool) -> BoxFuture<'_, Result<Vec<(String, String)>, StageError>> {
            let names: Vec<(String, String)> = self
                .executions
                .lock()
                .unwrap()
                .keys()
                .map(|n| (n.clone(), format!("arn:{n}")))
                .collect();
            Box::pin(async move { Ok(names) })
        }

        fn history<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Recorded>, StageError>> {
            let found = self.executions.lock().unwrap().get(name).cloned();
            Box::pin(async move { Ok(found.map(|h| (format!("arn:{name}"), h))) })
        }
    }

    impl StateMachineEngine for Fake {
        fn start<'a>(
            &'a self,
            name: &'a str,
            input: &'a Value,
        ) -> BoxFuture<'a, Result<Started, StageError>> {
            self.add(name, vec![Happened::Started { input: input.clone() }]);
            Box::pin(async move {
                Ok(Started::New {
                    arn: format!("arn:{name}"),
                    status: None,
                })
            })
        }

        fn status<'a>(&'a self, _name: &'a str) -> BoxFuture<'a, Result<Option<String>, StageError>> {
            Box::pin(async { Ok(None) })
        }
    }

    fn entered(state: &str, input: Value) -> Happened {
        Happened::Entered {
            state: state.into(),
            input: input.into(),
        }
    }

    fn rig() -> (Arc<Fake>, Rollouts, tempfile::TempDir) {
        let fake = Arc::new(Fake::default());
        let dir = tempfile::tempdir().unwrap();
        let rollouts = Rollouts::new(
            fake.clone(),
            Arc::new(FileRolloutStore::new(dir.path())),
            fake.clone(),
            Arc::new(SystemClock),
            &Value::Null,
        );
        let input = json!({"cluster": "c", "group": "service:cats", "task_definition": "td/cats:3"});
        fake.add(
            "cats-3",
            vec![
                Happened::Started { input: input.clone() },
                entered("Check10", json!({})),
            ],
        );
        fake.add(
            "cats-30",
            vec![
                Happened::Started { input: input.clone() },
                entered(
                    "ReadControl",
                    json!({"bake": {"name": "Bake50", "seconds": 60, "elapsed": 12}}),
                ),
            ],
        );
        fake.add(
            "cats-2",
            vec![
                Happened::Started { input },
                Happened::Ended {
                    status: "FAILED".into(),
                    error: Some("Canary.Unhealthy".into()),
                    cause: Some("500s".into()),
                },
            ],
        );
        (fake, rollouts, dir)
    }

    #[tokio::test]
    async fn refusals_name_the_rollout_and_what_to_do() {
        let (_fake, rollouts, _dir) = rig();
        let err = |r: Result<Acted, OpsError>| r.unwrap_err().to_string();
        let not_waiting = err(rollouts.act("cats-3", Action::Promote, "go", "me", false).await);
        assert!(
            not_waiting.contains("is not waiting (it is in Check10)") && not_waiting.contains("--full"),
            "{not_waiting}"
        );
        let ended = err(rollouts.act("cats-2", Action::Pause, "hold", "me", false).await);
        assert!(ended.contains("has already ended (rolled-back)"), "{ended}");
        let ambiguous = err(rollouts.act("cats-", Action::Abort, "stop", "me", false).await);
        assert!(ambiguous.contains("names several rollouts"), "{ambiguous}");
        let unknown = err(rollouts.act("dogs", Action::Abort, "stop", "me", false).await);
        assert!(unknown.contains("no rollout \"dogs\""), "{unknown}");
        let no_reason = err(rollouts.act("cats-30", Action::Abort, "", "me", false).await);
        assert!(no_reason.contains("give a reason"), "{no_reason}");
        let running = err(rollouts.act("cats-30", Action::Retry, "again", "me", false).await);
        assert!(
            running.contains("only a rolled-back, aborted or failed rollout"),
            "{running}"
        );
    }

    #[tokio::test]
    async fn promote_targets_the_current_wait_and_retry_links_a_new_rollout() {
        let (fake, rollouts, _dir) = rig();
        let acted = rollouts
            .act("cats-30", Action::Promote, "looks good", "alice", false)
            .await
            .unwrap();
        let control = rollouts.store().control("cats-30").await.unwrap().unwrap();
        assert_eq!(control.target.as_deref(), Some("Bake50"));
        assert_eq!(acted.audit.change["from"]["wait"], "Bake50");
        assert_eq!(rollouts.status("cats-30").await.unwrap().control, Some(control));

        let retried = rollouts
            .act("cats-2", Action::Retry, "fixed", "alice", false)
            .await
            .unwrap();
        assert_eq!(retried.rollout, "cats-2-retry-1");
        let again = rollouts
            .act("cats-2", Action::Retry, "fixed", "alice", false)
            .await
            .unwrap();
        assert_eq!(again.rollout, "cats-2-retry-2", "a free name each time");
        let started = fake.executions.lock().unwrap()["cats-2-retry-1"].clone();
        let Happened::Started { input } = &started[0].what else {
            panic!("{started:?}")
        };
        assert_eq!(input["retry_of"], "cats-2");
    }

    #[test]
    fn retry_takes_the_service_slot_superseding_uses() {
        let of = |v: Value| service_of(&v);
        assert_eq!(
            of(json!({"control": {"service": "cats"}, "cluster": "c", "group": "service:cats-green"}))
                .as_deref(),
            Some("cats"),
            "the [services] name the starting stage recorded"
        );
        assert_eq!(
            of(json!({"control": {"service": ""}, "cluster": "c", "group": "g"})).as_deref(),
            Some("c|g"),
            "rollouts started before the service was recorded: the default identity"
        );
        assert_eq!(of(json!({"control": {}})), None);
    }
}
