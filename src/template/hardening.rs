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
//! CloudFormation type ([`encrypt_at_rest`], [`state_machines`](super::state_machines)), never
//! by stage name, so a plugin's table or state machine gets the same treatment as a built-in
//! one. A value a stage set itself is kept.

use cutover_core::Statement;
use serde_json::{Map, Value, json};

use super::reference;
use super::role::statement;

/// The KMS key parameter.
pub(crate) const KMS_KEY: &str = "KmsKeyArn";
const HAS_KMS_KEY: &str = "HasKmsKey";
const RESERVED: &str = "ReservedConcurrency";
const RESERVES: &str = "ReservesConcurrency";
const TRACING: &str = "Tracing";
const TRACING_ENABLED: &str = "TracingEnabled";
/// The state machines' log level parameter.
pub(crate) const LOG_LEVEL: &str = "StateMachineLogLevel";

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

/// The stack's key when one is given (a log group's `KmsKeyId`, a queue's `KmsMasterKeyId`).
pub(crate) fn kms_key() -> Value {
    if_kms_key(reference(KMS_KEY))
}

/// A queue's encryption: under the stack's key when one is given, else SQS-managed.
pub(crate) fn queue_encryption() -> [(&'static str, Value); 2] {
    [
        ("KmsMasterKeyId", kms_key()),
        (
            "SqsManagedSseEnabled",
            json!({"Fn::If": [HAS_KMS_KEY, no_value(), true]}),
        ),
    ]
}

/// A table's `SSESpecification`: under the stack's key when one is given (tables are always
/// encrypted at rest by AWS).
fn table_encryption() -> Value {
    json!({
        "SSEEnabled": {"Fn::If": [HAS_KMS_KEY, true, false]},
        "SSEType": if_kms_key(json!("KMS")),
        "KMSMasterKeyId": kms_key(),
    })
}

/// An `AWS::IAM::Policy` on `roles`, created only when a KMS key is given.
pub(crate) fn kms_key_policy(roles: Value, why: &str, actions: &[&str]) -> Value {
    let allow = Statement::new(actions.iter().copied(), [reference(KMS_KEY)], why);
    json!({
        "Type": "AWS::IAM::Policy",
        "Condition": HAS_KMS_KEY,
        "Properties": {
            "PolicyName": "stack-kms-key",
            "Roles": roles,
            "PolicyDocument": {"Version": "2012-10-17", "Statement": [statement("Allow", &allow)]},
        },
    })
}

/// Encrypts every log group, table and queue of `resources` (what the stages added) with the
/// stack's KMS key when one is given (SQS-managed encryption otherwise; tables and log groups
/// are always encrypted at rest by AWS), keeping a setting a stage made itself.
pub(crate) fn encrypt_at_rest(resources: &mut Map<String, Value>) {
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
                props.entry("KmsKeyId").or_insert_with(kms_key);
            }
            "AWS::DynamoDB::Table" => {
                props.entry("SSESpecification").or_insert_with(table_encryption);
            }
            "AWS::SQS::Queue"
                if !props.contains_key("KmsMasterKeyId") && !props.contains_key("SqsManagedSseEnabled") =>
            {
                for (key, value) in queue_encryption() {
                    props.insert(key.into(), value);
                }
            }
            _ => {}
        }
    }
}

/// The `Properties` object of a resource, created if missing.
pub(crate) fn properties(resource: &mut Value) -> Option<&mut Map<String, Value>> {
    resource
        .as_object_mut()?
        .entry("Properties")
        .or_insert_with(|| json!({}))
        .as_object_mut()
}

#[cfg(test)]
mod tests {
    use super::super::Format;
    use super::super::testing::{FILTERED, template};
    use super::*;

    #[test]
    fn a_file_without_state_machines_has_no_state_machine_parameters() {
        let t = template(FILTERED, Format::Cloudformation);
        assert!(t["Parameters"].get("StateMachineLogLevel").is_none());
        assert!(t["Conditions"].get("HasKmsKey").is_some());
    }

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
}
