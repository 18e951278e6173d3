//! `cutover serve` as a daemon: the real binary on a loopback port (or stdin, or an SQS queue in
//! moto), driven over plain HTTP/1.1 from the test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{cutover, moto, repo};

/// A test pipeline file: `events` (filter + in-memory dedup per task, fast) and `slow` (dedup
/// per task that does not wait for a claim in progress, then a health check against
/// `probe_port`, which never answers: the check takes its 2 s timeout).
fn pipeline_file(dir: &Path, probe_port: u16) -> PathBuf {
    pipeline_file_with(dir, probe_port, "2s")
}

/// [`pipeline_file`] with the health check's timeout.
fn pipeline_file_with(dir: &Path, probe_port: u16, probe_timeout: &str) -> PathBuf {
    let path = dir.join("serve.toml");
    let text = format!(
        r#"
[pipelines.events]
[[pipelines.events.stages]]
type = "filter"
cluster = "catsndogsECScluster"
green = {{ container = "cats-green" }}

[[pipelines.events.stages]]
type = "dedup"
store = {{ type = "memory" }}
key = "{{detail.taskArn}}"

[pipelines.slow]
[[pipelines.slow.stages]]
type = "dedup"
store = {{ type = "memory" }}
key = "{{detail.taskArn}}"
# A duplicate meeting the claim in progress does not wait for it: it fails retryably at once
# (Dedup.InProgress), which is what these tests send through the hosts.
wait = "0s"

[[pipelines.slow.stages]]
type = "health-check"
probe = {{ type = "http", url = "http://127.0.0.1:{probe_port}/", timeout = "{probe_timeout}", healthy_threshold = 1, unhealthy_threshold = 1, max_checks = 1 }}
"#
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The fixture of a green task reaching RUNNING, with its own id and task ARN.
fn green_event(id: &str, task: &str) -> Value {
    let mut event = crate::fixture("task-fargate-running.json");
    event["id"] = json!(id);
    event["detail"]["taskArn"] = json!(format!(
        "arn:aws:ecs:us-west-2:111122223333:task/catsndogsECScluster/{task}"
    ));
    event
}

/// A green event without `detail.taskArn`: passes the filter, then dedup cannot build its key
/// (a permanent failure).
fn keyless_event(id: &str) -> Value {
    let mut event = green_event(id, "x");
    event["detail"].as_object_mut().unwrap().remove("taskArn");
    event
}

fn noise_event() -> Value {
    let text = std::fs::read_to_string(repo("tests/fixtures/task-ec2-pending.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A running `cutover serve`.
pub(crate) struct Daemon {
    child: Child,
    addr: Option<String>,
    stderr: Arc<Mutex<String>>,
    /// The thread copying stderr; joined once the process exited, so nothing it wrote last is
    /// missed.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    /// Starts `cutover serve` with `args`; for the http source, waits for the bound address.
    pub(crate) fn start(args: &[&str], env: &[(&str, String)], stdin: Stdio) -> Daemon {
        let mut cmd = cutover();
        cmd.arg("serve")
            .args(args)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("cutover serve starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel::<String>();
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&format!("{line}\n"));
                let _ = tx.send(line);
            }
        });
        let mut daemon = Daemon {
            child,
            addr: None,
            stderr,
            reader: Some(reader),
        };
        let wants_http = !args.contains(&"--source") || args.contains(&"--metrics-listen");
        let ready = if wants_http {
            " on http://"
        } else {
            "cutover serve: "
        };
        let line = wait_for_line(&rx, ready, Duration::from_secs(60))
            .unwrap_or_else(|| panic!("cutover serve did not start; stderr:\n{}", daemon.stderr()));
        if wants_http {
            daemon.addr = Some(line.rsplit("http://").next().unwrap().trim().to_owned());
        }
        daemon
    }

    pub(crate) fn addr(&self) -> &str {
        self.addr.as_deref().expect("an http daemon")
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn post(&self, headers: &[(&str, &str)], body: &[u8]) -> Response {
        request(self.addr(), "POST", "/events", headers, body)
    }

    fn post_json(&self, key: &str, body: &Value) -> Response {
        self.post(&[("x-api-key", key)], body.to_string().as_bytes())
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Sends SIGTERM and waits for the exit code (at most `within`).
    fn terminate(&mut self, within: Duration) -> i32 {
        self.signal("TERM");
        self.wait(within)
    }

    fn wait(&mut self, within: Duration) -> i32 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The pipe closes with the process (and any child holding it): read to its end.
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "cutover serve did not exit within {within:?}; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the daemon at `addr` reports `n` events in flight (its `/metrics`).
fn wait_in_flight(addr: &str, n: usize) {
    let line = format!("cutover_serve_in_flight {n}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !request(addr, "GET", "/metrics", &[], b"")
        .body
        .lines()
        .any(|l| l == line)
    {
        assert!(Instant::now() < deadline, "never {n} event(s) in flight");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `cutover serve FILE --pipeline PIPELINE --listen 127.0.0.1:0 --state STATE` plus `extra`.
fn serve_http(file: &Path, pipeline: &str, state: &Path, extra: &[&str], env: &[(&str, String)]) -> Daemon {
    let mut args = vec![
        file.to_str().unwrap(),
        "--pipeline",
        pipeline,
        "--listen",
        "127.0.0.1:0",
        "--state",
        state.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Daemon::start(&args, env, Stdio::null())
}

fn wait_for_line(rx: &Receiver<String>, needle: &str, within: Duration) -> Option<String> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        let line = rx.recv_timeout(left).ok()?;
        if line.contains(needle) {
            return Some(line);
        }
    }
}

#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: String,
    pub(crate) body: String,
}

impl Response {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// One HTTP/1.1 request on a fresh connection.
pub(crate) fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut stream = TcpStream::connect(addr).expect("the daemon accepts connections");
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let framed = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    if !framed("content-length") && !framed("transfer-encoding") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) and close before reading a body it does not want.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("a response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Response {
        status,
        headers: head.to_owned(),
        body: body.to_owned(),
    }
}

fn next(stdout: &mut BufReader<ChildStdout>) -> Value {
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    serde_json::from_str::<Value>(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A port that accepts connections (kernel backlog) but never answers.
fn black_hole() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").unwrap()
}

/// Lets one health check through a held [`black_hole`]: answers its request 503 (green is
/// unhealthy), so the check ends when the test says, not when a timer runs out.
fn open_gate(hole: &TcpListener) {
    answer_503(hole.accept().unwrap().0);
}

/// Answers a health check held at a [`black_hole`] (accepted earlier) 503.
fn answer_503(mut conn: std::net::TcpStream) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    let _ =
        conn.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
}

#[test]
fn http_authentication_limits_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline_file(dir.path(), 9);
    let state = dir.path().join("state");
    let daemon = serve_http(
        &file,
        "events",
        &state,
        &[
            "--api-key-env",
            "TEST_KEY",
            "--basic-auth-env",
            "TEST_BASIC",
            "--max-body",
            "8KiB",
        ],
        &[
            ("TEST_KEY", "s3cret-key".into()),
            ("TEST_BASIC", "ops:pa55".into()),
        ],
    );
    let event = green_event("auth-1", "auth");
    let body = event.to_string();

    let missing = daemon.post(&[], body.as_bytes());
    assert_eq!(missing.status, 401, "{missing:?}");
    assert!(missing.json()["error"].as_str().unwrap().contains("credentials"));
    assert_eq!(
        missing.header("www-authenticate"),
        Some("Basic realm=\"cutover\"")
    );
    for wrong in [
        ("x-api-key", "s3cret-kez"),
        ("x-api-key", "s3cret-key-and-more"),
        ("authorization", "Bearer nope"),
        ("authorization", "Basic b3BzOnBhNTY="), // ops:pa56
    ] {
        let r = daemon.post(&[wrong], body.as_bytes());
        assert_eq!(r.status, 401, "{wrong:?}: {r:?}");
    }
    let by_key = daemon.post(&[("x-api-key", "s3cret-key")], body.as_bytes());
    assert_eq!(by_key.status, 200, "{by_key:?}");
    assert_eq!(by_key.json()["results"][0]["outcome"], "passed");
    let by_bearer = daemon.post(&[("authorization", "Bearer s3cret-key")], body.as_bytes());
    assert_eq!(by_bearer.status, 200, "{by_bearer:?}");
    assert_eq!(by_bearer.json()["results"][0]["outcome"], "dropped");
    let by_basic = daemon.post(&[("authorization", "Basic b3BzOnBhNTU=")], body.as_bytes());
    assert_eq!(by_basic.status, 200, "{by_basic:?}");

    // Too large: refused from the declared length, before the body is read…
    let declared = daemon.post(&[("x-api-key", "s3cret-key"), ("content-length", "9000")], b"");
    assert_eq!(declared.status, 413, "{declared:?}");
    assert!(declared.json()["error"].as_str().unwrap().contains("8192 bytes"));
    // …and while reading a body that does not say its length.
    let big = format!("[{}]", [body.as_str(); 4].join(","));
    let chunked = format!("{:x}\r\n{big}\r\n0\r\n\r\n", big.len());
    let streamed = daemon.post(
        &[("x-api-key", "s3cret-key"), ("transfer-encoding", "chunked")],
        chunked.as_bytes(),
    );
    assert_eq!(streamed.status, 413, "{streamed:?}");

    let invalid = daemon.post(&[("x-api-key", "s3cret-key")], b"{\"id\": ");
    assert_eq!(invalid.status, 400, "{invalid:?}");
    assert!(
        invalid.json()["error"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    let not_object = daemon.post(&[("x-api-key", "s3cret-key")], b"[{}, 3]");
    assert_eq!(not_object.status, 400);
    assert!(not_object.json()["error"].as_str().unwrap().contains("[1]"));

    let wrong_method = request(daemon.addr(), "GET", "/events", &[], b"");
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header("allow"), Some("POST"));
    assert_eq!(request(daemon.addr(), "GET", "/nope", &[], b"").status, 404);
}

#[test]
fn http_runs_events_and_batches_and_dead_letters_permanent_failures() {
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline_file(dir.path(), 9);
    let state = dir.path().join("state");
    let mut daemon = serve_http(
        &file,
        "events",
        &state,
        &["--api-key-env", "TEST_KEY"],
        &[("TEST_KEY", "k".into())],
    );
    assert_eq!(request(daemon.addr(), "GET", "/healthz", &[], b"").status, 200);

    // The recorded fixture, exactly as EventBridge would send it.
    let fixture = std::fs::read(repo("tests/fixtures/task-fargate-running.json")).unwrap();
    let first = daemon.post(
        &[
            ("x-api-key", "k"),
            ("content-type", "application/json; charset=utf-8"),
        ],
        &fixture,
    );
    assert_eq!(first.status, 200, "{first:?}");
    let result = &first.json()["results"][0];
    assert_eq!(result["id"], "1df9fd78-9c65-4938-ab05-37e65affb229");
    assert_eq!(result["outcome"], "passed", "{result}");

    // A batch: noise, a redelivery of the first, a new task, and one that cannot succeed.
    let batch = json!([
        noise_event(),
        serde_json::from_slice::<Value>(&fixture).unwrap(),
        green_event("b-2", "two"),
        keyless_event("b-bad")
    ]);
    let response = daemon.post_json("k", &batch);
    assert_eq!(response.status, 200, "{response:?}");
    let results = response.json()["results"].as_array().unwrap().clone();
    let summary: Vec<(String, String)> = results
        .iter()
        .map(|r| {
            (
                r["outcome"].as_str().unwrap().to_owned(),
                r["stage"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("dropped", "filter"),
            ("dropped", "dedup"),
            ("passed", ""),
            ("failed", "dedup")
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    assert_eq!(results[3]["retryable"], false);
    assert_eq!(results[3]["dead_letter"], true);
    assert_eq!(results[3]["id"], "b-bad");

    let letters = read_jsonl(&state.join("dead-letter.jsonl"));
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter["pipeline"], "events");
    assert_eq!(letter["stage"], "dedup");
    assert_eq!(letter["kind"], "Dedup.KeyMissing");
    assert_eq!(letter["retryable"], false);
    assert_eq!(letter["event"], batch[3], "the event is kept whole");
    assert!(letter["error"].as_str().unwrap().contains("detail.taskArn"));
    assert!(letter["time"].as_str().unwrap().ends_with('Z'));

    let metrics = request(daemon.addr(), "GET", "/metrics", &[], b"");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    for line in [
        "# TYPE cutover_events_total counter",
        r#"cutover_events_total{pipeline="events",outcome="passed",stage=""} 2"#,
        r#"cutover_events_total{pipeline="events",outcome="dropped",stage="filter"} 1"#,
        r#"cutover_events_total{pipeline="events",outcome="dropped",stage="dedup"} 1"#,
        r#"cutover_events_total{pipeline="events",outcome="failed",stage="dedup"} 1"#,
        r#"cutover_dead_letters_total{pipeline="events",stage="dedup"} 1"#,
        r#"cutover_http_requests_total{route="/events",status="200"} 2"#,
        "cutover_serve_in_flight 0",
        "cutover_serve_concurrency 16",
    ] {
        assert!(
            metrics.body.lines().any(|l| l == line),
            "missing {line:?} in:\n{}",
            metrics.body
        );
    }

    // Rotated away (as logrotate moves a file): the next letter goes to a new file at the path.
    let rotated = state.join("dead-letter.jsonl.1");
    std::fs::rename(state.join("dead-letter.jsonl"), &rotated).unwrap();
    let response = daemon.post(
        &[("x-api-key", "k")],
        keyless_event("after-rotation").to_string().as_bytes(),
    );
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(read_jsonl(&rotated).len(), 1);
    let letters = read_jsonl(&state.join("dead-letter.jsonl"));
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["id"], "after-rotation");

    assert_eq!(
        daemon.terminate(Duration::from_secs(30)),
        0,
        "{}",
        daemon.stderr()
    );
    assert!(
        daemon
            .stderr()
            .contains("stopped; 6 events: 2 passed, 2 dropped, 2 failed (2 dead-lettered)"),
        "{}",
        daemon.stderr()
    );
}

#[test]
fn sigterm_finishes_in_flight_events_and_a_retryable_failure_answers_503() {
    // The health check waits at the gate until the test opens it: no race with a timer.
    let hole = black_hole();
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline_file_with(dir.path(), hole.local_addr().unwrap().port(), "60s");
    let state = dir.path().join("state");
    let mut daemon = serve_http(&file, "slow", &state, &["--no-auth"], &[]);
    let addr = daemon.addr().to_owned();
    let event = green_event("slow-1", "slow").to_string();
    let slow = {
        let (addr, event) = (addr.clone(), event.clone());
        std::thread::spawn(move || {
            let r = request(&addr, "POST", "/events", &[], event.as_bytes());
            (r, Instant::now())
        })
    };
    wait_in_flight(&addr, 1);
    // Its health check has connected: the first event holds the dedup claim (in flight alone
    // does not prove it: the request is admitted before its task claims).
    let (held, _) = hole.accept().unwrap();

    // The same task again while the first is still in its health check: dedup says "in
    // progress, retry later", so the sender is told to retry and nothing is dead-lettered.
    let again = request(
        &addr,
        "POST",
        "/events",
        &[],
        green_event("slow-2", "slow").to_string().as_bytes(),
    );
    assert_eq!(again.status, 503, "{again:?}");
    let body = again.json();
    assert!(body["error"].as_str().unwrap().contains("send the request again"));
    assert_eq!(body["results"][0]["retryable"], true, "{body}");
    assert_eq!(body["results"][0]["kind"], "Dedup.InProgress", "{body}");

    let signalled = Instant::now();
    daemon.signal("TERM");
    // Still in flight after the signal; now let its health check end.
    std::thread::sleep(Duration::from_millis(200));
    assert!(!slow.is_finished(), "answered before its health check ended");
    answer_503(held);
    let (response, answered) = slow.join().unwrap();
    assert_eq!(response.status, 200, "{response:?}");
    let result = &response.json()["results"][0];
    assert_eq!(result["outcome"], "passed", "{result}");
    assert_eq!(
        result["context"]["State"], "unhealthy",
        "the health check ran to its end: {result}"
    );
    assert!(
        answered > signalled,
        "the in-flight request was answered after SIGTERM"
    );
    assert_eq!(daemon.wait(Duration::from_secs(30)), 0, "{}", daemon.stderr());
    assert!(TcpStream::connect(&addr).is_err(), "no longer listening");
    assert!(
        !state.join("dead-letter.jsonl").exists() || read_jsonl(&state.join("dead-letter.jsonl")).is_empty()
    );
    assert!(
        daemon
            .stderr()
            .contains("2 events: 1 passed, 0 dropped, 1 failed (0 dead-lettered)"),
        "{}",
        daemon.stderr()
    );
}

#[test]
fn requests_beyond_max_requests_are_answered_429_and_later_ones_are_served() {
    let hole = black_hole();
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline_file_with(dir.path(), hole.local_addr().unwrap().port(), "60s");
    let state = dir.path().join("state");
    let daemon = serve_http(
        &file,
        "slow",
        &state,
        &["--no-auth", "--concurrency", "1", "--max-requests", "1"],
        &[],
    );
    let addr = daemon.addr().to_owned();
    let slow = {
        let (addr, event) = (addr.clone(), green_event("busy-1", "busy-1").to_string());
        std::thread::spawn(move || request(&addr, "POST", "/events", &[], event.as_bytes()))
    };
    wait_in_flight(&addr, 1);
    // The one admitted request is held in its health check (at the gate): another is turned
    // away at once, before its body is read, and told when to come back.
    let busy = request(
        &addr,
        "POST",
        "/events",
        &[],
        green_event("busy-2", "busy-2").to_string().as_bytes(),
    );
    assert_eq!(busy.status, 429, "{busy:?}");
    assert!(
        !slow.is_finished(),
        "answered while the admitted request still runs"
    );
    assert_eq!(busy.header("retry-after"), Some("1"));
    assert!(
        busy.json()["error"].as_str().unwrap().contains("--max-requests"),
        "{busy:?}"
    );
    // Health and metrics are not requests for events: still served.
    assert_eq!(request(&addr, "GET", "/healthz", &[], b"").status, 200);
    open_gate(&hole);
    assert_eq!(slow.join().unwrap().status, 200);
    // Once the first is answered, the retried request gets in (and its check through the gate).
    let retried = {
        let (addr, event) = (addr.clone(), green_event("busy-2", "busy-2").to_string());
        std::thread::spawn(move || request(&addr, "POST", "/events", &[], event.as_bytes()))
    };
    open_gate(&hole);
    let retried = retried.join().unwrap();
    assert_eq!(retried.status, 200, "{retried:?}");
    assert_eq!(retried.json()["results"][0]["outcome"], "passed");
    let metrics = request(&addr, "GET", "/metrics", &[], b"");
    assert!(
        metrics.body.contains(r#"route="/events",status="429"} 1"#),
        "{}",
        metrics.body
    );
}

#[test]
fn stdin_source_processes_lines_as_they_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline_file(dir.path(), 9);
    let dead_letters = dir.path().join("dl/letters.jsonl");
    let mut daemon = Daemon::start(
        &[
            file.to_str().unwrap(),
            "--pipeline",
            "events",
            "--source",
            "stdin",
            "--state",
            dir.path().join("state").to_str().unwrap(),
            "--dead-letter",
            dead_letters.to_str().unwrap(),
        ],
        &[],
        Stdio::piped(),
    );
    let mut stdin = daemon.child.stdin.take().unwrap();
    let mut stdout = BufReader::new(daemon.child.stdout.take().unwrap());

    // One line, and its outcome comes back while stdin is still open.
    writeln!(stdin, "{}", green_event("s-1", "stdin")).unwrap();
    stdin.flush().unwrap();
    let first = next(&mut stdout);
    assert_eq!(first["source"], "<stdin>:1");
    assert_eq!(first["outcome"], "passed", "{first}");

    writeln!(stdin, "\n{{\"id\": \n{}", keyless_event("s-bad")).unwrap();
    drop(stdin);
    let mut rest = [next(&mut stdout), next(&mut stdout)];
    rest.sort_by_key(|v| v["source"].as_str().unwrap().to_owned());
    assert_eq!(rest[0]["source"], "<stdin>:3");
    assert_eq!(rest[0]["stage"], "input");
    assert_eq!(rest[1]["source"], "<stdin>:4");
    assert_eq!(rest[1]["stage"], "dedup");
    assert_eq!(daemon.wait(Duration::from_secs(30)), 0, "{}", daemon.stderr());

    let mut letters = read_jsonl(&dead_letters);
    letters.sort_by_key(|v| v["origin"].as_str().unwrap().to_owned());
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert_eq!(
        letters[0]["event"], "{\"id\":",
        "text that is not JSON is kept as text"
    );
    assert_eq!(letters[0]["kind"], "InvalidInput");
    assert_eq!(letters[1]["id"], "s-bad");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_source_deletes_finished_messages_and_keeps_retryable_ones() {
    use aws_sdk_sqs::types::QueueAttributeName;

    let moto = moto::shared();
    let cx = cutover_core::BuildContext::new("unused").with_aws(moto.aws());
    let sqs = aws_sdk_sqs::Client::new(cx.aws_config().await);
    let create = |name: String| {
        let sqs = sqs.clone();
        async move {
            sqs.create_queue()
                .queue_name(name)
                .attributes(QueueAttributeName::VisibilityTimeout, "60")
                .send()
                .await
                .expect("create queue")
                .queue_url
                .unwrap()
        }
    };
    let queue = create(moto::unique("serve-events")).await;
    let dlq = create(moto::unique("serve-dlq")).await;

    let hole = black_hole();
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline_file(dir.path(), hole.local_addr().unwrap().port());
    let state = dir.path().join("state");
    // Two deliveries of one task (the second finds the first in progress: retryable), one event
    // that can never succeed, one SNS-wrapped noise event.
    let sns = json!({
        "Type": "Notification",
        "MessageId": "n-1",
        "TopicArn": "arn:aws:sns:us-east-1:111122223333:ecs",
        "Message": json!({"id": "sns-1", "detail": {"taskArn": "arn:task/sns"}}).to_string(),
    });
    for body in [
        green_event("q-1", "queued"),
        green_event("q-2", "queued"),
        keyless_event("q-bad"),
        sns,
    ] {
        sqs.send_message()
            .queue_url(&queue)
            .message_body(body.to_string())
            .send()
            .await
            .unwrap();
    }
    let mut daemon = Daemon::start(
        &[
            file.to_str().unwrap(),
            "--pipeline",
            "slow",
            "--source",
            "sqs",
            "--queue-url",
            &queue,
            "--wait-time",
            "1",
            "--state",
            state.to_str().unwrap(),
            "--dead-letter-queue",
            &dlq,
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        &moto.env(),
        Stdio::null(),
    );

    // Finished messages are deleted; the retryable one stays in flight until its visibility
    // timeout.
    let counts = || async {
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(&queue)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap();
        let get = |name| {
            attrs
                .attributes()
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(99)
        };
        (
            get(QueueAttributeName::ApproximateNumberOfMessages),
            get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (visible, in_flight) = counts().await;
        if visible == 0 && in_flight == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "visible {visible}, in flight {in_flight}; stderr:\n{}",
            daemon.stderr()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let metrics = request(daemon.addr(), "GET", "/metrics", &[], b"");
    for line in [
        r#"cutover_events_total{pipeline="slow",outcome="passed",stage=""} 2"#,
        r#"cutover_events_total{pipeline="slow",outcome="failed",stage="dedup"} 2"#,
        r#"cutover_dead_letters_total{pipeline="slow",stage="dedup"} 1"#,
    ] {
        assert!(
            metrics.body.lines().any(|l| l == line),
            "missing {line:?} in:\n{}",
            metrics.body
        );
    }
    assert_eq!(request(daemon.addr(), "GET", "/healthz", &[], b"").status, 200);
    assert_eq!(request(daemon.addr(), "POST", "/events", &[], b"{}").status, 404);

    // The permanent failure went to the dead-letter queue.
    let letters = sqs
        .receive_message()
        .queue_url(&dlq)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    let letters: Vec<Value> = letters
        .messages()
        .iter()
        .map(|m| serde_json::from_str(m.body().unwrap()).unwrap())
        .collect();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["id"], "q-bad");
    assert_eq!(letters[0]["stage"], "dedup");
    assert!(letters[0]["origin"].as_str().unwrap().starts_with("sqs:"));

    let code = tokio::task::spawn_blocking(move || {
        let code = daemon.terminate(Duration::from_secs(30));
        (code, daemon.stderr())
    })
    .await
    .unwrap();
    assert_eq!(code.0, 0, "{}", code.1);
    assert!(
        code.1
            .contains("4 events: 2 passed, 0 dropped, 2 failed (1 dead-lettered)"),
        "{}",
        code.1
    );
}

#[test]
fn an_event_whose_dead_letter_cannot_be_written_is_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline_file(dir.path(), 9);
    let mut daemon = serve_http(
        &file,
        "events",
        &dir.path().join("state"),
        &[
            "--no-auth",
            // Every write fails with ENOSPC.
            "--dead-letter",
            "/dev/full",
        ],
        &[],
    );
    let response = daemon.post(&[], keyless_event("full-1").to_string().as_bytes());
    assert_eq!(response.status, 503, "{response:?}");
    assert_eq!(response.header("retry-after"), Some("1"));
    let body = response.json();
    assert_eq!(body["results"][0]["dead_letter"], false, "{body}");
    assert_eq!(body["results"][0]["retryable"], false, "{body}");
    // Passing events are still acknowledged.
    let ok = daemon.post(&[], green_event("full-2", "full").to_string().as_bytes());
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(
        daemon.terminate(Duration::from_secs(30)),
        0,
        "{}",
        daemon.stderr()
    );
    assert!(
        daemon.stderr().contains("1 dead letter(s) could not be written"),
        "{}",
        daemon.stderr()
    );
}

#[test]
fn http_refuses_to_start_without_credentials_unless_told_no_auth() {
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline_file(dir.path(), 9);
    let out = cutover()
        .arg("serve")
        .arg(&file)
        .args(["--pipeline", "events", "--listen", "127.0.0.1:0"])
        .env_remove("CUTOVER_API_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the http source needs credentials")
            && err.contains("--api-key-env")
            && err.contains("--no-auth"),
        "{err}"
    );
}

#[test]
fn stdin_retries_a_retryable_failure_then_dead_letters_it() {
    // DynamoDB on a port that is held but never listens: every claim is refused, retryably.
    let held = tokio::net::TcpSocket::new_v4().unwrap();
    held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = held.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ddb.toml");
    std::fs::write(
        &file,
        "[pipelines.p]\n[[pipelines.p.stages]]\ntype = \"dedup\"\nkey = \"{detail.taskArn}\"\n\
         store = { type = \"dynamodb\", table = \"t\" }\n",
    )
    .unwrap();
    let dead = dir.path().join("dead.jsonl");
    let mut child = cutover()
        .arg("serve")
        .arg(&file)
        .args(["--source", "stdin", "--dead-letter"])
        .arg(&dead)
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_MAX_ATTEMPTS", "1")
        .env("CUTOVER_LOG", "info")
        .env("CUTOVER_SETTINGS__DATA_DIR", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{}", green_event("r-1", "retried")).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Tried four times (the first and the source's 3 retries), then kept as a dead letter.
    assert_eq!(stderr.matches("retry_in_ms").count(), 3, "{stderr}");
    let outcome: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcome["outcome"], "failed", "{outcome}");
    assert_eq!(outcome["dead_letter"], true, "{outcome}");
    let letters = read_jsonl(&dead);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["id"], "r-1");
    assert!(
        letters[0]["error"].as_str().unwrap().contains("dynamodb:PutItem"),
        "{letters:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqs_message_of_a_killed_daemon_comes_back_and_is_processed_once() {
    use aws_sdk_sqs::types::QueueAttributeName;

    let moto = moto::shared();
    let cx = cutover_core::BuildContext::new("unused").with_aws(moto.aws());
    let sqs = aws_sdk_sqs::Client::new(cx.aws_config().await);
    let queue = sqs
        .create_queue()
        .queue_name(moto::unique("serve-return"))
        .attributes(QueueAttributeName::VisibilityTimeout, "1")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    sqs.send_message()
        .queue_url(&queue)
        .message_body(green_event("v-1", "returns").to_string())
        .send()
        .await
        .unwrap();

    // `notify` records each pass; dedup (SQLite in the state directory, shared by both
    // daemons) holds the claim; the health check waits at a gate that is never opened for the
    // first daemon.
    let hole = black_hole();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let file = dir.path().join("sqs.toml");
    std::fs::write(
        &file,
        format!(
            "[pipelines.p]\n[[pipelines.p.stages]]\ntype = \"notify\"\nfile = \"passes.jsonl\"\non = [\"passed\"]\n\n\
             [[pipelines.p.stages]]\ntype = \"dedup\"\nkey = \"{{detail.taskArn}}\"\nlease = \"3s\"\n\n\
             [[pipelines.p.stages]]\ntype = \"health-check\"\n\
             probe = {{ type = \"http\", url = \"http://127.0.0.1:{}/\", timeout = \"60s\", healthy_threshold = 1, unhealthy_threshold = 1, max_checks = 1 }}\n",
            hole.local_addr().unwrap().port()
        ),
    )
    .unwrap();
    let args = [
        file.to_str().unwrap(),
        "--source",
        "sqs",
        "--queue-url",
        &queue,
        "--wait-time",
        "1",
        "--state",
        state.to_str().unwrap(),
        "--metrics-listen",
        "127.0.0.1:0",
    ];
    let mut first = Daemon::start(&args, &moto.env(), Stdio::null());
    // Received and claimed, then stuck in its health check: killed there.
    let (conn, _) = tokio::task::spawn_blocking({
        let hole = hole.try_clone().unwrap();
        move || hole.accept().unwrap()
    })
    .await
    .unwrap();
    first.signal("KILL");
    first.wait(Duration::from_secs(30));
    drop(conn);

    // The second daemon gets the message back after its visibility timeout; the same event
    // takes its dead claim over at once, and this time green answers.
    let _gate = std::thread::spawn(move || {
        loop {
            open_gate(&hole);
        }
    });
    let mut second = Daemon::start(&args, &moto.env(), Stdio::null());
    let deadline = Instant::now() + Duration::from_secs(60);
    let passes = state.join("passes.jsonl");
    while read_jsonl(&passes).is_empty() {
        assert!(Instant::now() < deadline, "never processed: {}", second.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Deleted once it passed: the queue is empty, in flight or not.
    loop {
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(&queue)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap();
        let a = attrs.attributes().unwrap();
        if a[&QueueAttributeName::ApproximateNumberOfMessages] == "0"
            && a[&QueueAttributeName::ApproximateNumberOfMessagesNotVisible] == "0"
        {
            break;
        }
        assert!(Instant::now() < deadline, "not deleted: {a:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Two seconds more (two visibility timeouts): nothing comes back, nothing passes again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        second.terminate(Duration::from_secs(30)),
        0,
        "{}",
        second.stderr()
    );
    let passes = read_jsonl(&passes);
    assert_eq!(passes.len(), 1, "processed once: {passes:?}");
}
