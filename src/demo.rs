//! `cutover demo`: the whole canary on one machine, on embedded backends only.
//!
//! Starts blue ("cats v2", 127.0.0.1) and green ("cats v3", 127.0.0.2) web services on one
//! loopback port and the embedded weighted DNS server for `www.catsndogs.lol`, then replays a
//! recorded ECS trace of a green deployment (3 tasks, duplicates, noise from other services and
//! clusters) through the shipped pipeline `pipelines/catsndogs.toml`: one rollout starts, the
//! embedded engine runs the canary of `pipelines/canary.strategy.toml` (10% → 50% → 100%, health checks between),
//! and the demo shows each weight step with DNS answers sampled from the zone, the split its
//! clients actually observed beside the weight set (the canary's observed-split gate, on in the
//! demo), each health check, and the end. `--fail-green` makes green answer 500 once it has 50% of the traffic, so
//! the state machine rolls back to 100% blue. With a `prometheus` binary on the machine, green's
//! error rate is judged too ([`metrics`]); `--scenario errors` shows what only that sees.

mod metrics;

use std::convert::Infallible;
use std::io::IsTerminal;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use cutover_asl::{EventKind, ExecutionRecord, FileStore};
use cutover_core::{Event, Loader, Outcome};
use cutover_stages::rollouts::Action;
use cutover_stages::state_machine::EngineClock;
use cutover_stages::traffic_shift::dns::query_address;
use cutover_stages::traffic_shift::local::WeightStore;
use cutover_stages::traffic_shift::{RouterConfig, TrafficShiftConfig};
use http_body_util::Full;
use hyper::body::Bytes;
use serde_json::{Value, json};

mod services;

const PIPELINE: &str = include_str!("../pipelines/catsndogs.toml");
const STRATEGY: &str = include_str!("../pipelines/canary.strategy.toml");
const TRACE: &str = include_str!("../tests/fixtures/deployment-trace.jsonl");
const BLUE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const GREEN: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const DNS_SAMPLES: usize = 100;

/// Arguments of `cutover demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// How much faster than real time the state machine's waits and the health checks run
    /// (the canary bakes 60 s per step; the default makes the demo take a few seconds).
    #[arg(long, default_value_t = 30.0)]
    speed: f64,
    /// Make green answer HTTP 500 once it serves 50%: the canary rolls back to 100% blue and the
    /// demo exits with status 1.
    #[arg(long)]
    fail_green: bool,
    /// Progress as JSON lines, ending with a summary line.
    #[arg(long)]
    json: bool,
    /// Keep the embedded state here instead of a temporary directory.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Steer the rollout partway, as an operator would with `cutover rollouts`: `abort` at 50%
    /// (traffic back to blue, exit status 1), or `pause` at 10% for three bakes' time, then
    /// resume (health is still checked while paused).
    #[arg(long, value_enum)]
    scenario: Option<Scenario>,
    /// Do not serve the dashboard (by default it is served on a free loopback port while the
    /// demo runs, and its URL printed).
    #[arg(long)]
    no_ui: bool,
    /// The Prometheus server binary that judges green's error rate (default: `prometheus` on
    /// PATH; without one, green is judged by the HTTP probe only).
    #[arg(long, value_name = "PATH")]
    prometheus: Option<PathBuf>,
    /// Judge green by the HTTP probe only, even with Prometheus on the machine.
    #[arg(long, conflicts_with = "prometheus")]
    no_prometheus: bool,
    /// Roll out this many services at once from one pipeline file (`[services]`), each with its
    /// own embedded record and green server; the last one's green fails at 50% and rolls back.
    /// Exits 0 when every other service was promoted and that one rolled back.
    #[arg(long, default_value_t = 1)]
    services: usize,
}

/// What `--scenario` does to the rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Scenario {
    /// Abort it while it bakes at 50%.
    Abort,
    /// Pause it while it bakes at 10%, then resume.
    Pause,
    /// From 50%, green fails its users' checkouts while its health page stays fine: only the
    /// error-rate analysis (Prometheus) sees it, mid-bake, and rolls back.
    Errors,
}

/// Where the scenario is.
#[derive(Debug, Default)]
struct Steering {
    /// When it paused (real time), once it has.
    paused: Option<Instant>,
    /// Done acting.
    done: bool,
}

/// Takes the scenario's action when the rollout reaches its wait; returns what it did.
async fn steer(
    scenario: Scenario,
    rollouts: &cutover_stages::rollouts::ops::Rollouts,
    steering: &mut Steering,
    hold: Duration,
) -> anyhow::Result<Option<(Action, String)>> {
    if steering.done {
        return Ok(None);
    }
    let Some(rollout) = rollouts.list(false).await?.into_iter().next() else {
        return Ok(None);
    };
    let wait = rollout.window.as_ref().map(|w| w.name.clone());
    let (action, reason) = match (scenario, steering.paused) {
        (Scenario::Abort, _) if wait.as_deref() == Some("Bake50") => {
            steering.done = true;
            (Action::Abort, "demo: latency doubled at 50%")
        }
        (Scenario::Pause, None) if wait.as_deref() == Some("Bake10") => {
            steering.paused = Some(Instant::now());
            (Action::Pause, "demo: holding at 10% to read the logs")
        }
        (Scenario::Pause, Some(at)) if at.elapsed() >= hold => {
            steering.done = true;
            (Action::Resume, "demo: the logs look fine")
        }
        _ => return Ok(None),
    };
    rollouts.act(&rollout.id, action, reason, "demo", false).await?;
    Ok(Some((action, reason.to_owned())))
}

/// A background task that ends when this is dropped.
struct Reporter {
    json: bool,
    tty: bool,
}

impl Reporter {
    fn say(&self, human: &str, machine: Value) {
        if self.json {
            outln!("{machine}");
        } else {
            outln!("{human}");
        }
    }
}

/// A port free on loopback for TCP on blue's and green's addresses and for UDP on blue's: one
/// the web pages (TCP on both) or the DNS server (UDP and TCP on blue) can take.
fn free_port() -> anyhow::Result<u16> {
    for _ in 0..20 {
        let port = std::net::TcpListener::bind((BLUE, 0))?.local_addr()?.port();
        if std::net::TcpListener::bind((GREEN, port)).is_ok()
            && std::net::UdpSocket::bind((BLUE, port)).is_ok()
        {
            return Ok(port);
        }
    }
    bail!("no loopback port free on both 127.0.0.1 and 127.0.0.2")
}

/// The demo's `ecs-events` pipeline, its context on data directory `data` and a clock running
/// `speed` times faster than the wall clock.
async fn build_scaled(
    file: &cutover_core::PipelineFile,
    data: &Path,
    speed: f64,
) -> anyhow::Result<(cutover_core::BuildContext, cutover_core::Pipeline)> {
    let clock = EngineClock(Arc::new(cutover_asl::ScaledClock::new(speed)));
    let cx = file
        .build_context()
        .with_data_dir(data)
        .with_clock(Arc::new(clock));
    let pipeline = file.build("ecs-events", &cx).await?;
    Ok((cx, pipeline))
}

/// The loader of the demo's pipeline file: the embedded zone served on `dns`, and a control
/// tick of 5 s — each 1 s tick of a wait costs a few milliseconds of bookkeeping, which the
/// demo's speed-up multiplies.
fn embedded_loader(dns: SocketAddr) -> Loader {
    Loader::new()
        .with_var(
            "CUTOVER_PIPELINES__TRAFFIC_SHIFT__STAGES__1__ROUTER__LISTEN",
            dns.to_string(),
        )
        .with_var(
            "CUTOVER_PIPELINES__TRAFFIC_SHIFT__STAGES__1__ROUTER__SERVE",
            "true",
        )
        .with_var(
            "CUTOVER_PIPELINES__ECS_EVENTS__STAGES__START_STATE_MACHINE__CONTROL__TICK",
            "5s",
        )
}

/// A tiny web service: the cats page, or a 500 while `sick(path)` says so; with `counters`,
/// it counts its answers and serves them at `/metrics`.
async fn serve_page(
    addr: SocketAddr,
    page: &'static str,
    sick: impl Fn(&str) -> bool + Send + Sync + 'static,
    counters: Option<Arc<metrics::Counters>>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let sick = Arc::new(sick);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (sick, counters) = (sick.clone(), counters.clone());
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let path = req.uri().path().to_owned();
                let answer = match &counters {
                    Some(c) if path == "/metrics" => (200, "text/plain; version=0.0.4", c.exposition()),
                    _ if sick(&path) => (500, "text/html", "cats v3 is sick\n".to_owned()),
                    _ => (200, "text/html", page.to_owned()),
                };
                if let Some(c) = &counters
                    && path != "/metrics"
                {
                    c.count(answer.0);
                }
                async move {
                    let (status, content_type, body) = answer;
                    let response = hyper::Response::builder()
                        .status(status)
                        .header("content-type", content_type)
                        .body(Full::new(Bytes::from(body)));
                    Ok::<_, Infallible>(response.unwrap_or_default())
                }
            });
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    Ok(())
}

async fn sample_dns(server: SocketAddr) -> (usize, usize) {
    let (mut blue, mut green) = (0, 0);
    for _ in 0..DNS_SAMPLES {
        match query_address(server, "www.catsndogs.lol").await {
            Ok(Some(IpAddr::V4(ip))) if ip == GREEN => green += 1,
            Ok(Some(_)) => blue += 1,
            _ => {}
        }
    }
    (blue, green)
}

/// The executions the engine has persisted, by file.
fn executions(dir: &Path) -> Vec<ExecutionRecord> {
    if !dir.exists() {
        return Vec::new();
    }
    FileStore::new(dir).and_then(|s| s.list()).unwrap_or_default()
}

#[derive(Default)]
struct Progress {
    seen: usize,
    /// Held by the demo's 100-lookup samples, so they are consecutive answers (which follow the
    /// weights exactly) while the clients keep looking the name up around them.
    lookups: Arc<tokio::sync::Mutex<()>>,
    /// Ended by an operator's abort.
    aborted: bool,
    weights: Vec<[u64; 2]>,
    status: Option<String>,
    cause: Option<String>,
}

impl Progress {
    fn end(&mut self, status: &str, cause: &Option<String>) {
        self.status = Some(status.to_owned());
        self.cause = cause.clone();
    }
}

/// Reports the history events of the (single) execution not yet reported.
async fn report_history(dir: &Path, progress: &mut Progress, dns: SocketAddr, out: &Reporter) {
    let Some(record) = executions(dir).into_iter().next() else {
        return;
    };
    for event in record.history.iter().skip(progress.seen) {
        progress.seen += 1;
        match &event.kind {
            EventKind::TaskSucceeded { resource, output } if resource.ends_with("cutover-traffic-shift") => {
                let (b, g) = (
                    output["blue"].as_u64().unwrap_or(0),
                    output["green"].as_u64().unwrap_or(0),
                );
                progress.weights.push([b, g]);
                let (db, dg) = {
                    let _alone = progress.lookups.lock().await;
                    sample_dns(dns).await
                };
                out.say(
                    &format!("  shift   blue {b:>3}% / green {g:>3}%   dig www.catsndogs.lol ×{DNS_SAMPLES}: {db} blue, {dg} green"),
                    json!({"step": "shift", "blue": b, "green": g, "dns": {"blue": db, "green": dg}}),
                );
            }
            EventKind::TaskSucceeded { resource, output }
                if resource.ends_with("cutover-health-check") && output["checks"][0].get("set").is_some() =>
            {
                let check = &output["checks"][0];
                let state = output["State"].as_str().unwrap_or("?");
                let answers = check["blue"].as_f64().unwrap_or(0.0) + check["green"].as_f64().unwrap_or(0.0);
                let observed = check["observed"].as_f64();
                out.say(
                    &format!(
                        "  observe set green {:>3}% → observed {} of {answers} DNS answers: {state}",
                        check["set"],
                        observed.map_or("—".to_owned(), |o| format!("{o:.1}%")),
                    ),
                    json!({"step": "observe", "set": check["set"], "observed": observed, "answers": answers, "state": state, "reason": output["reason"]}),
                );
            }
            EventKind::TaskSucceeded { resource, output } if resource.ends_with("cutover-health-check") => {
                let state = output["State"].as_str().unwrap_or("?");
                let reason = output["reason"].as_str().unwrap_or("");
                out.say(
                    &format!(
                        "  health  green is {state}{}",
                        if reason.is_empty() {
                            String::new()
                        } else {
                            format!(": {reason}")
                        }
                    ),
                    json!({"step": "health", "state": state, "reason": reason}),
                );
            }
            EventKind::TaskSucceeded { resource, output } if resource == metrics::ERROR_RATE => {
                let state = output["State"].as_str().unwrap_or("?");
                let reason = output["reason"].as_str().unwrap_or("");
                out.say(
                    &format!("  metric  green's error rate: {state}: {reason}"),
                    json!({"step": "metric", "state": state, "reason": reason}),
                );
            }
            // A wait of the canary starts (its ticks are not news).
            EventKind::StateExited { name, output }
                if output["bake"]["name"] == name.as_str()
                    && output["bake"]["seconds"].as_u64() > Some(0) =>
            {
                let seconds = output["bake"]["seconds"].as_u64().unwrap_or(0);
                out.say(
                    &format!("  bake    {name} ({seconds} s)"),
                    json!({"step": "bake", "state": name, "seconds": seconds}),
                );
            }
            EventKind::ExecutionSucceeded { .. } => progress.end("SUCCEEDED", &None),
            EventKind::ExecutionFailed { error, cause } => {
                progress.aborted = error.as_deref() == Some("Canary.Aborted");
                progress.end("FAILED", cause);
            }
            EventKind::ExecutionTimedOut { cause, .. } => progress.end("TIMEDOUT", cause),
            EventKind::ExecutionAborted { cause } => progress.end("ABORTED", cause),
            _ => {}
        }
    }
}

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if !(args.speed.is_finite() && args.speed > 0.0) {
        bail!("--speed must be a positive number, e.g. 30");
    }
    let out = Reporter {
        json: args.json,
        tty: std::io::stdout().is_terminal(),
    };
    let temp;
    let root = match &args.state {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::Builder::new().prefix("cutover-demo-").tempdir()?;
            temp.path().to_owned()
        }
    };
    if args.services != 1 {
        return services::run(args.services, args.speed, &out, &root).await;
    }
    let pipelines_dir = root.join("pipelines");
    std::fs::create_dir_all(&pipelines_dir)?;
    let prometheus_bin = if args.no_prometheus {
        None
    } else {
        metrics::find_prometheus(args.prometheus.as_deref())
    };
    if args.scenario == Some(Scenario::Errors) && prometheus_bin.is_none() {
        bail!(
            "--scenario errors needs a Prometheus server to judge green's error rate: install the \
             Debian package prometheus, or give its binary with --prometheus PATH"
        );
    }
    let prometheus_port = match prometheus_bin {
        Some(_) => Some(free_port()?),
        None => None,
    };
    match prometheus_port {
        Some(port) => {
            let address = format!("http://127.0.0.1:{port}");
            std::fs::write(
                pipelines_dir.join("catsndogs.toml"),
                metrics::pipeline(PIPELINE, &address)?,
            )?;
            std::fs::write(
                pipelines_dir.join("canary.strategy.toml"),
                metrics::strategy(STRATEGY)?,
            )?;
        }
        None => {
            std::fs::write(pipelines_dir.join("catsndogs.toml"), PIPELINE)?;
            std::fs::write(pipelines_dir.join("canary.strategy.toml"), STRATEGY)?;
        }
    }
    let data = root.join("state");

    let http_port = free_port()?;
    let dns_port = free_port()?;
    let dns = SocketAddr::from((BLUE, dns_port));
    let loader = embedded_loader(dns)
        .with_var(
            "CUTOVER_PIPELINES__HEALTH_CHECK__STAGES__1__PROBE__URL",
            format!("http://{GREEN}:{http_port}/"),
        )
        // Before each bake the canary checks that green actually receives the weight set,
        // counting the answers the zone gives the demo's clients.
        .with_var(
            "CUTOVER_PIPELINES__ECS_EVENTS__STAGES__START_STATE_MACHINE__CONTROL__OBSERVE_SPLIT",
            "true",
        );
    let file = loader.load_file(pipelines_dir.join("catsndogs.toml"))?;

    // Green reads the same weights file the router writes, to fall sick at 50%.
    let mut router = file
        .pipeline("traffic-shift")
        .and_then(|p| p.stages.first())
        .and_then(|s| s.config.as_any().downcast_ref::<TrafficShiftConfig>())
        .and_then(|c| match &c.router {
            RouterConfig::Local(local) => Some(local.clone()),
            _ => None,
        })
        .context("the demo pipeline's traffic-shift stage has no local router")?;
    router.serve = false;
    let spec = router.spec()?;
    let weights_path = data.join(format!("traffic/{}.json", spec.record));
    let weights = WeightStore::open(spec, &weights_path)?;
    let fail_green = args.fail_green;
    let failing_checkouts = args.scenario == Some(Scenario::Errors);
    let green_weights = weights.clone();
    serve_page(
        SocketAddr::from((BLUE, http_port)),
        "<h1>cats v2</h1>\n",
        |_| false,
        None,
    )
    .await?;
    let green_counters = prometheus_port.map(|_| Arc::new(metrics::Counters::default()));
    serve_page(
        SocketAddr::from((GREEN, http_port)),
        "<h1>cats v3</h1>\n",
        move |path| {
            let at_half = green_weights.weights().green >= 50;
            at_half && (fail_green || (failing_checkouts && path == "/checkout"))
        },
        green_counters,
    )
    .await?;
    let prometheus = match (&prometheus_bin, prometheus_port) {
        (Some(bin), Some(port)) => Some(
            metrics::Prometheus::start(bin, SocketAddr::from((GREEN, http_port)), port)
                .await
                .context("the demo's Prometheus (run with --no-prometheus to judge green by HTTP only)")?,
        ),
        _ => None,
    };

    let speed = args.speed;
    let (cx, pipeline) = build_scaled(&file, &data, speed).await?;
    out.say(
        &format!(
            "cutover demo: blue http://{BLUE}:{http_port}/ (cats v2), green http://{GREEN}:{http_port}/ (cats v3), \
             DNS {dns} for www.catsndogs.lol; time ×{speed}{}",
            if fail_green { "; green will fail at 50%" } else { "" }
        ),
        json!({"demo": {"blue": format!("{BLUE}:{http_port}"), "green": format!("{GREEN}:{http_port}"), "dns": dns.to_string(), "speed": speed, "fail_green": fail_green}}),
    );
    match &prometheus {
        Some(prometheus) => out.say(
            &format!(
                "  metric analysis: Prometheus {} scrapes green's /metrics; its clients (which look \
                 the zone up) check out at the address they get; green's error rate is judged after each step and every 20 s of a bake",
                prometheus.url
            ),
            json!({"metrics": {"prometheus": prometheus.url}}),
        ),
        None => out.say(
            "  metric analysis: no Prometheus on this machine (Debian package prometheus, or \
             --prometheus PATH): green is judged by the HTTP probe only",
            json!({"metrics": Value::Null}),
        ),
    }
    let ops = crate::rollouts_cmd::rollouts_of(&file, "ecs-events", &cx, false).await?;
    // The dashboard reads the same rollouts; it stops with the demo.
    let _dashboard = if args.no_ui {
        None
    } else {
        let (listener, addr) = crate::serve::ui::bind_loopback().await?;
        out.say(
            &format!("  dashboard: http://{addr}/ui/  (read-only; try --speed 1 to watch it)"),
            json!({"dashboard": format!("http://{addr}/ui/")}),
        );
        Some(crate::serve::AbortOnDrop(tokio::spawn(
            crate::serve::ui::serve_read_only(listener, ops.clone()),
        )))
    };
    let (b, g) = sample_dns(dns).await;
    out.say(
        &format!("  before  dig www.catsndogs.lol ×{DNS_SAMPLES}: {b} blue, {g} green"),
        json!({"step": "before", "dns": {"blue": b, "green": g}}),
    );

    let started = Instant::now();
    let (mut events, mut filtered, mut duplicates, mut rollouts, mut failed) = (0u64, 0u64, 0u64, 0u64, 0u64);
    for (i, line) in TRACE.lines().enumerate() {
        events += 1;
        let outcome = pipeline.run(Event::from_bytes(line.as_bytes().to_vec())).await;
        match &outcome {
            Outcome::Dropped { stage, .. } if stage == "filter" => filtered += 1,
            Outcome::Dropped { stage, reason } if stage == "dedup" => {
                duplicates += 1;
                out.say(
                    &format!(
                        "event {:>2}: same deployment again (another task or a redelivery): dropped by dedup",
                        i + 1
                    ),
                    json!({"event": i + 1, "outcome": "dropped", "stage": "dedup", "reason": reason}),
                );
            }
            Outcome::Passed { context } => {
                rollouts += 1;
                out.say(
                    &format!(
                        "event {:>2}: green deployment → rollout started: {}",
                        i + 1,
                        context["execution"].as_str().unwrap_or("")
                    ),
                    json!({"event": i + 1, "outcome": "passed", "execution": context["execution"]}),
                );
            }
            Outcome::Dropped { .. } => filtered += 1,
            Outcome::Failed { stage, error } => {
                failed += 1;
                out.say(
                    &format!("event {:>2}: failed in {stage}: {}", i + 1, error.message),
                    json!({"event": i + 1, "outcome": "failed", "stage": stage, "reason": error.message}),
                );
            }
        }
    }
    out.say(
        &format!("events: {events} in, {filtered} filtered, {duplicates} duplicates, {failed} failed, {rollouts} rollout started"),
        json!({"events": {"in": events, "filtered": filtered, "duplicates": duplicates, "failed": failed, "rollouts": rollouts}}),
    );

    let file_path = pipelines_dir.join("catsndogs.toml");
    out.say(
        &format!(
            "  steer   while it runs, from another terminal (try --speed 1):\n            \
             cutover rollouts watch {f} --state {d}\n            \
             cutover rollouts pause {f} --state {d} cats-green --reason \"…\"  (resume, promote, abort)",
            f = file_path.display(),
            d = data.display()
        ),
        json!({"steer": {"file": file_path, "state": data}}),
    );
    let mut steering = Steering::default();
    // Three bakes of 60 s at the demo's speed.
    let hold = Duration::from_secs_f64(180.0 / speed);
    let executions_dir = data.join("executions");
    let mut progress = Progress::default();
    // The clients of www.catsndogs.lol: a lookup every 2 ms, whose answers the canary's
    // observed-split gate counts; with Prometheus, every tenth also checks out at the address
    // it got, so green's error rate follows the traffic it really receives.
    let _clients = {
        let lookups = progress.lookups.clone();
        let checkout = prometheus.is_some();
        crate::serve::AbortOnDrop(tokio::spawn(async move {
            for n in 0u64.. {
                let answer = {
                    let _turn = lookups.lock().await;
                    query_address(dns, "www.catsndogs.lol").await
                };
                if checkout
                    && n % 10 == 0
                    && let Ok(Some(ip)) = answer
                {
                    tokio::spawn(metrics::get_status(SocketAddr::new(ip, http_port), "/checkout"));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }))
    };
    let drained = cx.background().drain();
    tokio::pin!(drained);
    // Stopped from outside (Ctrl-C, `kill`): end here, so what the demo started (its servers,
    // its Prometheus) ends with it.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            () = &mut drained => break,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
            _ = terminate.recv() => bail!("terminated"),
            () = tokio::time::sleep(Duration::from_millis(if out.tty { 50 } else { 20 })) => {
                report_history(&executions_dir, &mut progress, dns, &out).await;
                if let Some(scenario) = args.scenario
                    && let Some((action, reason)) = steer(scenario, &ops, &mut steering, hold).await?
                {
                    out.say(
                        &format!("  {:<7} cutover rollouts {action} … --reason \"{reason}\"", action.as_str()),
                        json!({"step": "action", "action": action.as_str(), "reason": reason}),
                    );
                }
            }
        }
    }
    report_history(&executions_dir, &mut progress, dns, &out).await;
    let final_weights = weights.weights();
    let (b, g) = sample_dns(dns).await;
    let executions_count = executions(&executions_dir).len();
    let rolled_back = progress.status.as_deref() != Some("SUCCEEDED");
    let status = progress.status.clone().unwrap_or_else(|| "NOT STARTED".into());
    out.say(
        &format!(
            "{}: {status}{} — final blue {}% / green {}%; dig ×{DNS_SAMPLES}: {b} blue, {g} green; {executions_count} execution(s); {:.1} s",
            match (rolled_back, progress.aborted) {
                (false, _) => "promoted",
                (true, true) => "aborted",
                (true, false) => "rolled back",
            },
            progress.cause.as_deref().map(|c| format!(" ({c})")).unwrap_or_default(),
            final_weights.blue,
            final_weights.green,
            started.elapsed().as_secs_f64()
        ),
        json!({"summary": {
            "events": events,
            "executions": executions_count,
            "weights": progress.weights,
            "final": {"blue": final_weights.blue, "green": final_weights.green},
            "rolled_back": rolled_back,
            "status": status,
        }}),
    );
    Ok(if rolled_back {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
