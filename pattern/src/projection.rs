//! Parsing only the part of an event that patterns can see.
//!
//! A pattern reads a handful of fields, and an ECS event is ~2 KB of which a pattern needs
//! perhaps 150 bytes. A [`Projection`] is the tree of the field paths of one or more patterns;
//! [`Projection::parse`] reads an event's JSON into a [`Projected`] value that keeps only those
//! paths, borrowing its strings from the input and skipping everything else without
//! allocating. [`Pattern::matches_projected`] decides on it exactly as [`Pattern::matches`]
//! decides on the whole event: the matcher sees the same values at every path it looks at.
//!
//! Objects keep only the keys below them in the tree, so an object where a path ends is kept
//! empty (to a pattern, an object is never a value, whatever it holds); arrays are kept with
//! each element projected, because matching goes through arrays. Syntax is checked for the
//! whole document, as a full parse would: a malformed event is an error, not a smaller event.

use std::borrow::Cow;
use std::fmt;

use serde_json::{Map, Number, Value};

use crate::Pattern;
use crate::dotted::merge_dotted;
use crate::eval::{Doc, Scalar};

/// The union of the field paths of some patterns, as a tree of keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Projection {
    root: Node,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Node {
    /// Keys below, in the order they were added (a handful: a linear scan beats hashing).
    children: Vec<(Box<str>, Node)>,
}

impl Node {
    fn child(&self, key: &str) -> Option<&Node> {
        self.children.iter().find(|(k, _)| &**k == key).map(|(_, n)| n)
    }

    /// The node a dotted key (`a.b`) names, as EventBridge joins nested names; `None` for a
    /// key without dots (see [`Node::child`]) or one the projection does not need.
    fn descend(&self, key: &str) -> Option<&Node> {
        if !key.contains('.') {
            return None;
        }
        key.split('.').try_fold(self, |node, name| node.child(name))
    }

    fn insert(&mut self, path: &[Box<str>]) {
        if let Some((key, rest)) = path.split_first() {
            let at = match self.children.iter().position(|(k, _)| k == key) {
                Some(at) => at,
                None => {
                    self.children.push((key.clone(), Node::default()));
                    self.children.len() - 1
                }
            };
            self.children[at].1.insert(rest);
        }
    }
}

/// An event reduced to the fields of a [`Projection`], borrowing from the bytes it was parsed
/// from (a string is copied only when it holds escapes).
#[derive(Debug, Clone, PartialEq)]
pub enum Projected<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number.
    Number(Number),
    /// A string.
    String(Cow<'a, str>),
    /// An array, every element projected.
    Array(Vec<Projected<'a>>),
    /// An object: only the projected keys, in document order, the last of a repeated key.
    Object(Vec<(Cow<'a, str>, Projected<'a>)>),
}

impl Projected<'_> {
    /// The same fields as a `serde_json::Value` (for messages that show event values).
    pub fn to_value(&self) -> Value {
        match self {
            Projected::Null => Value::Null,
            Projected::Bool(b) => Value::Bool(*b),
            Projected::Number(n) => Value::Number(n.clone()),
            Projected::String(s) => Value::String(s.to_string()),
            Projected::Array(items) => Value::Array(items.iter().map(Projected::to_value).collect()),
            Projected::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_value()))
                    .collect::<Map<_, _>>(),
            ),
        }
    }
}

impl Doc for Projected<'_> {
    fn field(&self, key: &str) -> Option<&Self> {
        match self {
            Projected::Object(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn items(&self) -> Option<&[Self]> {
        match self {
            Projected::Array(items) => Some(items),
            _ => None,
        }
    }

    fn scalar(&self) -> Scalar<'_> {
        match self {
            Projected::Null => Scalar::Null,
            Projected::Bool(b) => Scalar::Bool(*b),
            Projected::Number(n) => Scalar::Number(n),
            Projected::String(s) => Scalar::String(s),
            Projected::Array(_) | Projected::Object(_) => Scalar::Composite,
        }
    }
}

impl Projection {
    /// The projection that keeps every field any of `patterns` names.
    pub fn of<'a>(patterns: impl IntoIterator<Item = &'a Pattern>) -> Projection {
        let mut projection = Projection::default();
        for pattern in patterns {
            for path in pattern.field_paths() {
                projection.root.insert(path);
            }
        }
        projection
    }

    /// Parses `event`, keeping only the projected fields. Fails where a full parse
    /// (`serde_json::from_slice::<Value>`) would: invalid UTF-8, bad syntax, a bad escape or
    /// a lone surrogate, a number out of range, 128 nested containers, trailing characters.
    pub fn parse<'a>(&self, event: &'a [u8]) -> Result<Projected<'a>, serde_json::Error> {
        scan(event, |scanner| scanner.keep(&self.root))
    }
}

/// Reads `event` as one JSON document with `read` (which reads the value), checking UTF-8
/// first and that nothing but whitespace follows.
fn scan<'a, T>(
    event: &'a [u8],
    read: impl FnOnce(&mut Scanner<'a>) -> Result<T, serde_json::Error>,
) -> Result<T, serde_json::Error> {
    let text = match simdutf8::basic::from_utf8(event) {
        Ok(text) => text,
        // The fast check says only "invalid"; the standard one says where.
        Err(_) => {
            return Err(match std::str::from_utf8(event) {
                Err(e) => custom(format!("invalid UTF-8 in the event: {e}")),
                Ok(_) => custom("invalid UTF-8 in the event"),
            });
        }
    };
    let mut scanner = Scanner {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        depth: 0,
    };
    let value = read(&mut scanner)?;
    scanner.whitespace();
    if scanner.pos != scanner.bytes.len() {
        return scanner.fail("trailing characters");
    }
    Ok(value)
}

/// Checks that `event` is one JSON document, failing exactly where a full parse
/// (`serde_json::from_slice::<Value>`) fails, without building anything: the check a host
/// makes at its edge so that a torn event is reported, not silently dropped by a prefilter
/// that never parses it. A quick pass classifies the bytes sixteen at a time and walks only
/// the structural tokens; a document it cannot vouch for (an escape, deep nesting, an error)
/// is stepped over by a scanner that reads strings eight bytes at a time and says what is
/// wrong and where. Both are several times faster than a `serde` pass that ignores the value.
///
/// ```
/// assert!(cutover_pattern::check_json(br#"{"id": "1", "detail": [1, 2.5, null]}"#).is_ok());
/// assert!(cutover_pattern::check_json(br#"{"id": "1", "detail": [1, 2"#).is_err());
/// ```
pub fn check_json(event: &[u8]) -> Result<(), serde_json::Error> {
    // Most events pass the quick pass; the rest (escapes, deep nesting, errors) are stepped
    // over by the scanner: checked the way a full parse reads them, nothing kept.
    if let Ok(text) = simdutf8::basic::from_utf8(event)
        && crate::quick::accepts(text)
    {
        return Ok(());
    }
    scan(event, Scanner::skip)
}

/// Where a number or literal a full parse accepts, starting at byte `at` of `text`, ends, if
/// whitespace, a structural character, a quote or the end follows it: the quick pass's check
/// of each scalar it meets.
pub(crate) fn scalar_end(text: &str, at: usize) -> Option<usize> {
    let mut scanner = Scanner {
        text,
        bytes: text.as_bytes(),
        pos: at,
        depth: 0,
    };
    let ends = scanner.scalar().is_ok()
        && matches!(
            scanner.bytes.get(scanner.pos),
            None | Some(b' ' | b'\n' | b'\r' | b'\t' | b'{' | b'}' | b'[' | b']' | b':' | b',' | b'"')
        );
    ends.then_some(scanner.pos)
}

fn custom(message: impl fmt::Display) -> serde_json::Error {
    <serde_json::Error as serde::de::Error>::custom(message)
}

/// Containers nested this deep are an error, as in `serde_json`.
const MAX_DEPTH: usize = 128;

/// A JSON reader for one event: [`Scanner::keep`] builds the projected value of the fields
/// below a node, [`Scanner::skip`] checks and steps over everything else without building
/// anything. Strings are validated by one scan each; the text is known to be UTF-8.
struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
}

impl<'a> Scanner<'a> {
    fn fail<T>(&self, what: &str) -> Result<T, serde_json::Error> {
        // Where, as `serde_json` says it (line and column, 1-based), for pretty-printed files.
        let before = &self.bytes[..self.pos.min(self.bytes.len())];
        let line = 1 + memchr::memchr_iter(b'\n', before).count();
        let column = before.len() - memchr::memrchr(b'\n', before).map_or(0, |i| i + 1) + 1;
        Err(custom(format_args!("{what} at line {line} column {column}")))
    }

    #[inline(always)]
    fn whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    #[inline(always)]
    fn peek(&mut self) -> Result<u8, serde_json::Error> {
        self.whitespace();
        match self.bytes.get(self.pos) {
            Some(&b) => Ok(b),
            None => self.fail("unexpected end of the event"),
        }
    }

    #[inline(always)]
    fn expect(&mut self, byte: u8, what: &str) -> Result<(), serde_json::Error> {
        if self.peek()? == byte {
            self.pos += 1;
            Ok(())
        } else {
            self.fail(what)
        }
    }

    fn enter(&mut self) -> Result<(), serde_json::Error> {
        self.depth += 1;
        self.pos += 1;
        if self.depth >= MAX_DEPTH {
            return self.fail("recursion limit exceeded");
        }
        Ok(())
    }

    /// After a member or element: `true` if another follows, `false` at the `close` byte.
    #[inline(always)]
    fn more(&mut self, close: u8) -> Result<bool, serde_json::Error> {
        match self.peek()? {
            b',' => {
                self.pos += 1;
                Ok(true)
            }
            b if b == close => {
                self.pos += 1;
                self.depth -= 1;
                Ok(false)
            }
            _ => self.fail("expected `,` or the end of the container"),
        }
    }

    /// Whether a container opened at `self.pos - 1` is empty (and if so, closes it).
    fn empty(&mut self, close: u8) -> Result<bool, serde_json::Error> {
        if self.peek()? == close {
            self.pos += 1;
            self.depth -= 1;
            return Ok(true);
        }
        Ok(false)
    }

    fn keep(&mut self, node: &Node) -> Result<Projected<'a>, serde_json::Error> {
        match self.peek()? {
            b'{' => {
                self.enter()?;
                let mut fields: Vec<(Cow<'a, str>, Projected<'a>)> = Vec::with_capacity(node.children.len());
                let mut dotted = Vec::new();
                if self.empty(b'}')? {
                    return Ok(Projected::Object(fields));
                }
                loop {
                    self.expect(b'"', "expected a key")?;
                    let (start, end, escaped) = self.string()?;
                    self.expect(b':', "expected `:`")?;
                    let raw = &self.text[start..end];
                    let key: Cow<'a, str> = if escaped {
                        Cow::Owned(unescape(raw))
                    } else {
                        Cow::Borrowed(raw)
                    };
                    match node.child(&key) {
                        Some(child) => {
                            let value = self.keep(child)?;
                            // A repeated key replaces the earlier value, as in a full parse.
                            match fields.iter_mut().find(|(k, _)| *k == key) {
                                Some(slot) => slot.1 = value,
                                None => fields.push((key, value)),
                            }
                        }
                        None => match node.descend(&key) {
                            Some(child) => {
                                let value = self.keep(child)?;
                                dotted.push((key, value));
                            }
                            None => self.skip()?,
                        },
                    }
                    if !self.more(b'}')? {
                        // Dotted keys join what plain keys hold, whatever their order.
                        for (key, value) in dotted {
                            merge_dotted(&mut fields, key, value);
                        }
                        return Ok(Projected::Object(fields));
                    }
                }
            }
            b'[' => {
                self.enter()?;
                let mut items = Vec::new();
                if self.empty(b']')? {
                    return Ok(Projected::Array(items));
                }
                loop {
                    items.push(self.keep(node)?);
                    if !self.more(b']')? {
                        return Ok(Projected::Array(items));
                    }
                }
            }
            b'"' => {
                self.pos += 1;
                let (start, end, escaped) = self.string()?;
                let raw = &self.text[start..end];
                Ok(Projected::String(if escaped {
                    Cow::Owned(unescape(raw))
                } else {
                    Cow::Borrowed(raw)
                }))
            }
            b'-' | b'0'..=b'9' => {
                let start = self.pos;
                self.number()?;
                serde_json::from_str::<Number>(&self.text[start..self.pos])
                    .map(Projected::Number)
                    .or_else(|_| self.fail("number out of range"))
            }
            _ => self.literal().map(|v| match v {
                Some(b) => Projected::Bool(b),
                None => Projected::Null,
            }),
        }
    }

    fn skip(&mut self) -> Result<(), serde_json::Error> {
        match self.peek()? {
            b'{' => {
                self.enter()?;
                if self.empty(b'}')? {
                    return Ok(());
                }
                loop {
                    self.expect(b'"', "expected a key")?;
                    self.string()?;
                    self.expect(b':', "expected `:`")?;
                    // Most values of an event are strings: stepped over here, not by a call.
                    if self.peek()? == b'"' {
                        self.pos += 1;
                        self.string()?;
                    } else {
                        self.skip()?;
                    }
                    if !self.more(b'}')? {
                        return Ok(());
                    }
                }
            }
            b'[' => {
                self.enter()?;
                if self.empty(b']')? {
                    return Ok(());
                }
                loop {
                    self.skip()?;
                    if !self.more(b']')? {
                        return Ok(());
                    }
                }
            }
            b'"' => {
                self.pos += 1;
                self.string().map(drop)
            }
            _ => self.scalar(),
        }
    }

    /// Steps over a number or a literal.
    fn scalar(&mut self) -> Result<(), serde_json::Error> {
        if let Some(b'-' | b'0'..=b'9') = self.bytes.get(self.pos) {
            let start = self.pos;
            // A full parse reads every number, and fails on one beyond f64's range as
            // serde_json rounds it (not always as `str::parse` would, near f64::MAX).
            if self.number()? && serde_json::from_str::<Number>(&self.text[start..self.pos]).is_err() {
                return self.fail("number out of range");
            }
            return Ok(());
        }
        self.literal().map(drop)
    }

    /// `true`, `false` (as `Some`) or `null` (as `None`).
    fn literal(&mut self) -> Result<Option<bool>, serde_json::Error> {
        let rest = &self.bytes[self.pos..];
        let (value, len) = if rest.starts_with(b"true") {
            (Some(true), 4)
        } else if rest.starts_with(b"false") {
            (Some(false), 5)
        } else if rest.starts_with(b"null") {
            (None, 4)
        } else {
            return self.fail("expected a value");
        };
        self.pos += len;
        Ok(value)
    }

    /// Steps over a number; `true` if it may lie beyond the exact integers (a fraction, an
    /// exponent, or many digits), where range matters.
    fn number(&mut self) -> Result<bool, serde_json::Error> {
        let start = self.pos;
        let digits = |s: &mut Self| {
            let from = s.pos;
            while let Some(b'0'..=b'9') = s.bytes.get(s.pos) {
                s.pos += 1;
            }
            s.pos - from
        };
        if self.bytes.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        match self.bytes.get(self.pos) {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return self.fail("invalid number"),
        }
        let mut inexact = self.pos - start > 18;
        if self.bytes.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if digits(self) == 0 {
                return self.fail("invalid number");
            }
            inexact = true;
        }
        if let Some(b'e' | b'E') = self.bytes.get(self.pos) {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.bytes.get(self.pos) {
                self.pos += 1;
            }
            if digits(self) == 0 {
                return self.fail("invalid number");
            }
            inexact = true;
        }
        Ok(inexact)
    }

    /// Checks a string whose opening quote was consumed and steps past its closing quote:
    /// returns the byte range of its contents and whether it holds escapes.
    #[inline(always)]
    fn string(&mut self) -> Result<(usize, usize, bool), serde_json::Error> {
        let start = self.pos;
        let mut escaped = false;
        loop {
            let rest = &self.bytes[self.pos..];
            let Some(at) = string_stop(rest) else {
                self.pos = self.bytes.len();
                return self.fail("unexpected end of a string");
            };
            self.pos += at;
            match rest[at] {
                b'"' => {
                    self.pos += 1;
                    return Ok((start, self.pos - 1, escaped));
                }
                b'\\' => {
                    escaped = true;
                    self.escape()?;
                }
                _ => return self.fail("control character in a string"),
            }
        }
    }

    /// Checks one escape at `self.pos` (the backslash) and steps over it.
    fn escape(&mut self) -> Result<(), serde_json::Error> {
        self.pos += 1;
        match self.bytes.get(self.pos) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.pos += 1;
                Ok(())
            }
            Some(b'u') => {
                self.pos += 1;
                let unit = self.hex4()?;
                match unit {
                    0xDC00..=0xDFFF => self.fail("lone trailing surrogate in a \\u escape"),
                    0xD800..=0xDBFF => {
                        if !self.bytes[self.pos..].starts_with(b"\\u") {
                            return self.fail("lone leading surrogate in a \\u escape");
                        }
                        self.pos += 2;
                        match self.hex4()? {
                            0xDC00..=0xDFFF => Ok(()),
                            _ => self.fail("lone leading surrogate in a \\u escape"),
                        }
                    }
                    _ => Ok(()),
                }
            }
            _ => self.fail("invalid escape"),
        }
    }

    fn hex4(&mut self) -> Result<u16, serde_json::Error> {
        let Some(digits) = self.bytes.get(self.pos..self.pos + 4) else {
            return self.fail("unexpected end of a \\u escape");
        };
        let mut unit = 0u16;
        for &d in digits {
            let v = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => return self.fail("invalid \\u escape"),
            };
            unit = unit << 4 | u16::from(v);
        }
        self.pos += 4;
        Ok(unit)
    }
}

/// The index of the first byte that ends a plain run inside a string: `"`, `\` or a control
/// character (which JSON forbids there). Eight bytes at a time: in each word, a byte that is
/// zero after XOR with `"` (or `\`), or below 0x20, sets its top bit in `found`; the lowest
/// set bit is exactly the first such byte (borrows only ever disturb the bytes above it).
#[inline(always)]
fn string_stop(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = ONES * 0x80;
    const QUOTES: u64 = ONES * b'"' as u64;
    const BACKSLASHES: u64 = ONES * b'\\' as u64;
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let (q, b) = (w ^ QUOTES, w ^ BACKSLASHES);
        let found =
            ((q.wrapping_sub(ONES) & !q) | (b.wrapping_sub(ONES) & !b) | (w.wrapping_sub(ONES * 0x20) & !w))
                & HIGH;
        if found != 0 {
            return Some(offset + (found.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|i| offset + i)
}

/// Decodes the escapes of a string the scanner has checked.
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    let hex = |chars: &mut std::str::Chars<'_>| {
        let digits: String = chars.take(4).collect();
        u32::from_str_radix(&digits, 16).unwrap_or(0xFFFD)
    };
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('u') => {
                let unit = hex(&mut chars);
                let code = if (0xD800..0xDC00).contains(&unit) {
                    // Checked: a trailing surrogate follows as `\uXXXX`.
                    chars.nth(1);
                    let low = hex(&mut chars);
                    0x1_0000 + ((unit - 0xD800) << 10) + (low.wrapping_sub(0xDC00) & 0x3FF)
                } else {
                    unit
                };
                out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn projection(patterns: &[Value]) -> Projection {
        let compiled: Vec<Pattern> = patterns.iter().map(|p| Pattern::from_value(p).unwrap()).collect();
        Projection::of(&compiled)
    }

    #[test]
    fn keeps_only_named_paths_through_arrays() {
        let p = projection(&[
            json!({"source": ["aws.ecs"], "detail": {"containers": {"name": ["cats-green"]}}}),
            json!({"detail": {"lastStatus": ["RUNNING"], "overrides": [{"exists": true}]}}),
        ]);
        let event = json!({
            "version": "0", "source": "aws.ecs", "resources": ["a", "b"],
            "detail": {
                "lastStatus": "RUNNING", "group": "service:x",
                "overrides": {"containerOverrides": [{"name": "c"}]},
                "containers": [{"name": "cats-green", "image": "i", "networkInterfaces": [{"a": 1}]}, "odd", 7]
            }
        });
        let text = event.to_string();
        let projected = p.parse(text.as_bytes()).unwrap().to_value();
        assert_eq!(
            projected,
            json!({
                "source": "aws.ecs",
                "detail": {
                    "lastStatus": "RUNNING",
                    "overrides": {},
                    "containers": [{"name": "cats-green"}, "odd", 7]
                }
            })
        );
    }

    #[test]
    fn escaped_and_repeated_keys_read_as_a_full_parse_reads_them() {
        let p = projection(&[json!({"detail": {"a": ["2"]}})]);
        let text = r#"{"det\u0061il": {"a": "1", "a": "2", "\u0062": 3}}"#;
        assert_eq!(
            p.parse(text.as_bytes()).unwrap().to_value(),
            json!({"detail": {"a": "2"}})
        );
        let full: Value = serde_json::from_str(text).unwrap();
        assert_eq!(full["detail"]["a"], "2");
    }

    #[test]
    fn errors_say_where_by_line_and_column() {
        let p = projection(&[json!({"a": ["x"]})]);
        let err = p.parse(b"{\n  \"a\": \"x\",\n  \"b\": tru\n}").unwrap_err();
        assert_eq!(err.to_string(), "expected a value at line 3 column 8");
    }

    #[test]
    fn string_stop_finds_the_first_special_byte_at_every_offset() {
        for special in [b'"', b'\\', 0x00, 0x1f] {
            for at in 0..20 {
                for len in at + 1..24 {
                    let mut bytes = vec![b'a'; len];
                    // Bytes just around the specials: must not be taken for them.
                    bytes.iter_mut().step_by(3).for_each(|b| *b = 0x20);
                    bytes.iter_mut().skip(1).step_by(5).for_each(|b| *b = 0xc3);
                    bytes.iter_mut().skip(2).step_by(7).for_each(|b| *b = b'#');
                    bytes[at] = special;
                    if at + 1 < len {
                        bytes[at + 1] = b'"';
                    }
                    assert_eq!(string_stop(&bytes), Some(at), "{special:#x} at {at} of {len}");
                }
            }
        }
        assert_eq!(string_stop(b"plain text, no stop \xc3\xa9 here!!"), None);
    }

    /// What a projection must produce, computed from a full parse.
    fn reference(v: &Value, node: &Node) -> Value {
        match v {
            Value::Object(map) => Value::Object(
                map.iter()
                    .filter_map(|(k, v)| node.child(k).map(|n| (k.clone(), reference(v, n))))
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(|i| reference(i, node)).collect()),
            other => other.clone(),
        }
    }

    fn tricky() -> Projection {
        projection(&[
            json!({"a": {"b": ["x"]}, "c": [{"exists": true}], "é\"": ["y"]}),
            json!({"a": [{"exists": true}]}),
        ])
    }

    fn agree(p: &Projection, bytes: &[u8]) -> Result<(), String> {
        let full = serde_json::from_slice::<Value>(bytes);
        let projected = p.parse(bytes);
        match (&full, &projected) {
            (Ok(full), Ok(projected)) => {
                let expected = reference(full, &p.root);
                if projected.to_value() != expected {
                    return Err(format!("{} vs {expected}", projected.to_value()));
                }
                Ok(())
            }
            (Err(_), Err(_)) => Ok(()),
            _ => Err(format!(
                "full parse {:?}, projection {:?}",
                full.as_ref().map(drop).map_err(ToString::to_string),
                projected.as_ref().map(drop).map_err(ToString::to_string)
            )),
        }
    }

    #[test]
    fn accepts_and_rejects_exactly_what_a_full_parse_does() {
        let p = tricky();
        for text in [
            r#"{"a": {"b": "x", "z": [1, 2.5e3, -0, true, null]}, "c": "\u00e9\ud83d\ude00\n"}"#,
            r#"{"\u00e9\"": "y", "a": 1, "a": {"b": []}}"#,
            r#"{"a": "\ud800"}"#,
            r#"{"z": "\ud800"}"#,
            r#"{"z": "\udc00"}"#,
            r#"{"z": "\ud800\u0041"}"#,
            r#"{"z": "\ud800\n"}"#,
            r#"{"z": "\x"}"#,
            r#"{"z": "\u12G4"}"#,
            "{\"z\": \"tab\tinside\"}",
            r#"{"z": 1e400}"#,
            r#"{"z": 1.7976931348623158e308}"#,
            r#"{"z": 1797693134862315649e290}"#,
            r#"{"z": 1.7976931348623157e308}"#,
            r#"{"a": {"b": 1.7976931348623158e308}}"#,
            r#"{"z": -1e400}"#,
            r#"{"z": 1e-400}"#,
            r#"{"z": 123456789012345678901234567890}"#,
            r#"{"c": 123456789012345678901234567890}"#,
            r#"{"c": 18446744073709551615}"#,
            r#"{"c": -9223372036854775808}"#,
            r#"{"z": 01}"#,
            r#"{"z": 1.}"#,
            r#"{"z": .5}"#,
            r#"{"z": 1e}"#,
            r#"{"z": -}"#,
            r#"{"z": tru}"#,
            r#"{"z": nulll}"#,
            r#"{"z": [1,]}"#,
            r#"{"z": [1 2]}"#,
            r#"{"z": {"k" 1}}"#,
            r#"{"z": {,}}"#,
            r#"{"z": 1,}"#,
            r#"{"a": {"b": "x"}} {}"#,
            " \t\r\n{} \n",
            "",
            "   ",
            "[]",
            r#""just a string""#,
            "nul",
        ] {
            agree(&p, text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        for n in [127, 128, 129] {
            agree(&p, deep(n).as_bytes()).unwrap_or_else(|e| panic!("depth {n}: {e}"));
        }
    }

    mod random {
        use super::*;
        use proptest::prelude::*;

        fn key() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("a".to_owned()),
                Just("b".to_owned()),
                Just("c".to_owned()),
                Just("é\"".to_owned()),
                "[a-z]{1,3}",
            ]
        }

        fn value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(Value::from),
                "(\\PC|[\"\\\\\u{1}\n/é😀]){0,8}".prop_map(Value::from),
            ];
            leaf.prop_recursive(4, 32, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::vec((key(), inner), 0..4)
                        .prop_map(|kv| Value::Object(kv.into_iter().collect())),
                ]
            })
        }

        /// Serialises with some characters escaped that need not be (`\/`, `\uXXXX`).
        fn escaped(v: &Value, mask: &[bool]) -> String {
            let text = v.to_string();
            let mut out = String::new();
            let mut in_string = false;
            let mut escape = false;
            for (i, c) in text.chars().enumerate() {
                let force = !mask.is_empty() && mask[i % mask.len()];
                if in_string && !escape && c != '"' && c != '\\' && force {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    }
                    continue;
                }
                out.push(c);
                if escape {
                    escape = false;
                } else if c == '\\' && in_string {
                    escape = true;
                } else if c == '"' {
                    in_string = !in_string;
                }
            }
            out
        }

        /// Inserts, removes or cuts bytes at the given places.
        fn damage(bytes: &mut Vec<u8>, edits: &[(prop::sample::Index, u8, u8)]) {
            for (at, byte, kind) in edits {
                let i = at.index(bytes.len() + 1);
                match kind {
                    0 => bytes.insert(i, *byte),
                    1 if i < bytes.len() => {
                        bytes.remove(i);
                    }
                    _ => bytes.truncate(i),
                }
            }
        }

        fn edge_check_agrees(bytes: &[u8]) -> Result<(), String> {
            let full = serde_json::from_slice::<Value>(bytes).is_ok();
            if check_json(bytes).is_ok() == full {
                return Ok(());
            }
            Err(format!(
                "full parse accepts: {full}, edge check does not agree: {}",
                String::from_utf8_lossy(bytes)
            ))
        }

        /// The quick pass accepts only what the full parse accepts, and accepts all of that
        /// when there is no escape (a backslash) and no deep nesting to leave to the scanner.
        fn quick_agrees(bytes: &[u8]) -> Result<(), String> {
            let full = serde_json::from_slice::<Value>(bytes).is_ok();
            let quick = std::str::from_utf8(bytes).is_ok_and(crate::quick::accepts);
            let vouchable = !bytes.contains(&b'\\');
            if quick == full || (!quick && !vouchable) {
                return Ok(());
            }
            Err(format!(
                "full parse accepts: {full}, quick pass: {quick}: {}",
                String::from_utf8_lossy(bytes)
            ))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn valid_events_project_as_the_full_parse_does(
                v in value(),
                mask in prop::collection::vec(prop::bool::weighted(0.2), 0..5),
            ) {
                let p = tricky();
                prop_assert_eq!(agree(&p, v.to_string().as_bytes()), Ok(()));
                prop_assert_eq!(agree(&p, escaped(&v, &mask).as_bytes()), Ok(()));
            }

            #[test]
            fn the_edge_check_accepts_exactly_what_the_full_parse_accepts(
                v in value(),
                mask in prop::collection::vec(prop::bool::weighted(0.2), 0..5),
                edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 0..4),
            ) {
                let mut bytes = escaped(&v, &mask).into_bytes();
                prop_assert_eq!(edge_check_agrees(&bytes), Ok(()));
                damage(&mut bytes, &edits);
                prop_assert_eq!(edge_check_agrees(&bytes), Ok(()));
            }

            #[test]
            fn the_edge_check_agrees_with_the_full_parse_on_any_bytes(
                bytes in prop::collection::vec(
                    prop_oneof![Just(b'{'), Just(b'}'), Just(b'['), Just(b']'), Just(b'"'), Just(b':'),
                        Just(b','), Just(b'\\'), Just(b'1'), Just(b'-'), Just(b'e'), Just(b'.'), Just(b' '),
                        Just(b'n'), Just(b'u'), Just(b'l'), any::<u8>()],
                    0..24,
                ),
            ) {
                prop_assert_eq!(edge_check_agrees(&bytes), Ok(()));
            }

            #[test]
            fn the_quick_pass_accepts_every_valid_event_without_an_escape(v in value(), pretty in any::<bool>()) {
                let text = if pretty { serde_json::to_string_pretty(&v).unwrap() } else { v.to_string() };
                prop_assert_eq!(quick_agrees(text.as_bytes()), Ok(()));
            }

            #[test]
            fn the_quick_pass_vouches_only_for_what_the_full_parse_accepts(
                v in value(),
                edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..4),
                noise in prop::collection::vec(
                    prop_oneof![Just(b'{'), Just(b'}'), Just(b'['), Just(b']'), Just(b'"'), Just(b':'),
                        Just(b','), Just(b'1'), Just(b'-'), Just(b'e'), Just(b'.'), Just(b' '), Just(b'\n'),
                        Just(b't'), Just(b'r'), Just(b'u'), Just(b'e'), Just(b'\x01'), any::<u8>()],
                    0..100,
                ),
            ) {
                let mut bytes = v.to_string().into_bytes();
                damage(&mut bytes, &edits);
                prop_assert_eq!(quick_agrees(&bytes), Ok(()));
                prop_assert_eq!(quick_agrees(&noise), Ok(()));
            }

            #[test]
            fn damaged_events_fail_as_the_full_parse_does(
                v in value(),
                edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..4),
            ) {
                let p = tricky();
                let mut bytes = v.to_string().into_bytes();
                damage(&mut bytes, &edits);
                prop_assert_eq!(agree(&p, &bytes), Ok(()), "{}", String::from_utf8_lossy(&bytes));
            }
        }
    }

    #[test]
    fn malformed_events_fail_as_a_full_parse_does() {
        let p = projection(&[json!({"a": ["x"]})]);
        for bad in [
            &b"{"[..],
            b"{\"a\": \"x\"} trailing",
            b"{\"skipped\": \"\xff\", \"a\": \"x\"}",
            b"{\"skipped\": [1, }",
            b"",
        ] {
            assert!(serde_json::from_slice::<Value>(bad).is_err());
            assert!(p.parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(
            p.parse(b" [1, {\"a\": null}] ").unwrap().to_value(),
            json!([1, {"a": null}])
        );
    }
}
