//! Exactly one rollout per deployment when AWS misbehaves: a fault-injecting proxy in front of
//! moto, and seeded soaks of the AWS `ecs-events` pipeline (DynamoDB dedup, Step Functions
//! start) through `cutover serve --source stdin` and through the Lambda host with the retries
//! Lambda makes itself.
//!
//! The proxy fails a share of requests, chosen by a seeded generator, in one of five ways:
//! a 500 before the request reaches moto, a 500 *after* moto applied it (the answer is lost),
//! throttling, a dropped connection (before or after applying), and a hang longer than the
//! attempt timeout. Each soak prints its seed; `CUTOVER_SOAK_SEEDS=N` (default 3),
//! `CUTOVER_SOAK_RATE=0.3` and `CUTOVER_SOAK_KINDS=ErrorAfter,Hang` set how many seeds, which
//! share of requests fail and how, and `CUTOVER_SOAK_SEED=S` replays one seed:
//!
//! ```sh
//! CUTOVER_SOAK_SEEDS=20 ./scripts/test.sh soak -- --nocapture
//! ```

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use serde_json::{Value, json};

use crate::moto::{self, Moto};
use crate::{cutover, fixture};

/// The ways the proxy fails a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Fault {
    /// 500 without forwarding.
    ErrorBefore,
    /// Forwarded and applied; the answer replaced by a 500.
    ErrorAfter,
    /// A throttling error without forwarding.
    Throttle,
    /// The connection closed without an answer, before or after forwarding.
    Reset,
    /// No answer for longer than the client's attempt timeout, then closed.
    Hang,
}

pub(crate) const FAULTS: [Fault; 5] = [
    Fault::ErrorBefore,
    Fault::ErrorAfter,
    Fault::Throttle,
    Fault::Reset,
    Fault::Hang,
];

/// Counts of what the proxy did.
#[derive(Debug, Default)]
pub(crate) struct FaultStats {
    requests: AtomicU64,
    injected: [AtomicU64; 5],
}

impl FaultStats {
    /// Requests seen and faults injected, by kind.
    pub(crate) fn snapshot(&self) -> (u64, BTreeMap<String, u64>) {
        let by_kind = FAULTS
            .iter()
            .zip(&self.injected)
            .map(|(f, n)| (format!("{f:?}"), n.load(Ordering::SeqCst)))
            .collect();
        (self.requests.load(Ordering::SeqCst), by_kind)
    }

    fn injected(&self) -> u64 {
        self.injected.iter().map(|n| n.load(Ordering::SeqCst)).sum()
    }
}

/// A proxy in front of moto that injects faults; requests it lets through are forwarded one at
/// a time (see `moto::one_at_a_time` for why).
pub(crate) struct FaultProxy {
    pub(crate) url: String,
    pub(crate) stats: Arc<FaultStats>,
}

struct Plan {
    seed: u64,
    rate: f64,
    hang: Duration,
    next: AtomicU64,
    kinds: Vec<Fault>,
    crash: Option<Crash>,
}

/// Calls `action` (which kills the client) when the `nth` request (1-based) whose
/// `X-Amz-Target` ends with `target` arrives; that request is never forwarded. This is how the
/// crash tests stop a daemon at an exact point, e.g. after its claim and before its start.
pub(crate) struct Crash {
    pub(crate) target: &'static str,
    pub(crate) nth: u64,
    pub(crate) action: Box<dyn Fn() + Send + Sync>,
    pub(crate) seen: AtomicU64,
}

/// splitmix64: a small, well-mixed generator; the n-th request's fate is `mix(seed + n)`.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Plan {
    /// The fault for the next request, if any, and a coin for the variants.
    fn draw(&self) -> (Option<Fault>, bool) {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let r = mix(self.seed.wrapping_mul(0x1000_0001).wrapping_add(n));
        let unit = (r >> 11) as f64 / (1u64 << 53) as f64;
        let fault = (unit < self.rate).then(|| self.kinds[(mix(r) % self.kinds.len() as u64) as usize]);
        (fault, mix(r ^ 0x55) & 1 == 0)
    }
}

impl FaultProxy {
    /// Starts a proxy to `upstream` failing `rate` of the requests, chosen by `seed`.
    pub(crate) async fn start(upstream: &str, seed: u64, rate: f64, hang: Duration) -> FaultProxy {
        Self::start_with(upstream, seed, rate, hang, FAULTS.to_vec(), None).await
    }

    /// [`start`](Self::start), with a crash point.
    pub(crate) async fn start_with(
        upstream: &str,
        seed: u64,
        rate: f64,
        hang: Duration,
        kinds: Vec<Fault>,
        crash: Option<Crash>,
    ) -> FaultProxy {
        assert!(!kinds.is_empty(), "no fault kinds to inject");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<Full<Bytes>>();
        let shared = Arc::new((
            upstream.to_owned(),
            tokio::sync::Mutex::new(()),
            Plan {
                seed,
                rate,
                hang,
                next: AtomicU64::new(0),
                kinds,
                crash,
            },
        ));
        let stats = Arc::new(FaultStats::default());
        let counts = stats.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (client, shared, counts) = (client.clone(), shared.clone(), counts.clone());
                let service = hyper::service::service_fn(move |request| {
                    handle(client.clone(), shared.clone(), counts.clone(), request)
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FaultProxy {
            url: format!("http://{addr}"),
            stats,
        }
    }
}

type Client =
    hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn handle(
    client: Client,
    shared: Arc<(String, tokio::sync::Mutex<()>, Plan)>,
    stats: Arc<FaultStats>,
    request: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Full<Bytes>>, BoxError> {
    let (upstream, turn, plan) = (&shared.0, &shared.1, &shared.2);
    let (mut parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    stats.requests.fetch_add(1, Ordering::SeqCst);
    // JSON protocols name the operation in X-Amz-Target; the others (Route 53) speak XML.
    let json = parts.headers.contains_key("x-amz-target");
    if let Some(crash) = &plan.crash {
        let target = parts.headers.get("x-amz-target").and_then(|t| t.to_str().ok());
        if target.is_some_and(|t| t.ends_with(crash.target))
            && crash.seen.fetch_add(1, Ordering::SeqCst) + 1 == crash.nth
        {
            (crash.action)();
            return Err("crashed the client".into());
        }
    }
    let (fault, coin) = plan.draw();
    if let Some(f) = fault {
        stats.injected[f as usize].fetch_add(1, Ordering::SeqCst);
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    parts.uri = format!("{upstream}{path}").parse()?;
    let forward = |parts, body| async {
        let _turn = turn.lock().await;
        let response = client
            .request(http::Request::from_parts(parts, Full::new(body)))
            .await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok::<_, BoxError>(http::Response::from_parts(parts, Full::new(body)))
    };
    match fault {
        None => forward(parts, body).await,
        Some(Fault::ErrorBefore) => Ok(error_response(json, 500, "InternalFailure")),
        Some(Fault::ErrorAfter) => {
            forward(parts, body).await?;
            Ok(error_response(json, 500, "InternalFailure"))
        }
        Some(Fault::Throttle) => Ok(error_response(
            json,
            400,
            if json { "ThrottlingException" } else { "Throttling" },
        )),
        Some(Fault::Reset) => {
            if coin {
                forward(parts, body).await?;
            }
            Err("injected: connection closed".into())
        }
        Some(Fault::Hang) => {
            if coin {
                forward(parts, body).await?;
            }
            tokio::time::sleep(plan.hang).await;
            Err("injected: hung".into())
        }
    }
}

/// An AWS error answer in the request's protocol.
fn error_response(json: bool, status: u16, code: &str) -> http::Response<Full<Bytes>> {
    let (content_type, body) = if json {
        (
            "application/x-amz-json-1.0",
            format!(r#"{{"__type":"{code}","message":"injected fault"}}"#),
        )
    } else {
        (
            "text/xml",
            format!(
                "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>injected fault</Message></Error><RequestId>x</RequestId></ErrorResponse>"
            ),
        )
    };
    http::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("x-amzn-errortype", code)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// The AWS resources and events of one soak run.
pub(crate) struct Scenario {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) file: std::path::PathBuf,
    state_machine: String,
    pub(crate) table: String,
    pub(crate) events: Vec<Value>,
    /// The execution name each deployment must get exactly once.
    deployments: Vec<String>,
}

/// Two deployments of three green tasks each, every RUNNING event delivered twice, plus
/// events the filter drops (earlier states, another cluster), shuffled by `seed`.
pub(crate) async fn scenario(moto: &Moto, seed: u64) -> Scenario {
    let cx = cutover_core::BuildContext::new("unused").with_aws(moto.aws());
    let ddb = aws_sdk_dynamodb::Client::new(cx.aws_config().await);
    let table = moto::unique("soak");
    cutover_stages::dedup::DynamoStore::create_table(&ddb, &table)
        .await
        .unwrap();
    let sfn = aws_sdk_sfn::Client::new(cx.aws_config().await);
    let definition = json!({"StartAt": "Canary", "States": {"Canary": {"Type": "Pass", "End": true}}});
    let state_machine = sfn
        .create_state_machine()
        .name(moto::unique("soak"))
        .definition(definition.to_string())
        .role_arn("arn:aws:iam::123456789012:role/soak")
        .send()
        .await
        .unwrap()
        .state_machine_arn()
        .to_owned();
    let family = moto::unique("cats-green");
    let cluster = "arn:aws:ecs:us-west-2:111122223333:cluster/catsndogsECScluster";
    let mut events = Vec::new();
    let mut deployments = Vec::new();
    for revision in 1..=2 {
        let task_definition =
            format!("arn:aws:ecs:us-west-2:111122223333:task-definition/{family}:{revision}");
        let group = "service:cats-green";
        deployments.push(cutover_stages::state_machine::execution_name(&format!(
            "{cluster}|{group}|{task_definition}"
        )));
        for task in 0..3 {
            let mut event = fixture("task-fargate-running.json");
            event["id"] = json!(format!("{family}-{revision}-{task}"));
            event["detail"]["taskDefinitionArn"] = json!(task_definition);
            event["detail"]["taskArn"] = json!(format!(
                "arn:aws:ecs:us-west-2:111122223333:task/catsndogsECScluster/{family}-{revision}-{task}"
            ));
            events.push(event.clone());
            events.push(event.clone());
            let mut pending = event.clone();
            pending["id"] = json!(format!("{family}-{revision}-{task}-pending"));
            pending["detail"]["lastStatus"] = json!("PENDING");
            events.push(pending);
            let mut elsewhere = event;
            elsewhere["id"] = json!(format!("{family}-{revision}-{task}-elsewhere"));
            elsewhere["detail"]["clusterArn"] = json!("arn:aws:ecs:us-west-2:111122223333:cluster/other");
            events.push(elsewhere);
        }
    }
    // Fisher–Yates with the seed: redeliveries arrive in any order, even first.
    for i in (1..events.len()).rev() {
        let j = (mix(seed ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d)) % (i as u64 + 1)) as usize;
        events.swap(i, j);
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("soak.toml");
    std::fs::write(
        &file,
        format!(
            r#"
# Short timeouts: a hung connection is abandoned after 1 s and retried.
[settings.aws]
attempt_timeout = "1s"
operation_timeout = "20s"
max_attempts = 3

[pipelines.ecs-events]
[[pipelines.ecs-events.stages]]
type = "filter"
cluster = "catsndogsECScluster"
green = {{ container = "cats-green" }}

[[pipelines.ecs-events.stages]]
type = "dedup"
store = {{ type = "dynamodb", table = "{table}" }}
lease = "6s"
wait = "10s"

[[pipelines.ecs-events.stages]]
type = "start-state-machine"
input = {{ cluster = "{{detail.clusterArn}}", group = "{{detail.group}}", task_definition = "{{detail.taskDefinitionArn}}" }}
engine = {{ type = "step-functions", state_machine_arn = "{state_machine}" }}
"#
        ),
    )
    .unwrap();
    Scenario {
        dir,
        file,
        state_machine,
        table,
        events,
        deployments,
    }
}

/// What one soak run found.
#[derive(Debug, Default)]
struct Report {
    seed: u64,
    requests: u64,
    faults: BTreeMap<String, u64>,
    /// Executions per deployment (each must be 1).
    executions: Vec<usize>,
    /// Events with a final outcome, of all events.
    settled: usize,
    events: usize,
    passed: usize,
    dead_letters: usize,
    notes: Vec<String>,
}

impl Report {
    fn problems(&self) -> Vec<String> {
        let mut out = self.notes.clone();
        for (i, n) in self.executions.iter().enumerate() {
            match n {
                1 => {}
                0 => out.push(format!("deployment {} lost: no execution", i + 1)),
                n => out.push(format!("deployment {} doubled: {n} executions", i + 1)),
            }
        }
        if self.settled != self.events {
            out.push(format!(
                "{} of {} events unaccounted for",
                self.events - self.settled,
                self.events
            ));
        }
        if self.dead_letters > 0 {
            out.push(format!(
                "{} dead letter(s) of deployments whose rollout started",
                self.dead_letters
            ));
        }
        out
    }

    fn line(&self) -> String {
        format!(
            "seed {}: {} requests, faults {:?}; executions per deployment {:?}; {}/{} events settled, {} passed, {} dead letters",
            self.seed,
            self.requests,
            self.faults,
            self.executions,
            self.settled,
            self.events,
            self.passed,
            self.dead_letters
        )
    }
}

/// How many executions each deployment of `s` has.
pub(crate) async fn executions(moto: &Moto, s: &Scenario) -> Vec<usize> {
    let cx = cutover_core::BuildContext::new("unused").with_aws(moto.aws());
    let sfn = aws_sdk_sfn::Client::new(cx.aws_config().await);
    let list = sfn
        .list_executions()
        .state_machine_arn(&s.state_machine)
        .send()
        .await
        .unwrap();
    s.deployments
        .iter()
        .map(|name| list.executions().iter().filter(|e| e.name() == name).count())
        .collect()
}

/// Environment for a `cutover` process whose AWS calls go to `url`.
pub(crate) fn aws_env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", url.to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("CUTOVER_LOG", "warn".into()),
    ]
}

/// One seeded run through `cutover serve --source stdin`.
async fn soak_serve(seed: u64, rate: f64) -> Report {
    let moto = moto::shared();
    let s = scenario(moto, seed).await;
    let proxy = FaultProxy::start_with(&moto.url, seed, rate, Duration::from_secs(2), kinds(), None).await;
    let dead = s.dir.path().join("dead-letter.jsonl");
    let (lines, errors, status) = serve_stdin(&s, &proxy.url, &dead, None).await;
    let (requests, faults) = proxy.stats.snapshot();
    let mut report = Report {
        seed,
        requests,
        faults,
        executions: executions(moto, &s).await,
        events: s.events.len(),
        settled: lines.len(),
        passed: lines.iter().filter(|l| l["outcome"] == "passed").count(),
        ..Report::default()
    };
    if !status.success() {
        report.notes.push(format!("serve exited with {status}"));
    }
    report.dead_letters = std::fs::read_to_string(&dead)
        .map(|t| t.lines().count())
        .unwrap_or(0);
    if !report.problems().is_empty() {
        report.notes.push(format!("stderr:\n{}", errors.join("\n")));
    }
    assert!(
        proxy.stats.injected() > 0 || rate == 0.0,
        "the proxy injected no fault"
    );
    report
}

/// Runs `cutover serve --source stdin` on the scenario's events with AWS at `aws_url`, until
/// it exits (at the end of input, or killed): its outcome lines, its stderr and its status.
/// `pid` receives the process id, for a crash point to kill it.
pub(crate) async fn serve_stdin(
    s: &Scenario,
    aws_url: &str,
    dead: &std::path::Path,
    pid: Option<Arc<AtomicU64>>,
) -> (Vec<Value>, Vec<String>, std::process::ExitStatus) {
    let mut child = cutover()
        .arg("serve")
        .arg(&s.file)
        .args(["--source", "stdin", "--pipeline", "ecs-events", "--dead-letter"])
        .arg(dead)
        .envs(aws_env(aws_url))
        .env("CUTOVER_SETTINGS__DATA_DIR", s.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(pid) = pid {
        pid.store(u64::from(child.id()), Ordering::SeqCst);
    }
    let mut stdin = child.stdin.take().unwrap();
    let lines: Vec<String> = s.events.iter().map(Value::to_string).collect();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    tokio::task::spawn_blocking(move || {
        // A killed daemon closes the pipe: later lines are simply not written.
        let writer = std::thread::spawn(move || {
            for line in lines {
                if writeln!(stdin, "{line}").is_err() {
                    break;
                }
            }
        });
        let errors = std::thread::spawn(move || {
            BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        });
        let outcomes: Vec<Value> = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str(&l).ok())
            .collect();
        let status = child.wait().unwrap();
        let _ = writer.join();
        (outcomes, errors.join().unwrap(), status)
    })
    .await
    .unwrap()
}

/// One seeded run through the Lambda host, each error invoked again as Lambda does for
/// asynchronous (EventBridge) invocations, twice.
async fn soak_lambda(seed: u64, rate: f64) -> Report {
    let moto = moto::shared();
    let s = scenario(moto, seed).await;
    let proxy = FaultProxy::start_with(&moto.url, seed, rate, Duration::from_secs(2), kinds(), None).await;
    let ids: Vec<String> = (0..s.events.len()).map(|i| format!("inv-{i}")).collect();
    let api = crate::lambda::RuntimeApi::asynchronous(
        ids.iter()
            .map(String::as_str)
            .zip(s.events.iter().cloned())
            .collect(),
        2,
    );
    let mut env = aws_env(&proxy.url);
    env.push(("CUTOVER_CLOCK", "system".into()));
    let mut child = crate::lambda::spawn_with(&api, &s.file, "ecs-events", s.dir.path(), &env);
    let deadline = Instant::now() + Duration::from_secs(240);
    while !api.settled(s.events.len()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answers = api.wait_for_answers_within(0, Duration::ZERO);
    child.kill().unwrap();
    child.wait().unwrap();
    let (requests, faults) = proxy.stats.snapshot();
    // The last answer to each event is its fate: a response, or an error after Lambda's last
    // retry (which the function's on-failure destination keeps).
    let mut last: BTreeMap<&str, &crate::lambda::Answer> = BTreeMap::new();
    for a in &answers {
        last.insert(crate::lambda::first_id(&a.id), a);
    }
    let mut report = Report {
        seed,
        requests,
        faults,
        executions: executions(moto, &s).await,
        events: s.events.len(),
        settled: last
            .values()
            .filter(|a| a.kind == "response" || a.id.ends_with("_r2"))
            .count(),
        passed: last.values().filter(|a| a.body["outcome"] == "passed").count(),
        dead_letters: last.values().filter(|a| a.kind == "error").count(),
        ..Report::default()
    };
    if !report.problems().is_empty() {
        report.notes.push(format!("answers: {answers:#?}"));
    }
    report
}

fn seeds() -> Vec<u64> {
    if let Some(seed) = std::env::var("CUTOVER_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![seed];
    }
    let n: u64 = std::env::var("CUTOVER_SOAK_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    // Fresh seeds each run (printed), so CI explores instead of replaying the same three.
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 100_000
        * 1000;
    (0..n).map(|i| base + i).collect()
}

/// `CUTOVER_SOAK_KINDS=ErrorAfter,Hang`: inject only these kinds (default: all).
fn kinds() -> Vec<Fault> {
    match std::env::var("CUTOVER_SOAK_KINDS") {
        Ok(list) => list
            .split(',')
            .map(|k| {
                *FAULTS
                    .iter()
                    .find(|f| format!("{f:?}").eq_ignore_ascii_case(k.trim()))
                    .unwrap_or_else(|| panic!("CUTOVER_SOAK_KINDS: no fault kind {k:?}; kinds: {FAULTS:?}"))
            })
            .collect(),
        Err(_) => FAULTS.to_vec(),
    }
}

fn rate() -> f64 {
    std::env::var("CUTOVER_SOAK_RATE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.3)
}

async fn soak(host: &str, run: impl AsyncFn(u64, f64) -> Report) {
    let rate = rate();
    let mut failures = Vec::new();
    let mut totals = (0u64, 0u64, 0usize);
    for seed in seeds() {
        let report = run(seed, rate).await;
        println!("soak {host} rate {rate}: {}", report.line());
        totals.0 += report.requests;
        totals.1 += report.faults.values().sum::<u64>();
        totals.2 += report.dead_letters;
        let problems = report.problems();
        if !problems.is_empty() {
            failures.push(format!(
                "{host}: {} — reproduce with CUTOVER_SOAK_SEED={seed} CUTOVER_SOAK_RATE={rate}\n{}",
                report.line(),
                problems.join("\n")
            ));
        }
    }
    println!(
        "soak {host} rate {rate}: {} requests, {} faults injected, {} dead letters in all",
        totals.0, totals.1, totals.2
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_serve_stdin_exactly_one_execution_per_deployment_under_faults() {
    soak("serve --source stdin", soak_serve).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_lambda_exactly_one_execution_per_deployment_under_faults() {
    soak("lambda", soak_lambda).await;
}

#[tokio::test]
async fn the_proxy_injects_each_kind_and_a_lost_answer_was_applied() {
    // Every request fails; the kinds come out of the seed in some mix.
    let moto = moto::shared();
    let proxy = FaultProxy::start(&moto.url, 7, 1.0, Duration::from_millis(200)).await;
    let cx = cutover_core::BuildContext::new("unused").with_aws(cutover_core::AwsSettings {
        max_attempts: Some(1),
        attempt_timeout: Some(Duration::from_millis(100)),
        ..cutover_core::AwsSettings::emulator(&proxy.url)
    });
    let direct = cutover_core::BuildContext::new("unused").with_aws(moto.aws());
    let table = moto::unique("faults");
    cutover_stages::dedup::DynamoStore::create_table(
        &aws_sdk_dynamodb::Client::new(direct.aws_config().await),
        &table,
    )
    .await
    .unwrap();
    let client = aws_sdk_dynamodb::Client::new(cx.aws_config().await);
    let mut applied_but_failed = 0;
    for i in 0..40 {
        let key = format!("k{i}");
        let result = client
            .put_item()
            .table_name(&table)
            .item("pk", aws_sdk_dynamodb::types::AttributeValue::S(key.clone()))
            .send()
            .await;
        assert!(result.is_err(), "every request fails at rate 1.0");
        let stored = aws_sdk_dynamodb::Client::new(direct.aws_config().await)
            .get_item()
            .table_name(&table)
            .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(key))
            .send()
            .await
            .unwrap();
        applied_but_failed += usize::from(stored.item().is_some());
    }
    let (requests, faults) = proxy.stats.snapshot();
    assert_eq!(requests, 40);
    assert!(faults.values().all(|&n| n > 0), "{faults:?}");
    assert!(
        applied_but_failed > 0,
        "some failed writes were applied (lost answers)"
    );
}

/// The errors the shipped canary's Task states retry (`Retry[0].ErrorEquals` of `Shift10`).
fn canary_retries() -> Vec<String> {
    let definition: Value =
        serde_json::from_str(&std::fs::read_to_string(crate::repo("pipelines/canary.asl.json")).unwrap())
            .unwrap();
    definition["States"]["Shift10"]["Retry"][0]["ErrorEquals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route53_canary_walk_under_faults_reaches_every_weight_with_the_canarys_retries() {
    use crate::traffic::{load, weights, zone};
    use cutover_stages::traffic_shift::route53::aws_sdk_route53 as route53;

    let moto = moto::shared();
    let retries = canary_retries();
    let direct = cutover_core::BuildContext::new("unused").with_aws(moto.aws());
    let client = route53::Client::new(direct.aws_config().await);
    for seed in seeds() {
        let proxy =
            FaultProxy::start_with(&moto.url, seed, rate(), Duration::from_secs(2), kinds(), None).await;
        let dir = tempfile::tempdir().unwrap();
        let cx = cutover_core::BuildContext::new(dir.path()).with_aws(cutover_core::AwsSettings {
            attempt_timeout: Some(Duration::from_secs(1)),
            operation_timeout: Some(Duration::from_secs(20)),
            ..cutover_core::AwsSettings::emulator(&proxy.url)
        });
        let (zone_id, zone_name) = zone(&client).await;
        let record = format!("www.{zone_name}");
        let (blue, green) = (moto::unique("a-blue"), moto::unique("b-green"));
        let router = format!(
            "[pipelines.canary.stages.router]\ntype = \"route53\"\nhosted_zone_id = \"{zone_id}\"\nrecord = \"{record}\"\n\
             sync_timeout = \"20s\"\npoll_interval = \"100ms\"\n\
             blue = {{ set_identifier = \"{blue}\", values = [\"192.0.2.10\"] }}\n\
             green = {{ set_identifier = \"{green}\", values = [\"192.0.2.20\"] }}"
        );
        let pipeline = load(&router, &cx).await.unwrap();
        for w in [10i64, 50, 100] {
            // As Step Functions runs the Task: the first try and the canary's 3 retries.
            let mut tries = Vec::new();
            for _ in 0..4 {
                let out = pipeline
                    .run(cutover_core::Event::from_value(json!({ "weight": w })))
                    .await;
                match &out {
                    cutover_core::Outcome::Passed { .. } => {
                        tries.push("passed".to_owned());
                        break;
                    }
                    cutover_core::Outcome::Failed { error, .. } => {
                        let name = error.error_name().to_owned();
                        assert!(
                            retries.contains(&name),
                            "seed {seed}, weight {w}: a fault ended as {name}, which the canary does not retry \
                             (it would roll back): {error:?}"
                        );
                        tries.push(name);
                    }
                    other => panic!("seed {seed}, weight {w}: {other}"),
                }
            }
            assert_eq!(
                tries.last().map(String::as_str),
                Some("passed"),
                "seed {seed}, weight {w}: {tries:?}"
            );
            assert_eq!(
                weights(&client, &zone_id, &record).await,
                vec![(blue.clone(), 100 - w), (green.clone(), w)],
                "seed {seed}: after shifting to {w} ({tries:?})"
            );
        }
        let (requests, faults) = proxy.stats.snapshot();
        println!(
            "route53 seed {seed} rate {}: {requests} requests, faults {faults:?}",
            rate()
        );
    }
}

/// Service slots in DynamoDB through a proxy that loses answers (the write applied, a 500
/// returned): a claim tried again still learns which rollout it replaced, so the older one is
/// superseded; and a deployment whose event arrives after a later one's never takes the slot.
#[tokio::test]
async fn service_slots_survive_lost_answers_and_stay_with_the_later_deployment() {
    use cutover_stages::rollouts::{Claim, DynamoRolloutStore, RolloutStore};

    let moto = moto::shared();
    let direct = cutover_core::BuildContext::new("unused").with_aws(moto.aws());
    let table = moto::unique("slots");
    DynamoRolloutStore::create_table(&aws_sdk_dynamodb::Client::new(direct.aws_config().await), &table)
        .await
        .unwrap();
    let taken = |previous: Option<&str>| Claim::Taken {
        previous: previous.map(str::to_owned),
    };
    for seed in 0..4 {
        let proxy = FaultProxy::start_with(
            &moto.url,
            seed,
            0.5,
            Duration::from_millis(200),
            vec![Fault::ErrorAfter],
            None,
        )
        .await;
        let cx = cutover_core::BuildContext::new("unused").with_aws(cutover_core::AwsSettings {
            max_attempts: Some(1),
            ..cutover_core::AwsSettings::emulator(&proxy.url)
        });
        let store = DynamoRolloutStore::new(aws_sdk_dynamodb::Client::new(cx.aws_config().await), &table);
        // Each claim is tried until it answers, as a redelivered event tries it again.
        let claim = async |rollout: &str, at: i64| loop {
            if let Ok(claim) = store.claim_service(&format!("cats-{seed}"), rollout, at).await {
                break claim;
            }
        };
        assert_eq!(claim("v2", 200).await, taken(None));
        assert_eq!(claim("v3", 300).await, taken(Some("v2")), "seed {seed}");
        assert_eq!(
            claim("v1", 100).await,
            Claim::Later {
                holder: "v3".into(),
                at: 300
            },
            "seed {seed}: a late event of an older deployment"
        );
        assert_eq!(
            claim("v3", 300).await,
            taken(Some("v2")),
            "seed {seed}: asked again"
        );
        let (_, injected) = proxy.stats.snapshot();
        assert!(
            injected.values().sum::<u64>() > 0,
            "seed {seed}: some answers were lost and the claims tried again"
        );
    }
}
