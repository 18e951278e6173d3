//! `cutover dlq redrive` against moto: exactly the rollouts an outage missed start.
//!
//! The AWS `ecs-events` pipeline of the fault soaks (DynamoDB dedup, Step Functions start) sees
//! two deployments, A and B, each of three green tasks whose RUNNING event arrives twice. A's
//! first event runs while all is well: A's rollout starts. Then DynamoDB fails — the daemon is
//! pointed at a dedup table that does not exist — while every event arrives: the daemon
//! (`cutover serve --source stdin`) dead-letters each RUNNING event and a line that is not
//! JSON. To the queue, the test adds what the deployed stack's other two paths write: Lambda
//! on-failure invocation records and EventBridge dead letters of B's events. With DynamoDB back,
//! a dry run lists every letter and changes nothing; the redrive starts B's rollout only,
//! removes every letter whose event settled (A's and B's duplicates are dropped by dedup),
//! keeps the one that holds no event, and a second redrive starts nothing.

use std::io::Write as _;
use std::process::{ExitStatus, Stdio};

use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName};
use serde_json::{Value, json};

use crate::cutover;
use crate::faults::{Scenario, aws_env, executions, scenario};
use crate::moto::{self, Moto};

/// The override that points the daemon's dedup stage at a table that does not exist.
const TABLE_OVERRIDE: &str = "CUTOVER_PIPELINES__ECS_EVENTS__STAGES__2__STORE__TABLE";

/// The RUNNING events, in the green cluster, of task definition revision `revision`.
fn running(s: &Scenario, revision: u32) -> Vec<Value> {
    s.events
        .iter()
        .filter(|e| {
            e["detail"]["lastStatus"] == "RUNNING"
                && e["detail"]["clusterArn"]
                    .as_str()
                    .is_some_and(|c| c.ends_with("/catsndogsECScluster"))
                && e["detail"]["taskDefinitionArn"]
                    .as_str()
                    .is_some_and(|t| t.ends_with(&format!(":{revision}")))
        })
        .cloned()
        .collect()
}

/// Feeds `lines` to `cutover serve --source stdin` with `args`; its exit status.
fn serve(moto: &Moto, s: &Scenario, env: &[(&str, &str)], args: &[&str], lines: &[String]) -> ExitStatus {
    let mut child = cutover()
        .arg("serve")
        .arg(&s.file)
        .args(["--source", "stdin", "--pipeline", "ecs-events"])
        .args(args)
        .envs(aws_env(&moto.url))
        .envs(env.iter().copied())
        .env("CUTOVER_SETTINGS__DATA_DIR", s.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for line in lines {
        writeln!(stdin, "{line}").unwrap();
    }
    drop(stdin);
    child.wait().unwrap()
}

/// Runs `cutover dlq redrive --json` on the scenario's file with `args`: the letters' lines,
/// the summary and the exit status.
fn redrive(moto: &Moto, s: &Scenario, args: &[&str]) -> (Vec<Value>, Value, ExitStatus) {
    let out = cutover()
        .args(["dlq", "redrive"])
        .arg(&s.file)
        .args(["--pipeline", "ecs-events", "--json"])
        .args(args)
        .envs(aws_env(&moto.url))
        .env("CUTOVER_SETTINGS__DATA_DIR", s.dir.path())
        .output()
        .unwrap();
    let mut lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let summary = lines
        .pop()
        .unwrap_or_else(|| panic!("no output; stderr:\n{}", String::from_utf8_lossy(&out.stderr)));
    assert!(
        summary.get("summary").is_some(),
        "{summary}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (lines, summary["summary"].clone(), out.status)
}

/// A's first event runs while DynamoDB works; then every event of both deployments, and a
/// line that is not JSON, runs against a missing table, dead-lettered with `dead_letter`.
async fn outage(moto: &Moto, s: &Scenario, dead_letter: &[&str]) {
    let first_of_a = running(s, 1)[0].to_string();
    assert!(serve(moto, s, &[], &[], &[first_of_a]).success());
    assert_eq!(executions(moto, s).await, [1, 0], "A's rollout started");

    let missing = moto::unique("dedup-unavailable");
    let mut lines: Vec<String> = s.events.iter().map(Value::to_string).collect();
    lines.push("not json".into());
    assert!(serve(moto, s, &[(TABLE_OVERRIDE, &missing)], dead_letter, &lines).success());
    assert_eq!(executions(moto, s).await, [1, 0], "B's rollout was missed");
}

/// What a Lambda on-failure destination sends for `event` (the record AWS documents).
fn invocation_record(event: &Value) -> Value {
    json!({
        "version": "1.0",
        "timestamp": "2026-11-28T10:00:00.000Z",
        "requestContext": {
            "requestId": "e4b46cbf-b738-4880-a18c-df61200e0001",
            "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:cutover-EcsEventsFunction:$LATEST",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": 3
        },
        "requestPayload": event,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {"errorType": "ResourceNotFoundException", "errorMessage": "dedup: Requested resource not found"}
    })
}

async fn visible(sqs: &aws_sdk_sqs::Client, url: &str) -> usize {
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap();
    let count = |name| {
        attributes
            .attributes()
            .and_then(|a| a.get(&name))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0)
    };
    assert_eq!(
        count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        0,
        "kept messages are visible again at once"
    );
    count(QueueAttributeName::ApproximateNumberOfMessages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redriving_the_dead_letter_queue_starts_exactly_the_missed_rollouts() {
    let moto = moto::shared();
    let s = scenario(moto, 21).await;
    let cx = cutover_core::BuildContext::new("unused").with_aws(moto.aws());
    let sqs = aws_sdk_sqs::Client::new(cx.aws_config().await);
    let url = sqs
        .create_queue()
        .queue_name(moto::unique("dlq"))
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned();
    outage(moto, &s, &["--dead-letter-queue", &url]).await;
    // The stack's other two paths: Lambda's on-failure destination, EventBridge's DLQ.
    let b = running(&s, 2);
    for event in &b[..2] {
        sqs.send_message()
            .queue_url(&url)
            .message_body(invocation_record(event).to_string())
            .send()
            .await
            .unwrap();
    }
    let attribute = |v: &str| {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(v)
            .build()
            .unwrap()
    };
    sqs.send_message()
        .queue_url(&url)
        .message_body(b[2].to_string())
        .message_attributes("ERROR_CODE", attribute("NO_PERMISSIONS"))
        .message_attributes(
            "ERROR_MESSAGE",
            attribute("not authorized to invoke the function"),
        )
        .send()
        .await
        .unwrap();
    // 6 RUNNING deliveries of each deployment and the text line; 2 records and 1 event of B.
    assert_eq!(visible(&sqs, &url).await, 16);

    let (letters, summary, status) = redrive(moto, &s, &["--queue", &url, "--dry-run"]);
    assert!(status.success());
    assert_eq!((&summary["letters"], &summary["kept"]), (&json!(16), &json!(1)));
    assert_eq!(
        letters.iter().filter(|l| l.get("outcome").is_none()).count(),
        15,
        "listed, not run; the letter without an event would stay: {letters:?}"
    );
    let shapes = |shape: &str| letters.iter().filter(|l| l["letter"] == shape).count();
    assert_eq!((shapes("daemon"), shapes("lambda"), shapes("event")), (13, 2, 1));
    assert!(
        letters
            .iter()
            .any(|l| l["cause"] == "NO_PERMISSIONS: not authorized to invoke the function"),
        "{letters:?}"
    );
    assert_eq!(visible(&sqs, &url).await, 16, "a dry run removes nothing");
    assert_eq!(executions(moto, &s).await, [1, 0], "and starts nothing");

    let (letters, summary, status) = redrive(moto, &s, &["--queue", &url]);
    assert_eq!(
        (&summary["passed"], &summary["dropped"], &summary["kept"]),
        (&json!(1), &json!(14), &json!(1)),
        "{letters:#?}"
    );
    assert_eq!(
        executions(moto, &s).await,
        [1, 1],
        "B's rollout, and only B's, started"
    );
    assert_eq!(status.code(), Some(1), "a letter stays");
    let kept: Vec<&Value> = letters.iter().filter(|l| l["kept"] == true).collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0]["stage"], "input", "{kept:?}");
    assert_eq!(visible(&sqs, &url).await, 1);

    let (_, summary, _) = redrive(moto, &s, &["--queue", &url]);
    assert_eq!((&summary["letters"], &summary["kept"]), (&json!(1), &json!(1)));
    assert_eq!(executions(moto, &s).await, [1, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redriving_the_daemons_dead_letter_file_rewrites_it_with_only_what_failed_again() {
    let moto = moto::shared();
    let s = scenario(moto, 22).await;
    let path = s.dir.path().join("dead-letter.jsonl");
    let file = path.to_str().unwrap().to_owned();
    outage(moto, &s, &["--dead-letter", &file]).await;
    let before = std::fs::read_to_string(&path).unwrap();
    assert_eq!(before.lines().count(), 13);

    let (letters, summary, status) = redrive(moto, &s, &["--file", &file, "--dry-run"]);
    assert!(status.success());
    assert_eq!((&summary["letters"], &summary["kept"]), (&json!(13), &json!(1)));
    assert_eq!(letters[0]["source"], format!("{file}:1"));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        before,
        "a dry run changes nothing"
    );

    let (_, summary, status) = redrive(moto, &s, &["--file", &file]);
    assert_eq!(
        (&summary["passed"], &summary["dropped"], &summary["kept"]),
        (&json!(1), &json!(11), &json!(1))
    );
    assert_eq!(status.code(), Some(1));
    assert_eq!(executions(moto, &s).await, [1, 1]);
    let after = std::fs::read_to_string(&path).unwrap();
    let kept: Vec<Value> = after.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(kept.len(), 1, "{after}");
    assert_eq!(kept[0]["event"], "not json");
}
