//! `cutover serve`: one pipeline as a long-running daemon, fed by HTTP (an EventBridge API
//! destination), an SQS queue, or JSON lines on stdin.
//!
//! Every source hands its events to one [`Host`], which owns the pipeline (built once), the
//! concurrency limit and the dead-letter sink. The contract with a source is a [`Handled`]:
//! when `settled` is true the event is finished — it passed, was dropped, or failed
//! permanently *and* its dead letter is written — and the source may acknowledge it (answer
//! 200, delete the SQS message). Otherwise (a retryable failure, a dead letter that could not
//! be written, a panic) the source must make the sender deliver it again (answer 503, leave
//! the message for its visibility timeout). Nothing is acknowledged that is not recorded.
//!
//! Backpressure: each event holds one of `--concurrency` permits while it runs. The HTTP
//! handler waits for a permit before it starts an event (and answers 429 beyond
//! `--max-requests` requests taken at once), the SQS poller only asks for as many messages as
//! there are free permits, and the stdin reader stops reading while none is free.
//!
//! Shutdown (SIGTERM or SIGINT): the source stops taking events, the events already taken run
//! to their end and are acknowledged, then work stages started in the background (embedded
//! state-machine executions) is drained, and the process exits 0. A second signal exits at
//! once.

mod auth;
mod dead_letter;
mod http;
mod metrics;
mod rollouts_api;
mod sqs;
mod stdin;
pub(crate) mod ui;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use cutover_core::{Event, Outcome, Pipeline, StageError};
use cutover_pattern::{Pattern, Projected, Projection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use self::dead_letter::DeadLetter;

/// Arguments of `cutover serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The pipeline file.
    file: PathBuf,
    /// Which pipeline of the file (needed when it has several and no default).
    #[arg(long)]
    pipeline: Option<String>,
    /// Where events come from.
    #[arg(long, value_enum, default_value_t = Source::Http)]
    source: Source,
    /// Keep embedded state (dedup records, executions) in this directory instead of the file's
    /// `settings.data_dir`.
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// Most events processed at once; the sources wait (HTTP) or fetch less (SQS) when all are
    /// busy.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    concurrency: u32,
    /// Append events that fail permanently to this JSON Lines file (default
    /// `<data_dir>/dead-letter.jsonl`).
    #[arg(long, value_name = "FILE", conflicts_with = "dead_letter_queue")]
    dead_letter: Option<PathBuf>,
    /// Send events that fail permanently to this SQS queue instead of a file.
    #[arg(long, value_name = "URL")]
    dead_letter_queue: Option<String>,
    /// HTTP: the address to listen on (port 0 picks a free one; the bound address is printed
    /// on stderr).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    listen: SocketAddr,
    /// HTTP: the environment variable holding the API key expected in `x-api-key` (or
    /// `Authorization: Bearer …`).
    #[arg(long, value_name = "VAR")]
    api_key_env: Option<String>,
    /// HTTP: who the API key's holder is in the audit log of rollout actions.
    #[arg(long, default_value = "api-key", value_name = "NAME")]
    api_key_name: String,
    /// HTTP: the environment variable holding `user:password` for HTTP Basic authentication.
    #[arg(long, value_name = "VAR")]
    basic_auth_env: Option<String>,
    /// HTTP: accept unauthenticated requests (only sensible on a loopback address).
    #[arg(long, conflicts_with_all = ["api_key_env", "basic_auth_env"])]
    no_auth: bool,
    /// HTTP: the largest request body (`262144`, `256KiB`, `1MiB`); larger ones get 413. Also
    /// the longest stdin line.
    #[arg(long, default_value = "256KiB", value_parser = parse_size, value_name = "SIZE")]
    max_body: usize,
    /// HTTP: the most `POST /events` requests taken at once, waiting for a permit or running;
    /// more are answered 429 with `Retry-After` (EventBridge API destinations retry those), so
    /// an overload queues no unbounded number of bodies.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65_536), value_name = "N")]
    max_requests: u32,
    /// On SIGTERM/SIGINT: how long in-flight events may take to finish before the daemon exits
    /// anyway (HTTP senders and SQS redeliver what was not answered). Running embedded
    /// executions are not waited for: they stop at their current state and resume in the next
    /// process (a Wait with only what is left of it). Keep it under the platform's stop
    /// timeout (ECS 30 s by default, Kubernetes 30 s, systemd 90 s).
    #[arg(long, default_value = "20s", value_parser = cutover_core::duration::parse, value_name = "DURATION")]
    shutdown_timeout: std::time::Duration,
    /// HTTP: serve the dashboard at `/ui/`: the rollouts, live, with their graph, weights and
    /// health over time, and the operator's actions (which need the API's credentials).
    #[arg(long)]
    ui: bool,
    /// SQS and stdin: also serve `GET /healthz` and `GET /metrics` (no authentication) on this
    /// address until the daemon has stopped.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// SQS: the queue to long-poll.
    #[arg(long, value_name = "URL", required_if_eq("source", "sqs"))]
    queue_url: Option<String>,
    /// SQS: seconds one ReceiveMessage call waits for messages (0–20).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(i32).range(0..=20), value_name = "SECS")]
    wait_time: i32,
}

/// Where `cutover serve` takes events from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Source {
    /// `POST /events` (one EventBridge event or a JSON array of them).
    Http,
    /// Long-polling an SQS queue (`--queue-url`).
    Sqs,
    /// JSON Lines on standard input, until end of input.
    Stdin,
}

/// Parses `262144`, `256KiB`, `256k`, `1MiB`, `1m` into bytes.
fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let number: usize = t[..digits]
        .parse()
        .map_err(|_| format!("\"{text}\" is not a size (e.g. 262144, 256KiB, 1MiB)"))?;
    let unit: usize = match t[digits..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        other => return Err(format!("unknown size unit \"{other}\" (use KiB or MiB)")),
    };
    match number.checked_mul(unit) {
        Some(0) => Err("the size must be more than 0".into()),
        Some(n) => Ok(n),
        None => Err(format!("\"{text}\" is too large")),
    }
}

/// Runs `cutover serve` until the source ends (stdin) or a signal stops it.
pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    if args.source != Source::Sqs && args.queue_url.is_some() {
        anyhow::bail!("--queue-url only applies to --source sqs");
    }
    if args.ui && args.source != Source::Http {
        anyhow::bail!("--ui is served by the http source (--source http)");
    }
    if args.source == Source::Http && args.metrics_listen.is_some() {
        anyhow::bail!(
            "--metrics-listen is for the sqs and stdin sources; the http source serves /metrics itself"
        );
    }
    let auth = if args.source == Source::Http {
        let auth = auth::Auth::from_env(args.api_key_env.as_deref(), args.basic_auth_env.as_deref())?
            .with_api_key_name(&args.api_key_name);
        if auth.is_open() && !args.no_auth {
            anyhow::bail!(
                "the http source needs credentials: --api-key-env VAR and/or --basic-auth-env VAR \
                 (or --no-auth to accept anyone, e.g. on a loopback address)"
            );
        }
        auth
    } else {
        auth::Auth::default()
    };

    let (file, name, cx) = crate::load_for_host(&args.file, args.pipeline.as_deref(), args.state.as_deref())?;
    std::fs::create_dir_all(cx.data_dir())
        .with_context(|| format!("creating the data directory {}", cx.data_dir().display()))?;
    let pipeline = file.build(&name, &cx).await?;
    let dead_letter = match &args.dead_letter_queue {
        Some(url) => DeadLetter::queue(aws_sdk_sqs::Client::new(cx.aws_config().await), url.clone()),
        None => {
            let path = args
                .dead_letter
                .clone()
                .unwrap_or_else(|| cx.data_path("dead-letter.jsonl"));
            DeadLetter::file(&path).await?
        }
    };
    tracing::info!(pipeline = %pipeline.name(), dead_letter = %dead_letter, "cutover serve: starting");
    let mut host = Host::new(pipeline, dead_letter, args.concurrency);
    // `/rollouts` serves the rollouts this pipeline starts (through its start-state-machine
    // stage), when it starts any.
    if file.pick(Some(&name))?.stages.iter().any(|s| {
        s.config
            .as_any()
            .is::<cutover_stages::state_machine::StartStateMachineConfig>()
    }) {
        host.rollouts = Some(crate::rollouts_cmd::rollouts_of(&file, &name, &cx, true).await?);
    }
    // Rollout notifications (`notify` of the start-state-machine stage): watchers that stop
    // with the daemon. Each knows what was already told before the first event is taken, so
    // every rollout an event of this run starts is told.
    let _notifiers = notifiers(&file, &name, &cx, host.rollouts.as_ref()).await?;
    let host = Arc::new(host);
    let shutdown = on_signal()?;
    let mut signalled = shutdown.clone();
    // The health and metrics listener of the other sources stays up until they are drained.
    let (admin_stop, admin_stopped) = watch::channel(false);
    let admin = match args.metrics_listen {
        Some(listen) => {
            let config = http::Config {
                auth: auth::Auth::default(),
                max_body: 0,
                max_requests: 1,
                events: false,
                ui: false,
            };
            let listener = http::bind(listen).await?;
            Some(tokio::spawn(http::serve(
                host.clone(),
                listener,
                config,
                admin_stopped,
            )))
        }
        None => None,
    };

    let served = match args.source {
        Source::Http => {
            let config = http::Config {
                auth,
                max_body: args.max_body,
                max_requests: args.max_requests as usize,
                events: true,
                ui: args.ui,
            };
            http::serve(host.clone(), http::bind(args.listen).await?, config, shutdown).await
        }
        Source::Sqs => {
            let url = args.queue_url.clone().unwrap_or_default();
            let client = aws_sdk_sqs::Client::new(cx.aws_config().await);
            sqs::serve(host.clone(), client, url, args.wait_time, shutdown).await
        }
        Source::Stdin => stdin::serve(host.clone(), args.max_body, shutdown).await,
    };
    settle(&host, &cx, &mut signalled, args.shutdown_timeout).await;
    admin_stop.send_replace(true);
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    let stats = host.stats();
    eprintln!("cutover serve: stopped; {stats}");
    served?;
    // HTTP senders and SQS redeliver what was not acknowledged; a stdin line is gone.
    if stats.lost > 0 && args.source == Source::Stdin {
        eprintln!(
            "error: {} event(s) failed and could not be dead-lettered (see the log)",
            stats.lost
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Finishes what the source started. At the end of input: every in-flight event, then every
/// embedded execution to its end (a signal meanwhile turns this into a stop). On a signal: the
/// in-flight events for at most `timeout`, and the executions are stopped at their current
/// state, to resume in the next process.
async fn settle(
    host: &Host,
    cx: &cutover_core::BuildContext,
    signal: &mut watch::Receiver<bool>,
    timeout: std::time::Duration,
) {
    let started = std::time::Instant::now();
    let idle = async {
        if !*signal.borrow() {
            // Events that outlived their connection or poll still hold permits.
            tokio::select! {
                () = host.wait_idle() => return,
                () = stopped(signal) => {}
            }
        }
        if tokio::time::timeout(timeout, host.wait_idle()).await.is_err() {
            eprintln!(
                "cutover serve: {} event(s) still in flight after --shutdown-timeout {}; exiting without them \
                 (http and sqs redeliver them; stdin lines must be replayed)",
                host.in_flight(),
                cutover_core::duration::format(timeout)
            );
        }
    };
    idle.await;
    let background = cx.background();
    if !*signal.borrow() && background.pending() > 0 {
        eprintln!(
            "cutover serve: waiting for {} background task(s) (state-machine executions)",
            background.pending()
        );
        tokio::select! {
            () = background.drain() => {}
            () = stopped(signal) => {}
        }
    }
    let stopped_executions = background.abort().await;
    if stopped_executions > 0 {
        eprintln!(
            "cutover serve: stopped {stopped_executions} running execution(s) at their current state; \
             they resume where they are on restart"
        );
    }
    tracing::info!(
        seconds = started.elapsed().as_secs_f64(),
        stopped_executions,
        "cutover serve: settled"
    );
}

/// A receiver that turns true on the first SIGTERM or SIGINT; the second exits at once.
fn on_signal() -> anyhow::Result<watch::Receiver<bool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = watch::channel(false);
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("cutover serve: shutting down; finishing in-flight events (signal again to exit now)");
        tx.send_replace(true);
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("cutover serve: second signal; exiting without finishing in-flight events");
        std::process::exit(1);
    });
    Ok(rx)
}

/// Resolves once shutdown has been requested.
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    // The sender lives as long as the process; an error would mean it is gone, i.e. stop.
    let _ = rx.wait_for(|stop| *stop).await;
}

/// The one field of an event the host reads before the pipeline does: its `id`.
static HEAD: std::sync::LazyLock<Projection> = std::sync::LazyLock::new(|| {
    let id = Pattern::parse(r#"{"id": [{"exists": true}]}"#).expect("a valid pattern");
    Projection::of([&id])
});

/// Checks that `raw` is one JSON object and returns its `id`, without building a JSON tree
/// (the pipeline parses the event only if a stage needs fields beyond the raw bytes). One
/// scan that fails exactly where a full parse fails: a torn event is reported here, before a
/// prefilter that never parses could drop it.
pub(crate) fn read_event(raw: &[u8]) -> Result<Option<String>, String> {
    if !raw.trim_ascii_start().starts_with(b"{") {
        return Err("an event must be a JSON object".into());
    }
    let head = HEAD.parse(raw).map_err(|e| format!("not valid JSON: {e}"))?;
    let Projected::Object(fields) = head else {
        return Ok(None);
    };
    Ok(fields
        .into_iter()
        .find(|(key, _)| key == "id")
        .and_then(|(_, id)| match id {
            Projected::Null => None,
            Projected::String(s) => Some(s.into_owned()),
            other => Some(other.to_value().to_string()),
        }))
}

/// One event as a source received it.
#[derive(Debug, Clone)]
pub(crate) struct Input {
    /// The bytes, shared between attempts.
    pub(crate) raw: Arc<[u8]>,
    /// The EventBridge `id`, if any.
    pub(crate) id: Option<String>,
    /// Where it came from (`http:127.0.0.1:5000`, `sqs:<message id>`, `<stdin>:3`).
    pub(crate) origin: String,
}

/// What became of one event, for the source to acknowledge or not.
#[derive(Debug)]
pub(crate) struct Handled {
    /// The event's `id`, if any.
    pub(crate) id: Option<String>,
    /// How it ended.
    pub(crate) outcome: Outcome,
    /// Whether the source may forget the event (acknowledge it).
    pub(crate) settled: bool,
    /// Whether a dead letter was written for it.
    pub(crate) dead_lettered: bool,
}

impl Handled {
    /// The JSON a source reports for this event.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({"id": self.id, "outcome": self.outcome.kind()});
        match &self.outcome {
            Outcome::Passed { context } => v["context"] = serde_json::Value::Object(context.clone()),
            Outcome::Dropped { stage, reason } => {
                v["stage"] = stage.as_str().into();
                v["reason"] = reason.as_str().into();
            }
            Outcome::Failed { stage, error } => {
                v["stage"] = stage.as_str().into();
                v["reason"] = error.message.as_str().into();
                v["retryable"] = error.retryable.into();
                if let Some(kind) = &error.kind {
                    v["kind"] = kind.as_str().into();
                }
                v["dead_letter"] = self.dead_lettered.into();
            }
        }
        v
    }
}

/// Counts for the closing line.
#[derive(Debug, Default)]
struct Counts {
    events: AtomicU64,
    passed: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    dead_lettered: AtomicU64,
    lost: AtomicU64,
}

/// A reading of [`Counts`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stats {
    events: u64,
    passed: u64,
    dropped: u64,
    failed: u64,
    dead_lettered: u64,
    lost: u64,
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} events: {} passed, {} dropped, {} failed ({} dead-lettered",
            self.events, self.passed, self.dropped, self.failed, self.dead_lettered
        )?;
        if self.lost > 0 {
            write!(f, "; {} dead letter(s) could not be written", self.lost)?;
        }
        f.write_str(")")
    }
}

/// The pipeline, the concurrency limit and the dead-letter sink, shared by a source's tasks.
#[derive(Debug)]
pub(crate) struct Host {
    pipeline: Pipeline,
    /// The operations on the rollouts the pipeline starts (`/rollouts`), when it starts any.
    rollouts: Option<cutover_stages::rollouts::ops::Rollouts>,
    permits: Arc<Semaphore>,
    concurrency: u32,
    dead_letter: DeadLetter,
    counts: Counts,
}

impl Host {
    fn new(pipeline: Pipeline, dead_letter: DeadLetter, concurrency: u32) -> Self {
        Self {
            pipeline,
            rollouts: None,
            permits: Arc::new(Semaphore::new(concurrency as usize)),
            concurrency,
            dead_letter,
            counts: Counts::default(),
        }
    }

    /// The rollout operations, when the pipeline starts rollouts.
    pub(crate) fn rollouts(&self) -> Option<&cutover_stages::rollouts::ops::Rollouts> {
        self.rollouts.as_ref()
    }

    /// The pipeline (for its name and metrics).
    pub(crate) fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Waits for a free slot; an event runs while its permit is held.
    pub(crate) async fn permit(&self) -> OwnedSemaphorePermit {
        // The semaphore is never closed.
        self.permits
            .clone()
            .acquire_owned()
            .await
            .unwrap_or_else(|_| unreachable!("the semaphore is never closed"))
    }

    /// A free slot if there is one now.
    pub(crate) fn try_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// Events running now.
    pub(crate) fn in_flight(&self) -> usize {
        (self.concurrency as usize).saturating_sub(self.permits.available_permits())
    }

    /// The concurrency limit.
    pub(crate) fn concurrency(&self) -> u32 {
        self.concurrency
    }

    /// Waits until no event holds a permit.
    async fn wait_idle(&self) {
        let _all = self.permits.acquire_many(self.concurrency).await;
    }

    fn stats(&self) -> Stats {
        let c = &self.counts;
        Stats {
            events: c.events.load(Ordering::Relaxed),
            passed: c.passed.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
            lost: c.lost.load(Ordering::Relaxed),
        }
    }

    /// Runs one attempt of `input` through the pipeline.
    pub(crate) async fn run(&self, input: &Input) -> Outcome {
        let event = Event::from_bytes(input.raw.clone()).with_origin(input.origin.as_str());
        self.pipeline.run(event).await
    }

    /// Runs `input` once and settles it; retryable failures are left to the sender.
    pub(crate) async fn handle(&self, input: &Input) -> Handled {
        let outcome = self.run(input).await;
        self.settle(input, outcome, false).await
    }

    /// An input that never reached the pipeline (not JSON, too long): a permanent failure of
    /// the `input` stage, dead-lettered like any other.
    pub(crate) async fn reject(&self, input: &Input, message: String) -> Handled {
        let outcome = Outcome::Failed {
            stage: "input".into(),
            error: StageError::permanent(message).with_kind("InvalidInput"),
        };
        self.pipeline().metrics().add(
            "cutover_events_total",
            &[
                ("pipeline", self.pipeline.name()),
                ("outcome", "failed"),
                ("stage", "input"),
            ],
            1,
        );
        self.settle(input, outcome, false).await
    }

    /// Decides whether the source may forget the event: a permanent failure (or, when `last`,
    /// any failure) is dead-lettered first, and only a written dead letter settles it.
    pub(crate) async fn settle(&self, input: &Input, outcome: Outcome, last: bool) -> Handled {
        let c = &self.counts;
        c.events.fetch_add(1, Ordering::Relaxed);
        let (settled, dead_lettered) = match &outcome {
            Outcome::Passed { .. } => {
                c.passed.fetch_add(1, Ordering::Relaxed);
                (true, false)
            }
            Outcome::Dropped { .. } => {
                c.dropped.fetch_add(1, Ordering::Relaxed);
                (true, false)
            }
            Outcome::Failed { stage, error } if error.retryable && !last => {
                c.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    stage = %stage,
                    error = %error.message,
                    origin = %input.origin,
                    id = input.id.as_deref().unwrap_or("-"),
                    "event failed retryably; left for redelivery"
                );
                (false, false)
            }
            Outcome::Failed { stage, error } => {
                c.failed.fetch_add(1, Ordering::Relaxed);
                let written = self
                    .dead_letter
                    .write(self.pipeline.name(), input, stage, error)
                    .await;
                let name = self.pipeline.name();
                match written {
                    Ok(()) => {
                        c.dead_lettered.fetch_add(1, Ordering::Relaxed);
                        self.pipeline.metrics().add(
                            "cutover_dead_letters_total",
                            &[("pipeline", name), ("stage", stage)],
                            1,
                        );
                        tracing::warn!(
                            stage = %stage,
                            error = %error.message,
                            origin = %input.origin,
                            id = input.id.as_deref().unwrap_or("-"),
                            dead_letter = %self.dead_letter,
                            "event failed permanently; dead-lettered"
                        );
                        (true, true)
                    }
                    Err(dl_error) => {
                        c.lost.fetch_add(1, Ordering::Relaxed);
                        self.pipeline.metrics().add(
                            "cutover_dead_letter_errors_total",
                            &[("pipeline", name)],
                            1,
                        );
                        tracing::error!(
                            stage = %stage,
                            error = %error.message,
                            dead_letter_error = %dl_error,
                            origin = %input.origin,
                            id = input.id.as_deref().unwrap_or("-"),
                            "event failed and its dead letter could not be written; not acknowledged"
                        );
                        (false, false)
                    }
                }
            }
        };
        Handled {
            id: input.id.clone(),
            outcome,
            settled,
            dead_lettered,
        }
    }
}

/// Backoff between failed polls or attempts: doubles from `start` up to `max`.
pub(crate) fn backoff(attempt: u32, start: Duration, max: Duration) -> Duration {
    start.saturating_mul(1u32 << attempt.min(16)).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("262144"), Ok(262_144));
        assert_eq!(parse_size("256KiB"), Ok(262_144));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12 parsecs").is_err());
    }

    #[test]
    fn events_must_be_json_objects_and_ids_are_read_without_a_tree() {
        assert_eq!(
            read_event(br#" {"id":"a","detail":{"x":[1,2]}}"#),
            Ok(Some("a".into()))
        );
        assert_eq!(read_event(br#"{"detail":{}}"#), Ok(None));
        assert_eq!(read_event(br#"{"id":"\u0041"}"#), Ok(Some("A".into())));
        assert_eq!(read_event(br#"{"id":7}"#), Ok(Some("7".into())));
        assert_eq!(read_event(br#"{"id":null,"a":1}"#), Ok(None));
        assert_eq!(read_event(br#"{"id":"x","id":"y"}"#), Ok(Some("y".into())));
        // A torn or damaged event anywhere, not only in its id, is refused.
        assert!(read_event(br#"{"id":"a","detail":{"x":[1,}}"#).is_err());
        assert!(read_event(b"{\"id\":\"a\",\"d\":\"\xff\"}").is_err());
        assert!(read_event(b"[1]").unwrap_err().contains("JSON object"));
        assert!(read_event(b"{\"id\": ").unwrap_err().contains("not valid JSON"));
    }

    /// A stage that fails every event.
    #[derive(Debug)]
    struct Fail {
        retryable: bool,
    }

    impl cutover_core::Stage for Fail {
        fn process<'a>(
            &'a self,
            _event: Event,
            _next: cutover_core::Next<'a>,
        ) -> cutover_core::BoxFuture<'a, Outcome> {
            let error = if self.retryable {
                StageError::retryable("try later")
            } else {
                StageError::permanent("never")
            };
            Box::pin(std::future::ready(Outcome::failed(error)))
        }
    }

    async fn host(retryable: bool, dead_letter: &std::path::Path) -> Host {
        let stage: Arc<dyn cutover_core::Stage> = Arc::new(Fail { retryable });
        let pipeline = Pipeline::from_stages("p", vec![("fail".into(), stage)]);
        Host::new(pipeline, DeadLetter::file(dead_letter).await.unwrap(), 2)
    }

    fn input() -> Input {
        Input {
            raw: Arc::from(&br#"{"id":"e1"}"#[..]),
            id: Some("e1".into()),
            origin: "test".into(),
        }
    }

    #[tokio::test]
    async fn permanent_failures_settle_only_once_dead_lettered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dl.jsonl");
        let h = host(false, &path).await.handle(&input()).await;
        assert!(h.settled && h.dead_lettered);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);

        // A sink that cannot be written (ENOSPC): the event must not be acknowledged.
        let full = host(false, std::path::Path::new("/dev/full")).await;
        let h = full.handle(&input()).await;
        assert!(!h.settled && !h.dead_lettered, "{h:?}");
        assert_eq!(full.stats().lost, 1);
    }

    #[tokio::test]
    async fn retryable_failures_are_left_to_the_sender_unless_it_is_the_last_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dl.jsonl");
        let host = host(true, &path).await;
        let h = host.handle(&input()).await;
        assert!(!h.settled && !h.dead_lettered);
        assert!(!path.exists() || std::fs::read_to_string(&path).unwrap().is_empty());
        let outcome = host.run(&input()).await;
        let h = host.settle(&input(), outcome, true).await;
        assert!(h.settled && h.dead_lettered);
        let letter: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(&path).unwrap().trim()).unwrap();
        assert_eq!(letter["retryable"], true);
        assert_eq!(letter["stage"], "fail");
    }

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        let ms = Duration::from_millis;
        assert_eq!(backoff(0, ms(100), ms(1000)), ms(100));
        assert_eq!(backoff(2, ms(100), ms(1000)), ms(400));
        assert_eq!(backoff(30, ms(100), ms(1000)), ms(1000));
    }
}

/// A background task that is stopped when this is dropped.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One running watcher per `notify` entry of the pipeline's start-state-machine stage.
async fn notifiers(
    file: &cutover_core::PipelineFile,
    pipeline: &str,
    cx: &cutover_core::BuildContext,
    rollouts: Option<&cutover_stages::rollouts::ops::Rollouts>,
) -> anyhow::Result<Vec<AbortOnDrop>> {
    let Some(rollouts) = rollouts else {
        return Ok(Vec::new());
    };
    let spec = file.pick(Some(pipeline))?;
    let Some(stage) = spec.stages.iter().find_map(|s| {
        s.config
            .as_any()
            .downcast_ref::<cutover_stages::state_machine::StartStateMachineConfig>()
    }) else {
        return Ok(Vec::new());
    };
    let mut running = Vec::new();
    for (i, notify) in stage.notify.iter().enumerate() {
        let notifier = notify.notifier(i, rollouts.clone(), cx)?;
        tracing::info!(url = %notify.url, "cutover serve: notifying rollout events");
        let started = notifier.start().await;
        running.push(AbortOnDrop(tokio::spawn(started.follow())));
    }
    Ok(running)
}
