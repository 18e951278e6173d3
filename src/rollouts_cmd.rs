//! `cutover rollouts`: see and steer the rollouts a pipeline file's `start-state-machine` stage
//! starts, the same on the embedded engine and on AWS Step Functions.

mod render;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use cutover_core::{BuildContext, PipelineFile};
use cutover_stages::rollouts::Action;
use cutover_stages::rollouts::ops::{OpsError, Rollouts};
use cutover_stages::rollouts::view::Rollout;
use cutover_stages::state_machine::StartStateMachineConfig;

/// The file, pipeline and data directory a rollouts command works on.
#[derive(Debug, Args)]
pub(crate) struct Target {
    /// The pipeline file whose `start-state-machine` stage starts the rollouts.
    file: PathBuf,
    /// The pipeline holding that stage (default: the file's default pipeline).
    #[arg(long)]
    pipeline: Option<String>,
    /// The data directory of the embedded engine (default: the file's `settings.data_dir`).
    #[arg(long)]
    state: Option<PathBuf>,
}

/// A control action's arguments.
#[derive(Debug, Args)]
pub(crate) struct ActArgs {
    #[command(flatten)]
    target: Target,
    /// The rollout: its execution name, ARN or a unique prefix of the name.
    rollout: String,
    /// Why (required): recorded in the rollout's history and the audit log.
    #[arg(long)]
    reason: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum RolloutsCommand {
    /// Running rollouts (with --all, recent ones too): deployment, phase, step, weights, age.
    #[command(after_help = "Example:\n  cutover rollouts list pipelines/catsndogs.toml --all")]
    List {
        #[command(flatten)]
        target: Target,
        /// Also the rollouts that have ended.
        #[arg(long)]
        all: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// One rollout: steps, weights now, last health result, time left in the wait, last action.
    Status {
        #[command(flatten)]
        target: Target,
        /// Execution name, ARN or unique prefix.
        rollout: String,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Follow a rollout until it ends (redrawn in place on a terminal, a line per change
    /// otherwise); the exit status says how it ended (0: succeeded).
    Watch {
        #[command(flatten)]
        target: Target,
        /// Execution name, ARN or unique prefix (default: the newest rollout).
        rollout: Option<String>,
    },
    /// Every transition with its time and duration, weight change, health result and operator
    /// action.
    History {
        #[command(flatten)]
        target: Target,
        /// Execution name, ARN or unique prefix.
        rollout: String,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Send all traffic back to blue (verified); the rollout ends as aborted with the reason.
    #[command(
        after_help = "Example:\n  cutover rollouts abort pipelines/catsndogs.toml cats-v3 \\\n      \
        --reason \"5xx on checkout\""
    )]
    Abort(ActArgs),
    /// End the current wait now and go on; --full: straight to 100% green (verified).
    Promote {
        #[command(flatten)]
        args: ActArgs,
        /// Straight to 100% green.
        #[arg(long)]
        full: bool,
    },
    /// Hold at the current weight. Health checks go on while paused (every
    /// `control.health_every`), so a sick green still rolls back.
    Pause(ActArgs),
    /// Go on after a pause.
    Resume(ActArgs),
    /// Start a new rollout for the deployment of a rolled-back, aborted or failed one (named
    /// `<rollout>-retry-N`, linked to it).
    Retry(ActArgs),
}

/// The `start-state-machine` stage of the chosen pipeline, and the operations on its rollouts.
pub(crate) async fn rollouts_of(
    file: &PipelineFile,
    pipeline: &str,
    cx: &BuildContext,
    run_tasks: bool,
) -> anyhow::Result<Rollouts> {
    let spec = file.pick(Some(pipeline))?;
    let stage = spec
        .stages
        .iter()
        .find_map(|s| s.config.as_any().downcast_ref::<StartStateMachineConfig>())
        .with_context(|| {
            format!(
                "{}: pipeline \"{pipeline}\" has no start-state-machine stage, so it starts no rollouts; \
                 name the pipeline that has one with --pipeline",
                file.display
            )
        })?;
    // The Task resources name sibling pipelines of the file.
    let cx = cx.clone().with_siblings(file.siblings());
    Ok(stage.rollouts(&cx, run_tasks).await?)
}

async fn open(target: &Target, run_tasks: bool) -> anyhow::Result<Rollouts> {
    let file = cutover_core::Loader::from_env().load_file(&target.file)?;
    let name = match target.pipeline.as_deref() {
        Some(name) => name.to_owned(),
        None => starting_pipeline(&file)?,
    };
    let mut cx = file.build_context();
    if let Some(dir) = &target.state {
        cx = cx.with_data_dir(dir);
    }
    rollouts_of(&file, &name, &cx, run_tasks).await
}

/// The pipeline whose rollouts are meant when none is named: the file's only or default
/// pipeline, else the one pipeline with a `start-state-machine` stage.
pub(crate) fn starting_pipeline(file: &PipelineFile) -> anyhow::Result<String> {
    if let Ok(spec) = file.pick(None) {
        return Ok(spec.name.clone());
    }
    let starting: Vec<&str> = file
        .pipelines
        .iter()
        .filter(|p| {
            p.stages
                .iter()
                .any(|s| s.config.as_any().is::<StartStateMachineConfig>())
        })
        .map(|p| p.name.as_str())
        .collect();
    match starting.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] => bail!(
            "{}: no pipeline has a start-state-machine stage, so none starts rollouts",
            file.display
        ),
        several => bail!(
            "{}: several pipelines start rollouts ({}); choose one with --pipeline",
            file.display,
            several.join(", ")
        ),
    }
}

/// Who acts: the OS user.
fn actor() -> String {
    ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

pub(crate) async fn run(cmd: RolloutsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RolloutsCommand::List { target, all, json } => {
            let rollouts = open(&target, false).await?.list(all).await?;
            if json {
                for r in &rollouts {
                    outln!("{}", r.to_json());
                }
            } else if rollouts.is_empty() {
                outln!(
                    "no {}rollouts{}",
                    if all { "" } else { "running " },
                    if all { "" } else { " (--all shows the ended ones)" }
                );
            } else {
                outln!("{}", render::table(&rollouts));
            }
            Ok(ExitCode::SUCCESS)
        }
        RolloutsCommand::Status {
            target,
            rollout,
            json,
        } => {
            let r = open(&target, false).await?.status(&rollout).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&r.to_json())?);
            } else {
                outln!("{}", render::status(&r));
            }
            Ok(ExitCode::SUCCESS)
        }
        RolloutsCommand::History {
            target,
            rollout,
            json,
        } => {
            let (r, lines) = open(&target, false).await?.history(&rollout).await?;
            if json {
                for line in &lines {
                    outln!("{}", serde_json::to_string(line)?);
                }
            } else {
                outln!("{}", render::history(&r, &lines));
            }
            Ok(ExitCode::SUCCESS)
        }
        RolloutsCommand::Watch { target, rollout } => watch(&target, rollout.as_deref()).await,
        RolloutsCommand::Abort(args) => act(args, Action::Abort).await,
        RolloutsCommand::Pause(args) => act(args, Action::Pause).await,
        RolloutsCommand::Resume(args) => act(args, Action::Resume).await,
        RolloutsCommand::Retry(args) => act(args, Action::Retry).await,
        RolloutsCommand::Promote { args, full } => {
            act(
                args,
                if full {
                    Action::PromoteFull
                } else {
                    Action::Promote
                },
            )
            .await
        }
    }
}

async fn act(args: ActArgs, action: Action) -> anyhow::Result<ExitCode> {
    // Embedded rollouts nobody runs are driven here (and retries run here): build the Tasks.
    let rollouts = open(&args.target, true).await?;
    let before = rollouts.status(&args.rollout).await?;
    let acted = rollouts
        .act(&args.rollout, action, &args.reason, &actor(), true)
        .await?;
    match action {
        Action::Retry => {
            outln!(
                "retry: started rollout {} for the deployment of {} ({})",
                acted.rollout,
                before.id,
                before.deployment
            );
            // On the embedded engine the new rollout runs in this process until it ends (the
            // daemon's POST /rollouts/{id}/retry runs it in the daemon instead).
            return follow(&rollouts, &acted.rollout).await;
        }
        _ => outln!(
            "{action}: rollout {} ({} at {}) — {}",
            acted.rollout,
            before.phase.as_str(),
            before.step.as_deref().unwrap_or("start"),
            render::effect(action)
        ),
    }
    let after = rollouts.status(&acted.rollout).await?;
    if acted.drove {
        outln!(
            "no process was running it: ran it here to its end: {}",
            render::one_line(&after, false)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// How often `watch` reads the rollout.
const WATCH_EVERY: Duration = Duration::from_secs(1);

async fn watch(target: &Target, rollout: Option<&str>) -> anyhow::Result<ExitCode> {
    let rollouts = open(target, false).await?;
    let id = match rollout {
        Some(id) => rollouts.resolve(id).await?,
        None => match rollouts.list(true).await?.into_iter().next() {
            Some(r) => r.id,
            None => bail!("no rollouts yet in {}", target.file.display()),
        },
    };
    follow(&rollouts, &id).await
}

/// Shows the rollout `id` until it ends; the exit status is 0 when it succeeded.
async fn follow(rollouts: &Rollouts, id: &str) -> anyhow::Result<ExitCode> {
    let tty = std::io::stdout().is_terminal();
    if !tty {
        outln!("watching rollout {id}");
    }
    let mut last_line = String::new();
    // A rollout just started (a retry) has no record until its first state is saved.
    let appear_by = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = match rollouts.status(id).await {
            Ok(r) => r,
            Err(OpsError::Unknown(_)) if std::time::Instant::now() < appear_by => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if tty {
            // Home, clear, draw: the status block in place.
            outln!("\x1b[H\x1b[2J{}", render::live(&r));
        } else {
            let key = render::one_line(&r, false);
            if key != last_line {
                outln!(
                    "{} {}",
                    cutover_asl::timestamp::format_system(std::time::SystemTime::now()),
                    render::one_line(&r, true)
                );
                last_line = key;
            }
        }
        if r.phase.ended() {
            return Ok(exit_for(&r));
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
}

fn exit_for(r: &Rollout) -> ExitCode {
    if r.phase == cutover_stages::rollouts::view::Phase::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
