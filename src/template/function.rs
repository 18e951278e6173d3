//! One pipeline as one Lambda function: the typed [`FunctionPlan`] both formats render — its
//! description, architecture, memory, timeout, environment, [role](super::role) and, when the
//! pipeline's filter stages compile to an event pattern, its [rule](super::rule) — made from what
//! the pipeline's stages asked for ([`StageNeeds`]).
//!
//! What the formats share is rendered here: the log group, the function's properties in their
//! order ([`FunctionPlan::properties`], into which each format puts its own spelling of the
//! code location and tracing mode) and its output.

use cutover_core::{PipelineSpec, Statement, deploy};
use serde_json::{Map, Value, json};

use super::role::{Grant, RolePlan};
use super::rule::RulePlan;
use super::{Arch, Settings, base, dead_letter, get_att, hardening, reference};

/// Where the function writes embedded state (Lambda's only writable directory).
const DATA_DIR: &str = "/tmp/cutover";
/// The least function timeout, in seconds.
const MIN_TIMEOUT: u32 = 30;
/// Lambda's longest timeout, in seconds.
const MAX_TIMEOUT: u32 = 900;
/// Lambda's longest function description, in characters.
const MAX_DESCRIPTION: usize = 256;
/// How long a function's logs are kept.
const LOG_RETENTION_DAYS: u32 = 30;
/// The parameter naming the S3 bucket of the package zip every function runs.
pub(crate) const CODE_BUCKET: &str = "CodeS3Bucket";
/// The parameter naming the zip's key in that bucket.
pub(crate) const CODE_KEY: &str = "CodeS3Key";

/// The template parameters locating the package zip (`cutover package`).
pub(crate) fn code_parameters() -> Map<String, Value> {
    let mut p = Map::new();
    p.insert(
        CODE_BUCKET.into(),
        json!({
            "Type": "String",
            "Description": "The S3 bucket holding the package zip (`cutover package`: bootstrap + cutover.toml)",
        }),
    );
    p.insert(
        CODE_KEY.into(),
        json!({
            "Type": "String",
            "Default": "cutover.zip",
            "Description": "The package zip's key in CodeS3Bucket",
        }),
    );
    p
}

/// What a pipeline's stages ask of its function, gathered from their
/// [`Deployment`](cutover_core::Deployment)s in stage order.
#[derive(Debug, Default)]
pub(crate) struct StageNeeds {
    /// The stages' permissions.
    pub(crate) statements: Vec<Statement>,
    /// The stages' environment variables (CloudFormation values).
    pub(crate) environment: Map<String, Value>,
    /// The longest timeout a stage asked for, in seconds.
    pub(crate) timeout_secs: u32,
}

/// One pipeline's function, everything about it decided; rendering only spells it out.
#[derive(Debug)]
pub(crate) struct FunctionPlan {
    /// The pipeline the function runs.
    pub(crate) pipeline: String,
    /// The prefix of the logical IDs made for it (`EcsEvents`).
    pub(crate) base: String,
    /// The function's description (at most Lambda's 256 characters).
    pub(crate) description: String,
    /// Its CPU architecture.
    pub(crate) arch: Arch,
    /// Its memory, in MB.
    pub(crate) memory: u32,
    /// Its timeout in seconds: what the slowest stage needs, within Lambda's bounds.
    pub(crate) timeout: u32,
    /// Its environment (CloudFormation values): the pipeline's name and data directory, then
    /// the stages' overrides.
    pub(crate) environment: Map<String, Value>,
    /// Its execution role.
    pub(crate) role: RolePlan,
    /// The EventBridge rule that invokes it, when the pipeline's filter stages compile to a
    /// pattern; such a function also gets the dead-letter queue.
    pub(crate) rule: Option<RulePlan>,
}

impl FunctionPlan {
    /// The plan of `pipeline`'s function from what its stages need and the event pattern its
    /// filter stages compile to.
    pub(crate) fn new(
        pipeline: &PipelineSpec,
        settings: Settings,
        needs: StageNeeds,
        pattern: Option<Value>,
    ) -> Self {
        let name = &pipeline.name;
        let base = base(name);
        let description = pipeline
            .description
            .clone()
            .unwrap_or_else(|| format!("cutover pipeline {name}"));
        let mut environment = Map::new();
        environment.insert("CUTOVER_PIPELINE".into(), json!(name));
        environment.insert("CUTOVER_SETTINGS__DATA_DIR".into(), json!(DATA_DIR));
        environment.extend(needs.environment);
        let rule = pattern.map(|pattern| RulePlan::new(name, pattern));

        let log_group = log_group_id(&base);
        let mut grants = vec![Grant::Allow(Statement::new(
            ["logs:CreateLogStream", "logs:PutLogEvents"],
            [get_att(&log_group, "Arn")],
            "write the function's logs to its own log group",
        ))];
        grants.extend(needs.statements.into_iter().map(Grant::Allow));
        if let Some(rule) = &rule {
            grants.push(Grant::Allow(dead_letter::send_statement(&rule.dead_letter_queue)));
        }
        grants.push(Grant::WhileTracing(Statement::new(
            ["xray:PutTraceSegments", "xray:PutTelemetryRecords"],
            [json!("*")],
            "send the function's X-Ray trace segments (the actions take no resource)",
        )));

        Self {
            pipeline: name.clone(),
            role: RolePlan {
                id: format!("{base}Role"),
                policy_name: format!("cutover-{name}"),
                grants,
            },
            base,
            description: description.chars().take(MAX_DESCRIPTION).collect(),
            arch: settings.arch,
            memory: settings.memory,
            timeout: needs.timeout_secs.clamp(MIN_TIMEOUT, MAX_TIMEOUT),
            environment,
            rule,
        }
    }

    /// The function's logical ID (`EcsEventsFunction`).
    pub(crate) fn id(&self) -> String {
        deploy::function_id(&self.pipeline)
    }

    /// Its log group's logical ID (`EcsEventsLogGroup`).
    pub(crate) fn log_group_id(&self) -> String {
        log_group_id(&self.base)
    }

    /// Its log group, encrypted with the stack's key when one is given.
    pub(crate) fn log_group(&self) -> Value {
        json!({
            "Type": "AWS::Logs::LogGroup",
            "Properties": {
                "RetentionInDays": LOG_RETENTION_DAYS,
                "KmsKeyId": hardening::kms_key(),
            },
        })
    }

    /// The function's properties, with the format's own `code` entry (the package zip, from
    /// `CodeS3Bucket` and `CodeS3Key`) and `tracing` entry (given the mode) in their places.
    pub(crate) fn properties(
        &self,
        code: impl FnOnce(Value, Value) -> (&'static str, Value),
        tracing: impl FnOnce(Value) -> (&'static str, Value),
    ) -> Map<String, Value> {
        let mut p = Map::new();
        p.insert("Description".into(), json!(self.description));
        p.insert("Runtime".into(), json!("provided.al2023"));
        p.insert("Handler".into(), json!("bootstrap"));
        p.insert("Architectures".into(), json!([self.arch.name()]));
        let (key, value) = code(reference(CODE_BUCKET), reference(CODE_KEY));
        p.insert(key.into(), value);
        p.insert("Role".into(), get_att(&self.role.id, "Arn"));
        p.insert("MemorySize".into(), json!(self.memory));
        p.insert("Timeout".into(), json!(self.timeout));
        p.insert(
            "LoggingConfig".into(),
            json!({"LogGroup": reference(&self.log_group_id())}),
        );
        p.insert("Environment".into(), json!({"Variables": self.environment}));
        p.insert(
            "ReservedConcurrentExecutions".into(),
            hardening::reserved_concurrency(),
        );
        let (key, value) = tracing(hardening::if_tracing(json!("Active"), json!("PassThrough")));
        p.insert(key.into(), value);
        p
    }

    /// The output giving the function's ARN, by name.
    pub(crate) fn output(&self) -> (String, Value) {
        let id = self.id();
        let value = json!({
            "Description": format!("The function running pipeline \"{}\"", self.pipeline),
            "Value": get_att(&id, "Arn"),
        });
        (format!("{id}Arn"), value)
    }
}

fn log_group_id(base: &str) -> String {
    format!("{base}LogGroup")
}

#[cfg(test)]
mod tests {
    use super::super::Format;
    use super::super::testing::{FILTERED, load, settings, template};
    use super::*;

    #[test]
    fn the_plan_holds_what_the_stages_asked_for_within_lambdas_bounds() {
        let file = load(FILTERED);
        let needs = StageNeeds {
            statements: vec![Statement::new(["s3:GetObject"], [json!("*")], "why")],
            environment: Map::from_iter([("CUTOVER_PIPELINE".to_owned(), json!("x"))]),
            timeout_secs: 5000,
        };
        let plan = FunctionPlan::new(&file.pipelines[0], settings(Format::Sam), needs, None);
        assert_eq!(plan.timeout, MAX_TIMEOUT);
        assert_eq!(plan.description, "cutover pipeline e");
        assert_eq!(
            plan.environment.keys().collect::<Vec<_>>(),
            ["CUTOVER_PIPELINE", "CUTOVER_SETTINGS__DATA_DIR"],
            "a stage's variable replaces ours in place"
        );
        assert_eq!(plan.environment["CUTOVER_PIPELINE"], "x");
        assert!(plan.rule.is_none());
        let whys: Vec<&str> = plan
            .role
            .grants
            .iter()
            .map(|g| match g {
                Grant::Allow(s) | Grant::WhileTracing(s) => s.why.as_str(),
            })
            .collect();
        assert_eq!(
            whys.len(),
            3,
            "logs, the stage's, X-Ray; no rule, no queue: {whys:?}"
        );
        assert_eq!(whys[1], "why");
    }

    #[test]
    fn both_formats_write_the_same_function_in_their_own_spelling() {
        let cfn = template(FILTERED, Format::Cloudformation);
        let sam = template(FILTERED, Format::Sam);
        let (cfn, sam) = (
            &cfn["Resources"]["EFunction"]["Properties"],
            &sam["Resources"]["EFunction"]["Properties"],
        );
        assert_eq!(
            cfn["Code"],
            json!({"S3Bucket": {"Ref": "CodeS3Bucket"}, "S3Key": {"Ref": "CodeS3Key"}})
        );
        assert_eq!(
            sam["CodeUri"],
            json!({"Bucket": {"Ref": "CodeS3Bucket"}, "Key": {"Ref": "CodeS3Key"}})
        );
        assert_eq!(cfn["TracingConfig"]["Mode"], sam["Tracing"]);
        for key in [
            "Description",
            "Architectures",
            "Role",
            "MemorySize",
            "Timeout",
            "Environment",
        ] {
            assert_eq!(cfn[key], sam[key], "{key}");
        }
    }
}
