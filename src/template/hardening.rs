//! The stack's hardening parameters, each with a default that deploys as it is, and what they
//! change:
//!
//! | parameter | default | effect |
//! | --- | --- | --- |
//! | `ReservedConcurrency` | `5` | concurrency reserved for each function, so other functions of the account cannot starve the deployment control plane (`0`: none, share the account's pool) |
//! | `KmsKeyArn` | empty | a customer managed KMS key for every log group, table and queue of the stack (empty: AWS owned or managed keys) |
//! | `StateMachineLogLevel` | `ERROR` | what each state machine logs to its own log group (`ALL`, `ERROR`, `FATAL`, `OFF`); execution data is never logged |
//! | `Tracing` | `Disabled` | X-Ray tracing of the functions and state machines |
//!
//! The template's own resources take them where it makes them; what stages add is hardened by
//! CloudFormation type ([`encrypt_at_rest`], [`harden_state_machines`]), never by stage name,
//! so a plugin's table or state machine gets the same treatment as a built-in one. A value a
//! stage set itself is kept.

use serde_json::{Map, Value, json};

use super::yaml::COMMENT;
use super::{Stack, get_att, reference};

/// The KMS key parameter.
pub(crate) const KMS_KEY: &str = "KmsKeyArn";
const HAS_KMS_KEY: &str = "HasKmsKey";
const RESERVED: &str = "ReservedConcurrency";
const RESERVES: &str = "ReservesConcurrency";
const TRACING: &str = "Tracing";
const TRACING_ENABLED: &str = "TracingEnabled";
const LOG_LEVEL: &str = "StateMachineLogLevel";
/// How long a state machine's logs are kept.
const LOG_RETENTION_DAYS: u32 = 30;

/// Which optional parameters the stack uses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Used {
    /// The stack has state machines (their log level).
    pub(crate) state_machines: bool,
}

/// The hardening parameters.
pub(crate) fn parameters(used: Used) -> Map<String, Value> {
    let mut p = Map::new();
    p.insert(
        RESERVED.into(),
        json!({
            "Type": "Number",
            "Default": "5",
            "MinValue": 0,
            "Description": "Concurrent executions reserved for each function, so other functions of the account \
                            cannot starve this control plane; 0 reserves none (needed where the account's \
                            concurrency quota is 10)",
        }),
    );
    p.insert(
        KMS_KEY.into(),
        json!({
            "Type": "String",
            "Default": "",
            "AllowedPattern": "^(arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[a-zA-Z0-9-]+)?$",
            "Description": "ARN of a symmetric customer managed KMS key for the stack's log groups, tables and queues \
                            (its key policy must let CloudWatch Logs and EventBridge use it); empty: AWS owned \
                            and managed keys",
        }),
    );
    if used.state_machines {
        p.insert(
            LOG_LEVEL.into(),
            json!({
                "Type": "String",
                "Default": "ERROR",
                "AllowedValues": ["ALL", "ERROR", "FATAL", "OFF"],
                "Description": "What each state machine logs to its log group (execution data excluded)",
            }),
        );
    }
    p.insert(
        TRACING.into(),
        json!({
            "Type": "String",
            "Default": "Disabled",
            "AllowedValues": ["Enabled", "Disabled"],
            "Description": "X-Ray tracing of the functions and state machines",
        }),
    );
    p
}

/// The conditions the parameters above drive.
pub(crate) fn conditions() -> Map<String, Value> {
    let mut c = Map::new();
    c.insert(
        HAS_KMS_KEY.into(),
        json!({"Fn::Not": [{"Fn::Equals": [reference(KMS_KEY), ""]}]}),
    );
    c.insert(
        RESERVES.into(),
        json!({"Fn::Not": [{"Fn::Equals": [reference(RESERVED), "0"]}]}),
    );
    c.insert(
        TRACING_ENABLED.into(),
        json!({"Fn::Equals": [reference(TRACING), "Enabled"]}),
    );
    c
}

/// `{"Ref": "AWS::NoValue"}`: leaves a property out.
pub(crate) fn no_value() -> Value {
    reference("AWS::NoValue")
}

/// `value` when a KMS key is given, else nothing.
pub(crate) fn if_kms_key(value: Value) -> Value {
    json!({"Fn::If": [HAS_KMS_KEY, value, no_value()]})
}

/// `on` when tracing is enabled, else `off`.
pub(crate) fn if_tracing(on: Value, off: Value) -> Value {
    json!({"Fn::If": [TRACING_ENABLED, on, off]})
}

/// A function's `ReservedConcurrentExecutions`.
pub(crate) fn reserved_concurrency() -> Value {
    json!({"Fn::If": [RESERVES, reference(RESERVED), no_value()]})
}

/// A role's X-Ray statement: `actions` allowed while tracing is enabled, denied otherwise.
/// (Denying rather than leaving the statement out keeps `AWS::NoValue` out of the statement
/// list, which CloudFormation accepts but emulators do not, and says plainly that the role
/// sends no traces.)
pub(crate) fn xray_statement(why: &str, actions: &[&str]) -> Value {
    let statement = |effect: &str, why: &str| {
        json!({
            COMMENT: why,
            "Effect": effect,
            "Action": actions,
            "Resource": ["*"],
        })
    };
    if_tracing(
        statement("Allow", why),
        statement("Deny", "tracing is disabled (parameter Tracing): no X-Ray traces"),
    )
}

/// An `AWS::IAM::Policy` on `roles`, created only when a KMS key is given.
pub(crate) fn kms_key_policy(roles: Value, why: &str, actions: &[&str]) -> Value {
    json!({
        "Type": "AWS::IAM::Policy",
        "Condition": HAS_KMS_KEY,
        "Properties": {
            "PolicyName": "stack-kms-key",
            "Roles": roles,
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [{
                    COMMENT: why,
                    "Effect": "Allow",
                    "Action": actions,
                    "Resource": [reference(KMS_KEY)],
                }],
            },
        },
    })
}

/// Encrypts every log group, table and queue of `resources` with the stack's KMS key when one
/// is given (SQS-managed encryption otherwise; tables and log groups are always encrypted at
/// rest by AWS).
pub(crate) fn encrypt_at_rest(resources: &mut Map<String, Value>) {
    let key = || if_kms_key(reference(KMS_KEY));
    for resource in resources.values_mut() {
        let kind = resource["Type"].as_str().unwrap_or_default().to_owned();
        if !matches!(
            kind.as_str(),
            "AWS::Logs::LogGroup" | "AWS::DynamoDB::Table" | "AWS::SQS::Queue"
        ) {
            continue;
        }
        let Some(props) = properties(resource) else {
            continue;
        };
        match kind.as_str() {
            "AWS::Logs::LogGroup" => {
                props.entry("KmsKeyId").or_insert_with(key);
            }
            "AWS::DynamoDB::Table" => {
                props.entry("SSESpecification").or_insert_with(|| {
                    json!({
                        "SSEEnabled": {"Fn::If": [HAS_KMS_KEY, true, false]},
                        "SSEType": if_kms_key(json!("KMS")),
                        "KMSMasterKeyId": key(),
                    })
                });
            }
            "AWS::SQS::Queue"
                if !props.contains_key("KmsMasterKeyId") && !props.contains_key("SqsManagedSseEnabled") =>
            {
                props.insert("KmsMasterKeyId".into(), key());
                props.insert(
                    "SqsManagedSseEnabled".into(),
                    json!({"Fn::If": [HAS_KMS_KEY, no_value(), true]}),
                );
            }
            _ => {}
        }
    }
}

/// Gives every state machine of the stack whose role the stack creates a log group of its own,
/// logging at `StateMachineLogLevel` (without execution data), X-Ray tracing on request, and a
/// policy on its role for both; the machine waits for that policy, because Step Functions
/// checks the role's log permissions when it creates the machine. Returns the logical IDs of
/// all state machines (each gets alarms).
pub(crate) fn harden_state_machines(stack: &mut Stack) -> Vec<String> {
    let machines: Vec<(String, Option<String>)> = stack
        .resources
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::StepFunctions::StateMachine")
        .map(|(id, r)| (id.clone(), role_of(r, &stack.resources)))
        .collect();
    for (machine, role) in &machines {
        let Some(role) = role else {
            continue;
        };
        let (logs, policy) = (format!("{machine}LogGroup"), format!("{machine}LoggingPolicy"));
        stack.resources.insert(
            logs.clone(),
            json!({
                "Type": "AWS::Logs::LogGroup",
                "Properties": {
                    // The prefix Step Functions recommends: it keeps CloudWatch Logs' resource
                    // policy for log delivery from growing with every state machine.
                    "LogGroupName": {"Fn::Sub": format!("/aws/vendedlogs/states/${{AWS::StackName}}-{machine}")},
                    "RetentionInDays": LOG_RETENTION_DAYS,
                },
            }),
        );
        stack.resources.insert(
            policy.clone(),
            json!({
                "Type": "AWS::IAM::Policy",
                "Properties": {
                    "PolicyName": "state-machine-logs-and-traces",
                    "Roles": [reference(role)],
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                COMMENT: "deliver the state machine's logs to its log group: Step Functions \
                                          sets up the delivery with these actions, which take no resource",
                                "Effect": "Allow",
                                "Action": [
                                    "logs:CreateLogDelivery",
                                    "logs:GetLogDelivery",
                                    "logs:UpdateLogDelivery",
                                    "logs:DeleteLogDelivery",
                                    "logs:ListLogDeliveries",
                                    "logs:PutResourcePolicy",
                                    "logs:DescribeResourcePolicies",
                                    "logs:DescribeLogGroups",
                                ],
                                "Resource": ["*"],
                            },
                            xray_statement(
                                "send the state machine's X-Ray traces (the actions take no resource)",
                                &[
                                    "xray:PutTraceSegments",
                                    "xray:PutTelemetryRecords",
                                    "xray:GetSamplingRules",
                                    "xray:GetSamplingTargets",
                                ],
                            ),
                        ],
                    },
                },
            }),
        );
        let Some(resource) = stack.resources.get_mut(machine) else {
            continue;
        };
        if let Some(props) = properties(resource) {
            props.entry("LoggingConfiguration").or_insert_with(|| {
                json!({
                    "Level": reference(LOG_LEVEL),
                    "IncludeExecutionData": false,
                    "Destinations": [{"CloudWatchLogsLogGroup": {"LogGroupArn": get_att(&logs, "Arn")}}],
                })
            });
            props
                .entry("TracingConfiguration")
                .or_insert_with(|| json!({"Enabled": if_tracing(json!(true), json!(false))}));
        }
        depends_on(resource, &policy);
    }
    machines.into_iter().map(|(id, _)| id).collect()
}

/// The logical ID of the stack's role a state machine runs as, if its `RoleArn` names one.
fn role_of(machine: &Value, resources: &Map<String, Value>) -> Option<String> {
    let att = machine["Properties"]["RoleArn"]["Fn::GetAtt"].as_array()?;
    let id = att.first()?.as_str()?;
    (att.get(1)?.as_str()? == "Arn" && resources.get(id)?["Type"] == "AWS::IAM::Role").then(|| id.to_owned())
}

/// The `Properties` object of a resource, created if missing.
fn properties(resource: &mut Value) -> Option<&mut Map<String, Value>> {
    resource
        .as_object_mut()?
        .entry("Properties")
        .or_insert_with(|| json!({}))
        .as_object_mut()
}

/// Adds `id` to a resource's `DependsOn`.
fn depends_on(resource: &mut Value, id: &str) {
    let Some(r) = resource.as_object_mut() else {
        return;
    };
    let list = match r.remove("DependsOn") {
        Some(Value::String(one)) => vec![json!(one), json!(id)],
        Some(Value::Array(mut many)) => {
            many.push(json!(id));
            many
        }
        _ => vec![json!(id)],
    };
    r.insert("DependsOn".into(), Value::Array(list));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_a_stage_set_is_kept_and_a_missing_one_is_added() {
        let mut resources = Map::new();
        resources.insert(
            "Own".into(),
            json!({"Type": "AWS::SQS::Queue", "Properties": {"SqsManagedSseEnabled": false}}),
        );
        resources.insert("Bare".into(), json!({"Type": "AWS::DynamoDB::Table"}));
        resources.insert("Other".into(), json!({"Type": "AWS::SNS::Topic"}));
        encrypt_at_rest(&mut resources);
        assert_eq!(
            resources["Own"],
            json!({"Type": "AWS::SQS::Queue", "Properties": {"SqsManagedSseEnabled": false}})
        );
        assert_eq!(
            resources["Bare"]["Properties"]["SSESpecification"]["SSEType"],
            json!({"Fn::If": ["HasKmsKey", "KMS", {"Ref": "AWS::NoValue"}]})
        );
        assert_eq!(resources["Other"], json!({"Type": "AWS::SNS::Topic"}));
    }

    #[test]
    fn depends_on_grows_from_nothing_a_string_or_a_list() {
        let mut r = json!({"Type": "X"});
        depends_on(&mut r, "A");
        assert_eq!(r["DependsOn"], json!(["A"]));
        let mut r = json!({"Type": "X", "DependsOn": "A"});
        depends_on(&mut r, "B");
        assert_eq!(r["DependsOn"], json!(["A", "B"]));
    }
}
