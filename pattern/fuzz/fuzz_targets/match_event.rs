//! Fuzz target: the first line is a pattern, the rest an event. Matching
//! never panics, and the prefilter never rejects an event that matches.
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
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(event) {
        let expected = p.matches(&value);
        assert_eq!(by_bytes.ok(), Some(expected), "prefilter changed a decision");
    }
});
