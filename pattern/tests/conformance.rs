//! Integration tests: the recorded EventBridge cases in
//! `conformance/eventbridge-patterns.jsonl`, our own cases of documented behaviour in
//! `conformance/cutover-patterns.jsonl`, plus property tests (`soundness`) for the prefilter.

#[path = "conformance/soundness.rs"]
mod soundness;

use cutover_pattern::conformance::{Summary, check_all};

const CASES: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../conformance/eventbridge-patterns.jsonl"
));

const OUR_CASES: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../conformance/cutover-patterns.jsonl"
));

/// Checks every case of a corpus, asserting each is decided as expected.
fn all_pass(corpus: &str) -> Summary {
    let summary = check_all(corpus);
    // Prints every failing case with expected vs actual, then the counts.
    eprintln!("{summary}");
    // Every case is decided: none is skipped or lost on the way.
    let cases = corpus.lines().filter(|l| !l.trim().is_empty()).count();
    assert_eq!(summary.passed + summary.failed(), cases, "{summary}");
    assert!(summary.passed > 0, "no cases found");
    assert_eq!(summary.failed(), 0, "conformance failures:\n{summary}");
    summary
}

#[test]
fn eventbridge_conformance() {
    let summary = all_pass(CASES);
    assert_eq!(
        summary.messages_exact, summary.messages_total,
        "some rejections differ from AWS's message:\n{summary}"
    );
}

#[test]
fn documented_behaviour_not_in_the_recorded_corpus() {
    all_pass(OUR_CASES);
}
