//! The event that flows through a pipeline: raw bytes first, parsed lazily.
//!
//! Most events are rejected by the first stage, so an [`Event`] keeps the bytes it arrived
//! with and parses them into a [`serde_json::Value`] only when a stage asks for a field.
//! Stages add what they learn to the event's *context* (a JSON object); at the end of the
//! chain that context is the pipeline's result — for a Step Functions Task handler it is the
//! task's output.
//!
//! ```
//! use cutover_core::{Event, FieldPath};
//!
//! let event = Event::from_bytes(br#"{"detail":{"group":"service:cats-green"}}"#.to_vec());
//! let path: FieldPath = "detail.group".parse().unwrap();
//! assert_eq!(event.lookup(&path).unwrap().and_then(|v| v.as_str()), Some("service:cats-green"));
//! ```

pub mod ecs;

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use serde_json::{Map, Value};

use crate::path::FieldPath;

/// The root name under which templates and paths read the accumulated context.
pub const CONTEXT_ROOT: &str = "context";

/// One event on its way through a pipeline.
#[derive(Debug, Clone)]
pub struct Event {
    raw: Raw,
    parsed: OnceLock<Result<Arc<Value>, EventError>>,
    context: Map<String, Value>,
    origin: Option<Arc<str>>,
}

/// An event's bytes: its own, or a range of a block that holds several events as they were
/// read (shared, not copied: the block is freed with the last event that uses it).
#[derive(Clone)]
enum Raw {
    Own(Arc<[u8]>),
    Shared(Arc<Vec<u8>>, Range<usize>),
}

impl std::fmt::Debug for Raw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The event's bytes, not the whole block it shares.
        write!(f, "{:?}", String::from_utf8_lossy(self.bytes()))
    }
}

impl Raw {
    fn bytes(&self) -> &[u8] {
        match self {
            Raw::Own(bytes) => bytes,
            Raw::Shared(block, range) => &block[range.clone()],
        }
    }
}

/// Why an event's bytes could not be read as JSON.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("event is not valid JSON: {message}")]
pub struct EventError {
    message: String,
}

impl EventError {
    fn from_json(err: &serde_json::Error) -> Self {
        Self {
            message: err.to_string(),
        }
    }
}

impl Event {
    /// An event from the bytes it arrived with; nothing is parsed yet.
    pub fn from_bytes(raw: impl Into<Arc<[u8]>>) -> Self {
        Self {
            raw: Raw::Own(raw.into()),
            parsed: OnceLock::new(),
            context: Map::new(),
            origin: None,
        }
    }

    /// An event from an already parsed JSON value (for callers that received a value, such as
    /// the Lambda runtime); the bytes are its compact serialisation.
    pub fn from_value(value: Value) -> Self {
        let raw = serde_json::to_vec(&value).unwrap_or_default();
        let parsed = OnceLock::new();
        let _ = parsed.set(Ok(Arc::new(value)));
        Self {
            raw: Raw::Own(raw.into()),
            parsed,
            context: Map::new(),
            origin: None,
        }
    }

    /// An event that is bytes `range` of `block`, a buffer holding several events as they were
    /// read (lines of a file): the block is shared, not copied, and freed when its last event
    /// is. A range past the block's end is cut at the end.
    ///
    /// ```
    /// use std::sync::Arc;
    /// let block = Arc::new(b"{\"id\":\"1\"}\n{\"id\":\"2\"}\n".to_vec());
    /// let second = cutover_core::Event::from_shared(block, 11..21);
    /// assert_eq!(second.id(), Some("2"));
    /// ```
    pub fn from_shared(block: Arc<Vec<u8>>, range: Range<usize>) -> Self {
        let end = range.end.min(block.len());
        let start = range.start.min(end);
        Self {
            raw: Raw::Shared(block, start..end),
            parsed: OnceLock::new(),
            context: Map::new(),
            origin: None,
        }
    }

    /// Records where the event came from (`file.jsonl:12`, `sqs:…`), for messages.
    pub fn with_origin(mut self, origin: impl Into<Arc<str>>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    /// Where the event came from, if the source said.
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }

    /// The bytes as received.
    pub fn raw(&self) -> &[u8] {
        self.raw.bytes()
    }

    /// The event parsed as JSON; parsed once, on first use.
    pub fn json(&self) -> Result<&Value, EventError> {
        self.parsed
            .get_or_init(|| {
                serde_json::from_slice::<Value>(self.raw.bytes())
                    .map(Arc::new)
                    .map_err(|e| EventError::from_json(&e))
            })
            .as_ref()
            .map(|v| v.as_ref())
            .map_err(Clone::clone)
    }

    /// Whether the JSON has already been parsed (used by tests and benchmarks to prove that a
    /// rejecting stage did not parse).
    pub fn is_parsed(&self) -> bool {
        self.parsed.get().is_some()
    }

    /// Reads a field: `context.…` reads the accumulated context, `service.…` the service the
    /// event belongs to (`[services]`; once a stage decided it), anything else the event.
    pub fn lookup(&self, path: &FieldPath) -> Result<Option<&Value>, EventError> {
        if path.root() == Some(CONTEXT_ROOT) {
            return Ok(path.lookup_in_map(&self.context, 1));
        }
        if path.root() == Some(crate::config::SERVICE_CONTEXT)
            && self.context.contains_key(crate::config::SERVICE_CONTEXT)
        {
            return Ok(path.lookup_in_map(&self.context, 0));
        }
        Ok(path.lookup(self.json()?))
    }

    /// The EventBridge `id`, when the event has one.
    pub fn id(&self) -> Option<&str> {
        self.json().ok()?.get("id")?.as_str()
    }

    /// The EventBridge `detail-type`, when the event has one.
    pub fn detail_type(&self) -> Option<&str> {
        self.json().ok()?.get("detail-type")?.as_str()
    }

    /// What stages have added so far.
    pub fn context(&self) -> &Map<String, Value> {
        &self.context
    }

    /// Adds to or changes the context.
    pub fn context_mut(&mut self) -> &mut Map<String, Value> {
        &mut self.context
    }

    /// Records a stage's result in the context: under `key` when given; otherwise an object's
    /// fields merge at the top level and any other value goes under `result`.
    pub fn add_result(&mut self, key: Option<&str>, result: Value) {
        match (key, result) {
            (Some(key), result) => {
                self.context.insert(key.to_owned(), result);
            }
            (None, Value::Object(fields)) => self.context.extend(fields),
            (None, other) => {
                self.context.insert("result".into(), other);
            }
        }
    }

    /// Takes the context out of the event (the chain's end does this to build the outcome).
    pub fn into_context(self) -> Map<String, Value> {
        self.context
    }

    /// Typed view of an ECS event; parses the JSON if not yet done.
    pub fn ecs(&self) -> Result<ecs::EcsEvent, EventError> {
        let value = self.json()?;
        ecs::EcsEvent::from_value(value).map_err(|e| EventError::from_json(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lazily_and_once() {
        let event = Event::from_bytes(br#"{"id":"1","detail-type":"X"}"#.to_vec());
        assert!(!event.is_parsed());
        assert_eq!(event.id(), Some("1"));
        assert!(event.is_parsed());
        assert_eq!(event.detail_type(), Some("X"));
    }

    #[test]
    fn malformed_json_is_an_error_not_a_panic() {
        let event = Event::from_bytes(b"{\"id\": ".to_vec());
        let err = event.json().unwrap_err();
        assert!(err.to_string().contains("not valid JSON"), "{err}");
        assert_eq!(event.id(), None);
    }

    #[test]
    fn context_paths_read_the_context() {
        let mut event = Event::from_bytes(b"{}".to_vec());
        event
            .context_mut()
            .insert("execution".into(), serde_json::json!({"arn": "arn:x"}));
        let path: FieldPath = "context.execution.arn".parse().unwrap();
        assert_eq!(event.lookup(&path).unwrap(), Some(&Value::from("arn:x")));
        assert!(!event.is_parsed(), "context lookups must not parse the event");
    }
}
