//! Running recorded Step Functions executions as conformance cases.
//!
//! The corpus is JSON Lines: each line has `name`, `definition`, `input`,
//! `expect` (`{"status": "SUCCEEDED", "output": ...}` or
//! `{"status": "FAILED", "error": ..., "cause": ...}`) and, optionally,
//! `nondeterministic: true` when the recorded values were redacted
//! (`<uuid:1>`, `date`, `111111111111`, …); those placeholders match
//! anything. Every case runs on [`VirtualClock`].
//!
//! ```
//! use cutover_asl::conformance::{parse_cases, check, CaseResult};
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let line = r#"{"name": "pass", "definition": {"StartAt": "A", "States": {"A": {"Type": "Pass", "End": true}}}, "input": {"a": 1}, "expect": {"status": "SUCCEEDED", "output": {"a": 1}}}"#;
//! let cases = parse_cases(line);
//! let case = cases[0].as_ref().unwrap();
//! assert_eq!(check(case).await, CaseResult::Passed);
//! # });
//! ```

use crate::{Definition, Engine, ExecutionStatus, NoTasks, VirtualClock};
use serde_json::Value;
use std::sync::Arc;

/// One recorded execution.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// Case name.
    pub name: String,
    /// The state machine definition.
    pub definition: Value,
    /// Execution input.
    pub input: Value,
    /// The recorded outcome.
    pub expect: Expected,
    /// Whether recorded values hold redaction placeholders.
    pub nondeterministic: bool,
}

/// A recorded outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Expected {
    /// The execution succeeded with this output.
    Succeeded(Value),
    /// The execution failed with this error and cause (`None`: AWS gave
    /// none).
    Failed {
        /// Error name.
        error: Option<String>,
        /// Cause.
        cause: Option<String>,
    },
}

/// The verdict on one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaseResult {
    /// The engine reproduced the recorded outcome.
    Passed,
    /// It did not: expected vs actual.
    Failed(String),
    /// Not run, with the reason.
    Skipped(String),
}

/// Parse a JSON Lines corpus; blank lines are ignored, bad lines become
/// `Err` with the line number.
pub fn parse_cases(text: &str) -> Vec<Result<Case, String>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| parse_case(l).map_err(|e| format!("line {}: {e}", n + 1)))
        .collect()
}

fn parse_case(line: &str) -> Result<Case, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .ok_or("missing 'name'")?
        .to_string();
    let definition = v.get("definition").cloned().ok_or("missing 'definition'")?;
    let input = v
        .get("input")
        .cloned()
        .unwrap_or(Value::Object(Default::default()));
    let e = v.get("expect").ok_or("missing 'expect'")?;
    let opt = |k: &str| e.get(k).and_then(Value::as_str).map(String::from);
    let expect = match e.get("status").and_then(Value::as_str) {
        Some("SUCCEEDED") => Expected::Succeeded(e.get("output").cloned().unwrap_or(Value::Null)),
        Some("FAILED") => Expected::Failed {
            error: opt("error"),
            cause: opt("cause"),
        },
        other => return Err(format!("unsupported expected status {other:?}")),
    };
    Ok(Case {
        name,
        definition,
        input,
        expect,
        nondeterministic: v
            .get("nondeterministic")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

/// Run one case on virtual time and compare with the recording.
pub async fn check(case: &Case) -> CaseResult {
    let def = match Definition::from_value(&case.definition) {
        Ok(d) => Arc::new(d),
        Err(e) => return CaseResult::Failed(format!("definition rejected:\n{e}")),
    };
    let engine = Engine::new(Arc::new(NoTasks), Arc::new(VirtualClock::new()), None);
    let out = match engine.start(def, "conformance", case.input.clone()).await {
        Ok(o) => o,
        Err(e) => return CaseResult::Failed(format!("engine error: {e}")),
    };
    let wild = case.nondeterministic;
    let actual = match out.status {
        ExecutionStatus::Succeeded => {
            format!("SUCCEEDED output {}", out.output.clone().unwrap_or(Value::Null))
        }
        s => format!("{s:?} error {:?} cause {:?}", out.error, out.cause),
    };
    let ok = match &case.expect {
        Expected::Succeeded(v) => {
            out.status == ExecutionStatus::Succeeded
                && values_match(v, out.output.as_ref().unwrap_or(&Value::Null), wild)
        }
        Expected::Failed { error, cause } => {
            out.status == ExecutionStatus::Failed
                && opt_match(error, &out.error, wild)
                && opt_match(cause, &out.cause, wild)
        }
    };
    if ok {
        CaseResult::Passed
    } else {
        let expected = match &case.expect {
            Expected::Succeeded(v) => format!("SUCCEEDED output {v}"),
            Expected::Failed { error, cause } => format!("FAILED error {error:?} cause {cause:?}"),
        };
        CaseResult::Failed(format!("expected: {expected}\n  actual: {actual}"))
    }
}

fn opt_match(expected: &Option<String>, actual: &Option<String>, wild: bool) -> bool {
    match (expected, actual) {
        (None, None) => true,
        (Some(e), Some(a)) => {
            if wild {
                str_match(e, a)
            } else {
                e == a
            }
        }
        _ => false,
    }
}

const ANY_VALUE: &[&str] = &[
    "date",
    "start-time",
    "entered-time",
    "RandomNumberGenerated",
    "snf_role_arn",
];

fn values_match(expected: &Value, actual: &Value, wild: bool) -> bool {
    if !wild {
        return expected == actual;
    }
    match (expected, actual) {
        (Value::String(e), _) if ANY_VALUE.contains(&e.as_str()) => true,
        (Value::String(e), Value::String(a)) => str_match(e, a),
        (Value::Array(e), Value::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(x, y)| values_match(x, y, true))
        }
        (Value::Object(e), Value::Object(a)) => {
            e.len() == a.len()
                && e.iter()
                    .all(|(k, x)| a.get(k).is_some_and(|y| values_match(x, y, true)))
        }
        (e, a) => e == a,
    }
}

/// Compare a recorded string whose `<placeholder>`s and redacted account id
/// match any text.
fn str_match(expected: &str, actual: &str) -> bool {
    let mut pattern = String::new();
    let mut rest = expected.replace("111111111111", "\u{0}");
    loop {
        match (rest.find('<'), rest.find('>')) {
            (Some(a), Some(b)) if a < b => {
                push_escaped(&mut pattern, &rest[..a]);
                pattern.push('*');
                rest = rest[b + 1..].to_string();
            }
            _ => {
                push_escaped(&mut pattern, &rest);
                break;
            }
        }
    }
    crate::choice::string_matches(actual, &pattern.replace('\u{0}', "*"))
}

fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        if c == '*' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
}
