//! A real AWS emulator for the tests: `moto_server` (PyPI `moto[server]`) over HTTP.
//!
//! `scripts/test.sh` starts one server and exports `CUTOVER_MOTO_URL`; [`shared`] attaches to
//! it. Without that variable (a bare `cargo test`), [`shared`] starts a server itself from
//! `CUTOVER_MOTO_SERVER`, `.venv/bin/moto_server` or `PATH`. Tests whose moto state must not be
//! shared (Step Functions execution mode needs `reset`) use [`dedicated`], stopped on drop.
//! Every test names its resources with [`unique`].
//!
//! A server this process starts runs in a process group of its own with a watchdog shell that
//! stops the group when the test process is gone (a static is never dropped; a test binary can
//! be killed), and its group id is written to `CUTOVER_MOTO_PID_DIR` when set, so
//! `scripts/test.sh` can stop and account for every server of its run.

#![allow(dead_code)] // the harness serves every AWS test module; not all use every helper yet

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cutover_core::AwsSettings;

/// A running moto server.
#[derive(Debug)]
pub(crate) struct Moto {
    /// `http://127.0.0.1:PORT`.
    pub(crate) url: String,
    /// `None` when attached to the server of `CUTOVER_MOTO_URL`.
    server: Option<Server>,
}

/// A moto_server this process started, and its watchdog.
///
/// Both run in a process group led by moto: stopping the group stops whatever moto runs, and the
/// terminal's Ctrl-C, which goes to the test process's group, leaves the watchdog alive to
/// clean up after the test process.
#[derive(Debug)]
struct Server {
    moto: Child,
    watchdog: Option<Child>,
    /// This server's entry in `CUTOVER_MOTO_PID_DIR`.
    pid_file: Option<PathBuf>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // moto is our child and not yet reaped, so its pid still names this group: the signals
        // cannot reach a group that reused the number.
        let group = self.moto.id();
        signal_group(group, "TERM");
        if !exits_within(&mut self.moto, Duration::from_secs(10)) {
            signal_group(group, "KILL");
            let _ = self.moto.wait();
        }
        if let Some(watchdog) = &mut self.watchdog {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        if let Some(file) = &self.pid_file {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// Sends `signal` (`TERM`, `KILL`) to every process of a group. `kill` runs as a command: the
/// workspace forbids `unsafe`, which calling `kill(2)` directly would need.
fn signal_group(group: u32, signal: &str) {
    let _ = Command::new("kill")
        .args(["-s", signal, "--", &format!("-{group}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Whether `child` exits (and is reaped) within `limit`.
fn exits_within(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return true,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => return false,
        }
    }
}

impl Moto {
    /// AWS settings pointing at this server with dummy credentials.
    pub(crate) fn aws(&self) -> AwsSettings {
        AwsSettings::emulator(&self.url)
    }

    /// The same, with SDK retries off (for tests that expect errors).
    pub(crate) fn aws_no_retries(&self) -> AwsSettings {
        AwsSettings {
            max_attempts: Some(1),
            ..self.aws()
        }
    }

    /// POSTs JSON to a moto control endpoint (`/moto-api/reset`, `/moto-api/config`).
    pub(crate) fn control(&self, path: &str, body: &str) -> u16 {
        http_post(&self.url, path, body)
    }

    /// Environment for a `cutover` child process talking to this server.
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.url.clone()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }
}

/// The server shared by the whole test binary.
pub(crate) fn shared() -> &'static Moto {
    static SHARED: OnceLock<Moto> = OnceLock::new();
    SHARED.get_or_init(|| match std::env::var("CUTOVER_MOTO_URL") {
        Ok(url) => Moto { url, server: None },
        Err(_) => start(&[]),
    })
}

/// A server of the test's own, stopped when dropped.
pub(crate) fn dedicated() -> Moto {
    start(&[])
}

/// A server of the test's own with these environment variables set, e.g. `MOTO_PORT`: where
/// moto's own service integrations (a state machine's Task calling Lambda or DynamoDB) send
/// their requests, so a test can stand in front of them.
pub(crate) fn dedicated_with_env(env: &[(&str, String)]) -> Moto {
    start(env)
}

/// A resource name no other test uses.
pub(crate) fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

fn moto_binary() -> String {
    if let Ok(bin) = std::env::var("CUTOVER_MOTO_SERVER") {
        return bin;
    }
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/moto_server");
    if std::path::Path::new(venv).exists() {
        venv.to_owned()
    } else {
        "moto_server".to_owned()
    }
}

/// Why starting moto_server failed, once it has: every later test fails with it at once instead
/// of trying again (a missing or broken install fails the same way each time).
static START_FAILED: OnceLock<String> = OnceLock::new();

/// Starts a server on a free port. The port is found by binding and releasing it (moto_server
/// cannot be handed a listening socket), so another process may take it first: moto then exits
/// at once, and the next port is tried.
fn start(env: &[(&str, String)]) -> Moto {
    if let Some(why) = START_FAILED.get() {
        panic!("{why}");
    }
    let mut last = String::new();
    for _ in 0..3 {
        match try_start(env) {
            Ok(moto) => return moto,
            Err(Start::PortTaken(why)) => last = why,
            Err(Start::Broken(why)) => {
                let why = START_FAILED.get_or_init(|| why);
                panic!("{why}");
            }
        }
    }
    panic!("{last}");
}

/// How one attempt to start moto_server failed.
enum Start {
    /// It exited saying its port was in use: worth another port.
    PortTaken(String),
    /// It cannot run here (missing, broken install, never listened): what to do about it.
    Broken(String),
}

const INSTALL_HINT: &str = "run ./scripts/test.sh, which installs moto[server] into .venv and \
     starts it, or point CUTOVER_MOTO_SERVER at a moto_server binary";

fn try_start(env: &[(&str, String)]) -> Result<Moto, Start> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let bin = moto_binary();
    let log = tempfile::NamedTempFile::new().expect("a temporary file for moto's log");
    let moto = Command::new(&bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.reopen().expect("moto's log reopens"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().cloned())
        .process_group(0)
        .spawn()
        .map_err(|e| Start::Broken(format!("cannot start {bin}: {e}; {INSTALL_HINT}")))?;
    let group = moto.id();
    // From here an early return or a panic drops `server`, which stops moto.
    let mut server = Server {
        moto,
        watchdog: None,
        pid_file: None,
    };
    let watchdog = format!(
        "while kill -0 {parent} 2>/dev/null; do sleep 0.5; done; kill -s TERM -- -{group} 2>/dev/null",
        parent = std::process::id(),
    );
    server.watchdog = Some(
        Command::new("sh")
            .arg("-c")
            .arg(watchdog)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(group as i32)
            .spawn()
            .expect("sh runs the moto watchdog"),
    );
    if let Some(dir) = std::env::var_os("CUTOVER_MOTO_PID_DIR") {
        let file = PathBuf::from(dir).join(group.to_string());
        std::fs::write(&file, format!("{bin} on port {port}\n"))
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", file.display()));
        server.pid_file = Some(file);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = server.moto.try_wait() {
            let said = std::fs::read_to_string(log.path()).unwrap_or_default();
            let tail: Vec<&str> = said
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let why = format!(
                "{bin} exited ({status}) before listening on port {port}: {}",
                tail.join(" | ")
            );
            return Err(if said.contains("Address already in use") {
                Start::PortTaken(why)
            } else {
                Start::Broken(format!("{why}; {INSTALL_HINT}"))
            });
        }
        if Instant::now() >= deadline {
            return Err(Start::Broken(format!(
                "{bin} did not listen on port {port} within 30 s; {INSTALL_HINT}"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(Moto {
        url: format!("http://127.0.0.1:{port}"),
        server: Some(server),
    })
}

/// Calls an AWS JSON-protocol API (ECS, for one) on the server directly, for test setup with
/// no SDK crate of that service: `target` is the `X-Amz-Target` header
/// (`AmazonEC2ContainerServiceV20141113.RunTask`), `service` the signing name (`ecs`). Panics on a
/// non-2xx answer.
pub(crate) fn aws_json(
    moto: &Moto,
    service: &str,
    target: &str,
    body: &serde_json::Value,
) -> serde_json::Value {
    // moto routes a request by the service named in the credential scope (it checks no signature).
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0"
    );
    let (status, payload) = raw_http(
        &moto.url,
        "POST",
        "/",
        &[
            ("X-Amz-Target", target),
            ("Authorization", &authorization),
            ("Content-Type", "application/x-amz-json-1.1"),
        ],
        body.to_string().as_bytes(),
    );
    assert!((200..300).contains(&status), "{target}: {status} {payload}");
    serde_json::from_str(&payload).unwrap_or_else(|e| panic!("{target}: {e}: {payload}"))
}

/// One HTTP/1.1 request on a fresh connection to the server at `base` (`http://host:port`):
/// the status (0 if there was no answer) and the body.
pub(crate) fn raw_http(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let host = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).expect("moto is reachable");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    stream.write_all(head.as_bytes()).expect("request sent");
    stream.write_all(body).expect("request sent");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let (head, payload) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, payload.to_owned())
}

/// A proxy in front of `moto` that forwards one request at a time; returns its URL. moto's
/// threaded server checks a DynamoDB condition and applies the write without a lock, so two
/// concurrent conditional writes can both pass (seen: 2 winners of 64); DynamoDB serialises
/// the writes to an item. Tests of racing conditional writes go through this proxy to get that
/// guarantee from the emulator, while the client still sends every request concurrently. (It
/// is the fault proxy of `faults.rs` injecting nothing.)
pub(crate) async fn one_at_a_time(moto: &Moto) -> String {
    crate::faults::FaultProxy::start(&moto.url, 0, 0.0, Duration::ZERO)
        .await
        .url
}

fn http_post(base: &str, path: &str, body: &str) -> u16 {
    raw_http(
        base,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .0
}

#[tokio::test]
async fn dynamodb_round_trip_through_the_shared_aws_config() {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };

    let moto = shared();
    let cx = cutover_core::BuildContext::new("unused").with_aws(moto.aws());
    let client = aws_sdk_dynamodb::Client::new(cx.aws_config().await);
    let table = unique("roundtrip");
    client
        .create_table()
        .table_name(&table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create table in moto");
    client
        .put_item()
        .table_name(&table)
        .item("pk", AttributeValue::S("k1".into()))
        .item("v", AttributeValue::N("42".into()))
        .send()
        .await
        .expect("put item");
    let got = client
        .get_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("k1".into()))
        .send()
        .await
        .expect("get item");
    assert_eq!(
        got.item().and_then(|i| i.get("v")),
        Some(&AttributeValue::N("42".into()))
    );
    let missing = client
        .get_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("nope".into()))
        .send()
        .await
        .unwrap();
    assert!(missing.item().is_none());
}
