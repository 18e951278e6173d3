//! A JSON tree that keeps every key of an object, duplicates included.
//!
//! EventBridge reads a pattern as a token stream, so a key given twice is
//! not an error: two objects under the same key are merged, and for a leaf
//! the later array wins. `serde_json::Value` would silently keep only the
//! last object, so patterns given as text are first read into [`Raw`].

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::fmt;

/// One JSON value; objects keep their entries in order, duplicates included.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Raw {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Raw>),
    Object(Vec<(String, Raw)>),
}

impl Raw {
    /// Converts a parsed value (which cannot hold duplicate keys).
    pub(crate) fn from_value(v: &Value) -> Raw {
        match v {
            Value::Null => Raw::Null,
            Value::Bool(b) => Raw::Bool(*b),
            Value::Number(n) => Raw::Number(n.clone()),
            Value::String(s) => Raw::String(s.clone()),
            Value::Array(a) => Raw::Array(a.iter().map(Raw::from_value).collect()),
            Value::Object(o) => Raw::Object(o.iter().map(|(k, v)| (k.clone(), Raw::from_value(v))).collect()),
        }
    }

    /// A value without duplicate keys that EventBridge reads the same way:
    /// objects under a repeated key are merged, a repeated leaf keeps the
    /// later array, and a repeated `$or` is nested into each alternative of
    /// the first (`(A|B) & (C|D)` becomes `A&(C|D) | B&(C|D)`).
    pub(crate) fn to_merged_value(&self) -> Value {
        match self {
            Raw::Null => Value::Null,
            Raw::Bool(b) => Value::Bool(*b),
            Raw::Number(n) => Value::Number(n.clone()),
            Raw::String(s) => Value::String(s.clone()),
            Raw::Array(a) => Value::Array(a.iter().map(Raw::to_merged_value).collect()),
            Raw::Object(entries) => {
                let mut map = Map::new();
                for (k, v) in entries {
                    insert_merged(&mut map, k, v.to_merged_value());
                }
                Value::Object(map)
            }
        }
    }
}

fn insert_merged(map: &mut Map<String, Value>, key: &str, value: Value) {
    if key != "$or" {
        override_in_earlier_or(map, key, &value);
    }
    match (map.get_mut(key), value) {
        (Some(Value::Array(alternatives)), Value::Array(more)) if key == "$or" => {
            let more = Value::Array(more);
            for alt in alternatives {
                if let Value::Object(alt) = alt {
                    insert_merged(alt, key, more.clone());
                }
            }
        }
        (Some(Value::Object(old)), Value::Object(new)) => {
            for (k, v) in new {
                insert_merged(old, &k, v);
            }
        }
        (_, value) => {
            map.insert(key.to_owned(), value);
        }
    }
}

/// EventBridge reads a pattern in order: a key that comes after a `$or` replaces what the
/// `$or`'s alternatives say at that key. One JSON object cannot put the key both before and
/// after the `$or`, so the printed form repeats the later value inside every alternative
/// that names the key (or holds a nested `$or` that does).
fn override_in_earlier_or(map: &mut Map<String, Value>, key: &str, value: &Value) {
    if let Some(Value::Array(alternatives)) = map.get_mut("$or") {
        for alternative in alternatives {
            if let Value::Object(alternative) = alternative
                && mentions(alternative, key)
            {
                insert_merged(alternative, key, value.clone());
            }
        }
    }
}

fn mentions(map: &Map<String, Value>, key: &str) -> bool {
    map.contains_key(key)
        || matches!(map.get("$or"), Some(Value::Array(alternatives))
            if alternatives.iter().any(|a| matches!(a, Value::Object(a) if mentions(a, key))))
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Raw, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_none<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(b))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Raw, E> {
        Ok(Raw::Number(n.into()))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Raw, E> {
        Ok(Raw::Number(n.into()))
    }
    fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Raw, E> {
        Number::from_f64(n)
            .map(Raw::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E>(self, s: &str) -> Result<Raw, E> {
        Ok(Raw::String(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Raw, E> {
        Ok(Raw::String(s))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Raw>()? {
            items.push(item);
        }
        Ok(Raw::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Raw>()? {
            entries.push((k, v));
        }
        Ok(Raw::Object(entries))
    }
}

/// Reads JSON text, keeping duplicate keys.
pub(crate) fn parse_text(text: &str) -> Result<Raw, serde_json::Error> {
    serde_json::from_str(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_duplicate_keys_in_order() {
        let raw = parse_text(r#"{"a": ["x"], "a": ["y"]}"#).unwrap();
        let Raw::Object(entries) = raw else {
            panic!("not an object")
        };
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].0, "a");
        assert_eq!(entries[1].1, Raw::Array(vec![Raw::String("y".into())]));
    }

    #[test]
    fn merged_value_merges_objects_and_overrides_leaves() {
        let raw = parse_text(r#"{"d": {"a": [1]}, "s": ["x"], "d": {"b": [2]}, "s": ["y"]}"#).unwrap();
        assert_eq!(
            raw.to_merged_value(),
            json!({"d": {"a": [1], "b": [2]}, "s": ["y"]})
        );
    }

    #[test]
    fn repeated_or_is_nested_into_the_first() {
        let raw = parse_text(r#"{"$or": [{"a": ["1"]}, {"b": ["2"]}], "$or": [{"c": ["3"]}, {"d": ["4"]}]}"#)
            .unwrap();
        let inner = json!([{"c": ["3"]}, {"d": ["4"]}]);
        assert_eq!(
            raw.to_merged_value(),
            json!({"$or": [{"a": ["1"], "$or": inner}, {"b": ["2"], "$or": inner}]})
        );
    }

    #[test]
    fn round_trips_values() {
        let v = json!({"a": [1, 2.5, "s", null, true], "b": {"c": []}});
        assert_eq!(Raw::from_value(&v).to_merged_value(), v);
    }
}
