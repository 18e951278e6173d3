//! The error returned when EventBridge would reject a pattern.
//!
//! EventBridge answers `PutRule` / `TestEventPattern` with an
//! `InvalidEventPatternException` whose message starts with
//! `Event pattern is not valid. Reason: `; [`PatternError`] carries the same
//! code and text so callers can show users exactly what AWS would say.

use std::fmt;

/// The AWS error code for every rejected pattern.
pub const INVALID_EVENT_PATTERN: &str = "InvalidEventPatternException";

const PREFIX: &str = "Event pattern is not valid. Reason: ";

/// A pattern EventBridge would reject, with AWS's code and message.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    /// Always [`INVALID_EVENT_PATTERN`] (`"InvalidEventPatternException"`).
    pub code: &'static str,
    /// The full AWS message, e.g.
    /// `"Event pattern is not valid. Reason: Empty arrays are not allowed"`.
    pub message: String,
}

impl PatternError {
    /// Builds an error from the reason part of the AWS message.
    pub(crate) fn reason(reason: impl fmt::Display) -> Self {
        PatternError {
            code: INVALID_EVENT_PATTERN,
            message: format!("{PREFIX}{reason}"),
        }
    }

    /// The reason alone, without the `Event pattern is not valid. Reason: ` lead.
    pub fn reason_text(&self) -> &str {
        self.message.strip_prefix(PREFIX).unwrap_or(&self.message)
    }
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for PatternError {}

/// Shorthand used by the compiler: `Err(PatternError::reason(..))`.
pub(crate) fn fail<T>(reason: impl fmt::Display) -> Result<T, PatternError> {
    Err(PatternError::reason(reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_carries_aws_prefix() {
        let e = PatternError::reason("Empty arrays are not allowed");
        assert_eq!(e.code, "InvalidEventPatternException");
        assert_eq!(
            e.message,
            "Event pattern is not valid. Reason: Empty arrays are not allowed"
        );
        assert_eq!(e.reason_text(), "Empty arrays are not allowed");
        assert!(e.to_string().starts_with("InvalidEventPatternException: "));
    }
}
