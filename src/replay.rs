//! `cutover replay`: run recorded events through a pipeline and report each outcome.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use cutover_core::{Event, Loader, Outcome};
use serde_json::{Value, json};

use crate::input::{Item, read_events};

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
}

#[derive(Debug, Default)]
struct Summary {
    events: u64,
    passed: u64,
    dropped: BTreeMap<String, u64>,
    failed: u64,
}

impl Summary {
    fn record(&mut self, outcome: &Outcome) {
        self.events += 1;
        match outcome {
            Outcome::Passed { .. } => self.passed += 1,
            Outcome::Dropped { stage, .. } => *self.dropped.entry(stage.clone()).or_default() += 1,
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
    let mut cx = file.build_context().with_data_dir(data_dir);
    if !args.real_time {
        let virtual_time =
            cutover_stages::state_machine::VirtualTime::starting_at(std::time::SystemTime::now());
        cx = cx.with_clock(std::sync::Arc::new(virtual_time));
    }
    let pipeline = file.build(&spec.name, &cx).await?;

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut summary = Summary::default();
    for name in &args.events {
        let text = if name == "-" {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("reading events from stdin")?;
            buf
        } else {
            std::fs::read(name).with_context(|| format!("reading events from {name}"))?
        };
        let display = if name == "-" { "<stdin>" } else { name.as_str() };
        for item in read_events(display, &text) {
            let (origin, id, outcome) = match item {
                Item::Event { origin, bytes } => {
                    let event = Event::from_bytes(bytes).with_origin(origin.clone());
                    let id = if args.summary {
                        None
                    } else {
                        event.id().map(str::to_owned)
                    };
                    (origin, id, pipeline.run(event).await)
                }
                Item::Malformed { origin, message } => (
                    origin,
                    None,
                    Outcome::Failed {
                        stage: "input".into(),
                        error: cutover_core::StageError::permanent(message),
                    },
                ),
            };
            summary.record(&outcome);
            if args.summary {
                continue;
            }
            if args.json {
                writeln!(out, "{}", outcome_json(&origin, id.as_deref(), &outcome))?;
            } else {
                writeln!(out, "{origin} {}: {outcome}", id.as_deref().unwrap_or("-"))?;
            }
        }
    }
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
