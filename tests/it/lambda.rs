//! The Lambda host against an in-test server speaking the Lambda Runtime API over HTTP
//! (`/2018-06-01/runtime/invocation/next`, `/response`, `/error`).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{cutover, fixture};

/// What the function answered for one invocation.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    /// The invocation's request id (`ID`, or `ID_rN` for Lambda's N-th retry of it).
    pub(crate) id: String,
    /// `response` or `error`.
    pub(crate) kind: &'static str,
    pub(crate) body: Value,
    pub(crate) error_type: Option<String>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<(String, Value)>,
    answers: Vec<Answer>,
    first_poll: Option<Instant>,
    /// Lambda's retries of an asynchronous invocation that ended in an error.
    async_retries: u32,
    payloads: std::collections::HashMap<String, Value>,
}

/// A minimal Runtime API: hands out queued events, records responses and errors.
pub(crate) struct RuntimeApi {
    pub(crate) addr: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl RuntimeApi {
    pub(crate) fn start(events: Vec<(&str, Value)>) -> Self {
        Self::asynchronous(events, 0)
    }

    /// Invokes like an asynchronous invocation (EventBridge's): an invocation that ends in an
    /// error is invoked again, up to `retries` times (Lambda's default is 2; its waits of about
    /// 1 and 2 minutes are left out), with request ids `ID_r1`, `ID_r2`, ….
    pub(crate) fn asynchronous(events: Vec<(&str, Value)>, retries: u32) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(State {
            payloads: events
                .iter()
                .map(|(id, v)| ((*id).to_owned(), v.clone()))
                .collect(),
            queue: events.into_iter().map(|(id, v)| (id.to_owned(), v)).collect(),
            async_retries: retries,
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (s, st) = (s.clone(), st.clone());
                std::thread::spawn(move || serve(conn, &s, &st));
            }
        });
        Self { addr, state, stop }
    }

    /// Queues one more invocation.
    pub(crate) fn push(&self, id: &str, payload: Value) {
        let mut state = self.state.lock().unwrap();
        state.payloads.insert(id.to_owned(), payload.clone());
        state.queue.push_back((id.to_owned(), payload));
    }

    pub(crate) fn wait_for_answers(&self, n: usize) -> Vec<Answer> {
        self.wait_for_answers_within(n, Duration::from_secs(60))
    }

    /// Every answer so far, once there are `n` or `within` has passed.
    pub(crate) fn wait_for_answers_within(&self, n: usize, within: Duration) -> Vec<Answer> {
        let deadline = Instant::now() + within;
        loop {
            let answers = self.state.lock().unwrap().answers.clone();
            if answers.len() >= n || Instant::now() > deadline {
                return answers;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether every event has been answered for the last time (nothing queued or retried).
    pub(crate) fn settled(&self, events: usize) -> bool {
        let state = self.state.lock().unwrap();
        state.queue.is_empty()
            && state
                .answers
                .iter()
                .filter(|a| a.kind == "response" || retries_of(&a.id) >= state.async_retries)
                .count()
                >= events
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(conn: TcpStream, state: &Mutex<State>, stop: &AtomicBool) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut writer = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_owned(),
            parts.next().unwrap_or("").to_owned(),
        );
        let mut length = 0;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            if h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let reply = |w: &mut TcpStream, status: &str, headers: &str, body: &[u8]| {
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{headers}\r\n",
                body.len()
            );
            w.write_all(head.as_bytes()).and_then(|()| w.write_all(body))
        };
        if method == "GET" && path.ends_with("/runtime/invocation/next") {
            state.lock().unwrap().first_poll.get_or_insert_with(Instant::now);
            let next = loop {
                // A function that has gone must not take an invocation with it.
                if stop.load(Ordering::SeqCst) || peer_gone(&writer) {
                    break None;
                }
                if let Some(e) = state.lock().unwrap().queue.pop_front() {
                    break Some(e);
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            let Some((id, event)) = next else { return };
            let deadline = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
                + 60_000;
            let headers = format!(
                "Content-Type: application/json\r\nLambda-Runtime-Aws-Request-Id: {id}\r\nLambda-Runtime-Deadline-Ms: {deadline}\r\n\
                 Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:123456789012:function:cutover\r\n\
                 Lambda-Runtime-Trace-Id: Root=1-5759e988-bd862e3fe1be46a994272793\r\n"
            );
            if reply(&mut writer, "200 OK", &headers, event.to_string().as_bytes()).is_err() {
                return;
            }
        } else {
            let id = path.split('/').nth(4).unwrap_or("").to_owned();
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let kind = if path.ends_with("/response") {
                "response"
            } else {
                "error"
            };
            let error_type = body.get("errorType").and_then(Value::as_str).map(str::to_owned);
            let mut state = state.lock().unwrap();
            let tries = retries_of(&id);
            if kind == "error" && tries < state.async_retries {
                let first = first_id(&id).to_owned();
                if let Some(payload) = state.payloads.get(&first).cloned() {
                    state
                        .queue
                        .push_back((format!("{first}_r{}", tries + 1), payload));
                }
            }
            state.answers.push(Answer {
                id,
                kind,
                body,
                error_type,
            });
            drop(state);
            if reply(
                &mut writer,
                "202 Accepted",
                "Content-Type: application/json\r\n",
                b"{}",
            )
            .is_err()
            {
                return;
            }
        }
    }
}

/// Whether the function that asked for its next invocation has gone (killed, or stopped): the
/// invocation must stay queued for the next function, not be handed to a dead connection.
fn peer_gone(conn: &TcpStream) -> bool {
    if conn.set_nonblocking(true).is_err() {
        return true;
    }
    let mut byte = [0u8; 1];
    let gone = match conn.peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    let _ = conn.set_nonblocking(false);
    gone
}

/// How many times Lambda had retried the invocation `id` (`ID_rN` → N). (Request ids travel in
/// URL paths: no `#`.)
fn retries_of(id: &str) -> u32 {
    id.rsplit_once("_r")
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0)
}

/// The request id of the first invocation of the event `id` was invoked for.
pub(crate) fn first_id(id: &str) -> &str {
    id.rsplit_once("_r").map_or(id, |(first, _)| first)
}

pub(crate) fn spawn(
    api: &RuntimeApi,
    config: &std::path::Path,
    pipeline: &str,
    data: &std::path::Path,
) -> std::process::Child {
    spawn_with(api, config, pipeline, data, &[])
}

/// `cutover lambda` served by `api`, with extra environment.
pub(crate) fn spawn_with(
    api: &RuntimeApi,
    config: &std::path::Path,
    pipeline: &str,
    data: &std::path::Path,
    env: &[(&str, String)],
) -> std::process::Child {
    cutover()
        .arg("lambda")
        .env("AWS_LAMBDA_RUNTIME_API", &api.addr)
        .env("AWS_LAMBDA_FUNCTION_NAME", "cutover")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "stream")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "group")
        .env("AWS_REGION", "us-east-1")
        .env("CUTOVER_CONFIG", config)
        .env("CUTOVER_PIPELINE", pipeline)
        .env("CUTOVER_SETTINGS__DATA_DIR", data)
        // The shipped pipeline runs its canary on the embedded engine: on virtual time it
        // finishes within the invocation.
        .env("CUTOVER_CLOCK", "virtual")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::piped())
        .stderr(if std::env::var_os("DEBUG_LAMBDA").is_some() {
            std::process::Stdio::inherit()
        } else {
            std::process::Stdio::null()
        })
        .spawn()
        .unwrap()
}

#[test]
fn eventbridge_events_pass_drop_and_start_one_rollout() {
    let data = tempfile::tempdir().unwrap();
    let running = fixture("task-fargate-running.json");
    let api = RuntimeApi::start(vec![
        ("r1", fixture("task-fargate-provisioning.json")),
        ("r2", running.clone()),
        ("r3", running),
    ]);
    let mut child = spawn(
        &api,
        &crate::repo("pipelines/catsndogs.toml"),
        "ecs-events",
        data.path(),
    );
    let answers = api.wait_for_answers(3);
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(answers.len(), 3, "{answers:?}");
    assert_eq!((answers[0].id.as_str(), answers[0].kind), ("r1", "response"));
    assert_eq!(answers[0].body["outcome"], "dropped");
    assert_eq!(answers[0].body["stage"], "filter");
    assert_eq!(answers[1].body["outcome"], "passed");
    assert!(
        answers[1].body["context"]["execution"]
            .as_str()
            .unwrap()
            .contains(":execution:canary:")
    );
    assert_eq!(answers[2].body["outcome"], "dropped");
    assert_eq!(answers[2].body["stage"], "dedup", "the redelivery is a duplicate");
    // One EMF line per invoke on stdout.
    let stdout = String::from_utf8(out.stdout).unwrap();
    let emf: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &Value| v.get("_aws").is_some())
        .collect();
    assert_eq!(emf.len(), 3, "{stdout}");
    assert_eq!(emf[1]["ExecutionsStarted"], 1);
    assert_eq!(emf[2]["Duplicates"], 1);
}

#[test]
fn step_functions_task_invocations_return_the_handler_output_or_its_error() {
    let data = tempfile::tempdir().unwrap();
    let api = RuntimeApi::start(vec![
        // The canary passes the rollout's control block: its service picks the record.
        (
            "t1",
            json!({"weight": 10, "execution": "x", "control": {"service": "dogs"}}),
        ),
        ("t2", json!({"weight": 250, "control": {"service": "dogs"}})),
        ("t3", json!({"weight": 10, "control": {"service": "ferrets"}})),
    ]);
    let mut child = spawn(
        &api,
        &crate::repo("pipelines/catsndogs.toml"),
        "traffic-shift",
        data.path(),
    );
    let answers = api.wait_for_answers(3);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(answers.len(), 3, "{answers:?}");
    assert_eq!(answers[0].kind, "response");
    assert_eq!(
        (
            answers[0].body["blue"].as_i64(),
            answers[0].body["green"].as_i64()
        ),
        (Some(90), Some(10))
    );
    assert_eq!(answers[1].kind, "error");
    assert_eq!(
        answers[1].error_type.as_deref(),
        Some("TrafficShift.InvalidWeight"),
        "{:?}",
        answers[1]
    );
    assert_eq!(answers[2].kind, "error");
    assert!(
        answers[2].body["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("service \"ferrets\", which is not in the file's [services]")),
        "{:?}",
        answers[2]
    );
    let weights: Value = serde_json::from_str(
        &std::fs::read_to_string(data.path().join("traffic/dogs.catsndogs.lol.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(weights["green"], 10, "dogs' record was shifted");
}

#[test]
fn a_broken_pipeline_file_is_an_init_error_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[pipelines.p]\n[[pipelines.p.stages]]\ntype = \"filterr\"\n",
    )
    .unwrap();
    let api = RuntimeApi::start(vec![]);
    let mut child = spawn(&api, &bad, "p", dir.path());
    let status = child.wait().unwrap();
    assert!(!status.success());
    // The Runtime API got the init error, naming the stage and what is wrong with it.
    let answers = api.wait_for_answers(1);
    let init = answers
        .iter()
        .find(|a| a.id == "error")
        .unwrap_or_else(|| panic!("no POST /runtime/init/error: {answers:?}"));
    assert_eq!(init.error_type.as_deref(), Some("Cutover.InitError"));
    let message = init.body["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("stage 1") && message.contains("unknown stage type \"filterr\""),
        "{message}"
    );
}

#[test]
fn the_packaged_bootstrap_starts_as_lambda_starts_it() {
    // The zip `cutover package` makes, with this build as the binary, unpacked as Lambda
    // unpacks it into its task directory.
    let dir = tempfile::tempdir().unwrap();
    let zip_path = dir.path().join("cutover.zip");
    let out = cutover()
        .args([
            "package",
            "pipelines/catsndogs.toml",
            "--binary",
            env!("CARGO_BIN_EXE_cutover"),
            "--output",
        ])
        .arg(&zip_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let task = dir.path().join("task");
    zip::ZipArchive::new(std::fs::File::open(&zip_path).unwrap())
        .unwrap()
        .extract(&task)
        .unwrap();

    // Started as Lambda starts a provided.al2023 function: `bootstrap` by path, from another
    // working directory, with the runtime's variables only — no CUTOVER_CONFIG (it finds
    // `cutover.toml` beside itself) and no CUTOVER_PIPELINE (the file's default pipeline).
    let data = dir.path().join("tmp");
    let api = RuntimeApi::start(vec![
        ("r1", fixture("task-fargate-running.json")),
        ("r2", fixture("task-fargate-provisioning.json")),
    ]);
    let mut child = std::process::Command::new(task.join("bootstrap"))
        .current_dir("/")
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", &api.addr)
        .env("AWS_LAMBDA_FUNCTION_NAME", "cutover")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "stream")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "group")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        // What the generated stack sets (the writable directory of a function).
        .env("CUTOVER_SETTINGS__DATA_DIR", &data)
        .env("CUTOVER_CLOCK", "virtual")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let answers = api.wait_for_answers(2);
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        answers.len(),
        2,
        "{answers:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(answers[0].kind, "response", "{answers:?}");
    assert_eq!(answers[0].body["outcome"], "passed", "{answers:?}");
    assert!(
        answers[0].body["context"]["execution"]
            .as_str()
            .is_some_and(|e| e.contains(":execution:canary:")),
        "{answers:?}"
    );
    assert_eq!(answers[1].body["outcome"], "dropped");
    assert_eq!(answers[1].body["stage"], "filter");
    assert!(data.join("dedup.sqlite").exists(), "state in the data directory");
}

#[test]
fn sigterm_stops_the_function_cleanly() {
    let data = tempfile::tempdir().unwrap();
    let api = RuntimeApi::start(vec![("r1", fixture("task-fargate-running.json"))]);
    let mut child = spawn(
        &api,
        &crate::repo("pipelines/catsndogs.toml"),
        "ecs-events",
        data.path(),
    );
    // Served one invocation, then waits for the next: Lambda shuts the environment down.
    assert_eq!(api.wait_for_answers(1).len(), 1);
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "still running 30 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}
