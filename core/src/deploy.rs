//! What a stage needs when its pipeline is deployed to AWS: the contract behind
//! `cutover template`.
//!
//! Each pipeline of a file becomes one Lambda function (running the cutover binary with
//! `CUTOVER_PIPELINE` set to the pipeline's name). The template command asks every stage
//! [`StageConfig::deployment`](crate::StageConfig::deployment) for its [`Deployment`]: the
//! CloudFormation resources, parameters and outputs it adds, the IAM [`Statement`]s its
//! function's role needs, and the environment variables its function needs (usually
//! [`DeployContext::override_var`] overrides pointing a field at a resource the template
//! creates). The command knows no stage by name, so a plugin stage deploys the same way.
//!
//! Values are CloudFormation JSON (`{"Ref": "…"}`, `{"Fn::GetAtt": […]}`, `{"Fn::Sub": "…"}`).
//!
//! ```
//! use cutover_core::{DeployContext, Deployment, Statement};
//! use serde_json::json;
//!
//! fn deployment(cx: &DeployContext<'_>) -> Deployment {
//!     let queue = cx.logical_id("Queue");
//!     Deployment::default()
//!         .resource(&queue, json!({"Type": "AWS::SQS::Queue"}))
//!         .allow(Statement::new(
//!             ["sqs:SendMessage"],
//!             [json!({"Fn::GetAtt": [queue, "Arn"]})],
//!             "send one message per event",
//!         ))
//!         .env(cx.override_var("queue_url"), json!({"Ref": queue}))
//! }
//! # let pipelines = vec!["ecs-events".to_owned()];
//! # let cx = DeployContext {
//! #     file: "x.toml", base_dir: std::path::Path::new("."), pipeline: "ecs-events",
//! #     stage_index: 2, stage_name: "enqueue", pipelines: &pipelines, service: None,
//! # };
//! # assert_eq!(cx.override_var("queue_url"), "CUTOVER_PIPELINES__ECS_EVENTS__STAGES__2__QUEUE_URL");
//! # assert!(deployment(&cx).resources.contains_key("EcsEventsEnqueueQueue"));
//! ```

use std::path::Path;

use serde_json::{Map, Value, json};

/// Where the stage being deployed sits.
#[derive(Debug, Clone, Copy)]
pub struct DeployContext<'a> {
    /// The pipeline file, as named by the user.
    pub file: &'a str,
    /// Directory of the pipeline file (relative paths in a stage resolve against it).
    pub base_dir: &'a Path,
    /// The pipeline the stage belongs to.
    pub pipeline: &'a str,
    /// The stage's 1-based position in its pipeline.
    pub stage_index: usize,
    /// The stage's name (its `name`, else its `type`).
    pub stage_name: &'a str,
    /// Every pipeline of the file; each is deployed as one function.
    pub pipelines: &'a [String],
    /// For a stage configured per service (`[services]`), the service whose configuration is
    /// being deployed: its logical IDs carry the service's name, and overrides of fields that
    /// take a service value set that value instead.
    pub service: Option<ServiceScope<'a>>,
}

/// The service a per-service stage's configuration belongs to (see [`DeployContext::service`]).
#[derive(Debug, Clone, Copy)]
pub struct ServiceScope<'a> {
    /// The service's name.
    pub name: &'a str,
    /// The stage's fields that are exactly one service value, with the value's key:
    /// `("router.record", "record")` for `record = "{service.record}"`.
    pub fields: &'a [(String, String)],
}

impl DeployContext<'_> {
    /// A CloudFormation logical ID for this stage: the pipeline's and the stage's names in
    /// PascalCase, then `suffix` (`EcsEventsDedupTable`; the stage's name is left out when it
    /// is the pipeline's: `TrafficShiftHostedZoneId`). Two unnamed stages of one type in one
    /// pipeline get the same IDs; the template command reports that clash.
    /// A per-service stage's IDs add the service's name (`TrafficShiftCatsRecord`).
    pub fn logical_id(&self, suffix: &str) -> String {
        let (pipeline, stage) = (pascal(self.pipeline), pascal(self.stage_name));
        let service = self.service.map(|s| pascal(s.name)).unwrap_or_default();
        if pipeline == stage {
            format!("{pipeline}{service}{}", pascal(suffix))
        } else {
            format!("{pipeline}{stage}{service}{}", pascal(suffix))
        }
    }

    /// The environment variable that overrides `field` (a dotted path such as `store.table`) of
    /// this stage, addressed by its number:
    /// `CUTOVER_PIPELINES__ECS_EVENTS__STAGES__3__STORE__TABLE`.
    ///
    /// For a per-service stage whose `field` is one service value (`{service.record}`), the
    /// variable sets that value of the service instead: `CUTOVER_SERVICES__CATS__RECORD`.
    pub fn override_var(&self, field: &str) -> String {
        if let Some(scope) = self.service
            && let Some((_, key)) = scope.fields.iter().find(|(f, _)| f == field)
        {
            let mut var = format!("CUTOVER_SERVICES__{}", env_name(scope.name));
            for part in key.split('.') {
                var.push_str("__");
                var.push_str(&env_name(part));
            }
            return var;
        }
        let mut var = format!(
            "CUTOVER_PIPELINES__{}__STAGES__{}",
            env_name(self.pipeline),
            self.stage_index
        );
        for part in field.split('.') {
            var.push_str("__");
            var.push_str(&env_name(part));
        }
        var
    }

    /// The logical ID of the function that runs `pipeline`.
    pub fn function_id(&self, pipeline: &str) -> String {
        function_id(pipeline)
    }

    /// The ARN of the function that runs `pipeline`, as a CloudFormation value.
    pub fn function_arn(&self, pipeline: &str) -> Value {
        json!({"Fn::GetAtt": [function_id(pipeline), "Arn"]})
    }
}

/// An `AWS::IAM::Role` that `service` (`lambda.amazonaws.com`, `states.amazonaws.com`) may
/// assume, with `policies` (a JSON array of inline policies, may be empty).
pub fn service_role(service: &str, policies: Value) -> Value {
    let mut properties = json!({
        "AssumeRolePolicyDocument": {
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": {"Service": service},
                "Action": "sts:AssumeRole",
            }],
        },
    });
    if policies.as_array().is_some_and(|p| !p.is_empty()) {
        properties["Policies"] = policies;
    }
    json!({"Type": "AWS::IAM::Role", "Properties": properties})
}

/// The logical ID of the Lambda function that runs `pipeline` (`EcsEventsFunction`).
pub fn function_id(pipeline: &str) -> String {
    format!("{}Function", pascal(pipeline))
}

/// `ecs-events` → `EcsEvents`: letters and digits only, each word capitalised.
pub fn pascal(text: &str) -> String {
    let mut out = String::new();
    let mut upper = true;
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            if upper {
                out.push(c.to_ascii_uppercase());
            } else {
                out.push(c);
            }
            upper = false;
        } else {
            upper = true;
        }
    }
    out
}

fn env_name(text: &str) -> String {
    text.to_ascii_uppercase().replace('-', "_")
}

/// One IAM policy statement (always `Allow`) for the role of the function running the stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// The API actions (`dynamodb:PutItem`).
    pub actions: Vec<String>,
    /// The resources, as CloudFormation values (ARN strings or intrinsic functions). Use `"*"`
    /// only for actions that support no resource-level permissions, and say so in `why`.
    pub resources: Vec<Value>,
    /// What the permission is for; written as a comment above the statement.
    pub why: String,
}

impl Statement {
    /// Allows `actions` on `resources`, for the reason `why`.
    pub fn new<A: Into<String>>(
        actions: impl IntoIterator<Item = A>,
        resources: impl IntoIterator<Item = Value>,
        why: impl Into<String>,
    ) -> Self {
        Self {
            actions: actions.into_iter().map(Into::into).collect(),
            resources: resources.into_iter().collect(),
            why: why.into(),
        }
    }
}

/// What one stage adds to the deployed stack. Build it with the chained methods; the default
/// adds nothing (a stage that calls no AWS API and keeps no state).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Deployment {
    /// CloudFormation resources by logical ID (use [`DeployContext::logical_id`]).
    pub resources: Map<String, Value>,
    /// Template parameters by name (values the stack takes at deploy time).
    pub parameters: Map<String, Value>,
    /// Template outputs by name.
    pub outputs: Map<String, Value>,
    /// Permissions of the role of the function running the stage's pipeline.
    pub statements: Vec<Statement>,
    /// Environment variables of that function (values are CloudFormation values).
    pub environment: Map<String, Value>,
    /// The least function timeout, in seconds, the stage needs to finish one event.
    pub timeout_secs: u32,
}

impl Deployment {
    /// Adds a resource.
    pub fn resource(mut self, logical_id: impl Into<String>, resource: Value) -> Self {
        self.resources.insert(logical_id.into(), resource);
        self
    }

    /// Adds a parameter.
    pub fn parameter(mut self, name: impl Into<String>, parameter: Value) -> Self {
        self.parameters.insert(name.into(), parameter);
        self
    }

    /// Adds an output.
    pub fn output(mut self, name: impl Into<String>, output: Value) -> Self {
        self.outputs.insert(name.into(), output);
        self
    }

    /// Adds a permission.
    pub fn allow(mut self, statement: Statement) -> Self {
        self.statements.push(statement);
        self
    }

    /// Sets an environment variable of the function.
    pub fn env(mut self, name: impl Into<String>, value: Value) -> Self {
        self.environment.insert(name.into(), value);
        self
    }

    /// Asks for a function timeout of at least `secs` seconds.
    pub fn timeout(mut self, secs: u32) -> Self {
        self.timeout_secs = self.timeout_secs.max(secs);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_override_and_logical_id_rules() {
        assert_eq!(pascal("ecs-events"), "EcsEvents");
        assert_eq!(pascal("start-state-machine"), "StartStateMachine");
        assert_eq!(function_id("health_check"), "HealthCheckFunction");
        let pipelines = vec!["ecs-events".to_owned()];
        let cx = DeployContext {
            file: "f.toml",
            base_dir: Path::new("."),
            pipeline: "ecs-events",
            stage_index: 3,
            stage_name: "start-state-machine",
            pipelines: &pipelines,
            service: None,
        };
        assert_eq!(
            cx.override_var("engine.state_machine_arn"),
            "CUTOVER_PIPELINES__ECS_EVENTS__STAGES__3__ENGINE__STATE_MACHINE_ARN"
        );
        assert_eq!(cx.logical_id("Role"), "EcsEventsStartStateMachineRole");
        let fields = vec![("router.record".to_owned(), "record".to_owned())];
        let cats = DeployContext {
            service: Some(ServiceScope {
                name: "cats",
                fields: &fields,
            }),
            ..cx
        };
        assert_eq!(
            cats.override_var("router.record"),
            "CUTOVER_SERVICES__CATS__RECORD"
        );
        assert_eq!(
            cats.override_var("router.ttl"),
            "CUTOVER_PIPELINES__ECS_EVENTS__STAGES__3__ROUTER__TTL"
        );
        assert_eq!(cats.logical_id("Record"), "EcsEventsStartStateMachineCatsRecord");
    }
}
