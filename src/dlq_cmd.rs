//! `cutover dlq redrive`: sends dead-lettered events back through their pipeline, here, built
//! from the pipeline file as `cutover serve` and `cutover replay` build it.
//!
//! Dead letters come from an SQS queue (the stack's dead-letter queue, or the daemon's
//! `--dead-letter-queue`: [`queue`]) or from the daemon's dead-letter file ([`file`]); each
//! holds an event in one of the shapes [`letter`] reads. A letter is removed — its message
//! deleted, its line dropped from the file — only once its event *settled*: it passed or was
//! dropped (a duplicate of a rollout that already started is dropped by `dedup`, so redriving
//! twice, or redriving what was also delivered again, starts nothing twice). A letter whose
//! event fails again stays, with the new error reported; so does one of another pipeline, or
//! one that holds no event. `--dry-run` lists the letters and changes nothing.
//!
//! Events run one at a time, in the order of the letters.

mod file;
mod letter;
mod queue;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use cutover_core::{Event, Outcome, Pipeline, StageError};
use serde_json::json;

use self::letter::Letter;

/// `cutover dlq …`.
#[derive(Debug, Subcommand)]
pub(crate) enum DlqCommand {
    /// Run dead-lettered events through the pipeline again; remove each letter once its event
    /// passed or was dropped, keep those that fail again.
    #[command(after_help = "Examples:\n  \
        queue=https://sqs.us-west-2.amazonaws.com/111122223333/cutover-dlq\n  \
        cutover dlq redrive pipelines/catsndogs-aws.toml --pipeline ecs-events \\\n      \
        --queue \"$queue\" --dry-run\n  \
        cutover dlq redrive pipelines/catsndogs.toml \\\n      \
        --file .cutover/dead-letter.jsonl\n\n\
        Exit status: 0 when every letter was redriven, 1 when some stay.")]
    Redrive(RedriveArgs),
}

/// Arguments of `cutover dlq redrive`.
#[derive(Debug, Args)]
pub(crate) struct RedriveArgs {
    /// The pipeline file.
    file: PathBuf,
    /// Which pipeline of the file (needed when it has several and no default). Read from
    /// CUTOVER_PIPELINE too, so the environment of a deployed function selects its pipeline.
    #[arg(long, env = "CUTOVER_PIPELINE")]
    pipeline: Option<String>,
    /// The SQS dead-letter queue (the stack's `…DeadLetterQueueUrl` output, or the daemon's
    /// `--dead-letter-queue`).
    #[arg(long, value_name = "URL", required_unless_present = "dead_letter_file")]
    queue: Option<String>,
    /// The daemon's dead-letter file (JSON Lines); rewritten in place, atomically, without the
    /// letters that were redriven. Safe while the daemon runs.
    #[arg(long = "file", value_name = "PATH", conflicts_with = "queue")]
    dead_letter_file: Option<PathBuf>,
    /// List what would be redriven; run nothing, remove nothing.
    #[arg(long)]
    dry_run: bool,
    /// Embedded state (dedup records, executions) in this directory instead of the file's
    /// `settings.data_dir`: the daemon's `--state`, so dedup sees what the daemon did.
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// One JSON object per letter, then a summary line.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(cmd: DlqCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DlqCommand::Redrive(args) => redrive(args).await,
    }
}

async fn redrive(args: RedriveArgs) -> anyhow::Result<ExitCode> {
    let (file, name, cx) = crate::load_for_host(&args.file, args.pipeline.as_deref(), args.state.as_deref())?;
    // A dry run builds nothing: building may connect to AWS or resume embedded executions.
    let pipeline = if args.dry_run {
        None
    } else {
        Some(file.build(&name, &cx).await?)
    };
    let mut redrive = Redrive {
        pipeline,
        name: name.clone(),
        json: args.json,
        summary: Summary::default(),
    };
    match (&args.queue, &args.dead_letter_file) {
        (Some(url), _) => {
            let client = aws_sdk_sqs::Client::new(cx.aws_config().await);
            queue::redrive(&client, url, &mut redrive).await?;
        }
        (None, Some(path)) => file::redrive(path, &mut redrive).await?,
        (None, None) => anyhow::bail!("name the dead letters: --queue URL or --file PATH"),
    }
    // Embedded executions the events started stop at their checkpoint; the daemon sharing the
    // data directory (or the next one started on it) resumes them within a second.
    let background = cx.background();
    if background.pending() > 0 {
        let stopped = background.abort().await;
        eprintln!(
            "cutover dlq redrive: {stopped} execution(s) started on the embedded engine are resumed by the daemon \
             using {} (or the next one started there)",
            cx.data_dir().display()
        );
    }
    redrive.summary.print(args.json, args.dry_run);
    Ok(if redrive.summary.kept > 0 && !args.dry_run {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The pipeline the letters run through, and what became of them.
#[derive(Debug)]
pub(crate) struct Redrive {
    /// `None` on a dry run.
    pipeline: Option<Pipeline>,
    name: String,
    json: bool,
    summary: Summary,
}

impl Redrive {
    /// Runs (or, on a dry run, lists) one letter found at `origin`; whether it may be removed.
    /// `cause` adds what the letter's container says about why it failed (SQS attributes).
    pub(crate) async fn letter(&mut self, origin: &str, letter: &Letter, cause: Option<&str>) -> bool {
        let read = crate::serve::read_event(&letter.event);
        let id = read.as_ref().ok().cloned().flatten();
        let cause = letter.cause.as_deref().or(cause);
        self.summary.letters += 1;
        // Letters no run can settle: another pipeline's, or one that holds no event.
        let refused = match (&letter.pipeline, read) {
            (Some(other), _) if *other != self.name => Some(Outcome::Failed {
                stage: "redrive".into(),
                error: StageError::permanent(format!(
                    "a dead letter of pipeline \"{other}\": redrive it with --pipeline {other}"
                )),
            }),
            (_, Err(problem)) => Some(Outcome::Failed {
                stage: "input".into(),
                error: StageError::permanent(format!("holds no event to redrive: {problem}")),
            }),
            (_, Ok(_)) => None,
        };
        let outcome = match (&self.pipeline, refused) {
            (_, Some(refused)) => refused,
            (None, None) => {
                self.report(origin, letter, id.as_deref(), cause, None);
                return false;
            }
            (Some(pipeline), None) => {
                let event = Event::from_bytes(letter.event.clone()).with_origin(origin);
                pipeline.run(event).await
            }
        };
        let settled = !matches!(outcome, Outcome::Failed { .. });
        match &outcome {
            Outcome::Passed { .. } => self.summary.passed += 1,
            Outcome::Dropped { .. } => self.summary.dropped += 1,
            Outcome::Failed { .. } => self.summary.kept += 1,
        }
        self.report(origin, letter, id.as_deref(), cause, Some(&outcome));
        settled
    }

    fn report(
        &self,
        origin: &str,
        letter: &Letter,
        id: Option<&str>,
        cause: Option<&str>,
        outcome: Option<&Outcome>,
    ) {
        if self.json {
            let mut v = match outcome {
                Some(outcome) => {
                    let mut v = crate::replay::outcome_json(origin, id, outcome);
                    v["kept"] = json!(matches!(outcome, Outcome::Failed { .. }));
                    v
                }
                None => json!({"source": origin, "id": id}),
            };
            v["letter"] = json!(letter.shape.name());
            v["cause"] = json!(cause);
            outln!("{v}");
            return;
        }
        let head = format!("{origin} {} {}", letter.shape.name(), id.unwrap_or("-"));
        match outcome {
            None => outln!(
                "{head}: would be redriven (dead-lettered: {})",
                cause.unwrap_or("-")
            ),
            Some(outcome @ Outcome::Failed { .. }) if self.pipeline.is_none() => {
                outln!("{head}: would stay: {outcome}")
            }
            Some(outcome @ Outcome::Failed { .. }) => outln!("{head}: kept: {outcome}"),
            Some(outcome) => outln!("{head}: {outcome}"),
        }
    }
}

/// Counts for the closing line.
#[derive(Debug, Default)]
struct Summary {
    letters: u64,
    passed: u64,
    dropped: u64,
    kept: u64,
}

impl Summary {
    fn print(&self, json: bool, dry_run: bool) {
        if json {
            outln!(
                "{}",
                json!({"summary": {
                    "letters": self.letters,
                    "redriven": if dry_run { 0 } else { self.passed + self.dropped },
                    "passed": self.passed,
                    "dropped": self.dropped,
                    "kept": self.kept,
                    "dry_run": dry_run,
                }})
            );
        } else if dry_run {
            outln!(
                "{} dead letter(s): {} would be redriven, {} would stay (dry run)",
                self.letters,
                self.letters - self.kept,
                self.kept
            );
        } else {
            outln!(
                "{} dead letter(s): {} redriven ({} passed, {} dropped), {} kept",
                self.letters,
                self.passed + self.dropped,
                self.passed,
                self.dropped,
                self.kept
            );
        }
    }
}
