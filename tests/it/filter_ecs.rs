//! The filter's ECS tag source (`green.tag_source = { type = "ecs" }`, cargo feature `ecs`)
//! against moto: real tasks started with `RunTask` and tagged, looked up with `DescribeTasks`.

use serde_json::{Value, json};

use crate::cutover;
use crate::moto::{self, aws_json};

const ECS: &str = "AmazonEC2ContainerServiceV20141113";

fn ecs(moto: &moto::Moto, action: &str, body: Value) -> Value {
    aws_json(moto, "ecs", &format!("{ECS}.{action}"), &body)
}

/// Starts one Fargate task of `family` in `cluster` with `tags`; returns its ARN.
fn run_task(moto: &moto::Moto, cluster: &str, family: &str, tags: &[(&str, &str)]) -> String {
    let tags: Vec<Value> = tags.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
    let out = ecs(
        moto,
        "RunTask",
        json!({"cluster": cluster, "taskDefinition": family, "launchType": "FARGATE", "count": 1, "tags": tags}),
    );
    out["tasks"][0]["taskArn"].as_str().expect("task ARN").to_owned()
}

/// The fixture's Fargate RUNNING event, moved to `cluster_arn` and `task_arn`.
fn event(cluster_arn: &str, task_arn: &str) -> String {
    let mut event = crate::fixture("task-fargate-running.json");
    event["detail"]["clusterArn"] = json!(cluster_arn);
    event["detail"]["taskArn"] = json!(task_arn);
    event["resources"] = json!([task_arn]);
    event.to_string()
}

#[test]
fn green_tags_are_read_with_describe_tasks_only_for_events_that_pass_the_rest() {
    let moto = moto::shared();
    let cluster = moto::unique("tags");
    let cluster_arn = ecs(moto, "CreateCluster", json!({"clusterName": cluster}))["cluster"]["clusterArn"]
        .as_str()
        .unwrap()
        .to_owned();
    ecs(
        moto,
        "RegisterTaskDefinition",
        json!({"family": "cats", "containerDefinitions": [{"name": "cats", "image": "cats:v2", "memory": 512}]}),
    );
    let green = run_task(
        moto,
        &cluster,
        "cats",
        &[("deployment", "green"), ("team", "pets")],
    );
    let blue = run_task(moto, &cluster, "cats", &[("deployment", "blue")]);
    let untagged = run_task(moto, &cluster, "cats", &[]);

    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("tags.toml");
    std::fs::write(
        &pipeline,
        format!(
            r#"
[[pipelines.tags.stages]]
type = "filter"
cluster = "{cluster}"
green = {{ tags = {{ deployment = "green" }}, tag_source = {{ type = "ecs" }} }}
"#
        ),
    )
    .unwrap();
    let events = dir.path().join("events.jsonl");
    let lines = [
        event(&cluster_arn, &green),
        event(&cluster_arn, &blue),
        event(&cluster_arn, &untagged),
        // Another cluster: dropped by the pattern, so no DescribeTasks call is made for it
        // (moto would answer ClusterNotFoundException, failing the event).
        event("arn:aws:ecs:us-east-1:123456789012:cluster/elsewhere", &green),
    ];
    std::fs::write(&events, lines.join("\n")).unwrap();

    let out = cutover()
        .envs(moto.env())
        .args(["replay", "--json"])
        .arg(&pipeline)
        .arg(&events)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let outcomes: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v.get("outcome").is_some())
        .collect();
    assert_eq!(outcomes.len(), 4, "{outcomes:?}");
    assert_eq!(outcomes[0]["outcome"], "passed", "{}", outcomes[0]);
    assert_eq!(outcomes[1]["outcome"], "dropped", "{}", outcomes[1]);
    assert_eq!(
        outcomes[1]["reason"],
        r#"tag deployment is "blue", expected "green""#
    );
    assert_eq!(outcomes[2]["outcome"], "dropped", "{}", outcomes[2]);
    assert_eq!(
        outcomes[2]["reason"],
        r#"task has no tag deployment (expected deployment = "green")"#
    );
    assert_eq!(outcomes[3]["outcome"], "dropped", "{}", outcomes[3]);
    assert!(
        outcomes[3]["reason"].as_str().unwrap().contains("(cluster)"),
        "{}",
        outcomes[3]
    );
}

#[test]
fn a_cluster_ecs_does_not_know_fails_the_event_naming_the_call() {
    let moto = moto::shared();
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("tags.toml");
    // The tag source's own cluster overrides the event's: here one that does not exist.
    std::fs::write(
        &pipeline,
        r#"
[[pipelines.tags.stages]]
type = "filter"
green = { tags = { deployment = "green" }, tag_source = { type = "ecs", cluster = "no-such-cluster" } }
"#,
    )
    .unwrap();
    let events = dir.path().join("events.jsonl");
    let cluster_arn = "arn:aws:ecs:us-east-1:123456789012:cluster/x";
    std::fs::write(&events, event(cluster_arn, &format!("{cluster_arn}/0123"))).unwrap();
    let out = cutover()
        .envs(moto.env())
        .env("AWS_MAX_ATTEMPTS", "1")
        .args(["replay", "--json"])
        .arg(&pipeline)
        .arg(&events)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let outcome: Value = serde_json::from_str(text.lines().next().expect("one outcome")).unwrap();
    assert_eq!(outcome["outcome"], "failed", "{outcome}");
    assert!(
        outcome["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("ecs:DescribeTasks"),
        "{outcome}"
    );
}
