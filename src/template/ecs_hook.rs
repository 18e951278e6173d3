//! What a pipeline with `ecs_hook` adds to the stack: the hook table its state lives in between
//! invocations (one per stack, shared by every hook pipeline: keys hold the deployment and the
//! stage), the function's permission on it, the environment override pointing the pipeline's
//! `ecs_hook.store` at it (an embedded store cannot outlive one Lambda sandbox), and the role
//! Amazon ECS assumes to invoke the function — least privilege: `lambda:InvokeFunction` on this
//! function only. The output `<Base>EcsLifecycleHook` is the entry to put in the service's
//! `deploymentConfiguration.lifecycleHooks`.

use cutover_core::{Deployment, EcsHookSpec, Statement, deploy};
use serde_json::{Value, json};

use super::{base, get_att};

/// The logical ID of the stack's hook table.
pub(crate) const TABLE: &str = "EcsHookTable";

/// The additions of hook pipeline `pipeline`.
pub(crate) fn deployment(pipeline: &str, hook: &EcsHookSpec) -> Deployment {
    let base = base(pipeline);
    let function = deploy::function_id(pipeline);
    let invoke_role = format!("{base}EcsHookInvokeRole");
    let store_var = format!(
        "CUTOVER_PIPELINES__{}__ECS_HOOK__STORE",
        pipeline.to_ascii_uppercase().replace('-', "_")
    );
    let policies = json!([{
        "PolicyName": format!("cutover-{pipeline}-ecs-hook"),
        "PolicyDocument": {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow",
            "Action": ["lambda:InvokeFunction"],
            "Resource": [get_att(&function, "Arn")],
        }]},
    }]);
    let stages: Vec<Value> = hook.stages.iter().map(|s| json!(s)).collect();
    let entry = format!(
        "{{\"hookTargetArn\": \"${{{function}.Arn}}\", \"roleArn\": \"${{{invoke_role}.Arn}}\", \"lifecycleStages\": {}}}",
        Value::Array(stages)
    );
    Deployment::default()
        .resource(TABLE, table())
        .resource(invoke_role.clone(), deploy::service_role("ecs.amazonaws.com", policies))
        .output(
            format!("{base}EcsLifecycleHook"),
            json!({
                "Description": format!(
                    "The entry for the ECS service's deploymentConfiguration.lifecycleHooks: pipeline \"{pipeline}\" judges {}",
                    hook.stages.join(", ")
                ),
                "Value": {"Fn::Sub": entry},
            }),
        )
        .env(
            store_var,
            json!({"Fn::Sub": format!("{{\"type\": \"dynamodb\", \"table\": \"${{{TABLE}}}\"}}")}),
        )
        .allow(Statement::new(
            ["dynamodb:GetItem", "dynamodb:PutItem"],
            [get_att(TABLE, "Arn")],
            "keep each ECS lifecycle hook's measurements between invocations (one conditional PutItem per invocation)",
        ))
}

/// The hook table: key `pk`, items expiring at `expires_at`.
fn table() -> Value {
    json!({
        "Type": "AWS::DynamoDB::Table",
        "Properties": {
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": true},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::super::Format;
    use super::super::testing::template;
    use super::*;

    const HOOKS: &str = "[pipelines.judge-test]\necs_hook = { stages = [\"POST_TEST_TRAFFIC_SHIFT\"], count = 3 }\n\
        [[pipelines.judge-test.stages]]\ntype = \"health-check\"\nprobe = { type = \"http\", url = \"http://green/\" }\n\
        [pipelines.judge-prod]\necs_hook = { stages = [\"PRODUCTION_TRAFFIC_SHIFT\"] }\n\
        [[pipelines.judge-prod.stages]]\ntype = \"health-check\"\nprobe = { type = \"http\", url = \"http://green/\" }\n";

    #[test]
    fn hook_pipelines_share_one_table_and_each_gets_an_invoke_role_for_ecs() {
        let t = template(HOOKS, Format::Cloudformation);
        let r = &t["Resources"];
        assert_eq!(r[TABLE]["Type"], "AWS::DynamoDB::Table");
        let role = &r["JudgeTestEcsHookInvokeRole"]["Properties"];
        assert_eq!(
            role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["Service"],
            "ecs.amazonaws.com"
        );
        let allowed = &role["Policies"][0]["PolicyDocument"]["Statement"];
        assert_eq!(allowed.as_array().unwrap().len(), 1, "{allowed}");
        assert_eq!(allowed[0]["Action"], json!(["lambda:InvokeFunction"]));
        assert_eq!(
            allowed[0]["Resource"],
            json!([{"Fn::GetAtt": ["JudgeTestFunction", "Arn"]}])
        );
        let env = &r["JudgeProdFunction"]["Properties"]["Environment"]["Variables"];
        assert_eq!(
            env["CUTOVER_PIPELINES__JUDGE_PROD__ECS_HOOK__STORE"]["Fn::Sub"],
            "{\"type\": \"dynamodb\", \"table\": \"${EcsHookTable}\"}"
        );
        let entry = t["Outputs"]["JudgeTestEcsLifecycleHook"]["Value"]["Fn::Sub"]
            .as_str()
            .unwrap();
        assert!(
            entry.contains("${JudgeTestFunction.Arn}") && entry.contains("[\"POST_TEST_TRAFFIC_SHIFT\"]"),
            "{entry}"
        );
        let policy = serde_json::to_string(&r["JudgeTestRole"]).unwrap();
        assert!(
            policy.contains("dynamodb:PutItem") && policy.contains("EcsHookTable"),
            "{policy}"
        );
    }
}
