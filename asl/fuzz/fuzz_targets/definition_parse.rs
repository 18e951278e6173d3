//! Fuzz `Definition::parse`: any text must give a definition or a list of
//! validation errors, never a panic. Valid definitions are also drawn as
//! Mermaid to exercise the compiled graph.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match cutover_asl::Definition::parse(text) {
            Ok(def) => {
                let _ = def.to_mermaid();
                let _ = def.task_resources();
            }
            Err(errors) => {
                let _ = errors.to_string();
            }
        }
    }
});
