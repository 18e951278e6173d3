//! Conformance cases: recorded EventBridge answers, checked against us.
//!
//! The file format is JSON Lines, one case per line: `name`, `event`,
//! either `pattern` (JSON) or `pattern_raw: {"raw": "..."}` (text, e.g. with
//! a duplicate key), `expect` (`match`, `no_match` or `invalid`) and, for
//! invalid ones, `aws_error: {code, message}`. The CLI command
//! `cutover pattern test FILE` and the crate's integration test use this.
//!
//! ```
//! use cutover_pattern::conformance::{check, parse_cases};
//! let text = r#"{"name": "min", "event": {"id": "1"}, "pattern": {"id": ["1"]}, "expect": "match"}"#;
//! let cases = parse_cases(text);
//! let case = cases[0].as_ref().unwrap();
//! assert!(check(case).is_ok());
//! ```

use crate::{Pattern, PatternError};
use serde_json::Value;
use std::fmt;

/// Where a case's pattern comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum PatternSource {
    /// A parsed pattern, sent to the compiler as plain JSON text.
    Json(Value),
    /// Raw pattern text (it may hold duplicate keys).
    Raw(String),
}

/// The outcome EventBridge recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The pattern matches the event.
    Match,
    /// The pattern does not match the event.
    NoMatch,
    /// The pattern is rejected.
    Invalid,
}

/// The error EventBridge returned for an invalid pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    /// e.g. `InvalidEventPatternException`.
    pub code: String,
    /// The full message.
    pub message: String,
}

/// One conformance case.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// Case name, e.g. `content_prefix_NEG`.
    pub name: String,
    /// The event to match.
    pub event: Value,
    /// The pattern to compile.
    pub pattern: PatternSource,
    /// What AWS answered.
    pub expect: Expect,
    /// AWS's error for `Expect::Invalid` cases, when recorded.
    pub aws_error: Option<AwsError>,
}

/// What the engine did with a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actual {
    /// Compiled and matched.
    Match,
    /// Compiled and did not match.
    NoMatch,
    /// Rejected the pattern.
    Invalid(PatternError),
    /// `matches_json` on the serialised event disagreed with `matches`
    /// (`by_value` is what `matches` said): a prefilter bug.
    Inconsistent {
        /// The answer of [`Pattern::matches`].
        by_value: bool,
    },
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Expect::Match => "match",
            Expect::NoMatch => "no_match",
            Expect::Invalid => "invalid",
        })
    }
}

impl fmt::Display for Actual {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actual::Match => f.write_str("match"),
            Actual::NoMatch => f.write_str("no_match"),
            Actual::Invalid(e) => write!(f, "invalid ({})", e.message),
            Actual::Inconsistent { by_value } => {
                write!(f, "inconsistent (matches: {by_value}, matches_json disagrees)")
            }
        }
    }
}

/// Parses every non-blank line; a line that is not a valid case gives an
/// `Err` naming the line.
pub fn parse_cases(text: &str) -> Vec<Result<Case, String>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| parse_case(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

fn parse_case(line: &str) -> Result<Case, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .ok_or("missing `name`")?
        .to_owned();
    let event = v.get("event").cloned().ok_or("missing `event`")?;
    let pattern = match (v.get("pattern"), v.get("pattern_raw")) {
        (Some(p), None) => PatternSource::Json(p.clone()),
        (None, Some(raw)) => PatternSource::Raw(
            raw.get("raw")
                .and_then(Value::as_str)
                .ok_or("`pattern_raw` needs a string `raw`")?
                .to_owned(),
        ),
        _ => return Err("need exactly one of `pattern` and `pattern_raw`".to_owned()),
    };
    let expect = match v.get("expect").and_then(Value::as_str) {
        Some("match") => Expect::Match,
        Some("no_match") => Expect::NoMatch,
        Some("invalid") => Expect::Invalid,
        other => return Err(format!("bad `expect`: {other:?}")),
    };
    let aws_error = v.get("aws_error").and_then(|e| {
        Some(AwsError {
            code: e.get("code")?.as_str()?.to_owned(),
            message: e.get("message")?.as_str()?.to_owned(),
        })
    });
    Ok(Case {
        name,
        event,
        pattern,
        expect,
        aws_error,
    })
}

/// Runs a case through the engine.
pub fn run(case: &Case) -> Actual {
    let compiled = match &case.pattern {
        PatternSource::Json(v) => Pattern::parse(&v.to_string()),
        PatternSource::Raw(text) => Pattern::parse(text),
    };
    match compiled {
        Err(e) => Actual::Invalid(e),
        Ok(p) => {
            let by_value = p.matches(&case.event);
            // The byte path must agree; a disagreement is a bug worth failing.
            let bytes = case.event.to_string();
            if p.matches_json(bytes.as_bytes()).ok() != Some(by_value) {
                return Actual::Inconsistent { by_value };
            }
            if by_value { Actual::Match } else { Actual::NoMatch }
        }
    }
}

/// Checks the outcome (match / no match / rejected). An invalid case passes
/// when the pattern is rejected, whatever the message; see
/// [`message_matches`] for the text.
pub fn check(case: &Case) -> Result<(), String> {
    let actual = run(case);
    let ok = matches!(
        (case.expect, &actual),
        (Expect::Match, Actual::Match)
            | (Expect::NoMatch, Actual::NoMatch)
            | (Expect::Invalid, Actual::Invalid(_))
    );
    if ok {
        Ok(())
    } else {
        let expected = match (&case.expect, &case.aws_error) {
            (Expect::Invalid, Some(e)) => format!("invalid ({})", e.message),
            (e, _) => e.to_string(),
        };
        Err(format!("{}: expected {expected}, got {actual}", case.name))
    }
}

/// For an invalid case with a recorded AWS error: whether our code and
/// message are exactly AWS's. `None` for other cases.
pub fn message_matches(case: &Case) -> Option<bool> {
    let aws = case.aws_error.as_ref()?;
    match run(case) {
        Actual::Invalid(e) => Some(e.code == aws.code && e.message == aws.message),
        _ => Some(false),
    }
}

/// The result of checking a whole file; `Display` prints each failure with
/// expected vs actual, then `N passed, M failed`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Cases whose outcome matched.
    pub passed: usize,
    /// One line per failing or unparsable case.
    pub failures: Vec<String>,
    /// Invalid cases with a recorded AWS error.
    pub messages_total: usize,
    /// Of those, how many we reject with exactly AWS's code and message.
    pub messages_exact: usize,
}

impl Summary {
    /// Number of failing (or unparsable) cases.
    pub fn failed(&self) -> usize {
        self.failures.len()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for failure in &self.failures {
            writeln!(f, "FAIL {failure}")?;
        }
        if self.messages_total > 0 {
            writeln!(
                f,
                "AWS error messages matched exactly: {}/{}",
                self.messages_exact, self.messages_total
            )?;
        }
        write!(f, "{} passed, {} failed", self.passed, self.failed())
    }
}

/// Parses and checks every case of a JSONL file's text.
pub fn check_all(text: &str) -> Summary {
    let mut summary = Summary::default();
    for case in parse_cases(text) {
        let case = match case {
            Ok(case) => case,
            Err(e) => {
                summary.failures.push(format!("unparsable case, {e}"));
                continue;
            }
        };
        match check(&case) {
            Ok(()) => summary.passed += 1,
            Err(e) => summary.failures.push(e),
        }
        if let Some(same) = message_matches(&case) {
            summary.messages_total += 1;
            summary.messages_exact += usize::from(same);
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_pattern_forms_and_reports_bad_lines() {
        let text = concat!(
            r#"{"name": "a", "event": {}, "pattern": {"x": []}, "expect": "invalid", "#,
            r#""aws_error": {"code": "InvalidEventPatternException", "message": "Event pattern is not valid. Reason: Empty arrays are not allowed"}}"#,
            "\n\n",
            r#"{"name": "b", "event": {"s": "y"}, "pattern_raw": {"raw": "{\"s\": [\"x\"], \"s\": [\"y\"]}"}, "expect": "match"}"#,
            "\n",
            r#"{"name": "c"}"#,
        );
        let cases = parse_cases(text);
        assert_eq!(cases.len(), 3);
        let a = cases[0].as_ref().unwrap();
        assert!(check(a).is_ok());
        assert_eq!(message_matches(a), Some(true));
        let b = cases[1].as_ref().unwrap();
        assert!(matches!(b.pattern, PatternSource::Raw(_)));
        assert!(check(b).is_ok());
        assert!(cases[2].as_ref().unwrap_err().starts_with("line 4:"));
    }

    #[test]
    fn failure_names_expected_and_actual() {
        let case = Case {
            name: "n".into(),
            event: serde_json::json!({"a": "x"}),
            pattern: PatternSource::Json(serde_json::json!({"a": ["y"]})),
            expect: Expect::Match,
            aws_error: None,
        };
        assert_eq!(check(&case).unwrap_err(), "n: expected match, got no_match");
    }

    #[test]
    fn summary_ends_with_counts() {
        let text = concat!(
            r#"{"name": "ok", "event": {"a": "x"}, "pattern": {"a": ["x"]}, "expect": "match"}"#,
            "\n",
            r#"{"name": "bad", "event": {"a": "x"}, "pattern": {"a": ["y"]}, "expect": "match"}"#,
        );
        let s = check_all(text);
        assert_eq!((s.passed, s.failed()), (1, 1));
        assert_eq!(
            s.to_string(),
            "FAIL bad: expected match, got no_match\n1 passed, 1 failed"
        );
    }
}
