//! Fuzz target: any pattern text either compiles or is rejected, never panics;
//! a compiled pattern's printed form compiles again to the same pattern.
#![no_main]

use cutover_pattern::Pattern;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = Pattern::parse(text) {
        let again = Pattern::from_value(p.as_value()).expect("printed pattern must compile");
        assert_eq!(again.as_value(), p.as_value());
    }
});
