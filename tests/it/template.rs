//! `cutover template` and `cutover package`: the generated stack deploys (moto server's
//! CloudFormation `CreateStack`) and holds what the pipeline file says, with least privilege.
//!
//! moto creates the table, rule (with its target's dead-letter queue and retry policy), the
//! dead-letter queue, state machine, roles (with their inline policies and the `AWS::IAM::Policy`
//! resources attached to them), functions, log groups and the rule's Lambda permission, and it
//! evaluates the template's conditions. It does not create `AWS::Lambda::EventInvokeConfig`,
//! `AWS::SQS::QueuePolicy`, `AWS::CloudWatch::Alarm` or `AWS::Logs::MetricFilter` resources
//! (the unit tests of `src/template/` check them, cfn-lint and checkov lint them), nor apply a
//! table's `TimeToLiveSpecification` and `SSESpecification` (checked in the template text
//! instead), the functions' `Architectures`, `LoggingConfig`, `TracingConfig` and reserved
//! concurrency, or a state machine's logging and tracing; it never runs the functions or the
//! state machine.

use std::io::Read;

use aws_sdk_cloudformation::types::{Capability, Parameter, StackStatus};
use aws_sdk_sqs::types::QueueAttributeName;
use cutover_core::{BuildContext, Loader};
use serde_json::Value;

use crate::{cutover, moto, repo};

const AWS_PIPELINES: &str = "pipelines/catsndogs-aws.toml";

fn template(args: &[&str]) -> std::process::Output {
    cutover()
        .arg("template")
        .args(args)
        .output()
        .expect("cutover runs")
}

#[test]
fn embedded_backends_cannot_be_templated_and_the_error_says_what_to_change() {
    let out = template(&["pipelines/catsndogs.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "no half-usable template is printed");
    let err = String::from_utf8(out.stderr).unwrap();
    for expected in [
        "pipelines/catsndogs.toml: pipeline \"ecs-events\", stage 3 (dedup): field \"store\":",
        "type = \"dynamodb\"",
        "stage 4 (start-state-machine): field \"engine\":",
        "type = \"step-functions\"",
        "pipeline \"traffic-shift\", stage 1 (traffic-shift): field \"router\":",
        "type = \"route53\"",
    ] {
        assert!(err.contains(expected), "{expected:?} not in:\n{err}");
    }
}

/// A stack created in moto from a generated template.
struct Deployed {
    cx: BuildContext,
    outputs: Vec<aws_sdk_cloudformation::types::Output>,
    resources: Vec<aws_sdk_cloudformation::types::StackResourceSummary>,
}

impl Deployed {
    /// Creates a stack from `body` with `parameters` (the code bucket is made here).
    async fn create(moto: &moto::Moto, body: &str, parameters: &[(&str, &str)]) -> Deployed {
        // The code the functions point at must exist for moto's CreateFunction.
        let bucket = moto::unique("cutover-code");
        assert_eq!(
            moto::raw_http(&moto.url, "PUT", &format!("/{bucket}"), &[], b"").0,
            200
        );
        let empty_zip = [b"PK\x05\x06".as_slice(), &[0u8; 18]].concat();
        assert_eq!(
            moto::raw_http(
                &moto.url,
                "PUT",
                &format!("/{bucket}/cutover.zip"),
                &[],
                &empty_zip
            )
            .0,
            200
        );
        let cx = BuildContext::new("unused").with_aws(moto.aws());
        let cfn = aws_sdk_cloudformation::Client::new(cx.aws_config().await);
        let stack = moto::unique("cutover");
        let parameter = |k: &str, v: &str| Parameter::builder().parameter_key(k).parameter_value(v).build();
        cfn.create_stack()
            .stack_name(&stack)
            .template_body(body)
            .set_parameters(Some(
                std::iter::once(parameter("CodeS3Bucket", &bucket))
                    .chain(parameters.iter().map(|(k, v)| parameter(k, v)))
                    .collect(),
            ))
            .capabilities(Capability::CapabilityIam)
            .send()
            .await
            .expect("moto creates the stack");
        let described = cfn.describe_stacks().stack_name(&stack).send().await.unwrap();
        let s = &described.stacks()[0];
        assert_eq!(s.stack_status(), Some(&StackStatus::CreateComplete), "{s:?}");
        let resources = cfn
            .list_stack_resources()
            .stack_name(&stack)
            .send()
            .await
            .unwrap();
        Deployed {
            outputs: s.outputs().to_vec(),
            resources: resources.stack_resource_summaries().to_vec(),
            cx,
        }
    }

    fn output(&self, key: &str) -> String {
        self.outputs
            .iter()
            .find(|o| o.output_key() == Some(key))
            .and_then(|o| o.output_value())
            .unwrap_or_else(|| panic!("no output {key}: {:?}", self.outputs))
            .to_owned()
    }

    fn physical(&self, logical: &str) -> String {
        self.resources
            .iter()
            .find(|r| r.logical_resource_id() == Some(logical))
            .and_then(|r| r.physical_resource_id())
            .unwrap_or_else(|| panic!("moto did not create {logical}"))
            .to_owned()
    }

    /// The inline policy `name` of the role `role` (its physical name).
    async fn policy(&self, role: &str, name: &str) -> Value {
        let p = aws_sdk_iam::Client::new(self.cx.aws_config().await)
            .get_role_policy()
            .role_name(role)
            .policy_name(name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("policy {name} of {role}: {e:?}"));
        let text = p.policy_document();
        serde_json::from_str::<Value>(&policy_json(text)).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    /// The dead-letter queue's attributes.
    async fn queue(&self) -> std::collections::HashMap<QueueAttributeName, String> {
        aws_sdk_sqs::Client::new(self.cx.aws_config().await)
            .get_queue_attributes()
            .queue_url(self.output("EcsEventsDeadLetterQueueUrl"))
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .unwrap()
            .attributes()
            .cloned()
            .unwrap_or_default()
    }
}

/// The statement of `policy` one of whose actions contains `action`.
fn statement<'a>(policy: &'a Value, action: &str) -> &'a Value {
    policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Action"].to_string().contains(action))
        .unwrap_or_else(|| panic!("no statement with {action} in {policy}"))
}

#[tokio::test]
async fn the_generated_stack_deploys_with_the_compiled_rule_table_state_machine_and_scoped_roles() {
    let moto = moto::shared();
    let out = template(&[AWS_PIPELINES, "--arch", "x86_64"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let body = String::from_utf8(out.stdout).unwrap();
    assert!(body.contains("TimeToLiveSpecification:\n        AttributeName: expires\n        Enabled: true"));
    assert!(body.contains("- x86_64"));
    // What moto does not create, by type (see the module comment): present in the template.
    for kind in [
        "AWS::Lambda::EventInvokeConfig",
        "AWS::SQS::QueuePolicy",
        "AWS::CloudWatch::Alarm",
        "AWS::Logs::MetricFilter",
    ] {
        assert!(body.contains(&format!("Type: {kind}\n")), "{kind}");
    }

    // cats and dogs share one function per pipeline and one state machine; each service's record
    // and zone are parameters, set on the functions as that service's values.
    for service in ["CATS", "DOGS"] {
        let pascal = format!("{}{}", &service[..1], service[1..].to_ascii_lowercase());
        assert!(
            body.contains(&format!(
                "CUTOVER_SERVICES__{service}__RECORD:\n            Ref: TrafficShift{pascal}Record"
            )),
            "{service}"
        );
    }
    assert_eq!(
        body.matches("Type: AWS::StepFunctions::StateMachine\n").count(),
        1
    );
    assert_eq!(body.matches("Type: AWS::Lambda::Function\n").count(), 3);

    let stack = Deployed::create(
        moto,
        &body,
        &[("TrafficShiftDogsHostedZoneId", "Z0DOGS0000000000000")],
    )
    .await;
    let config = stack.cx.aws_config().await;
    let output = |key: &str| stack.output(key);
    let physical = |logical: &str| stack.physical(logical);

    for logical in [
        "EcsEventsLogGroup",
        "EcsEventsRulePermission",
        "TrafficShiftFunction",
        "HealthCheckRole",
        "EcsEventsStartStateMachineStateMachineLogGroup",
        "EcsEventsStartStateMachineStateMachineLoggingPolicy",
    ] {
        physical(logical);
    }
    assert!(
        !stack
            .resources
            .iter()
            .any(|r| r.logical_resource_id() == Some("EcsEventsDeadLetterQueueKeyPolicy")),
        "no KMS key, no key policy"
    );

    // The dedup table: the store's key schema, on demand.
    let table = output("EcsEventsDedupTableName");
    assert_eq!(physical("EcsEventsDedupTable"), table);
    let ddb = aws_sdk_dynamodb::Client::new(config);
    let t = ddb.describe_table().table_name(&table).send().await.unwrap();
    let t = t.table().unwrap();
    assert_eq!(t.key_schema()[0].attribute_name(), "pk");
    assert_eq!(
        t.billing_mode_summary()
            .and_then(|b| b.billing_mode())
            .map(|b| b.as_str()),
        Some("PAY_PER_REQUEST")
    );

    // The rule: exactly the pattern the filter stage compiles to.
    cutover_stages::link();
    let file = Loader::new().load_file(repo(AWS_PIPELINES)).unwrap();
    let compiled = file
        .pipeline("ecs-events")
        .unwrap()
        .event_pattern()
        .unwrap()
        .unwrap();
    let events = aws_sdk_eventbridge::Client::new(config);
    let rule = events
        .describe_rule()
        .name(output("EcsEventsRuleName"))
        .send()
        .await
        .unwrap();
    let pattern: Value = serde_json::from_str(rule.event_pattern().unwrap()).unwrap();
    assert_eq!(pattern, compiled);
    let targets = events
        .list_targets_by_rule()
        .rule(rule.name().unwrap())
        .send()
        .await
        .unwrap();
    let ecs_function = output("EcsEventsFunctionArn");
    let target = &targets.targets()[0];
    assert_eq!(target.arn(), ecs_function);

    // Dead letters: what EventBridge cannot deliver within an hour goes to the stack's queue,
    // kept 14 days, encrypted (SQS-managed keys without a KMS key).
    let queue = stack.queue().await;
    let queue_arn = queue[&QueueAttributeName::QueueArn].clone();
    assert_eq!(queue[&QueueAttributeName::MessageRetentionPeriod], "1209600");
    assert_eq!(queue[&QueueAttributeName::SqsManagedSseEnabled], "true");
    assert_eq!(
        target.dead_letter_config().and_then(|d| d.arn()),
        Some(queue_arn.as_str())
    );
    let retry = target.retry_policy().expect("an explicit retry policy");
    assert_eq!(retry.maximum_event_age_in_seconds(), Some(3600));
    assert_eq!(retry.maximum_retry_attempts(), Some(185));

    // The state machine: the canary definition with the two Task functions' ARNs.
    let machine_arn = output("EcsEventsStartStateMachineStateMachineArn");
    let sfn = aws_sdk_sfn::Client::new(config);
    let machine = sfn
        .describe_state_machine()
        .state_machine_arn(&machine_arn)
        .send()
        .await
        .unwrap();
    let definition: Value = serde_json::from_str(machine.definition()).unwrap();
    assert_eq!(
        definition["States"]["Shift10"]["Resource"],
        output("TrafficShiftFunctionArn").as_str()
    );
    assert_eq!(
        definition["States"]["Check10"]["Resource"],
        output("HealthCheckFunctionArn").as_str()
    );
    assert_eq!(
        definition["States"]["Shift10"]["Parameters"]["execution.$"], "$$.Execution.Name",
        "the rest of the definition is untouched"
    );

    // The roles: each function's role allows only what its stages call, on those resources.
    let ecs = stack
        .policy(&physical("EcsEventsRole"), "cutover-ecs-events")
        .await;
    let table_arn = t.table_arn().unwrap();
    assert_eq!(
        statement(&ecs, "dynamodb:PutItem")["Resource"],
        serde_json::json!([table_arn])
    );
    let start = statement(&ecs, "states:StartExecution");
    assert_eq!(start["Resource"][0], machine_arn.as_str());
    let executions = start["Resource"][1].as_str().unwrap();
    assert!(
        executions.contains(":states:") && executions.contains(":execution:") && executions.ends_with(":*"),
        "{start}"
    );
    // The on-failure destination: this queue only. X-Ray: denied while tracing is disabled.
    assert_eq!(
        statement(&ecs, "sqs:SendMessage")["Resource"],
        serde_json::json!([queue_arn])
    );
    assert_eq!(statement(&ecs, "xray:PutTraceSegments")["Effect"], "Deny");
    let all_actions: Vec<String> = ecs["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["Action"].as_array().cloned().unwrap_or_default())
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    assert!(all_actions.iter().all(|a| !a.contains('*')), "{all_actions:?}");

    let shift = stack
        .policy(&physical("TrafficShiftRole"), "cutover-traffic-shift")
        .await;
    assert_eq!(
        statement(&shift, "route53:ChangeResourceRecordSets")["Resource"],
        serde_json::json!([
            "arn:aws:route53:::hostedzone/Z0123456789ABCDEFGHIJ",
            "arn:aws:route53:::hostedzone/Z0DOGS0000000000000"
        ]),
        "each service's zone parameter (cats': the default), and only those"
    );
    let health = stack
        .policy(&physical("HealthCheckRole"), "cutover-health-check")
        .await;
    assert_eq!(
        health["Statement"][1]["Action"],
        serde_json::json!(["elasticloadbalancing:DescribeTargetHealth"])
    );

    let machine_role = machine.role_arn().rsplit('/').next().unwrap().to_owned();
    let invoke = stack.policy(&machine_role, "invoke-task-functions").await;
    let mut invoked: Vec<String> = invoke["Statement"][0]["Resource"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    invoked.sort();
    let mut expected = vec![
        output("HealthCheckFunctionArn"),
        output("TrafficShiftFunctionArn"),
    ];
    expected.sort();
    assert_eq!(
        invoked, expected,
        "the state machine may invoke exactly its Task functions"
    );
    // Its logs go to a log group of its own, delivered with Step Functions' log actions.
    let logging = stack.policy(&machine_role, "state-machine-logs-and-traces").await;
    assert_eq!(
        statement(&logging, "logs:CreateLogDelivery")["Resource"],
        serde_json::json!(["*"])
    );
    let log_groups = log_group_names(&stack);
    assert!(
        log_groups.iter().any(|n| n.starts_with("/aws/vendedlogs/states/")
            && n.ends_with("-EcsEventsStartStateMachineStateMachine")),
        "{log_groups:?}"
    );
}

/// The names of the log groups the stack made, from its resources.
fn log_group_names(stack: &Deployed) -> Vec<String> {
    stack
        .resources
        .iter()
        .filter(|r| r.resource_type() == Some("AWS::Logs::LogGroup"))
        .filter_map(|r| r.physical_resource_id().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn with_a_kms_key_and_tracing_the_queue_is_encrypted_under_the_key_and_the_roles_may_use_them() {
    let moto = moto::shared();
    let key =
        moto::aws_json(moto, "kms", "TrentService.CreateKey", &serde_json::json!({}))["KeyMetadata"]["Arn"]
            .as_str()
            .unwrap()
            .to_owned();
    let out = template(&[AWS_PIPELINES]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let body = String::from_utf8(out.stdout).unwrap();
    let stack = Deployed::create(
        moto,
        &body,
        &[
            ("KmsKeyArn", &key),
            ("Tracing", "Enabled"),
            ("ReservedConcurrency", "0"),
            ("StateMachineLogLevel", "ALL"),
        ],
    )
    .await;
    assert_eq!(stack.queue().await[&QueueAttributeName::KmsMasterKeyId], key);
    let role = stack.physical("EcsEventsRole");
    let key_policy = stack.policy(&role, "stack-kms-key").await;
    assert_eq!(
        statement(&key_policy, "kms:GenerateDataKey")["Resource"],
        serde_json::json!([key])
    );
    let ecs = stack.policy(&role, "cutover-ecs-events").await;
    assert_eq!(statement(&ecs, "xray:PutTraceSegments")["Effect"], "Allow");
    let machine = stack.physical("EcsEventsStartStateMachineStateMachineRole");
    let logging = stack.policy(&machine, "state-machine-logs-and-traces").await;
    assert_eq!(statement(&logging, "xray:GetSamplingRules")["Effect"], "Allow");
}

/// A policy document as JSON text: IAM returns it URL-encoded; moto returns the policies of
/// roles it created from a template as a Python dict's repr (no quotes or `%` occur in ours).
fn policy_json(text: &str) -> String {
    if text.starts_with("{'") {
        return text
            .replace('\'', "\"")
            .replace("True", "true")
            .replace("False", "false")
            .replace("None", "null");
    }
    if !text.contains('%') {
        return text.to_owned();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn package_zips_the_binary_as_an_executable_bootstrap_with_the_pipeline_file() {
    let dir = tempfile::tempdir().unwrap();
    // An ELF header for aarch64 is all `package` looks at.
    let mut elf = vec![0u8; 64];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[18] = 0xb7;
    let binary = dir.path().join("bootstrap");
    std::fs::write(&binary, &elf).unwrap();
    let zip_path = dir.path().join("cutover.zip");
    let out = cutover()
        .args(["package", AWS_PIPELINES, "--binary"])
        .arg(&binary)
        .arg("--output")
        .arg(&zip_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--arch arm64"));

    let mut zip = zip::ZipArchive::new(std::fs::File::open(&zip_path).unwrap()).unwrap();
    let mut names: Vec<String> = zip.file_names().map(|n| n.unwrap().into_owned()).collect();
    names.sort();
    // canary.strategy.toml: the ecs-events pipeline loads it (the stack is made from it).
    assert_eq!(names, ["bootstrap", "canary.strategy.toml", "cutover.toml"]);
    let mode = |zip: &mut zip::ZipArchive<std::fs::File>, name: &str| {
        zip.by_name(name).unwrap().unix_mode().unwrap() & 0o777
    };
    assert_eq!(mode(&mut zip, "bootstrap"), 0o755);
    assert_eq!(mode(&mut zip, "cutover.toml"), 0o644);
    let mut toml = String::new();
    zip.by_name("cutover.toml")
        .unwrap()
        .read_to_string(&mut toml)
        .unwrap();
    assert_eq!(toml, std::fs::read_to_string(repo(AWS_PIPELINES)).unwrap());
    // What the function will find: the zip, unpacked, loads on its own.
    let unpacked = dir.path().join("task");
    zip.extract(&unpacked).unwrap();
    let out = cutover()
        .arg("validate")
        .arg(unpacked.join("cutover.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Files the pipelines name go beside cutover.toml, at the path the file gives them.
    let pipelines = dir.path().join("p.toml");
    std::fs::copy(repo(AWS_PIPELINES), &pipelines).unwrap();
    std::fs::copy(
        repo("pipelines/canary.strategy.toml"),
        dir.path().join("canary.strategy.toml"),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    std::fs::write(dir.path().join("certs/ca.pem"), "PEM").unwrap();
    let package = |include: &str| {
        cutover()
            .arg("package")
            .arg(&pipelines)
            .arg("--binary")
            .arg(&binary)
            .arg("--output")
            .arg(&zip_path)
            .args(["--include", include])
            .output()
            .unwrap()
    };
    let out = package("./certs/ca.pem");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&zip_path).unwrap()).unwrap();
    let mut pem = String::new();
    zip.by_name("certs/ca.pem")
        .unwrap()
        .read_to_string(&mut pem)
        .unwrap();
    assert_eq!(pem, "PEM");
    for outside in ["../ca.pem", "/etc/hosts"] {
        let out = package(outside);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("relative to the pipeline file's directory"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn the_ecs_native_hook_functions_deploy_with_their_table_and_the_role_ecs_assumes() {
    let moto = moto::shared();
    let out = template(&["pipelines/catsndogs-ecs-native.toml"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let body = String::from_utf8(out.stdout).unwrap();
    let stack = Deployed::create(moto, &body, &[]).await;
    // One table for every hook pipeline, created.
    let table = stack.physical("EcsHookTable");
    let described = aws_sdk_dynamodb::Client::new(stack.cx.aws_config().await)
        .describe_table()
        .table_name(&table)
        .send()
        .await
        .unwrap();
    assert_eq!(
        described
            .table()
            .and_then(|t| t.key_schema().first())
            .map(|k| k.attribute_name()),
        Some("pk")
    );
    // The role ECS assumes may invoke that function and nothing else.
    let invoke = stack.physical("TestTrafficEcsHookInvokeRole");
    let policy = stack.policy(&invoke, "cutover-test-traffic-ecs-hook").await;
    let allowed = policy["Statement"].as_array().unwrap();
    assert_eq!(allowed.len(), 1, "{policy}");
    assert_eq!(statement(&policy, "lambda:InvokeFunction")["Effect"], "Allow");
    let role = aws_sdk_iam::Client::new(stack.cx.aws_config().await)
        .get_role()
        .role_name(&invoke)
        .send()
        .await
        .unwrap();
    let trust = role
        .role()
        .map(|r| r.assume_role_policy_document().unwrap_or(""))
        .unwrap_or("");
    assert!(policy_json(trust).contains("ecs.amazonaws.com"), "{trust}");
    // The function's own role reads and writes the hook table.
    let function_role = stack.physical("TestTrafficRole");
    let own = stack.policy(&function_role, "cutover-test-traffic").await;
    assert!(
        statement(&own, "dynamodb:PutItem")
            .to_string()
            .contains("dynamodb"),
        "{own}"
    );
    // The output is the lifecycleHooks entry, ARNs resolved.
    let entry: Value = serde_json::from_str(&stack.output("TestTrafficEcsLifecycleHook")).unwrap();
    assert_eq!(
        entry["lifecycleStages"],
        serde_json::json!(["POST_TEST_TRAFFIC_SHIFT"])
    );
    assert!(
        entry["hookTargetArn"]
            .as_str()
            .unwrap()
            .starts_with("arn:aws:lambda:"),
        "{entry}"
    );
    assert!(
        entry["roleArn"].as_str().unwrap().starts_with("arn:aws:iam::"),
        "{entry}"
    );
    let production: Value = serde_json::from_str(&stack.output("ProductionTrafficEcsLifecycleHook")).unwrap();
    assert_eq!(
        production["lifecycleStages"],
        serde_json::json!(["PRODUCTION_TRAFFIC_SHIFT"])
    );
    let landed: Value = serde_json::from_str(&stack.output("TrafficLandedEcsLifecycleHook")).unwrap();
    assert_eq!(
        landed["lifecycleStages"],
        serde_json::json!(["POST_PRODUCTION_TRAFFIC_SHIFT"])
    );
}
