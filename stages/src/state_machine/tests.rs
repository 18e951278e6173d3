//! The start-state-machine stage on the embedded engine, running `pipelines/canary.asl.json`
//! on virtual time with test Task handlers (the Step Functions engine: tests/it/state_machine.rs).

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use cutover_asl::Definition;
use cutover_core::{Clock, Loader, ManualClock, Pipeline};

use super::*;

/// Weights set by the test `shift` handler, by test tag.
static WEIGHTS: Mutex<Vec<(String, i64)>> = Mutex::new(Vec::new());

fn weights(tag: &str) -> Vec<i64> {
    WEIGHTS
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| t == tag)
        .map(|(_, w)| *w)
        .collect()
}

#[derive(Debug, Serialize, Deserialize)]
struct TestShift {
    tag: String,
}

#[derive(Debug)]
struct Shift(String);

#[typetag::serde(name = "test-shift")]
impl StageConfig for TestShift {
    fn build<'a>(&'a self, _cx: &'a BuildContext) -> BoxFuture<'a, Result<Arc<dyn Stage>, BuildError>> {
        Box::pin(async move { Ok(Arc::new(Shift(self.tag.clone())) as Arc<dyn Stage>) })
    }
}

impl Stage for Shift {
    fn process<'a>(&'a self, mut event: Event, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let w = event
                .json()
                .ok()
                .and_then(|v| v.get("weight"))
                .and_then(Value::as_i64)
                .unwrap_or(-1);
            WEIGHTS.lock().unwrap().push((self.0.clone(), w));
            event.context_mut().insert("blue".into(), json!(100 - w));
            event.context_mut().insert("green".into(), json!(w));
            next.run(event).await
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct TestCheck {
    #[serde(default)]
    unhealthy_at: Option<i64>,
}

#[derive(Debug)]
struct Check(Option<i64>);

#[typetag::serde(name = "test-check")]
impl StageConfig for TestCheck {
    fn build<'a>(&'a self, _cx: &'a BuildContext) -> BoxFuture<'a, Result<Arc<dyn Stage>, BuildError>> {
        Box::pin(async move { Ok(Arc::new(Check(self.unhealthy_at)) as Arc<dyn Stage>) })
    }
}

impl Stage for Check {
    fn process<'a>(&'a self, mut event: Event, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let w = event
                .json()
                .ok()
                .and_then(|v| v.get("weight"))
                .and_then(Value::as_i64);
            let sick = w.is_some() && w == self.0;
            let state = if sick { "unhealthy" } else { "healthy" };
            event.context_mut().insert("State".into(), json!(state));
            if sick {
                event.context_mut().insert(
                    "reason".into(),
                    json!(format!("green returned 500 at {}%", w.unwrap_or(0))),
                );
            }
            next.run(event).await
        })
    }
}

const TS: &str = "arn:aws:lambda:us-east-1:111122223333:function:cutover-traffic-shift";
const HC: &str = "arn:aws:lambda:us-east-1:111122223333:function:cutover-health-check";

fn pipeline_file(tag: &str, unhealthy_at: Option<i64>, wait: bool) -> String {
    let check = match unhealthy_at {
        Some(w) => format!("type = \"test-check\"\nunhealthy_at = {w}"),
        None => "type = \"test-check\"".into(),
    };
    format!(
        r#"
[pipelines.events]
[[pipelines.events.stages]]
type = "start-state-machine"
[pipelines.events.stages.engine]
type = "local"
definition = "canary.asl.json"
wait = {wait}
[pipelines.events.stages.engine.resources]
"{TS}" = "shift"
"{HC}" = {{ {check_inline} }}

[pipelines.shift]
[[pipelines.shift.stages]]
type = "test-shift"
tag = "{tag}"
"#,
        check_inline = check.replace('\n', ", ")
    )
}

struct Run {
    pipeline: Pipeline,
    cx: BuildContext,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

async fn setup(text: &str, dir: Option<tempfile::TempDir>) -> Run {
    let dir = dir.unwrap_or_else(|| tempfile::tempdir().unwrap());
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines");
    let file = Loader::new()
        .load_str("test.toml", text, &base)
        .unwrap_or_else(|e| panic!("{e}"));
    let clock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ));
    let cx = file
        .build_context()
        .with_data_dir(dir.path())
        .with_clock(clock.clone());
    let pipeline = file.build("events", &cx).await.unwrap_or_else(|e| panic!("{e}"));
    Run {
        pipeline,
        cx,
        clock,
        _dir: dir,
    }
}

fn event(id: &str) -> Event {
    Event::from_value(
        json!({"id": id, "detail": {"clusterArn": "c", "group": "service:cats-green", "taskDefinitionArn": "td:2", "taskArn": "t1"}}),
    )
}

#[tokio::test]
async fn healthy_canary_reaches_100_percent_on_virtual_time() {
    let run = setup(&pipeline_file("healthy", None, true), None).await;
    let out = run.pipeline.run(event("e1")).await;
    let Outcome::Passed { context } = &out else {
        panic!("{out}")
    };
    assert_eq!(context["execution_status"], "SUCCEEDED", "{context:?}");
    assert!(
        context["execution"]
            .as_str()
            .unwrap()
            .ends_with(":execution:canary:e1")
    );
    assert_eq!(weights("healthy"), [10, 50, 100]);
    let waited = run
        .clock
        .now()
        .duration_since(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000))
        .unwrap();
    assert_eq!(
        waited,
        Duration::from_secs(180),
        "three 60 s bake times, all virtual"
    );
}

#[tokio::test]
async fn unhealthy_at_50_rolls_back_to_0_and_fails_with_the_cause() {
    let run = setup(&pipeline_file("sick", Some(50), true), None).await;
    let out = run.pipeline.run(event("e1")).await;
    let Outcome::Passed { context } = &out else {
        panic!("{out}")
    };
    assert_eq!(context["execution_status"], "FAILED");
    assert_eq!(weights("sick"), [10, 50, 0]);
    let records = cutover_asl::FileStore::new(run.cx.data_path("executions"))
        .unwrap()
        .list()
        .unwrap();
    let record = serde_json::to_value(&records[0]).unwrap();
    assert_eq!(record["error"], "Canary.Unhealthy");
    assert_eq!(record["cause"], "green returned 500 at 50%");
}

#[tokio::test]
async fn same_name_twice_is_a_duplicate_and_background_runs_are_drained() {
    let run = setup(&pipeline_file("dup", None, false), None).await;
    let first = run.pipeline.run(event("e1")).await;
    assert!(first.is_passed(), "{first}");
    run.cx.background().drain().await;
    assert_eq!(weights("dup"), [10, 50, 100]);
    let again = run.pipeline.run(event("e1")).await;
    // The same name and input is this deployment's execution (an earlier attempt whose answer
    // was lost): success, with its ARN, and nothing started again.
    let (Outcome::Passed { context: a }, Outcome::Passed { context: b }) = (&first, &again) else {
        panic!("{again}")
    };
    assert_eq!(a["execution"], b["execution"]);
    assert_eq!(b["execution_existed"], true);
    assert_eq!(
        cutover_asl::FileStore::new(run.cx.data_path("executions"))
            .unwrap()
            .list()
            .unwrap()
            .len(),
        1
    );
    let mut other = event("e1");
    other.context_mut().insert("x".into(), json!(1));
    let changed = Event::from_value(
        json!({"id": "e1", "detail": {"clusterArn": "other", "group": "g", "taskDefinitionArn": "td:3", "taskArn": "t"}}),
    );
    let out = run.pipeline.run(changed).await;
    assert!(
        matches!(&out, Outcome::Failed { error, .. } if error.kind.as_deref() == Some("ExecutionAlreadyExists")),
        "{out}"
    );
}

/// Two starts of one name at once (the same event delivered twice, with no `dedup` before the
/// stage): the second finds the name held by the first, which answered before its background
/// run saved the execution; it waits for that save and answers with the existing execution,
/// as Step Functions does, rather than fail.
#[tokio::test]
async fn the_same_name_started_twice_at_once_is_one_execution_and_two_successes() {
    let run = setup(&pipeline_file("twice", None, false), None).await;
    let (first, second) = tokio::join!(run.pipeline.run(event("e1")), run.pipeline.run(event("e1")));
    let (Outcome::Passed { context: a }, Outcome::Passed { context: b }) = (&first, &second) else {
        panic!("{first} / {second}")
    };
    assert_eq!(a["execution"], b["execution"]);
    assert_eq!(b["execution_existed"], true, "{b:?}");
    run.cx.background().drain().await;
    assert_eq!(weights("twice"), [10, 50, 100], "one rollout");
}

#[tokio::test]
async fn a_restarted_process_resumes_where_the_execution_stopped() {
    // First process: runs Shift10 and stops during the first bake, as if killed.
    let dir = tempfile::tempdir().unwrap();
    {
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/canary.asl.json");
        let def = Arc::new(
            Definition::parse(&std::fs::read_to_string(base).unwrap())
                .unwrap()
                .with_name("canary"),
        );
        #[derive(Debug)]
        struct StopAtCheck;
        impl cutover_asl::TaskHandler for StopAtCheck {
            fn invoke<'a>(
                &'a self,
                resource: &'a str,
                input: Value,
                _cx: cutover_asl::TaskContext<'a>,
            ) -> std::pin::Pin<
                Box<dyn std::future::Future<Output = Result<Value, cutover_asl::TaskFailure>> + Send + 'a>,
            > {
                Box::pin(async move {
                    if resource == HC {
                        return Err(cutover_asl::TaskFailure::interrupt("process killed"));
                    }
                    let w = input["weight"].as_i64().unwrap();
                    WEIGHTS.lock().unwrap().push(("resume".into(), w));
                    Ok(json!({"blue": 100 - w, "green": w}))
                })
            }
        }
        let store = Arc::new(cutover_asl::FileStore::new(dir.path().join("executions")).unwrap());
        let engine = cutover_asl::Engine::new(
            Arc::new(StopAtCheck),
            Arc::new(cutover_asl::VirtualClock::new()),
            Some(store),
        );
        let stopped = engine.start(def, "e1", json!({"event_id": "e1"})).await;
        assert!(stopped.is_err(), "the first process stops mid-execution");
    }
    assert_eq!(weights("resume"), [10]);
    // Second process: building the pipeline resumes it from Check10 (Shift10 is not repeated).
    let text = pipeline_file("resume", None, false);
    let run = setup(&text, Some(dir)).await;
    run.cx.background().drain().await;
    assert_eq!(weights("resume"), [10, 50, 100]);
}

#[test]
fn validation_names_unmapped_resources_and_unknown_pipelines() {
    let text = format!(
        "[pipelines.events]\n[[pipelines.events.stages]]\ntype = \"start-state-machine\"\n\
         engine = {{ type = \"local\", definition = \"canary.asl.json\", resources = {{ \"{TS}\" = \"nope\" }} }}\n"
    );
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines");
    let err = Loader::new()
        .load_str("bad.toml", &text, &base)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("Task resource \"{HC}\" is not mapped")),
        "{err}"
    );
    assert!(err.contains("no pipeline \"nope\" in this file"), "{err}");
    let text = "[pipelines.e]\n[[pipelines.e.stages]]\ntype = \"start-state-machine\"\nengine = { type = \"step-functions\", state_machine_arn = \"canary\" }\n";
    let err = Loader::new()
        .load_str("bad.toml", text, &base)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("field \"engine.state_machine_arn\": \"canary\" is not a state machine ARN"),
        "{err}"
    );
}

#[test]
fn execution_names_are_valid_and_deterministic() {
    assert_eq!(
        execution_name("service:cats-green|td/cats-green:2"),
        "service-cats-green-td-cats-green-2"
    );
    let long = format!(
        "arn:aws:ecs:us-west-2:111122223333:cluster/catsndogsECScluster|service:cats-green|{}",
        "x".repeat(80)
    );
    let a = execution_name(&long);
    assert!(a.len() <= 80 && a == execution_name(&long), "{a}");
    assert!(
        a.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    );
    assert_ne!(a, execution_name(&format!("{long}y")));
}

#[test]
fn config_round_trips_through_toml() {
    let text = format!(
        "input = {{ task = \"{{detail.taskArn}}\" }}\nname = \"{{id}}\"\n\
         engine = {{ type = \"local\", definition = \"canary.asl.json\", resources = {{ \"{TS}\" = \"shift\", \"{HC}\" = {{ type = \"test-check\" }} }} }}\n"
    );
    let cfg: StartStateMachineConfig = toml::from_str(&text).unwrap();
    let again: StartStateMachineConfig = toml::from_str(&toml::to_string(&cfg).unwrap()).unwrap();
    assert_eq!(again.input.source(), cfg.input.source());
    let EngineConfig::Local { resources, .. } = &again.engine else {
        panic!()
    };
    assert!(matches!(resources.get(TS), Some(Resource::Pipeline(p)) if p == "shift"));
    assert!(matches!(resources.get(HC), Some(Resource::Stage(_))));
}

#[tokio::test]
async fn finished_executions_are_removed_after_their_retention_and_running_ones_kept() {
    let run = setup(&pipeline_file("retain", None, true), None).await;
    for id in ["e1", "e2"] {
        let out = run.pipeline.run(event(id)).await;
        assert!(out.is_passed(), "{out}");
    }
    let dir = run.cx.data_path("executions");
    let store = Arc::new(cutover_asl::FileStore::new(&dir).unwrap());
    // A rollout still running is kept whatever its age.
    let mut running = store.list().unwrap().remove(0);
    running.status = cutover_asl::ExecutionStatus::Running;
    running.execution_arn = running.execution_arn.replace(":e1", ":e3");
    running.name = "e3".into();
    cutover_asl::ExecutionStore::save(store.as_ref(), &running).unwrap();
    let definition = Arc::new(
        Definition::parse(
            &std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/canary.asl.json"),
            )
            .unwrap(),
        )
        .unwrap()
        .with_name("canary"),
    );
    let engine = |keep: Option<Duration>| {
        LocalEngine::new(
            cutover_asl::Engine::new(
                Arc::new(PipelineTasks::default()),
                Arc::new(CoreClock(run.cx.clock())),
                Some(store.clone() as Arc<dyn cutover_asl::ExecutionStore>),
            ),
            definition.clone(),
            store.clone(),
            run.cx.background().clone(),
            false,
        )
        .with_retention(keep)
    };
    assert_eq!(engine(None).prune().unwrap(), 0, "no retention: kept for ever");
    assert_eq!(
        engine(Some(Duration::from_secs(14 * 24 * 3600))).prune().unwrap(),
        0,
        "ended just now: within 14 days"
    );
    assert_eq!(engine(Some(Duration::ZERO)).prune().unwrap(), 2);
    let left: Vec<String> = store
        .headers()
        .unwrap()
        .into_iter()
        .map(|h| h.record.name)
        .collect();
    assert_eq!(left, ["e3"]);
    // Record, history and lease files are gone, not just the record.
    let files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.iter().all(|f| f.contains("canary_e3-")), "{files:?}");
}

#[tokio::test]
async fn the_retention_is_configured_on_the_engine_and_applied_when_built() {
    let first = setup(&pipeline_file("retain-config", None, true), None).await;
    assert!(first.pipeline.run(event("e1")).await.is_passed());
    let dir = first._dir;
    let count = |dir: &std::path::Path| {
        cutover_asl::FileStore::new(dir.join("executions"))
            .unwrap()
            .headers()
            .unwrap()
            .len()
    };
    assert_eq!(count(dir.path()), 1);
    let kept = pipeline_file("retain-config", None, true);
    let run = setup(&kept, Some(dir)).await;
    assert_eq!(count(run._dir.path()), 1, "the default keeps it 14 days");
    let text = kept.replace("wait = true", "wait = true\nkeep_finished = \"0s\"");
    let run = setup(&text, Some(run._dir)).await;
    assert_eq!(
        count(run._dir.path()),
        0,
        "keep_finished = \"0s\": removed at build"
    );
}

#[tokio::test]
async fn an_event_arriving_after_a_later_deployments_starts_nothing() {
    let run = setup(&pipeline_file("late", None, false), None).await;
    let deployed = |id: &str, revision: u32, time: &str| {
        Event::from_value(json!({
            "id": id,
            "time": time,
            "detail": {"clusterArn": "c", "group": "service:cats-green", "taskDefinitionArn": format!("td:{revision}"), "taskArn": id}
        }))
    };
    let newer = run.pipeline.run(deployed("e3", 3, "2027-01-15T10:00:00Z")).await;
    assert!(newer.is_passed(), "{newer}");
    let late = run.pipeline.run(deployed("e2", 2, "2027-01-15T09:59:00Z")).await;
    let Outcome::Dropped { reason, .. } = &late else {
        panic!("a late event of an older deployment must not start: {late}")
    };
    assert!(reason.contains("stale") && reason.contains("e3"), "{reason}");
    let later = run.pipeline.run(deployed("e4", 4, "2027-01-15T10:01:00Z")).await;
    assert!(later.is_passed(), "a later deployment still takes over: {later}");
    run.cx.background().drain().await;
    let started: Vec<String> = cutover_asl::FileStore::new(run.cx.data_path("executions"))
        .unwrap()
        .list()
        .unwrap()
        .iter()
        .map(|r| {
            serde_json::to_value(r).unwrap()["name"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(!started.iter().any(|n| n == "e2"), "{started:?}");
    assert_eq!(started.len(), 2, "{started:?}");
}
