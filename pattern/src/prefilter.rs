//! A byte-level test that rejects most non-matching events before parsing.
//!
//! From the compiled pattern we derive a conjunction of groups of byte
//! literals: an event can match only if, for every group, one of the
//! group's literals occurs somewhere in its raw JSON bytes. A string value
//! `catsndogs` is required as `"catsndogs"` (with quotes), a prefix `p` as
//! `"p`, a suffix `s` as `s"`, and a wildcard by its literal pieces. Leaves
//! that cannot be expressed soundly (numbers, `anything-but`, ignore-case,
//! `exists: false`, IPv6 addresses, ...) contribute nothing, or at most
//! their key (`"name"`) when a value at that key is required. With `$or`,
//! the groups every branch requires are kept, plus one group joining each
//! branch's most selective group.
//!
//! Invariant: `may_match` returns false only when the event cannot match.
//! A JSON escape can hide any literal (`\u0063`, `\/`), so an event with a
//! backslash anywhere is always passed on to the full parse.
//!
//! ```
//! use cutover_pattern::Pattern;
//! let p = Pattern::parse(r#"{"detail": {"clusterArn": [{"suffix": "/prod"}]}}"#).unwrap();
//! assert!(!p.prefilter().may_match(br#"{"detail": {"clusterArn": "x/dev"}}"#));
//! assert!(p.prefilter().may_match(br#"{"detail": {"clusterArn": "x/prod"}}"#));
//! ```

use crate::compile::{Branch, Leaf, Matcher};
use memchr::memmem::Finder;
use std::fmt;

/// Most groups kept; each costs one scan of a rejected event.
const MAX_GROUPS: usize = 8;

/// The byte prefilter of a [`Pattern`](crate::Pattern).
#[derive(Clone, Debug)]
pub struct Prefilter {
    groups: Vec<Vec<Finder<'static>>>,
    literals: Vec<Vec<String>>,
}

type Groups = Vec<Vec<Vec<u8>>>;

impl Prefilter {
    pub(crate) fn derive(branches: &[Branch]) -> Prefilter {
        let mut groups = pattern_groups(branches);
        groups.sort_by_key(|g| std::cmp::Reverse(selectivity(g)));
        groups.dedup();
        groups.truncate(MAX_GROUPS);
        let literals = groups
            .iter()
            .map(|g| {
                g.iter()
                    .map(|l| String::from_utf8_lossy(l).into_owned())
                    .collect()
            })
            .collect();
        let groups = groups
            .iter()
            .map(|g| g.iter().map(|l| Finder::new(l).into_owned()).collect())
            .collect();
        Prefilter { groups, literals }
    }

    /// False only when the event bytes certainly cannot match the pattern.
    pub fn may_match(&self, event: &[u8]) -> bool {
        for group in &self.groups {
            if !group.iter().any(|f| f.find(event).is_some()) {
                // An escape sequence could be hiding the literal.
                return memchr::memchr(b'\\', event).is_some();
            }
        }
        true
    }

    /// The required literals: every group must have one of its literals
    /// present. Empty when the prefilter passes everything.
    pub fn literals(&self) -> &[Vec<String>] {
        &self.literals
    }

    /// Whether the prefilter can reject anything at all.
    pub fn is_trivial(&self) -> bool {
        self.groups.is_empty()
    }
}

impl fmt::Display for Prefilter {
    /// Prints e.g. `("a" | "b") & ("c")`, or `(any)` when trivial.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.literals.is_empty() {
            return f.write_str("(any)");
        }
        for (i, g) in self.literals.iter().enumerate() {
            if i > 0 {
                f.write_str(" & ")?;
            }
            f.write_str("(")?;
            for (j, l) in g.iter().enumerate() {
                if j > 0 {
                    f.write_str(" | ")?;
                }
                f.write_str(l)?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// How selective a group is: its shortest literal's length.
fn selectivity(g: &[Vec<u8>]) -> usize {
    g.iter().map(Vec::len).min().unwrap_or(0)
}

/// A string that an event without backslashes can hold verbatim.
fn json_safe(s: &[u8]) -> bool {
    !s.iter().any(|&b| b == b'"' || b == b'\\' || b < 0x20)
}

fn quoted(before: bool, s: &[u8], after: bool) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + 2);
    if before {
        v.push(b'"');
    }
    v.extend_from_slice(s);
    if after {
        v.push(b'"');
    }
    v
}

/// Groups required by one branch, normalised.
fn branch_groups(branch: &Branch) -> Groups {
    let mut groups: Groups = branch
        .fields
        .iter()
        .flat_map(|f| leaf_groups(&f.leaf, f.path.last().map_or("", |k| &**k)))
        .collect();
    for g in &mut groups {
        g.sort();
        g.dedup();
    }
    // A group holding an empty literal is always satisfied.
    groups.retain(|g| !g.is_empty() && g.iter().all(|l| !l.is_empty()));
    groups
}

/// Groups required whichever branch matches: those every branch requires,
/// plus one group made of each branch's best group ((A & B) | C implies
/// A | C).
fn pattern_groups(branches: &[Branch]) -> Groups {
    let per_branch: Vec<Groups> = branches.iter().map(branch_groups).collect();
    let Some((first, others)) = per_branch.split_first() else {
        return Groups::new();
    };
    if others.is_empty() {
        return first.clone();
    }
    let mut out: Groups = first
        .iter()
        .filter(|g| others.iter().all(|o| o.contains(g)))
        .cloned()
        .collect();
    let mut union = Vec::new();
    for groups in &per_branch {
        match groups.iter().max_by_key(|g| selectivity(g)) {
            Some(best) => union.extend(best.iter().cloned()),
            None => return out,
        }
    }
    union.sort();
    union.dedup();
    if !out.contains(&union) {
        out.push(union);
    }
    out
}

fn leaf_groups(leaf: &Leaf, key: &str) -> Groups {
    if leaf
        .alternatives
        .iter()
        .any(|m| matches!(m, Matcher::Exists(false)))
    {
        return Groups::new();
    }
    let per_alt: Vec<Option<Vec<Vec<u8>>>> = leaf.alternatives.iter().map(required).collect();
    if per_alt.iter().all(|a| a.as_ref().is_some_and(|l| !l.is_empty())) {
        let mut lits: Vec<Vec<Vec<u8>>> = per_alt.into_iter().flatten().collect();
        if lits.len() == 1 {
            return lits.pop().expect("one").into_iter().map(|l| vec![l]).collect();
        }
        let union = lits
            .into_iter()
            .filter_map(|l| l.into_iter().max_by_key(Vec::len))
            .collect();
        return vec![union];
    }
    // Some value must still sit under this key: its name ends a JSON key, either a whole one
    // or the last part of a dotted one (`"a.key"`), so only the closing quote is required.
    if json_safe(key.as_bytes()) && !key.is_empty() {
        return vec![vec![quoted(false, key.as_bytes(), true)]];
    }
    Groups::new()
}

/// Literals all required for one alternative to match; `None` if unknown.
fn required(m: &Matcher) -> Option<Vec<Vec<u8>>> {
    let lits = match m {
        Matcher::String(s) if json_safe(s.as_bytes()) => vec![quoted(true, s.as_bytes(), true)],
        // An IPv4 address has a single spelling that parses, so the text is
        // required; IPv6 has many.
        Matcher::Ip(range, text) if range.is_v4() => vec![quoted(true, text.as_bytes(), true)],
        Matcher::Bool(true) => vec![b"true".to_vec()],
        Matcher::Bool(false) => vec![b"false".to_vec()],
        Matcher::Null => vec![b"null".to_vec()],
        Matcher::Prefix(p) if !p.is_empty() && json_safe(p.as_bytes()) => {
            vec![quoted(true, p.as_bytes(), false)]
        }
        Matcher::Suffix(s) if !s.is_empty() && json_safe(s.as_bytes()) => {
            vec![quoted(false, s.as_bytes(), true)]
        }
        Matcher::Wildcard(w) => {
            let pieces = w.pieces();
            let last = pieces.len() - 1;
            pieces
                .iter()
                .enumerate()
                .filter(|(_, p)| (pieces.len() == 1 || !p.is_empty()) && json_safe(p))
                .map(|(i, p)| quoted(i == 0, p, i == last))
                .collect()
        }
        _ => return None,
    };
    Some(lits)
}

#[cfg(test)]
mod tests {
    use crate::Pattern;

    fn lits(p: &str) -> Vec<Vec<String>> {
        Pattern::parse(p).unwrap().prefilter().literals().to_vec()
    }

    #[test]
    fn exact_prefix_suffix() {
        assert_eq!(
            lits(r#"{"detail": {"clusterArn": ["catsndogsECScluster"]}}"#),
            vec![vec![r#""catsndogsECScluster""#.to_owned()]]
        );
        assert_eq!(
            lits(r#"{"a": [{"prefix": "p"}]}"#),
            vec![vec![r#""p"#.to_owned()]]
        );
        assert_eq!(
            lits(r#"{"a": [{"suffix": "s"}]}"#),
            vec![vec![r#"s""#.to_owned()]]
        );
    }

    #[test]
    fn alternatives_union_and_unknowns_fall_back_to_key() {
        assert_eq!(
            lits(r#"{"a": ["x", {"prefix": "y"}]}"#),
            vec![vec![r#""x""#.to_owned(), r#""y"#.to_owned()]]
        );
        // The key ends a JSON key, whole or dotted (`"z.a"`): only its closing quote is required.
        assert_eq!(lits(r#"{"a": ["x", 5]}"#), vec![vec![r#"a""#.to_owned()]]);
        assert!(lits(r#"{"a": ["x", {"exists": false}]}"#).is_empty());
    }

    #[test]
    fn wildcard_pieces() {
        assert_eq!(
            lits(r#"{"a": [{"wildcard": "ab*cd*ef"}]}"#),
            vec![
                vec![r#""ab"#.to_owned()],
                vec![r#"ef""#.to_owned()],
                vec!["cd".to_owned()],
            ]
        );
    }

    #[test]
    fn or_needs_every_branch() {
        assert_eq!(
            lits(r#"{"$or": [{"a": ["x"]}, {"b": ["y"]}]}"#),
            vec![vec![r#""x""#.to_owned(), r#""y""#.to_owned()]]
        );
        assert!(lits(r#"{"$or": [{"a": ["x"]}, {"b": [{"exists": false}]}]}"#).is_empty());
    }

    #[test]
    fn backslash_forces_parse() {
        let p = Pattern::parse(r#"{"a": ["c"]}"#).unwrap();
        assert!(!p.prefilter().may_match(br#"{"a": "d"}"#));
        assert!(p.prefilter().may_match(br#"{"a": "\u0063"}"#));
        assert!(p.matches_json(br#"{"a": "\u0063"}"#).unwrap());
    }

    #[test]
    fn display() {
        let p = Pattern::parse(r#"{"a": ["x", "y"], "b": [{"prefix": "zzz"}]}"#).unwrap();
        assert_eq!(p.prefilter().to_string(), r#"("zzz) & ("x" | "y")"#);
    }
}
