//! `cutover template`: a deployable, least-privilege CloudFormation template from a pipeline
//! file.
//!
//! Every pipeline of the file becomes one Lambda function running the cutover binary
//! (`provided.al2023`, handler `bootstrap`) with `CUTOVER_PIPELINE` naming the pipeline, its
//! own role and log group ([`function`]). A pipeline whose stages compile to an event pattern
//! also gets the EventBridge rule with that pattern, targeting its function, and an encrypted
//! dead-letter queue that keeps every event the rule could not deliver or the function could
//! not process ([`dead_letter`]). Everything else — tables, state machines, parameters,
//! outputs, the IAM statements of each function's role, environment overrides — comes from the
//! stages themselves ([`StageConfig::deployment`](cutover_core::StageConfig::deployment)):
//! this module knows no stage by name. The stack's alarms ([`alarms`]) and hardening
//! parameters ([`hardening`]) apply to what the stages add by CloudFormation type.
//!
//! The template is assembled as a [`Stack`] and a [`function::Function`] plan per pipeline,
//! rendered as plain CloudFormation or as AWS SAM ([`Format`]).

mod alarms;
mod dead_letter;
mod function;
mod hardening;
mod yaml;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use cutover_core::{LoadErrors, Loader, PipelineFile, deploy};
use serde_json::{Map, Value, json};

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
    let file = Loader::new()
        .load_file(&args.file)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
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

/// What the template holds, gathered from every pipeline and stage.
#[derive(Debug, Default)]
pub(crate) struct Stack {
    /// Template parameters by name.
    pub(crate) parameters: Map<String, Value>,
    /// Resources by logical ID.
    pub(crate) resources: Map<String, Value>,
    /// Outputs by name.
    pub(crate) outputs: Map<String, Value>,
    /// The logical IDs of the alarms, for the output that names them.
    pub(crate) alarms: Vec<String>,
}

impl Stack {
    /// Adds what a stage contributes; a logical ID another stage already used is a clash.
    pub(crate) fn add(
        kind: &str,
        into: &mut Map<String, Value>,
        id: String,
        value: Value,
        owner: &str,
    ) -> Result<(), String> {
        if into.contains_key(&id) {
            Err(format!(
                "{owner} adds the {kind} {id}, which another stage already added; give the stages distinct `name`s"
            ))
        } else {
            into.insert(id, value);
            Ok(())
        }
    }
}

/// The template for every pipeline of `file`, or every problem that keeps it from deploying.
pub(crate) fn generate(file: &PipelineFile, settings: Settings) -> Result<Value, LoadErrors> {
    let names: Vec<String> = file.pipelines.iter().map(|p| p.name.clone()).collect();
    let file_name = Path::new(&file.display)
        .file_name()
        .map_or_else(|| file.display.clone(), |n| n.to_string_lossy().into_owned());
    let mut stack = Stack::default();
    stack.parameters.insert(
        "CodeS3Bucket".into(),
        json!({
            "Type": "String",
            "Description": "The S3 bucket holding the package zip (`cutover package`: bootstrap + cutover.toml)",
        }),
    );
    stack.parameters.insert(
        "CodeS3Key".into(),
        json!({
            "Type": "String",
            "Default": "cutover.zip",
            "Description": "The package zip's key in CodeS3Bucket",
        }),
    );
    let mut errors = Vec::new();
    let mut functions = Vec::new();
    for pipeline in &file.pipelines {
        if let Some(function) = function::plan(file, pipeline, &names, &mut stack, &mut errors) {
            functions.push(function);
        }
    }
    if !errors.is_empty() {
        return Err(LoadErrors(errors));
    }

    // State machines are hardened before the functions are rendered, so that pass sees only
    // the stages' machines; encryption then covers every table, queue and log group.
    let machines = hardening::harden_state_machines(&mut stack);
    for function in &functions {
        function.render(&mut stack, settings);
    }
    hardening::encrypt_at_rest(&mut stack.resources);
    for machine in &machines {
        alarms::state_machine(&mut stack, machine);
    }
    if !functions.is_empty() {
        alarms::rollbacks(&mut stack, &functions);
    }
    let used = hardening::Used {
        state_machines: !machines.is_empty(),
    };
    alarms::name_them(&mut stack);

    let mut template = Map::new();
    template.insert("AWSTemplateFormatVersion".into(), json!("2010-09-09"));
    if settings.format == Format::Sam {
        template.insert("Transform".into(), json!("AWS::Serverless-2016-10-31"));
    }
    template.insert(
        "Description".into(),
        json!(format!(
            "cutover pipelines of {file_name} ({}), generated by `cutover template`; regenerate rather than edit",
            names.join(", ")
        )),
    );
    stack.parameters.extend(alarms::parameters());
    stack.parameters.extend(hardening::parameters(used));
    let mut conditions = alarms::conditions();
    conditions.extend(hardening::conditions());
    template.insert("Parameters".into(), Value::Object(stack.parameters));
    template.insert("Conditions".into(), Value::Object(conditions));
    template.insert("Resources".into(), Value::Object(stack.resources));
    template.insert("Outputs".into(), Value::Object(stack.outputs));
    Ok(Value::Object(template))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> PipelineFile {
        cutover_stages::link();
        Loader::new()
            .load_str("x.toml", text, Path::new("pipelines"))
            .unwrap()
    }

    fn settings(format: Format) -> Settings {
        Settings {
            arch: Arch::X86_64,
            memory: 128,
            format,
        }
    }

    const FILTERED: &str = "[pipelines.e]\n[[pipelines.e.stages]]\ntype = \"filter\"\ncluster = \"c\"\n\
         [[pipelines.e.stages]]\ntype = \"dedup\"\nstore = { type = \"dynamodb\", table = \"t\" }\n";

    #[test]
    fn embedded_backends_are_refused_naming_stage_and_change() {
        let file = load(
            "[pipelines.e]\n[[pipelines.e.stages]]\ntype = \"filter\"\ncluster = \"c\"\n\
             [[pipelines.e.stages]]\ntype = \"dedup\"\nstore = { type = \"local\" }\n",
        );
        let err = generate(&file, settings(Format::Cloudformation))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("x.toml: pipeline \"e\", stage 2 (dedup): field \"store\": the embedded stores"),
            "{err}"
        );
        assert!(err.contains("type = \"dynamodb\""), "{err}");
    }

    #[test]
    fn a_filtered_pipeline_gets_its_rule_and_the_table_its_permissions() {
        let file = load(FILTERED);
        let t = generate(&file, settings(Format::Cloudformation)).unwrap();
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
        assert_eq!(
            r["EDedupTable"]["Properties"]["SSESpecification"]["KMSMasterKeyId"],
            json!({"Fn::If": ["HasKmsKey", {"Ref": "KmsKeyArn"}, {"Ref": "AWS::NoValue"}]}),
            "a stage's table is encrypted with the stack's key when one is given"
        );

        let sam = generate(&file, settings(Format::Sam)).unwrap();
        assert_eq!(sam["Transform"], "AWS::Serverless-2016-10-31");
        let f = &sam["Resources"]["EFunction"];
        assert_eq!(f["Type"], "AWS::Serverless::Function");
        let event = &f["Properties"]["Events"]["E"]["Properties"];
        assert_eq!(event["Pattern"], r["ERule"]["Properties"]["EventPattern"]);
        assert_eq!(
            event["DeadLetterConfig"],
            r["ERule"]["Properties"]["Targets"][0]["DeadLetterConfig"]
        );
        assert_eq!(
            f["Properties"]["Role"],
            json!({"Fn::GetAtt": ["ERole", "Arn"]}),
            "our role, not SAM's"
        );
        assert!(sam["Resources"].get("ERule").is_none());
        assert!(sam["Outputs"].get("ERuleName").is_none());
    }

    #[test]
    fn failed_events_go_to_an_encrypted_queue_from_the_rule_and_the_function() {
        let file = load(FILTERED);
        let t = generate(&file, settings(Format::Cloudformation)).unwrap();
        let r = &t["Resources"];
        let queue_arn = json!({"Fn::GetAtt": ["EDeadLetterQueue", "Arn"]});
        let target = &r["ERule"]["Properties"]["Targets"][0];
        assert_eq!(target["DeadLetterConfig"]["Arn"], queue_arn);
        assert_eq!(target["RetryPolicy"]["MaximumEventAgeInSeconds"], 3600);
        let invoke = &r["EEventInvokeConfig"]["Properties"];
        assert_eq!(invoke["DestinationConfig"]["OnFailure"]["Destination"], queue_arn);
        assert_eq!(invoke["MaximumRetryAttempts"], 2);
        assert_eq!(invoke["MaximumEventAgeInSeconds"], 3600);
        assert_eq!(invoke["Qualifier"], "$LATEST");
        let queue = &r["EDeadLetterQueue"]["Properties"];
        assert_eq!(queue["MessageRetentionPeriod"], 1_209_600);
        assert_eq!(
            queue["KmsMasterKeyId"],
            json!({"Fn::If": ["HasKmsKey", {"Ref": "KmsKeyArn"}, {"Ref": "AWS::NoValue"}]})
        );
        // EventBridge may send from this rule only; the function's role may send to this queue.
        let policy = &r["EDeadLetterQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"][0];
        assert_eq!(policy["Principal"], json!({"Service": "events.amazonaws.com"}));
        assert_eq!(policy["Action"], "sqs:SendMessage");
        assert_eq!(
            policy["Condition"]["ArnEquals"]["aws:SourceArn"],
            json!({"Fn::GetAtt": ["ERule", "Arn"]})
        );
        let statements = r["ERole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
            .as_array()
            .unwrap();
        assert!(
            statements
                .iter()
                .any(|s| s["Action"] == json!(["sqs:SendMessage"]) && s["Resource"] == json!([queue_arn])),
            "{statements:?}"
        );
        assert_eq!(
            t["Outputs"]["EDeadLetterQueueUrl"]["Value"],
            json!({"Ref": "EDeadLetterQueue"})
        );
    }

    #[test]
    fn alarms_watch_functions_queues_and_rollbacks_and_notify_the_optional_topic() {
        let file = load(FILTERED);
        let t = generate(&file, settings(Format::Cloudformation)).unwrap();
        let r = t["Resources"].as_object().unwrap();
        let alarms: Vec<&str> = r
            .iter()
            .filter(|(_, v)| v["Type"] == "AWS::CloudWatch::Alarm")
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(
            alarms,
            [
                "EErrorsAlarm",
                "EThrottlesAlarm",
                "EDeadLetterQueueAlarm",
                "RollbacksAlarm"
            ]
        );
        let dlq = &r["EDeadLetterQueueAlarm"]["Properties"];
        assert_eq!(dlq["MetricName"], "ApproximateNumberOfMessagesVisible");
        assert_eq!(dlq["ComparisonOperator"], "GreaterThanThreshold");
        assert_eq!(dlq["Threshold"], 0);
        assert_eq!(
            dlq["AlarmActions"],
            json!({"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]})
        );
        assert_eq!(
            r["ERollbacksMetricFilter"]["Properties"]["FilterPattern"],
            "{ $.Rollbacks = 1 }"
        );
        assert_eq!(t["Parameters"]["AlarmTopicArn"]["Default"], "");
        let names = &t["Outputs"]["Alarms"]["Value"]["Fn::Join"][1];
        assert_eq!(names.as_array().unwrap().len(), alarms.len());
    }

    #[test]
    fn state_machines_log_at_error_and_trace_on_request_with_their_own_permissions() {
        let file = load(
            "[pipelines.e]\n[[pipelines.e.stages]]\ntype = \"start-state-machine\"\n\
             engine = { type = \"step-functions\", definition = \"canary.asl.json\", resources = { \
             \"arn:aws:lambda:us-east-1:111122223333:function:cutover-traffic-shift\" = \"e\", \
             \"arn:aws:lambda:us-east-1:111122223333:function:cutover-health-check\" = \"e\" } }\n",
        );
        let t = generate(&file, settings(Format::Cloudformation)).unwrap();
        let r = &t["Resources"];
        let machine = &r["EStartStateMachineStateMachine"];
        let logging = &machine["Properties"]["LoggingConfiguration"];
        assert_eq!(logging["Level"], json!({"Ref": "StateMachineLogLevel"}));
        assert_eq!(logging["IncludeExecutionData"], false);
        assert_eq!(
            logging["Destinations"][0]["CloudWatchLogsLogGroup"]["LogGroupArn"],
            json!({"Fn::GetAtt": ["EStartStateMachineStateMachineLogGroup", "Arn"]})
        );
        assert_eq!(
            machine["Properties"]["TracingConfiguration"]["Enabled"],
            json!({"Fn::If": ["TracingEnabled", true, false]})
        );
        assert_eq!(
            machine["DependsOn"],
            json!(["EStartStateMachineStateMachineLoggingPolicy"])
        );
        let policy = &r["EStartStateMachineStateMachineLoggingPolicy"]["Properties"];
        assert_eq!(
            policy["Roles"],
            json!([{"Ref": "EStartStateMachineStateMachineRole"}])
        );
        assert_eq!(t["Parameters"]["StateMachineLogLevel"]["Default"], "ERROR");
        for metric in ["ExecutionsFailed", "ExecutionsTimedOut"] {
            let alarm = &r[format!("EStartStateMachineStateMachine{metric}Alarm")]["Properties"];
            assert_eq!(alarm["MetricName"], metric);
            assert_eq!(
                alarm["Dimensions"][0]["Value"],
                json!({"Ref": "EStartStateMachineStateMachine"})
            );
        }
        let f = &r["EFunction"]["Properties"];
        assert_eq!(
            f["ReservedConcurrentExecutions"],
            json!({"Fn::If": ["ReservesConcurrency", {"Ref": "ReservedConcurrency"}, {"Ref": "AWS::NoValue"}]})
        );
        assert!(r.get("EDeadLetterQueue").is_none(), "no rule, no queue");
    }

    #[test]
    fn a_file_without_state_machines_has_no_state_machine_parameters() {
        let t = generate(&load(FILTERED), settings(Format::Cloudformation)).unwrap();
        assert!(t["Parameters"].get("StateMachineLogLevel").is_none());
        assert!(t["Conditions"].get("HasKmsKey").is_some());
    }
}
