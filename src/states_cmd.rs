//! `cutover states`: the embedded Amazon States Language engine from the command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use cutover_asl::{Definition, Engine, ExecutionStatus, VirtualClock, WallClock};
use cutover_core::{BuildContext, Loader, Pipeline, StageConfig};
use cutover_stages::state_machine::PipelineTasks;
use serde_json::Value;

/// `cutover states …`.
#[derive(Debug, Subcommand)]
pub(crate) enum StatesCommand {
    /// Run a definition to its end; print the history and the output (exit 1 unless it
    /// succeeded).
    #[command(
        after_help = "Examples:\n  cutover states run pipelines/canary.asl.json --input '{}' \\\n      \
        --resources resources.toml --virtual-time\n\n\
        resources.toml (yours) maps Task resources to its own pipelines or to stages:\n  \
        [resources]\n  \
        \"arn:aws:lambda:…:function:cutover-traffic-shift\" = \"traffic-shift\"\n  \
        [resources.\"arn:aws:lambda:…:function:cutover-health-check\"]\n  \
        type = \"health-check\"\n  \
        probe = { … }"
    )]
    Run {
        /// The definition (JSON).
        definition: PathBuf,
        /// The execution input (JSON text).
        #[arg(long, default_value = "{}")]
        input: String,
        /// TOML with a `[resources]` table (and optionally `[pipelines]` it refers to).
        #[arg(long)]
        resources: Option<PathBuf>,
        /// Run waits on virtual time (instantly).
        #[arg(long)]
        virtual_time: bool,
        /// The execution name.
        #[arg(long, default_value = "cli-run")]
        name: String,
    },
    /// Check a definition: every problem, each naming the state and field.
    Validate {
        /// The definition (JSON).
        definition: PathBuf,
    },
    /// Print a Mermaid state diagram of a definition.
    Graph {
        /// The definition (JSON).
        definition: PathBuf,
    },
    /// Run States Language conformance cases (JSON Lines: name, definition, input, expect) on
    /// virtual time; print each failure; end with `N passed, M failed, K skipped`.
    #[command(after_help = "Example:\n  cutover states test conformance/asl-executions.jsonl")]
    Test {
        /// The cases file.
        cases: PathBuf,
    },
}

/// A definition file: States Language JSON, or a canary strategy (`.toml`), compiled.
fn load(path: &Path) -> anyhow::Result<Definition> {
    let text =
        cutover_stages::state_machine::strategy::definition_text(path).map_err(|e| anyhow::anyhow!(e))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("state-machine");
    let name = name
        .trim_end_matches(".json")
        .trim_end_matches(".toml")
        .trim_end_matches(".strategy")
        .trim_end_matches(".asl");
    Definition::parse(&text)
        .map(|d| d.with_name(name))
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

async fn handlers(file: &Path, cx: &BuildContext) -> anyhow::Result<PipelineTasks> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut doc: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not TOML", file.display()))?;
    let resources = doc
        .remove("resources")
        .context("the resources file has no [resources] table")?;
    let toml::Value::Table(resources) = resources else {
        bail!("[resources] must be a table")
    };
    let base = file.parent().unwrap_or(Path::new("."));
    let pipelines = if doc.contains_key("pipelines") {
        Some(Loader::from_env().load_str(&file.display().to_string(), &toml::to_string(&doc)?, base)?)
    } else {
        None
    };
    let cx = match &pipelines {
        Some(p) => cx.clone().with_siblings(p.siblings()).with_base_dir(base),
        None => cx.clone().with_base_dir(base),
    };
    let mut tasks = PipelineTasks::default();
    for (resource, target) in resources {
        let pipeline = match target {
            toml::Value::String(name) => cx
                .build_pipeline(&name)
                .await
                .map_err(|e| anyhow::anyhow!("resource {resource}: {e}"))?,
            other => {
                let json: Value = serde_json::to_value(other)?;
                let config: Box<dyn StageConfig> =
                    serde_json::from_value(json).map_err(|e| anyhow::anyhow!("resource {resource}: {e}"))?;
                let stage = config
                    .build(&cx)
                    .await
                    .map_err(|e| anyhow::anyhow!("resource {resource}: {e}"))?;
                Pipeline::from_stages(&resource, vec![(resource.clone(), stage)])
            }
        };
        tasks.insert(resource, pipeline);
    }
    Ok(tasks)
}

pub(crate) async fn run(cmd: StatesCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        StatesCommand::Validate { definition } => {
            let def = load(&definition)?;
            outln!(
                "{}: ok — {} Task resources: {}",
                definition.display(),
                def.task_resources().len(),
                def.task_resources().join(", ")
            );
            Ok(ExitCode::SUCCESS)
        }
        StatesCommand::Graph { definition } => {
            outln!("{}", load(&definition)?.to_mermaid());
            Ok(ExitCode::SUCCESS)
        }
        StatesCommand::Test { cases } => {
            let text =
                std::fs::read_to_string(&cases).with_context(|| format!("reading {}", cases.display()))?;
            let (mut passed, mut failed, mut skipped) = (0, 0, 0);
            for case in cutover_asl::conformance::parse_cases(&text) {
                let case = match case {
                    Ok(c) => c,
                    Err(e) => {
                        outln!("FAIL unparsable case: {e}");
                        failed += 1;
                        continue;
                    }
                };
                match cutover_asl::conformance::check(&case).await {
                    cutover_asl::conformance::CaseResult::Passed => passed += 1,
                    cutover_asl::conformance::CaseResult::Failed(why) => {
                        outln!("FAIL {}: {why}", case.name);
                        failed += 1;
                    }
                    cutover_asl::conformance::CaseResult::Skipped(_) => skipped += 1,
                }
            }
            outln!("{passed} passed, {failed} failed, {skipped} skipped");
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        StatesCommand::Run {
            definition,
            input,
            resources,
            virtual_time,
            name,
        } => {
            let def = Arc::new(load(&definition)?);
            let input: Value = serde_json::from_str(&input).context("--input is not JSON")?;
            let dir = tempfile::Builder::new().prefix("cutover-states-").tempdir()?;
            let cx = BuildContext::new(dir.path());
            let tasks = match &resources {
                Some(file) => handlers(file, &cx).await?,
                None => PipelineTasks::default(),
            };
            let clock: Arc<dyn cutover_asl::Clock> = if virtual_time {
                Arc::new(VirtualClock::new())
            } else {
                Arc::new(WallClock)
            };
            let engine = Engine::new(Arc::new(tasks), clock, None);
            let outcome = engine.start(def, &name, input).await?;
            for event in &outcome.history {
                outln!("{}", serde_json::to_string(event)?);
            }
            match outcome.status {
                ExecutionStatus::Succeeded => {
                    outln!(
                        "{}",
                        serde_json::to_string_pretty(&outcome.output.unwrap_or(Value::Null))?
                    );
                    Ok(ExitCode::SUCCESS)
                }
                other => {
                    eprintln!(
                        "execution {:?}: {} — {}",
                        other,
                        outcome.error.as_deref().unwrap_or("-"),
                        outcome.cause.as_deref().unwrap_or("-")
                    );
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}
