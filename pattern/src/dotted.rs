//! Field names with dots: EventBridge joins nested field names with `.` when it compiles a
//! pattern and when it reads an event, so `{"a": {"b": …}}` and `{"a.b": …}` name the same
//! field, in a pattern and in an event alike.
//!
//! Patterns are compiled with every key split at its dots (a path is a list of plain names).
//! Events are brought to the same form only when they hold a dotted key: [`split_keys`] for a
//! parsed `Value`, [`merge_dotted`] for the fields a projected parse keeps. A value reached
//! both ways (`{"a": {"b": 1}, "a.b": 2}`) is kept as both, the way an array holds several
//! values for one path: objects merge, anything else becomes an array of the values.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::Projected;

/// Whether any object in `v` has a key with a dot.
pub(crate) fn has_dotted_key(v: &Value) -> bool {
    match v {
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('.') || has_dotted_key(v)),
        Value::Array(items) => items.iter().any(has_dotted_key),
        _ => false,
    }
}

/// `v` with every dotted key split into nested objects.
pub(crate) fn split_keys(v: &Value) -> Value {
    match v {
        Value::Array(items) => Value::Array(items.iter().map(split_keys).collect()),
        Value::Object(map) => {
            let mut out = Map::new();
            let mut dotted = Vec::new();
            for (key, value) in map {
                if key.contains('.') {
                    dotted.push((key, split_keys(value)));
                } else {
                    out.insert(key.clone(), split_keys(value));
                }
            }
            for (key, value) in dotted {
                let (first, rest) = key.split_once('.').unwrap_or((key, ""));
                let nested = rest.rsplit('.').fold(value, |inner, name| {
                    Value::Object(Map::from_iter([(name.to_owned(), inner)]))
                });
                let merged = match out.remove(first) {
                    Some(old) => both_values(old, nested),
                    None => nested,
                };
                out.insert(first.to_owned(), merged);
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

fn both_values(old: Value, new: Value) -> Value {
    match (old, new) {
        (Value::Object(mut a), Value::Object(b)) => {
            for (key, value) in b {
                let merged = match a.remove(&key) {
                    Some(old) => both_values(old, value),
                    None => value,
                };
                a.insert(key, merged);
            }
            Value::Object(a)
        }
        (a, b) => Value::Array(values_of_both(a, b, |v| match v {
            Value::Array(items) => Ok(items),
            other => Err(other),
        })),
    }
}

/// The values of `old` and `new` as one array's elements (an array counts as its elements,
/// since matching looks through arrays).
fn values_of_both<T>(old: T, new: T, elements: impl Fn(T) -> Result<Vec<T>, T>) -> Vec<T> {
    let mut all = elements(old).unwrap_or_else(|one| vec![one]);
    all.extend(elements(new).unwrap_or_else(|one| vec![one]));
    all
}

/// Adds a value kept under a dotted `key` to an object's projected `fields`, nested under
/// the key's parts and merged with what the object already holds there.
pub(crate) fn merge_dotted<'a>(
    fields: &mut Vec<(Cow<'a, str>, Projected<'a>)>,
    key: Cow<'a, str>,
    value: Projected<'a>,
) {
    // The parts as ranges of the key, so that a borrowed key lends its parts.
    let mut ranges = Vec::new();
    let mut from = 0;
    for (at, _) in key.match_indices('.') {
        ranges.push(from..at);
        from = at + 1;
    }
    ranges.push(from..key.len());
    let part = |range: std::ops::Range<usize>| -> Cow<'a, str> {
        match &key {
            Cow::Borrowed(text) => Cow::Borrowed(&text[range]),
            Cow::Owned(text) => Cow::Owned(text[range].to_owned()),
        }
    };
    let first = part(ranges[0].clone());
    let nested = ranges[1..].iter().rev().fold(value, |inner, range| {
        Projected::Object(vec![(part(range.clone()), inner)])
    });
    insert_projected(fields, first, nested);
}

fn insert_projected<'a>(
    fields: &mut Vec<(Cow<'a, str>, Projected<'a>)>,
    key: Cow<'a, str>,
    value: Projected<'a>,
) {
    match fields.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => {
            let old = std::mem::replace(&mut slot.1, Projected::Null);
            slot.1 = both_projected(old, value);
        }
        None => fields.push((key, value)),
    }
}

fn both_projected<'a>(old: Projected<'a>, new: Projected<'a>) -> Projected<'a> {
    match (old, new) {
        (Projected::Object(mut a), Projected::Object(b)) => {
            for (key, value) in b {
                insert_projected(&mut a, key, value);
            }
            Projected::Object(a)
        }
        (a, b) => Projected::Array(values_of_both(a, b, |v| match v {
            Projected::Array(items) => Ok(items),
            other => Err(other),
        })),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{Pattern, Projection};

    #[test]
    fn pattern_keys_are_split_at_their_dots() {
        let p = Pattern::from_value(&json!({"a.b": {"c": [1]}, "d": [2]})).unwrap();
        let paths: Vec<String> = p.field_paths().map(|path| path.join("/")).collect();
        assert_eq!(paths, ["a/b/c", "d"]);
    }

    #[test]
    fn a_dotted_event_key_is_read_as_nested_names_both_ways_alike() {
        let event = json!({"a.b": "y", "a": {"b": "x", "c": 1}, "z": {"q.r": [1, 2]}});
        let split = split_keys(&event);
        assert_eq!(
            split,
            json!({"a": {"b": ["x", "y"], "c": 1}, "z": {"q": {"r": [1, 2]}}})
        );
        let p = Pattern::from_value(&json!({"a": {"b": ["y"], "c": [1]}, "z.q.r": [2]})).unwrap();
        let text = event.to_string();
        let projected = Projection::of([&p]).parse(text.as_bytes()).unwrap();
        assert_eq!(projected.to_value(), split);
        assert!(p.matches(&event));
        assert!(p.matches_json(text.as_bytes()).unwrap());
    }

    #[test]
    fn parts_of_a_plain_key_borrow_from_the_event() {
        let mut fields = Vec::new();
        merge_dotted(&mut fields, Cow::Borrowed("a.b"), Projected::Bool(true));
        let [(first, Projected::Object(inner))] = &fields[..] else {
            panic!("{fields:?}")
        };
        assert!(matches!(first, Cow::Borrowed("a")));
        assert!(matches!(
            &inner[..],
            [(Cow::Borrowed("b"), Projected::Bool(true))]
        ));
    }

    #[test]
    fn events_without_dots_are_not_copied() {
        assert!(!has_dotted_key(&json!({"a": {"b": [1, {"c": "d.e"}]}})));
        assert!(has_dotted_key(&json!({"a": [{"b.c": 1}]})));
    }
}
