//! `notify`: an example third-party stage, built exactly as a user's plugin crate would be.
//!
//! It wraps the rest of the pipeline and appends one JSON line to a file for each outcome it
//! observes — a rollout started, an event that failed — so an operator (or a log shipper) can
//! follow what cutover decided. It shows the two things every plugin needs: a config type
//! registered with `#[typetag::serde]` plus [`cutover_core::register_stage!`], and a runtime
//! type implementing [`Stage`] that calls `next.run(event)` and looks at the result.
//!
//! ```toml
//! [[pipelines.ecs-events.stages]]
//! type = "notify"
//! file = "notifications.jsonl"      # relative paths land in the data directory
//! on = ["passed", "failed"]
//! message = "canary for {detail.group}"
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use cutover_core::{
    BoxFuture, BuildContext, BuildError, Clock, Event, FieldError, Next, Outcome, Stage, StageConfig,
    Template, ValidateContext,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

cutover_core::register_stage!(
    "notify",
    "Appends a JSON line to a file for each outcome of the stages after it.",
    per_event_templates
);

/// Makes sure the linker keeps this crate (and so its stage registration) in a binary that
/// names no other item of it.
pub fn link() {}

/// Which outcomes to record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutcomeKind {
    /// The event went through every stage.
    Passed,
    /// A stage dropped the event.
    Dropped,
    /// A stage failed.
    Failed,
}

/// Configuration of the `notify` stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// File to append JSON lines to; a relative path lands in the data directory.
    #[serde(default = "default_file")]
    pub file: PathBuf,
    /// Which outcomes to record: any of `passed`, `dropped`, `failed`.
    #[serde(default = "default_on")]
    pub on: Vec<OutcomeKind>,
    /// A message rendered against the event, e.g. `"canary for {detail.group}"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Template>,
}

fn default_file() -> PathBuf {
    PathBuf::from("notifications.jsonl")
}

fn default_on() -> Vec<OutcomeKind> {
    vec![OutcomeKind::Passed, OutcomeKind::Failed]
}

#[typetag::serde(name = "notify")]
impl StageConfig for NotifyConfig {
    fn build<'a>(&'a self, cx: &'a BuildContext) -> BoxFuture<'a, Result<Arc<dyn Stage>, BuildError>> {
        Box::pin(async move {
            let stage = Notify {
                file: cx.data_path(&self.file),
                on: self.on.clone(),
                message: self.message.clone(),
                clock: cx.clock(),
            };
            Ok(Arc::new(stage) as Arc<dyn Stage>)
        })
    }

    fn validate(&self, _cx: &ValidateContext<'_>) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.on.is_empty() {
            errors.push(FieldError::new(
                "on",
                "empty: list at least one of passed, dropped, failed",
            ));
        }
        if self.file.as_os_str().is_empty() {
            errors.push(FieldError::new(
                "file",
                "empty: give a file name such as notifications.jsonl",
            ));
        }
        errors
    }
}

/// The runtime `notify` stage.
#[derive(Debug)]
pub struct Notify {
    file: PathBuf,
    on: Vec<OutcomeKind>,
    message: Option<Template>,
    clock: Arc<dyn Clock>,
}

impl Stage for Notify {
    /// A notifier not recording drops hands every event on as it came and leaves a drop alone.
    fn transparent_to_drops(&self) -> bool {
        !self.on.contains(&OutcomeKind::Dropped)
    }

    fn process<'a>(&'a self, event: Event, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            // Most events are dropped and never notified: read the event (id, message) only
            // for an outcome that is, from a copy as it came in (a copy shares the bytes).
            let entered = event.clone();
            let outcome = next.run(event).await;
            let kind = match outcome {
                Outcome::Passed { .. } => OutcomeKind::Passed,
                Outcome::Dropped { .. } => OutcomeKind::Dropped,
                Outcome::Failed { .. } => OutcomeKind::Failed,
            };
            if self.on.contains(&kind) {
                let id = entered.id().map(str::to_owned);
                let message = self
                    .message
                    .as_ref()
                    .map(|t| t.render(&entered).unwrap_or_else(|e| e.to_string()));
                let at = self
                    .clock
                    .now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0);
                let mut line = json!({ "at": at, "id": id, "message": message });
                if let (Value::Object(line), Ok(Value::Object(o))) =
                    (&mut line, serde_json::to_value(&outcome))
                {
                    line.extend(o);
                }
                if let Err(error) = append_line(&self.file, &line).await {
                    tracing::warn!(stage = "notify", file = %self.file.display(), %error, "could not record the outcome");
                }
            }
            outcome
        })
    }
}

async fn append_line(path: &Path, line: &Value) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir).await?;
    }
    let mut text = serde_json::to_vec(line).map_err(std::io::Error::other)?;
    text.push(b'\n');
    let mut f = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await?;
    f.write_all(&text).await?;
    f.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_core::Pipeline;

    #[derive(Debug)]
    struct DropAll;
    impl Stage for DropAll {
        fn rules_out(&self, _e: &Event) -> Option<std::borrow::Cow<'_, str>> {
            Some("no".into())
        }

        fn process<'a>(&'a self, _e: Event, _n: Next<'a>) -> BoxFuture<'a, Outcome> {
            Box::pin(async { Outcome::dropped("no") })
        }
    }

    #[test]
    fn config_round_trips_through_toml() {
        let cfg: NotifyConfig =
            toml::from_str("file = \"n.jsonl\"\non = [\"failed\"]\nmessage = \"x {id}\"").unwrap();
        let text = toml::to_string(&cfg).unwrap();
        let again: NotifyConfig = toml::from_str(&text).unwrap();
        assert_eq!(again.file, PathBuf::from("n.jsonl"));
        assert_eq!(again.on, vec![OutcomeKind::Failed]);
        assert_eq!(again.message.unwrap().as_str(), "x {id}");
    }

    #[tokio::test]
    async fn records_only_the_chosen_outcomes() {
        let dir = tempfile::tempdir().unwrap();
        let cx = BuildContext::new(dir.path());
        let passed = NotifyConfig {
            file: "n.jsonl".into(),
            on: vec![OutcomeKind::Passed],
            message: Some("hi {id}".parse().unwrap()),
        };
        let stage = passed.build(&cx).await.unwrap();
        let p = Pipeline::from_stages("p", vec![("notify".into(), stage.clone())]);
        p.run(Event::from_bytes(br#"{"id":"e1"}"#.to_vec())).await;
        let p = Pipeline::from_stages(
            "p",
            vec![("notify".into(), stage), ("drop".into(), Arc::new(DropAll))],
        );
        let out = p.run(Event::from_bytes(br#"{"id":"e2"}"#.to_vec())).await;
        assert_eq!(
            out.stage(),
            Some("drop"),
            "notify passes the inner outcome through unchanged"
        );
        let text = std::fs::read_to_string(dir.path().join("n.jsonl")).unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["id"], "e1");
        assert_eq!(lines[0]["message"], "hi e1");
        assert_eq!(lines[0]["outcome"], "passed");
    }

    #[tokio::test]
    async fn a_notifier_of_drops_sees_them_even_when_a_later_stage_rules_them_out() {
        let dir = tempfile::tempdir().unwrap();
        let cx = BuildContext::new(dir.path());
        for (on, recorded) in [(OutcomeKind::Passed, 0), (OutcomeKind::Dropped, 1)] {
            let file = format!("{on:?}.jsonl");
            let cfg = NotifyConfig {
                file: file.clone().into(),
                on: vec![on],
                message: None,
            };
            let stage = cfg.build(&cx).await.unwrap();
            assert_eq!(stage.transparent_to_drops(), on != OutcomeKind::Dropped);
            let p = Pipeline::from_stages(
                "p",
                vec![("notify".into(), stage), ("drop".into(), Arc::new(DropAll))],
            );
            let out = p.run(Event::from_bytes(br#"{"id":"e3"}"#.to_vec())).await;
            assert_eq!(
                out,
                Outcome::Dropped {
                    stage: "drop".into(),
                    reason: "no".into()
                }
            );
            let text = std::fs::read_to_string(dir.path().join(&file)).unwrap_or_default();
            assert_eq!(text.lines().count(), recorded, "on = {on:?}: {text}");
        }
    }
}
