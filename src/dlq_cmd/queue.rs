//! Redriving an SQS dead-letter queue: receive until the queue has nothing more to give, run
//! each message's event, delete the message only once its event settled.
//!
//! Messages are received with a visibility timeout of [`VISIBILITY`], so none comes back while
//! the run lasts; those that stay (their event failed again, or a dry run) are made visible
//! again at the end, ready for the next run. A redrive killed midway loses nothing either:
//! its messages return after the visibility timeout. A message seen twice (a run longer than
//! the timeout) is not run twice.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};

use super::Redrive;
use super::letter;

/// Seconds a received message stays invisible to others while the run lasts.
const VISIBILITY: i32 = 900;
/// SQS's largest batch.
const BATCH: i32 = 10;
/// Seconds one receive waits for messages: an empty answer after it means the queue is drained.
const WAIT: i32 = 1;

/// Redrives every message of the queue at `url`.
pub(crate) async fn redrive(client: &Client, url: &str, redrive: &mut Redrive) -> anyhow::Result<()> {
    let mut seen = HashSet::new();
    let mut release = Vec::new();
    let received = drain(client, url, redrive, &mut seen, &mut release).await;
    // Whatever happened, the messages that stay become visible again now.
    for receipt in &release {
        if let Err(error) = client
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(receipt)
            .visibility_timeout(0)
            .send()
            .await
        {
            tracing::warn!(queue = %url, error = %DisplayErrorContext(&error), "a kept message returns only after its visibility timeout");
        }
    }
    received
}

async fn drain(
    client: &Client,
    url: &str,
    redrive: &mut Redrive,
    seen: &mut HashSet<String>,
    release: &mut Vec<String>,
) -> anyhow::Result<()> {
    loop {
        let output = client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(BATCH)
            .wait_time_seconds(WAIT)
            .visibility_timeout(VISIBILITY)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .customize()
            .config_override(long_poll())
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{}", DisplayErrorContext(&e)))
            .with_context(|| format!("receiving from {url}"))?;
        let messages = output.messages.unwrap_or_default();
        if messages.is_empty() {
            return Ok(());
        }
        let mut fresh = false;
        for message in messages {
            let Some(receipt) = message.receipt_handle.clone() else {
                continue;
            };
            let id = message.message_id.clone().unwrap_or_default();
            if !seen.insert(id.clone()) {
                release.push(receipt);
                continue;
            }
            fresh = true;
            let body = message.body.as_deref().unwrap_or_default();
            let letter = letter::read(body.as_bytes());
            let cause = eventbridge_cause(&message);
            let settled = redrive
                .letter(&format!("sqs:{id}"), &letter, cause.as_deref())
                .await;
            if !settled {
                release.push(receipt);
                continue;
            }
            if let Err(error) = client
                .delete_message()
                .queue_url(url)
                .receipt_handle(&receipt)
                .send()
                .await
            {
                // The event settled; another redrive of it is a duplicate, dropped by dedup.
                tracing::warn!(message_id = %id, error = %DisplayErrorContext(&error), "DeleteMessage failed; the message will be redriven again");
            }
        }
        if !fresh {
            return Ok(());
        }
    }
}

/// A receive waits up to [`WAIT`] by design: its attempt may take that much longer than the
/// pipeline file's `[settings.aws] attempt_timeout` allows other calls.
fn long_poll() -> aws_sdk_sqs::config::Builder {
    let wait = Duration::from_secs(WAIT.unsigned_abs().into());
    aws_sdk_sqs::config::Builder::default().timeout_config(
        aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
            .operation_attempt_timeout(wait + Duration::from_secs(10))
            .operation_timeout(wait * 3 + Duration::from_secs(30))
            .build(),
    )
}

/// Why EventBridge could not deliver the event, from the attributes it sets on its dead
/// letters (`ERROR_CODE`, `ERROR_MESSAGE`).
fn eventbridge_cause(message: &Message) -> Option<String> {
    let attributes = message.message_attributes.as_ref()?;
    let value = |name: &str| {
        attributes
            .get(name)
            .and_then(|a| a.string_value())
            .map(str::to_owned)
    };
    match (value("ERROR_CODE"), value("ERROR_MESSAGE")) {
        (Some(code), Some(text)) => Some(format!("{code}: {text}")),
        (code, text) => code.or(text),
    }
}
