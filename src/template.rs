//! `cutover template`: a deployable, least-privilege CloudFormation template from a pipeline
//! file.
//!
//! Every pipeline of the file becomes one Lambda function running the cutover binary
//! (`provided.al2023`, handler `bootstrap`) with `CUTOVER_PIPELINE` naming the pipeline, its
//! own role and log group. A pipeline whose stages compile to an event pattern also gets the
//! EventBridge rule with that pattern, targeting its function, and the permission for
//! EventBridge to invoke it. Everything else — tables, state machines, parameters, outputs, the
//! IAM statements of each function's role, environment overrides — comes from the stages
//! themselves ([`StageConfig::deployment`](cutover_core::StageConfig::deployment)): this module
//! knows no stage by name.

mod yaml;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use cutover_core::{DeployContext, LoadError, LoadErrors, Loader, PipelineFile, Statement, deploy};
use serde_json::{Map, Value, json};

use self::yaml::{COMMENT, to_yaml};

/// Where the function writes embedded state (Lambda's only writable directory).
const DATA_DIR: &str = "/tmp/cutover";
/// The least function timeout, in seconds.
const MIN_TIMEOUT: u32 = 30;

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

pub(crate) fn run(args: TemplateArgs) -> anyhow::Result<ExitCode> {
    let file = Loader::new()
        .load_file(&args.file)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let template = match generate(&file, args.arch, args.memory) {
        Ok(t) if args.format == Format::Sam => to_sam(t, &file),
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
pub(crate) fn generate(file: &PipelineFile, arch: Arch, memory: u32) -> Result<Value, LoadErrors> {
    let names: Vec<String> = file.pipelines.iter().map(|p| p.name.clone()).collect();
    let file_name = Path::new(&file.display)
        .file_name()
        .map_or_else(|| file.display.clone(), |n| n.to_string_lossy().into_owned());
    let mut errors = Vec::new();
    let mut parameters = json!({
        "CodeS3Bucket": {
            "Type": "String",
            "Description": "The S3 bucket holding the package zip (`cutover package`: bootstrap + cutover.toml)",
        },
        "CodeS3Key": {
            "Type": "String",
            "Default": "cutover.zip",
            "Description": "The package zip's key in CodeS3Bucket",
        },
    });
    let mut resources = Map::new();
    let mut outputs = Map::new();
    let add = |kind: &str, into: &mut Map<String, Value>, id: String, value: Value, owner: &str| {
        if into.contains_key(&id) {
            Err(format!(
                "{owner} adds the {kind} {id}, which another stage already added; give the stages distinct `name`s"
            ))
        } else {
            into.insert(id, value);
            Ok(())
        }
    };

    for pipeline in &file.pipelines {
        let err = |stage: Option<(usize, String)>, field: Option<String>, message: String| LoadError {
            file: file.display.clone(),
            pipeline: Some(pipeline.name.clone()),
            stage,
            field,
            message,
        };
        let function = deploy::function_id(&pipeline.name);
        let base = deploy::pascal(&pipeline.name);
        let (role, logs) = (format!("{base}Role"), format!("{base}LogGroup"));
        let mut environment = Map::new();
        environment.insert("CUTOVER_PIPELINE".into(), json!(pipeline.name));
        environment.insert("CUTOVER_SETTINGS__DATA_DIR".into(), json!(DATA_DIR));
        let mut statements = vec![statement(&Statement::new(
            ["logs:CreateLogStream", "logs:PutLogEvents"],
            [json!({"Fn::GetAtt": [logs, "Arn"]})],
            "write the function's logs to its own log group",
        ))];
        let mut timeout = MIN_TIMEOUT;

        for (i, stage) in pipeline.stages.iter().enumerate() {
            let cx = DeployContext {
                file: &file.display,
                base_dir: &file.base_dir,
                pipeline: &pipeline.name,
                stage_index: i + 1,
                stage_name: &stage.name,
                pipelines: &names,
            };
            let at = Some((i + 1, stage.type_name.clone()));
            let d = match stage.config.deployment(&cx) {
                Ok(d) => d,
                Err(e) => {
                    errors.push(err(at, Some(e.field).filter(|f| !f.is_empty()), e.message));
                    continue;
                }
            };
            let owner = format!("stage \"{}\"", stage.name);
            let mut clash = |r: Result<(), String>| {
                if let Err(m) = r {
                    errors.push(err(at.clone(), None, m));
                }
            };
            for (id, v) in d.resources {
                clash(add("resource", &mut resources, id, v, &owner));
            }
            for (id, v) in d.parameters {
                clash(match &mut parameters {
                    Value::Object(p) => add("parameter", p, id, v, &owner),
                    _ => Ok(()),
                });
            }
            for (id, v) in d.outputs {
                clash(add("output", &mut outputs, id, v, &owner));
            }
            statements.extend(d.statements.iter().map(statement));
            environment.extend(d.environment);
            timeout = timeout.max(d.timeout_secs);
        }

        let description = pipeline
            .description
            .clone()
            .unwrap_or_else(|| format!("cutover pipeline {}", pipeline.name));
        resources.insert(
            logs.clone(),
            json!({
                "Type": "AWS::Logs::LogGroup",
                "Properties": {"RetentionInDays": 30},
            }),
        );
        resources.insert(
            role.clone(),
            deploy::service_role(
                "lambda.amazonaws.com",
                json!([{
                    "PolicyName": format!("cutover-{}", pipeline.name),
                    "PolicyDocument": {"Version": "2012-10-17", "Statement": statements},
                }]),
            ),
        );
        resources.insert(
            function.clone(),
            json!({
                "Type": "AWS::Lambda::Function",
                "Properties": {
                    "Description": truncate(&description, 256),
                    "Runtime": "provided.al2023",
                    "Handler": "bootstrap",
                    "Architectures": [arch.name()],
                    "Code": {"S3Bucket": {"Ref": "CodeS3Bucket"}, "S3Key": {"Ref": "CodeS3Key"}},
                    "Role": {"Fn::GetAtt": [role, "Arn"]},
                    "MemorySize": memory,
                    "Timeout": timeout.min(900),
                    "LoggingConfig": {"LogGroup": {"Ref": logs}},
                    "Environment": {"Variables": environment},
                },
            }),
        );
        outputs.insert(
            format!("{function}Arn"),
            json!({
                "Description": format!("The function running pipeline \"{}\"", pipeline.name),
                "Value": {"Fn::GetAtt": [function, "Arn"]},
            }),
        );

        match pipeline.event_pattern() {
            Err(message) => errors.push(err(None, None, message)),
            Ok(None) => {}
            Ok(Some(pattern)) => {
                let rule = format!("{base}Rule");
                resources.insert(
                    rule.clone(),
                    json!({
                        "Type": "AWS::Events::Rule",
                        "Properties": {
                            "Description": format!("cutover pipeline {}: compiled from its filter stages", pipeline.name),
                            "State": "ENABLED",
                            "EventPattern": pattern,
                            "Targets": [{"Id": "cutover", "Arn": {"Fn::GetAtt": [function, "Arn"]}}],
                        },
                    }),
                );
                resources.insert(
                    format!("{base}RulePermission"),
                    json!({
                        "Type": "AWS::Lambda::Permission",
                        "Properties": {
                            "Action": "lambda:InvokeFunction",
                            "FunctionName": {"Ref": function},
                            "Principal": "events.amazonaws.com",
                            "SourceArn": {"Fn::GetAtt": [rule, "Arn"]},
                        },
                    }),
                );
                outputs.insert(
                    format!("{rule}Name"),
                    json!({
                        "Description": format!("The EventBridge rule that triggers pipeline \"{}\"", pipeline.name),
                        "Value": {"Ref": rule},
                    }),
                );
            }
        }
    }

    if !errors.is_empty() {
        return Err(LoadErrors(errors));
    }
    Ok(json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": format!(
            "cutover pipelines of {file_name} ({}), generated by `cutover template`; regenerate rather than edit",
            names.join(", ")
        ),
        "Parameters": parameters,
        "Resources": resources,
        "Outputs": outputs,
    }))
}

/// The same stack with the SAM transform: each function an `AWS::Serverless::Function` (still
/// with its own least-privilege role, so SAM adds no managed policy) whose EventBridge rule and
/// invoke permission SAM derives from an `EventBridgeRule` event.
fn to_sam(mut template: Value, file: &PipelineFile) -> Value {
    let Some(resources) = template["Resources"].as_object_mut() else {
        return template;
    };
    let mut dropped_outputs = Vec::new();
    for pipeline in &file.pipelines {
        let base = deploy::pascal(&pipeline.name);
        let rule = resources.shift_remove(&format!("{base}Rule"));
        resources.shift_remove(&format!("{base}RulePermission"));
        let Some(function) = resources.get_mut(&deploy::function_id(&pipeline.name)) else {
            continue;
        };
        function["Type"] = json!("AWS::Serverless::Function");
        let props = &mut function["Properties"];
        if let Some(code) = props.as_object_mut().and_then(|p| p.shift_remove("Code")) {
            props["CodeUri"] = json!({"Bucket": code["S3Bucket"], "Key": code["S3Key"]});
        }
        if let Some(rule) = rule {
            props["Events"] = json!({
                base.clone(): {
                    "Type": "EventBridgeRule",
                    "Properties": {"Pattern": rule["Properties"]["EventPattern"]},
                },
            });
            dropped_outputs.push(format!("{base}RuleName"));
        }
    }
    if let Some(outputs) = template["Outputs"].as_object_mut() {
        for name in dropped_outputs {
            outputs.shift_remove(&name);
        }
    }
    let mut sam = Map::new();
    for (k, v) in template.as_object().into_iter().flatten() {
        sam.insert(k.clone(), v.clone());
        if k == "AWSTemplateFormatVersion" {
            sam.insert("Transform".into(), json!("AWS::Serverless-2016-10-31"));
        }
    }
    Value::Object(sam)
}

/// An IAM statement with its reason as a comment above it.
fn statement(s: &Statement) -> Value {
    json!({
        COMMENT: s.why,
        "Effect": "Allow",
        "Action": s.actions,
        "Resource": s.resources,
    })
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> PipelineFile {
        cutover_stages::link();
        Loader::new()
            .load_str("x.toml", text, Path::new("pipelines"))
            .unwrap()
    }

    #[test]
    fn embedded_backends_are_refused_naming_stage_and_change() {
        let file = load(
            "[pipelines.e]\n[[pipelines.e.stages]]\ntype = \"filter\"\ncluster = \"c\"\n\
             [[pipelines.e.stages]]\ntype = \"dedup\"\nstore = { type = \"local\" }\n",
        );
        let err = generate(&file, Arch::Arm64, 256).unwrap_err().to_string();
        assert!(
            err.starts_with("x.toml: pipeline \"e\", stage 2 (dedup): field \"store\": the embedded stores"),
            "{err}"
        );
        assert!(err.contains("type = \"dynamodb\""), "{err}");
    }

    #[test]
    fn a_filtered_pipeline_gets_its_rule_and_the_table_its_permissions() {
        let file = load(
            "[pipelines.e]\n[[pipelines.e.stages]]\ntype = \"filter\"\ncluster = \"c\"\n\
             [[pipelines.e.stages]]\ntype = \"dedup\"\nstore = { type = \"dynamodb\", table = \"t\" }\n",
        );
        let t = generate(&file, Arch::X86_64, 128).unwrap();
        let r = &t["Resources"];
        assert_eq!(
            r["ERule"]["Properties"]["EventPattern"],
            file.pipelines[0].event_pattern().unwrap().unwrap()
        );
        assert_eq!(r["EFunction"]["Properties"]["Architectures"], json!(["x86_64"]));
        let env = &r["EFunction"]["Properties"]["Environment"]["Variables"];
        assert_eq!(env["CUTOVER_PIPELINE"], "e");
        assert_eq!(
            env["CUTOVER_PIPELINES__E__STAGES__2__STORE__TABLE"],
            json!({"Ref": "EDedupTable"})
        );
        let statements = &r["ERole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"];
        assert_eq!(
            statements[1]["Resource"],
            json!([{"Fn::GetAtt": ["EDedupTable", "Arn"]}])
        );
        assert_eq!(
            r["EDedupTable"]["Properties"]["TimeToLiveSpecification"]["AttributeName"],
            "expires"
        );

        let sam = to_sam(t.clone(), &file);
        assert_eq!(sam["Transform"], "AWS::Serverless-2016-10-31");
        let f = &sam["Resources"]["EFunction"];
        assert_eq!(f["Type"], "AWS::Serverless::Function");
        assert_eq!(
            f["Properties"]["Events"]["E"]["Properties"]["Pattern"],
            r["ERule"]["Properties"]["EventPattern"]
        );
        assert_eq!(
            f["Properties"]["Role"],
            json!({"Fn::GetAtt": ["ERole", "Arn"]}),
            "our role, not SAM's"
        );
        assert!(sam["Resources"].get("ERule").is_none());
    }
}
