//! A small block-style YAML writer for CloudFormation templates held as JSON values.
//!
//! Strings are written plain only when no YAML reader could take them for anything else
//! (a number, a boolean, a flow collection); otherwise double-quoted with JSON escapes, which
//! YAML's double-quoted style accepts as they are. Multi-line strings (a state machine
//! definition) become literal blocks. A mapping key `"#"` is written as a comment line.

use serde_json::{Map, Value};

/// The key whose string value is written as a `# …` comment instead of an entry.
pub(crate) const COMMENT: &str = "#";

/// `value` as a YAML document.
pub(crate) fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(m) if !m.is_empty() => mapping(&mut out, m, 0),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

fn comment(out: &mut String, text: &str, indent: usize) {
    for line in text.lines() {
        pad(out, indent);
        out.push_str("# ");
        out.push_str(line);
        out.push('\n');
    }
}

fn mapping(out: &mut String, m: &Map<String, Value>, indent: usize) {
    let mut first = true;
    for (k, v) in m {
        if k == COMMENT {
            if let Some(text) = v.as_str() {
                comment(out, text, indent);
            }
            continue;
        }
        if !first {
            pad(out, indent);
        }
        first = false;
        entry(out, k, v, indent);
    }
}

/// `key: value` with the cursor already at the key's column.
fn entry(out: &mut String, key: &str, value: &Value, indent: usize) {
    out.push_str(&string(key));
    out.push(':');
    match value {
        Value::Object(m) if m.keys().any(|k| k != COMMENT) => {
            out.push('\n');
            pad(out, indent + 2);
            mapping(out, m, indent + 2);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            sequence(out, items, indent + 2);
        }
        Value::String(s) if is_block(s) => {
            out.push_str(if s.ends_with('\n') { " |\n" } else { " |-\n" });
            for line in s.lines() {
                if !line.is_empty() {
                    pad(out, indent + 2);
                    out.push_str(line);
                }
                out.push('\n');
            }
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

fn sequence(out: &mut String, items: &[Value], indent: usize) {
    for item in items {
        if let Value::Object(m) = item
            && let Some(text) = m.get(COMMENT).and_then(Value::as_str)
        {
            comment(out, text, indent);
        }
        pad(out, indent);
        match item {
            Value::Object(m) if m.keys().any(|k| k != COMMENT) => {
                out.push_str("- ");
                // The first entry follows the dash; the rest line up under it.
                let mut rest = Map::new();
                let mut first = None;
                for (k, v) in m {
                    if k == COMMENT {
                        continue;
                    }
                    if first.is_none() {
                        first = Some((k, v));
                    } else {
                        rest.insert(k.clone(), v.clone());
                    }
                }
                if let Some((k, v)) = first {
                    entry(out, k, v, indent + 2);
                }
                for (k, v) in &rest {
                    pad(out, indent + 2);
                    entry(out, k, v, indent + 2);
                }
            }
            other => {
                out.push_str("- ");
                out.push_str(&scalar(other));
                out.push('\n');
            }
        }
    }
}

/// A value on one line: plain or quoted scalars, JSON flow collections (valid YAML).
fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => string(s),
        Value::Object(m) if m.keys().all(|k| k == COMMENT) => "{}".into(),
        other => other.to_string(),
    }
}

fn string(s: &str) -> String {
    if is_plain(s) {
        s.to_owned()
    } else {
        Value::String(s.to_owned()).to_string()
    }
}

/// Whether `s` reads back as the same string when written plain.
fn is_plain(s: &str) -> bool {
    const RESERVED: &[&str] = &["true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"];
    let Some(first) = s.chars().next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '/' || first == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:$@+=() ".contains(c))
        && !s.ends_with(' ')
        && !s.ends_with(':')
        && !s.contains(": ")
        && !RESERVED.contains(&s.to_ascii_lowercase().as_str())
}

/// Whether `s` can be a literal block: several lines, no tabs or control characters, no line of
/// only spaces, and a first line that does not start with a space.
fn is_block(s: &str) -> bool {
    s.contains('\n')
        && !s.starts_with(' ')
        && !s.ends_with("\n\n")
        && s.chars().all(|c| c == '\n' || !c.is_control())
        && s.lines().all(|l| l.is_empty() || !l.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_block_yaml_with_quoting_where_needed() {
        let doc = json!({
            "AWSTemplateFormatVersion": "2010-09-09",
            "Description": "cutover: a stack",
            "Resources": {
                "Role": {
                    "Type": "AWS::IAM::Role",
                    "Properties": {
                        "Statement": [
                            {"#": "why this", "Effect": "Allow", "Action": ["a:B", "c:D"], "Resource": {"Fn::GetAtt": ["T", "Arn"]}},
                            "yes",
                        ],
                        "Empty": {},
                        "None": [],
                        "Pattern": {"clusterArn": [{"suffix": ":cluster/c"}]},
                        "Text": "{\n  \"a\": \"$.b\"\n}",
                        "N": 5,
                        "On": true,
                    },
                },
            },
        });
        expect_test::expect![[r#"
            AWSTemplateFormatVersion: "2010-09-09"
            Description: "cutover: a stack"
            Resources:
              Role:
                Type: AWS::IAM::Role
                Properties:
                  Statement:
                    # why this
                    - Effect: Allow
                      Action:
                        - a:B
                        - c:D
                      Resource:
                        Fn::GetAtt:
                          - T
                          - Arn
                    - "yes"
                  Empty: {}
                  None: []
                  Pattern:
                    clusterArn:
                      - suffix: ":cluster/c"
                  Text: |-
                    {
                      "a": "$.b"
                    }
                  "N": 5
                  "On": true
        "#]]
        .assert_eq(&to_yaml(&doc));
    }
}
