//! The observed-split gate of the shipped canary, end to end on the embedded engine: the
//! shipped `pipelines/catsndogs.toml` with `control.observe_split = true`, its embedded DNS
//! server answering `www.catsndogs.lol` to a stream of clients, one green deployment. When the
//! answers follow the weights the canary goes through every step; when they lag behind
//! (`router.answer_lag`: answers keep the old weights, as resolver caches do) the gate holds the
//! canary before its first bake and it rolls back, naming the split it saw.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use cutover_asl::{EventKind, ExecutionStatus, FileStore};
use cutover_core::{Event, Loader, Outcome};
use cutover_stages::state_machine::VirtualTime;
use cutover_stages::traffic_shift::dns::{LocalDnsServer, query_address};
use cutover_stages::traffic_shift::weights::{RecordSpec, WeightStore};

use crate::{fixture, repo};

/// Green's web page, always healthy.
fn green_page() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
            }
            let _ =
                conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\ncats v3");
        }
    });
    port
}

/// An embedded DNS server on a port it took itself, for the router to join (its `listen` set
/// to this address): binding a free port and handing its number on would race other sockets
/// for it, UDP and TCP.
fn dns_server(dir: &std::path::Path) -> Arc<LocalDnsServer> {
    let holder = WeightStore::open(
        RecordSpec {
            zone: "holder.invalid".into(),
            record: "holder.invalid".into(),
            blue: vec!["127.0.0.1".parse().unwrap()],
            green: vec!["127.0.0.2".parse().unwrap()],
            ttl: 5,
        },
        dir.join("holder.json"),
    )
    .unwrap();
    LocalDnsServer::shared(SocketAddr::from(([127, 0, 0, 1], 0)), holder).unwrap()
}

struct Run {
    status: ExecutionStatus,
    error: Option<String>,
    cause: Option<String>,
    /// States entered, in order.
    entered: Vec<String>,
    /// The observed-split results, in order.
    observed: Vec<serde_json::Value>,
    answers: u64,
}

/// One green deployment through the shipped pipeline, with `extra` overrides, while clients
/// keep asking the embedded DNS server for www.catsndogs.lol.
async fn deploy(extra: &[(&str, &str)]) -> Run {
    let data = tempfile::tempdir().unwrap();
    let server = dns_server(data.path());
    let dns = server.local_addr();
    let mut loader = Loader::new()
        .with_var(
            "CUTOVER_PIPELINES__TRAFFIC_SHIFT__STAGES__1__ROUTER__LISTEN",
            dns.to_string(),
        )
        .with_var(
            "CUTOVER_PIPELINES__TRAFFIC_SHIFT__STAGES__1__ROUTER__SERVE",
            "true",
        )
        .with_var(
            "CUTOVER_PIPELINES__HEALTH_CHECK__STAGES__1__PROBE__URL",
            format!("http://127.0.0.1:{}/", green_page()),
        )
        .with_var(
            "CUTOVER_PIPELINES__ECS_EVENTS__STAGES__START_STATE_MACHINE__CONTROL__OBSERVE_SPLIT",
            "true",
        )
        .with_var(
            "CUTOVER_PIPELINES__HEALTH_CHECK__STAGES__1__PROBES__OBSERVED_SPLIT__WINDOW",
            "400ms",
        );
    for (k, v) in extra {
        loader = loader.with_var(*k, *v);
    }
    let file = loader.load_file(repo("pipelines/catsndogs.toml")).unwrap();
    let cx = file
        .build_context()
        .with_data_dir(data.path())
        .with_clock(Arc::new(VirtualTime::starting_at(SystemTime::now())));
    let pipeline = file.build("ecs-events", &cx).await.unwrap();

    // Clients: one lookup every 2 ms for as long as the rollout runs.
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(AtomicU64::new(0));
    let clients = {
        let (stop, answers) = (stop.clone(), answers.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                if matches!(query_address(dns, "www.catsndogs.lol").await, Ok(Some(_))) {
                    answers.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        })
    };
    let outcome = pipeline
        .run(Event::from_value(fixture("task-fargate-running.json")))
        .await;
    assert!(matches!(outcome, Outcome::Passed { .. }), "{outcome}");
    cx.background().drain().await;
    stop.store(true, Ordering::SeqCst);
    clients.await.unwrap();

    let records = FileStore::new(data.path().join("executions"))
        .unwrap()
        .list()
        .unwrap();
    let [record] = records.as_slice() else {
        panic!("one rollout: {}", records.len())
    };
    let mut entered = Vec::new();
    let mut observed = Vec::new();
    let (mut error, mut cause) = (None, None);
    for event in &record.history {
        match &event.kind {
            EventKind::StateEntered { name, .. } => entered.push(name.clone()),
            EventKind::StateExited { name, output } if name.starts_with("ObserveSplit") => {
                observed.push(output["observed"].clone())
            }
            EventKind::ExecutionFailed { error: e, cause: c } => {
                error = e.clone();
                cause = c.clone();
            }
            _ => {}
        }
    }
    Run {
        status: record.status,
        error,
        cause,
        entered,
        observed,
        answers: answers.load(Ordering::Relaxed),
    }
}

// One test, the two runs in turn: both serve www.catsndogs.lol in this process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_passes_a_split_that_follows_the_weights_and_holds_one_that_lags() {
    let agree = deploy(&[]).await;
    assert_eq!(
        agree.status,
        ExecutionStatus::Succeeded,
        "{:?} {:?}",
        agree.error,
        agree.cause
    );
    let gates: Vec<&String> = agree
        .entered
        .iter()
        .filter(|s| s.starts_with("ObserveSplit"))
        .collect();
    assert_eq!(gates, ["ObserveSplit10", "ObserveSplit50", "ObserveSplit100"]);
    for (observed, set) in agree.observed.iter().zip([10, 50, 100]) {
        assert_eq!(observed["State"], "healthy", "{observed}");
        let check = &observed["checks"][0];
        assert_eq!(check["set"], set, "{observed}");
        let share = check["observed"].as_f64().unwrap();
        assert!((share - f64::from(set)).abs() <= 5.0, "{observed}");
    }
    assert!(agree.answers > 0);

    // The DNS answers lag the weights by an hour: green is set to 10% but receives nothing.
    let lag = deploy(&[(
        "CUTOVER_PIPELINES__TRAFFIC_SHIFT__STAGES__1__ROUTER__ANSWER_LAG",
        "1h",
    )])
    .await;
    assert_eq!(lag.status, ExecutionStatus::Failed);
    assert_eq!(lag.error.as_deref(), Some("Canary.SplitNotObserved"));
    let cause = lag.cause.unwrap_or_default();
    assert!(
        cause.contains("green received 0 of") && cause.contains("with weight 10%"),
        "the cause names what was seen: {cause}"
    );
    assert!(
        !lag.entered.iter().any(|s| s.starts_with("Bake")),
        "held before the first bake: {:?}",
        lag.entered
    );
    assert!(lag.entered.contains(&"Rollback".to_owned()), "{:?}", lag.entered);
}
