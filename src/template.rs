//! `cutover template`: a deployable, least-privilege CloudFormation template from a pipeline
//! file.
//!
//! Every pipeline of the file becomes one Lambda function running the cutover binary
//! (`provided.al2023`, handler `bootstrap`) with `CUTOVER_PIPELINE` naming the pipeline, its
//! own role and log group. A pipeline whose stages compile to an event pattern also gets the
//! EventBridge rule with that pattern, targeting its function, and an encrypted dead-letter
//! queue that keeps every event the rule could not deliver or the function could not process
//! ([`dead_letter`]). Everything else — tables, state machines, parameters, outputs, the IAM
//! statements of each function's role, environment overrides — comes from the stages
//! themselves ([`StageConfig::deployment`](cutover_core::StageConfig::deployment)): this
//! module knows no stage by name. The stack's alarms ([`alarms`]) and hardening ([`hardening`],
//! [`state_machines`]) apply to what the stages add by CloudFormation type.
//!
//! A pipeline with `ecs_hook` (an ECS lifecycle hook) also gets the stack's hook table and the
//! role ECS assumes to invoke its function ([`ecs_hook`]).
//!
//! Two steps: [`plan`] asks every stage and builds a typed [`FunctionPlan`](function::FunctionPlan)
//! per pipeline (its [`role`], environment, timeout, memory, [`rule`]); [`stack`] then renders
//! that plan once, with the few parts where the formats differ written by [`cloudformation`] or
//! [`sam`] ([`Format`]).

mod alarms;
mod cloudformation;
mod dead_letter;
mod ecs_hook;
mod function;
mod hardening;
mod plan;
mod role;
mod rule;
mod sam;
mod stack;
mod state_machines;
mod yaml;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use cutover_core::{LoadErrors, Loader, PipelineFile, deploy};
use serde_json::{Value, json};

use self::plan::StackPlan;
use self::yaml::to_yaml;

/// Arguments of `cutover template`.
#[derive(Debug, Args)]
pub(crate) struct TemplateArgs {
    /// The pipeline file (the one `cutover package` puts into the zip). Environment overrides
    /// are not applied: the template describes the file as packaged.
    file: PathBuf,
    /// Write the template here instead of to stdout.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// The functions' CPU architecture (build the binary for the same one).
    #[arg(long, value_enum, default_value = "arm64")]
    arch: Arch,
    /// Memory of each function, in MB.
    #[arg(long, default_value_t = 256)]
    memory: u32,
    /// Plain CloudFormation, or an AWS SAM template (`AWS::Serverless::Function`s with their
    /// EventBridge rules as `Events`; deploy it with `sam deploy` or `aws cloudformation deploy
    /// --capabilities CAPABILITY_IAM CAPABILITY_AUTO_EXPAND`).
    #[arg(long, value_enum, default_value = "cloudformation")]
    format: Format,
}

/// A template format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// Plain CloudFormation resources.
    Cloudformation,
    /// The AWS Serverless Application Model transform.
    Sam,
}

/// A Lambda architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Arch {
    /// Graviton (`aarch64-unknown-linux-gnu`/`-musl`).
    Arm64,
    /// Intel/AMD (`x86_64-unknown-linux-gnu`/`-musl`).
    #[value(name = "x86_64")]
    X86_64,
}

impl Arch {
    fn name(self) -> &'static str {
        match self {
            Arch::Arm64 => "arm64",
            Arch::X86_64 => "x86_64",
        }
    }
}

/// How the functions are built and written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// The functions' architecture.
    pub(crate) arch: Arch,
    /// Memory of each function, in MB.
    pub(crate) memory: u32,
    /// CloudFormation or SAM.
    pub(crate) format: Format,
}

pub(crate) fn run(args: TemplateArgs) -> anyhow::Result<ExitCode> {
    let file = Loader::new().load_file(&args.file)?;
    let settings = Settings {
        arch: args.arch,
        memory: args.memory,
        format: args.format,
    };
    let template = match generate(&file, settings) {
        Ok(t) => t,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "{}: cannot be templated: {} problem(s) above",
                file.display,
                errors.0.len()
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    let text = to_yaml(&template);
    match &args.output {
        Some(path) => {
            std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => {
            use std::io::Write as _;
            std::io::stdout().write_all(text.as_bytes())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The template for every pipeline of `file`, or every problem that keeps it from deploying.
pub(crate) fn generate(file: &PipelineFile, settings: Settings) -> Result<Value, LoadErrors> {
    let plan = StackPlan::build(file, settings)?;
    Ok(match settings.format {
        Format::Cloudformation => stack::render(&plan, &cloudformation::CloudFormation),
        Format::Sam => stack::render(&plan, &sam::Sam),
    })
}

/// `{"Fn::GetAtt": [id, attribute]}`.
pub(crate) fn get_att(id: &str, attribute: &str) -> Value {
    json!({"Fn::GetAtt": [id, attribute]})
}

/// `{"Ref": id}`.
pub(crate) fn reference(id: &str) -> Value {
    json!({ "Ref": id })
}

/// The logical ID prefix of everything made for `pipeline` (`EcsEvents`).
pub(crate) fn base(pipeline: &str) -> String {
    deploy::pascal(pipeline)
}

/// What the unit tests of the submodules share: a pipeline file from text, templated.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::Path;

    use cutover_core::{Loader, PipelineFile};
    use serde_json::Value;

    use super::{Arch, Format, Settings};

    /// One pipeline `e`: a filter stage and a DynamoDB dedup stage.
    pub(crate) const FILTERED: &str = "[pipelines.e]\n[[pipelines.e.stages]]\ntype = \"filter\"\ncluster = \"c\"\n\
         [[pipelines.e.stages]]\ntype = \"dedup\"\nstore = { type = \"dynamodb\", table = \"t\" }\n";

    /// `text` loaded as `x.toml` from `pipelines/`.
    pub(crate) fn load(text: &str) -> PipelineFile {
        cutover_stages::link();
        Loader::new()
            .load_str("x.toml", text, Path::new("pipelines"))
            .unwrap()
    }

    /// x86_64 functions of 128 MB, in `format`.
    pub(crate) fn settings(format: Format) -> Settings {
        Settings {
            arch: Arch::X86_64,
            memory: 128,
            format,
        }
    }

    /// The template of `text` in `format`, which must succeed.
    pub(crate) fn template(text: &str, format: Format) -> Value {
        super::generate(&load(text), settings(format)).unwrap()
    }
}
