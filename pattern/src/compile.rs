//! Validation and compilation of a pattern into branches to match.
//!
//! The checks run in document order and stop at the first problem, as
//! EventBridge does, so the message is the one AWS would give. The result is
//! the pattern's branches: each `$or` multiplies the branches built so far,
//! and each branch is a list of leaves (a [`Leaf`] is the array of
//! alternatives given for one path), sorted by path.

use crate::cidr::IpRange;
use crate::error::{PatternError, fail};
use crate::raw::Raw;
use crate::wildcard::Wildcard;
use serde_json::Number;

/// Largest magnitude EventBridge accepts in numeric comparisons.
const FIVE_BILLION: f64 = 5e9;

/// Operator names that may not be used as field names inside `$or`.
const RESERVED_IN_OR: &[&str] = &[
    "equals-ignore-case",
    "prefix",
    "suffix",
    "anything-but",
    "exists",
    "wildcard",
    "numeric",
    "cidr",
    "=",
    "<",
    "<=",
    ">",
    ">=",
    "regex",
    "not-wildcard",
    "not-equals-ignore-case",
    "date-after",
    "date-on-or-after",
    "date-before",
    "date-on-or-before",
    "in-date-range",
    "ip-address-in-range",
    "ip-address-not-in-range",
];

/// Most `$or` combinations one pattern may expand to.
pub(crate) const MAX_BRANCHES: usize = 1024;

/// One way for the pattern to match (the pattern with its `$or`s expanded):
/// every field must match, fields sorted by their dotted path, as
/// EventBridge orders them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Branch {
    pub(crate) fields: Vec<BranchField>,
}

/// A leaf of the pattern and the keys leading to it.
#[derive(Debug, Clone)]
pub(crate) struct BranchField {
    pub(crate) path: Box<[Box<str>]>,
    pub(crate) leaf: Leaf,
    /// How many leading keys of `path` later fields of the branch share.
    /// Only arrays met within that prefix can bind a later field, so
    /// matching need not try every value below it.
    pub(crate) shared: usize,
}

impl Branch {
    /// Sets the leaf at `path`; a later leaf at the same path replaces the
    /// earlier one, as a repeated key does in EventBridge.
    fn put(&mut self, path: &[Box<str>], leaf: &Leaf) {
        match self.fields.iter_mut().find(|f| *f.path == *path) {
            Some(f) => f.leaf = leaf.clone(),
            None => self.fields.push(BranchField {
                path: path.into(),
                leaf: leaf.clone(),
                shared: 0,
            }),
        }
    }

    /// Puts the fields in EventBridge's order and computes `shared`.
    fn finish(&mut self) {
        self.fields.sort_by_cached_key(|f| f.path.join("."));
        for i in 0..self.fields.len() {
            let (head, later) = self.fields.split_at_mut(i + 1);
            let field = &mut head[i];
            field.shared = later
                .iter()
                .map(|l| {
                    field
                        .path
                        .iter()
                        .zip(l.path.iter())
                        .take_while(|(a, b)| a == b)
                        .count()
                })
                .max()
                .unwrap_or(0);
        }
    }
}

/// A pattern array: the field matches if any alternative does.
#[derive(Debug, Clone)]
pub(crate) struct Leaf {
    pub(crate) alternatives: Vec<Matcher>,
    /// Some alternative needs a value (anything but `exists: false`).
    pub(crate) has_positive: bool,
    /// Some alternative is `exists: false`.
    pub(crate) has_absent: bool,
}

/// One alternative inside a pattern array.
#[derive(Debug, Clone)]
pub(crate) enum Matcher {
    /// A string value (compared byte for byte).
    String(Box<str>),
    /// A string value that is an IP address: compared as an address.
    Ip(IpRange, Box<str>),
    /// A number value, with its comparable key when within ±5e9: equal if
    /// the keys are equal or the numbers are written alike.
    Number(Number, Option<i64>),
    /// `true` / `false`.
    Bool(bool),
    /// `null`.
    Null,
    /// `{"prefix": "..."}`.
    Prefix(Box<str>),
    /// `{"suffix": "..."}`.
    Suffix(Box<str>),
    /// `{"equals-ignore-case": "..."}`, stored lower-cased.
    EqualsIgnoreCase(Box<str>),
    /// `{"prefix": {"equals-ignore-case": "..."}}`, stored lower-cased.
    PrefixIgnoreCase(Box<str>),
    /// `{"suffix": {"equals-ignore-case": "..."}}`, stored lower-cased.
    SuffixIgnoreCase(Box<str>),
    /// `{"wildcard": "..."}`.
    Wildcard(Wildcard),
    /// `{"numeric": [...]}`.
    Numeric(NumRange),
    /// `{"exists": bool}`.
    Exists(bool),
    /// `{"cidr": "..."}`.
    Cidr(IpRange),
    /// `{"anything-but": ...}`.
    AnythingBut(AnythingBut),
}

/// What an `anything-but` excludes; every other value (of any type) matches.
#[derive(Debug, Clone)]
pub(crate) enum AnythingBut {
    Strings(Vec<Box<str>>),
    Numbers(Vec<i64>),
    IgnoreCase(Vec<Box<str>>),
    Prefixes(Vec<Box<str>>),
    Suffixes(Vec<Box<str>>),
    Wildcards(Vec<Wildcard>),
}

/// A numeric interval over comparable keys (see [`comparable_key`]);
/// `None` bounds are open-ended, the flag says whether a bound is included.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NumRange {
    pub(crate) low: Option<(i64, bool)>,
    pub(crate) high: Option<(i64, bool)>,
}

/// EventBridge compares numbers within ±5e9 at six decimal places: the key
/// is `(5e9 + f) * 1e6` truncated, computed in the same floating-point
/// steps, so that values AWS considers equal have equal keys.
pub(crate) fn comparable_key(f: f64) -> Option<i64> {
    if (-FIVE_BILLION..=FIVE_BILLION).contains(&f) {
        Some((1e6 * (FIVE_BILLION + f)) as i64)
    } else {
        None
    }
}

/// Validates and compiles the whole pattern into its branches.
///
/// This follows EventBridge's reading of the pattern token by token, so the
/// first problem in document order is the one reported, and `$or` and
/// repeated keys combine the way they do there.
pub(crate) fn compile(raw: &Raw) -> Result<Vec<Branch>, PatternError> {
    let Raw::Object(entries) = raw else {
        return fail("Filter is not an object");
    };
    let mut branches = Vec::new();
    compile_object(&mut branches, &mut Vec::new(), entries, false)?;
    for b in &mut branches {
        b.finish();
    }
    Ok(branches)
}

fn compile_object(
    branches: &mut Vec<Branch>,
    path: &mut Vec<Box<str>>,
    entries: &[(String, Raw)],
    in_or: bool,
) -> Result<(), PatternError> {
    if entries.is_empty() {
        return fail("Empty objects are not allowed");
    }
    for (key, value) in entries {
        if key == "$or" {
            compile_or(branches, path, value)?;
            continue;
        }
        if in_or && RESERVED_IN_OR.contains(&key.as_str()) {
            return fail(format_args!(
                "{key} is Ruler reserved fieldName which cannot be used inside $or."
            ));
        }
        match value {
            Raw::Object(inner) => {
                let depth = path.len();
                path.extend(key_names(key));
                let result = compile_object(branches, path, inner, in_or);
                path.truncate(depth);
                result?;
            }
            Raw::Array(items) => {
                let leaf = compile_leaf(items)?;
                if branches.is_empty() {
                    branches.push(Branch::default());
                }
                let depth = path.len();
                path.extend(key_names(key));
                for b in branches.iter_mut() {
                    b.put(path, &leaf);
                }
                path.truncate(depth);
            }
            _ => return fail(format_args!("\"{key}\" must be an object or an array")),
        }
    }
    Ok(())
}

/// The field names a pattern key stands for: EventBridge joins nested names with `.`, so
/// `"a.b"` is `a` → `b`.
fn key_names(key: &str) -> impl Iterator<Item = Box<str>> + '_ {
    key.split('.').map(Into::into)
}

/// Each alternative continues every branch built so far.
fn compile_or(branches: &mut Vec<Branch>, path: &mut Vec<Box<str>>, value: &Raw) -> Result<(), PatternError> {
    let before = std::mem::take(branches);
    let Raw::Array(items) = value else {
        return fail("It must be an Array followed with $or.");
    };
    for item in items {
        let Raw::Object(entries) = item else {
            return fail("Only JSON object is allowed in array of $or relationship.");
        };
        let mut alternative = before.clone();
        if alternative.is_empty() {
            alternative.push(Branch::default());
        }
        compile_object(&mut alternative, path, entries, true)?;
        branches.extend(alternative);
        if branches.len() > MAX_BRANCHES {
            return fail(format_args!(
                "Too many $or combinations (more than {MAX_BRANCHES})"
            ));
        }
    }
    if items.len() < 2 {
        return fail("There must have at least 2 Objects in $or relationship.");
    }
    Ok(())
}

fn compile_leaf(items: &[Raw]) -> Result<Leaf, PatternError> {
    let mut alternatives = Vec::with_capacity(items.len());
    for item in items {
        alternatives.push(match item {
            Raw::Object(entries) => compile_expression(entries)?,
            Raw::String(s) => match IpRange::single(s) {
                Some(ip) => Matcher::Ip(ip, s.as_str().into()),
                None => Matcher::String(s.as_str().into()),
            },
            Raw::Number(n) => Matcher::Number(n.clone(), n.as_f64().and_then(comparable_key)),
            Raw::Bool(b) => Matcher::Bool(*b),
            Raw::Null => Matcher::Null,
            Raw::Array(_) => return fail("Match value must be String, number, true, false, or null"),
        });
    }
    if alternatives.is_empty() {
        return fail("Empty arrays are not allowed");
    }
    let absent = |m: &Matcher| matches!(m, Matcher::Exists(false));
    Ok(Leaf {
        has_positive: !alternatives.iter().all(absent),
        has_absent: alternatives.iter().any(absent),
        alternatives,
    })
}

fn only_one_key(entries: &[(String, Raw)]) -> Result<(), PatternError> {
    if entries.len() > 1 {
        return fail("Only one key allowed in match expression");
    }
    Ok(())
}

fn too_many_elements(entries: &[(String, Raw)]) -> Result<(), PatternError> {
    if entries.len() > 1 {
        return fail("Too many elements in numeric expression");
    }
    Ok(())
}

fn lower(s: &str) -> Box<str> {
    s.chars().flat_map(char::to_lowercase).collect::<String>().into()
}

fn compile_expression(entries: &[(String, Raw)]) -> Result<Matcher, PatternError> {
    let Some((name, value)) = entries.first() else {
        return fail("Match expression name not found");
    };
    match name.as_str() {
        "prefix" | "suffix" => {
            let is_prefix = name == "prefix";
            match value {
                Raw::String(s) => {
                    only_one_key(entries)?;
                    Ok(if is_prefix {
                        Matcher::Prefix(s.as_str().into())
                    } else {
                        Matcher::Suffix(s.as_str().into())
                    })
                }
                Raw::Object(inner) => {
                    let (label, upper) = if is_prefix {
                        ("prefix", "Prefix")
                    } else {
                        ("suffix", "Suffix")
                    };
                    let Some((op, v)) = inner.first() else {
                        return fail(format_args!("{upper} expression name not found"));
                    };
                    if op != "equals-ignore-case" {
                        return fail(format_args!("Unsupported {label} pattern: {op}"));
                    }
                    let Raw::String(s) = v else {
                        return fail("equals-ignore-case match pattern must be a string");
                    };
                    only_one_key(inner)?;
                    only_one_key(entries)?;
                    Ok(if is_prefix {
                        Matcher::PrefixIgnoreCase(lower(s))
                    } else {
                        Matcher::SuffixIgnoreCase(lower(s))
                    })
                }
                _ => fail(format_args!("{name} match pattern must be a string")),
            }
        }
        "numeric" => {
            let Raw::Array(items) = value else {
                return fail("Value of numeric must be an array.");
            };
            let range = compile_numeric(items)?;
            too_many_elements(entries)?;
            Ok(Matcher::Numeric(range))
        }
        "anything-but" => compile_anything_but(entries, value),
        "exists" => {
            let Raw::Bool(b) = value else {
                return fail("exists match pattern must be either true or false.");
            };
            only_one_key(entries)?;
            Ok(Matcher::Exists(*b))
        }
        "cidr" => {
            let Raw::String(s) = value else {
                return fail("prefix match pattern must be a string");
            };
            let range = IpRange::parse_cidr(s)?;
            only_one_key(entries)?;
            Ok(Matcher::Cidr(range))
        }
        "equals-ignore-case" => {
            let Raw::String(s) = value else {
                return fail("equals-ignore-case match pattern must be a string");
            };
            only_one_key(entries)?;
            Ok(Matcher::EqualsIgnoreCase(lower(s)))
        }
        "wildcard" => {
            let Raw::String(s) = value else {
                return fail("wildcard match pattern must be a string");
            };
            let w = Wildcard::parse(s)?;
            only_one_key(entries)?;
            Ok(Matcher::Wildcard(w))
        }
        other => fail(format_args!("Unrecognized match type {other}")),
    }
}

/// The text Jackson would show for a token, used in a few AWS messages.
fn token_text(v: Option<&Raw>) -> String {
    match v {
        None => "]".to_owned(),
        Some(Raw::String(s)) => s.clone(),
        Some(Raw::Number(n)) => n.to_string(),
        Some(Raw::Bool(b)) => b.to_string(),
        Some(Raw::Null) => "null".to_owned(),
        Some(Raw::Array(_)) => "[".to_owned(),
        Some(Raw::Object(_)) => "{".to_owned(),
    }
}

fn comparable(v: Option<&Raw>, op: &str) -> Result<i64, PatternError> {
    let what = if op == "=" { "equals" } else { op };
    let Some(Raw::Number(n)) = v else {
        return fail(format_args!("Value of {what} must be numeric"));
    };
    key_of(n)
}

fn key_of(n: &Number) -> Result<i64, PatternError> {
    match n.as_f64().and_then(comparable_key) {
        Some(key) => Ok(key),
        None => fail("Value must be between -5.0E9 and 5.0E9, inclusive"),
    }
}

fn compile_numeric(items: &[Raw]) -> Result<NumRange, PatternError> {
    let Some(Raw::String(op)) = items.first() else {
        return fail(format_args!(
            "Invalid member in numeric match: {}",
            token_text(items.first())
        ));
    };
    let value = comparable(items.get(1), op);
    match op.as_str() {
        "=" => {
            let v = value?;
            if items.len() > 2 {
                return fail("Too many elements in numeric expression");
            }
            Ok(NumRange {
                low: Some((v, true)),
                high: Some((v, true)),
            })
        }
        ">" | ">=" => {
            let low = Some((value?, op == ">="));
            if items.len() == 2 {
                return Ok(NumRange { low, high: None });
            }
            let Some(Raw::String(op2)) = items.get(2) else {
                return fail(format_args!(
                    "Bad value in numeric range: {}",
                    token_text(items.get(2))
                ));
            };
            if op2 != "<" && op2 != "<=" {
                return fail(format_args!("Bad numeric range operator: {op2}"));
            }
            let Some(Raw::Number(n)) = items.get(3) else {
                return fail(format_args!("Value of {op2} must be numeric"));
            };
            let top = key_of(n)?;
            if items.len() > 4 {
                return fail("Too many terms in numeric range expression");
            }
            // A two-sided range must leave room between its bounds, closed or not.
            if low.is_some_and(|(bottom, _)| bottom >= top) {
                return fail("Bottom must be less than top");
            }
            Ok(NumRange {
                low,
                high: Some((top, op2 == "<=")),
            })
        }
        "<" | "<=" => {
            let high = Some((value?, op == "<="));
            if items.len() > 2 {
                return fail("Too many elements in numeric expression");
            }
            Ok(NumRange { low: None, high })
        }
        _ => fail(format_args!("Unrecognized numeric range operator: {op}")),
    }
}

fn compile_anything_but(entries: &[(String, Raw)], value: &Raw) -> Result<Matcher, PatternError> {
    // `{"anything-but": {"prefix": ...}}` and friends name a sub-operator.
    let (kind, inner_entries, operand) = match value {
        Raw::Object(inner) => {
            let Some((op, v)) = inner.first() else {
                return fail("Anything-but expression name not found");
            };
            match op.as_str() {
                "equals-ignore-case" | "prefix" | "suffix" | "wildcard" => {}
                _ => return fail(format_args!("Unsupported anything-but pattern: {op}")),
            }
            (Some(op.as_str()), Some(inner.as_slice()), v)
        }
        v => (None, None, v),
    };
    if !matches!(operand, Raw::Array(_) | Raw::String(_) | Raw::Number(_)) {
        return fail("Value of anything-but must be an array or single string/number value.");
    }
    let single = std::slice::from_ref(operand);
    let items = match operand {
        Raw::Array(items) => items.as_slice(),
        _ => single,
    };
    let matcher = match kind {
        None => anything_but_values(items, matches!(operand, Raw::Array(_)))?,
        Some(kind) => anything_but_set(kind, items)?,
    };
    if let Some(inner) = inner_entries {
        too_many_elements(inner)?;
    }
    too_many_elements(entries)?;
    Ok(Matcher::AnythingBut(matcher))
}

fn anything_but_values(items: &[Raw], is_list: bool) -> Result<AnythingBut, PatternError> {
    let mut strings = Vec::new();
    let mut numbers = Vec::new();
    for item in items {
        match item {
            Raw::String(s) => strings.push(s.as_str().into()),
            Raw::Number(n) => numbers.push(key_of(n)?),
            _ if is_list => {
                return fail("Inside anything but list, start|null|boolean is not supported.");
            }
            _ => return fail("Inside anything-but list, start|null|boolean is not supported."),
        }
    }
    match (strings.is_empty(), numbers.is_empty()) {
        (false, true) => Ok(AnythingBut::Strings(strings)),
        (true, false) => Ok(AnythingBut::Numbers(numbers)),
        _ => fail(
            "Inside anything but list, either all values are number or string, mixed type is not \
             supported",
        ),
    }
}

fn anything_but_set(kind: &str, items: &[Raw]) -> Result<AnythingBut, PatternError> {
    let mut values: Vec<&str> = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Raw::String(s) => {
                if (kind == "prefix" || kind == "suffix") && s.is_empty() {
                    return fail("Null prefix/suffix not allowed");
                }
                values.push(s);
            }
            _ => {
                return match kind {
                    "equals-ignore-case" => fail(
                        "Inside anything-but/equals-ignore-case list, \
                         number|start|null|boolean is not supported.",
                    ),
                    "wildcard" => fail("wildcard match pattern must be a string"),
                    _ => fail("prefix/suffix match pattern must be a string"),
                };
            }
        }
    }
    Ok(match kind {
        "equals-ignore-case" => AnythingBut::IgnoreCase(values.iter().map(|s| lower(s)).collect()),
        "prefix" => AnythingBut::Prefixes(values.iter().map(|&s| s.into()).collect()),
        "suffix" => AnythingBut::Suffixes(values.iter().map(|&s| s.into()).collect()),
        _ => AnythingBut::Wildcards(
            values
                .iter()
                .map(|s| Wildcard::parse(s))
                .collect::<Result<_, _>>()?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::parse_text;

    fn reason(text: &str) -> String {
        match compile(&parse_text(text).unwrap()) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.reason_text().to_owned(),
        }
    }

    #[test]
    fn structural_errors() {
        assert_eq!(reason("[]"), "Filter is not an object");
        assert_eq!(reason("{}"), "Empty objects are not allowed");
        assert_eq!(reason(r#"{"a": {}}"#), "Empty objects are not allowed");
        assert_eq!(reason(r#"{"a": "x"}"#), "\"a\" must be an object or an array");
        assert_eq!(reason(r#"{"a": []}"#), "Empty arrays are not allowed");
        assert_eq!(
            reason(r#"{"a": [["x"]]}"#),
            "Match value must be String, number, true, false, or null"
        );
        assert_eq!(reason(r#"{"a": [{}]}"#), "Match expression name not found");
        assert_eq!(
            reason(r#"{"a": [{"prefix": "x", "suffix": "y"}]}"#),
            "Only one key allowed in match expression"
        );
    }

    #[test]
    fn or_errors() {
        assert_eq!(reason(r#"{"$or": {}}"#), "It must be an Array followed with $or.");
        assert_eq!(
            reason(r#"{"$or": [{"a": [1]}]}"#),
            "There must have at least 2 Objects in $or relationship."
        );
        assert_eq!(
            reason(r#"{"$or": [{"a": [1]}, 3]}"#),
            "Only JSON object is allowed in array of $or relationship."
        );
        assert_eq!(
            reason(r#"{"$or": [{"a": [1]}, {"numeric": [1]}]}"#),
            "numeric is Ruler reserved fieldName which cannot be used inside $or."
        );
    }

    #[test]
    fn numeric_errors() {
        assert_eq!(
            reason(r#"{"a": [{"numeric": 1}]}"#),
            "Value of numeric must be an array."
        );
        assert_eq!(
            reason(r#"{"a": [{"numeric": [1]}]}"#),
            "Invalid member in numeric match: 1"
        );
        assert_eq!(
            reason(r#"{"a": [{"numeric": ["!", 1]}]}"#),
            "Unrecognized numeric range operator: !"
        );
        assert_eq!(
            reason(r#"{"a": [{"numeric": ["=", "x"]}]}"#),
            "Value of equals must be numeric"
        );
        assert_eq!(
            reason(r#"{"a": [{"numeric": [">", 1, ">", 2]}]}"#),
            "Bad numeric range operator: >"
        );
        assert_eq!(
            reason(r#"{"a": [{"numeric": ["<", 1, 2]}]}"#),
            "Too many elements in numeric expression"
        );
        assert_eq!(
            reason(r#"{"a": [{"numeric": [">", 1, "<", 2, 3]}]}"#),
            "Too many terms in numeric range expression"
        );
        for inverted in [
            r#"[">", 5, "<", 5]"#,
            r#"[">=", 5, "<=", 5]"#,
            r#"[">", 6, "<", 1]"#,
        ] {
            assert_eq!(
                reason(&format!(r#"{{"a": [{{"numeric": {inverted}}}]}}"#)),
                "Bottom must be less than top",
                "{inverted}"
            );
        }
        assert_eq!(
            reason(r#"{"a": [{"numeric": [">", 6e9]}]}"#),
            "Value must be between -5.0E9 and 5.0E9, inclusive"
        );
    }

    #[test]
    fn anything_but_errors() {
        assert_eq!(
            reason(r#"{"a": [{"anything-but": ["x", 1]}]}"#),
            "Inside anything but list, either all values are number or string, mixed type is not supported"
        );
        assert_eq!(
            reason(r#"{"a": [{"anything-but": {"foo": "x"}}]}"#),
            "Unsupported anything-but pattern: foo"
        );
        assert_eq!(
            reason(r#"{"a": [{"anything-but": {"wildcard": "a**"}}]}"#),
            "Consecutive wildcard characters at pos 2"
        );
    }

    fn paths(text: &str) -> Vec<Vec<String>> {
        compile(&parse_text(text).unwrap())
            .unwrap()
            .iter()
            .map(|b| {
                b.fields
                    .iter()
                    .map(|f| {
                        let leaf = match &f.leaf.alternatives[0] {
                            Matcher::String(s) => s.to_string(),
                            other => format!("{other:?}"),
                        };
                        format!("{}={leaf}", f.path.join("."))
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn duplicate_keys_merge_objects_and_override_leaves() {
        assert_eq!(
            paths(r#"{"d": {"a": ["1"]}, "s": ["x"], "d": {"b": ["2"]}, "s": ["y"]}"#),
            vec![vec!["d.a=1", "d.b=2", "s=y"]]
        );
    }

    #[test]
    fn or_expands_into_sorted_branches_with_overrides() {
        assert_eq!(
            paths(r#"{"z": ["0"], "a": ["x"], "$or": [{"a": ["y"]}, {"b": ["z"]}], "c": ["w"]}"#),
            vec![vec!["a=y", "c=w", "z=0"], vec!["a=x", "b=z", "c=w", "z=0"]]
        );
        assert_eq!(
            paths(r#"{"d": {"$or": [{"a": ["1"]}, {"b": ["2"]}]}, "$or": [{"e": ["3"]}, {"f": ["4"]}]}"#),
            vec![
                vec!["d.a=1", "e=3"],
                vec!["d.b=2", "e=3"],
                vec!["d.a=1", "f=4"],
                vec!["d.b=2", "f=4"]
            ]
        );
    }

    #[test]
    fn too_many_or_combinations_are_rejected() {
        let or = r#"{"$or": [{"a": ["1"]}, {"b": ["2"]}]}"#;
        let mut text = String::from("{");
        for i in 0..11 {
            text.push_str(&format!(r#""k{i}": {or},"#));
        }
        text.push_str(r#""z": ["1"]}"#);
        assert!(reason(&text).starts_with("Too many $or combinations"));
    }
}
