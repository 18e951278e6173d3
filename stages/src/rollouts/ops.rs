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
        }
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
        // The new rollout is the service's now.
        if let (Some(cluster), Some(group)) = (
            old.input.get("cluster").and_then(Value::as_str),
            old.input.get("group").and_then(Value::as_str),
        ) {
            self.store
                .claim_service(&format!("{cluster}|{group}"), &name)
                .await?;
        }
        Ok(Acted {
            rollout: name,
            audit,
            drove: false,
        })
    }
}
