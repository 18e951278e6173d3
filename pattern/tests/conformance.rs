//! Integration tests: the recorded EventBridge cases in
//! `conformance/eventbridge-patterns.jsonl`, plus property tests
//! (`soundness`) for the prefilter.

#[path = "conformance/soundness.rs"]
mod soundness;

use cutover_pattern::conformance::check_all;

const CASES: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../conformance/eventbridge-patterns.jsonl"
));

#[test]
fn eventbridge_conformance() {
    let summary = check_all(CASES);
    // Prints every failing case with expected vs actual, then the counts.
    eprintln!("{summary}");
    // Every case is decided: none is skipped or lost on the way.
    let cases = CASES.lines().filter(|l| !l.trim().is_empty()).count();
    assert_eq!(summary.passed + summary.failed(), cases, "{summary}");
    assert!(summary.passed > 0, "no cases found");
    assert_eq!(summary.failed(), 0, "conformance failures:\n{summary}");
    assert_eq!(
        summary.messages_exact, summary.messages_total,
        "some rejections differ from AWS's message:\n{summary}"
    );
}
