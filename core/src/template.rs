//! Field templates: `"{detail.clusterArn}|{detail.group}"` rendered against an event.
//!
//! A [`Template`] is a string with `{path}` placeholders (write `{{` and `}}` for literal
//! braces). A [`ValueTemplate`] is any JSON value whose strings are templates; a string that is
//! exactly one placeholder keeps the type of the field it names, so
//! `{ version = "{detail.version}" }` renders a number.
//!
//! ```
//! use cutover_core::{Event, Template};
//!
//! let t: Template = "{detail.group}@{detail.version}".parse().unwrap();
//! let e = Event::from_bytes(br#"{"detail":{"group":"service:cats","version":3}}"#.to_vec());
//! assert_eq!(t.render(&e).unwrap(), "service:cats@3");
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::event::{Event, EventError};
use crate::path::{FieldPath, PathError};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Field(FieldPath),
}

/// A string with `{path}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    pieces: Vec<Piece>,
}

/// Why a template could not be compiled or rendered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// The template text is malformed.
    #[error("invalid template {template:?}: {reason}")]
    Syntax {
        /// The template.
        template: String,
        /// What is wrong.
        reason: String,
    },
    /// A placeholder's path is malformed.
    #[error(transparent)]
    Path(#[from] PathError),
    /// The event has no such field.
    #[error("the event has no field {path:?} (named in template {template:?})")]
    Missing {
        /// The missing path.
        path: String,
        /// The template.
        template: String,
    },
    /// The event is not JSON.
    #[error(transparent)]
    Event(#[from] EventError),
}

impl Template {
    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The paths the template reads.
    pub fn fields(&self) -> impl Iterator<Item = &FieldPath> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Field(f) => Some(f),
            Piece::Literal(_) => None,
        })
    }

    /// The single path when the whole template is exactly one placeholder.
    pub fn single_field(&self) -> Option<&FieldPath> {
        match self.pieces.as_slice() {
            [Piece::Field(f)] => Some(f),
            _ => None,
        }
    }

    /// Renders against an event; a missing field is an error naming it.
    pub fn render(&self, event: &Event) -> Result<String, TemplateError> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Literal(s) => out.push_str(s),
                Piece::Field(path) => {
                    let value = event.lookup(path)?.ok_or_else(|| TemplateError::Missing {
                        path: path.to_string(),
                        template: self.text.clone(),
                    })?;
                    match value {
                        Value::String(s) => out.push_str(s),
                        other => out.push_str(&other.to_string()),
                    }
                }
            }
        }
        Ok(out)
    }
}

impl FromStr for Template {
    type Err = TemplateError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = |reason: &str| TemplateError::Syntax {
            template: text.to_owned(),
            reason: reason.to_owned(),
        };
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|&(_, c)| c) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|&(_, c)| c) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let end = text[i..].find('}').map(|e| i + e).ok_or_else(|| {
                        syntax("'{' without a closing '}' (write '{{' for a literal brace)")
                    })?;
                    let path: FieldPath = text[i + 1..end].trim().parse()?;
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Field(path));
                    while chars.peek().is_some_and(|&(j, _)| j <= end) {
                        chars.next();
                    }
                }
                '}' => {
                    return Err(syntax(
                        "'}' without an opening '{' (write '}}' for a literal brace)",
                    ));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Ok(Self {
            text: text.to_owned(),
            pieces,
        })
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Template {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A JSON value whose strings are templates.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueTemplate {
    source: Value,
    compiled: Compiled,
}

#[derive(Debug, Clone, PartialEq)]
enum Compiled {
    Plain(Value),
    Text(Template),
    Array(Vec<Compiled>),
    Object(Vec<(String, Compiled)>),
}

impl ValueTemplate {
    /// Compiles every string of `value` as a template.
    pub fn new(value: Value) -> Result<Self, TemplateError> {
        let compiled = compile(&value)?;
        Ok(Self {
            source: value,
            compiled,
        })
    }

    /// The value as written.
    pub fn source(&self) -> &Value {
        &self.source
    }

    /// Every path the template reads.
    pub fn fields(&self) -> Vec<&FieldPath> {
        let mut out = Vec::new();
        collect(&self.compiled, &mut out);
        out
    }

    /// Renders against an event.
    pub fn render(&self, event: &Event) -> Result<Value, TemplateError> {
        render(&self.compiled, event)
    }
}

fn compile(value: &Value) -> Result<Compiled, TemplateError> {
    Ok(match value {
        Value::String(s) if s.contains(['{', '}']) => Compiled::Text(s.parse()?),
        Value::Array(items) => Compiled::Array(items.iter().map(compile).collect::<Result<_, _>>()?),
        Value::Object(map) => Compiled::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), compile(v)?)))
                .collect::<Result<_, TemplateError>>()?,
        ),
        other => Compiled::Plain(other.clone()),
    })
}

fn collect<'a>(c: &'a Compiled, out: &mut Vec<&'a FieldPath>) {
    match c {
        Compiled::Plain(_) => {}
        Compiled::Text(t) => out.extend(t.fields()),
        Compiled::Array(items) => items.iter().for_each(|i| collect(i, out)),
        Compiled::Object(entries) => entries.iter().for_each(|(_, v)| collect(v, out)),
    }
}

fn render(c: &Compiled, event: &Event) -> Result<Value, TemplateError> {
    Ok(match c {
        Compiled::Plain(v) => v.clone(),
        Compiled::Text(t) => match t.single_field() {
            Some(path) => event
                .lookup(path)?
                .cloned()
                .ok_or_else(|| TemplateError::Missing {
                    path: path.to_string(),
                    template: t.as_str().to_owned(),
                })?,
            None => Value::String(t.render(event)?),
        },
        Compiled::Array(items) => {
            Value::Array(items.iter().map(|i| render(i, event)).collect::<Result<_, _>>()?)
        }
        Compiled::Object(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| Ok((k.clone(), render(v, event)?)))
                .collect::<Result<_, TemplateError>>()?,
        ),
    })
}

impl Serialize for ValueTemplate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.source.serialize(s)
    }
}

impl<'de> Deserialize<'de> for ValueTemplate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ValueTemplate::new(Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> Event {
        Event::from_value(
            json!({"detail": {"group": "service:cats", "version": 3, "containers": [{"name": "cats-green"}]}}),
        )
    }

    #[test]
    fn renders_strings_and_numbers() {
        let t: Template = "{detail.group}:{detail.version} {{x}}".parse().unwrap();
        assert_eq!(t.render(&event()).unwrap(), "service:cats:3 {x}");
    }

    #[test]
    fn missing_field_names_the_path() {
        let t: Template = "{detail.gruop}".parse().unwrap();
        let err = t.render(&event()).unwrap_err().to_string();
        assert!(err.contains("detail.gruop"), "{err}");
    }

    #[test]
    fn syntax_errors_are_explained() {
        assert!(
            "{detail"
                .parse::<Template>()
                .unwrap_err()
                .to_string()
                .contains("closing")
        );
        assert!(
            "a}".parse::<Template>()
                .unwrap_err()
                .to_string()
                .contains("opening")
        );
    }

    #[test]
    fn value_templates_keep_types_of_single_placeholders() {
        let t = ValueTemplate::new(
            json!({"v": "{detail.version}", "name": "x-{detail.containers[0].name}", "n": 1}),
        )
        .unwrap();
        assert_eq!(
            t.render(&event()).unwrap(),
            json!({"v": 3, "name": "x-cats-green", "n": 1})
        );
        assert_eq!(t.fields().len(), 2);
    }
}
