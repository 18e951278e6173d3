//! `webhook-notify`: tells people what a rollout did, by webhook — generic JSON or a
//! Slack-compatible `{"text": …}` — without ever holding up or failing the rollout.
//!
//! Like every stage it wraps the rest of its pipeline and sees how the event ended; placed in
//! the pipelines a canary runs, it reports each moment: a rollout started (the ECS events
//! pipeline), a step reached or a rollback (the traffic-shift pipeline: `{weight}`), an
//! analysis result (the health-check pipeline: `{context.State}`).
//!
//! ```toml
//! [[pipelines.traffic-shift.stages]]
//! type = "webhook-notify"
//! url = "https://hooks.slack.com/services/T000/B000/XXXX"
//! format = "slack"
//! message = "canary {execution}: green at {weight}%"
//! on = ["passed", "failed"]
//! ```
//!
//! The notification is sent in the background (the rollout goes on at once), tried again
//! `retries` times `retry_interval` apart on no answer or a 5xx/429, and when it still cannot
//! be delivered it is appended to its own dead-letter file (`dead_letter`, in the data
//! directory) — never dropped, never a failure of the event.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cutover_core::{
    Background, BoxFuture, BuildContext, BuildError, Clock, Event, FieldError, Next, Outcome, Stage,
    StageConfig, Template, ValidateContext,
};
use hyper::{Method, Uri};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::health_check::client;
use crate::health_check::http::Tls;

cutover_core::register_stage!(
    "webhook-notify",
    "Posts what happened (JSON or Slack) to a webhook after the stages after it; never fails the event.",
    per_event_templates
);

/// Which outcomes are notified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum On {
    /// The rest of the pipeline passed.
    Passed,
    /// A stage dropped the event.
    Dropped,
    /// A stage failed.
    Failed,
}

/// The payload's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `{"message", "outcome", "stage", "reason", "event", "context", "at"}`.
    #[default]
    Json,
    /// `{"text": "…"}`: Slack's incoming webhooks and the many tools that accept them.
    Slack,
}

/// Configuration of the `webhook-notify` stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookNotifyConfig {
    /// Where to POST.
    pub url: String,
    /// The payload's shape: `json` or `slack`.
    #[serde(default)]
    pub format: Format,
    /// A message rendered against the event (the Task input, with what earlier stages added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Template>,
    /// Which outcomes to notify: any of `passed`, `dropped`, `failed`.
    #[serde(default = "default_on")]
    pub on: Vec<On>,
    /// Further attempts after no answer, a 5xx or a 429.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Time between attempts.
    #[serde(default = "default_interval", with = "crate::duration")]
    pub retry_interval: Duration,
    /// How long one attempt may take.
    #[serde(default = "default_timeout", with = "crate::duration")]
    pub timeout: Duration,
    /// Where undeliverable notifications go (JSON Lines; relative to the data directory).
    #[serde(default = "default_dead_letter")]
    pub dead_letter: PathBuf,
}

fn default_on() -> Vec<On> {
    vec![On::Passed, On::Failed]
}
pub(crate) fn default_retries() -> u32 {
    3
}
pub(crate) fn default_interval() -> Duration {
    Duration::from_secs(2)
}
pub(crate) fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
pub(crate) fn default_dead_letter() -> PathBuf {
    PathBuf::from("notifications-dead-letter.jsonl")
}

impl WebhookNotifyConfig {
    fn errors(&self) -> Vec<FieldError> {
        webhook_url("url", &self.url).err().into_iter().collect()
    }
}

#[typetag::serde(name = "webhook-notify")]
impl StageConfig for WebhookNotifyConfig {
    fn build<'a>(&'a self, cx: &'a BuildContext) -> BoxFuture<'a, Result<Arc<dyn Stage>, BuildError>> {
        Box::pin(async move {
            if let Some(e) = self.errors().into_iter().next() {
                return Err(BuildError::Field(e));
            }
            let uri = webhook_url("url", &self.url).map_err(BuildError::Field)?;
            let attempts = (self.retries, self.retry_interval, self.timeout);
            Ok(Arc::new(WebhookNotify {
                sender: Arc::new(Sender {
                    config: self.clone(),
                    clock: cx.clock(),
                    webhook: Webhook::new(uri, cx.clock(), attempts, cx.data_path(&self.dead_letter)),
                }),
                background: cx.background().clone(),
            }) as Arc<dyn Stage>)
        })
    }

    fn validate(&self, _cx: &ValidateContext<'_>) -> Vec<FieldError> {
        self.errors()
    }
}

/// The runtime stage.
#[derive(Debug)]
pub struct WebhookNotify {
    sender: Arc<Sender>,
    background: Background,
}

/// What delivers notifications: the payload of an outcome, over [`Webhook`].
#[derive(Debug)]
struct Sender {
    config: WebhookNotifyConfig,
    clock: Arc<dyn Clock>,
    webhook: Webhook,
}

/// A webhook notifications are POSTed to: tried again on no answer, a 5xx or a 429; kept in a
/// dead-letter file when still undelivered. Shared by `webhook-notify` and the rollout
/// notifications of `start-state-machine` (`notify`).
#[derive(Debug)]
pub(crate) struct Webhook {
    uri: Uri,
    tls: Tls,
    clock: Arc<dyn Clock>,
    retries: u32,
    retry_interval: Duration,
    timeout: Duration,
    dead_letter: PathBuf,
}

/// `url` as an http(s) URL, or the field error naming `field`.
pub(crate) fn webhook_url(field: &str, url: &str) -> Result<Uri, FieldError> {
    match url.parse::<Uri>() {
        Ok(u) if u.host().is_some() && matches!(u.scheme_str(), Some("http" | "https")) => Ok(u),
        _ => Err(FieldError::new(
            field,
            format!("{url:?} is not an http:// or https:// URL"),
        )),
    }
}

impl Webhook {
    /// A webhook at `uri`, its attempts timed by `clock`, undelivered payloads to `dead_letter`.
    pub(crate) fn new(
        uri: Uri,
        clock: Arc<dyn Clock>,
        (retries, retry_interval, timeout): (u32, Duration, Duration),
        dead_letter: PathBuf,
    ) -> Webhook {
        Webhook {
            uri,
            tls: Tls::new(None),
            clock,
            retries,
            retry_interval,
            timeout,
            dead_letter,
        }
    }
}

impl Sender {
    fn payload(&self, event: &Event, outcome: &Outcome) -> Value {
        let (kind, stage, reason) = match outcome {
            Outcome::Passed { .. } => ("passed", None, None),
            Outcome::Dropped { stage, reason } => ("dropped", Some(stage.clone()), Some(reason.clone())),
            Outcome::Failed { stage, error } => ("failed", Some(stage.clone()), Some(error.message.clone())),
        };
        let context = match outcome {
            Outcome::Passed { context } => Value::Object(context.clone()),
            _ => Value::Object(event.context().clone()),
        };
        let message = self
            .config
            .message
            .as_ref()
            .and_then(|t| t.render(event).ok())
            .unwrap_or_else(|| format!("cutover: {kind}"));
        match self.config.format {
            Format::Slack => {
                let detail = reason.as_deref().map(|r| format!(" — {r}")).unwrap_or_default();
                json!({"text": format!("{message} ({kind}{detail})")})
            }
            Format::Json => json!({
                "message": message,
                "outcome": kind,
                "stage": stage,
                "reason": reason,
                "event": event.json().ok(),
                "context": context,
                "at": cutover_asl::timestamp::format_system(self.clock.now()),
            }),
        }
    }
}

impl Webhook {
    /// Delivers `payload`, trying again as configured; keeps it in the dead-letter file when it
    /// cannot be delivered.
    pub(crate) async fn deliver(&self, payload: Value) {
        let body = serde_json::to_vec(&payload).unwrap_or_default();
        let mut last = String::new();
        for attempt in 0..=self.retries {
            if attempt > 0 {
                self.clock.sleep(self.retry_interval).await;
            }
            match client::send(
                &self.tls,
                Method::POST,
                &self.uri,
                Some(body.clone()),
                self.timeout,
            )
            .await
            {
                Ok((status, _)) if (200..300).contains(&status) => return,
                // A client error will not get better by trying again.
                Ok((status, answer)) if status != 429 && status < 500 => {
                    last = format!("HTTP {status}: {}", String::from_utf8_lossy(&answer).trim());
                    break;
                }
                Ok((status, _)) => last = format!("HTTP {status}"),
                Err(e) => last = e,
            }
        }
        tracing::warn!(url = %self.uri, error = %last, "notification not delivered; kept in the dead-letter file");
        let letter = json!({
            "at": cutover_asl::timestamp::format_system(self.clock.now()),
            "url": self.uri.to_string(),
            "error": last,
            "payload": payload,
        });
        if let Err(e) = append(&self.dead_letter, &letter) {
            tracing::error!(path = %self.dead_letter.display(), error = %e, "cannot keep an undelivered notification");
        }
    }
}

fn append(path: &std::path::Path, letter: &Value) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    file.lock()?;
    let mut line = serde_json::to_vec(letter).map_err(std::io::Error::other)?;
    line.push(b'\n');
    file.write_all(&line)?;
    file.sync_data()
}

impl Stage for WebhookNotify {
    /// A webhook not sent for drops hands every event on as it came and leaves a drop alone.
    fn transparent_to_drops(&self) -> bool {
        !self.sender.config.on.contains(&On::Dropped)
    }

    fn process<'a>(&'a self, event: Event, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let observed = event.clone();
            let outcome = next.run(event).await;
            let kind = match &outcome {
                Outcome::Passed { .. } => On::Passed,
                Outcome::Dropped { .. } => On::Dropped,
                Outcome::Failed { .. } => On::Failed,
            };
            if self.sender.config.on.contains(&kind) {
                let payload = self.sender.payload(&observed, &outcome);
                let sender = self.sender.clone();
                self.background
                    .spawn(async move { sender.webhook.deliver(payload).await });
            }
            outcome
        })
    }
}

#[cfg(test)]
mod tests {
    use cutover_core::{ManualClock, Pipeline, StageError};

    use super::*;

    /// Answers each connection with the next status; sends each request body back.
    fn receiver(statuses: Vec<u16>) -> (String, std::sync::mpsc::Receiver<String>) {
        let (url, requests) = crate::test_support::http_receiver(statuses);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for request in requests {
                let _ = tx.send(crate::test_support::body(&request).to_owned());
            }
        });
        (url, rx)
    }

    #[derive(Debug)]
    struct Fail;

    impl Stage for Fail {
        fn process<'a>(&'a self, _event: Event, _next: Next<'a>) -> BoxFuture<'a, Outcome> {
            Box::pin(async { Outcome::failed(StageError::permanent("shift refused")) })
        }
    }

    async fn pipeline(text: &str, dir: &std::path::Path, failing: bool) -> (Pipeline, BuildContext) {
        let config: Box<dyn StageConfig> = toml::from_str(text).unwrap();
        let cx =
            BuildContext::new(dir).with_clock(Arc::new(ManualClock::new(std::time::SystemTime::UNIX_EPOCH)));
        let mut stages = vec![("notify".to_owned(), config.build(&cx).await.unwrap())];
        if failing {
            stages.push(("shift".to_owned(), Arc::new(Fail) as Arc<dyn Stage>));
        }
        (Pipeline::from_stages("p", stages), cx)
    }

    #[tokio::test]
    async fn slack_and_json_payloads_report_the_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let (url, bodies) = receiver(vec![200, 200]);
        let text = format!(
            "type = \"webhook-notify\"\nurl = \"{url}\"\nformat = \"slack\"\nmessage = \"canary {{execution}} at {{weight}}%\""
        );
        let (p, cx) = pipeline(&text, dir.path(), false).await;
        let out = p
            .run(Event::from_value(json!({"execution": "cats-3", "weight": 50})))
            .await;
        assert!(out.is_passed());
        cx.background().drain().await;
        let slack: Value = serde_json::from_str(&bodies.recv().unwrap()).unwrap();
        assert_eq!(slack, json!({"text": "canary cats-3 at 50% (passed)"}));

        let text = format!("type = \"webhook-notify\"\nurl = \"{url}\"");
        let (p, cx) = pipeline(&text, dir.path(), true).await;
        let out = p.run(Event::from_value(json!({"weight": 0}))).await;
        assert!(!out.is_passed(), "the notification does not change the outcome");
        cx.background().drain().await;
        let body: Value = serde_json::from_str(&bodies.recv().unwrap()).unwrap();
        assert_eq!(body["outcome"], "failed");
        assert_eq!(body["reason"], "shift refused");
        assert_eq!(body["event"]["weight"], 0);
    }

    #[tokio::test]
    async fn an_undeliverable_notification_is_retried_then_dead_lettered_not_failed() {
        let dir = tempfile::tempdir().unwrap();
        let (url, bodies) = receiver(vec![503, 503]);
        let text = format!("type = \"webhook-notify\"\nurl = \"{url}\"\nretries = 1");
        let (p, cx) = pipeline(&text, dir.path(), false).await;
        assert!(p.run(Event::from_value(json!({"weight": 10}))).await.is_passed());
        cx.background().drain().await;
        // The first attempt and one retry (the receiver answers two connections only).
        for _ in 0..2 {
            bodies.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        }
        let letters = std::fs::read_to_string(dir.path().join("notifications-dead-letter.jsonl")).unwrap();
        let letter: Value = serde_json::from_str(letters.lines().next().unwrap()).unwrap();
        assert_eq!(letter["error"], "HTTP 503");
        assert_eq!(letter["payload"]["event"]["weight"], 10);
    }

    #[test]
    fn a_bad_url_is_a_field_error() {
        let config: WebhookNotifyConfig = toml::from_str("url = \"hooks.slack.com/x\"").unwrap();
        assert_eq!(config.errors()[0].field, "url");
    }
}
