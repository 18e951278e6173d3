//! The quick pass of the edge check ([`crate::check_json`]): a document is read 64 bytes at a
//! time, each block classified sixteen bytes per instruction into bit masks (quotes, blanks,
//! control characters, and whether it holds a backslash); the strings follow from the quotes
//! alone (a running XOR of the quote bits), and only the tokens — the opening quote of each
//! string and every byte outside strings but whitespace — are walked through JSON's grammar.
//! The bytes inside strings are never looked at one by one, and a number or literal is read
//! once, at its first byte.
//!
//! It answers "valid" only for a document a full parse accepts. What it cannot vouch for in
//! one pass — an escape (its string's end is no longer the next quote), nesting deeper than
//! [`MAX_DEPTH`], or anything invalid — it leaves to the scanner, which checks it byte by byte
//! and says what is wrong and where.

use wide::u8x16;

/// Deeper nesting is left to the scanner (which knows the full parse's limit): a container's
/// kind is one bit of a `u64`.
const MAX_DEPTH: u32 = 63;

/// Where the walk is in the grammar: what the next token may be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// A value (at the start, after `:`, after `,` in an array).
    Value,
    /// A value or `]` (right after `[`).
    FirstItem,
    /// A key or `}` (right after `{`).
    FirstKey,
    /// A key (after `,` in an object).
    Key,
    /// The `:` after a key.
    Colon,
    /// After a value: `,`, or the end of its container (or of the document).
    After,
}

/// The bit masks of one 64-byte block, bit `i` for byte `i`.
struct Masks {
    quote: u64,
    /// Whitespace or a control character: at most `0x20`.
    blank: u64,
    /// A control character: below `0x20`.
    control: u64,
}

/// The masks of `block`, or `None` if it holds a backslash (an escape). Control characters
/// are rare (none in compact JSON; line ends and tabs between the tokens of pretty JSON):
/// their mask is built only for a block that has one.
fn classify(block: &[u8; 64]) -> Option<Masks> {
    let splat = u8x16::splat;
    let mut m = Masks {
        quote: 0,
        blank: 0,
        control: 0,
    };
    let mut backslash = splat(0);
    let mut controls = [splat(0); 4];
    for (k, lane) in block.as_chunks::<16>().0.iter().enumerate() {
        let v = u8x16::new(*lane);
        let bits = |found: u8x16| u64::from(found.move_mask() as u16) << (16 * k);
        m.quote |= bits(v.cmp_eq(splat(b'"')));
        m.blank |= bits(v.min(splat(0x20)).cmp_eq(v));
        controls[k] = v.min(splat(0x1F)).cmp_eq(v);
        backslash |= v.cmp_eq(splat(b'\\'));
    }
    // `move_mask`, not `any`: wide 0.7's portable `any` (targets without SSE2, NEON or
    // simd128) misses the top lane of each half.
    if backslash.move_mask() != 0 {
        return None;
    }
    if (controls[0] | controls[1] | controls[2] | controls[3]).move_mask() != 0 {
        for (k, control) in controls.into_iter().enumerate() {
            m.control |= u64::from(control.move_mask() as u16) << (16 * k);
        }
    }
    Some(m)
}

/// Bit `i` of the result is the XOR of bits `0..=i` of `x`.
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

/// `true` only if `text` is one JSON document a full parse accepts; `false` means "ask the
/// scanner", not "invalid".
pub(crate) fn accepts(text: &str) -> bool {
    let mut walk = Walk {
        text,
        state: State::Value,
        depth: 0,
        kinds: 0,
        in_string: 0,
        scalar_end: 0,
    };
    let (blocks, rest) = text.as_bytes().as_chunks::<64>();
    let mut base = 0;
    for block in blocks {
        if !walk.block(block, base) {
            return false;
        }
        base += 64;
    }
    if !rest.is_empty() {
        // Padded with whitespace, which adds no token.
        let mut block = [b' '; 64];
        block[..rest.len()].copy_from_slice(rest);
        if !walk.block(&block, base) {
            return false;
        }
    }
    walk.in_string == 0 && walk.state == State::After && walk.depth == 0
}

struct Walk<'a> {
    text: &'a str,
    state: State,
    depth: u32,
    /// One bit per open container, the innermost lowest: 1 for an object, 0 for an array.
    kinds: u64,
    /// All ones when the previous block ended inside a string.
    in_string: u64,
    /// Where the last number or literal ends.
    scalar_end: usize,
}

impl Walk<'_> {
    fn block(&mut self, block: &[u8; 64], base: usize) -> bool {
        let Some(m) = classify(block) else {
            return false;
        };
        // Set from an opening quote up to (not including) its closing quote.
        let string = prefix_xor(m.quote) ^ self.in_string;
        self.in_string = 0u64.wrapping_sub(string >> 63);
        if m.control & string != 0 {
            return false;
        }
        let outside = !(string | m.quote);
        // Outside strings, the only control characters allowed are whitespace.
        let mut control = m.control & outside;
        while control != 0 {
            if !matches!(
                block[control.trailing_zeros() as usize & 63],
                b'\t' | b'\n' | b'\r'
            ) {
                return false;
            }
            control &= control - 1;
        }
        // Every byte outside strings but whitespace (a structural character, or a byte of a
        // number or literal), and the opening quote of each string.
        let mut tokens = (outside & !m.blank) | (m.quote & string);
        while tokens != 0 {
            let i = tokens.trailing_zeros() as usize;
            tokens &= tokens - 1;
            // The rest of a number or literal was checked with its first byte.
            if base + i < self.scalar_end {
                continue;
            }
            if !self.token(block[i & 63], base + i) {
                return false;
            }
        }
        true
    }

    #[inline(always)]
    fn token(&mut self, byte: u8, at: usize) -> bool {
        match self.state {
            State::Value | State::FirstItem => match byte {
                b'"' => self.state = State::After,
                b'{' => return self.open(1, State::FirstKey),
                b'[' => return self.open(0, State::FirstItem),
                b']' if self.state == State::FirstItem => return self.close(0),
                b'}' | b']' | b':' | b',' => return false,
                _ => match crate::projection::scalar_end(self.text, at) {
                    Some(end) => {
                        self.scalar_end = end;
                        self.state = State::After;
                    }
                    None => return false,
                },
            },
            State::FirstKey | State::Key => match byte {
                b'"' => self.state = State::Colon,
                b'}' if self.state == State::FirstKey => return self.close(1),
                _ => return false,
            },
            State::Colon => {
                if byte != b':' {
                    return false;
                }
                self.state = State::Value;
            }
            State::After => match byte {
                b',' if self.depth > 0 => {
                    self.state = if self.kinds & 1 == 1 {
                        State::Key
                    } else {
                        State::Value
                    };
                }
                b'}' => return self.close(1),
                b']' => return self.close(0),
                _ => return false,
            },
        }
        true
    }

    fn open(&mut self, kind: u64, state: State) -> bool {
        if self.depth >= MAX_DEPTH {
            return false;
        }
        self.depth += 1;
        self.kinds = self.kinds << 1 | kind;
        self.state = state;
        true
    }

    fn close(&mut self, kind: u64) -> bool {
        if self.depth == 0 || self.kinds & 1 != kind {
            return false;
        }
        self.depth -= 1;
        self.kinds >>= 1;
        self.state = State::After;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::accepts;

    /// `text` with `pad` spaces before it: moves every token across the 64-byte blocks.
    fn padded(pad: usize, text: &str) -> String {
        format!("{}{text}", " ".repeat(pad))
    }

    #[test]
    fn strings_numbers_and_literals_are_followed_across_block_boundaries() {
        let long = "x".repeat(150);
        let doc = format!(
            r#"{{"a": "{long}", "n": [12345678901234567890, -1.5e+300, true, false, null], "e": {{}}, "l": []}}"#
        );
        for pad in 0..130 {
            let text = padded(pad, &doc);
            assert!(accepts(&text), "pad {pad}");
            assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok());
        }
    }

    /// Every sequence of up to six tokens (and blanks), placed so that it straddles a block
    /// boundary or not: the quick pass accepts exactly what the full parse accepts (none of
    /// them has an escape or deep nesting).
    #[test]
    fn every_short_token_sequence_is_judged_as_the_full_parse_judges_it() {
        const TOKENS: [&str; 9] = ["{", "}", "[", "]", ":", ",", "\"k\"", "1", " "];
        let mut sequence = vec![0usize; 0];
        let mut checked = 0;
        loop {
            let text: String = sequence.iter().map(|&t| TOKENS[t]).collect();
            let full = serde_json::from_str::<serde_json::Value>(&text).is_ok();
            for pad in [0, 61] {
                let text = padded(pad, &text);
                assert_eq!(accepts(&text), full, "{text:?}");
            }
            checked += 1;
            // The next sequence, counting in base TOKENS.len().
            let mut i = 0;
            loop {
                if i == sequence.len() {
                    if sequence.len() == 6 {
                        assert_eq!(checked, (0..=6).map(|n| TOKENS.len().pow(n)).sum::<usize>());
                        return;
                    }
                    sequence.push(0);
                    break;
                }
                sequence[i] += 1;
                if sequence[i] < TOKENS.len() {
                    break;
                }
                sequence[i] = 0;
                i += 1;
            }
        }
    }

    #[test]
    fn what_it_cannot_vouch_for_is_left_to_the_scanner() {
        for bad in [
            "",
            " ",
            r#"{"a": "b\"c"}"#,   // an escape: valid, but left to the scanner
            "{\"a\": \"b\x01\"}", // a control character in a string
            r#"{"a": "b}"#,       // a string never closed
            r#"{"a" "b"}"#,       // no colon
            r#"{"a": 1,}"#,       // a comma before the end
            r#"[1 2]"#,           // no comma
            r#"[1, tru]"#,        // not a literal
            r#"[1.]"#,            // not a number
            r#"[1]]"#,            // closed twice
            r#"{"a": [}]"#,       // closed by the wrong bracket
            r#"{"a": 1e999}"#,    // out of range
            r#"{} {}"#,           // two documents
            r#"["a"1]"#,          // a number right after a string
            r#"{1: 2}"#,          // a key that is no string
        ] {
            for pad in [0, 60] {
                assert!(!accepts(&padded(pad, bad)), "{bad:?} after {pad} spaces");
            }
        }
        let deep = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert!(!accepts(&deep));
        let shallow = format!("{}{}", "[".repeat(63), "]".repeat(63));
        assert!(accepts(&shallow));
    }
}
