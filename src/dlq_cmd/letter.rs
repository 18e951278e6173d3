//! What a dead letter holds, whoever wrote it. Three shapes reach a dead-letter queue or file:
//!
//! - **The daemon's record** (`cutover serve`, `src/serve/dead_letter.rs`): `pipeline`,
//!   `stage`, `error`, `kind`, … and `event`, the event as JSON (or its text when it was not
//!   JSON).
//! - **Lambda's invocation record** (a function's asynchronous on-failure destination):
//!   `requestContext` (`functionArn`, `condition` — `RetriesExhausted` or `EventAgeExceeded`,
//!   `approximateInvokeCount`), `requestPayload` (the event), `responseContext`,
//!   `responsePayload` (the function's error: `errorType`, `errorMessage`).
//! - **EventBridge's dead letter** (a rule target's `DeadLetterConfig`): the event itself; why
//!   it failed is in the message's attributes (`ERROR_CODE`, `ERROR_MESSAGE`), not the body.
//!
//! Anything else is taken for an event too; the host's check at the edge then refuses what is
//! not one, and the letter stays where it is.

use serde_json::Value;

/// Who wrote a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// `cutover serve`'s dead-letter record.
    Daemon,
    /// A Lambda on-failure destination's invocation record.
    Lambda,
    /// The event itself (an EventBridge rule target's dead letter).
    Event,
}

impl Shape {
    /// How the shape is named in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Shape::Daemon => "daemon",
            Shape::Lambda => "lambda",
            Shape::Event => "event",
        }
    }
}

/// One dead letter, read.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Letter {
    /// Who wrote it.
    pub(crate) shape: Shape,
    /// The event to run again, as bytes (a daemon record's `event` re-serialised; a text event
    /// as its text, which the host's edge check will refuse).
    pub(crate) event: Vec<u8>,
    /// Why it was dead-lettered, when the letter says.
    pub(crate) cause: Option<String>,
    /// The pipeline a daemon record names.
    pub(crate) pipeline: Option<String>,
}

/// Reads a dead letter's body.
pub(crate) fn read(body: &[u8]) -> Letter {
    let as_event = || Letter {
        shape: Shape::Event,
        event: body.to_vec(),
        cause: None,
        pipeline: None,
    };
    let Ok(Value::Object(record)) = serde_json::from_slice::<Value>(body) else {
        return as_event();
    };
    if let (Some(Value::Object(request)), Some(payload)) =
        (record.get("requestContext"), record.get("requestPayload"))
    {
        let response = record.get("responsePayload");
        let error = [
            response.and_then(|r| r.get("errorType")).and_then(Value::as_str),
            response
                .and_then(|r| r.get("errorMessage"))
                .and_then(Value::as_str),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(": ");
        let condition = request
            .get("condition")
            .and_then(Value::as_str)
            .unwrap_or("failed");
        let attempts = request
            .get("approximateInvokeCount")
            .and_then(Value::as_u64)
            .map(|n| format!(" after {n} attempt(s)"))
            .unwrap_or_default();
        return Letter {
            shape: Shape::Lambda,
            event: serde_json::to_vec(payload).unwrap_or_default(),
            cause: Some(if error.is_empty() {
                format!("{condition}{attempts}")
            } else {
                format!("{condition}{attempts}: {error}")
            }),
            pipeline: None,
        };
    }
    if let (Some(event), Some(Value::String(pipeline)), Some(Value::String(stage))) =
        (record.get("event"), record.get("pipeline"), record.get("stage"))
    {
        let error = record.get("error").and_then(Value::as_str).unwrap_or("failed");
        return Letter {
            shape: Shape::Daemon,
            event: match event {
                Value::String(text) => text.clone().into_bytes(),
                json => serde_json::to_vec(json).unwrap_or_default(),
            },
            cause: Some(format!("{stage}: {error}")),
            pipeline: Some(pipeline.clone()),
        };
    }
    as_event()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const EVENT: &str = r#"{"id":"e1","source":"aws.ecs","detail-type":"ECS Task State Change","detail":{}}"#;

    #[test]
    fn an_invocation_record_yields_its_request_payload_and_why() {
        // The shape AWS documents for an on-failure destination (the event is `requestPayload`).
        let record = json!({
            "version": "1.0",
            "timestamp": "2026-11-14T18:16:05.568Z",
            "requestContext": {
                "requestId": "e4b46cbf-b738-xmpl-8880-a18cdf61200e",
                "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:cutover-EcsEventsFunction:$LATEST",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": 3
            },
            "requestPayload": serde_json::from_str::<Value>(EVENT).unwrap(),
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "responsePayload": {"errorType": "Cutover.Retryable", "errorMessage": "dedup: throttled"}
        });
        let letter = read(record.to_string().as_bytes());
        assert_eq!(letter.shape, Shape::Lambda);
        assert_eq!(
            serde_json::from_slice::<Value>(&letter.event).unwrap(),
            serde_json::from_str::<Value>(EVENT).unwrap()
        );
        assert_eq!(
            letter.cause.as_deref(),
            Some("RetriesExhausted after 3 attempt(s): Cutover.Retryable: dedup: throttled")
        );
    }

    #[test]
    fn a_daemon_record_yields_its_event_pipeline_and_error_and_text_stays_text() {
        let record = json!({
            "time": "2026-11-20T10:00:12.000Z", "pipeline": "ecs-events", "origin": "<stdin>:3",
            "id": "e1", "stage": "dedup", "error": "table not found", "kind": "ResourceNotFoundException",
            "retryable": false, "event": serde_json::from_str::<Value>(EVENT).unwrap()
        });
        let letter = read(record.to_string().as_bytes());
        assert_eq!(letter.shape, Shape::Daemon);
        assert_eq!(letter.pipeline.as_deref(), Some("ecs-events"));
        assert_eq!(letter.cause.as_deref(), Some("dedup: table not found"));
        assert_eq!(letter.event, EVENT.as_bytes(), "compact JSON, as received");

        let mut torn = record;
        torn["event"] = json!("{\"id\": ");
        torn["stage"] = json!("input");
        assert_eq!(read(torn.to_string().as_bytes()).event, b"{\"id\": ");
    }

    #[test]
    fn anything_else_is_the_event_itself() {
        for body in [EVENT, "not json", "[1, 2]"] {
            let letter = read(body.as_bytes());
            assert_eq!(letter.shape, Shape::Event);
            assert_eq!(letter.event, body.as_bytes());
            assert_eq!(letter.cause, None);
        }
    }
}
