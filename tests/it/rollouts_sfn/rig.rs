//! One test's world: a moto server of its own with the canary (short bakes) and the rollouts
//! table, the Lambda bridge in front of it, and the pipeline file whose `start-state-machine`
//! stage starts the rollouts (in this process) and names them to `cutover rollouts`.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cutover_core::{BuildContext, Event, Loader, Outcome, Pipeline};
use cutover_stages::rollouts::DynamoRolloutStore;
use cutover_stages::rollouts::ops::Rollouts;
use cutover_stages::rollouts::view::Rollout;
use cutover_stages::state_machine::StartStateMachineConfig;
use serde_json::{Value, json};

use super::bridge::LambdaBridge;
use crate::moto::Moto;

/// The rollouts table of every test (each test has a moto server of its own).
const TABLE: &str = "rollouts";

/// The service every test deploys to (a rollout's slot is `CLUSTER|GROUP`).
pub(super) const CLUSTER: &str = "arn:aws:ecs:us-east-1:111122223333:cluster/catsndogs";
pub(super) const GROUP: &str = "service:cats";

/// How long a condition may take to come true before the test fails: generous, because the
/// machine may be busy; no assertion depends on it being fast.
pub(super) const PATIENCE: Duration = Duration::from_secs(45);

/// A moto server with the canary deployed and the rollouts table created, and the pipeline file
/// whose `start-state-machine` stage starts (in this process) and names (for the CLI) its
/// rollouts.
pub(super) struct Rig {
    pub(super) bridge: LambdaBridge,
    moto: Moto,
    _dir: tempfile::TempDir,
    file: PathBuf,
    starter: Pipeline,
    pub(super) rollouts: Rollouts,
    pub(super) store: DynamoRolloutStore,
    pub(super) sfn: aws_sdk_sfn::Client,
    machine: String,
}

impl Rig {
    /// The rig, with bakes of `bake` seconds instead of 60.
    pub(super) async fn new(bake: u64) -> Rig {
        Rig::build(shipped_with_bakes(bake), &[]).await
    }

    /// The rig running the States Language `definition` (Lambda resources named
    /// `cutover-traffic-shift`, `cutover-health-check`, `cutover-error-rate`).
    pub(super) async fn with_definition(definition: String) -> Rig {
        Rig::build(definition, &[]).await
    }

    /// The rig whose pipeline file declares `services` (`[services.<name>]`, each recognised by
    /// its green container `<name>-green`) and filters each event to its service first.
    pub(super) async fn with_services(bake: u64, services: &[&str]) -> Rig {
        Rig::build(shipped_with_bakes(bake), services).await
    }

    async fn build(definition: String, services: &[&str]) -> Rig {
        let (bridge, moto) = LambdaBridge::start();
        let status = moto.control(
            "/moto-api/config",
            r#"{"stepfunctions":{"execute_state_machine":true}}"#,
        );
        assert!((200..300).contains(&status), "moto config answered {status}");
        let dir = tempfile::tempdir().unwrap();
        let setup = BuildContext::new(dir.path()).with_aws(moto.aws());
        let ddb = aws_sdk_dynamodb::Client::new(setup.aws_config().await);
        DynamoRolloutStore::create_table(&ddb, TABLE)
            .await
            .expect("the rollouts table");
        let store = DynamoRolloutStore::new(ddb, TABLE);

        std::fs::write(dir.path().join("canary.asl.json"), &definition).unwrap();
        let sfn = aws_sdk_sfn::Client::new(setup.aws_config().await);
        let machine = sfn
            .create_state_machine()
            .name("canary")
            .definition(definition)
            .role_arn("arn:aws:iam::123456789012:role/cutover-canary")
            .send()
            .await
            .expect("moto accepts the canary")
            .state_machine_arn()
            .to_owned();

        let file = dir.path().join("rollouts.toml");
        std::fs::write(&file, pipeline_file(&machine, services)).unwrap();
        let loaded = Loader::new().load_file(&file).expect("the pipeline file loads");
        // As a host builds it: paths relative to the file, AWS calls to moto.
        let cx = loaded.build_context().with_aws(moto.aws());
        let starter = loaded.build("deploys", &cx).await.expect("the pipeline builds");
        let stage = loaded
            .pick(Some("deploys"))
            .unwrap()
            .stages
            .iter()
            .find_map(|s| s.config.as_any().downcast_ref::<StartStateMachineConfig>())
            .expect("a start-state-machine stage");
        let rollouts = stage.rollouts(&cx, false).await.expect("the rollouts API");
        Rig {
            bridge,
            moto,
            _dir: dir,
            file,
            starter,
            rollouts,
            store,
            sfn,
            machine,
        }
    }

    /// Starts the rollout `name` as a green deployment's event does.
    pub(super) async fn start(&self, name: &str) {
        let event = Event::from_value(json!({
            "id": name,
            "detail": {
                "clusterArn": CLUSTER,
                "group": GROUP,
                "taskDefinitionArn": "arn:aws:ecs:us-east-1:111122223333:task-definition/cats-green:7",
            }
        }));
        match self.starter.run(event).await {
            Outcome::Passed { context } => assert_eq!(context["execution"], self.arn(name)),
            other => panic!("starting {name}: {other}"),
        }
    }

    /// Starts the rollout `name` as a green deployment of `service` does (the seed's green task,
    /// with the service's container), through the file's filter.
    pub(super) async fn start_service(&self, name: &str, service: &str) {
        let trace = std::fs::read_to_string(crate::repo("tests/fixtures/deployment-trace.jsonl")).unwrap();
        let seed = trace
            .lines()
            .find(|l| {
                l.contains("cats-green")
                    && l.contains("\"lastStatus\":\"RUNNING\"")
                    && l.contains("\"desiredStatus\":\"RUNNING\"")
            })
            .unwrap();
        let mut event: Value =
            serde_json::from_str(&seed.replace("cats-green", &format!("{service}-green"))).unwrap();
        event["id"] = json!(name);
        match self.starter.run(Event::from_value(event)).await {
            Outcome::Passed { context } => {
                assert_eq!(context["execution"], self.arn(name));
                assert_eq!(context["service"]["name"], service);
            }
            other => panic!("starting {name}: {other}"),
        }
    }

    /// The rollout once `what` holds of it (read through the `Rollouts` API).
    pub(super) async fn rollout_when(
        &self,
        name: &str,
        what: &str,
        holds: impl Fn(&Rollout) -> bool,
    ) -> Rollout {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let r = self.rollouts.status(name).await.expect("the rollout's status");
            if holds(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline && !r.phase.ended(),
                "{name} never was {what}: {r:#?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The rollout once it bakes in `bake` with at least a second of it gone.
    pub(super) async fn baking(&self, name: &str, bake: &str) -> Rollout {
        self.rollout_when(name, &format!("baking in {bake}"), |r| {
            r.window
                .as_ref()
                .is_some_and(|w| w.name == bake && w.elapsed >= 1)
        })
        .await
    }

    /// Waits for the execution to end: its status, and when it was first seen ended.
    pub(super) async fn ended(&self, name: &str) -> (String, Instant) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let out = self
                .sfn
                .describe_execution()
                .execution_arn(self.arn(name))
                .send()
                .await
                .expect("DescribeExecution");
            if out.status().as_str() != "RUNNING" {
                return (out.status().as_str().to_owned(), Instant::now());
            }
            assert!(Instant::now() < deadline, "{name} is still running");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(super) fn arn(&self, name: &str) -> String {
        format!("{}:{name}", self.machine.replace(":stateMachine:", ":execution:"))
    }

    /// Each state the execution entered, in order, with its input.
    pub(super) async fn entered(&self, name: &str) -> Vec<(String, Value)> {
        let mut events = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .sfn
                .get_execution_history()
                .execution_arn(self.arn(name))
                .set_next_token(token)
                .send()
                .await
                .expect("GetExecutionHistory");
            events.extend(page.events().iter().cloned());
            token = page.next_token().filter(|t| !t.is_empty()).map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        events.sort_by_key(|e| e.id());
        events.dedup_by_key(|e| e.id());
        events
            .iter()
            .filter_map(|e| e.state_entered_event_details())
            .map(|d| {
                let input = d.input().and_then(|i| serde_json::from_str(i).ok());
                (d.name().to_owned(), input.unwrap_or(Value::Null))
            })
            .collect()
    }

    /// `cutover rollouts ARGS…` on this rig's pipeline file, acted by alice.
    pub(super) fn cli(&self, command: &str, args: &[&str]) -> Output {
        let mut cmd = crate::cutover();
        cmd.args(["rollouts", command])
            .arg(&self.file)
            .args(args)
            .envs(self.moto.env())
            .env("USER", "alice");
        run(cmd, PATIENCE)
    }

    /// The same, which must succeed: its output.
    pub(super) fn cli_ok(&self, command: &str, args: &[&str]) -> String {
        let out = self.cli(command, args);
        let said = String::from_utf8(out.stdout).unwrap();
        assert!(
            out.status.success(),
            "cutover rollouts {command} {args:?}: {}\n{said}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        said
    }

    /// Its JSON output: one value per line.
    pub(super) fn cli_json(&self, command: &str, args: &[&str]) -> Vec<Value> {
        let mut args = args.to_vec();
        args.push("--json");
        let said = self.cli_ok(command, &args);
        // `status --json` is one pretty-printed value; the others a value per line.
        serde_json::Deserializer::from_str(&said)
            .into_iter::<Value>()
            .map(|v| v.unwrap_or_else(|e| panic!("{e}: {said}")))
            .collect()
    }
}

/// The pipeline file: one `start-state-machine` stage starting executions of `machine`, named
/// by the event's id, with a control block of 1 s ticks and health checks every 2 s while
/// paused. `definition` gives `cutover rollouts` the steps and the stage its control reads.
fn pipeline_file(machine: &str, services: &[&str]) -> String {
    let mut text = String::new();
    for service in services {
        text.push_str(&format!(
            "[services.{service}]\ngreen_container = \"{service}-green\"\n\n"
        ));
    }
    text.push_str(
        "[pipelines.deploys]\ndescription = \"Start a canary on Step Functions per deployment\"\n\n",
    );
    if !services.is_empty() {
        text.push_str(
            "[[pipelines.deploys.stages]]\ntype = \"filter\"\ngreen = { container = \"{service.green_container}\" }\n\n",
        );
    }
    text.push_str(&format!(
        r#"[[pipelines.deploys.stages]]
type = "start-state-machine"
name = "{{id}}"
input = {{ cluster = "{{detail.clusterArn}}", group = "{{detail.group}}", task_definition = "{{detail.taskDefinitionArn}}" }}
engine = {{ type = "step-functions", state_machine_arn = "{machine}", definition = "canary.asl.json" }}
control = {{ table = "{TABLE}", tick = "1s", health_every = "2s" }}
"#
    ));
    text
}

/// The shipped canary with its three 60 s bakes shortened to `bake` seconds.
fn shipped_with_bakes(bake: u64) -> String {
    let shipped = std::fs::read_to_string(crate::repo("pipelines/canary.asl.json")).unwrap();
    assert_eq!(
        shipped.matches("\"seconds\": 60").count(),
        3,
        "the shipped canary bakes three times 60 s: Bake10, Bake50, Bake100"
    );
    shipped.replace("\"seconds\": 60", &format!("\"seconds\": {bake}"))
}

/// Runs `cmd` to its end, killing it (and failing) after `limit`.
fn run(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cutover runs");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("cutover's output"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-s", "KILL", &pid.to_string()])
                .status();
            panic!("{cmd:?} did not end within {limit:?}");
        }
    }
}

/// `bake` in a state's input (`{name, seconds, elapsed, held}`).
pub(super) fn bake_of(input: &Value) -> (String, u64, u64) {
    let bake = &input["bake"];
    (
        bake["name"].as_str().unwrap_or_default().to_owned(),
        bake["seconds"].as_u64().unwrap_or_default(),
        bake["elapsed"].as_u64().unwrap_or_default(),
    )
}
