//! What `start-state-machine` adds to the stack `cutover template` generates: the state
//! machine (from `definition`, each mapped Task `Resource` replaced by the ARN of the function
//! running the mapped pipeline) with a role that may invoke exactly those functions, and the
//! permission to start and describe its executions. When the definition reads its control
//! record (`arn:aws:states:::dynamodb:getItem`, as the shipped canary does), the stack also
//! creates the rollouts table: the state machine may read it (GetItem), the function may keep
//! its service slots and audit entries there (the superseding of a running rollout).

use std::collections::BTreeMap;

use cutover_core::{DeployContext, Deployment, FieldError, Statement};
use serde_json::{Value, json};

use super::{ControlConfig, EngineConfig, Resource};
use crate::rollouts::CONTROL_RESOURCE;

pub(super) fn deployment(
    engine: &EngineConfig,
    control: &ControlConfig,
    cx: &DeployContext<'_>,
) -> Result<Deployment, FieldError> {
    let (arn, definition, resources) = match engine {
        EngineConfig::Local { .. } => {
            return Err(FieldError::new(
                "engine",
                "the embedded engine (type = \"local\") runs inside one process and cannot run in \
                 Lambda: use engine = { type = \"step-functions\", definition = \"…\", resources = { … } } \
                 for the stack to create the state machine, or state_machine_arn of an existing one",
            ));
        }
        EngineConfig::StepFunctions {
            state_machine_arn,
            definition,
            resources,
        } => (state_machine_arn, definition, resources),
    };
    let Some(definition) = definition else {
        let executions = arn.replacen(":stateMachine:", ":execution:", 1) + ":*";
        return Ok(Deployment::default().allow(starts(json!(arn), json!(executions))));
    };

    let mut functions = BTreeMap::new();
    for (resource, target) in resources {
        match target {
            Resource::Pipeline(pipeline) => {
                functions.insert(resource.clone(), cx.function_id(pipeline));
            }
            Resource::Stage(_) => {
                return Err(FieldError::new(
                    format!("engine.resources.{resource:?}"),
                    "an inline stage cannot be deployed on its own: move it into a pipeline of this \
                     file and name that pipeline here (each pipeline becomes one Lambda function)",
                ));
            }
        }
    }
    let path = cx.base_dir.join(definition);
    let text =
        super::strategy::definition_text(&path).map_err(|e| FieldError::new("engine.definition", e))?;
    let mut tree: Value = serde_json::from_str(&text)
        .map_err(|e| FieldError::new("engine.definition", format!("{}: {e}", path.display())))?;
    let reads_control = text.contains(CONTROL_RESOURCE);
    substitute(&mut tree, &functions);
    let body = serde_json::to_string_pretty(&tree)
        .map_err(|e| FieldError::new("engine.definition", e.to_string()))?;
    let table = cx.logical_id("RolloutsTable");

    let machine = cx.logical_id("StateMachine");
    let role = cx.logical_id("StateMachineRole");
    let invoked: Vec<Value> = functions
        .values()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|id| json!({"Fn::GetAtt": [id, "Arn"]}))
        .collect();
    // A definition without Task states invokes nothing: the role then has no policy.
    let mut policies = if invoked.is_empty() {
        Vec::new()
    } else {
        vec![json!({
            "PolicyName": "invoke-task-functions",
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [{
                    "Effect": "Allow",
                    "Action": "lambda:InvokeFunction",
                    "Resource": invoked,
                }],
            },
        })]
    };
    if reads_control {
        policies.push(json!({
            "PolicyName": "read-control-records",
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [{
                    "Effect": "Allow",
                    "Action": "dynamodb:GetItem",
                    "Resource": {"Fn::GetAtt": [table, "Arn"]},
                }],
            },
        }));
    }
    let policies = Value::Array(policies);
    let role_resource = cutover_core::deploy::service_role("states.amazonaws.com", policies);
    let executions = json!({"Fn::Sub": format!(
        "arn:${{AWS::Partition}}:states:${{AWS::Region}}:${{AWS::AccountId}}:execution:${{{machine}.Name}}:*"
    )});
    let deployment = Deployment::default()
        .resource(&role, role_resource)
        .resource(
            &machine,
            json!({
                "Type": "AWS::StepFunctions::StateMachine",
                "Properties": {
                    "RoleArn": {"Fn::GetAtt": [role, "Arn"]},
                    "DefinitionString": {"Fn::Sub": body},
                },
            }),
        )
        .output(
            format!("{machine}Arn"),
            json!({
                "Description": format!("The state machine stage \"{}\" of pipeline \"{}\" starts", cx.stage_name, cx.pipeline),
                "Value": {"Ref": machine},
            }),
        )
        .env(cx.override_var("engine.state_machine_arn"), json!({"Ref": machine}))
        .allow(starts(json!({"Ref": machine}), executions));
    Ok(if reads_control {
        rollouts_table(deployment, &table, cx).timeout(supersede_budget(control))
    } else {
        deployment
    })
}

/// The rollouts table (control records, service slots, audit entries; see
/// `crate::rollouts::DynamoRolloutStore`), the function pointed at it and allowed to use it.
/// How long one invocation may take when it supersedes a running rollout: it waits up to
/// `supersede_wait` for the older one's rollback, plus time for its own calls.
fn supersede_budget(control: &ControlConfig) -> u32 {
    if !control.supersede {
        return 0;
    }
    u32::try_from(control.supersede_wait.as_secs().saturating_add(30)).unwrap_or(900)
}

fn rollouts_table(deployment: Deployment, table: &str, cx: &DeployContext<'_>) -> Deployment {
    deployment
        .resource(
            table,
            json!({
                "Type": "AWS::DynamoDB::Table",
                "Properties": {
                    "BillingMode": "PAY_PER_REQUEST",
                    "AttributeDefinitions": [
                        {"AttributeName": "pk", "AttributeType": "S"},
                        {"AttributeName": "sk", "AttributeType": "S"},
                    ],
                    "KeySchema": [
                        {"AttributeName": "pk", "KeyType": "HASH"},
                        {"AttributeName": "sk", "KeyType": "RANGE"},
                    ],
                },
            }),
        )
        .output(
            format!("{table}Name"),
            json!({
                "Description": format!(
                    "The rollouts table (control records, audit log) of stage \"{}\" of pipeline \"{}\": \
                     set it as control.table to run `cutover rollouts` against this stack",
                    cx.stage_name, cx.pipeline
                ),
                "Value": {"Ref": table},
            }),
        )
        .env(cx.override_var("control.table"), json!({"Ref": table}))
        .allow(Statement::new(
            ["dynamodb:GetItem", "dynamodb:PutItem"],
            [json!({"Fn::GetAtt": [table, "Arn"]})],
            "one rollout per service: read the service's slot and take it by a conditional write \
             (GetItem, PutItem), abort the rollout it held through its control record (GetItem, \
             PutItem) and audit that (PutItem)",
        ))
}

fn starts(machine: Value, executions: Value) -> Statement {
    Statement::new(
        ["states:StartExecution", "states:DescribeExecution"],
        [machine, executions],
        "start one canary execution per deployment; on a name clash, read the existing \
         execution's input to tell a duplicate from a conflict",
    )
}

/// Escapes `${` for `Fn::Sub` everywhere, then replaces mapped Task resources with the ARN of
/// the function serving them (`${Id.Arn}`), in branches and map processors too.
fn substitute(value: &mut Value, functions: &BTreeMap<String, String>) {
    match value {
        Value::String(s) if s.contains("${") => *s = s.replace("${", "${!"),
        Value::Array(items) => items.iter_mut().for_each(|v| substitute(v, functions)),
        Value::Object(map) => {
            let is_task = map.get("Type").and_then(Value::as_str) == Some("Task");
            for v in map.values_mut() {
                substitute(v, functions);
            }
            if is_task
                && let Some(Value::String(resource)) = map.get_mut("Resource")
                && let Some(id) = functions.get(resource.as_str())
            {
                *resource = format!("${{{id}.Arn}}");
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_machine::StartStateMachineConfig;

    fn deploy(engine: &str) -> Result<Deployment, FieldError> {
        let config: StartStateMachineConfig = toml::from_str(&format!("engine = {engine}")).unwrap();
        let pipelines = vec!["e".to_owned(), "shift".to_owned()];
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines");
        let cx = DeployContext {
            file: "x.toml",
            base_dir: &base,
            pipeline: "e",
            stage_index: 3,
            stage_name: "start",
            pipelines: &pipelines,
            service: None,
        };
        deployment(&config.engine, &config.control, &cx)
    }

    #[test]
    fn a_definition_becomes_a_state_machine_the_function_is_pointed_at() {
        let d = deploy(
            "{ type = \"step-functions\", definition = \"canary.asl.json\", resources = { \"arn:aws:lambda:us-east-1:111122223333:function:cutover-traffic-shift\" = \"shift\", \"arn:aws:lambda:us-east-1:111122223333:function:cutover-health-check\" = \"shift\" } }",
        )
        .unwrap();
        assert_eq!(
            d.environment["CUTOVER_PIPELINES__E__STAGES__3__ENGINE__STATE_MACHINE_ARN"],
            json!({"Ref": "EStartStateMachine"})
        );
        let body = d.resources["EStartStateMachine"]["Properties"]["DefinitionString"]["Fn::Sub"]
            .as_str()
            .unwrap();
        assert!(body.contains("\"Resource\": \"${ShiftFunction.Arn}\""), "{body}");
        assert!(!body.contains("arn:aws:lambda"), "{body}");
        assert_eq!(
            d.resources["EStartStateMachineRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
                [0]["Resource"],
            json!([{"Fn::GetAtt": ["ShiftFunction", "Arn"]}]),
            "invoke exactly the mapped functions, once each"
        );
        // The canary reads its control record: the stack makes the rollouts table, lets the
        // machine read it and points the function at it.
        assert!(
            body.contains("arn:aws:states:::dynamodb:getItem"),
            "left as it is"
        );
        assert_eq!(
            d.resources["EStartRolloutsTable"]["Properties"]["KeySchema"][1]["AttributeName"],
            "sk"
        );
        let read = &d.resources["EStartStateMachineRole"]["Properties"]["Policies"][1]["PolicyDocument"]["Statement"]
            [0];
        assert_eq!(read["Action"], "dynamodb:GetItem");
        assert_eq!(
            read["Resource"],
            json!({"Fn::GetAtt": ["EStartRolloutsTable", "Arn"]})
        );
        assert_eq!(
            d.environment["CUTOVER_PIPELINES__E__STAGES__3__CONTROL__TABLE"],
            json!({"Ref": "EStartRolloutsTable"})
        );
        let slots = d
            .statements
            .iter()
            .find(|s| s.actions.iter().any(|a| a == "dynamodb:PutItem"))
            .expect("the slot and control writes");
        assert_eq!(slots.actions, ["dynamodb:GetItem", "dynamodb:PutItem"]);
        assert_eq!(
            d.timeout_secs, 90,
            "room to wait 60 s for a superseded rollout's rollback"
        );
    }

    #[test]
    fn an_existing_machine_is_only_permitted_and_the_local_engine_is_refused() {
        let d = deploy("{ type = \"step-functions\", state_machine_arn = \"arn:aws:states:us-east-1:1:stateMachine:canary\" }")
            .unwrap();
        assert!(d.resources.is_empty());
        assert_eq!(
            d.statements[0].resources,
            vec![
                json!("arn:aws:states:us-east-1:1:stateMachine:canary"),
                json!("arn:aws:states:us-east-1:1:execution:canary:*")
            ]
        );
        let err = deploy("{ type = \"local\", definition = \"canary.asl.json\" }").unwrap_err();
        assert_eq!(err.field, "engine");
    }

    #[test]
    fn task_resources_become_function_arns_and_dollar_braces_are_escaped() {
        let mut tree = json!({"States": {
            "A": {"Type": "Task", "Resource": "arn:x", "Comment": "costs ${5}"},
            "P": {"Type": "Parallel", "Branches": [{"States": {"B": {"Type": "Task", "Resource": "arn:x"}}}]},
            "C": {"Type": "Pass", "Resource": "arn:x"}
        }});
        let functions = BTreeMap::from([("arn:x".to_owned(), "ShiftFunction".to_owned())]);
        substitute(&mut tree, &functions);
        assert_eq!(tree["States"]["A"]["Resource"], "${ShiftFunction.Arn}");
        assert_eq!(tree["States"]["A"]["Comment"], "costs ${!5}");
        assert_eq!(
            tree["States"]["P"]["Branches"][0]["States"]["B"]["Resource"],
            "${ShiftFunction.Arn}"
        );
        assert_eq!(tree["States"]["C"]["Resource"], "arn:x");
    }
}
