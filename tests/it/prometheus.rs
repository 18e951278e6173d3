//! The `prometheus` probe against a real Prometheus server (Debian package `prometheus`,
//! installed by `scripts/test.sh`) scraping a test service whose error rate the test sets: the
//! canary's judge says healthy while errors are rare and unhealthy once they are not.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cutover_core::{BuildContext, Event, Outcome, Pipeline, StageConfig};
use serde_json::Value;

/// A service exposing request counters; `errors_per_mille` of its requests fail.
pub(crate) struct Service {
    pub(crate) errors_per_mille: Arc<AtomicU64>,
    pub(crate) port: u16,
}

impl Service {
    pub(crate) fn start() -> Service {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let errors_per_mille = Arc::new(AtomicU64::new(0));
        let (ok, err) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        // 100 requests a second, of which the given share fail.
        let (rate, o, e) = (errors_per_mille.clone(), ok.clone(), err.clone());
        std::thread::spawn(move || {
            loop {
                let bad = rate.load(Ordering::SeqCst);
                e.fetch_add(bad / 100, Ordering::SeqCst);
                o.fetch_add(10 - bad / 100, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut buf = [0u8; 2048];
                let _ = stream.read(&mut buf);
                let body = format!(
                    "# TYPE http_requests_total counter\nhttp_requests_total{{code=\"200\"}} {}\nhttp_requests_total{{code=\"500\"}} {}\n",
                    ok.load(Ordering::SeqCst),
                    err.load(Ordering::SeqCst)
                );
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Service {
            errors_per_mille,
            port,
        }
    }
}

/// A Prometheus server scraping `target` every second, stopped on drop.
pub(crate) struct Prometheus {
    child: Child,
    pub(crate) url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn prometheus_binary() -> String {
    std::env::var("CUTOVER_PROMETHEUS").unwrap_or_else(|_| "prometheus".into())
}

impl Prometheus {
    pub(crate) fn start(target: u16) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: green\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .unwrap();
        // The port is found by binding and releasing it (Prometheus cannot be handed a socket);
        // a port taken meanwhile makes Prometheus exit, and the next one is tried.
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut child = Command::new(prometheus_binary())
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start {}: {e}; run ./scripts/test.sh, which installs the Debian package prometheus", prometheus_binary())
                });
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if get(port, "/-/ready").is_some_and(|(status, _)| status == 200) {
                    return Prometheus {
                        child,
                        url: format!("http://127.0.0.1:{port}"),
                        _dir: dir,
                    };
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("prometheus did not become ready");
    }
}

pub(crate) fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status = raw.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, raw))
}

async fn judge(pipeline: &Pipeline) -> Value {
    match pipeline
        .run(Event::from_value(serde_json::json!({"weight": 10})))
        .await
    {
        Outcome::Passed { context } => Value::Object(context),
        other => panic!("{other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_judges_green_healthy_then_sick() {
    let service = Service::start();
    let prometheus = Prometheus::start(service.port);
    let text = format!(
        "type = \"health-check\"\nprobe = {{ type = \"prometheus\", address = \"{}\", query = \"sum(rate(http_requests_total{{{{code=\\\"500\\\"}}}}[5s])) / sum(rate(http_requests_total[5s]))\", condition = \"result < 0.05\", count = 3, interval = \"1s\", failure_limit = 0, inconclusive_limit = 0 }}",
        prometheus.url
    );
    let config: Box<dyn StageConfig> = toml::from_str(&text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stage = config.build(&BuildContext::new(dir.path())).await.unwrap();
    let pipeline = Pipeline::from_stages("judge", vec![("health-check".into(), stage)]);

    // Until Prometheus has two scrapes there is no rate (inconclusive); then healthy.
    let deadline = Instant::now() + Duration::from_secs(60);
    let healthy = loop {
        let answer = judge(&pipeline).await;
        if answer["State"] == "healthy" {
            break answer;
        }
        assert!(Instant::now() < deadline, "never healthy: {answer:#}");
    };
    assert_eq!(healthy["checks"].as_array().unwrap().len(), 3, "{healthy:#}");
    assert_eq!(healthy["checks"][0]["values"][0], 0.0, "{healthy:#}");

    // Half the requests fail: the next measurements cross the threshold.
    service.errors_per_mille.store(500, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(60);
    let sick = loop {
        let answer = judge(&pipeline).await;
        if answer["State"] == "unhealthy" {
            break answer;
        }
        assert!(Instant::now() < deadline, "never unhealthy: {answer:#}");
    };
    let reason = sick["reason"].as_str().unwrap();
    assert!(reason.contains("failed result < 0.05 (limit 0)"), "{reason}");
    let failed = &sick["checks"].as_array().unwrap().last().unwrap()["values"][0];
    assert!(failed.as_f64().unwrap() >= 0.05, "{sick:#}");
}
