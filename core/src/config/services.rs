//! `[services.<name>]`: one pipeline set for many services. Each table holds what differs per
//! service; the stages refer to its values with `{service.<key>}`:
//!
//! ```toml
//! [services.cats]
//! cluster = "catsndogsECScluster"
//! green_container = "cats-green"
//! record = "cats.catsndogs.lol"
//!
//! [services.dogs]
//! cluster = "catsndogsECScluster"
//! green_container = "dogs-green"
//! record = "dogs.catsndogs.lol"
//!
//! [[pipelines.ecs-events.stages]]
//! type = "filter"
//! cluster = "{service.cluster}"
//! green = { container = "{service.green_container}" }
//! ```
//!
//! A stage whose table names `{service.…}` is loaded once per service with the values put in
//! (a string that is exactly one placeholder takes the value with its type: a table, a number),
//! so every service's configuration is checked like a hand-written one and a problem names the
//! service. At run time the stage hands each event to its service's instance
//! (`crate::service::PerService`): a filtering stage decides which service an event belongs to
//! (the first whose instance passes it; none: dropped, saying why for each), later stages and
//! Task handlers read it from the event's context or its `service` field. Stages that render
//! templates per event (`register_stage!(…, per_event_templates)`: an execution input, a
//! dedup key, a notify message) are not copied: they read `{service.…}` from the context.
//!
//! `name` is every service's own name; a service may not define it.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::load::Problems;
use crate::path::FieldPath;

/// The key of the event context that holds the service an event belongs to (its table, with
/// `name`): what `{service.…}` reads.
pub const SERVICE_CONTEXT: &str = "service";

/// The file's `[services.<name>]` tables, by name.
#[derive(Debug, Clone, Default)]
pub struct Services {
    by_name: BTreeMap<String, Arc<Value>>,
}

impl Services {
    /// Whether the file has no services table (pipelines then work as they always did).
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// How many services there are.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// The service names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// One service's values (an object with its `name`).
    pub fn get(&self, name: &str) -> Option<&Arc<Value>> {
        self.by_name.get(name)
    }

    /// Every service with its values.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<Value>)> {
        self.by_name.iter().map(|(k, v)| (k.as_str(), v))
    }
}

/// Reads `[services]`, reporting each bad name or table.
pub(super) fn parse(value: Value, problems: &mut Problems<'_>) -> Services {
    let Value::Object(tables) = value else {
        problems.file(Some("services"), "expected tables [services.NAME]");
        return Services::default();
    };
    let mut by_name = BTreeMap::new();
    for (name, table) in tables {
        let field = format!("services.{name}");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            problems.file(
                Some(&field),
                "a service name may hold only letters, digits, '-' and '_' (it names rollouts and resources)",
            );
            continue;
        }
        let Value::Object(mut values) = table else {
            problems.file(
                Some(&field),
                format!("expected a table [services.{name}] of the values that differ per service"),
            );
            continue;
        };
        if values.contains_key("name") {
            problems.file(
                Some(&format!("{field}.name")),
                "`name` is the service's table name; remove it, or call the value something else",
            );
        }
        values.insert("name".into(), Value::String(name.clone()));
        by_name.insert(name, Arc::new(Value::Object(values)));
    }
    Services { by_name }
}

/// A `{service.<path>}` placeholder found in a stage's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reference {
    /// Where in the stage's table (`router.record`).
    pub field: String,
    /// What it reads of the service (`record`).
    pub path: String,
}

/// Every `{service.…}` placeholder in `value`, with the field it sits in.
pub(super) fn references(value: &Value) -> Vec<Reference> {
    let mut out = Vec::new();
    walk_strings(value, &mut String::new(), &mut |field, s| {
        for (_, _, path) in placeholders(s) {
            out.push(Reference {
                field: field.to_owned(),
                path: path.to_owned(),
            });
        }
    });
    out
}

/// The fields whose whole value is one `{service.…}` placeholder, with its key.
pub(super) fn whole_fields(value: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    walk_strings(value, &mut String::new(), &mut |field, s| {
        if let [(0, end, path)] = placeholders(s).as_slice()
            && *end == s.len()
        {
            out.push((field.to_owned(), (*path).to_owned()));
        }
    });
    out
}

fn walk_strings(value: &Value, field: &mut String, visit: &mut impl FnMut(&str, &str)) {
    match value {
        Value::String(s) => visit(field, s),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = field.len();
                field.push_str(&format!("[{i}]"));
                walk_strings(item, field, visit);
                field.truncate(len);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                let len = field.len();
                if !field.is_empty() {
                    field.push('.');
                }
                field.push_str(k);
                walk_strings(v, field, visit);
                field.truncate(len);
            }
        }
        _ => {}
    }
}

/// The `{service.<path>}` placeholders of a string: (start, end, path). `{{` escapes a brace,
/// as in templates.
fn placeholders(s: &str) -> Vec<(usize, usize, &str)> {
    const OPEN: &str = "{service.";
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = s[from..].find(OPEN).map(|i| from + i) {
        let escaped = s[..at].ends_with('{') && !s[..at].ends_with("{{{");
        let Some(end) = s[at..].find('}').map(|e| at + e) else {
            break;
        };
        if !escaped {
            out.push((at, end + 1, s[at + OPEN.len()..end].trim()));
        }
        from = end + 1;
    }
    out
}

/// The value `path` names in a service's table.
fn lookup<'v>(service: &'v Value, path: &str) -> Option<&'v Value> {
    path.parse::<FieldPath>().ok()?.lookup(service)
}

/// Whether a service defines `path` (what validation checks for every reference).
pub(super) fn defines(service: &Value, path: &str) -> bool {
    lookup(service, path).is_some_and(|v| !v.is_null())
}

/// `value` with every `{service.…}` placeholder replaced by the service's value; the first
/// problem names the field.
pub(super) fn substitute(value: &Value, service: &Value) -> Result<Value, (String, String)> {
    fn go(value: &Value, service: &Value, field: &mut String) -> Result<Value, (String, String)> {
        Ok(match value {
            Value::String(s) => {
                let found = placeholders(s);
                if found.is_empty() {
                    return Ok(value.clone());
                }
                let missing = |path: &str| {
                    (
                        field.clone(),
                        format!("names {{service.{path}}}, which the service does not define"),
                    )
                };
                if let [(0, end, path)] = found.as_slice()
                    && *end == s.len()
                {
                    return lookup(service, path).cloned().ok_or_else(|| missing(path));
                }
                let mut out = String::new();
                let mut last = 0;
                for (start, end, path) in found {
                    out.push_str(&s[last..start]);
                    match lookup(service, path) {
                        Some(Value::String(v)) => out.push_str(v),
                        Some(v @ (Value::Number(_) | Value::Bool(_))) => out.push_str(&v.to_string()),
                        Some(_) => {
                            return Err((
                                field.clone(),
                                format!(
                                    "{{service.{path}}} is a table or list: it can only stand alone in a string, \
                                     not inside other text"
                                ),
                            ));
                        }
                        None => return Err(missing(path)),
                    }
                    last = end;
                }
                out.push_str(&s[last..]);
                Value::String(out)
            }
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let len = field.len();
                    field.push_str(&format!("[{i}]"));
                    out.push(go(item, service, field)?);
                    field.truncate(len);
                }
                Value::Array(out)
            }
            Value::Object(map) => {
                let mut out = Map::new();
                for (k, v) in map {
                    let len = field.len();
                    if !field.is_empty() {
                        field.push('.');
                    }
                    field.push_str(k);
                    out.insert(k.clone(), go(v, service, field)?);
                    field.truncate(len);
                }
                Value::Object(out)
            }
            other => other.clone(),
        })
    }
    go(value, service, &mut String::new())
}

/// The event pattern matching an event of any of the services: what every service's pattern
/// shares stays as it is, the rest becomes one `$or` branch per service (EventBridge's `$or`
/// keeps the rule one rule however many services there are).
pub(crate) fn any_of(patterns: Vec<Value>) -> Option<Value> {
    let mut patterns = patterns.into_iter();
    let first = patterns.next()?;
    let rest: Vec<Value> = patterns.collect();
    if rest.iter().all(|p| *p == first) {
        return Some(first);
    }
    let mut shared = first.clone();
    for p in &rest {
        shared = common(&shared, p).unwrap_or(Value::Object(Map::new()));
    }
    let mut branches: Vec<Value> = Vec::new();
    for p in std::iter::once(&first).chain(&rest) {
        let left = without(p, &shared).unwrap_or(Value::Object(Map::new()));
        // A service whose pattern is the shared part matches everything the others do.
        if left.as_object().is_some_and(Map::is_empty) {
            return Some(shared);
        }
        if !branches.contains(&left) {
            branches.push(left);
        }
    }
    let mut out = match shared {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    out.insert("$or".into(), Value::Array(branches));
    Some(Value::Object(out))
}

/// The fields two patterns constrain identically (objects recursively; `$or` never).
fn common(a: &Value, b: &Value) -> Option<Value> {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            let mut out = Map::new();
            for (k, va) in a {
                if k == "$or" {
                    continue;
                }
                if let Some(c) = b.get(k).and_then(|vb| common(va, vb)) {
                    out.insert(k.clone(), c);
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        (a, b) if a == b => Some(a.clone()),
        _ => None,
    }
}

/// `p` without what `shared` holds.
fn without(p: &Value, shared: &Value) -> Option<Value> {
    match (p, shared) {
        (Value::Object(p), Value::Object(s)) => {
            let mut out = Map::new();
            for (k, v) in p {
                match s.get(k) {
                    Some(sv) => {
                        if let Some(left) = without(v, sv) {
                            out.insert(k.clone(), left);
                        }
                    }
                    None => {
                        out.insert(k.clone(), v.clone());
                    }
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        (p, s) if p == s => None,
        (p, _) => Some(p.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn placeholders_are_replaced_with_their_values_and_types() {
        let cats = json!({"name": "cats", "record": "cats.example", "port": 8080,
                          "alias": {"dns_name": "a.elb"}});
        let table = json!({"router": {"record": "{service.record}", "alias": "{service.alias}",
                          "url": "http://{service.record}:{service.port}/", "keep": "{detail.group}",
                          "escaped": "{{service.record}}"}});
        let out = substitute(&table, &cats).unwrap();
        assert_eq!(
            out,
            json!({"router": {"record": "cats.example", "alias": {"dns_name": "a.elb"},
                  "url": "http://cats.example:8080/", "keep": "{detail.group}",
                  "escaped": "{{service.record}}"}})
        );
        let (field, message) =
            substitute(&json!({"probe": {"url": "{service.health_url}"}}), &cats).unwrap_err();
        assert_eq!(field, "probe.url");
        assert!(message.contains("{service.health_url}"), "{message}");
        let (_, message) = substitute(&json!({"x": "at {service.alias}"}), &cats).unwrap_err();
        assert!(message.contains("stand alone"), "{message}");
        let refs = references(&table);
        assert_eq!(refs.len(), 4, "{refs:?}");
        assert_eq!(refs[0].field, "router.record");
    }

    #[test]
    fn service_patterns_share_what_they_can_and_or_the_rest() {
        let cats = json!({"source": ["aws.ecs"], "detail": {"clusterArn": [{"suffix": "/c"}], "group": ["service:cats"]}});
        let dogs = json!({"source": ["aws.ecs"], "detail": {"clusterArn": [{"suffix": "/c"}], "group": ["service:dogs"]}});
        assert_eq!(
            any_of(vec![cats.clone(), dogs]).unwrap(),
            json!({"source": ["aws.ecs"], "detail": {"clusterArn": [{"suffix": "/c"}]},
                   "$or": [{"detail": {"group": ["service:cats"]}}, {"detail": {"group": ["service:dogs"]}}]})
        );
        assert_eq!(any_of(vec![cats.clone(), cats.clone()]).unwrap(), cats);
        let broad = json!({"source": ["aws.ecs"]});
        assert_eq!(any_of(vec![cats, broad.clone()]).unwrap(), broad);
    }
}
