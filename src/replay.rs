//! `cutover replay`: run recorded events through a pipeline and report each outcome.

use std::collections::BTreeMap;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use cutover_core::{Loader, Outcome, Pipeline};
use serde_json::{Value, json};

use crate::input::{Blocks, Item, read_events};

/// Arguments of `cutover replay`.
#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// The pipeline file.
    file: PathBuf,
    /// Events: files of JSON Lines, a JSON array, or one JSON document each; `-` reads stdin.
    #[arg(required = true)]
    events: Vec<String>,
    /// Which pipeline of the file (needed when it has several).
    #[arg(long)]
    pipeline: Option<String>,
    /// One JSON object per event, then a summary line.
    #[arg(long, conflicts_with = "summary")]
    json: bool,
    /// Only the summary line (JSON), for large traces.
    #[arg(long)]
    summary: bool,
    /// Keep embedded state (dedup records, executions) in this directory instead of a fresh
    /// temporary one, so a second replay sees what the first did.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Exit with status 1 if any event failed.
    #[arg(long)]
    strict: bool,
    /// Run on the wall clock. By default replay runs on virtual time: state-machine waits and
    /// health-check intervals take no real time, so the rollouts a trace starts finish at once.
    #[arg(long)]
    real_time: bool,
    /// How many events to decide at once (default: the available cores). With 1, each event
    /// is decided after the one before it has finished; with more, consecutive batches of
    /// events are decided in parallel. Reports always come in input order.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    jobs: Option<u16>,
}

/// How many events (arrays, documents) are read and decided together: enough to amortise
/// handing a batch to a worker, few enough that memory stays small (~0.5 MB of 2 KB events).
/// JSON Lines go by blocks of one read buffer instead.
const BATCH: usize = 256;

/// The reader's own buffer: only the start of an input goes through it (its shape is told
/// there); JSON Lines are then read straight into blocks ([`Blocks`]).
const READ_BUFFER: usize = 1 << 16;

fn default_jobs() -> u16 {
    std::thread::available_parallelism().map_or(1, |n| u16::try_from(n.get()).unwrap_or(u16::MAX))
}

#[derive(Debug, Clone, Copy)]
enum Report {
    Summary,
    Json,
    Human,
}

/// One batch's outcomes: counted, and the report lines already written out.
#[derive(Debug, Default)]
struct Decided {
    summary: Summary,
    lines: Vec<u8>,
}

/// Reads every source in turn, sending batches of events; stops early when nobody receives.
fn read_batches(
    sources: &[String],
    blocks: &Blocks,
    batches: &tokio::sync::mpsc::Sender<Vec<Item>>,
) -> anyhow::Result<()> {
    let mut batch = Vec::with_capacity(BATCH);
    for name in sources {
        let flow = if name == "-" {
            let stdin = std::io::stdin();
            let input = std::io::BufReader::with_capacity(READ_BUFFER, stdin.lock());
            read_events("<stdin>", input, blocks, |item| add(&mut batch, item, batches))
                .context("reading events from stdin")?
        } else {
            let file = std::fs::File::open(name).with_context(|| format!("reading events from {name}"))?;
            let input = std::io::BufReader::with_capacity(READ_BUFFER, file);
            read_events(name, input, blocks, |item| add(&mut batch, item, batches))
                .with_context(|| format!("reading events from {name}"))?
        };
        if flow.is_break() {
            return Ok(());
        }
    }
    if !batch.is_empty() {
        let _ = batches.blocking_send(batch);
    }
    Ok(())
}

fn add(batch: &mut Vec<Item>, item: Item, batches: &tokio::sync::mpsc::Sender<Vec<Item>>) -> ControlFlow<()> {
    // A block of lines is a batch's worth on its own.
    let whole = matches!(item, Item::Lines { .. });
    batch.push(item);
    if batch.len() < BATCH && !whole {
        return ControlFlow::Continue(());
    }
    let full = std::mem::replace(batch, Vec::with_capacity(BATCH));
    match batches.blocking_send(full) {
        Ok(()) => ControlFlow::Continue(()),
        Err(_) => ControlFlow::Break(()),
    }
}

/// Decides a batch in order: checks each event's syntax, runs it, counts and reports it; hands
/// its blocks back when it is done.
async fn decide(pipeline: Pipeline, batch: Vec<Item>, report: Report, blocks: Arc<Blocks>) -> Decided {
    let mut decided = Decided::default();
    let mut events = Vec::new();
    let mut read = Vec::new();
    for item in batch {
        read.extend(item.into_events(|event| events.push(event)));
    }
    for item in events {
        let (origin, id, outcome) = match item.checked() {
            Item::Event { origin, event } => {
                if let Report::Summary = report {
                    let outcome = pipeline.run(event).await;
                    decided.summary.record(&outcome);
                    continue;
                }
                let id = event.id().map(str::to_owned);
                let outcome = pipeline.run(event.with_origin(origin.to_string())).await;
                (origin, id, outcome)
            }
            Item::Malformed { origin, message } => (
                origin,
                None,
                Outcome::Failed {
                    stage: "input".into(),
                    error: cutover_core::StageError::permanent(message),
                },
            ),
            // Blocks were cut into events above.
            Item::Lines { .. } => continue,
        };
        decided.summary.record(&outcome);
        // Writing into a Vec cannot fail.
        let _ = match report {
            Report::Summary => Ok(()),
            Report::Json => writeln!(
                decided.lines,
                "{}",
                outcome_json(&origin.to_string(), id.as_deref(), &outcome)
            ),
            Report::Human => writeln!(
                decided.lines,
                "{origin} {}: {outcome}",
                id.as_deref().unwrap_or("-")
            ),
        };
    }
    for block in read {
        blocks.give(block);
    }
    decided
}

#[derive(Debug, Default)]
struct Summary {
    events: u64,
    passed: u64,
    dropped: BTreeMap<String, u64>,
    failed: u64,
}

impl Summary {
    fn merge(&mut self, other: Summary) {
        self.events += other.events;
        self.passed += other.passed;
        self.failed += other.failed;
        for (stage, n) in other.dropped {
            *self.dropped.entry(stage).or_default() += n;
        }
    }

    fn record(&mut self, outcome: &Outcome) {
        self.events += 1;
        match outcome {
            Outcome::Passed { .. } => self.passed += 1,
            // Counted for nearly every event: the stage's name is copied only the first time.
            Outcome::Dropped { stage, .. } => match self.dropped.get_mut(stage) {
                Some(n) => *n += 1,
                None => {
                    self.dropped.insert(stage.clone(), 1);
                }
            },
            Outcome::Failed { .. } => self.failed += 1,
        }
    }

    fn to_json(&self) -> Value {
        json!({"summary": {"events": self.events, "passed": self.passed, "dropped": self.dropped, "failed": self.failed}})
    }

    fn human(&self) -> String {
        let dropped: u64 = self.dropped.values().sum();
        let by: Vec<String> = self.dropped.iter().map(|(s, n)| format!("{s} {n}")).collect();
        format!(
            "{} events: {} passed, {} dropped{}, {} failed",
            self.events,
            self.passed,
            dropped,
            if by.is_empty() {
                String::new()
            } else {
                format!(" ({})", by.join(", "))
            },
            self.failed
        )
    }
}

pub(crate) async fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let file = Loader::from_env().load_file(&args.file)?;
    let spec = file.pick(args.pipeline.as_deref())?;
    let temp;
    let data_dir = match &args.state {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::Builder::new()
                .prefix("cutover-replay-")
                .tempdir()
                .context("creating a temporary state directory")?;
            temp.path().to_owned()
        }
    };
    let mut cx = file
        .build_context()
        .with_data_dir(data_dir)
        .with_scratch_data(args.state.is_none());
    if !args.real_time {
        let virtual_time =
            cutover_stages::state_machine::VirtualTime::starting_at(std::time::SystemTime::now());
        cx = cx.with_clock(std::sync::Arc::new(virtual_time));
    }
    let pipeline = file.build(&spec.name, &cx).await?;

    let jobs = usize::from(args.jobs.unwrap_or_else(default_jobs));
    let report = if args.summary {
        Report::Summary
    } else if args.json {
        Report::Json
    } else {
        Report::Human
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut summary = Summary::default();
    // The reader thread sends batches of consecutive events; up to `jobs` batches are decided
    // at once, and their reports written in input order. Memory holds a few batches, whatever
    // the size of the input.
    // Two batches queued per job: the reader rarely waits for a worker, nor a worker for it.
    let (batches, mut received) = tokio::sync::mpsc::channel(2 * jobs);
    let sources = args.events.clone();
    let blocks = Arc::new(Blocks::default());
    let reading = blocks.clone();
    let reader = std::thread::spawn(move || read_batches(&sources, &reading, &batches));
    let mut deciding = std::collections::VecDeque::new();
    let mut open = true;
    loop {
        while open && deciding.len() < jobs {
            match received.recv().await {
                Some(batch) => {
                    deciding.push_back(tokio::spawn(decide(
                        pipeline.clone(),
                        batch,
                        report,
                        blocks.clone(),
                    )));
                }
                None => open = false,
            }
        }
        let Some(next) = deciding.pop_front() else {
            break;
        };
        let decided = next.await.context("deciding a batch of events")?;
        summary.merge(decided.summary);
        out.write_all(&decided.lines)?;
    }
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the event reader panicked"))??;
    // Rollouts the trace started run in the background; let them finish (on virtual time, at
    // once) so none is cut off.
    out.flush()?;
    cx.background().drain().await;
    if args.json || args.summary {
        writeln!(out, "{}", summary.to_json())?;
    } else {
        writeln!(out, "{}", summary.human())?;
    }
    out.flush()?;
    Ok(if args.strict && summary.failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// One event's outcome as a JSON line (`replay --json`, `dlq redrive --json`).
pub(crate) fn outcome_json(origin: &str, id: Option<&str>, outcome: &Outcome) -> Value {
    let mut v = json!({"id": id, "source": origin, "outcome": outcome.kind()});
    match outcome {
        Outcome::Passed { context } => v["context"] = Value::Object(context.clone()),
        Outcome::Dropped { stage, reason } => {
            v["stage"] = json!(stage);
            v["reason"] = json!(reason);
        }
        Outcome::Failed { stage, error } => {
            v["stage"] = json!(stage);
            v["reason"] = json!(error.message);
            v["retryable"] = json!(error.retryable);
        }
    }
    v
}
