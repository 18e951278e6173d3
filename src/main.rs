//! The `cutover` command: validate and replay pipelines, list stages, and (as the hosts land)
//! run them in AWS Lambda or as a daemon.

/// `println!` that ends the process quietly when stdout is closed (`cutover … | head`), instead
/// of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        if let Err(e) = writeln!(out, $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                $crate::quit::exit(0);
            }
            eprintln!("error: cannot write to stdout: {e}");
            $crate::quit::exit(2);
        }
    }};
}

mod dedup_cmd;
mod demo;
mod dlq_cmd;
mod input;
mod package;
mod pattern_cmd;
mod quit;
mod replay;
mod rollouts_cmd;
mod rule;
mod serve;
mod states_cmd;
mod strategy_cmd;
mod template;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cutover_core::{Loader, registered_stages};

/// Safe canary deployments for containers on AWS.
#[derive(Debug, Parser)]
#[command(name = "cutover", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Watch the whole canary on this machine: blue and green web services, the weighted DNS
    /// zone, a recorded green deployment, one rollout 10% → 50% → 100% (or a rollback).
    #[command(
        after_help = "Examples:\n  cutover demo\n  cutover demo --fail-green    # green fails at 50%: rollback, exit status 1\n  \
        cutover demo --json --speed 60\n  \
        cutover demo --services 5    # five services at once; one rolls back\n  \
        cutover demo --speed 1       # slow enough to watch on the dashboard it prints"
    )]
    Demo(demo::DemoArgs),
    /// Check pipeline files; print every problem, exit non-zero if any.
    #[command(after_help = "Examples:\n  cutover validate pipelines/*.toml\n  \
        CUTOVER_PIPELINES__ECS_EVENTS__STAGES__1__CLUSTER=prod \\\n      \
        cutover validate pipelines/catsndogs.toml")]
    Validate {
        /// Pipeline files (TOML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// List the stage types this binary knows, with their one-line docs.
    #[command(after_help = "Example:\n  cutover stages")]
    Stages,
    /// Run events through a pipeline on embedded backends and report each outcome.
    #[command(
        after_help = "Examples:\n  cutover replay pipelines/catsndogs.toml tests/fixtures/deployment-trace.jsonl\n  \
        cutover replay pipelines/catsndogs.toml --json tests/fixtures/*.json\n  \
        cat trace.jsonl | cutover replay pipelines/catsndogs.toml --summary -"
    )]
    Replay(replay::ReplayArgs),
    /// Print the EventBridge rule pattern compiled from a pipeline's filter stages; measure it
    /// on a trace; or create/update the rule.
    #[command(after_help = "Examples:\n  cutover rule pipelines/catsndogs.toml\n  \
        cutover rule pipelines/catsndogs.toml \\\n      \
        --trace tests/fixtures/deployment-trace.jsonl\n  \
        arn=arn:aws:lambda:us-west-2:111122223333:function:cutover-ecs-events\n  \
        cutover rule pipelines/catsndogs.toml --apply --name cutover-ecs-events \\\n      \
        --target-arn \"$arn\"")]
    Rule(rule::RuleArgs),
    /// Run, check, draw and conformance-test Amazon States Language definitions on the embedded
    /// engine.
    #[command(subcommand)]
    States(states_cmd::StatesCommand),
    /// Serve Lambda invocations (the `provided.al2023` runtime; also what a binary named
    /// `bootstrap` does). Reads CUTOVER_CONFIG and CUTOVER_PIPELINE.
    #[command(
        after_help = "Environment:\n  CUTOVER_CONFIG    pipeline file (default: cutover.toml next to the binary)\n  \
        CUTOVER_PIPELINE  pipeline to run (default: the file's)\n  \
        CUTOVER_PIPELINES__<P>__STAGES__<N>__<FIELD>  value overrides"
    )]
    Lambda,
    /// Manage the dedup stage's DynamoDB table; measure the embedded store.
    #[command(subcommand)]
    Dedup(dedup_cmd::DedupCommand),
    /// Match EventBridge patterns against events; run conformance cases.
    #[command(subcommand)]
    Pattern(pattern_cmd::PatternCommand),
    /// Redrive dead-lettered events (the stack's dead-letter queue, the daemon's file or
    /// queue) through their pipeline.
    #[command(subcommand)]
    Dlq(dlq_cmd::DlqCommand),
    /// Run a pipeline as a daemon: events from HTTP (an EventBridge API destination), an SQS
    /// queue or stdin; permanent failures to a dead-letter file or queue.
    #[command(after_help = "Examples:\n  \
        CUTOVER_API_KEY=s3cret cutover serve pipelines/catsndogs.toml \\\n      \
        --api-key-env CUTOVER_API_KEY --listen 0.0.0.0:8080\n  \
        cutover serve pipelines/catsndogs.toml --source sqs \\\n      \
        --queue-url https://sqs.us-west-2.amazonaws.com/111122223333/ecs-events\n  \
        tail -f events.jsonl | cutover serve pipelines/catsndogs.toml --source stdin\n\n\
        HTTP: POST /events (one event or a JSON array), GET /healthz,\n\
        GET /metrics (Prometheus), /rollouts (the rollout operations API);\n\
        with --ui, the dashboard at /ui/ (it asks for the API key).\n\
        SIGTERM/SIGINT: stop taking events, finish those in flight, exit 0.")]
    Serve(serve::ServeArgs),
    /// Print a least-privilege CloudFormation template deploying a pipeline file to AWS Lambda.
    #[command(
        after_help = "Example:\n  cutover template pipelines/catsndogs-aws.toml --arch arm64 \\\n      \
        --output cutover.yaml"
    )]
    Template(template::TemplateArgs),
    /// See and steer running rollouts: list, status, watch, history; abort, promote, pause,
    /// resume, retry (the same on the embedded engine and on Step Functions).
    #[command(
        subcommand,
        after_help = "Examples:\n  cutover rollouts list pipelines/catsndogs.toml\n  \
        cutover rollouts watch pipelines/catsndogs.toml\n  \
        cutover rollouts pause pipelines/catsndogs.toml cats --reason \"checking logs\""
    )]
    Rollouts(rollouts_cmd::RolloutsCommand),
    /// Compile a canary strategy (steps in TOML) to the States Language definition.
    #[command(subcommand)]
    Strategy(strategy_cmd::StrategyCommand),
    /// Make the Lambda zip: the binary as `bootstrap` and the pipeline file as `cutover.toml`.
    #[command(
        after_help = "Example:\n  cutover package pipelines/catsndogs-aws.toml \\\n      \
        --binary target/lambda/cutover/bootstrap --output cutover.zip"
    )]
    Package(package::PackageArgs),
}

fn init_json_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CUTOVER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .json()
        .with_writer(std::io::stderr)
        .init();
}

fn init_logs() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("CUTOVER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        builder.json().init();
    }
}

/// The cores this process may use, asked once (the answer reads the cgroup's files): as many
/// runtime workers, and `replay`'s default `--jobs`.
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
}

fn main() -> ExitCode {
    cutover::link_builtin_stages();
    let invoked_as_bootstrap = std::env::args_os()
        .next()
        .and_then(|a| std::path::Path::new(&a).file_name().map(|n| n == "bootstrap"))
        .unwrap_or(false);
    let cli = if invoked_as_bootstrap {
        Cli {
            command: Command::Lambda,
        }
    } else {
        Cli::parse()
    };
    if matches!(cli.command, Command::Lambda) {
        init_json_logs();
    } else {
        init_logs();
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        runtime.worker_threads(cores());
    }
    let runtime = match runtime.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Validate { files } => Ok(validate(&files)),
            Command::Demo(args) => demo::run(args).await,
            Command::Stages => {
                stages();
                Ok(ExitCode::SUCCESS)
            }
            Command::Replay(args) => replay::run(args).await,
            Command::Rule(args) => rule::run(args).await,
            Command::Pattern(cmd) => pattern_cmd::run(cmd),
            Command::Dedup(cmd) => dedup_cmd::run(cmd).await,
            Command::Dlq(cmd) => dlq_cmd::run(cmd).await,
            Command::States(cmd) => states_cmd::run(cmd).await,
            Command::Serve(args) => serve::run(args).await,
            Command::Template(args) => template::run(args),
            Command::Package(args) => package::run(args),
            Command::Rollouts(cmd) => rollouts_cmd::run(cmd).await,
            Command::Strategy(cmd) => strategy_cmd::run(cmd),
            Command::Lambda => {
                let handler = match cutover::lambda::LambdaHandler::from_env().await {
                    Ok(handler) => handler,
                    Err(e) => {
                        cutover::lambda::report_init_error(&e.to_string());
                        return Err(e.into());
                    }
                };
                cutover::lambda::run(handler)
                    .await
                    .map_err(|e| anyhow::anyhow!("lambda runtime: {e}"))?;
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// What a host command starts from: the loaded file (environment overrides applied), the
/// pipeline it names (or the file's default), and a build context whose data directory is
/// `state` when given.
fn load_for_host(
    file: &std::path::Path,
    pipeline: Option<&str>,
    state: Option<&std::path::Path>,
) -> anyhow::Result<(cutover_core::PipelineFile, String, cutover_core::BuildContext)> {
    let file = Loader::from_env().load_file(file)?;
    let name = file.pick(pipeline)?.name.clone();
    let mut cx = file.build_context();
    if let Some(dir) = state {
        cx = cx.with_data_dir(dir);
    }
    Ok((file, name, cx))
}

fn validate(files: &[PathBuf]) -> ExitCode {
    let loader = Loader::from_env();
    let mut failed = false;
    for file in files {
        // A strategy file (a `[strategy]` table and no pipelines) is checked by compiling it.
        if let Some(result) = strategy_cmd::check_file(file) {
            match result {
                Ok(states) => outln!("{}: ok — strategy ({states} states)", file.display()),
                Err(e) => {
                    failed = true;
                    eprintln!("{e:#}");
                }
            }
            continue;
        }
        match loader.load_file(file) {
            Ok(f) => {
                let list: Vec<String> = f
                    .pipelines
                    .iter()
                    .map(|p| {
                        let stages = match p.stages.len() {
                            1 => "1 stage".to_owned(),
                            n => format!("{n} stages"),
                        };
                        match &p.ecs_hook {
                            Some(hook) => {
                                format!("{} ({stages}; ECS hook at {})", p.name, hook.stages.join(", "))
                            }
                            None => format!("{} ({stages})", p.name),
                        }
                    })
                    .collect();
                outln!("{}: ok — {}", file.display(), list.join(", "));
            }
            Err(errors) => {
                failed = true;
                eprintln!("{errors}");
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn stages() {
    let all = registered_stages();
    let width = all.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for s in all {
        outln!("{:width$}  {}  [{}]", s.name, s.summary, s.provider);
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// clap wraps help text to the terminal's width, and an example wrapped in the middle of a
    /// command no longer copy-pastes: every line after the options fits an 80-column terminal.
    #[test]
    fn help_examples_fit_80_columns() {
        fn collect(cmd: &clap::Command, path: &str, wide: &mut Vec<String>) {
            if let Some(help) = cmd.get_after_help() {
                for line in help.to_string().lines() {
                    if line.chars().count() > 80 {
                        wide.push(format!("{path}: {line}"));
                    }
                }
            }
            for sub in cmd.get_subcommands() {
                collect(sub, &format!("{path} {}", sub.get_name()), wide);
            }
        }
        let mut wide = Vec::new();
        collect(&Cli::command(), "cutover", &mut wide);
        assert!(
            wide.is_empty(),
            "help lines wider than 80 columns:\n{}",
            wide.join("\n")
        );
    }
}
