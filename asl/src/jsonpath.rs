//! JSONPath as Step Functions understands it: `$` (state input) or `$$`
//! (context object) followed by dot or bracket member access, indexes,
//! slices, wildcards, deep scan (`..`), unions and simple filters.
//!
//! A path is *definite* when it can select at most one value (only keys and
//! indexes); such a path yields that value or nothing. Any other path yields
//! an array of every match, possibly empty — the way Step Functions (and the
//! Jayway library behind it) answers `$.items[*]` on an input without
//! `items`.
//!
//! ```
//! use cutover_asl::jsonpath::JsonPath;
//! let p = JsonPath::parse("$.items[1:].id").unwrap();
//! let v = serde_json::json!({"items": [{"id": 1}, {"id": 2}]});
//! assert_eq!(p.select(&v), Some(serde_json::json!([2])));
//! ```

use serde_json::{Map, Value};
use std::cmp::Ordering;

/// A parsed JSONPath expression.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath {
    src: String,
    context: bool,
    segs: Vec<Seg>,
}

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Key(String),
    Index(i64),
    Wildcard,
    Slice(Option<i64>, Option<i64>, Option<i64>),
    Union(Vec<UnionItem>),
    Descend(Option<String>),
    Filter(Filter),
}

#[derive(Debug, Clone, PartialEq)]
enum UnionItem {
    Key(String),
    Index(i64),
}

#[derive(Debug, Clone, PartialEq)]
struct Filter {
    path: Vec<Seg>,
    cmp: Option<(CmpOp, Value)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl JsonPath {
    /// Parse a path starting with `$` or `$$`.
    pub fn parse(src: &str) -> Result<JsonPath, String> {
        let s = src.trim();
        let (context, rest) = if let Some(r) = s.strip_prefix("$$") {
            (true, r)
        } else if let Some(r) = s.strip_prefix('$') {
            (false, r)
        } else {
            return Err(format!("the path '{src}' must start with '$'"));
        };
        let mut p = Parser {
            chars: rest.chars().collect(),
            pos: 0,
            depth: 0,
        };
        let segs = p
            .segments(false)
            .map_err(|e| format!("invalid JSONPath '{src}': {e}"))?;
        Ok(JsonPath {
            src: src.to_string(),
            context,
            segs,
        })
    }

    /// The text the path was parsed from.
    pub fn as_str(&self) -> &str {
        &self.src
    }

    /// Whether the path reads the context object (`$$`).
    pub fn is_context(&self) -> bool {
        self.context
    }

    /// Whether the path selects at most one value (keys and indexes only).
    pub fn is_definite(&self) -> bool {
        self.segs.iter().all(|s| matches!(s, Seg::Key(_) | Seg::Index(_)))
    }

    /// Whether the path is a *reference path* usable as `ResultPath`.
    pub fn is_reference(&self) -> bool {
        !self.context && self.is_definite()
    }

    /// Whether the path is just `$`.
    pub fn is_root(&self) -> bool {
        self.segs.is_empty()
    }

    /// Select from `root`: the value for a definite path (None when absent),
    /// otherwise an array of all matches.
    pub fn select(&self, root: &Value) -> Option<Value> {
        if self.is_definite() {
            let mut cur = root;
            for seg in &self.segs {
                cur = match (seg, cur) {
                    (Seg::Key(k), Value::Object(m)) => m.get(k)?,
                    (Seg::Index(i), Value::Array(a)) => {
                        let i = if *i < 0 { a.len() as i64 + i } else { *i };
                        if i < 0 {
                            return None;
                        }
                        a.get(i as usize)?
                    }
                    _ => return None,
                };
            }
            Some(cur.clone())
        } else {
            let mut out = Vec::new();
            walk(&self.segs, root, &mut out);
            Some(Value::Array(out.into_iter().cloned().collect()))
        }
    }

    /// The Jayway-style normalised form, e.g. `$['a']['b'][0]`, used in
    /// error messages.
    pub fn normalized(&self) -> String {
        let mut s = String::from(if self.context { "$$" } else { "$" });
        for seg in &self.segs {
            match seg {
                Seg::Key(k) => s.push_str(&format!("['{k}']")),
                Seg::Index(i) => s.push_str(&format!("[{i}]")),
                Seg::Wildcard => s.push_str("[*]"),
                _ => return self.src.clone(),
            }
        }
        s
    }

    /// Write `value` into `root` at this reference path, creating objects on
    /// the way. Fails when an intermediate value is not an object (or an
    /// index is out of range).
    pub fn set(&self, root: Value, value: Value) -> Result<Value, String> {
        if self.segs.is_empty() {
            return Ok(value);
        }
        let mut root = root;
        let mut cur = &mut root;
        let last = self.segs.len() - 1;
        for (n, seg) in self.segs.iter().enumerate() {
            match seg {
                Seg::Key(k) => {
                    let Value::Object(m) = cur else {
                        return Err(format!("Unable to apply ReferencePath {}", self.src));
                    };
                    if n == last {
                        m.insert(k.clone(), value);
                        return Ok(root);
                    }
                    cur = m.entry(k.clone()).or_insert_with(|| Value::Object(Map::new()));
                }
                Seg::Index(i) => {
                    let Value::Array(a) = cur else {
                        return Err(format!("Unable to apply ReferencePath {}", self.src));
                    };
                    let idx = if *i < 0 { a.len() as i64 + i } else { *i };
                    if idx < 0 || idx as usize >= a.len() {
                        return Err(format!(
                            "Unable to apply ReferencePath {}: index {i} out of range",
                            self.src
                        ));
                    }
                    if n == last {
                        a[idx as usize] = value;
                        return Ok(root);
                    }
                    cur = &mut a[idx as usize];
                }
                _ => return Err(format!("'{}' is not a reference path", self.src)),
            }
        }
        Ok(root)
    }
}

impl std::fmt::Display for JsonPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.src)
    }
}

fn walk<'v>(segs: &[Seg], v: &'v Value, out: &mut Vec<&'v Value>) {
    let Some((seg, rest)) = segs.split_first() else {
        out.push(v);
        return;
    };
    match seg {
        Seg::Key(k) => {
            if let Some(c) = v.as_object().and_then(|m| m.get(k)) {
                walk(rest, c, out);
            }
        }
        Seg::Index(i) => {
            if let Value::Array(a) = v {
                let i = if *i < 0 { a.len() as i64 + i } else { *i };
                if i >= 0
                    && let Some(c) = a.get(i as usize)
                {
                    walk(rest, c, out);
                }
            }
        }
        Seg::Wildcard => match v {
            Value::Array(a) => a.iter().for_each(|c| walk(rest, c, out)),
            Value::Object(m) => m.values().for_each(|c| walk(rest, c, out)),
            _ => {}
        },
        Seg::Slice(start, end, step) => {
            if let Value::Array(a) = v {
                let len = a.len() as i64;
                let step = step.unwrap_or(1);
                if step <= 0 {
                    return;
                }
                let norm = |x: i64| if x < 0 { (len + x).max(0) } else { x.min(len) };
                let s = start.map(norm).unwrap_or(0);
                let e = end.map(norm).unwrap_or(len);
                let mut i = s;
                while i < e {
                    walk(rest, &a[i as usize], out);
                    i += step;
                }
            }
        }
        Seg::Union(items) => {
            for it in items {
                match (it, v) {
                    (UnionItem::Key(k), Value::Object(m)) => {
                        if let Some(c) = m.get(k) {
                            walk(rest, c, out);
                        }
                    }
                    (UnionItem::Index(i), Value::Array(a)) => {
                        let i = if *i < 0 { a.len() as i64 + i } else { *i };
                        if i >= 0
                            && let Some(c) = a.get(i as usize)
                        {
                            walk(rest, c, out);
                        }
                    }
                    _ => {}
                }
            }
        }
        Seg::Descend(key) => {
            descend(key.as_deref(), rest, v, out);
        }
        Seg::Filter(f) => {
            let children: Vec<&Value> = match v {
                Value::Array(a) => a.iter().collect(),
                Value::Object(m) => m.values().collect(),
                _ => vec![],
            };
            for c in children {
                if f.matches(c) {
                    walk(rest, c, out);
                }
            }
        }
    }
}

fn descend<'v>(key: Option<&str>, rest: &[Seg], v: &'v Value, out: &mut Vec<&'v Value>) {
    match key {
        Some(k) => {
            if let Some(c) = v.as_object().and_then(|m| m.get(k)) {
                walk(rest, c, out);
            }
        }
        None => walk(rest, v, out),
    }
    match v {
        Value::Array(a) => a.iter().for_each(|c| descend(key, rest, c, out)),
        Value::Object(m) => m.values().for_each(|c| descend(key, rest, c, out)),
        _ => {}
    }
}

impl Filter {
    fn matches(&self, item: &Value) -> bool {
        let mut found = Vec::new();
        walk(&self.path, item, &mut found);
        let Some(lhs) = found.first() else {
            return false;
        };
        let Some((op, rhs)) = &self.cmp else {
            return true;
        };
        let ord = match (lhs, rhs) {
            (Value::Number(a), Value::Number(b)) => a
                .as_f64()
                .unwrap_or(f64::NAN)
                .partial_cmp(&b.as_f64().unwrap_or(f64::NAN)),
            (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
            (a, b) if *a == b => Some(Ordering::Equal),
            _ => None,
        };
        match (op, ord) {
            (CmpOp::Ne, None) => true,
            (_, None) => false,
            (CmpOp::Eq, Some(o)) => o == Ordering::Equal,
            (CmpOp::Ne, Some(o)) => o != Ordering::Equal,
            (CmpOp::Lt, Some(o)) => o == Ordering::Less,
            (CmpOp::Le, Some(o)) => o != Ordering::Greater,
            (CmpOp::Gt, Some(o)) => o == Ordering::Greater,
            (CmpOp::Ge, Some(o)) => o != Ordering::Less,
        }
    }
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    depth: usize,
}

/// Filters may nest; bound the recursion so hostile input cannot overflow
/// the stack.
const MAX_DEPTH: usize = 16;

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    /// Parse segments until the end (or, inside a filter, until `)` or an
    /// operator).
    fn segments(&mut self, in_filter: bool) -> Result<Vec<Seg>, String> {
        let mut segs = Vec::new();
        loop {
            match self.peek() {
                None => break,
                Some('.') => {
                    self.pos += 1;
                    if self.eat('.') {
                        if self.eat('*') || self.peek() == Some('[') {
                            segs.push(Seg::Descend(None));
                        } else {
                            let k = self.name()?;
                            segs.push(Seg::Descend(Some(k)));
                        }
                    } else if self.eat('*') {
                        segs.push(Seg::Wildcard);
                    } else {
                        let k = self.name()?;
                        segs.push(Seg::Key(k));
                    }
                }
                Some('[') => {
                    self.pos += 1;
                    segs.push(self.bracket()?);
                }
                Some(c) if in_filter && (c.is_whitespace() || "=!<>)".contains(c)) => break,
                Some(c) => return Err(format!("unexpected character '{c}' at {}", self.pos)),
            }
        }
        Ok(segs)
    }

    fn name(&mut self) -> Result<String, String> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c == '.' || c == '[' || c.is_whitespace() || "=!<>)".contains(c) {
                break;
            }
            self.pos += 1;
        }
        if self.pos == start {
            return Err(format!("empty member name at {start}"));
        }
        Ok(self.chars[start..self.pos].iter().collect())
    }

    fn quoted(&mut self) -> Result<String, String> {
        let q = self.peek().ok_or("unterminated string")?;
        self.pos += 1;
        let mut s = String::new();
        loop {
            let c = self.peek().ok_or("unterminated string")?;
            self.pos += 1;
            // Only an escaped quote is an escape; any other backslash is
            // literal (keys such as `a\"b` are legal).
            if c == '\\' && self.peek() == Some(q) {
                self.pos += 1;
                s.push(q);
            } else if c == q {
                return Ok(s);
            } else {
                s.push(c);
            }
        }
    }

    fn int(&mut self) -> Result<Option<i64>, String> {
        self.skip_ws();
        let start = self.pos;
        if self.peek() == Some('-') {
            self.pos += 1;
        }
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        if self.pos == start {
            return Ok(None);
        }
        let t: String = self.chars[start..self.pos].iter().collect();
        self.skip_ws();
        t.parse::<i64>()
            .map(Some)
            .map_err(|_| format!("bad number '{t}'"))
    }

    fn bracket(&mut self) -> Result<Seg, String> {
        self.skip_ws();
        let seg = match self.peek() {
            Some('*') => {
                self.pos += 1;
                self.skip_ws();
                Seg::Wildcard
            }
            Some('?') => {
                self.pos += 1;
                self.skip_ws();
                if !self.eat('(') {
                    return Err("expected '(' after '?'".into());
                }
                self.skip_ws();
                if !self.eat('@') {
                    return Err("filters must start with '@'".into());
                }
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err("filters nest too deeply".into());
                }
                let path = self.segments(true)?;
                self.depth -= 1;
                self.skip_ws();
                let cmp = if self.peek() == Some(')') {
                    None
                } else {
                    let op = self.op()?;
                    self.skip_ws();
                    let v = self.literal()?;
                    Some((op, v))
                };
                self.skip_ws();
                if !self.eat(')') {
                    return Err("expected ')' closing the filter".into());
                }
                self.skip_ws();
                Seg::Filter(Filter { path, cmp })
            }
            Some('\'') | Some('"') => {
                let mut items = vec![UnionItem::Key(self.quoted()?)];
                self.skip_ws();
                while self.eat(',') {
                    self.skip_ws();
                    items.push(UnionItem::Key(self.quoted()?));
                    self.skip_ws();
                }
                if items.len() == 1 {
                    let Some(UnionItem::Key(k)) = items.pop() else {
                        unreachable!()
                    };
                    Seg::Key(k)
                } else {
                    Seg::Union(items)
                }
            }
            _ => {
                let a = self.int()?;
                if self.eat(':') {
                    let b = self.int()?;
                    let c = if self.eat(':') { self.int()? } else { None };
                    Seg::Slice(a, b, c)
                } else {
                    let a = a.ok_or_else(|| format!("bad bracket expression at {}", self.pos))?;
                    let mut items = vec![UnionItem::Index(a)];
                    while self.eat(',') {
                        let n = self.int()?.ok_or("bad union")?;
                        items.push(UnionItem::Index(n));
                    }
                    if items.len() == 1 {
                        Seg::Index(a)
                    } else {
                        Seg::Union(items)
                    }
                }
            }
        };
        if !self.eat(']') {
            return Err(format!("expected ']' at {}", self.pos));
        }
        Ok(seg)
    }

    fn op(&mut self) -> Result<CmpOp, String> {
        let two: String = self.chars[self.pos..(self.pos + 2).min(self.chars.len())]
            .iter()
            .collect();
        let (op, n) = match two.as_str() {
            "==" => (CmpOp::Eq, 2),
            "!=" => (CmpOp::Ne, 2),
            "<=" => (CmpOp::Le, 2),
            ">=" => (CmpOp::Ge, 2),
            _ if two.starts_with('<') => (CmpOp::Lt, 1),
            _ if two.starts_with('>') => (CmpOp::Gt, 1),
            _ => return Err(format!("expected a comparison operator at {}", self.pos)),
        };
        self.pos += n;
        Ok(op)
    }

    fn literal(&mut self) -> Result<Value, String> {
        match self.peek() {
            Some('\'') | Some('"') => Ok(Value::String(self.quoted()?)),
            _ => {
                let start = self.pos;
                while self.peek().is_some_and(|c| c != ')' && !c.is_whitespace()) {
                    self.pos += 1;
                }
                let t: String = self.chars[start..self.pos].iter().collect();
                serde_json::from_str(&t).map_err(|_| format!("bad filter literal '{t}'"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selects() {
        let v = json!({"a": {"b": [1, 2, 3]}, "items": [{"x": 1}, {"x": 5}]});
        let sel = |p: &str| JsonPath::parse(p).unwrap().select(&v);
        assert_eq!(sel("$.a.b[1]"), Some(json!(2)));
        assert_eq!(sel("$['a']['b'][-1]"), Some(json!(3)));
        assert_eq!(sel("$.a.b[0:2]"), Some(json!([1, 2])));
        assert_eq!(sel("$.items[?(@.x > 2)].x"), Some(json!([5])));
        assert_eq!(sel("$..x"), Some(json!([1, 5])));
        assert_eq!(sel("$.nope"), None);
        assert_eq!(sel("$.nope[*]"), Some(json!([])));
    }

    #[test]
    fn sets() {
        let p = JsonPath::parse("$.a.b").unwrap();
        assert_eq!(p.set(json!({}), json!(1)).unwrap(), json!({"a": {"b": 1}}));
        assert!(p.set(json!({"a": 3}), json!(1)).is_err());
        assert!(JsonPath::parse("a.b").is_err());
        assert!(JsonPath::parse("$.a[").is_err());
    }
}
