//! `cutover rule` and `cutover pattern`: the filter compiled into an EventBridge rule.

use serde_json::{Value, json};

use crate::{cutover, moto};

fn output(cmd: &mut std::process::Command) -> (i32, String, String) {
    let out = cmd.output().expect("cutover runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The shipped file's rule: what cats and dogs share, and a `$or` of their green containers.
fn seed_pattern() -> Value {
    json!({
        "detail": {
            "clusterArn": [{"suffix": ":cluster/catsndogsECScluster"}],
            "lastStatus": ["RUNNING"],
            "desiredStatus": ["RUNNING"]
        },
        "detail-type": ["ECS Task State Change"],
        "source": ["aws.ecs"],
        "$or": [
            {"detail": {"containers": {"name": ["cats-green"]}}},
            {"detail": {"containers": {"name": ["dogs-green"]}}}
        ]
    })
}

#[test]
fn rule_prints_the_compiled_pattern() {
    let (code, stdout, stderr) = output(cutover().args(["rule", "pipelines/catsndogs.toml"]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(serde_json::from_str::<Value>(&stdout).unwrap(), seed_pattern());
}

#[test]
fn rule_measures_the_extension_exercise_on_the_trace() {
    let (code, stdout, stderr) = output(cutover().args([
        "rule",
        "pipelines/catsndogs.toml",
        "--trace",
        "tests/fixtures/deployment-trace.jsonl",
    ]));
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report["events"], 50);
    let seed = report["seed_rule_invocations"].as_u64().unwrap();
    let compiled = report["compiled_rule_invocations"].as_u64().unwrap();
    assert!(seed > 30 && compiled < seed / 4, "{report}");
    // The compiled rule lets through the six RUNNING deliveries of the three green tasks
    // (each delivered twice); the filter passes them all and dedup keeps one rollout.
    assert_eq!(compiled, 6, "{report}");
    assert_eq!(report["passed_pipeline"], 1, "{report}");
}

#[test]
fn rule_notes_conditions_the_rule_cannot_hold() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tags.toml");
    std::fs::write(
        &file,
        "[pipelines.p]\n[[pipelines.p.stages]]\ntype = \"filter\"\ngreen = { container = \"cats-green\", tags = { deployment = \"green\" } }\n",
    )
    .unwrap();
    let (code, _, stderr) = output(cutover().arg("rule").arg(&file));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("ECS tags deployment = \"green\" are checked in the filter stage"),
        "{stderr}"
    );
}

#[tokio::test]
async fn rule_apply_creates_and_updates_the_rule_in_eventbridge() {
    let moto = moto::shared();
    let name = moto::unique("cutover-rule");
    let target = "arn:aws:lambda:us-east-1:123456789012:function:cutover-ecs-events";
    for _ in 0..2 {
        let (code, _, stderr) = output(
            cutover()
                .args([
                    "rule",
                    "pipelines/catsndogs.toml",
                    "--apply",
                    "--name",
                    &name,
                    "--target-arn",
                    target,
                ])
                .envs(moto.env()),
        );
        assert_eq!(code, 0, "{stderr}");
    }
    let cx = cutover_core::BuildContext::new("unused").with_aws(moto.aws());
    let client = aws_sdk_eventbridge::Client::new(cx.aws_config().await);
    let rule = client.describe_rule().name(&name).send().await.unwrap();
    let pattern: Value = serde_json::from_str(rule.event_pattern().unwrap()).unwrap();
    assert_eq!(pattern, seed_pattern());
    assert_eq!(
        rule.state(),
        Some(&aws_sdk_eventbridge::types::RuleState::Enabled)
    );
    let targets = client.list_targets_by_rule().rule(&name).send().await.unwrap();
    assert_eq!(targets.targets().len(), 1, "applying twice keeps one target");
    assert_eq!(targets.targets()[0].arn(), target);
}

#[test]
fn pattern_match_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let pattern = dir.path().join("p.json");
    std::fs::write(&pattern, seed_pattern().to_string()).unwrap();
    let (code, stdout, _) = output(
        cutover()
            .arg("pattern")
            .arg("match")
            .arg(&pattern)
            .arg("tests/fixtures/task-fargate-running.json"),
    );
    assert_eq!((code, stdout.as_str()), (0, "match\n"));
    let (code, stdout, _) = output(
        cutover()
            .arg("pattern")
            .arg("match")
            .arg(&pattern)
            .arg("tests/fixtures/task-ec2-running.json"),
    );
    assert_eq!((code, stdout.as_str()), (0, "no match\n"));
    std::fs::write(&pattern, r#"{"detail": {"lastStatus": []}}"#).unwrap();
    let (code, _, stderr) = output(
        cutover()
            .arg("pattern")
            .arg("match")
            .arg(&pattern)
            .arg("tests/fixtures/task-ec2-running.json"),
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains("Event pattern is not valid. Reason: Empty arrays are not allowed"),
        "{stderr}"
    );
}

#[test]
fn pattern_test_runs_the_aws_conformance_corpus() {
    let (code, stdout, stderr) =
        output(cutover().args(["pattern", "test", "conformance/eventbridge-patterns.jsonl"]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(stdout.lines().last(), Some("111 passed, 0 failed"));
}
