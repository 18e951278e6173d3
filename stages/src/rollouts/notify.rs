//! Rollout notifications: what each rollout does, told to a webhook (generic JSON or Slack's
//! `{"text"}`) as it happens — started, a step reached, an analysis failed, an operator action,
//! promoted, rolled back, aborted, failed.
//!
//! ```toml
//! [[pipelines.ecs-events.stages]]
//! type = "start-state-machine"
//! notify = [{ url = "https://hooks.slack.com/services/T000/B000/XXXX", format = "slack", on = ["started", "step", "analysis-failed", "promoted", "rolled-back", "aborted"] }]
//! ```
//!
//! The daemon (`cutover serve`) watches the rollouts of the pipeline it runs — on the embedded
//! engine and on Step Functions alike, through the same history `cutover rollouts history`
//! shows — every `every`, and sends one notification per new history line of a notified kind.
//! What was sent is remembered in `<data_dir>/rollouts/notified-<n>.json`, so a restarted
//! daemon goes on where it stopped (at least once: a notification sent just before a crash may
//! be sent again). A notification is tried again on no answer, a 5xx or a 429 and kept in
//! `dead_letter` when it cannot be delivered; it never holds up or fails a rollout.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cutover_core::{BuildContext, BuildError, FieldError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::ops::Rollouts;
use super::view::Line;
use crate::webhook_notify::{self, Format, Webhook};

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutEvent {
    /// A rollout started.
    Started,
    /// A weight step was reached (and verified).
    Step,
    /// An analysis found green unhealthy.
    AnalysisFailed,
    /// An operator acted: abort, pause, resume, promote, retry.
    Operator,
    /// The rollout ended with green serving everything.
    Promoted,
    /// Green was sick or a step failed: traffic went back to blue.
    RolledBack,
    /// An operator (or a newer deployment) ended it: traffic went back to blue.
    Aborted,
    /// It ended without its rollback (stopped from outside, timed out).
    Failed,
}

/// One `notify = [{ … }]` entry of the `start-state-machine` stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutNotifyConfig {
    /// Where to POST.
    pub url: String,
    /// The payload's shape: `json` or `slack`.
    #[serde(default)]
    pub format: Format,
    /// What to notify; all of them when left out.
    #[serde(default = "every_event")]
    pub on: Vec<RolloutEvent>,
    /// How often the rollouts are looked at.
    #[serde(default = "default_every", with = "crate::duration")]
    pub every: Duration,
    /// Further attempts after no answer, a 5xx or a 429.
    #[serde(default = "webhook_notify::default_retries")]
    pub retries: u32,
    /// Time between attempts.
    #[serde(default = "webhook_notify::default_interval", with = "crate::duration")]
    pub retry_interval: Duration,
    /// How long one attempt may take.
    #[serde(default = "webhook_notify::default_timeout", with = "crate::duration")]
    pub timeout: Duration,
    /// Where undeliverable notifications go (JSON Lines; relative to the data directory).
    #[serde(default = "webhook_notify::default_dead_letter")]
    pub dead_letter: PathBuf,
}

fn every_event() -> Vec<RolloutEvent> {
    use RolloutEvent::*;
    vec![
        Started,
        Step,
        AnalysisFailed,
        Operator,
        Promoted,
        RolledBack,
        Aborted,
        Failed,
    ]
}

fn default_every() -> Duration {
    Duration::from_secs(2)
}

impl RolloutNotifyConfig {
    /// The problems of entry `index`, fields named `notify[index].…`.
    pub fn validate(&self, index: usize) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if let Err(e) = webhook_notify::webhook_url(&format!("notify[{index}].url"), &self.url) {
            errors.push(e);
        }
        if self.on.is_empty() {
            errors.push(FieldError::new(
                format!("notify[{index}].on"),
                "name at least one of started, step, analysis-failed, operator, promoted, \
                 rolled-back, aborted, failed (or leave `on` out for all)",
            ));
        }
        if self.every < Duration::from_millis(100) {
            errors.push(FieldError::new(
                format!("notify[{index}].every"),
                "must be at least 100ms",
            ));
        }
        errors
    }

    /// The notifier for `rollouts`, remembering what it sent under the data directory.
    pub fn notifier(
        &self,
        index: usize,
        rollouts: Rollouts,
        cx: &BuildContext,
    ) -> Result<Notifier, BuildError> {
        if let Some(e) = self.validate(index).into_iter().next() {
            return Err(BuildError::Field(e));
        }
        let uri = webhook_notify::webhook_url("url", &self.url).map_err(BuildError::Field)?;
        let attempts = (self.retries, self.retry_interval, self.timeout);
        Ok(Notifier {
            webhook: Webhook::new(uri, cx.clock(), attempts, cx.data_path(&self.dead_letter)),
            config: self.clone(),
            rollouts,
            clock: cx.clock(),
            seen_path: cx.data_path(format!("rollouts/notified-{index}.json")),
        })
    }
}

/// The kind of notification a history line is, if any.
pub fn event_of(line: &Line) -> Option<RolloutEvent> {
    match line.kind {
        "state" if line.detail.get("started").is_some() => Some(RolloutEvent::Started),
        "weights" => (line.detail["green"].as_u64().unwrap_or(0) > 0).then_some(RolloutEvent::Step),
        "health" if line.detail["State"] == "unhealthy" => Some(RolloutEvent::AnalysisFailed),
        "action" => Some(RolloutEvent::Operator),
        "end" => Some(
            match (line.detail["status"].as_str(), line.detail["error"].as_str()) {
                (Some("SUCCEEDED"), _) => RolloutEvent::Promoted,
                (_, Some("Canary.Aborted")) => RolloutEvent::Aborted,
                (_, Some("Canary.Unhealthy" | "Canary.StepFailed")) => RolloutEvent::RolledBack,
                _ => RolloutEvent::Failed,
            },
        ),
        _ => None,
    }
}

/// A stable fingerprint of a history line (FNV-1a of its time, kind and text).
fn fingerprint(line: &Line) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [line.at.as_bytes(), line.kind.as_bytes(), line.text.as_bytes()] {
        for byte in part.iter().chain(b"\x1f") {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// What was sent: per rollout, the fingerprints of its notified lines.
type Seen = BTreeMap<String, BTreeSet<u64>>;

/// Watches one pipeline's rollouts and notifies their new history lines.
#[derive(Debug)]
pub struct Notifier {
    webhook: Webhook,
    config: RolloutNotifyConfig,
    rollouts: Rollouts,
    clock: Arc<dyn cutover_core::Clock>,
    seen_path: PathBuf,
}

impl Notifier {
    /// Runs until dropped (the daemon aborts it at shutdown). On its very first run it starts
    /// from now: what rollouts already did is not told again.
    pub async fn run(self) {
        self.start().await.follow().await
    }

    /// What was already told: the record, or on the very first run what rollouts did until
    /// now (not told). A host awaits this before it takes events, so that everything its events
    /// start is told.
    pub async fn start(self) -> Started {
        let seen = match self.load() {
            Some(seen) => seen,
            None => {
                let mut seen = Seen::new();
                let _ = self.round(&mut seen, false).await;
                self.save(&seen);
                seen
            }
        };
        Started { notifier: self, seen }
    }

    /// Tells what rollouts do from `seen` on, every `every`, until dropped.
    async fn follow_from(&self, mut seen: Seen) {
        loop {
            match self.round(&mut seen, true).await {
                Ok(true) => self.save(&seen),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "rollout notifications: cannot read the rollouts"),
            }
            self.clock.sleep(self.config.every).await;
        }
    }

    /// One look at the rollouts: sends (with `send`) each new line of a notified kind, marks it
    /// seen. Whether anything changed.
    async fn round(&self, seen: &mut Seen, send: bool) -> Result<bool, super::ops::OpsError> {
        let mut changed = false;
        let listed = self.rollouts.list(true).await?;
        let ids: BTreeSet<&str> = listed.iter().map(|r| r.id.as_str()).collect();
        // Rollouts no longer listed are forgotten, so the file stays small.
        let before = seen.len();
        seen.retain(|id, _| ids.contains(id.as_str()));
        changed |= seen.len() != before;
        for rollout in &listed {
            let (rollout, lines) = self.rollouts.history(&rollout.id).await?;
            let known = seen.entry(rollout.id.clone()).or_default();
            for line in &lines {
                if !known.insert(fingerprint(line)) {
                    continue;
                }
                changed = true;
                let Some(event) = event_of(line).filter(|e| self.config.on.contains(e)) else {
                    continue;
                };
                if send {
                    self.webhook.deliver(self.payload(event, &rollout, line)).await;
                }
            }
        }
        Ok(changed)
    }

    fn payload(&self, event: RolloutEvent, rollout: &super::view::Rollout, line: &Line) -> Value {
        let name = serde_json::to_value(event).unwrap_or(Value::Null);
        let name = name.as_str().unwrap_or("?");
        let deployment = if rollout.deployment.is_empty() {
            String::new()
        } else {
            format!(" ({})", rollout.deployment)
        };
        match self.config.format {
            Format::Slack => {
                json!({"text": format!("cutover: rollout {}{deployment} {name}: {}", rollout.id, line.text)})
            }
            Format::Json => json!({
                "event": name,
                "rollout": rollout.id,
                "execution": rollout.arn,
                "deployment": rollout.deployment,
                "phase": rollout.phase.as_str(),
                "message": line.text,
                "detail": line.detail,
                "at": line.at,
            }),
        }
    }

    fn load(&self) -> Option<Seen> {
        let bytes = std::fs::read(&self.seen_path).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(seen) => Some(seen),
            Err(e) => {
                tracing::warn!(path = %self.seen_path.display(), error = %e, "rollout notifications: unreadable record; starting from now");
                None
            }
        }
    }

    fn save(&self, seen: &Seen) {
        let bytes = serde_json::to_vec(seen).unwrap_or_default();
        if let Err(e) = cutover_core::fs::write_atomically(&self.seen_path, &bytes) {
            tracing::warn!(path = %self.seen_path.display(), error = %e, "rollout notifications: cannot record what was sent");
        }
    }
}

/// A notifier that knows what was already told: [`follow`](Started::follow) tells the rest.
#[derive(Debug)]
pub struct Started {
    notifier: Notifier,
    seen: Seen,
}

impl Started {
    /// Tells what rollouts do, every `every`, until dropped.
    pub async fn follow(self) {
        self.notifier.follow_from(self.seen).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(kind: &'static str, detail: Value) -> Line {
        Line {
            at: "2026-11-29T08:00:00.000Z".into(),
            kind,
            text: "t".into(),
            detail,
        }
    }

    #[test]
    fn history_lines_name_their_event() {
        assert_eq!(
            event_of(&line("state", json!({"started": {}}))),
            Some(RolloutEvent::Started)
        );
        assert_eq!(event_of(&line("state", json!({"state": "Shift10"}))), None);
        assert_eq!(
            event_of(&line("weights", json!({"blue": 90, "green": 10}))),
            Some(RolloutEvent::Step)
        );
        assert_eq!(
            event_of(&line("weights", json!({"blue": 100, "green": 0}))),
            None,
            "the rollback's shift"
        );
        assert_eq!(
            event_of(&line("health", json!({"State": "unhealthy"}))),
            Some(RolloutEvent::AnalysisFailed)
        );
        assert_eq!(event_of(&line("health", json!({"State": "healthy"}))), None);
        assert_eq!(
            event_of(&line("action", json!({"action": "pause"}))),
            Some(RolloutEvent::Operator)
        );
        let end =
            |status: &str, error: Value| event_of(&line("end", json!({"status": status, "error": error})));
        assert_eq!(end("SUCCEEDED", Value::Null), Some(RolloutEvent::Promoted));
        assert_eq!(
            end("FAILED", json!("Canary.Aborted")),
            Some(RolloutEvent::Aborted)
        );
        assert_eq!(
            end("FAILED", json!("Canary.Unhealthy")),
            Some(RolloutEvent::RolledBack)
        );
        assert_eq!(end("TIMED_OUT", Value::Null), Some(RolloutEvent::Failed));
    }

    #[test]
    fn fingerprints_tell_lines_apart_and_are_stable() {
        let a = line("health", json!({}));
        let mut b = a.clone();
        b.text = "u".into();
        assert_ne!(fingerprint(&a), fingerprint(&b));
        // FNV-1a, the same in every build (the record outlives the binary that wrote it).
        assert_eq!(fingerprint(&a), 0x4850_06e3_5be4_58d3);
    }

    #[test]
    fn bad_entries_name_the_field() {
        let c: RolloutNotifyConfig = toml::from_str("url = \"ftp://x\"\non = []").unwrap();
        let fields: Vec<String> = c.validate(1).into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["notify[1].url", "notify[1].on"]);
        let bad =
            toml::from_str::<RolloutNotifyConfig>("url = \"http://x\"\non = [\"rolledback\"]").unwrap_err();
        assert!(bad.to_string().contains("rolled-back"), "{bad}");
    }
}
