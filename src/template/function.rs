//! One pipeline as one Lambda function: what its stages asked for (statements, environment,
//! timeout, the compiled event pattern), collected by [`plan`] into a [`Function`], then
//! rendered with its role, log group, alarms and — when the pipeline has a rule — the rule,
//! the permission for EventBridge to invoke the function, and the dead-letter wiring.
//!
//! The plan renders to plain CloudFormation (`AWS::Lambda::Function` + `AWS::Events::Rule` +
//! `AWS::Lambda::Permission`) or to SAM (`AWS::Serverless::Function` whose `EventBridgeRule`
//! event makes the rule and permission); both keep the generated least-privilege role.

use cutover_core::{DeployContext, LoadError, PipelineFile, PipelineSpec, Statement, deploy};
use serde_json::{Map, Value, json};

use super::yaml::COMMENT;
use super::{Format, Settings, Stack, alarms, base, dead_letter, get_att, hardening, reference};

/// Where the function writes embedded state (Lambda's only writable directory).
const DATA_DIR: &str = "/tmp/cutover";
/// The least function timeout, in seconds.
const MIN_TIMEOUT: u32 = 30;
/// How long a function's logs are kept.
const LOG_RETENTION_DAYS: u32 = 30;

/// What one pipeline's function needs, gathered from its stages.
#[derive(Debug)]
pub(crate) struct Function {
    /// The pipeline the function runs.
    pub(crate) pipeline: String,
    description: String,
    /// Environment variables (CloudFormation values).
    pub(crate) environment: Map<String, Value>,
    /// The stages' permissions, in stage order.
    pub(crate) statements: Vec<Statement>,
    /// The least timeout the stages need, in seconds.
    pub(crate) timeout: u32,
    /// The EventBridge pattern compiled from the filter stages, if any.
    pub(crate) pattern: Option<Value>,
}

/// The function plan of `pipeline`, with what its stages add put into `stack`; `None` (and
/// the reasons in `errors`) when a stage cannot be deployed.
pub(crate) fn plan(
    file: &PipelineFile,
    pipeline: &PipelineSpec,
    names: &[String],
    stack: &mut Stack,
    errors: &mut Vec<LoadError>,
) -> Option<Function> {
    let err = |stage: Option<(usize, String)>, field: Option<String>, message: String| LoadError {
        file: file.display.clone(),
        pipeline: Some(pipeline.name.clone()),
        stage,
        field,
        message,
    };
    let before = errors.len();
    let mut function = Function::new(pipeline);
    for (i, stage) in pipeline.stages.iter().enumerate() {
        let cx = DeployContext {
            file: &file.display,
            base_dir: &file.base_dir,
            pipeline: &pipeline.name,
            stage_index: i + 1,
            stage_name: &stage.name,
            pipelines: names,
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
            clash(Stack::add("resource", &mut stack.resources, id, v, &owner));
        }
        for (id, v) in d.parameters {
            clash(Stack::add("parameter", &mut stack.parameters, id, v, &owner));
        }
        for (id, v) in d.outputs {
            clash(Stack::add("output", &mut stack.outputs, id, v, &owner));
        }
        function.statements.extend(d.statements);
        function.environment.extend(d.environment);
        function.timeout = function.timeout.max(d.timeout_secs);
    }
    match pipeline.event_pattern() {
        Err(message) => errors.push(err(None, None, message)),
        Ok(pattern) => function.pattern = pattern,
    }
    (errors.len() == before).then_some(function)
}

impl Function {
    /// The plan of `pipeline` before its stages are asked.
    pub(crate) fn new(pipeline: &PipelineSpec) -> Self {
        let mut environment = Map::new();
        environment.insert("CUTOVER_PIPELINE".into(), json!(pipeline.name));
        environment.insert("CUTOVER_SETTINGS__DATA_DIR".into(), json!(DATA_DIR));
        Self {
            pipeline: pipeline.name.clone(),
            description: pipeline
                .description
                .clone()
                .unwrap_or_else(|| format!("cutover pipeline {}", pipeline.name)),
            environment,
            statements: Vec::new(),
            timeout: MIN_TIMEOUT,
            pattern: None,
        }
    }

    /// The function's logical ID (`EcsEventsFunction`).
    pub(crate) fn id(&self) -> String {
        deploy::function_id(&self.pipeline)
    }

    /// Its log group's logical ID (`EcsEventsLogGroup`).
    pub(crate) fn log_group(&self) -> String {
        format!("{}LogGroup", base(&self.pipeline))
    }

    /// Adds the function and everything made for it to `stack`.
    pub(crate) fn render(&self, stack: &mut Stack, settings: Settings) {
        let base = base(&self.pipeline);
        let (function, role, logs) = (self.id(), format!("{base}Role"), self.log_group());
        let queue = self
            .pattern
            .as_ref()
            .map(|_| dead_letter::queue_id(&self.pipeline));

        let mut statements = vec![statement(&Statement::new(
            ["logs:CreateLogStream", "logs:PutLogEvents"],
            [get_att(&logs, "Arn")],
            "write the function's logs to its own log group",
        ))];
        statements.extend(self.statements.iter().map(statement));
        if let Some(queue) = &queue {
            statements.push(dead_letter::statement(queue));
        }
        statements.push(hardening::xray_statement(
            "send the function's X-Ray trace segments (the actions take no resource)",
            &["xray:PutTraceSegments", "xray:PutTelemetryRecords"],
        ));

        stack.resources.insert(
            logs.clone(),
            json!({
                "Type": "AWS::Logs::LogGroup",
                "Properties": {"RetentionInDays": LOG_RETENTION_DAYS},
            }),
        );
        stack.resources.insert(
            role.clone(),
            deploy::service_role(
                "lambda.amazonaws.com",
                json!([{
                    "PolicyName": format!("cutover-{}", self.pipeline),
                    "PolicyDocument": {"Version": "2012-10-17", "Statement": statements},
                }]),
            ),
        );
        stack.resources.insert(
            function.clone(),
            self.function(settings, &role, &logs, queue.as_deref()),
        );
        stack.outputs.insert(
            format!("{function}Arn"),
            json!({
                "Description": format!("The function running pipeline \"{}\"", self.pipeline),
                "Value": get_att(&function, "Arn"),
            }),
        );
        alarms::function(stack, &base, &function, &self.pipeline);

        let (Some(pattern), Some(queue)) = (&self.pattern, &queue) else {
            return;
        };
        // The rule that delivers to the function: ours in CloudFormation, SAM's (named after
        // the function and its event) in SAM.
        let rule = match settings.format {
            Format::Cloudformation => {
                let rule = format!("{base}Rule");
                self.rule(stack, &rule, pattern, queue);
                rule
            }
            Format::Sam => format!("{function}{base}"),
        };
        dead_letter::resources(stack, &self.pipeline, queue, (&function, &role), &rule);
    }

    /// The function resource itself.
    fn function(&self, settings: Settings, role: &str, logs: &str, queue: Option<&str>) -> Value {
        let mut p = Map::new();
        p.insert(
            "Description".into(),
            json!(self.description.chars().take(256).collect::<String>()),
        );
        p.insert("Runtime".into(), json!("provided.al2023"));
        p.insert("Handler".into(), json!("bootstrap"));
        p.insert("Architectures".into(), json!([settings.arch.name()]));
        let (bucket, key) = (reference("CodeS3Bucket"), reference("CodeS3Key"));
        match settings.format {
            Format::Cloudformation => p.insert("Code".into(), json!({"S3Bucket": bucket, "S3Key": key})),
            Format::Sam => p.insert("CodeUri".into(), json!({"Bucket": bucket, "Key": key})),
        };
        p.insert("Role".into(), get_att(role, "Arn"));
        p.insert("MemorySize".into(), json!(settings.memory));
        p.insert("Timeout".into(), json!(self.timeout.min(900)));
        p.insert("LoggingConfig".into(), json!({"LogGroup": reference(logs)}));
        p.insert("Environment".into(), json!({"Variables": self.environment}));
        p.insert(
            "ReservedConcurrentExecutions".into(),
            hardening::reserved_concurrency(),
        );
        let mode = hardening::if_tracing(json!("Active"), json!("PassThrough"));
        let kind = match settings.format {
            Format::Cloudformation => {
                p.insert("TracingConfig".into(), json!({ "Mode": mode }));
                "AWS::Lambda::Function"
            }
            Format::Sam => {
                p.insert("Tracing".into(), mode);
                if let (Some(pattern), Some(queue)) = (&self.pattern, queue) {
                    let mut event = json!({"Pattern": pattern});
                    event["DeadLetterConfig"] = dead_letter::rule_dead_letter_config(queue);
                    event["RetryPolicy"] = dead_letter::rule_retry_policy();
                    p.insert(
                        "Events".into(),
                        json!({ base(&self.pipeline): {"Type": "EventBridgeRule", "Properties": event} }),
                    );
                }
                "AWS::Serverless::Function"
            }
        };
        json!({"Type": kind, "Properties": p})
    }

    /// The rule with the compiled pattern, targeting the function (dead letters to `queue`),
    /// and the permission for EventBridge to invoke the function for that rule only.
    fn rule(&self, stack: &mut Stack, rule: &str, pattern: &Value, queue: &str) {
        let function = self.id();
        stack.resources.insert(
            rule.to_owned(),
            json!({
                "Type": "AWS::Events::Rule",
                "Properties": {
                    "Description": format!("cutover pipeline {}: compiled from its filter stages", self.pipeline),
                    "State": "ENABLED",
                    "EventPattern": pattern,
                    "Targets": [{
                        "Id": "cutover",
                        "Arn": get_att(&function, "Arn"),
                        "DeadLetterConfig": dead_letter::rule_dead_letter_config(queue),
                        "RetryPolicy": dead_letter::rule_retry_policy(),
                    }],
                },
            }),
        );
        stack.resources.insert(
            format!("{rule}Permission"),
            json!({
                "Type": "AWS::Lambda::Permission",
                "Properties": {
                    "Action": "lambda:InvokeFunction",
                    "FunctionName": reference(&function),
                    "Principal": "events.amazonaws.com",
                    "SourceArn": get_att(rule, "Arn"),
                },
            }),
        );
        stack.outputs.insert(
            format!("{rule}Name"),
            json!({
                "Description": format!("The EventBridge rule that triggers pipeline \"{}\"", self.pipeline),
                "Value": reference(rule),
            }),
        );
    }
}

/// An IAM statement with its reason as a comment above it.
pub(crate) fn statement(s: &Statement) -> Value {
    json!({
        COMMENT: s.why,
        "Effect": "Allow",
        "Action": s.actions,
        "Resource": s.resources,
    })
}
