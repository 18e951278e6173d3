//! Fuzz target: the first line is a pattern, the rest an event. Matching
//! never panics, the prefilter never rejects an event that matches, and the
//! projected parse behind `matches_json` decides as a full parse does and
//! fails on exactly the events a full parse fails on.
#![no_main]

use cutover_pattern::Pattern;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let (pattern, event) = data.split_at(split);
    let Ok(pattern) = std::str::from_utf8(pattern) else {
        return;
    };
    let Ok(p) = Pattern::parse(pattern) else {
        return;
    };
    let event = event.get(1..).unwrap_or_default();
    let by_bytes = p.matches_json(event);
    match serde_json::from_slice::<serde_json::Value>(event) {
        Ok(value) => {
            let expected = p.matches(&value);
            assert_eq!(by_bytes.ok(), Some(expected), "prefilter or projection changed a decision");
        }
        Err(_) => assert!(
            by_bytes.is_err() || !p.prefilter().may_match(event),
            "the projection accepted an event a full parse rejects"
        ),
    }
});
