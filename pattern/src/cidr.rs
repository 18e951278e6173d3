//! IP addresses and CIDR blocks as EventBridge reads them.
//!
//! A `cidr` pattern such as `10.0.0.0/24` matches event strings holding an
//! address of the same family inside the block. A plain string value that is
//! itself an IP address is also matched by address, not by text.
//!
//! As in EventBridge, the block runs from the address as written up to the
//! address with all host bits set (the base is not masked), and only
//! `/0`..`/31` (IPv4) and `/0`..`/127` (IPv6) are accepted.

use crate::error::{PatternError, fail};
use std::net::IpAddr;

/// An inclusive range of addresses of one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IpRange {
    low: u128,
    high: u128,
    v4: bool,
}

impl IpRange {
    /// Parses `ip/bits`, with AWS's messages for each way it can be wrong.
    pub(crate) fn parse_cidr(text: &str) -> Result<IpRange, PatternError> {
        // AWS splits on '/' and drops trailing empty pieces, so "a/24/" is
        // accepted and "a/" is not.
        let mut parts: Vec<&str> = text.split('/').collect();
        while parts.len() > 1 && parts.last() == Some(&"") {
            parts.pop();
        }
        if parts.len() != 2 {
            return fail("Malformed CIDR, one '/' required");
        }
        let Ok(bits) = parts[1].parse::<i32>() else {
            return fail("Malformed CIDR, mask bits must be an integer");
        };
        if bits < 0 {
            return fail("Malformed CIDR, mask bits must not be negative");
        }
        let (value, v4) = parse_ip_strict(parts[0])?;
        let width = if v4 { 32 } else { 128 };
        if v4 && bits > 31 {
            return fail("IPv4 mask bits must be < 32");
        }
        if !v4 && bits > 127 {
            return fail("IPv6 mask bits must be < 128");
        }
        let host_bits = width - bits as u32;
        let host_mask = if host_bits == 0 {
            0
        } else {
            (1u128 << host_bits) - 1
        };
        Ok(IpRange {
            low: value,
            high: value | host_mask,
            v4,
        })
    }

    /// A single address, if `text` is one; plain string values use this.
    pub(crate) fn single(text: &str) -> Option<IpRange> {
        let (value, v4) = parse_ip(text)?;
        Some(IpRange {
            low: value,
            high: value,
            v4,
        })
    }

    /// Whether the event string is an address inside this range.
    pub(crate) fn contains_str(&self, text: &str) -> bool {
        match parse_ip(text) {
            Some((value, v4)) => v4 == self.v4 && self.low <= value && value <= self.high,
            None => false,
        }
    }

    /// Whether this range is IPv4.
    pub(crate) fn is_v4(&self) -> bool {
        self.v4
    }
}

fn looks_like_ipv4(s: &str) -> bool {
    let mut groups = 0;
    for part in s.split('.') {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        groups += 1;
    }
    groups == 4
}

fn looks_like_ipv6(s: &str) -> bool {
    s.contains(':') && s.bytes().all(|b| b == b':' || b.is_ascii_hexdigit())
}

/// Parses an address the way EventBridge recognises one; `None` if not.
fn parse_ip(s: &str) -> Option<(u128, bool)> {
    if !(looks_like_ipv4(s) || looks_like_ipv6(s)) {
        return None;
    }
    match s.parse::<IpAddr>().ok()? {
        IpAddr::V4(a) => Some((u32::from(a) as u128, true)),
        IpAddr::V6(a) => Some((u128::from(a), false)),
    }
}

fn parse_ip_strict(s: &str) -> Result<(u128, bool), PatternError> {
    if !(looks_like_ipv4(s) || looks_like_ipv6(s)) {
        return fail(format_args!("Nonstandard IP address: {s}"));
    }
    match parse_ip(s) {
        Some(ip) => Ok(ip),
        None => fail(format_args!("Invalid IP address: {s}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(text: &str) -> String {
        IpRange::parse_cidr(text).unwrap_err().reason_text().to_owned()
    }

    #[test]
    fn ipv4_block() {
        let r = IpRange::parse_cidr("10.0.0.0/24").unwrap();
        assert!(r.contains_str("10.0.0.0"));
        assert!(r.contains_str("10.0.0.255"));
        assert!(!r.contains_str("10.0.1.0"));
        assert!(!r.contains_str("10.0.0.256"));
        assert!(!r.contains_str("::1"));
        assert!(r.is_v4());
    }

    #[test]
    fn ipv6_block() {
        let r = IpRange::parse_cidr("2001:db8:1234:1a00::/64").unwrap();
        assert!(r.contains_str("2001:0db8:1234:1a00:0000:0000:0000:0001"));
        assert!(!r.contains_str("2001:0db8:123f:1a01:0000:0000:0000:0000"));
    }

    #[test]
    fn aws_messages() {
        assert_eq!(reason("bad-filter"), "Malformed CIDR, one '/' required");
        assert_eq!(
            reason("bad-/64filter"),
            "Malformed CIDR, mask bits must be an integer"
        );
        assert_eq!(reason("xx.11.xx/8"), "Nonstandard IP address: xx.11.xx");
        assert_eq!(reason("10.0.0.0/32"), "IPv4 mask bits must be < 32");
        assert_eq!(
            reason("10.0.0.0/-1"),
            "Malformed CIDR, mask bits must not be negative"
        );
        assert_eq!(reason("300.0.0.0/8"), "Invalid IP address: 300.0.0.0");
    }

    #[test]
    fn single_address_is_matched_by_value() {
        let r = IpRange::single("2001:db8::1").unwrap();
        assert!(r.contains_str("2001:0db8:0:0:0:0:0:1"));
        assert!(IpRange::single("not-an-ip").is_none());
    }
}
