//! How an event ends: passed, dropped by a named stage, or failed.
//!
//! Outcome is data: replay, the Lambda host, the daemon and the metrics all read the same type.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The end of one event's trip through a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum Outcome {
    /// The event reached the end of the chain; `context` is what the stages added.
    Passed {
        /// Accumulated context (e.g. the execution ARN).
        context: Map<String, Value>,
    },
    /// A stage decided the event needs no action.
    Dropped {
        /// The stage that dropped it.
        stage: String,
        /// Why, for humans.
        reason: String,
    },
    /// A stage could not process the event.
    Failed {
        /// The stage that failed.
        stage: String,
        /// What went wrong and whether trying again may help.
        error: StageError,
    },
}

/// An error a stage reports for one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct StageError {
    /// What went wrong, naming the field or service involved.
    pub message: String,
    /// Whether redelivering the same event may succeed (throttling, timeouts, a claim in
    /// progress) — the Lambda host turns this into a retryable error type, the daemon keeps the
    /// message for redelivery instead of dead-lettering it.
    pub retryable: bool,
    /// A short machine-readable kind (e.g. `Throttling`, `InvalidInput`), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

impl StageError {
    /// An error that will fail again if retried.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
            kind: None,
        }
    }

    /// An error that may go away if retried.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
            kind: None,
        }
    }

    /// Sets the kind.
    pub fn with_kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// The error name hosts report (a Lambda error type, a Task failure's `Error` that a state
    /// machine's `Retry`/`Catch` match): the kind, else `Cutover.Retryable` or `Cutover.Failed`.
    pub fn error_name(&self) -> &str {
        match &self.kind {
            Some(kind) => kind,
            None if self.retryable => RETRYABLE,
            None => "Cutover.Failed",
        }
    }
}

/// The error name of a retryable failure that named no kind of its own (AWS throttling, 5xx,
/// timeouts after the SDK's retries): what a state machine's `Retry` lists to retry them.
pub const RETRYABLE: &str = "Cutover.Retryable";

impl Outcome {
    /// A drop by the current stage (the chain fills in the stage's name).
    pub fn dropped(reason: impl Into<String>) -> Self {
        Outcome::Dropped {
            stage: String::new(),
            reason: reason.into(),
        }
    }

    /// A failure of the current stage (the chain fills in the stage's name).
    pub fn failed(error: StageError) -> Self {
        Outcome::Failed {
            stage: String::new(),
            error,
        }
    }

    /// `passed`, `dropped` or `failed`.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Passed { .. } => "passed",
            Outcome::Dropped { .. } => "dropped",
            Outcome::Failed { .. } => "failed",
        }
    }

    /// The stage that ended the event early, if any.
    pub fn stage(&self) -> Option<&str> {
        match self {
            Outcome::Passed { .. } => None,
            Outcome::Dropped { stage, .. } | Outcome::Failed { stage, .. } => Some(stage),
        }
    }

    /// Whether the event passed.
    pub fn is_passed(&self) -> bool {
        matches!(self, Outcome::Passed { .. })
    }

    /// Whether the failure (if this is one) may succeed on redelivery.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Outcome::Failed { error, .. } if error.retryable)
    }

    /// Names the stage on an outcome a stage produced without knowing its own name.
    pub(crate) fn attribute_to(mut self, name: &str) -> Self {
        if let Outcome::Dropped { stage, .. } | Outcome::Failed { stage, .. } = &mut self
            && stage.is_empty()
        {
            name.clone_into(stage);
        }
        self
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Passed { context } if context.is_empty() => f.write_str("passed"),
            Outcome::Passed { context } => write!(f, "passed {}", Value::Object(context.clone())),
            Outcome::Dropped { stage, reason } => write!(f, "dropped by {stage}: {reason}"),
            Outcome::Failed { stage, error } => write!(
                f,
                "failed in {stage} ({}): {}",
                if error.retryable { "retryable" } else { "permanent" },
                error.message
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_as_tagged_data() {
        let o = Outcome::Dropped {
            stage: "filter".into(),
            reason: "lastStatus is PENDING".into(),
        };
        let v = serde_json::to_value(&o).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"outcome":"dropped","stage":"filter","reason":"lastStatus is PENDING"})
        );
        assert_eq!(serde_json::from_value::<Outcome>(v).unwrap(), o);
    }

    #[test]
    fn attribution_keeps_an_inner_stage_name() {
        let inner = Outcome::dropped("x").attribute_to("dedup").attribute_to("filter");
        assert_eq!(inner.stage(), Some("dedup"));
    }
}
