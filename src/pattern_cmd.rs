//! `cutover pattern`: the EventBridge pattern engine from the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use cutover_pattern::Pattern;

/// `cutover pattern …`.
#[derive(Debug, Subcommand)]
pub(crate) enum PatternCommand {
    /// Print `match` or `no match` (exit 0), or the pattern's validation error (exit 2).
    #[command(
        after_help = "Example:\n  cutover pattern match rule.json tests/fixtures/task-fargate-running.json"
    )]
    Match {
        /// The pattern (JSON file).
        pattern: PathBuf,
        /// The event (JSON file).
        event: PathBuf,
    },
    /// Run EventBridge conformance cases (JSON Lines: name, event, pattern, expect); print each
    /// failure and end with `N passed, M failed` (exit 1 if any failed).
    #[command(after_help = "Example:\n  cutover pattern test conformance/eventbridge-patterns.jsonl")]
    Test {
        /// The cases file.
        cases: PathBuf,
    },
}

pub(crate) fn run(cmd: PatternCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PatternCommand::Match { pattern, event } => {
            let text = std::fs::read_to_string(&pattern)
                .with_context(|| format!("reading {}", pattern.display()))?;
            let compiled = match Pattern::parse(&text) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("{}: {e}", pattern.display());
                    return Ok(ExitCode::from(2));
                }
            };
            let bytes = std::fs::read(&event).with_context(|| format!("reading {}", event.display()))?;
            match compiled.matches_json(&bytes) {
                Ok(true) => outln!("match"),
                Ok(false) => outln!("no match"),
                Err(e) => {
                    eprintln!("{}: not valid JSON: {e}", event.display());
                    return Ok(ExitCode::from(2));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        PatternCommand::Test { cases } => {
            let text =
                std::fs::read_to_string(&cases).with_context(|| format!("reading {}", cases.display()))?;
            let summary = cutover_pattern::conformance::check_all(&text);
            outln!("{summary}");
            Ok(if summary.failed() == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
