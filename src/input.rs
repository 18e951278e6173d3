//! Reading events from files and stdin: JSON Lines, a JSON array, or single JSON documents.

use serde::de::IgnoredAny;
use serde_json::value::RawValue;

/// One item read from an input.
#[derive(Debug)]
pub(crate) enum Item {
    /// A syntactically valid JSON document.
    Event { origin: String, bytes: Vec<u8> },
    /// Something that is not JSON, with where it was.
    Malformed { origin: String, message: String },
}

/// Splits `text` read from `name` into events.
///
/// A text starting with `[` is a JSON array of events; a text that is one JSON document is one
/// event; anything else is read as JSON Lines, where each malformed line is reported with its
/// number and the others still count.
pub(crate) fn read_events(name: &str, text: &[u8]) -> Vec<Item> {
    let trimmed = text.trim_ascii_start();
    if trimmed.starts_with(b"[") {
        return match serde_json::from_slice::<Vec<&RawValue>>(text) {
            Ok(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, raw)| Item::Event {
                    origin: format!("{name}[{i}]"),
                    bytes: raw.get().as_bytes().to_vec(),
                })
                .collect(),
            Err(e) => vec![Item::Malformed {
                origin: format!("{name}:{}", e.line()),
                message: format!("not a valid JSON array of events: {e}"),
            }],
        };
    }
    if trimmed.is_empty() {
        return Vec::new();
    }
    if serde_json::from_slice::<IgnoredAny>(text).is_ok() {
        return vec![Item::Event {
            origin: name.to_owned(),
            bytes: text.to_vec(),
        }];
    }
    let mut items = Vec::new();
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let origin = format!("{name}:{}", i + 1);
        match serde_json::from_slice::<IgnoredAny>(line) {
            Ok(_) => items.push(Item::Event {
                origin,
                bytes: line.to_vec(),
            }),
            Err(e) => items.push(Item::Malformed {
                message: format!("line {}: not valid JSON: {e}", i + 1),
                origin,
            }),
        }
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(items: &[Item]) -> Vec<String> {
        items
            .iter()
            .map(|i| match i {
                Item::Event { origin, .. } => format!("ok {origin}"),
                Item::Malformed { origin, .. } => format!("bad {origin}"),
            })
            .collect()
    }

    #[test]
    fn reads_the_three_shapes() {
        assert_eq!(
            summary(&read_events("a", b"{\"id\":1}\n{\"id\":2}\n")),
            ["ok a:1", "ok a:2"]
        );
        assert_eq!(
            summary(&read_events("a", b"[{\"id\":1},{\"id\":2}]")),
            ["ok a[0]", "ok a[1]"]
        );
        assert_eq!(summary(&read_events("a", b"{\n \"id\": 1\n}\n")), ["ok a"]);
    }

    #[test]
    fn malformed_lines_are_reported_and_others_kept() {
        let items = read_events("t.jsonl", b"{\"id\":1}\n{\"id\": \n\n{\"id\":3}\n");
        assert_eq!(summary(&items), ["ok t.jsonl:1", "bad t.jsonl:2", "ok t.jsonl:4"]);
        let Item::Malformed { message, .. } = &items[1] else {
            unreachable!()
        };
        assert!(message.starts_with("line 2: not valid JSON"), "{message}");
    }
}
