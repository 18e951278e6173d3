//! A canary strategy judged by metrics, end to end on the embedded engine: three weights,
//! pauses, two analyses per step (an HTTP probe and a PromQL error rate from a real Prometheus
//! scraping a test service) and the error rate as a background analysis too. The daemon runs
//! it from a strategy file; the test reads it with `cutover rollouts`. Healthy, it promotes
//! itself; when the service's error rate crosses the threshold during a long bake, the
//! background analysis rolls it back before the bake is over.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::prometheus::{Prometheus, Service};
use crate::rollouts::event;
use crate::{cutover, repo};

const STRATEGY: &str = r#"
[strategy]
steps = [
  { set_weight = 10 }, { pause = "2s" }, { analysis = ["health-check", "error-rate"] },
  { set_weight = 50 }, { pause = "BAKE50" }, { analysis = ["health-check", "error-rate"] },
  { set_weight = 100 }, { pause = "1s" }, { analysis = ["health-check", "error-rate"] },
]
background = { analysis = "error-rate", every = "2s" }

[strategy.resources]
analyses = { health-check = "arn:aws:lambda:us-east-1:111122223333:function:cutover-health-check", error-rate = "arn:aws:lambda:us-east-1:111122223333:function:cutover-error-rate" }
"#;

const PIPELINES: &str = r#"
[settings]
data_dir = "DATA"

[pipelines.ecs-events]
[[pipelines.ecs-events.stages]]
type = "start-state-machine"
engine = { type = "local", definition = "strategy.toml", resources = { "arn:aws:lambda:us-east-1:111122223333:function:cutover-traffic-shift" = "traffic-shift", "arn:aws:lambda:us-east-1:111122223333:function:cutover-health-check" = "health-check", "arn:aws:lambda:us-east-1:111122223333:function:cutover-error-rate" = "error-rate" } }

[pipelines.traffic-shift]
[[pipelines.traffic-shift.stages]]
type = "traffic-shift"
router = { type = "local", zone = "test.lol", record = "www.test.lol", blue = "127.0.0.1", green = "127.0.0.2", serve = false }

[pipelines.health-check]
[[pipelines.health-check.stages]]
type = "health-check"
probe = { type = "http", url = "http://127.0.0.1:PORT/", timeout = "1s", interval = "100ms", healthy_threshold = 1, unhealthy_threshold = 1 }

[pipelines.error-rate]
[[pipelines.error-rate.stages]]
type = "health-check"
probe = { type = "prometheus", address = "PROMETHEUS", query = 'sum(rate(http_requests_total{{code="500"}}[5s])) / sum(rate(http_requests_total[5s]))', condition = "result < 0.05", count = 2, interval = "500ms", inconclusive_limit = 1 }
"#;

/// A daemon running the strategy with a 50% bake of `bake50`.
struct Canary {
    dir: tempfile::TempDir,
    file: PathBuf,
    daemon: Child,
    stdin: Option<ChildStdin>,
}

impl Canary {
    fn start(bake50: &str, service: &Service, prometheus: &Prometheus) -> Canary {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("strategy.toml"),
            STRATEGY.replace("BAKE50", bake50),
        )
        .unwrap();
        let file = dir.path().join("canary.toml");
        let text = PIPELINES
            .replace("DATA", &dir.path().join("data").display().to_string())
            .replace("PORT", &service.port.to_string())
            .replace("PROMETHEUS", &prometheus.url);
        std::fs::write(&file, text).unwrap();
        let mut daemon = cutover()
            .arg("serve")
            .arg(&file)
            .args(["--source", "stdin", "--pipeline", "ecs-events"])
            .env("CUTOVER_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = daemon.stdin.take();
        crate::echo_stderr(&mut daemon);
        Canary {
            dir,
            file,
            daemon,
            stdin,
        }
    }

    fn deploy(&mut self, v: u32) -> String {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{}", event(v)).unwrap();
        stdin.flush().unwrap();
        // Without a dedup stage, the execution is named after the event's id.
        format!("event-{v}")
    }

    fn rollouts(&self, args: &[&str]) -> String {
        let out = cutover()
            .arg("rollouts")
            .arg(args[0])
            .arg(&self.file)
            .args(&args[1..])
            .env("CUTOVER_LOG", "warn")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn status(&self, id: &str) -> Option<Value> {
        serde_json::from_str(&self.rollouts(&["status", id, "--json"])).ok()
    }

    fn wait_until(&self, id: &str, what: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
        crate::wait_for_status(
            limit,
            Duration::from_millis(200),
            &format!("{id}: {what}"),
            || self.status(id),
            done,
        )
    }

    fn weights(&self) -> (u64, u64) {
        weights(&self.dir.path().join("data/traffic/www.test.lol.json"))
    }
}

impl Drop for Canary {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

fn weights(path: &Path) -> (u64, u64) {
    let v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    (v["blue"].as_u64().unwrap(), v["green"].as_u64().unwrap())
}

/// Waits until Prometheus answers the error rate with a number (two scrapes are needed).
fn wait_for_a_rate(prometheus: &Prometheus) {
    let port: u16 = prometheus.url.rsplit(':').next().unwrap().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer =
            crate::prometheus::get(port, "/api/v1/query?query=sum(rate(http_requests_total%5B5s%5D))");
        if answer.is_some_and(|(status, body)| status == 200 && body.contains("\"value\"")) {
            return;
        }
        assert!(Instant::now() < deadline, "Prometheus never had a rate");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_metric_judged_strategy_promotes_a_healthy_green_and_rolls_back_a_sick_one_mid_bake() {
    let service = Service::start();
    let prometheus = Prometheus::start(service.port);
    wait_for_a_rate(&prometheus);
    assert!(repo("pipelines/canary.strategy.toml").exists());

    // Healthy: every step's two analyses and the background one pass; it promotes itself.
    let mut healthy = Canary::start("3s", &service, &prometheus);
    let id = healthy.deploy(2);
    let ended = healthy.wait_until(&id, "ended", Duration::from_secs(90), |s| {
        s["phase"] != "running" && s["phase"] != "paused"
    });
    assert_eq!(ended["phase"], "succeeded", "{ended:#}");
    assert_eq!(healthy.weights(), (0, 100));
    let history = healthy.rollouts(&["history", &id]);
    for state in [
        "Check10-error-rate",
        "Check50-error-rate",
        "Check100-error-rate",
        "Background-error-rate",
    ] {
        assert!(history.contains(state), "{state} missing from:\n{history}");
    }

    // Sick: half the requests fail while green bakes at 50% for a minute; the background
    // analysis rolls back long before the bake's own check.
    let mut sick = Canary::start("60s", &service, &prometheus);
    let id = sick.deploy(3);
    sick.wait_until(&id, "in Bake50", Duration::from_secs(60), |s| {
        s["window"]["name"] == "Bake50"
    });
    let since = Instant::now();
    service.errors_per_mille.store(500, Ordering::SeqCst);
    let ended = sick.wait_until(&id, "rolled back", Duration::from_secs(50), |s| {
        s["phase"] != "running"
    });
    println!("error rate up at 50% → rolled back in {:?}", since.elapsed());
    service.errors_per_mille.store(0, Ordering::SeqCst);
    assert_eq!(ended["phase"], "rolled-back", "{ended:#}");
    assert_eq!(sick.weights(), (100, 0), "all blue after the rollback");
    let cause = ended["cause"].as_str().unwrap_or_default();
    assert!(cause.contains("failed result < 0.05"), "{ended:#}");
    let history = sick.rollouts(&["history", &id]);
    let background = history
        .lines()
        .skip_while(|l| !l.contains("Bake50"))
        .find(|l| l.contains("health unhealthy"));
    assert!(
        background.is_some(),
        "no unhealthy verdict during Bake50:\n{history}"
    );
    assert!(history.contains("Background-error-rate"), "{history}");
    assert!(
        !history.contains("Check50"),
        "the bake's own check never ran:\n{history}"
    );
}
