//! Integration tests: replays the recorded AWS executions in
//! `conformance/asl-executions.jsonl`, and (in `scenarios/`) drives canary,
//! retry/catch, timeout and resume scenarios with fake Task handlers.

mod scenarios;

use cutover_asl::conformance::{CaseResult, check, parse_cases};

#[tokio::test]
async fn asl_executions() {
    let text = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../conformance/asl-executions.jsonl"
    ));
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    let mut report = String::new();
    for case in parse_cases(text) {
        let case = match case {
            Ok(c) => c,
            Err(e) => {
                failed += 1;
                report.push_str(&format!("unparsable case: {e}\n"));
                continue;
            }
        };
        match check(&case).await {
            CaseResult::Passed => passed += 1,
            CaseResult::Skipped(_) => skipped += 1,
            CaseResult::Failed(why) => {
                failed += 1;
                report.push_str(&format!("FAILED {}\n  {why}\n", case.name));
            }
        }
    }
    println!("{report}{passed} passed, {failed} failed, {skipped} skipped");
    assert_eq!(
        failed, 0,
        "{report}{passed} passed, {failed} failed, {skipped} skipped"
    );
    // Every case runs: a skip would hide a gap behind a green test.
    let cases = text.lines().filter(|l| !l.trim().is_empty()).count();
    assert_eq!(
        (passed, skipped),
        (cases, 0),
        "{report}{passed} passed, {failed} failed, {skipped} skipped"
    );
}
