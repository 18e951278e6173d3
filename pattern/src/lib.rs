//! EventBridge event patterns: parse, validate, match, and prefilter.
//!
//! A [`Pattern`] is compiled once from the JSON text of an EventBridge rule
//! and then matched against many events. Invalid patterns are rejected with
//! the code and message EventBridge itself returns ([`PatternError`]).
//! Every compiled pattern also carries a [`Prefilter`]: a handful of byte
//! literals that any matching event must contain, so that most events on a
//! busy bus are turned away without parsing their JSON.
//!
//! ```
//! use cutover_pattern::Pattern;
//!
//! let pattern = Pattern::parse(r#"{
//!     "source": ["aws.ecs"],
//!     "detail-type": ["ECS Task State Change"],
//!     "detail": {"containers": {"name": ["cats-green"]}, "lastStatus": ["RUNNING"]}
//! }"#)?;
//! let event = br#"{"source": "aws.ecs", "detail-type": "ECS Task State Change",
//!     "detail": {"lastStatus": "RUNNING", "containers": [{"name": "cats-green"}]}}"#;
//! assert!(pattern.matches_json(event)?);
//! assert!(!pattern.matches_json(br#"{"source": "aws.ec2"}"#)?);
//!
//! let err = Pattern::parse(r#"{"source": []}"#).unwrap_err();
//! assert_eq!(err.message, "Event pattern is not valid. Reason: Empty arrays are not allowed");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Code map
//!
//! - `raw`: JSON text to a tree that keeps duplicate keys.
//! - `dotted`: field names with dots, split as EventBridge joins them.
//! - `compile`: validation with AWS's messages; `$or` expanded into branches.
//! - `eval`: matching (allocation-free).
//! - `wildcard`, `cidr`: the two value matchers with their own syntax.
//! - `prefilter`: the byte literals required by a pattern ([`Prefilter`]).
//! - `projection`: reads only the fields patterns name; [`check_json`], the edge check.
//! - `quick`: the edge check's quick pass (bit masks of 64-byte blocks, tokens walked).
//! - [`conformance`]: runs recorded EventBridge cases (JSON Lines).
//!
//! # Semantics worth knowing
//!
//! - Objects inside event arrays are matched element by element: all the
//!   conditions under `{"containers": {...}}` must hold for one container.
//!   As in EventBridge, leaves are checked in path order, so an
//!   `exists: false` whose path sorts before the leaves that pick the
//!   container (`containers.exitCode` before `containers.name`) is checked
//!   against every container.
//! - Numbers compare within ±5e9 at six decimal places, as in EventBridge;
//!   numeric operators never match strings such as `"300"`.
//! - `exists` only sees leaf values: `exists: true` never matches an object.
//! - A plain string value that is an IP address matches the same address
//!   written differently (`2001:db8::1` vs `2001:0db8:0:0:0:0:0:1`).
//! - Field names are joined with `.`, as EventBridge compiles them: a
//!   pattern key `"a.b"` and the nested keys `a` → `b` name the same field,
//!   in patterns and in events (`dotted`).
//!
//! Known differences from AWS: a wildcard is rejected as too complex when it
//! has more than five `*` (AWS runs a state-machine complexity estimate
//! whose threshold is not documented); a pattern whose `$or`s expand to
//! more than 1024 combinations is rejected here.

mod cidr;
mod compile;
pub mod conformance;
mod dotted;
mod error;
mod eval;
mod prefilter;
mod projection;
mod quick;
mod raw;
mod wildcard;

pub use error::{INVALID_EVENT_PATTERN, PatternError};
pub use prefilter::Prefilter;
pub use projection::{Projected, Projection, check_json};

use serde_json::Value;

/// A compiled EventBridge event pattern.
#[derive(Clone, Debug)]
pub struct Pattern {
    branches: Vec<compile::Branch>,
    prefilter: Prefilter,
    projection: Projection,
    value: Value,
}

impl Pattern {
    /// Parses and compiles a pattern from its JSON text.
    ///
    /// A key given twice is handled as EventBridge does: two objects under
    /// the same key are merged, and for a value array the later one wins.
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        let raw = raw::parse_text(text).map_err(|e| PatternError::reason(json_reason(&e)))?;
        Pattern::from_raw(&raw)
    }

    /// Compiles a pattern that is already parsed.
    pub fn from_value(v: &Value) -> Result<Pattern, PatternError> {
        Pattern::from_raw(&raw::Raw::from_value(v))
    }

    fn from_raw(raw: &raw::Raw) -> Result<Pattern, PatternError> {
        let branches = compile::compile(raw)?;
        let prefilter = Prefilter::derive(&branches);
        let mut pattern = Pattern {
            branches,
            prefilter,
            projection: Projection::default(),
            value: raw.to_merged_value(),
        };
        pattern.projection = Projection::of([&pattern]);
        Ok(pattern)
    }

    /// Whether the parsed event matches. Does not allocate, unless the event has a field name
    /// with a dot (`"a.b"`, which EventBridge reads as `a` → `b`).
    pub fn matches(&self, event: &Value) -> bool {
        if dotted::has_dotted_key(event) {
            let split = dotted::split_keys(event);
            return self.branches.iter().any(|b| b.matches(&split));
        }
        self.branches.iter().any(|b| b.matches(event))
    }

    /// Runs the prefilter on the raw bytes, then parses only the fields the pattern reads
    /// (see [`Projection`]) and matches.
    ///
    /// Bytes the prefilter rejects are not parsed, so malformed JSON that
    /// cannot match is reported as `Ok(false)` rather than as an error.
    pub fn matches_json(&self, event: &[u8]) -> Result<bool, serde_json::Error> {
        if !self.prefilter.may_match(event) {
            return Ok(false);
        }
        let value = self.projection.parse(event)?;
        Ok(self.matches_projected(&value))
    }

    /// Whether the pattern matches an event parsed with a [`Projection`] that includes this
    /// pattern's fields (as [`Projection::of`] builds); decides as [`Pattern::matches`] does
    /// on the whole event.
    pub fn matches_projected(&self, event: &Projected<'_>) -> bool {
        self.branches.iter().any(|b| b.matches(event))
    }

    /// The field paths the pattern reads (each a list of keys), every `$or` alternative
    /// included; a path may repeat.
    pub fn field_paths(&self) -> impl Iterator<Item = &[Box<str>]> {
        self.branches
            .iter()
            .flat_map(|b| b.fields.iter().map(|f| &*f.path))
    }

    /// The byte prefilter derived from this pattern.
    pub fn prefilter(&self) -> &Prefilter {
        &self.prefilter
    }

    /// The pattern as given, suitable for printing as a rule. Text with
    /// repeated keys is rewritten without them, keeping its meaning: objects
    /// are merged, a later array replaces an earlier one, and a repeated
    /// `$or` is nested into the alternatives of the first. (A key used both
    /// as an array and as an object has no such form; the later one is kept.)
    pub fn as_value(&self) -> &Value {
        &self.value
    }
}

/// The reason for JSON that does not parse, without serde's position suffix.
fn json_reason(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn assert_send_sync<T: Send + Sync + Clone + std::fmt::Debug>() {}

    #[test]
    fn pattern_is_shareable() {
        assert_send_sync::<Pattern>();
        assert_send_sync::<Prefilter>();
    }

    #[test]
    fn parse_and_from_value_agree() {
        let v = json!({"source": ["aws.ecs"], "detail": {"lastStatus": [{"prefix": "RUN"}]}});
        let a = Pattern::parse(&v.to_string()).unwrap();
        let b = Pattern::from_value(&v).unwrap();
        assert_eq!(a.as_value(), &v);
        assert_eq!(b.as_value(), &v);
        let e = json!({"source": "aws.ecs", "detail": {"lastStatus": "RUNNING"}});
        assert!(a.matches(&e) && b.matches(&e));
    }

    #[test]
    fn malformed_json_is_invalid_pattern() {
        let e = Pattern::parse("{").unwrap_err();
        assert_eq!(e.code, INVALID_EVENT_PATTERN);
        assert!(e.message.starts_with("Event pattern is not valid. Reason: "));
    }

    #[test]
    fn duplicate_keys_follow_aws() {
        let p = Pattern::parse(r#"{"detail": {"a": ["1"]}, "detail": {"b": ["2"]}}"#).unwrap();
        assert_eq!(p.as_value(), &json!({"detail": {"a": ["1"], "b": ["2"]}}));
        assert!(p.matches(&json!({"detail": {"a": "1", "b": "2"}})));
        assert!(!p.matches(&json!({"detail": {"b": "2"}})));
        let p = Pattern::parse(r#"{"s": ["x"], "s": ["y"]}"#).unwrap();
        assert!(p.matches(&json!({"s": "y"})));
        assert!(!p.matches(&json!({"s": "x"})));
    }

    #[test]
    fn repeated_or_means_both_and_prints_faithfully() {
        let p =
            Pattern::parse(r#"{"$or": [{"a": ["1"]}, {"b": ["2"]}], "$or": [{"c": ["3"]}, {"d": ["4"]}]}"#)
                .unwrap();
        let printed = Pattern::from_value(p.as_value()).unwrap();
        for (event, expected) in [
            (json!({"a": "1", "c": "3"}), true),
            (json!({"b": "2", "d": "4"}), true),
            (json!({"a": "1"}), false),
            (json!({"c": "3", "d": "4"}), false),
        ] {
            assert_eq!(p.matches(&event), expected, "{event}");
            assert_eq!(printed.matches(&event), expected, "{event}");
        }
    }

    #[test]
    fn printed_pattern_compiles_to_the_same_pattern() {
        let text = r#"{"detail": {"a": [{"numeric": [">", 0, "<=", 5]}]},
                       "$or": [{"b": [{"wildcard": "x*y"}]}, {"c": [{"cidr": "10.0.0.0/8"}]}],
                       "detail": {"b": [{"anything-but": {"prefix": "p"}}]}}"#;
        let p = Pattern::parse(text).unwrap();
        let again = Pattern::parse(&p.as_value().to_string()).unwrap();
        assert_eq!(again.as_value(), p.as_value());
        assert_eq!(again.prefilter().literals(), p.prefilter().literals());
        let e = json!({"detail": {"a": 3, "b": "q"}, "c": "10.1.2.3"});
        assert!(p.matches(&e) && again.matches(&e));
    }

    #[test]
    fn matches_json_reports_bad_json_only_when_it_must_parse() {
        let p = Pattern::parse(r#"{"a": ["x"]}"#).unwrap();
        assert!(!p.matches_json(b"{not json").unwrap());
        assert!(p.matches_json(br#"{"a": "x""#).is_err());
    }
}
