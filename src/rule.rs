//! `cutover rule`: the EventBridge rule that triggers a pipeline, compiled from its filter
//! stages — printed, measured against a trace, or applied with PutRule/PutTargets.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Args;
use cutover_core::{BuildContext, Event, Loader};
use cutover_pattern::Pattern;
use serde_json::{Value, json};

use crate::input::{Item, read_events};

/// The rule the seed's lab asks for: every ECS task state change (of every service).
pub(crate) const SEED_RULE: &str = r#"{"source":["aws.ecs"],"detail-type":["ECS Task State Change"]}"#;

/// Arguments of `cutover rule`.
#[derive(Debug, Args)]
pub(crate) struct RuleArgs {
    /// The pipeline file.
    file: PathBuf,
    /// Which pipeline (needed when the file has several).
    #[arg(long)]
    pipeline: Option<String>,
    /// Count, over these recorded events, how many would invoke the pipeline under the seed's
    /// broad rule and under the compiled one, and how many then pass the whole pipeline.
    #[arg(long, num_args = 1.., value_name = "EVENTS")]
    trace: Vec<String>,
    /// Create or update the rule in EventBridge (PutRule, and PutTargets with --target-arn).
    #[arg(long, requires = "name")]
    apply: bool,
    /// The rule's name.
    #[arg(long)]
    name: Option<String>,
    /// The event bus.
    #[arg(long, default_value = "default")]
    bus: String,
    /// The target to invoke (the Lambda function running the pipeline).
    #[arg(long, requires = "apply")]
    target_arn: Option<String>,
}

pub(crate) async fn run(args: RuleArgs) -> anyhow::Result<ExitCode> {
    let file = Loader::from_env().load_file(&args.file)?;
    let spec = file.pick(args.pipeline.as_deref())?;
    let Some(pattern) = spec.event_pattern()? else {
        bail!(
            "pipeline \"{}\" has no filtering stage, so its rule would match every event; add a `filter` stage",
            spec.name
        );
    };
    let compiled =
        Pattern::from_value(&pattern).map_err(|e| anyhow::anyhow!("the compiled pattern is invalid: {e}"))?;
    for stage in &spec.stages {
        for note in stage.config.checks_beyond_pattern() {
            eprintln!("note: stage \"{}\": {note}", stage.name);
        }
    }
    outln!("{}", serde_json::to_string_pretty(&pattern)?);

    if !args.trace.is_empty() {
        let seed = Pattern::parse(SEED_RULE)?;
        let dir = tempfile::Builder::new().prefix("cutover-rule-").tempdir()?;
        let cx = file.build_context().with_data_dir(dir.path());
        let pipeline = file.build(&spec.name, &cx).await?;
        let (mut events, mut seed_hits, mut compiled_hits, mut passed) = (0u64, 0u64, 0u64, 0u64);
        for name in &args.trace {
            let file = std::fs::File::open(name).with_context(|| format!("reading {name}"))?;
            let mut items = Vec::new();
            let blocks = crate::input::Blocks::default();
            let _ = read_events(name, std::io::BufReader::new(file), true, &blocks, |item| {
                // Every event is kept: each its own bytes, not a share of a read's block.
                item.into_events(|event| {
                    items.push(match event.checked() {
                        Item::Event { origin, event } => Item::Event {
                            origin,
                            event: Event::from_bytes(event.raw()),
                        },
                        other => other,
                    })
                });
                std::ops::ControlFlow::<()>::Continue(())
            })
            .with_context(|| format!("reading {name}"))?;
            for item in items {
                let Item::Event { event, .. } = item else { continue };
                events += 1;
                seed_hits += u64::from(seed.matches_json(event.raw()).unwrap_or(false));
                if compiled.matches_json(event.raw()).unwrap_or(false) {
                    compiled_hits += 1;
                    passed += u64::from(pipeline.run(event).await.is_passed());
                }
            }
        }
        let report = json!({
            "events": events,
            "seed_rule_invocations": seed_hits,
            "compiled_rule_invocations": compiled_hits,
            "passed_pipeline": passed,
        });
        eprintln!(
            "trace: {events} events; seed rule (source + detail-type) invokes {seed_hits} times, \
             compiled rule {compiled_hits} times; {passed} pass the whole pipeline"
        );
        outln!("{report}");
    }

    if args.apply {
        let name = args.name.as_deref().context("--apply needs --name")?;
        apply(name, &args.bus, args.target_arn.as_deref(), &pattern, &spec.name).await?;
        eprintln!("rule {name} on bus {} is up to date", args.bus);
    }
    Ok(ExitCode::SUCCESS)
}

async fn apply(
    name: &str,
    bus: &str,
    target: Option<&str>,
    pattern: &Value,
    pipeline: &str,
) -> anyhow::Result<()> {
    let cx = BuildContext::default();
    let client = aws_sdk_eventbridge::Client::new(cx.aws_config().await);
    client
        .put_rule()
        .name(name)
        .event_bus_name(bus)
        .event_pattern(serde_json::to_string(pattern)?)
        .state(aws_sdk_eventbridge::types::RuleState::Enabled)
        .description(format!(
            "cutover pipeline {pipeline}: compiled from its filter stages"
        ))
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "PutRule {name}: {}",
                aws_sdk_eventbridge::error::DisplayErrorContext(e)
            )
        })?;
    if let Some(arn) = target {
        let target = aws_sdk_eventbridge::types::Target::builder()
            .id("cutover")
            .arn(arn)
            .build()
            .context("building the rule target")?;
        let out = client
            .put_targets()
            .rule(name)
            .event_bus_name(bus)
            .targets(target)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "PutTargets {name}: {}",
                    aws_sdk_eventbridge::error::DisplayErrorContext(e)
                )
            })?;
        if out.failed_entry_count() > 0 {
            bail!("PutTargets {name}: {:?}", out.failed_entries());
        }
    }
    Ok(())
}
