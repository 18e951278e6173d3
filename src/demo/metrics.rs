//! The demo's metric analysis: users' traffic, green's request counters, and a real Prometheus
//! server judging green's error rate.
//!
//! When a `prometheus` binary is on the machine (the Debian package), the demo starts it on a
//! free loopback port, scraping green's `/metrics` every second; the demo's clients, which
//! look `www.catsndogs.lol` up, also request `/checkout` from the address they get —
//! and the canary judges green by its error rate as well as by the HTTP probe: after each step
//! and, in the background, every 20 s of each bake. Without Prometheus the demo says so and
//! judges by the HTTP probe only.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The Task resource of the error-rate analysis in the demo's strategy.
pub(super) const ERROR_RATE: &str = "arn:aws:lambda:us-east-1:111122223333:function:cutover-error-rate";
/// The Task resource of the HTTP probe (the shipped strategy's only analysis).
const HEALTH_CHECK: &str = "arn:aws:lambda:us-east-1:111122223333:function:cutover-health-check";

/// Requests a page served, by outcome: Prometheus's `http_requests_total{code}`.
#[derive(Debug, Default)]
pub(super) struct Counters {
    ok: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    /// Counts one answer.
    pub(super) fn count(&self, status: u16) {
        if status >= 500 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        } else {
            self.ok.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition of the counters.
    pub(super) fn exposition(&self) -> String {
        format!(
            "# TYPE http_requests_total counter\nhttp_requests_total{{code=\"200\"}} {}\nhttp_requests_total{{code=\"500\"}} {}\n",
            self.ok.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed)
        )
    }
}

/// Where the `prometheus` binary is: `--prometheus`, else `prometheus` on `PATH`.
pub(super) fn find_prometheus(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = given {
        return Some(path.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("prometheus"))
        .find(|candidate| candidate.is_file())
}

/// A Prometheus server scraping green; stopped when dropped.
#[derive(Debug)]
pub(super) struct Prometheus {
    child: crate::quit::OwnedChild,
    /// `http://127.0.0.1:PORT`.
    pub(super) url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts `binary` scraping `target`'s `/metrics` every second and waits until it is ready.
    pub(super) async fn start(binary: &Path, target: SocketAddr, port: u16) -> anyhow::Result<Prometheus> {
        let dir = tempfile::Builder::new()
            .prefix("cutover-demo-prometheus-")
            .tempdir()?;
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: green\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )?;
        let child = crate::quit::OwnedChild::spawn(
            std::process::Command::new(binary)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .with_context(|| format!("starting {}", binary.display()))?;
        let prometheus = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = prometheus.child.try_wait()? {
                bail!("{} exited at start ({status})", binary.display());
            }
            if get_status(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), "/-/ready").await == Some(200) {
                return Ok(prometheus);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("{} was not ready within 20 s", binary.display())
    }
}

/// `GET path` on `addr`: the status, if it answered.
pub(super) async fn get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut head))
        .await
        .ok()?
        .ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// The demo's strategy: the shipped one with the error rate judged after the HTTP probe in
/// every step and in the background every 20 s of a bake.
pub(super) fn strategy(shipped: &str) -> anyhow::Result<String> {
    let mut doc: toml::Table = toml::from_str(shipped).context("the shipped strategy")?;
    let strategy = doc
        .get_mut("strategy")
        .and_then(toml::Value::as_table_mut)
        .context("the shipped strategy has no [strategy]")?;
    if let Some(steps) = strategy.get_mut("steps").and_then(toml::Value::as_array_mut) {
        for step in steps.iter_mut().filter_map(toml::Value::as_table_mut) {
            if step.contains_key("analysis") {
                step.insert(
                    "analysis".into(),
                    toml::Value::from(vec!["health-check", "error-rate"]),
                );
            }
        }
    }
    let mut background = toml::Table::new();
    background.insert("analysis".into(), "error-rate".into());
    background.insert("every".into(), "20s".into());
    strategy.insert("background".into(), background.into());
    let mut analyses = toml::Table::new();
    analyses.insert("health-check".into(), HEALTH_CHECK.into());
    analyses.insert("error-rate".into(), ERROR_RATE.into());
    let mut resources = toml::Table::new();
    resources.insert("analyses".into(), analyses.into());
    strategy.insert("resources".into(), resources.into());
    Ok(format!(
        "# The demo's canary: the shipped strategy, green's error rate (from Prometheus) judged too.\n{}",
        toml::to_string(&doc)?
    ))
}

/// The demo's pipeline file: the shipped one with an `error-rate` pipeline asking `prometheus`
/// and the canary's `cutover-error-rate` resource mapped to it.
pub(super) fn pipeline(shipped: &str, prometheus: &str) -> anyhow::Result<String> {
    let mut doc: toml::Table = toml::from_str(shipped).context("the shipped pipeline file")?;
    let pipelines = doc
        .get_mut("pipelines")
        .and_then(toml::Value::as_table_mut)
        .context("the shipped file has no [pipelines]")?;
    let starter = pipelines
        .get_mut("ecs-events")
        .and_then(|p| p.get_mut("stages"))
        .and_then(toml::Value::as_array_mut)
        .and_then(|stages| {
            stages
                .iter_mut()
                .find(|s| s.get("type").and_then(toml::Value::as_str) == Some("start-state-machine"))
        })
        .and_then(|s| s.get_mut("engine"))
        .and_then(|e| e.get_mut("resources"))
        .and_then(toml::Value::as_table_mut)
        .context("the shipped ecs-events pipeline has no start-state-machine engine resources")?;
    starter.insert(ERROR_RATE.into(), "error-rate".into());
    let probe: toml::Table = toml::from_str(&format!(
        r#"type = "prometheus"
address = "{prometheus}"
query = 'sum(rate(http_requests_total{{{{code=~"5.."}}}}[10s])) / sum(rate(http_requests_total[10s]))'
condition = "result < 0.05"
count = 3
interval = "10s"
inconclusive_limit = 3
"#
    ))?;
    let mut stage = toml::Table::new();
    stage.insert("type".into(), "health-check".into());
    stage.insert("probe".into(), probe.into());
    let mut error_rate = toml::Table::new();
    error_rate.insert(
        "description".into(),
        "Task handler: green's error rate from Prometheus (no data is no verdict)".into(),
    );
    error_rate.insert("stages".into(), toml::Value::Array(vec![stage.into()]));
    pipelines.insert("error-rate".into(), error_rate.into());
    Ok(toml::to_string(&doc)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_strategy_and_pipeline_judge_the_error_rate_too() {
        let strategy_text = strategy(include_str!("../../pipelines/canary.strategy.toml")).unwrap();
        let doc: toml::Table = toml::from_str(&strategy_text).unwrap();
        let strategy: cutover_stages::state_machine::strategy::Strategy =
            doc["strategy"].clone().try_into().unwrap();
        let compiled = strategy.compile().unwrap();
        assert_eq!(compiled["States"]["Check50-error-rate"]["Resource"], ERROR_RATE);
        assert_eq!(
            compiled["States"]["Background-error-rate"]["Resource"],
            ERROR_RATE
        );

        let text = pipeline(
            include_str!("../../pipelines/catsndogs.toml"),
            "http://127.0.0.1:9",
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("catsndogs.toml"), &text).unwrap();
        std::fs::write(dir.path().join("canary.strategy.toml"), &strategy_text).unwrap();
        let file = cutover_core::Loader::new()
            .load_file(dir.path().join("catsndogs.toml"))
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(file.pipeline("error-rate").is_some());
        let probe = &file.pipeline("error-rate").unwrap().stages[0];
        assert!(
            format!("{:?}", probe.config).contains("code=~\\\"5..\\\""),
            "{:?}",
            probe.config
        );
    }

    #[test]
    fn counters_expose_prometheus_text() {
        let c = Counters::default();
        c.count(200);
        c.count(500);
        c.count(503);
        let text = c.exposition();
        assert!(text.contains("http_requests_total{code=\"200\"} 1\n"), "{text}");
        assert!(text.contains("http_requests_total{code=\"500\"} 2\n"), "{text}");
    }
}
