//! `cutover strategy render`: a canary strategy (steps in TOML) compiled to the States Language
//! definition both engines run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use cutover_stages::state_machine::strategy::Strategy;

#[derive(Debug, Subcommand)]
pub(crate) enum StrategyCommand {
    /// Print the States Language definition a strategy file compiles to.
    #[command(
        after_help = "Example:\n  cutover strategy render pipelines/canary.strategy.toml \\\n      \
        --output pipelines/canary.asl.json"
    )]
    Render {
        /// A TOML file with a `[strategy]` table.
        file: PathBuf,
        /// Write the definition here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

/// The definition a strategy file compiles to, or why it does not.
fn render(file: &Path) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut table: toml::Table =
        toml::from_str(&text).with_context(|| format!("{}: not valid TOML", file.display()))?;
    let strategy = table
        .remove("strategy")
        .with_context(|| format!("{}: no [strategy] table", file.display()))?;
    let strategy: Strategy = serde_path_to_error::deserialize(strategy).map_err(|e| {
        anyhow::anyhow!(
            "{}: field \"strategy.{}\": {}",
            file.display(),
            e.path(),
            e.inner()
        )
    })?;
    strategy
        .compile()
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

/// For `cutover validate`: `None` when `file` is not a strategy file (no `[strategy]` table,
/// or pipelines too), else how many states it compiles to, or why it does not.
pub(crate) fn check_file(file: &Path) -> Option<anyhow::Result<usize>> {
    let text = std::fs::read_to_string(file).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    if !table.contains_key("strategy") || table.contains_key("pipelines") {
        return None;
    }
    Some(render(file).map(|d| d["States"].as_object().map_or(0, serde_json::Map::len)))
}

pub(crate) fn run(cmd: StrategyCommand) -> anyhow::Result<ExitCode> {
    let StrategyCommand::Render { file, output } = cmd;
    let definition = render(&file)?;
    let mut json = serde_json::to_string_pretty(&definition)?;
    json.push('\n');
    match output {
        Some(path) => {
            std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => outln!("{}", json.trim_end()),
    }
    Ok(ExitCode::SUCCESS)
}
