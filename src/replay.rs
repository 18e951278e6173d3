//! `cutover replay`: run recorded events through a pipeline and report each outcome.

use std::collections::BTreeMap;
use std::io::{BufRead as _, Write};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use anyhow::Context as _;
use clap::Args;
use cutover_core::{Batch, Event, Loader, Outcome, Pipeline};
use serde_json::{Value, json};

use crate::input::{
    Blocks, FileRange, FileRanges, Item, LineBlocks, Started, next_line, read_events, start_events,
    syntax_error,
};

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

/// How often a deciding thread waiting for input from a reader thread looks whether the
/// replay has stopped (its output closed, a stage panicked).
const STOP_CHECK: std::time::Duration = std::time::Duration::from_millis(50);

/// How many events (arrays, documents) are read and decided together: enough to amortise
/// handing a batch to a worker, few enough that memory stays small (~0.5 MB of 2 KB events).
/// JSON Lines go by blocks of one read buffer instead.
const BATCH: usize = 256;

/// The reader's own buffer: only the start of an input goes through it (its shape is told
/// there); JSON Lines are then read straight into blocks ([`Blocks`]).
const READ_BUFFER: usize = 1 << 16;

fn default_jobs() -> u16 {
    u16::try_from(crate::cores()).unwrap_or(u16::MAX)
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

/// Where the deciding threads take their batches from, one at a time and in input order: the
/// sources in turn. The blocks of a JSON Lines file are read by the deciding threads
/// themselves, each taking the next block under the lock and deciding it on its own core
/// (reading needs no thread of its own, and a block is decided where it was read); stdin and
/// JSON arrays are read by a reader thread that sends batches.
struct Feed {
    sources: std::vec::IntoIter<String>,
    now: Now,
    /// Events read with a source's start, going before its blocks.
    queued: Vec<Item>,
    /// The number of the next batch.
    next: u64,
    /// How many batches a reader thread may have queued.
    bound: usize,
    /// Whether lines are numbered: not for a summary, which reports no origin (counting lines
    /// is a pass over every block).
    line_numbers: bool,
    done: bool,
    error: Option<anyhow::Error>,
}

/// What a deciding thread takes: events read, or a range of a file that it reads itself.
enum Taken {
    Items(Vec<Item>),
    Range(FileRange),
}

enum Now {
    Between,
    Lines {
        name: String,
        lines: LineBlocks<std::io::BufReader<std::fs::File>>,
    },
    /// A file whose lines are not numbered: each deciding thread reads the range it takes.
    Ranges(FileRanges),
    Thread {
        batches: std::sync::mpsc::Receiver<Vec<Item>>,
        reader: std::thread::JoinHandle<anyhow::Result<()>>,
    },
}

impl Feed {
    /// The next batch and its number, or `None` when every source is read (or reading failed,
    /// or the output did: `stopped`).
    fn take(&mut self, blocks: &Arc<Blocks>, stopped: &AtomicBool) -> Option<(u64, Taken)> {
        loop {
            if stopped.load(Ordering::Relaxed) {
                self.stop(None);
            }
            if self.done {
                return None;
            }
            if !self.queued.is_empty() {
                let batch = std::mem::take(&mut self.queued);
                return Some(self.numbered(Taken::Items(batch)));
            }
            match &mut self.now {
                Now::Lines { name, lines } => match lines.next_block(blocks) {
                    Ok(Some(block)) => return Some(self.numbered(Taken::Items(vec![block]))),
                    Ok(None) => self.now = Now::Between,
                    Err(e) => {
                        let error = anyhow::Error::new(e).context(format!("reading events from {name}"));
                        self.stop(Some(error));
                    }
                },
                Now::Ranges(ranges) => match ranges.next_range() {
                    Some(range) => return Some(self.numbered(Taken::Range(range))),
                    None => self.now = Now::Between,
                },
                // Waiting for input that may never come (a pipe left open), yet seeing in time
                // that everything stopped: the other threads wait for this one's lock.
                Now::Thread { batches, .. } => match batches.recv_timeout(STOP_CHECK) {
                    Ok(batch) => return Some(self.numbered(Taken::Items(batch))),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    // The reader is done: it said how it ended.
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        if let Now::Thread { reader, .. } = std::mem::replace(&mut self.now, Now::Between) {
                            match reader.join() {
                                Ok(Ok(())) => {}
                                Ok(Err(e)) => self.stop(Some(e)),
                                Err(_) => self.stop(Some(anyhow::anyhow!("the event reader panicked"))),
                            }
                        }
                    }
                },
                Now::Between => match self.sources.next() {
                    None => self.done = true,
                    Some(name) => {
                        if let Err(e) = self.open(name, blocks) {
                            self.stop(Some(e));
                        }
                    }
                },
            }
        }
    }

    fn numbered(&mut self, batch: Taken) -> (u64, Taken) {
        self.next += 1;
        (self.next - 1, batch)
    }

    /// Takes no more batches (a reader thread still running finds nobody receiving and stops).
    fn stop(&mut self, error: Option<anyhow::Error>) {
        self.done = true;
        self.now = Now::Between;
        self.queued.clear();
        if self.error.is_none() {
            self.error = error;
        }
    }

    /// Starts reading source `name`: a JSON Lines file is read here, block by block, as batches
    /// are taken; stdin and anything else by a reader thread.
    fn open(&mut self, name: String, blocks: &Arc<Blocks>) -> anyhow::Result<()> {
        if name == "-" {
            let stdin = || std::io::BufReader::with_capacity(READ_BUFFER, std::io::stdin().lock());
            self.read_on_a_thread(
                "<stdin>".into(),
                "reading events from stdin".into(),
                blocks,
                stdin,
            );
            return Ok(());
        }
        let reading_name = || format!("reading events from {name}");
        let file = std::fs::File::open(&name).with_context(reading_name)?;
        // Only a regular file is read where its blocks are decided: a named pipe or a device
        // may block, with the feed's lock held. So is an array (or an input that starts with
        // more blanks than the reader holds): read element by element.
        let regular = file.metadata().is_ok_and(|m| m.is_file());
        let mut input = std::io::BufReader::with_capacity(READ_BUFFER, file);
        let on_a_thread = !regular || {
            let buffered = input.fill_buf().with_context(reading_name)?;
            !buffered.is_empty()
                && matches!(
                    buffered.iter().find(|b| !b.is_ascii_whitespace()),
                    Some(b'[') | None
                )
        };
        if on_a_thread {
            self.read_on_a_thread(name.clone(), reading_name(), blocks, move || input);
            return Ok(());
        }
        let mut first = Vec::new();
        let started = start_events(&name, input, |item| {
            first.push(item);
            ControlFlow::<()>::Continue(())
        })
        .with_context(reading_name)?;
        self.queued = first;
        if let Started::Lines(lines) = started {
            let lines = lines.numbered(self.line_numbers);
            self.now = match lines.into_ranges().with_context(reading_name)? {
                Ok(ranges) => Now::Ranges(ranges),
                Err(lines) => Now::Lines { name, lines },
            };
        }
        Ok(())
    }

    /// Has a reader thread read the input `open` gives it (called `name` in origins), sending
    /// batches; a failure is said as `reading`.
    fn read_on_a_thread<R: std::io::BufRead>(
        &mut self,
        name: String,
        reading: String,
        blocks: &Arc<Blocks>,
        open: impl FnOnce() -> R + Send + 'static,
    ) {
        let (sender, batches) = std::sync::mpsc::sync_channel(self.bound);
        let blocks = blocks.clone();
        let numbered = self.line_numbers;
        let reader = std::thread::spawn(move || {
            send_batches(&name, open(), numbered, &blocks, &sender).context(reading)
        });
        self.now = Now::Thread { batches, reader };
    }
}

/// Reads one input on a reader thread, sending batches of events (their lines numbered if
/// `numbered`); stops early when nobody receives.
fn send_batches(
    name: &str,
    input: impl std::io::BufRead,
    numbered: bool,
    blocks: &Blocks,
    batches: &std::sync::mpsc::SyncSender<Vec<Item>>,
) -> std::io::Result<()> {
    let mut batch = Vec::with_capacity(BATCH);
    let flow = read_events(name, input, numbered, blocks, |item| {
        // A block of lines is a batch's worth on its own.
        let whole = matches!(item, Item::Lines { .. });
        batch.push(item);
        if batch.len() < BATCH && !whole {
            return ControlFlow::Continue(());
        }
        let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
        match batches.send(full) {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        }
    })?;
    if flow.is_continue() && !batch.is_empty() {
        let _ = batches.send(batch);
    }
    Ok(())
}

/// A count of batches that may be taken before their reports are written: bounds what the
/// deciding threads hold when one of them is slow (its report holds up the later ones).
#[derive(Debug)]
struct Window {
    free: Mutex<usize>,
    freed: Condvar,
}

impl Window {
    fn acquire(&self) {
        let Ok(mut free) = self.free.lock() else { return };
        while *free == 0 {
            free = match self.freed.wait(free) {
                Ok(free) => free,
                Err(_) => return,
            };
        }
        *free -= 1;
    }

    fn release(&self, n: usize) {
        if let Ok(mut free) = self.free.lock() {
            *free = free.saturating_add(n);
            self.freed.notify_all();
        }
    }
}

/// The reports, written in input order as batches are decided.
struct Out {
    /// The number of the next batch to write.
    next: u64,
    /// Batches decided (or failed) before one ahead of them.
    waiting: BTreeMap<u64, anyhow::Result<Decided>>,
    summary: Summary,
    writer: std::io::BufWriter<std::io::Stdout>,
    /// Why reports stopped: the output failed, or a batch could not be decided (the batches
    /// before it were written).
    error: Option<anyhow::Error>,
}

/// What the deciding threads share.
struct Deciding {
    feed: Mutex<Feed>,
    out: Mutex<Out>,
    window: Window,
    /// Set when the output failed (or a batch could not be decided): nothing more is taken.
    stopped: AtomicBool,
    blocks: Arc<Blocks>,
    pipeline: Pipeline,
    report: Report,
}

impl Deciding {
    /// Takes batches and decides them until the feed is done: run by each deciding thread.
    fn run(&self, runtime: &tokio::runtime::Handle) {
        loop {
            self.window.acquire();
            let taken = match self.feed.lock() {
                Ok(mut feed) => feed.take(&self.blocks, &self.stopped),
                Err(_) => None,
            };
            let Some((number, batch)) = taken else {
                self.window.release(1);
                return;
            };
            let batch = match batch {
                Taken::Items(items) => items,
                Taken::Range(range) => match range.read(&self.blocks) {
                    Ok(lines) => vec![lines],
                    // Nothing after this range is taken; the batches before it are written.
                    Err(e) => {
                        let reading = format!("reading events from {}", range.name());
                        self.stopped.store(true, Ordering::Relaxed);
                        self.write(number, Err(anyhow::Error::new(e).context(reading)));
                        continue;
                    }
                },
            };
            let deciding = decide(&self.pipeline, batch, self.report, &self.blocks);
            let decided =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runtime.block_on(deciding)))
                    .map_err(|panic| {
                        // Nothing after this batch is taken; the batches before it are still written.
                        self.stopped.store(true, Ordering::Relaxed);
                        let what = panic
                            .downcast_ref::<&str>()
                            .map(|s| (*s).to_owned())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        anyhow::anyhow!("deciding a batch of events: a stage panicked: {what}")
                    });
            self.write(number, decided);
        }
    }

    /// Writes `decided` (batch `number`) and every batch waiting for it, in order; a batch
    /// that failed ends the reports there.
    fn write(&self, number: u64, decided: anyhow::Result<Decided>) {
        let mut written = 0;
        if let Ok(mut out) = self.out.lock() {
            let out = &mut *out;
            out.waiting.insert(number, decided);
            while let Some(decided) = out.waiting.remove(&out.next) {
                out.next += 1;
                written += 1;
                if out.error.is_some() {
                    continue;
                }
                let lines = match decided {
                    Ok(decided) => {
                        out.summary.merge(decided.summary);
                        decided.lines
                    }
                    Err(e) => {
                        out.error = Some(e);
                        continue;
                    }
                };
                if let Err(e) = out.writer.write_all(&lines) {
                    out.error = Some(e.into());
                }
            }
            // Reports go out as their batch is done (one write per batch): a user watching
            // `tail -f … | cutover replay p.toml -` sees each event's outcome while input
            // still comes, not when a buffer fills.
            if written > 0
                && out.error.is_none()
                && let Err(e) = out.writer.flush()
            {
                out.error = Some(e.into());
            }
            if out.error.is_some() {
                self.stopped.store(true, Ordering::Relaxed);
            }
        } else {
            // A thread panicked while writing: stop, and leave no one waiting for room.
            self.stopped.store(true, Ordering::Relaxed);
            written = 1;
        }
        self.window.release(written);
    }
}

/// Decides a batch in order: checks each event's syntax, runs it, counts and reports it; hands
/// its blocks back when it is done.
async fn decide(pipeline: &Pipeline, batch: Vec<Item>, report: Report, blocks: &Blocks) -> Decided {
    let mut decided = Decided::default();
    let mut read = Vec::new();
    // Counted into the pipeline's metrics once, when the batch is done.
    let mut run = pipeline.batch();
    for mut item in batch {
        if let (Report::Summary, Item::Lines { text, .. }) = (report, &mut item) {
            // A summary needs no origin: a block's lines become events and nothing more.
            let block = Arc::new(std::mem::take(text));
            let mut start = 0;
            while let Some(line) = next_line(&block, &mut start) {
                if !line.is_empty() {
                    let event = Event::from_shared(block.clone(), line);
                    summarize(event, &mut run, &mut decided.summary).await;
                }
            }
            read.push(block);
            continue;
        }
        let mut events = item.events();
        for item in &mut events {
            decide_one(item, &mut run, report, &mut decided).await;
        }
        read.extend(events.into_block());
    }
    drop(run);
    for block in read {
        blocks.give(block);
    }
    decided
}

/// Decides one event of a batch, and counts (and reports) its outcome.
async fn decide_one(item: Item, batch: &mut Batch<'_>, report: Report, decided: &mut Decided) {
    let (origin, id, outcome) = match item {
        Item::Event { event, .. } if matches!(report, Report::Summary) => {
            return summarize(event, batch, &mut decided.summary).await;
        }
        Item::Event { origin, event } => match syntax_error(&origin, &event) {
            None => {
                let id = event.id().map(str::to_owned);
                let outcome = batch.run(event.with_origin(origin.to_string())).await;
                (origin, id, outcome)
            }
            Some(message) => (origin, None, malformed(message)),
        },
        Item::Malformed { origin, message } => (origin, None, malformed(message)),
        // Blocks are cut into events before they get here.
        Item::Lines { .. } => return,
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

/// Counts one event for a summary, which counts drops per stage: a line that is not JSON
/// counts as failed before any stage sees it, and nearly every other event is done by its
/// bytes alone, without an outcome.
async fn summarize(event: Event, batch: &mut Batch<'_>, summary: &mut Summary) {
    if cutover_pattern::check_json(event.raw()).is_err() {
        return summary.count_failed();
    }
    match batch.rules_out(&event) {
        Some(stage) => summary.dropped(stage),
        None => summary.record(&batch.run(event).await),
    }
}

/// The outcome of input that is not an event.
fn malformed(message: String) -> Outcome {
    Outcome::Failed {
        stage: "input".into(),
        error: cutover_core::StageError::permanent(message),
    }
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
        match outcome {
            Outcome::Passed { .. } => self.passed += 1,
            Outcome::Dropped { stage, .. } => return self.dropped(stage),
            Outcome::Failed { .. } => return self.count_failed(),
        }
        self.events += 1;
    }

    /// Counts an event that failed.
    fn count_failed(&mut self) {
        self.events += 1;
        self.failed += 1;
    }

    /// Counts an event `stage` dropped.
    fn dropped(&mut self, stage: &str) {
        self.events += 1;
        // Counted for nearly every event: the stage's name is copied only the first time.
        match self.dropped.get_mut(stage) {
            Some(n) => *n += 1,
            None => {
                self.dropped.insert(stage.to_owned(), 1);
            }
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
    // Up to `jobs` threads take batches of consecutive events in turn and decide them; their
    // reports are written in input order. Memory holds a few batches, whatever the size of the
    // input.
    let deciding = Deciding {
        feed: Mutex::new(Feed {
            sources: args.events.clone().into_iter(),
            now: Now::Between,
            queued: Vec::new(),
            next: 0,
            bound: 2 * jobs,
            line_numbers: !matches!(report, Report::Summary),
            done: false,
            error: None,
        }),
        out: Mutex::new(Out {
            next: 0,
            waiting: BTreeMap::new(),
            summary: Summary::default(),
            writer: std::io::BufWriter::new(std::io::stdout()),
            error: None,
        }),
        window: Window {
            free: Mutex::new(2 * jobs),
            freed: Condvar::new(),
        },
        stopped: AtomicBool::new(false),
        blocks: Arc::new(Blocks::default()),
        pipeline,
        report,
    };
    let runtime = tokio::runtime::Handle::current();
    // This thread is one of them (it would only wait otherwise): it leaves the runtime's
    // context, so that it may block on each batch's futures (tasks they spawn, such as
    // rollouts, run on the runtime's workers).
    let finished = tokio::task::block_in_place(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            std::thread::scope(|scope| {
                for _ in 1..jobs {
                    // A thread the system will not give is one job fewer, not a failed replay.
                    let _ = std::thread::Builder::new().spawn_scoped(scope, || deciding.run(&runtime));
                }
                deciding.run(&runtime);
            });
        }))
    });
    if finished.is_err() {
        anyhow::bail!("deciding events: a deciding thread panicked");
    }
    let Deciding {
        out,
        feed,
        // Kept until the rollouts the trace started have finished (the pipeline's stages
        // own what they use, such as an embedded DNS server).
        pipeline: _pipeline,
        ..
    } = deciding;
    let failed = || anyhow::anyhow!("a deciding thread failed");
    let (mut out, read) = (
        out.into_inner().map_err(|_| failed())?,
        feed.into_inner().map_err(|_| failed())?,
    );
    if let Some(e) = out.error.take() {
        return Err(e);
    }
    if let Some(e) = read.error {
        return Err(e);
    }
    let summary = std::mem::take(&mut out.summary);
    let mut out = out.writer;
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
