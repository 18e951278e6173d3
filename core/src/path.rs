//! Field paths such as `detail.containers[0].name`, shared by templates, keys and stages.
//!
//! A path is a dot-separated list of object keys, each optionally followed by `[N]` array
//! indexes. Keys may hold any character but `.`, `[`, `]`, `{` and `}`
//! (`detail-type` is a key). The first segment `context` reads what stages have added.

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

/// One step of a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// An object key.
    Key(String),
    /// An array index.
    Index(usize),
}

/// A parsed field path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldPath {
    text: String,
    segments: Vec<Segment>,
}

/// Why a path could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid field path {path:?}: {reason}")]
pub struct PathError {
    /// The path as written.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FieldPath {
    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The segments.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The first key, if the path starts with one.
    pub fn root(&self) -> Option<&str> {
        match self.segments.first() {
            Some(Segment::Key(k)) => Some(k),
            _ => None,
        }
    }

    /// Follows the path through a JSON value.
    pub fn lookup<'v>(&self, value: &'v Value) -> Option<&'v Value> {
        walk(value, &self.segments)
    }

    /// Follows the path through a map, skipping the first `skip` segments.
    pub fn lookup_in_map<'v>(&self, map: &'v Map<String, Value>, skip: usize) -> Option<&'v Value> {
        let rest = self.segments.get(skip..)?;
        match rest.split_first() {
            None => None,
            Some((Segment::Key(k), tail)) => walk(map.get(k)?, tail),
            Some((Segment::Index(_), _)) => None,
        }
    }
}

fn walk<'v>(mut value: &'v Value, segments: &[Segment]) -> Option<&'v Value> {
    for seg in segments {
        value = match seg {
            Segment::Key(k) => value.as_object()?.get(k)?,
            Segment::Index(i) => value.as_array()?.get(*i)?,
        };
    }
    Some(value)
}

impl FromStr for FieldPath {
    type Err = PathError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| PathError {
            path: text.to_owned(),
            reason: reason.to_owned(),
        };
        if text.trim().is_empty() {
            return Err(err("the path is empty; write e.g. detail.group"));
        }
        let mut segments = Vec::new();
        for part in text.split('.') {
            let (key, mut rest) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            if key.is_empty() {
                return Err(err("empty key (two dots in a row, or a leading/trailing dot)"));
            }
            if key.contains([']', '{', '}']) || key.trim() != key {
                return Err(err("keys may not contain ']', '{', '}' or surrounding spaces"));
            }
            segments.push(Segment::Key(key.to_owned()));
            while !rest.is_empty() {
                let close = rest.find(']').ok_or_else(|| err("'[' without a closing ']'"))?;
                let index = rest[1..close]
                    .parse::<usize>()
                    .map_err(|_| err("array indexes are written [0], [1], …"))?;
                segments.push(Segment::Index(index));
                rest = &rest[close + 1..];
                if !rest.is_empty() && !rest.starts_with('[') {
                    return Err(err("after ']' comes '.', '[' or the end"));
                }
            }
        }
        Ok(Self {
            text: text.to_owned(),
            segments,
        })
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_keys_and_indexes() {
        let p: FieldPath = "detail.containers[1].name".parse().unwrap();
        let v = json!({"detail": {"containers": [{"name": "a"}, {"name": "b"}]}});
        assert_eq!(p.lookup(&v), Some(&json!("b")));
        let p: FieldPath = "detail-type".parse().unwrap();
        assert_eq!(p.lookup(&json!({"detail-type": "X"})), Some(&json!("X")));
    }

    #[test]
    fn rejects_bad_paths_with_reasons() {
        for bad in ["", "a..b", "a[", "a[x]", "a[0]b", ".a", "a{b}"] {
            let e = bad.parse::<FieldPath>().unwrap_err();
            assert!(!e.reason.is_empty(), "{bad}");
        }
    }

    #[test]
    fn missing_fields_are_none() {
        let p: FieldPath = "detail.group".parse().unwrap();
        assert_eq!(p.lookup(&json!({"detail": 3})), None);
        assert_eq!(p.lookup(&json!({})), None);
    }
}
