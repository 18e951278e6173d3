//! `pipelines/catsndogs-ecs-native.toml` as an ECS lifecycle hook, through the Lambda Runtime
//! API path (`lambda.rs`'s in-test server), driven as ECS drives a hook: the lifecycle stages
//! in order, each asked again after `IN_PROGRESS` with the `hookDetails` it returned, until
//! `SUCCEEDED` — or `FAILED`, where ECS would roll back. The payloads are the documented shape
//! (`tests/fixtures/ecs-hooks/`); green is an in-test web server (cats v3 on `/`, a
//! Prometheus API on `/api/v1/query` answering green's 5xx ratio).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use cutover_core::BuildContext;
use cutover_stages::ecs_hook::dynamodb::DynamoHookStore;
use cutover_stages::ecs_hook::{HookRecord, HookStore};
use cutover_stages::health_check::analysis::Tally;
use serde_json::{Value, json};

use crate::lambda::{Answer, RuntimeApi, spawn_with};
use crate::{fixture, moto};

/// Green: `/` answers cats v3 (or 500 when sick); `/api/v1/query` answers a 5xx ratio.
struct Green {
    port: u16,
    sick: Arc<AtomicBool>,
    /// Green's 5xx ratio, in thousandths.
    errors_permille: Arc<AtomicU64>,
    /// Requests blue still received in the last minute.
    blue_requests: Arc<AtomicU64>,
}

impl Green {
    fn start() -> Green {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sick = Arc::new(AtomicBool::new(false));
        let errors_permille = Arc::new(AtomicU64::new(2));
        let blue_requests = Arc::new(AtomicU64::new(0));
        let (s, e, b) = (sick.clone(), errors_permille.clone(), blue_requests.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                }
                let (status, body) = if line.contains("/api/v1/query") && line.contains("increase") {
                    // The observed split: requests per version over the last minute.
                    let n = if line.contains("green") {
                        600
                    } else {
                        b.load(Ordering::SeqCst)
                    };
                    let answer = json!({"status": "success", "data": {"resultType": "vector",
                        "result": [{"metric": {}, "value": [1.0, n.to_string()]}]}});
                    ("200 OK", answer.to_string())
                } else if line.contains("/api/v1/query") {
                    let ratio = e.load(Ordering::SeqCst) as f64 / 1000.0;
                    let answer = json!({"status": "success", "data": {"resultType": "vector",
                        "result": [{"metric": {}, "value": [1.0, ratio.to_string()]}]}});
                    ("200 OK", answer.to_string())
                } else if s.load(Ordering::SeqCst) {
                    ("500 Internal Server Error", "oops".to_owned())
                } else {
                    ("200 OK", "cats v3".to_owned())
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Green {
            port,
            sick,
            errors_permille,
            blue_requests,
        }
    }

    /// The overrides pointing the shipped file's probes at this server.
    fn env(&self) -> Vec<(&'static str, String)> {
        let url = format!("http://127.0.0.1:{}/", self.port);
        vec![
            (
                "CUTOVER_PIPELINES__GREEN_STARTED__STAGES__1__PROBE__URL",
                url.clone(),
            ),
            ("CUTOVER_PIPELINES__TEST_TRAFFIC__STAGES__1__PROBE__URL", url),
            (
                "CUTOVER_PIPELINES__PRODUCTION_TRAFFIC__STAGES__1__PROBE__ADDRESS",
                format!("http://127.0.0.1:{}", self.port),
            ),
            (
                "CUTOVER_PIPELINES__TRAFFIC_LANDED__STAGES__1__PROBE__ADDRESS",
                format!("http://127.0.0.1:{}", self.port),
            ),
            (
                "CUTOVER_PIPELINES__TRAFFIC_LANDED__STAGES__2__PROBE__SOURCE__ADDRESS",
                format!("http://127.0.0.1:{}", self.port),
            ),
            // One second per observed window is real time; a tenth is enough here.
            (
                "CUTOVER_PIPELINES__TRAFFIC_LANDED__STAGES__2__PROBE__WINDOW",
                "100ms".to_owned(),
            ),
        ]
    }
}

/// The recorded-shape payloads, in lifecycle order.
const STAGES: [&str; 5] = [
    "1-post-scale-up.json",
    "2-post-test-traffic-shift.json",
    "3-production-traffic-shift-10.json",
    "4-production-traffic-shift-100.json",
    "5-post-production-traffic-shift.json",
];

/// Calls the hook as ECS does, from stage `from` of [`STAGES`]: each stage until it is no
/// longer `IN_PROGRESS` (at most 10 calls), passing back the `hookDetails` it returned; stops
/// at the first stage that does not succeed. Returns each stage's answers.
fn drive(api: &RuntimeApi, from: usize, calls_so_far: &mut usize) -> Vec<(String, Vec<Answer>)> {
    drive_stages(api, from..STAGES.len(), calls_so_far)
}

/// [`drive`] over the stages `range` of [`STAGES`].
fn drive_stages(
    api: &RuntimeApi,
    range: std::ops::Range<usize>,
    calls_so_far: &mut usize,
) -> Vec<(String, Vec<Answer>)> {
    let mut out = Vec::new();
    for file in &STAGES[range] {
        let mut payload = fixture(&format!("ecs-hooks/{file}"));
        let mut answers = Vec::new();
        for _ in 0..10 {
            *calls_so_far += 1;
            api.push(&format!("h{calls_so_far}"), payload.clone());
            let answer = answer_to(api, *calls_so_far);
            let status = answer.body["hookStatus"].as_str().unwrap_or("").to_owned();
            if let Some(details) = answer.body.get("hookDetails") {
                payload["hookDetails"] = details.clone();
            }
            answers.push(answer);
            if status != "IN_PROGRESS" {
                break;
            }
        }
        let done = answers
            .last()
            .map(|a| a.body["hookStatus"] == "SUCCEEDED")
            .unwrap_or(false);
        out.push((payload["lifecycleStage"].as_str().unwrap().to_owned(), answers));
        if !done {
            break;
        }
    }
    out
}

/// The `n`th answer, which must have come.
fn answer_to(api: &RuntimeApi, n: usize) -> Answer {
    let answers = api.wait_for_answers(n);
    assert_eq!(answers.len(), n, "no answer to invocation {n}: {answers:?}");
    answers[n - 1].clone()
}

fn statuses(stage: &(String, Vec<Answer>)) -> Vec<String> {
    stage
        .1
        .iter()
        .map(|a| {
            let s = a.body["hookStatus"].as_str().unwrap_or(a.kind).to_owned();
            match a.body.get("callBackDelay") {
                Some(d) => format!("{s}+{d}s"),
                None => s,
            }
        })
        .collect()
}

fn start(api: &RuntimeApi, data: &std::path::Path, env: &[(&str, String)]) -> std::process::Child {
    spawn_with(
        api,
        &crate::repo("pipelines/catsndogs-ecs-native.toml"),
        "green-started",
        data,
        env,
    )
}

#[test]
fn a_full_ecs_native_deployment_is_judged_stage_by_stage() {
    let green = Green::start();
    let data = tempfile::tempdir().unwrap();
    let api = RuntimeApi::start(vec![]);
    let mut calls = 0;
    // The first two stages in one sandbox; the rest in a fresh one (Lambda scales out or
    // recycles): the hook state lives in the data directory, not in the process.
    let mut child = start(&api, data.path(), &green.env());
    let mut seen = drive_stages(&api, 0..2, &mut calls);
    child.kill().unwrap();
    child.wait().unwrap();
    let mut child = start(&api, data.path(), &green.env());
    seen.extend(drive_stages(&api, 2..5, &mut calls));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(seen.len(), 5, "{seen:?}");
    let stages: Vec<(String, Vec<String>)> = seen.drain(..).map(|s| (s.0.clone(), statuses(&s))).collect();
    assert_eq!(
        stages,
        [
            ("POST_SCALE_UP".to_owned(), vec!["SUCCEEDED".to_owned()]),
            (
                "POST_TEST_TRAFFIC_SHIFT".to_owned(),
                vec![
                    "IN_PROGRESS+30s".into(),
                    "IN_PROGRESS+30s".into(),
                    "SUCCEEDED".into()
                ]
            ),
            (
                "PRODUCTION_TRAFFIC_SHIFT".to_owned(),
                vec!["IN_PROGRESS+60s".into(), "SUCCEEDED".into()]
            ),
            (
                "PRODUCTION_TRAFFIC_SHIFT".to_owned(),
                vec!["IN_PROGRESS+60s".into(), "SUCCEEDED".into()]
            ),
            (
                "POST_PRODUCTION_TRAFFIC_SHIFT".to_owned(),
                vec!["IN_PROGRESS+60s".into(), "SUCCEEDED".into()]
            ),
        ],
        "each canary step (10%, 100%) is judged afresh"
    );

    // The same hook asked again after its verdict (a retried invocation), from a new sandbox:
    // the stored verdict, nothing measured again even though green is sick by now.
    green.sick.store(true, Ordering::SeqCst);
    let mut child = start(&api, data.path(), &green.env());
    calls += 1;
    api.push(
        &format!("h{calls}"),
        fixture("ecs-hooks/2-post-test-traffic-shift.json"),
    );
    let again = answer_to(&api, calls);
    child.kill().unwrap();
    // One EMF line for the invocation: its answer by pipeline and lifecycle stage.
    let out = child.wait_with_output().unwrap();
    let emf: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect();
    assert_eq!(emf.len(), 1, "{emf:?}");
    assert_eq!(
        (
            &emf[0]["Pipeline"],
            &emf[0]["LifecycleStage"],
            &emf[0]["HookSucceeded"]
        ),
        (
            &json!("test-traffic"),
            &json!("POST_TEST_TRAFFIC_SHIFT"),
            &json!(1)
        )
    );
    assert_eq!(again.body["hookStatus"], "SUCCEEDED", "{:?}", again.body);
    assert_eq!(again.body["hookDetails"]["cutover"]["measurements"], 3);
    assert!(
        again.body["hookDetails"]["reason"]
            .as_str()
            .unwrap()
            .contains("3 of 3 measurements met"),
        "{:?}",
        again.body
    );
}

#[test]
fn a_sick_green_fails_the_hook_with_the_reason_and_ecs_would_roll_back() {
    let green = Green::start();
    let data = tempfile::tempdir().unwrap();
    let api = RuntimeApi::start(vec![]);
    let mut calls = 0;
    let mut child = start(&api, data.path(), &green.env());
    // Green's 5xx ratio is 20% once production traffic reaches it.
    green.errors_permille.store(200, Ordering::SeqCst);
    let seen = drive(&api, 0, &mut calls);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(seen.len(), 3, "stops at the first production step: {seen:?}");
    assert_eq!(statuses(&seen[1]).last().unwrap(), "SUCCEEDED");
    let failed = seen[2].1.last().unwrap();
    assert_eq!(failed.body["hookStatus"], "FAILED", "{:?}", failed.body);
    assert!(failed.body.get("callBackDelay").is_none());
    let reason = failed.body["hookDetails"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("result < 0.01") && reason.contains("0.2"),
        "the reason names the condition and what was seen: {reason}"
    );

    // Test traffic to a sick green: FAILED at once (failure_limit 0), the probe's words.
    green.sick.store(true, Ordering::SeqCst);
    let data = tempfile::tempdir().unwrap();
    let mut child = start(&api, data.path(), &green.env());
    let seen = drive(&api, 1, &mut calls);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(statuses(&seen[0]), ["FAILED"], "{seen:?}");
    let reason = seen[0].1[0].body["hookDetails"]["reason"].as_str().unwrap();
    assert!(reason.contains("500"), "{reason}");
}

#[test]
fn hook_state_in_dynamodb_is_shared_and_written_once_per_version() {
    let moto = moto::shared();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let table = moto::unique("ecs-hooks");
    rt.block_on(async {
        let cx = BuildContext::new("unused").with_aws(moto.aws());
        let client = aws_sdk_dynamodb::Client::new(cx.aws_config().await);
        DynamoHookStore::create_table(&client, &table).await.unwrap();
        let store = DynamoHookStore::new(client, &table);
        let record = |version: u64, expires_at: u64| HookRecord {
            key: "deployment#POST_TEST_TRAFFIC_SHIFT#e1#-".into(),
            stage: "POST_TEST_TRAFFIC_SHIFT".into(),
            pipeline: "test-traffic".into(),
            first_at_ms: 0,
            invocations: 1,
            tally: Tally::default(),
            verdict: None,
            version,
            expires_at,
        };
        assert!(store.put(&record(1, 100), 10).await.unwrap());
        assert!(
            !store.put(&record(1, 100), 10).await.unwrap(),
            "a second first write loses"
        );
        assert!(store.put(&record(2, 100), 10).await.unwrap());
        assert!(
            !store.put(&record(2, 100), 10).await.unwrap(),
            "an overlapping write loses"
        );
        assert_eq!(
            store.get(&record(0, 0).key, 10).await.unwrap().unwrap().version,
            2
        );
        assert!(
            store.get(&record(0, 0).key, 100).await.unwrap().is_none(),
            "expired"
        );
        assert!(
            store.put(&record(1, 300), 200).await.unwrap(),
            "an expired record is replaced"
        );
    });

    // The shipped file with its test-traffic hook on that table, in two sandboxes in turn.
    let green = Green::start();
    let mut env = green.env();
    env.extend(moto.env());
    env.push((
        "CUTOVER_PIPELINES__TEST_TRAFFIC__ECS_HOOK__STORE",
        json!({"type": "dynamodb", "table": table}).to_string(),
    ));
    let api = RuntimeApi::start(vec![]);
    let payload = fixture("ecs-hooks/2-post-test-traffic-shift.json");
    let mut answers: Vec<Value> = Vec::new();
    for n in 1..=3 {
        // A fresh data directory each time: only DynamoDB carries the state.
        let data = tempfile::tempdir().unwrap();
        let mut child = start(&api, data.path(), &env);
        api.push(&format!("d{n}"), payload.clone());
        answers.push(answer_to(&api, n).body);
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let statuses: Vec<&str> = answers
        .iter()
        .map(|a| a["hookStatus"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        statuses,
        ["IN_PROGRESS", "IN_PROGRESS", "SUCCEEDED"],
        "{answers:?}"
    );
}

#[test]
fn validate_names_every_ecs_hook_problem_with_its_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hooks.toml");
    std::fs::write(
        &file,
        "[pipelines.a]\necs_hook = { stages = [\"POST_TEST_TRAFIC_SHIFT\"], count = 0 }\n\
         [[pipelines.a.stages]]\ntype = \"notify\"\nfile = \"x.jsonl\"\n\
         [pipelines.b]\necs_hook = { stages = [\"PRE_SCALE_UP\"], callback_delay = \"1500ms\" }\n\
         [[pipelines.b.stages]]\ntype = \"notify\"\nfile = \"x.jsonl\"\n\
         [pipelines.c]\necs_hook = { stages = [\"POST_SCALE_UP\"], store = { type = \"dynamodb\" } }\n\
         [[pipelines.c.stages]]\ntype = \"notify\"\nfile = \"x.jsonl\"\n\
         [pipelines.d]\necs_hook = { stages = [\"POST_SCALE_UP\"] }\n\
         [[pipelines.d.stages]]\ntype = \"notify\"\nfile = \"x.jsonl\"\n\
         [pipelines.e]\necs_hook = { stages = [\"POST_SCALE_UP\"] }\n\
         [[pipelines.e.stages]]\ntype = \"notify\"\nfile = \"x.jsonl\"\n",
    )
    .unwrap();
    let out = crate::cutover().arg("validate").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let shipped = crate::cutover()
        .args(["validate", "pipelines/catsndogs-ecs-native.toml"])
        .output()
        .unwrap();
    let said = String::from_utf8(shipped.stdout).unwrap();
    assert!(
        said.contains("test-traffic (1 stage; ECS hook at POST_TEST_TRAFFIC_SHIFT)"),
        "validate names the stages each pipeline answers: {said}"
    );
    for expected in [
        "pipeline \"a\", field \"ecs_hook.stages[0]\": \"POST_TEST_TRAFIC_SHIFT\" is not an ECS lifecycle stage",
        "pipeline \"a\", field \"ecs_hook.count\": must be at least 1",
        "pipeline \"b\", field \"ecs_hook.callback_delay\": whole seconds",
        "pipeline \"c\", field \"ecs_hook.store\": missing field `table`",
        "pipeline \"e\", field \"ecs_hook.stages\": POST_SCALE_UP is already answered by pipeline \"d\"",
    ] {
        assert!(stderr.contains(expected), "{expected:?} not in:\n{stderr}");
    }
}

#[test]
fn blue_still_receiving_requests_fails_the_last_hook_before_it_is_scaled_down() {
    let green = Green::start();
    green.blue_requests.store(3, Ordering::SeqCst);
    let data = tempfile::tempdir().unwrap();
    let api = RuntimeApi::start(vec![]);
    let mut calls = 0;
    let mut child = start(&api, data.path(), &green.env());
    let seen = drive(&api, 4, &mut calls);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(statuses(&seen[0]), ["FAILED"], "{seen:?}");
    let reason = seen[0].1[0].body["hookDetails"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("green received 600 of 603 requests") && reason.contains("with weight 100%"),
        "{reason}"
    );
}
