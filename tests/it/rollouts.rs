//! Operating rollouts on the embedded engine, end to end: a daemon (`cutover serve`) runs the
//! shipped canary (with short bakes) while `cutover rollouts` commands, run as an operator
//! would from another terminal, abort, pause, resume, promote and retry it; a newer deployment
//! supersedes a running one. Weights are read from the embedded router's file, health comes
//! from an in-test HTTP server that can be made sick.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{cutover, repo};

/// A green service whose health the test controls.
struct Green {
    sick: Arc<AtomicBool>,
    port: u16,
}

impl Green {
    fn start() -> Green {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sick = Arc::new(AtomicBool::new(false));
        let flag = sick.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf);
                let answer = if flag.load(Ordering::SeqCst) {
                    "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\nconnection: close\r\n\r\nsick"
                } else {
                    "HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\ncats"
                };
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        Green { sick, port }
    }
}

/// A daemon running the canary, its files, and the green it checks.
pub(crate) struct Rig {
    dir: tempfile::TempDir,
    file: PathBuf,
    daemon: Option<Child>,
    stdin: Option<ChildStdin>,
    green: Green,
}

/// The shipped canary with every 60 s bake shortened to `bake` seconds.
fn canary(bake: u64) -> String {
    let text = std::fs::read_to_string(repo("pipelines/canary.asl.json")).unwrap();
    let mut definition: Value = serde_json::from_str(&text).unwrap();
    for state in definition["States"].as_object_mut().unwrap().values_mut() {
        if state["Parameters"]["seconds"] == 60 {
            state["Parameters"]["seconds"] = json!(bake);
        }
    }
    definition.to_string()
}

impl Rig {
    /// A daemon reading events from stdin, on a fresh data directory whose canary bakes
    /// `bake` seconds per step.
    pub(crate) fn start(bake: u64) -> Rig {
        Rig::start_with(bake, "")
    }

    /// [`Rig::start`], with `extra` (TOML fields) added to the start-state-machine stage.
    pub(crate) fn start_with(bake: u64, extra: &str) -> Rig {
        let mut rig = Rig::files_with(bake, extra);
        let mut daemon = cutover()
            .arg("serve")
            .arg(&rig.file)
            .args(["--source", "stdin", "--pipeline", "ecs-events"])
            .env("CUTOVER_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        rig.stdin = daemon.stdin.take();
        crate::echo_stderr(&mut daemon);
        rig.daemon = Some(daemon);
        rig
    }

    /// The pipeline file and the green it checks, without a daemon.
    pub(crate) fn files(bake: u64) -> Rig {
        Rig::files_with(bake, "")
    }

    fn files_with(bake: u64, extra: &str) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let green = Green::start();
        std::fs::write(dir.path().join("canary.asl.json"), canary(bake)).unwrap();
        let file = dir.path().join("rollouts.toml");
        std::fs::write(
            &file,
            format!(
                r#"
[settings]
data_dir = "{data}"

[pipelines.ecs-events]
[[pipelines.ecs-events.stages]]
type = "dedup"
store = {{ type = "local", path = "dedup.sqlite" }}

[[pipelines.ecs-events.stages]]
type = "start-state-machine"
control = {{ health_every = "2s" }}
engine = {{ type = "local", definition = "canary.asl.json", resources = {{ "arn:aws:lambda:us-east-1:111122223333:function:cutover-traffic-shift" = "traffic-shift", "arn:aws:lambda:us-east-1:111122223333:function:cutover-health-check" = "health-check" }} }}
{extra}

[pipelines.traffic-shift]
[[pipelines.traffic-shift.stages]]
type = "traffic-shift"
router = {{ type = "local", zone = "test.lol", record = "www.test.lol", blue = "127.0.0.1", green = "127.0.0.2", serve = false }}

[pipelines.health-check]
[[pipelines.health-check.stages]]
type = "health-check"
probe = {{ type = "http", url = "http://127.0.0.1:{port}/", timeout = "1s", interval = "100ms", healthy_threshold = 1, unhealthy_threshold = 1 }}
"#,
                data = dir.path().join("data").display(),
                port = green.port,
            ),
        )
        .unwrap();
        Rig {
            dir,
            file,
            daemon: None,
            stdin: None,
            green,
        }
    }

    /// A task of version `version` of the service started: its event to the daemon.
    pub(crate) fn deploy(&mut self, version: u32) {
        let event = event(version);
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{event}").unwrap();
        stdin.flush().unwrap();
    }

    /// The pipeline file.
    pub(crate) fn file(&self) -> &Path {
        &self.file
    }

    /// Deploys version `version` and waits until its rollout bakes at 10%; its id.
    pub(crate) fn deploy_and_bake(&mut self, version: u32) -> String {
        self.deploy(version);
        let id = self::version(version);
        self.wait_until(&id, "in Bake10", |s| in_wait(s, "Bake10"));
        id
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `cutover rollouts ARGS… FILE` (the file goes after the subcommand).
    pub(crate) fn cli(&self, command: &str, args: &[&str]) -> Output {
        cutover()
            .args(["rollouts", command])
            .arg(&self.file)
            .args(args)
            .env("USER", "alice")
            .env("CUTOVER_LOG", "warn")
            .output()
            .unwrap()
    }

    /// `rollouts status --json` of the rollout `id` (`None` until it exists).
    pub(crate) fn status(&self, id: &str) -> Option<Value> {
        let out = self.cli("status", &[id, "--json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    /// Waits (up to a minute) until the rollout `id` satisfies `done`; its last status.
    pub(crate) fn wait_until(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        crate::wait_for_status(
            Duration::from_secs(60),
            Duration::from_millis(100),
            &format!("{id}: {what}"),
            || self.status(id),
            done,
        )
    }

    /// The weights the embedded router serves now: (blue, green).
    pub(crate) fn weights(&self) -> (u64, u64) {
        let path = self.data().join("traffic/www.test.lol.json");
        match std::fs::read(&path) {
            Ok(bytes) => {
                let v: Value = serde_json::from_slice(&bytes).unwrap();
                (v["blue"].as_u64().unwrap(), v["green"].as_u64().unwrap())
            }
            Err(_) => (100, 0),
        }
    }

    /// The audit log's entries.
    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.data().join("rollouts/audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if let Some(daemon) = &mut self.daemon {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
    }
}

/// The ECS event of a task of version `version` of the service starting.
pub(crate) fn event(version: u32) -> Value {
    json!({
            "id": format!("event-{version}"),
            "detail-type": "ECS Task State Change",
            "source": "aws.ecs",
            "detail": {
                "clusterArn": "arn:aws:ecs:us-east-1:111122223333:cluster/test",
                "group": "service:cats",
                "taskDefinitionArn": format!("arn:aws:ecs:us-east-1:111122223333:task-definition/cats:{version}"),
                "taskArn": format!("arn:aws:ecs:us-east-1:111122223333:task/test/{version}"),
                "lastStatus": "RUNNING"
            }
    })
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn in_wait(s: &Value, wait: &str) -> bool {
    s["window"]["name"] == wait
}

/// Which rollout: the part of the execution name that the deployment's version makes unique.
pub(crate) fn version(v: u32) -> String {
    format!("cats-{v}")
}

#[test]
fn abort_during_a_bake_sends_traffic_back_to_blue_and_ends_aborted_with_the_reason() {
    let mut rig = Rig::start(60);
    let id = rig.deploy_and_bake(2);
    assert_eq!(rig.weights(), (90, 10));

    let asked = Instant::now();
    let out = rig.cli("abort", &[&id, "--reason", "p99 latency doubled"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("abort: rollout"), "{}", text(&out));
    let ended = rig.wait_until(&id, "aborted", |s| s["phase"] == "aborted");
    println!(
        "abort mid-bake → aborted in {:?} (embedded, tick 1 s)",
        asked.elapsed()
    );
    assert_eq!(rig.weights(), (100, 0), "all blue after an abort");
    assert_eq!(ended["error"], "Canary.Aborted");
    assert_eq!(ended["cause"], "p99 latency doubled");
    assert_eq!(ended["control"]["actor"], "alice");

    let history = text(&rig.cli("history", &[&id]));
    assert!(
        history.contains("abort by alice: p99 latency doubled"),
        "{history}"
    );
    assert!(history.contains("Rollback"), "{history}");
    assert!(
        history.contains("weights blue 100% / green 0% (verified)"),
        "{history}"
    );
    let audit = rig.audit();
    assert_eq!(audit.len(), 1, "{audit:#?}");
    assert_eq!(audit[0]["action"], "abort");
    assert_eq!(audit[0]["actor"], "alice");
    assert_eq!(audit[0]["change"]["from"]["wait"], "Bake10");

    // Acting on an ended rollout is refused, and says what can be done.
    let again = rig.cli("abort", &[&id, "--reason", "again"]);
    assert!(!again.status.success());
    assert!(
        text(&again).contains("has already ended (aborted)"),
        "{}",
        text(&again)
    );
}

#[test]
fn pause_holds_past_a_bake_and_resume_completes() {
    let mut rig = Rig::start(2);
    let id = rig.deploy_and_bake(3);
    let out = rig.cli("pause", &[&id, "--reason", "reading the logs"]);
    assert!(out.status.success(), "{}", text(&out));
    // The pause may land after Bake10 ended on a loaded machine (two CLI processes after a
    // 2 s bake began): it holds whichever wait it found, which is what is checked.
    let paused = rig.wait_until(&id, "paused", |s| s["phase"] == "paused");
    let weights = rig.weights();
    // Three bakes' worth of time: no step advances, and green is checked meanwhile.
    std::thread::sleep(Duration::from_secs(6));
    let held = rig.status(&id).unwrap();
    assert_eq!(held["phase"], "paused");
    assert_eq!(held["window"]["name"], paused["window"]["name"], "{held:#}");
    assert_eq!(rig.weights(), weights);
    let history = text(&rig.cli("history", &[&id]));
    assert!(
        history.contains("HoldCheck"),
        "health checked while paused: {history}"
    );

    let out = rig.cli("resume", &[&id, "--reason", "logs are fine"]);
    assert!(out.status.success(), "{}", text(&out));
    let done = rig.wait_until(&id, "succeeded", |s| s["phase"] == "succeeded");
    assert_eq!(done["weights"], json!({"blue": 0, "green": 100}));
    assert_eq!(rig.weights(), (0, 100));
    let actions: Vec<Value> = rig.audit().iter().map(|a| a["action"].clone()).collect();
    assert_eq!(actions, vec![json!("pause"), json!("resume")]);
}

#[test]
fn a_sick_green_rolls_back_while_paused() {
    let mut rig = Rig::start(60);
    let id = rig.deploy_and_bake(4);
    assert!(rig.cli("pause", &[&id, "--reason", "hold"]).status.success());
    rig.wait_until(&id, "paused", |s| s["phase"] == "paused");
    rig.green.sick.store(true, Ordering::SeqCst);
    let ended = rig.wait_until(&id, "rolled back", |s| s["phase"] == "rolled-back");
    assert_eq!(ended["error"], "Canary.Unhealthy");
    assert_eq!(rig.weights(), (100, 0));
}

#[test]
fn promote_ends_the_wait_and_promote_full_goes_to_all_green() {
    let mut rig = Rig::start(60);
    let id = rig.deploy_and_bake(5);
    let out = rig.cli("promote", &[&id, "--reason", "metrics look good"]);
    assert!(out.status.success(), "{}", text(&out));
    let at50 = rig.wait_until(&id, "in Bake50", |s| in_wait(s, "Bake50"));
    assert_eq!(at50["weights"], json!({"blue": 50, "green": 50}));
    let out = rig.cli("promote", &[&id, "--full", "--reason", "ship it"]);
    assert!(out.status.success(), "{}", text(&out));
    let done = rig.wait_until(&id, "succeeded", |s| s["phase"] == "succeeded");
    assert_eq!(done["weights"], json!({"blue": 0, "green": 100}));
    assert_eq!(done["step"], "Promoted");
    let history = text(&rig.cli("history", &[&id]));
    assert!(history.contains("ShiftFull"), "{history}");
    assert!(!history.contains("Bake100"), "went straight to 100%: {history}");
    let actions: Vec<Value> = rig.audit().iter().map(|a| a["action"].clone()).collect();
    assert_eq!(actions, vec![json!("promote"), json!("promote-full")]);
}

#[test]
fn retry_after_a_rollback_starts_a_linked_rollout() {
    let mut rig = Rig::start(1);
    rig.green.sick.store(true, Ordering::SeqCst);
    rig.deploy(6);
    let id = version(6);
    rig.wait_until(&id, "rolled back", |s| s["phase"] == "rolled-back");
    rig.green.sick.store(false, Ordering::SeqCst);
    let out = rig.cli("retry", &[&id, "--reason", "the database was down, fixed"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("retry: started rollout"), "{}", text(&out));
    let list = text(&rig.cli("list", &["--all", "--json"]));
    let retried: Vec<Value> = list
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["id"].as_str().unwrap().ends_with("-retry-1"))
        .collect();
    assert_eq!(retried.len(), 1, "{list}");
    assert_eq!(retried[0]["phase"], "succeeded", "{list}");
    let audit = rig.audit();
    assert_eq!(audit[0]["action"], "retry");
    assert!(
        audit[0]["change"]["retry"]
            .as_str()
            .unwrap()
            .ends_with("-retry-1")
    );
}

#[test]
fn a_newer_deployment_supersedes_the_running_rollout() {
    let mut rig = Rig::start(60);
    rig.deploy(7);
    let older = version(7);
    rig.wait_until(&older, "in Bake10", |s| in_wait(s, "Bake10"));
    rig.deploy(8);
    let ended = rig.wait_until(&older, "aborted", |s| s["phase"] == "aborted");
    assert!(
        ended["cause"].as_str().unwrap().starts_with("superseded by"),
        "{ended:#}"
    );
    let newer = version(8);
    rig.wait_until(&newer, "in Bake10", |s| in_wait(s, "Bake10"));
    assert_eq!(rig.weights(), (90, 10), "the newer rollout owns the record now");
    let audit = rig.audit();
    assert_eq!(audit[0]["actor"], "cutover");
    assert_eq!(audit[0]["rollout"].as_str(), ended["id"].as_str());
    assert!(
        rig.cli("abort", &[&newer, "--reason", "done testing"])
            .status
            .success()
    );
    rig.wait_until(&newer, "aborted", |s| s["phase"] == "aborted");
}

#[test]
fn unknown_ambiguous_and_not_waiting_rollouts_are_clear_errors() {
    let mut rig = Rig::start(60);
    let none = rig.cli("status", &["cats-9"]);
    assert!(!none.status.success());
    assert!(text(&none).contains("no rollout \"cats-9\""), "{}", text(&none));
    // One after the other: sent together, the daemon may start 11 first and 10 then
    // supersedes it (events without a time are ordered by arrival).
    rig.deploy_and_bake(10);
    rig.deploy_and_bake(11);
    let ambiguous = rig.cli("status", &["cats-1"]);
    assert!(!ambiguous.status.success());
    assert!(
        text(&ambiguous).contains("names several rollouts"),
        "{}",
        text(&ambiguous)
    );
    let no_reason = rig.cli("pause", &[&version(11), "--reason", " "]);
    assert!(!no_reason.status.success());
    assert!(text(&no_reason).contains("give a reason"), "{}", text(&no_reason));
    let list = text(&rig.cli("list", &[]));
    assert!(list.contains("Bake10"), "{list}");
    assert!(Path::new(&rig.data()).exists());
}

#[test]
fn the_daemon_api_lists_shows_and_steers_rollouts_as_its_callers() {
    use crate::serve::{Daemon, request};

    let rig = Rig::files(60);
    let key = ("x-api-key", "s3cret");
    let daemon = Daemon::start(
        &[
            rig.file.to_str().unwrap(),
            "--pipeline",
            "ecs-events",
            "--listen",
            "127.0.0.1:0",
            "--api-key-env",
            "CUTOVER_TEST_KEY",
            "--api-key-name",
            "ops-bot",
        ],
        &[
            ("CUTOVER_TEST_KEY", "s3cret".into()),
            ("CUTOVER_LOG", "warn".into()),
        ],
        Stdio::null(),
    );
    let addr = daemon.addr().to_owned();
    let call = |method: &str, path: &str, body: &str| {
        request(
            &addr,
            method,
            path,
            &[key, ("content-type", "application/json")],
            body.as_bytes(),
        )
    };
    let posted = call("POST", "/events", &event(12).to_string());
    assert_eq!(posted.status, 200, "{}", posted.body);
    let id = version(12);
    rig.wait_until(&id, "in Bake10", |s| in_wait(s, "Bake10"));

    let list = call("GET", "/rollouts", "");
    assert_eq!(list.status, 200, "{}", list.body);
    let rollouts = list.json()["rollouts"].as_array().unwrap().clone();
    assert_eq!(rollouts.len(), 1);
    assert_eq!(rollouts[0]["window"]["name"], "Bake10");
    let one = call("GET", &format!("/rollouts/{id}"), "");
    assert_eq!(one.json()["weights"], json!({"blue": 90, "green": 10}));

    // Refusals: no credentials, unknown id, no reason, unknown action, wrong method.
    let anonymous = request(&addr, "GET", "/rollouts", &[], b"");
    assert_eq!(anonymous.status, 401);
    assert_eq!(call("GET", "/rollouts/nothing-like-it", "").status, 404);
    let no_reason = call("POST", &format!("/rollouts/{id}/pause"), "{}");
    assert_eq!(no_reason.status, 400, "{}", no_reason.body);
    assert!(no_reason.json()["error"].as_str().unwrap().contains("reason"));
    assert_eq!(
        call("POST", &format!("/rollouts/{id}/explode"), "{\"reason\":\"x\"}").status,
        404
    );
    assert_eq!(call("GET", &format!("/rollouts/{id}/pause"), "").status, 405);
    assert_eq!(
        call("POST", &format!("/rollouts/{id}/pause"), "not json").status,
        400
    );
    // What an HTML form of another site could send (CSRF): refused, whatever the credentials.
    for form in ["application/x-www-form-urlencoded", "text/plain"] {
        let posted = request(
            &addr,
            "POST",
            &format!("/rollouts/{id}/abort"),
            &[key, ("content-type", form)],
            b"{\"reason\":\"csrf\"}",
        );
        assert_eq!(posted.status, 415, "{form}: {}", posted.body);
    }
    assert_eq!(call("GET", "/ui/", "").status, 404, "no dashboard without --ui");
    let definition = call("GET", &format!("/rollouts/{id}/definition"), "");
    assert_eq!(definition.json()["definition"]["StartAt"], "Init");

    let paused = call(
        "POST",
        &format!("/rollouts/{id}/pause"),
        "{\"reason\":\"change freeze\"}",
    );
    assert_eq!(paused.status, 200, "{}", paused.body);
    assert_eq!(paused.json()["audit"]["actor"], "ops-bot");
    rig.wait_until(&id, "paused", |s| s["phase"] == "paused");
    let promoted = call(
        "POST",
        &format!("/rollouts/{id}/promote"),
        "{\"reason\":\"freeze lifted, ship it\",\"full\":true}",
    );
    assert_eq!(promoted.status, 200, "{}", promoted.body);
    assert_eq!(promoted.json()["action"], "promote-full");
    rig.wait_until(&id, "succeeded", |s| s["phase"] == "succeeded");
    let ended = call(
        "POST",
        &format!("/rollouts/{id}/abort"),
        "{\"reason\":\"too late\"}",
    );
    assert_eq!(ended.status, 409, "{}", ended.body);

    // The outcome is counted just after the final record is saved: poll, do not race it.
    let samples = [
        "cutover_rollout_actions_total{action=\"pause\"} 1",
        "cutover_rollout_actions_total{action=\"promote-full\"} 1",
        "cutover_rollouts_total{outcome=\"succeeded\"} 1",
        "# TYPE cutover_rollout_step_seconds histogram",
        "cutover_rollout_step_seconds_count{state=\"Bake10\"} 1",
        "cutover_rollout_step_seconds_count{state=\"ShiftFull\"} 1",
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = call("GET", "/metrics", "").body;
        match samples.iter().find(|s| !metrics.contains(**s)) {
            None => break,
            Some(missing) => assert!(Instant::now() < deadline, "{missing} in:\n{metrics}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    let history = call("GET", &format!("/rollouts/{id}/history"), "");
    let lines = history.json()["history"].as_array().unwrap().clone();
    let actions: Vec<&str> = lines
        .iter()
        .filter(|l| l["kind"] == "action")
        .map(|l| l["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec![
            "pause by ops-bot: change freeze",
            "promote-full by ops-bot: freeze lifted, ship it"
        ]
    );
}

#[test]
fn without_credentials_the_api_answers_only_requests_addressed_to_an_ip_or_localhost() {
    use crate::serve::Daemon;

    let rig = Rig::files(60);
    let daemon = Daemon::start(
        &[
            rig.file.to_str().unwrap(),
            "--pipeline",
            "ecs-events",
            "--listen",
            "127.0.0.1:0",
            "--no-auth",
            "--ui",
        ],
        &[("CUTOVER_LOG", "warn".into())],
        Stdio::null(),
    );
    let status_for = |host: &str, path: &str| {
        let mut s = std::net::TcpStream::connect(daemon.addr()).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        raw.split_whitespace().nth(1).unwrap().parse::<u16>().unwrap()
    };
    assert_eq!(status_for(daemon.addr(), "/rollouts"), 200);
    assert_eq!(status_for("localhost:8080", "/ui/"), 200);
    // A page that rebinds its own name to this address is refused.
    assert_eq!(status_for("evil.example:8080", "/rollouts"), 403);
    assert_eq!(status_for("evil.example", "/ui/"), 403);
}

/// A webhook receiver: answers 200 to every POST and hands over each body as JSON.
fn webhook_receiver() -> (String, std::sync::mpsc::Receiver<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut data = Vec::new();
            let mut buf = [0u8; 4096];
            // The head, then as many body bytes as Content-Length says.
            let body = loop {
                let Ok(n) = stream.read(&mut buf) else { break None };
                if n == 0 {
                    break None;
                }
                data.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&data).into_owned();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length: usize = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if data.len() >= end + 4 + length {
                        break Some(data[end + 4..end + 4 + length].to_vec());
                    }
                }
            };
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
            if let Some(body) = body {
                let _ = tx.send(serde_json::from_slice(&body).unwrap_or(Value::Null));
            }
        }
    });
    (url, rx)
}

#[test]
fn the_daemon_notifies_what_a_rollout_does_started_steps_the_operator_and_the_abort() {
    let (url, received) = webhook_receiver();
    let mut rig = Rig::start_with(
        60,
        &format!("notify = [{{ url = \"{url}\", every = \"200ms\" }}]"),
    );
    let id = rig.deploy_and_bake(2);
    let out = rig.cli("abort", &[&id, "--reason", "checkout errors"]);
    assert!(out.status.success(), "{}", text(&out));
    rig.wait_until(&id, "aborted", |s| s["phase"] == "aborted");

    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !events.iter().any(|e: &Value| e["event"] == "aborted") {
        let left = deadline.saturating_duration_since(Instant::now());
        let got = received
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no `aborted` notification: {events:#?}"));
        events.push(got);
    }
    let names: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(names, ["started", "step", "operator", "aborted"], "{events:#?}");
    let rollout = events[0]["rollout"].as_str().unwrap();
    assert!(rollout.contains(&id), "{events:#?}");
    assert!(events.iter().all(|e| e["rollout"] == rollout), "{events:#?}");
    assert_eq!(events[1]["detail"]["green"], 10);
    assert_eq!(events[2]["detail"]["action"], "abort");
    assert_eq!(events[2]["detail"]["reason"], "checkout errors");
    assert_eq!(events[3]["phase"], "aborted");
    // Nothing is told twice.
    assert!(received.recv_timeout(Duration::from_secs(1)).is_err());
}
