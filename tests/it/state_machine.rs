//! The start-state-machine stage against Step Functions in a real emulator (moto server with
//! state-machine execution on), and `cutover states` as a user runs it.

use std::sync::Arc;

use cutover_core::{BuildContext, Event, Outcome, Pipeline};
use cutover_stages::state_machine::{SfnEngine, StartStateMachineConfig};
use serde_json::json;

use crate::{cutover, moto};

#[tokio::test]
async fn starting_twice_with_one_name_and_input_makes_one_execution() {
    // Execution mode changes moto-wide settings and needs resets: a server of our own.
    let moto = moto::dedicated();
    assert_eq!(moto.control("/moto-api/reset", ""), 200);
    let status = moto.control(
        "/moto-api/config",
        r#"{"stepfunctions":{"execute_state_machine":true}}"#,
    );
    assert!((200..300).contains(&status), "moto config answered {status}");
    let cx = BuildContext::new("unused").with_aws(moto.aws_no_retries());
    let client = aws_sdk_sfn::Client::new(cx.aws_config().await);
    let definition = std::fs::read_to_string(crate::repo("pipelines/canary.asl.json")).unwrap();
    let machine = client
        .create_state_machine()
        .name("canary")
        .definition(definition)
        .role_arn("arn:aws:iam::123456789012:role/cutover-canary")
        .send()
        .await
        .expect("moto accepts the canary definition");
    let arn = machine.state_machine_arn().to_owned();

    let config: StartStateMachineConfig = toml::from_str(&format!(
        "engine = {{ type = \"step-functions\", state_machine_arn = \"{arn}\" }}"
    ))
    .unwrap();
    let stage = cutover_core::StageConfig::build(&config, &cx).await.unwrap();
    let pipeline = Pipeline::from_stages("p", vec![("start".into(), stage)]);
    let event = || {
        let mut e = Event::from_value(json!({
            "id": "evt-1",
            "detail": {"clusterArn": "arn:aws:ecs:us-east-1:1:cluster/c", "group": "service:cats-green",
                       "taskDefinitionArn": "arn:aws:ecs:us-east-1:1:task-definition/cats-green:2", "taskArn": "t1"}
        }));
        e.context_mut().insert(
            "dedup".into(),
            json!({"key": "c|service:cats-green|cats-green:2"}),
        );
        e
    };
    let first = pipeline.run(event()).await;
    let Outcome::Passed { context } = &first else {
        panic!("{first}")
    };
    let execution = context["execution"].as_str().unwrap().to_owned();
    assert!(
        execution.ends_with(":execution:canary:c-service-cats-green-cats-green-2"),
        "{execution}"
    );

    let second = pipeline.run(event()).await;
    // AWS answers a repeat of a running execution with its ARN; a finished one with
    // ExecutionAlreadyExists, which the stage, finding the same input, counts as success too.
    let Outcome::Passed { context } = &second else {
        panic!("{second}")
    };
    assert_eq!(context["execution"], execution.as_str());
    let list = client
        .list_executions()
        .state_machine_arn(&arn)
        .send()
        .await
        .unwrap();
    assert_eq!(list.executions().len(), 1, "one execution for one name");

    // Another input under the same name is reported as such (the stage decides whether that is
    // the deployment's own execution or a conflict).
    let sfn = Arc::new(SfnEngine::new(client.clone(), &arn));
    let other = cutover_stages::state_machine::StateMachineEngine::start(
        sfn.as_ref(),
        "c-service-cats-green-cats-green-2",
        &json!({"x": 1}),
    )
    .await;
    assert!(
        matches!(
            other,
            Ok(cutover_stages::state_machine::Started::Duplicate {
                same_input: false,
                ..
            })
        ),
        "{other:?}"
    );
    assert_eq!(moto.control("/moto-api/reset", ""), 200);
}

#[test]
fn states_cli_validates_graphs_and_runs_conformance() {
    let out = cutover()
        .args(["states", "validate", "pipelines/canary.asl.json"])
        .output()
        .unwrap();
    let said = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{said}");
    assert!(
        said.starts_with("pipelines/canary.asl.json: ok — 3 Task resources:")
            && said.contains("function:cutover-traffic-shift")
            && said.contains("function:cutover-health-check")
            && said.contains("arn:aws:states:::dynamodb:getItem"),
        "{said}"
    );
    let out = cutover()
        .args(["states", "graph", "pipelines/canary.asl.json"])
        .output()
        .unwrap();
    let graph = String::from_utf8(out.stdout).unwrap();
    assert!(
        graph.starts_with("stateDiagram-v2") && graph.contains("Rollback"),
        "{graph}"
    );
    let out = cutover()
        .args(["states", "test", "conformance/asl-executions.jsonl"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    assert_eq!(text.lines().last(), Some("481 passed, 0 failed, 0 skipped"));
}

#[test]
fn states_validate_names_the_state_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let def = dir.path().join("bad.json");
    std::fs::write(
        &def,
        r#"{"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "Nowhere"}, "B": {"Type": "Succeed"}}}"#,
    )
    .unwrap();
    let out = cutover()
        .arg("states")
        .arg("validate")
        .arg(&def)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("States.A.Next: 'Next' names 'Nowhere', which is not a state"),
        "{err}"
    );
    std::fs::write(
        &def,
        r#"{"StartAt": "A", "States": {"A": {"Type": "Succeed"}, "B": {"Type": "Succeed"}}}"#,
    )
    .unwrap();
    let out = cutover()
        .arg("states")
        .arg("validate")
        .arg(&def)
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("States.B") && err.contains("unreachable"), "{err}");
}

#[test]
fn states_run_executes_with_inline_resources_on_virtual_time() {
    let dir = tempfile::tempdir().unwrap();
    let def = dir.path().join("m.json");
    std::fs::write(
        &def,
        r#"{"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 3600, "Next": "T"},
            "T": {"Type": "Task", "Resource": "arn:x:notify", "End": true}}}"#,
    )
    .unwrap();
    let res = dir.path().join("r.toml");
    std::fs::write(
        &res,
        "[resources]\n\"arn:x:notify\" = { type = \"notify\", file = \"/dev/null\" }\n",
    )
    .unwrap();
    let out = cutover()
        .arg("states")
        .arg("run")
        .arg(&def)
        .args(["--input", "{\"a\": 1}", "--virtual-time", "--resources"])
        .arg(&res)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The history (one JSON line an event, then the output): the hour passed on virtual time
    // (the Task ran at the Wait's deadline), and the inline `notify` resource served the Task.
    let text = String::from_utf8(out.stdout).unwrap();
    let events: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let of = |kind: &str| {
        events
            .iter()
            .find(|e| e["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind}: {text}"))
    };
    assert_eq!(of("WaitStarted")["until"], "2024-01-01T01:00:00.000Z", "{text}");
    assert_eq!(
        of("TaskSucceeded")["timestamp"],
        "2024-01-01T01:00:00.000Z",
        "{text}"
    );
    assert_eq!(of("TaskSucceeded")["resource"], "arn:x:notify");
    assert_eq!(of("ExecutionSucceeded")["type"], "ExecutionSucceeded");
}

#[test]
fn strategy_render_prints_the_shipped_canary_and_names_bad_steps() {
    let out = cutover()
        .args(["strategy", "render", "pipelines/canary.strategy.toml"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shipped = std::fs::read_to_string(crate::repo("pipelines/canary.asl.json")).unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), shipped);

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[strategy]\nsteps = [{ set_weight = 50 }, { set_weight = 10 }, { set_weight = 100 }]\n",
    )
    .unwrap();
    let out = cutover().args(["strategy", "render"]).arg(&bad).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("strategy.steps") && said.contains("set_weight 10 after 50"),
        "{said}"
    );

    // `cutover states graph` and `validate` read a strategy file as the machine it compiles to.
    let out = cutover()
        .args(["states", "graph", "pipelines/canary.strategy.toml"])
        .output()
        .unwrap();
    let graph = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && graph.contains("Shift50 (Task)"),
        "{graph}"
    );
    let out = cutover().args(["states", "validate"]).arg(&bad).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("set_weight 10 after 50"));
}
