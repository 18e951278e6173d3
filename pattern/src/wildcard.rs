//! `wildcard` values: `*` matches any run of characters, `\*` a literal star.
//!
//! Parsing follows EventBridge: `**` and any escape other than `\*` or `\\`
//! are rejected, with positions counted in bytes from the opening quote of
//! the JSON string (hence the `+ 1`). AWS also rejects wildcards it deems
//! too complex; that check is approximated here by "more than five `*`".

use crate::error::{PatternError, fail};
use memchr::memmem::Finder;

/// Most `*` characters accepted in one wildcard value.
const MAX_STARS: usize = 5;

/// A compiled wildcard: literal pieces separated by `*`.
#[derive(Debug, Clone)]
pub(crate) struct Wildcard {
    /// `pieces.len() == stars + 1`; pieces may be empty.
    pieces: Vec<Vec<u8>>,
    /// Finders for the pieces strictly between the first and the last.
    middle: Vec<Finder<'static>>,
}

impl Wildcard {
    /// Parses a wildcard value, rejecting it with AWS's message if invalid.
    pub(crate) fn parse(text: &str) -> Result<Wildcard, PatternError> {
        let bytes = text.as_bytes();
        let mut pieces = vec![Vec::new()];
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'*' => {
                    if bytes.get(i + 1) == Some(&b'*') {
                        return fail(format_args!("Consecutive wildcard characters at pos {}", i + 1));
                    }
                    pieces.push(Vec::new());
                }
                b'\\' => match bytes.get(i + 1) {
                    Some(&next @ (b'*' | b'\\')) => {
                        pieces.last_mut().expect("never empty").push(next);
                        i += 1;
                    }
                    _ => return fail(format_args!("Invalid escape character at pos {}", i + 1)),
                },
                b => pieces.last_mut().expect("never empty").push(b),
            }
            i += 1;
        }
        if pieces.len() - 1 > MAX_STARS {
            return fail(
                "Rule is too complex - try using fewer wildcard characters or fewer repeating \
                 character sequences after a wildcard character",
            );
        }
        let middle = if pieces.len() > 2 {
            pieces[1..pieces.len() - 1]
                .iter()
                .map(|p| Finder::new(p).into_owned())
                .collect()
        } else {
            Vec::new()
        };
        Ok(Wildcard { pieces, middle })
    }

    /// Whether `s` matches; allocation-free.
    pub(crate) fn is_match(&self, s: &str) -> bool {
        let s = s.as_bytes();
        let first = &self.pieces[0];
        if self.pieces.len() == 1 {
            return s == first.as_slice();
        }
        let last = &self.pieces[self.pieces.len() - 1];
        if s.len() < first.len() + last.len() || !s.starts_with(first) || !s.ends_with(last) {
            return false;
        }
        let mut rest = &s[first.len()..s.len() - last.len()];
        for finder in &self.middle {
            match finder.find(rest) {
                Some(at) => rest = &rest[at + finder.needle().len()..],
                None => return false,
            }
        }
        true
    }

    /// The literal pieces: the first is anchored at the start of the value
    /// and the last at its end (when there is at least one `*`).
    pub(crate) fn pieces(&self) -> &[Vec<u8>] {
        &self.pieces
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Wildcard::parse(p).unwrap().is_match(s)
    }

    #[test]
    fn matching() {
        assert!(m("/Users/*/doc.txt", "/Users/u/dir/dir/doc.txt"));
        assert!(!m("/Users/*/doc.txt", "/Users/u/dir/notmatchingdoc.txt2"));
        assert!(m("*", ""));
        assert!(m("", ""));
        assert!(!m("", "a"));
        assert!(m("a*a", "aa"));
        assert!(!m("a*a", "a"));
        assert!(m("*/init/*", "dir/init/file"));
        assert!(m(r"a\*b", "a*b"));
        assert!(!m(r"a\*b", "axb"));
        assert!(m(r"a\\*", r"a\zz"));
        assert!(m("*ab*ab*", "xabyab"));
        assert!(!m("*ab*ab*", "xaby"));
    }

    #[test]
    fn aws_errors() {
        let e = Wildcard::parse("arn:aws:events:us-east-1:**:event-bus/*").unwrap_err();
        assert_eq!(e.reason_text(), "Consecutive wildcard characters at pos 26");
        let e = Wildcard::parse(r"a\b").unwrap_err();
        assert_eq!(e.reason_text(), "Invalid escape character at pos 2");
        let e = Wildcard::parse("*:*:*:*:*:event-bus/*").unwrap_err();
        assert!(e.reason_text().starts_with("Rule is too complex"));
        assert!(Wildcard::parse("arn:aws:events:us-east-1:*:event-bus/*").is_ok());
    }
}
