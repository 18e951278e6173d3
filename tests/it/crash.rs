//! `kill -9` of the daemon at the worst moments, then a restart with every event redelivered:
//! each deployment still gets exactly one rollout, and it completes.
//!
//! - AWS backends (DynamoDB dedup, Step Functions): the fault proxy kills the daemon exactly
//!   when it sends a chosen request — after its claim and before its `StartExecution`, after
//!   the start and before the claim is completed, and so on — so the crash point is exact.
//! - Embedded backends (SQLite dedup, the local engine): kills at seeded random times while
//!   events are claimed and rollouts run (mid-bake included); the restarted daemon resumes the
//!   unfinished executions from their checkpoints.

use std::os::unix::process::ExitStatusExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::faults::{self, Crash, FaultProxy};
use crate::moto;

fn kill9(pid: u64) {
    if pid > 0 {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aws_kill_9_at_each_step_of_a_claim_then_redelivery_starts_each_deployment_once() {
    let moto = moto::shared();
    // (the request during which the daemon dies, which one of them)
    let points = [
        ("PutItem", 2),        // while claiming: the claim may or may not be applied
        ("StartExecution", 1), // claimed, not started
        ("UpdateItem", 1),     // started, the claim not completed
        ("StartExecution", 2), // one deployment done, the other claimed
    ];
    for (i, (target, nth)) in points.into_iter().enumerate() {
        let s = faults::scenario(moto, i as u64).await;
        let pid = Arc::new(AtomicU64::new(0));
        let victim = pid.clone();
        let proxy = FaultProxy::start_with(
            &moto.url,
            0,
            0.0,
            Duration::ZERO,
            faults::FAULTS.to_vec(),
            Some(Crash {
                target,
                nth,
                action: Box::new(move || kill9(victim.load(Ordering::SeqCst))),
                seen: AtomicU64::new(0),
            }),
        )
        .await;
        let dead = s.dir.path().join("dead-letter.jsonl");
        let (_, _, status) = faults::serve_stdin(&s, &proxy.url, &dead, Some(pid)).await;
        assert_eq!(status.signal(), Some(9), "{target} #{nth}: the daemon was killed");

        // Restarted, with every event delivered again (a claim of a dead process is taken over
        // by the same event at once, or by another when its short lease ends).
        let (outcomes, errors, status) = faults::serve_stdin(&s, &moto.url, &dead, None).await;
        assert!(status.success(), "{target} #{nth}: {}", errors.join("\n"));
        assert_eq!(
            outcomes.len(),
            s.events.len(),
            "{target} #{nth}: every event settled"
        );
        assert_eq!(
            faults::executions(moto, &s).await,
            [1, 1],
            "{target} #{nth}: one execution per deployment"
        );
        assert!(
            std::fs::read_to_string(&dead).unwrap_or_default().is_empty(),
            "{target} #{nth}: nothing dead-lettered"
        );
        let statuses = dedup_statuses(moto, &s.table).await;
        assert_eq!(statuses, ["COMPLETED", "COMPLETED"], "{target} #{nth}");
    }
}

async fn dedup_statuses(moto: &moto::Moto, table: &str) -> Vec<String> {
    let cx = cutover_core::BuildContext::new("unused").with_aws(moto.aws());
    let ddb = aws_sdk_dynamodb::Client::new(cx.aws_config().await);
    let items = ddb.scan().table_name(table).send().await.unwrap();
    items
        .items()
        .iter()
        .map(|i| i["status"].as_s().unwrap().clone())
        .collect()
}

/// The embedded scenario: the soak's events, SQLite dedup, and a local two-step rollout (shift,
/// bake `bake` seconds, shift) whose Task steps append to a file.
pub(crate) fn embedded_file(dir: &std::path::Path, bake: u64) -> std::path::PathBuf {
    let definition = json!({
        "StartAt": "Shift10",
        "States": {
            "Shift10": {"Type": "Task", "Resource": "arn:aws:lambda:us-east-1:111122223333:function:step",
                        "Parameters": {"weight": 10}, "ResultPath": null, "Next": "Bake"},
            "Bake": {"Type": "Wait", "Seconds": bake, "Next": "Shift100"},
            "Shift100": {"Type": "Task", "Resource": "arn:aws:lambda:us-east-1:111122223333:function:step",
                         "Parameters": {"weight": 100}, "ResultPath": null, "End": true}
        }
    });
    std::fs::write(dir.join("rollout.asl.json"), definition.to_string()).unwrap();
    let file = dir.join("embedded.toml");
    std::fs::write(
        &file,
        r#"
[pipelines.ecs-events]
[[pipelines.ecs-events.stages]]
type = "filter"
cluster = "catsndogsECScluster"
green = { container = "cats-green" }

[[pipelines.ecs-events.stages]]
type = "dedup"
lease = "3s"
wait = "5s"

[[pipelines.ecs-events.stages]]
type = "start-state-machine"
input = { cluster = "{detail.clusterArn}", group = "{detail.group}", task_definition = "{detail.taskDefinitionArn}" }

[pipelines.ecs-events.stages.engine]
type = "local"
definition = "rollout.asl.json"
resources = { "arn:aws:lambda:us-east-1:111122223333:function:step" = "step" }

[pipelines.step]
[[pipelines.step.stages]]
type = "notify"
file = "steps.jsonl"
on = ["passed"]
message = "step"
"#,
    )
    .unwrap();
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_kill_9_at_random_moments_then_redelivery_completes_each_deployment_once() {
    let moto = moto::shared();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    println!("crash seed {seed}");
    // The soak's scenario gives the events (its AWS resources go unused here).
    let mut s = faults::scenario(moto, seed).await;
    s.file = embedded_file(s.dir.path(), 20);
    let dead = s.dir.path().join("dead-letter.jsonl");
    for round in 0..3u64 {
        let pid = Arc::new(AtomicU64::new(0));
        let victim = pid.clone();
        // 100 ms – 2.5 s: claiming, starting, in the first step, baking, or done.
        let delay = Duration::from_millis(100 + faults::mix(seed + round) % 2400);
        let killer = tokio::spawn(async move {
            while victim.load(Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(delay).await;
            kill9(victim.load(Ordering::SeqCst));
        });
        let (_, _, status) = faults::serve_stdin(&s, "http://127.0.0.1:9", &dead, Some(pid)).await;
        killer.abort();
        println!("round {round}: killed after {delay:?}: {status}");
        // Every rollout bakes for 20 s and keeps its deadline across restarts; the three
        // rounds together last at most 7.5 s plus three daemon starts (seconds on a loaded
        // machine): each is killed before its rollouts are done.
        assert_eq!(status.signal(), Some(9), "seed {seed} round {round}: {status}");
    }
    let (outcomes, errors, status) = faults::serve_stdin(&s, "http://127.0.0.1:9", &dead, None).await;
    assert!(status.success(), "seed {seed}: {}", errors.join("\n"));
    assert_eq!(outcomes.len(), s.events.len(), "seed {seed}: every event settled");
    assert!(
        std::fs::read_to_string(&dead).unwrap_or_default().is_empty(),
        "seed {seed}: nothing dead-lettered"
    );
    let records: Vec<Value> = crate::execution_records(&s.dir.path().join("executions"));
    assert_eq!(
        records.len(),
        2,
        "seed {seed}: one execution per deployment: {records:#?}"
    );
    for r in &records {
        assert_eq!(r["status"], "SUCCEEDED", "seed {seed}: {r:#}");
    }
}
