//! The `sqs` source: long-polls a queue and deletes a message only once its event is finished
//! (passed, dropped, or failed permanently with its dead letter written). A retryable failure
//! leaves the message alone: it becomes visible again after the queue's visibility timeout, and
//! the queue's redrive policy (`maxReceiveCount`) bounds how often.
//!
//! Bodies may be EventBridge events as an SQS rule target delivers them, or SNS notifications
//! wrapping one (a topic subscription without raw message delivery).

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::task::JoinSet;

use super::{Host, Input, backoff, read_event, stopped};

/// The most messages one ReceiveMessage call may return.
const MAX_BATCH: usize = 10;

/// A long poll answers after up to `wait_time` seconds by design: its attempt may take that
/// much longer than `[settings.aws] attempt_timeout` allows other calls.
fn long_poll(wait_time: i32) -> aws_sdk_sqs::config::Builder {
    let wait = Duration::from_secs(u64::try_from(wait_time).unwrap_or(0));
    aws_sdk_sqs::config::Builder::default().timeout_config(
        aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_millis(3100))
            .operation_attempt_timeout(wait + Duration::from_secs(10))
            .operation_timeout(wait * 3 + Duration::from_secs(30))
            .build(),
    )
}

/// Polls `url` until shutdown is requested, then waits for the messages already received.
pub(crate) async fn serve(
    host: Arc<Host>,
    client: Client,
    url: String,
    wait_time: i32,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    eprintln!("cutover serve: polling {url}");
    tracing::info!(queue = %url, pipeline = %host.pipeline().name(), "polling SQS");
    let mut tasks = JoinSet::new();
    let mut failures = 0u32;
    loop {
        // Ask only for as many messages as can start now.
        let first = tokio::select! {
            () = stopped(&mut shutdown) => break,
            permit = host.permit() => permit,
        };
        let mut permits = vec![first];
        while permits.len() < MAX_BATCH {
            match host.try_permit() {
                Some(p) => permits.push(p),
                None => break,
            }
        }
        let receive = client
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(i32::try_from(permits.len()).unwrap_or(1))
            .wait_time_seconds(wait_time)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .customize()
            .config_override(long_poll(wait_time))
            .send();
        // Abandoning a poll on shutdown loses nothing: a message SQS handed out meanwhile
        // returns after its visibility timeout.
        let received = tokio::select! {
            () = stopped(&mut shutdown) => break,
            received = receive => received,
        };
        match received {
            Ok(output) => {
                failures = 0;
                for message in output.messages.unwrap_or_default() {
                    let permit = match permits.pop() {
                        Some(p) => p,
                        None => host.permit().await,
                    };
                    tasks.spawn(handle(host.clone(), client.clone(), url.clone(), message, permit));
                }
            }
            Err(error) => {
                drop(permits);
                let wait = backoff(failures, Duration::from_millis(200), Duration::from_secs(30));
                failures = failures.saturating_add(1);
                host.pipeline().metrics().add(
                    "cutover_sqs_receive_errors_total",
                    &[("pipeline", host.pipeline().name())],
                    1,
                );
                tracing::warn!(
                    queue = %url,
                    error = %DisplayErrorContext(&error),
                    retry_in_ms = wait.as_millis() as u64,
                    "ReceiveMessage failed"
                );
                tokio::select! {
                    () = stopped(&mut shutdown) => break,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
        while tasks.try_join_next().is_some() {}
    }
    while let Some(done) = tasks.join_next().await {
        if let Err(error) = done {
            tracing::error!(%error, "a message's task failed; the message returns after its visibility timeout");
        }
    }
    Ok(())
}

async fn handle(
    host: Arc<Host>,
    client: Client,
    url: String,
    message: Message,
    permit: OwnedSemaphorePermit,
) {
    let message_id = message.message_id.unwrap_or_default();
    let receives = message
        .attributes
        .as_ref()
        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .map_or("?", String::as_str)
        .to_owned();
    let body = message.body.unwrap_or_default();
    let body = unwrap_sns(&body).unwrap_or(body);
    let mut input = Input {
        raw: Arc::from(body.as_bytes()),
        id: None,
        origin: format!("sqs:{message_id}"),
    };
    let handled = match read_event(body.as_bytes()) {
        Ok(id) => {
            input.id = id;
            host.handle(&input).await
        }
        Err(problem) => host.reject(&input, problem).await,
    };
    if !handled.settled {
        tracing::info!(message_id = %message_id, receives = %receives, "message kept; it returns after the visibility timeout");
        return;
    }
    let Some(receipt) = message.receipt_handle else {
        tracing::warn!(message_id = %message_id, "message without a receipt handle; cannot delete it");
        return;
    };
    if let Err(error) = client
        .delete_message()
        .queue_url(&url)
        .receipt_handle(receipt)
        .send()
        .await
    {
        // The event is finished; a redelivery is harmless (dedup) but worth knowing about.
        host.pipeline().metrics().add(
            "cutover_sqs_delete_errors_total",
            &[("pipeline", host.pipeline().name())],
            1,
        );
        tracing::warn!(message_id = %message_id, error = %DisplayErrorContext(&error), "DeleteMessage failed; the message will be delivered again");
    }
    drop(permit);
}

/// An SNS notification as delivered to SQS without raw message delivery.
#[derive(Deserialize)]
struct SnsNotification {
    #[serde(rename = "Type")]
    kind: String,
    #[serde(rename = "Message")]
    message: String,
    #[serde(rename = "TopicArn")]
    _topic_arn: String,
}

/// The wrapped message, if `body` is an SNS notification.
fn unwrap_sns(body: &str) -> Option<String> {
    if !body.contains("\"TopicArn\"") {
        return None;
    }
    serde_json::from_str::<SnsNotification>(body)
        .ok()
        .filter(|n| n.kind == "Notification")
        .map(|n| n.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwraps_sns_notifications_only() {
        let event = r#"{"id":"e1","detail-type":"ECS Task State Change"}"#;
        let wrapped = serde_json::json!({
            "Type": "Notification",
            "MessageId": "m1",
            "TopicArn": "arn:aws:sns:us-east-1:111122223333:ecs",
            "Message": event,
        })
        .to_string();
        assert_eq!(unwrap_sns(&wrapped).as_deref(), Some(event));
        assert_eq!(unwrap_sns(event), None);
        let confirmation = wrapped.replace("\"Notification\"", "\"SubscriptionConfirmation\"");
        assert_eq!(unwrap_sns(&confirmation), None);
    }
}
