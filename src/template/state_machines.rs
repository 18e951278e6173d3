//! Logging and tracing for every state machine a stage adds, found by CloudFormation type
//! (`AWS::StepFunctions::StateMachine`), never by stage name.
//!
//! A machine whose role the stack creates gets a log group of its own, logging at the
//! `StateMachineLogLevel` parameter (without execution data), X-Ray tracing on request
//! (`Tracing`), and a policy on its role for both; the machine waits for that policy, because
//! Step Functions checks the role's log permissions when it creates the machine. A logging or
//! tracing configuration the stage wrote itself is kept.

use cutover_core::Statement;
use serde_json::{Map, Value, json};

use super::hardening::{self, LOG_LEVEL, if_tracing, properties};
use super::role::{Grant, statement};
use super::{get_att, reference};

/// How long a state machine's logs are kept.
const LOG_RETENTION_DAYS: u32 = 30;

/// Hardens every state machine of `resources` whose role the stack creates (adding its log
/// group and policy to `resources`); returns the logical IDs of all state machines (each gets
/// alarms).
pub(crate) fn harden(resources: &mut Map<String, Value>) -> Vec<String> {
    let machines: Vec<(String, Option<String>)> = resources
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::StepFunctions::StateMachine")
        .map(|(id, r)| (id.clone(), role_of(r, resources)))
        .collect();
    for (machine, role) in &machines {
        let Some(role) = role else {
            continue;
        };
        let (logs, policy) = (format!("{machine}LogGroup"), format!("{machine}LoggingPolicy"));
        resources.insert(logs.clone(), log_group(machine));
        resources.insert(policy.clone(), logging_policy(role));
        let Some(resource) = resources.get_mut(machine) else {
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

/// The log group of `machine`, encrypted with the stack's key when one is given.
fn log_group(machine: &str) -> Value {
    json!({
        "Type": "AWS::Logs::LogGroup",
        "Properties": {
            // The prefix Step Functions recommends: it keeps CloudWatch Logs' resource
            // policy for log delivery from growing with every state machine.
            "LogGroupName": {"Fn::Sub": format!("/aws/vendedlogs/states/${{AWS::StackName}}-{machine}")},
            "RetentionInDays": LOG_RETENTION_DAYS,
            "KmsKeyId": hardening::kms_key(),
        },
    })
}

/// The policy on the machine's `role` for its log delivery and traces.
fn logging_policy(role: &str) -> Value {
    let deliver = Statement::new(
        [
            "logs:CreateLogDelivery",
            "logs:GetLogDelivery",
            "logs:UpdateLogDelivery",
            "logs:DeleteLogDelivery",
            "logs:ListLogDeliveries",
            "logs:PutResourcePolicy",
            "logs:DescribeResourcePolicies",
            "logs:DescribeLogGroups",
        ],
        [json!("*")],
        "deliver the state machine's logs to its log group: Step Functions \
         sets up the delivery with these actions, which take no resource",
    );
    let trace = Grant::WhileTracing(Statement::new(
        [
            "xray:PutTraceSegments",
            "xray:PutTelemetryRecords",
            "xray:GetSamplingRules",
            "xray:GetSamplingTargets",
        ],
        [json!("*")],
        "send the state machine's X-Ray traces (the actions take no resource)",
    ));
    json!({
        "Type": "AWS::IAM::Policy",
        "Properties": {
            "PolicyName": "state-machine-logs-and-traces",
            "Roles": [reference(role)],
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [statement("Allow", &deliver), trace.render()],
            },
        },
    })
}

/// The logical ID of the stack's role a state machine runs as, if its `RoleArn` names one.
fn role_of(machine: &Value, resources: &Map<String, Value>) -> Option<String> {
    let att = machine["Properties"]["RoleArn"]["Fn::GetAtt"].as_array()?;
    let id = att.first()?.as_str()?;
    (att.get(1)?.as_str()? == "Arn" && resources.get(id)?["Type"] == "AWS::IAM::Role").then(|| id.to_owned())
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
    use super::super::Format;
    use super::super::testing::template;
    use super::*;

    #[test]
    fn state_machines_log_at_error_and_trace_on_request_with_their_own_permissions() {
        let t = template(
            "[pipelines.e]\n[[pipelines.e.stages]]\ntype = \"start-state-machine\"\n\
             engine = { type = \"step-functions\", definition = \"canary.asl.json\", resources = { \
             \"arn:aws:lambda:us-east-1:111122223333:function:cutover-traffic-shift\" = \"e\", \
             \"arn:aws:lambda:us-east-1:111122223333:function:cutover-health-check\" = \"e\" } }\n",
            Format::Cloudformation,
        );
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
    fn depends_on_grows_from_nothing_a_string_or_a_list() {
        let mut r = json!({"Type": "X"});
        depends_on(&mut r, "A");
        assert_eq!(r["DependsOn"], json!(["A"]));
        let mut r = json!({"Type": "X", "DependsOn": "A"});
        depends_on(&mut r, "B");
        assert_eq!(r["DependsOn"], json!(["A", "B"]));
    }
}
