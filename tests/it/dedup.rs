//! The dedup stage's DynamoDB store against a real emulator (moto server), the embedded store
//! across OS processes, and whole traces through the shipped pipeline.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use cutover_core::{BoxFuture, BuildContext, Event, ManualClock, Next, Outcome, Pipeline, Stage, StageError};
use cutover_stages::dedup::{Claim, Dedup, DedupConfig, DedupStore, DynamoStore, Record, Status};
use serde_json::{Value, json};

use crate::{cutover, moto};

/// Records the DynamoDB operation of every HTTP request.
#[derive(Debug, Default, Clone)]
struct Calls(Arc<Mutex<Vec<String>>>);

impl Intercept for Calls {
    fn name(&self) -> &'static str {
        "count-calls"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let target = context.request().headers().get("x-amz-target").unwrap_or("?");
        self.0
            .lock()
            .unwrap()
            .push(target.rsplit('.').next().unwrap_or(target).to_owned());
        Ok(())
    }
}

impl Calls {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

#[derive(Debug)]
struct Downstream {
    calls: AtomicUsize,
    outcome: Outcome,
}

impl Stage for Downstream {
    fn process<'a>(&'a self, _event: Event, _next: Next<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.outcome.clone()
        })
    }
}

fn started() -> Outcome {
    Outcome::Passed {
        context: json!({"execution": "arn:aws:states:us-east-1:1:execution:canary:x"})
            .as_object()
            .unwrap()
            .clone(),
    }
}

fn event(task: &str) -> Event {
    Event::from_value(json!({
        "id": format!("evt-{task}"),
        "detail": {
            "clusterArn": "arn:aws:ecs:us-east-1:1:cluster/catsndogsECScluster",
            "group": "service:cats-green",
            "taskDefinitionArn": "arn:aws:ecs:us-east-1:1:task-definition/cats-green:2",
            "taskArn": format!("arn:aws:ecs:us-east-1:1:task/c/{task}"),
        }
    }))
}

struct Setup {
    pipeline: Pipeline,
    downstream: Arc<Downstream>,
    store: Arc<DynamoStore>,
    calls: Calls,
    clock: Arc<ManualClock>,
    client: aws_sdk_dynamodb::Client,
    table: String,
}

async fn setup(outcome: Outcome) -> Setup {
    setup_at(outcome, &moto::shared().url).await
}

/// [`setup`] with DynamoDB at `endpoint` (moto, or a proxy in front of it).
async fn setup_at(outcome: Outcome, endpoint: &str) -> Setup {
    let cx = BuildContext::new("unused").with_aws(cutover_core::AwsSettings::emulator(endpoint));
    let calls = Calls::default();
    let conf = aws_sdk_dynamodb::config::Builder::from(cx.aws_config().await)
        .interceptor(calls.clone())
        .build();
    let client = aws_sdk_dynamodb::Client::from_conf(conf);
    let table = moto::unique("dedup");
    DynamoStore::create_table(&client, &table).await.unwrap();
    calls.take();
    let store = Arc::new(DynamoStore::new(client.clone(), &table));
    let clock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ));
    let cfg: DedupConfig = toml::from_str(&format!(
        "store = {{ type = \"dynamodb\", table = \"{table}\" }}\nwait = \"300ms\""
    ))
    .unwrap();
    let dedup = Arc::new(Dedup::new(cfg, store.clone(), clock.clone()));
    let downstream = Arc::new(Downstream {
        calls: AtomicUsize::new(0),
        outcome,
    });
    let pipeline = Pipeline::from_stages(
        "p",
        vec![("dedup".into(), dedup), ("rest".into(), downstream.clone())],
    );
    Setup {
        pipeline,
        downstream,
        store,
        calls,
        clock,
        client,
        table,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamodb_64_concurrent_events_of_one_deployment_pass_once() {
    // Concurrent requests, applied one at a time as DynamoDB applies writes to one item (moto
    // alone does not: see `moto::one_at_a_time`).
    let s = setup_at(started(), &moto::one_at_a_time(moto::shared()).await).await;
    let handles: Vec<_> = (0..64)
        .map(|i| {
            let p = s.pipeline.clone();
            tokio::spawn(async move { p.run(event(&format!("t{i}"))).await })
        })
        .collect();
    let mut passed = 0;
    for h in handles {
        let out = h.await.unwrap();
        match &out {
            Outcome::Passed { .. } => passed += 1,
            Outcome::Failed { error, .. } => {
                assert_eq!(error.kind.as_deref(), Some("Dedup.InProgress"), "{out}")
            }
            Outcome::Dropped { reason, .. } => assert!(reason.starts_with("duplicate of"), "{reason}"),
        }
    }
    assert_eq!(passed, 1);
    assert_eq!(s.downstream.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn dynamodb_happy_path_is_one_conditional_write_and_one_update() {
    let s = setup(started()).await;
    assert!(s.pipeline.run(event("a")).await.is_passed());
    assert_eq!(s.calls.take(), ["PutItem", "UpdateItem"]);
    let dup = s.pipeline.run(event("b")).await;
    assert!(
        format!("{dup}").contains("result arn:aws:states:us-east-1:1:execution:canary:x"),
        "{dup}"
    );
    assert_eq!(
        s.calls.take(),
        ["PutItem"],
        "a lost race reads the winner from the failed write (ALL_OLD)"
    );
    let item = s
        .client
        .get_item()
        .table_name(&s.table)
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(
            "arn:aws:ecs:us-east-1:1:cluster/catsndogsECScluster|service:cats-green|arn:aws:ecs:us-east-1:1:task-definition/cats-green:2".into(),
        ))
        .send()
        .await
        .unwrap();
    let item = item.item().unwrap();
    assert_eq!(item["status"].as_s().unwrap(), "COMPLETED");
    assert_eq!(
        item["expires"].as_n().unwrap(),
        &(1_800_000_000i64 + 86_400).to_string()
    );
}

#[tokio::test]
async fn dynamodb_completed_keys_block_until_ttl() {
    let s = setup(started()).await;
    assert!(s.pipeline.run(event("a")).await.is_passed());
    s.clock.advance(Duration::from_secs(86_000));
    assert_eq!(s.pipeline.run(event("b")).await.stage(), Some("dedup"));
    // moto never deletes by TTL (neither does AWS promptly): the claim condition itself treats
    // an expired record as free.
    s.clock.advance(Duration::from_secs(401));
    assert!(s.pipeline.run(event("c")).await.is_passed());
    assert_eq!(s.downstream.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn dynamodb_lease_expiry_lets_a_retry_through() {
    let s = setup(started()).await;
    let now = 1_800_000_000;
    let crashed = Record {
        key: "arn:aws:ecs:us-east-1:1:cluster/catsndogsECScluster|service:cats-green|arn:aws:ecs:us-east-1:1:task-definition/cats-green:2".into(),
        status: Status::InProgress,
        lease_expires: now + 300,
        expires: now + 86_400,
        payload_hash: "x".into(),
        owner: "crashed-host/1/evt-0/0".into(),
        claimed_at: now,
        event_id: "evt-0".into(),
        result: None,
    };
    assert_eq!(s.store.claim(&crashed, now, None).await.unwrap(), Claim::Won);
    let blocked = s.pipeline.run(event("a")).await;
    assert!(blocked.is_retryable(), "{blocked}");
    assert!(
        format!("{blocked}").contains("in progress") && format!("{blocked}").contains("evt-0"),
        "{blocked}"
    );
    s.clock.advance(Duration::from_secs(300));
    assert!(s.pipeline.run(event("a")).await.is_passed());
}

#[tokio::test]
async fn dynamodb_release_on_retryable_failure() {
    let s = setup(Outcome::failed(StageError::retryable("Step Functions throttled"))).await;
    assert!(s.pipeline.run(event("a")).await.is_retryable());
    assert_eq!(s.calls.take(), ["PutItem", "DeleteItem"]);
    assert!(s.pipeline.run(event("a")).await.is_retryable());
    assert_eq!(
        s.downstream.calls.load(Ordering::SeqCst),
        2,
        "released, so the redelivery ran again"
    );
}

#[tokio::test]
async fn dynamodb_unreachable_is_a_retryable_failure_not_a_pass_or_drop() {
    // A port held for the whole test but not listening: every connection is refused (a port
    // merely found free could be taken by another test meanwhile).
    let held = tokio::net::TcpSocket::new_v4().unwrap();
    held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = held.local_addr().unwrap().port();
    let settings = cutover_core::AwsSettings {
        max_attempts: Some(2),
        ..cutover_core::AwsSettings::emulator(format!("http://127.0.0.1:{port}"))
    };
    let cx = BuildContext::new("unused").with_aws(settings);
    let store = Arc::new(DynamoStore::new(
        aws_sdk_dynamodb::Client::new(cx.aws_config().await),
        "t",
    ));
    let cfg: DedupConfig = toml::from_str("store = { type = \"dynamodb\", table = \"t\" }").unwrap();
    let dedup = Arc::new(Dedup::new(cfg, store, cx.clock()));
    let out = Pipeline::from_stages("p", vec![("dedup".into(), dedup)])
        .run(event("a"))
        .await;
    let Outcome::Failed { stage, error } = out else {
        panic!("{out}")
    };
    assert_eq!(stage, "dedup");
    assert!(error.retryable, "{error:?}");
    assert!(error.message.starts_with("dynamodb:PutItem"), "{}", error.message);
}

#[tokio::test]
async fn create_table_command_sets_up_ttl() {
    let moto = moto::shared();
    let table = moto::unique("cli-dedup");
    let out = cutover()
        .args(["dedup", "create-table", "--table", &table])
        .envs(moto.env())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cx = BuildContext::new("unused").with_aws(moto.aws());
    let client = aws_sdk_dynamodb::Client::new(cx.aws_config().await);
    let ttl = client
        .describe_time_to_live()
        .table_name(&table)
        .send()
        .await
        .unwrap();
    let ttl = ttl.time_to_live_description().unwrap();
    assert_eq!(ttl.attribute_name(), Some("expires"));
    let t = client.describe_table().table_name(&table).send().await.unwrap();
    let key = &t.table().unwrap().key_schema()[0];
    assert_eq!(key.attribute_name(), "pk");
}

fn replay(trace: &str, state: &std::path::Path) -> Value {
    let out = cutover()
        .args(["replay", "pipelines/catsndogs.toml", "--summary", "--state"])
        .arg(state)
        .arg(trace)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn trace_with_two_revisions_starts_exactly_two_rollouts() {
    let dir = tempfile::tempdir().unwrap();
    let summary = replay("tests/fixtures/two-revisions-trace.jsonl", dir.path());
    assert_eq!(summary["summary"]["passed"], 2, "{summary}");
    assert_eq!(summary["summary"]["failed"], 0, "{summary}");
    assert!(
        summary["summary"]["dropped"]["dedup"].as_u64().unwrap() >= 8,
        "{summary}"
    );
    // The same trace again, on the same state: every deployment is now a duplicate.
    let again = replay("tests/fixtures/two-revisions-trace.jsonl", dir.path());
    assert_eq!(again["summary"]["passed"], 0, "{again}");
}

#[test]
fn four_processes_racing_on_one_state_dir_start_and_run_each_deployment_once() {
    let dir = tempfile::tempdir().unwrap();
    let spawn = || {
        cutover()
            .args(["replay", "pipelines/catsndogs.toml", "--json", "--state"])
            .arg(dir.path())
            .arg("tests/fixtures/two-revisions-trace.jsonl")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    // All four open the new store together (the schema and WAL setup race too), and each one
    // resumes the executions it finds unfinished, which the others are running.
    let children: Vec<_> = (0..4).map(|_| spawn()).collect();
    let mut passed = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(!stderr.contains("ERROR"), "{stderr}");
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            if v["outcome"] == "passed" {
                passed += 1;
            }
            if v["outcome"] == "failed" {
                assert_eq!(v["retryable"], true, "only in-progress duplicates may fail: {v}");
            }
        }
    }
    // Each process replays on its own virtual clock, which runs ahead by its rollouts' bakes:
    // another process's claim can look abandoned to it and be taken over. What follows a claim
    // is idempotent, so such a takeover passes with the existing execution — it never starts a
    // second one (checked on the records below).
    assert!(
        passed >= 2,
        "two deployments, four processes: each deployment passes in some process ({passed})"
    );
    // Each execution was driven by one process only: one start, no resume, one ending.
    let mut records = 0;
    for record in crate::execution_records(&dir.path().join("executions")) {
        records += 1;
        assert_ne!(record["status"], "RUNNING", "{record}");
        let count = |kind: &str| {
            record["history"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["type"] == kind)
                .count()
        };
        assert_eq!(count("ExecutionStarted"), 1, "{}", record["name"]);
        assert_eq!(count("ExecutionResumed"), 0, "{}", record["name"]);
    }
    assert_eq!(records, 2);
}
