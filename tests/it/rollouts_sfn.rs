//! Rollout operations (issue 12) on AWS Step Functions: the shipped canary, with short bakes,
//! run by moto's execution mode and steered through `cutover rollouts` and the `Rollouts` API.
//!
//! moto runs the canary's `ReadControl` (a DynamoDB `GetItem` service integration) against its
//! own DynamoDB, but it cannot run cutover's Lambda functions: a [`bridge`] in the test process
//! answers those invocations and records every weight and health check. moto's execution mode
//! stops working after a few executions in one server, so every test has a server (and a
//! [`rig`]) of its own, and no test runs more than two executions.

mod bridge;
mod rig;

use std::time::{Duration, Instant};

use cutover_stages::rollouts::view::Phase;
use cutover_stages::rollouts::{Action, Claim, RolloutStore};
use serde_json::{Value, json};

use self::rig::{CLUSTER, GROUP, PATIENCE, Rig, bake_of};

#[tokio::test]
async fn abort_during_a_bake_sends_traffic_back_to_blue_and_ends_aborted_with_the_reason() {
    // Bakes long enough that only the abort can end this one.
    let rig = Rig::new(30).await;
    let name = "cats-green-7";
    rig.start(name).await;
    let baking = rig.baking(name, "Bake10").await;
    assert_eq!(baking.weights, Some((90, 10)));

    let asked = Instant::now();
    let said = rig.cli_ok("abort", &[name, "--reason", "5xx on checkout"]);
    let answered = asked.elapsed();
    assert!(
        said.starts_with(&format!("abort: rollout {name} (running at ")),
        "{said}"
    );
    let (status, end) = rig.ended(name).await;
    let took = end - asked;
    eprintln!(
        "rollouts_sfn: abort → execution ended {:.2} s after `cutover rollouts abort` was called \
         (the command itself took {:.2} s; tick 1 s)",
        took.as_secs_f64(),
        answered.as_secs_f64()
    );
    assert!(took <= Duration::from_secs(30), "the abort took {took:?}");
    assert_eq!(status, "FAILED");
    assert_eq!(
        rig.bridge.weights(name),
        vec![10, 0],
        "green got 10%, then all traffic went back to blue (verified), nothing in between"
    );

    let status = &rig.cli_json("status", &[name])[0];
    assert_eq!(status["phase"], "aborted", "{status:#}");
    assert_eq!(status["error"], "Canary.Aborted");
    assert_eq!(status["cause"], "5xx on checkout");
    assert_eq!(status["weights"], json!({"blue": 100, "green": 0}));
    assert_eq!(status["control"]["action"], "abort");
    assert_eq!(status["control"]["actor"], "alice");

    let history = rig.cli_json("history", &[name]);
    let action = history
        .iter()
        .find(|l| l["kind"] == "action")
        .unwrap_or_else(|| panic!("no action in {history:#?}"));
    assert_eq!(action["text"], "abort by alice: 5xx on checkout");
    assert_eq!(action["detail"]["actor"], "alice");
    let weights: Vec<&Value> = history
        .iter()
        .filter(|l| l["kind"] == "weights")
        .map(|l| &l["detail"])
        .collect();
    assert_eq!(
        weights,
        [
            &json!({"blue": 90, "green": 10}),
            &json!({"blue": 100, "green": 0})
        ]
    );
    let end = history.last().unwrap();
    assert_eq!(end["kind"], "end", "{history:#?}");
    assert_eq!(end["text"], "FAILED: Canary.Aborted: 5xx on checkout");

    let audit = rig.store.audit_log(Some(name)).await.unwrap();
    assert_eq!(audit.len(), 1, "{audit:#?}");
    assert_eq!(audit[0].action, Action::Abort);
    assert_eq!(audit[0].actor, "alice");
    assert_eq!(audit[0].reason, "5xx on checkout");
    assert_eq!(audit[0].change["from"]["wait"], "Bake10");
    assert_eq!(
        audit[0].change["from"]["weights"],
        json!({"blue": 90, "green": 10})
    );
}

#[tokio::test]
async fn a_paused_rollout_shifts_nothing_for_longer_than_a_bake_and_completes_once_resumed() {
    let bake = 5;
    let rig = Rig::new(bake).await;
    let name = "cats-green-8";
    rig.start(name).await;
    rig.baking(name, "Bake10").await;
    rig.cli_ok("pause", &[name, "--reason", "p99 looks odd"]);

    // The canary takes its hold loop (in Bake10, or at the next wait if Bake10 ran out
    // meanwhile): from its first Hold on, nothing but the loop may run.
    let deadline = Instant::now() + PATIENCE;
    let (first, held_at) = loop {
        let entered = rig.entered(name).await;
        if let Some(i) = entered.iter().position(|(s, _)| s == "Hold") {
            break (i, bake_of(&entered[i].1));
        }
        let states: Vec<&str> = entered.iter().map(|(s, _)| s.as_str()).collect();
        assert!(
            Instant::now() < deadline && !states.contains(&"Check50"),
            "never held: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let weights = rig.bridge.weights(name);
    let held_since = Instant::now();
    let checks_before = rig.bridge.checks(name).len();
    // More hold ticks than the whole bake has: unpaused, any bake would have ended by now.
    let holding = loop {
        let mut entered = rig.entered(name).await;
        let holding = entered.split_off(first);
        if holding.iter().filter(|(s, _)| s == "Hold").count() > bake as usize + 1 {
            break holding;
        }
        assert!(
            Instant::now() < deadline,
            "held only for {:?}",
            holding.iter().map(|(s, _)| s).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let hold_loop = [
        "Hold",
        "HoldCount",
        "HoldDue",
        "HoldCheck",
        "HoldHealthy",
        "HoldReset",
        "ReadControl",
        "Steer",
    ];
    for (state, input) in &holding {
        assert!(hold_loop.contains(&state.as_str()), "{state} ran while paused");
        assert_eq!(
            bake_of(input),
            held_at,
            "the wait did not count down while paused"
        );
    }
    assert_eq!(rig.bridge.weights(name), weights, "no shift while paused");
    assert!(
        rig.bridge.checks(name).len() > checks_before,
        "green is still health-checked while paused (every 2 s)"
    );
    let paused = rig.rollouts.status(name).await.unwrap();
    assert_eq!(paused.phase, Phase::Paused);
    assert_eq!(paused.window.map(|w| w.name), Some(held_at.0.clone()));
    eprintln!(
        "rollouts_sfn: held in {} for {} ticks ({:.1} s seen) with bakes of {bake} s",
        held_at.0,
        holding.iter().filter(|(s, _)| s == "Hold").count(),
        held_since.elapsed().as_secs_f64()
    );

    let asked = Instant::now();
    rig.cli_ok("resume", &[name, "--reason", "p99 is back"]);
    let (status, end) = rig.ended(name).await;
    assert_eq!(status, "SUCCEEDED");
    eprintln!(
        "rollouts_sfn: resumed → the rest of the canary (what was left of the wait, the later bakes of {bake} s, their shifts and checks) took {:.1} s",
        (end - asked).as_secs_f64()
    );
    assert_eq!(rig.bridge.weights(name), vec![10, 50, 100]);
    let audit: Vec<(Action, String)> = rig
        .store
        .audit_log(Some(name))
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.action, a.actor))
        .collect();
    assert_eq!(
        audit,
        [(Action::Pause, "alice".into()), (Action::Resume, "alice".into())]
    );
    let history = rig.cli_ok("history", &[name]);
    assert!(
        history.contains("pause by alice: p99 looks odd") && history.contains("resume by alice: p99 is back"),
        "{history}"
    );
    // The history shows the held wait once, as long as it really was: each tick counted or held
    // is a Wait of 1 s (less one for rounding), the pause's health checks inside it.
    let hold_ticks = holding.iter().filter(|(s, _)| s == "Hold").count() as u64;
    let lines = rig.cli_json("history", &[name]);
    let waits: Vec<&Value> = lines
        .iter()
        .filter(|l| l["kind"] == "state" && l["detail"]["state"] == held_at.0.as_str())
        .map(|l| &l["detail"])
        .collect();
    assert_eq!(waits.len(), 1, "{history}");
    let lasted = waits[0]["seconds"].as_f64().unwrap();
    assert!(
        lasted >= (held_at.2 + hold_ticks - 1) as f64,
        "{} lasted {lasted} s, with {} ticks counted and {hold_ticks} held: {history}",
        held_at.0,
        held_at.2
    );
}

#[tokio::test]
async fn promote_ends_the_current_bake_and_promote_full_goes_straight_to_all_green() {
    // Bakes far longer than the test: only a promote can end them.
    let bake = 30;
    let rig = Rig::new(bake).await;
    let name = "cats-green-9";
    rig.start(name).await;
    rig.baking(name, "Bake10").await;
    assert!(rig.bridge.checks(name).is_empty());

    let asked = Instant::now();
    rig.cli_ok("promote", &[name, "--reason", "metrics look great"]);
    let r = rig.baking(name, "Bake50").await;
    assert_eq!(r.weights, Some((50, 50)));
    let checked = rig.bridge.checks(name)[0];
    eprintln!(
        "rollouts_sfn: promote → Check10 ran {:.2} s after `cutover rollouts promote` was called (Bake10: {bake} s)",
        (checked - asked).as_secs_f64()
    );
    // The canary left Bake10 through the promote, with most of the bake still to go.
    let entered = rig.entered(name).await;
    let over: Vec<(String, u64, u64)> = entered
        .iter()
        .filter(|(s, _)| s == "WindowOver")
        .map(|(_, input)| bake_of(input))
        .collect();
    assert_eq!(over[0].0, "Bake10", "{over:?}");
    assert!(
        over[0].2 < bake,
        "Bake10 was ended early: {} of {bake} s counted",
        over[0].2
    );

    let asked = Instant::now();
    rig.cli_ok("promote", &[name, "--full", "--reason", "ship it"]);
    let (status, end) = rig.ended(name).await;
    eprintln!(
        "rollouts_sfn: promote --full → SUCCEEDED {:.2} s after the command was called",
        (end - asked).as_secs_f64()
    );
    assert_eq!(status, "SUCCEEDED");
    assert_eq!(rig.bridge.weights(name), vec![10, 50, 100]);
    let states: Vec<String> = rig.entered(name).await.into_iter().map(|(s, _)| s).collect();
    assert!(states.contains(&"ShiftFull".to_owned()), "{states:?}");
    for skipped in ["Check50", "Shift100", "Bake100"] {
        assert!(!states.contains(&skipped.to_owned()), "{skipped} ran: {states:?}");
    }
    assert_eq!(states.last().map(String::as_str), Some("Promoted"));

    let status = &rig.cli_json("status", &[name])[0];
    assert_eq!(status["phase"], "succeeded", "{status:#}");
    assert_eq!(status["weights"], json!({"blue": 0, "green": 100}));
    let audit = rig.store.audit_log(Some(name)).await.unwrap();
    let actions: Vec<(Action, &str, &Value)> = audit
        .iter()
        .map(|a| (a.action, a.actor.as_str(), &a.change["ends_wait"]))
        .collect();
    assert_eq!(
        actions,
        [
            (Action::Promote, "alice", &json!("Bake10")),
            (Action::PromoteFull, "alice", &Value::Null)
        ]
    );
}

#[tokio::test]
async fn retry_after_a_rollback_starts_a_linked_rollout_of_the_same_deployment() {
    let rig = Rig::new(2).await;
    let name = "cats-green-10";
    rig.bridge.make_sick(true);
    rig.start(name).await;
    let (status, _) = rig.ended(name).await;
    assert_eq!(status, "FAILED");
    assert_eq!(rig.bridge.weights(name), vec![10, 0]);
    let failed = &rig.cli_json("status", &[name])[0];
    assert_eq!(failed["phase"], "rolled-back", "{failed:#}");
    assert_eq!(failed["error"], "Canary.Unhealthy");
    assert_eq!(failed["cause"], "green answers 503 on /health");

    rig.bridge.make_sick(false);
    // The CLI follows the new rollout to its end; its exit status says how it ended.
    let said = rig.cli_ok("retry", &[name, "--reason", "fixed the health endpoint"]);
    let retry = format!("{name}-retry-1");
    assert!(
        said.starts_with(&format!(
            "retry: started rollout {retry} for the deployment of {name}"
        )),
        "{said}"
    );
    let (status, _) = rig.ended(&retry).await;
    assert_eq!(status, "SUCCEEDED");
    assert_eq!(rig.bridge.weights(&retry), vec![10, 50, 100]);

    let described = rig
        .sfn
        .describe_execution()
        .execution_arn(rig.arn(&retry))
        .send()
        .await
        .unwrap();
    let input: Value = serde_json::from_str(described.input().unwrap()).unwrap();
    let first: Value = serde_json::from_str(
        rig.sfn
            .describe_execution()
            .execution_arn(rig.arn(name))
            .send()
            .await
            .unwrap()
            .input()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(input["retry_of"], name);
    let mut same = input.clone();
    same.as_object_mut().unwrap().remove("retry_of");
    assert_eq!(same, first, "the same deployment, with the same control block");

    let audit = rig.store.audit_log(Some(name)).await.unwrap();
    assert_eq!(audit.len(), 1, "{audit:#?}");
    assert_eq!(audit[0].action, Action::Retry);
    assert_eq!(audit[0].actor, "alice");
    assert_eq!(audit[0].change["retry"], retry.as_str());
    assert_eq!(audit[0].change["execution"], rig.arn(&retry));
    assert_eq!(audit[0].change["from"]["phase"], "rolled-back");
    // The retry is the service's rollout now: a newer deployment would supersede it.
    assert_eq!(
        rig.store
            .claim_service(&format!("{CLUSTER}|{GROUP}"), "probe", i64::MAX)
            .await
            .unwrap(),
        Claim::Taken {
            previous: Some(retry.clone())
        }
    );
}

#[tokio::test]
async fn list_and_status_show_a_running_rollout_with_its_window_and_weights() {
    let bake = 30;
    let rig = Rig::new(bake).await;
    let name = "cats-green-11";
    rig.start(name).await;
    rig.baking(name, "Bake10").await;

    let listed = rig.cli_json("list", &[]);
    assert_eq!(listed.len(), 1, "{listed:#?}");
    let status = &rig.cli_json("status", &[name])[0];
    for r in [&listed[0], status] {
        assert_eq!(r["id"], name, "{r:#}");
        assert_eq!(r["arn"], rig.arn(name));
        assert_eq!(r["phase"], "running");
        assert_eq!(r["deployment"], "service:cats cats-green:7");
        assert_eq!(r["steps"], json!([10, 50, 100]));
        assert_eq!(r["weights"], json!({"blue": 90, "green": 10}));
        assert_eq!(r["window"]["name"], "Bake10");
        assert_eq!(r["window"]["seconds"], bake);
        let elapsed = r["window"]["elapsed"].as_u64().unwrap();
        assert!((1..bake).contains(&elapsed), "{r:#}");
        assert_eq!(r["time_left"], bake - elapsed);
        assert_eq!(r["ended"], Value::Null);
    }
    let table = rig.cli_ok("list", &[]);
    let row = table
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains("running") && row.contains("Bake10 (") && row.contains("90/10"),
        "{table}"
    );
    let shown = rig.cli_ok("status", &[name]);
    assert!(
        shown.contains("phase       running")
            && shown.contains("steps       10% now · 50% to come · 100% to come")
            && shown.contains("weights     blue 90% / green 10%"),
        "{shown}"
    );

    // Once it has ended, only --all lists it.
    rig.rollouts
        .act(name, Action::Abort, "end of the test", "bob", false)
        .await
        .unwrap();
    rig.ended(name).await;
    assert_eq!(
        rig.cli_ok("list", &[]).trim(),
        "no running rollouts (--all shows the ended ones)"
    );
    let all = rig.cli_json("list", &["--all"]);
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0]["phase"], "aborted");
    assert_eq!(all[0]["control"]["actor"], "bob");
    // `watch` of an ended rollout shows how it ended, and says so in its exit status.
    let watched = rig.cli("watch", &[name]);
    let said = String::from_utf8_lossy(&watched.stdout);
    assert_eq!(watched.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!("watching rollout {name}"))
            && said.contains("aborted")
            && said.contains("Canary.Aborted: end of the test"),
        "{said}"
    );
}

#[tokio::test]
async fn a_newer_deployment_of_the_service_supersedes_the_running_rollout() {
    let rig = Rig::new(30).await;
    let (older, newer) = ("cats-green-12", "cats-green-13");
    rig.start(older).await;
    rig.baking(older, "Bake10").await;

    // The newer deployment's start aborts the older rollout and waits for its rollback.
    let asked = Instant::now();
    rig.start(newer).await;
    eprintln!(
        "rollouts_sfn: supersede → the newer rollout started {:.2} s after its event, the older one rolled back",
        asked.elapsed().as_secs_f64()
    );
    let (status, _) = rig.ended(older).await;
    assert_eq!(status, "FAILED");
    // The newer rollout's first shift follows the older's rollback; wait until it has happened.
    rig.baking(newer, "Bake10").await;
    let r = rig.rollouts.status(older).await.unwrap();
    assert_eq!(r.phase, Phase::Aborted, "{r:#?}");
    assert_eq!(r.cause.as_deref(), Some("superseded by cats-green-13"));
    // Never two rollouts shifting one record: the older went back to blue before the newer's
    // first shift.
    let shifts = rig.bridge.shifts();
    assert_eq!(
        shifts[..3],
        [
            (older.to_owned(), 10),
            (older.to_owned(), 0),
            (newer.to_owned(), 10)
        ]
    );
    let audit = rig.store.audit_log(Some(older)).await.unwrap();
    assert_eq!(audit.len(), 1, "{audit:#?}");
    assert_eq!(audit[0].action, Action::Abort);
    assert_eq!(audit[0].actor, "cutover");
    assert_eq!(audit[0].change["superseded_by"], newer);
    let running: Vec<String> = rig
        .rollouts
        .list(false)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(running, [newer]);
}

/// A strategy of three weights, pauses and two analyses per step, the second also run in the
/// background, compiled to States Language and run by moto's Step Functions.
fn two_analysis_strategy(bake50: &str) -> String {
    let text = format!(
        r#"[strategy]
steps = [
  {{ set_weight = 10 }}, {{ pause = "2s" }}, {{ analysis = ["health-check", "error-rate"] }},
  {{ set_weight = 50 }}, {{ pause = "{bake50}" }}, {{ analysis = ["health-check", "error-rate"] }},
  {{ set_weight = 100 }}, {{ pause = "1s" }}, {{ analysis = ["health-check", "error-rate"] }},
]
background = {{ analysis = "error-rate", every = "2s" }}

[strategy.resources]
analyses = {{ health-check = "arn:aws:lambda:us-east-1:111122223333:function:cutover-health-check", error-rate = "arn:aws:lambda:us-east-1:111122223333:function:cutover-error-rate" }}
"#
    );
    let table: toml::Table = toml::from_str(&text).unwrap();
    let strategy: cutover_stages::state_machine::strategy::Strategy =
        table["strategy"].clone().try_into().unwrap();
    strategy.compile().unwrap().to_string()
}

#[tokio::test]
async fn a_strategy_with_two_analyses_and_a_background_one_runs_on_step_functions() {
    let rig = Rig::with_definition(two_analysis_strategy("3s")).await;
    let name = "cats-green-8";
    rig.start(name).await;
    let (status, _) = rig.ended(name).await;
    assert_eq!(status, "SUCCEEDED");
    assert_eq!(rig.bridge.weights(name), vec![10, 50, 100]);
    assert_eq!(
        rig.bridge.calls_to(name, "cutover-health-check"),
        3,
        "one per step"
    );
    let error_rate = rig.bridge.calls_to(name, "cutover-error-rate");
    assert!(
        error_rate > 3,
        "three step analyses and at least one in the background: {error_rate}"
    );
    let status = &rig.cli_json("status", &[name])[0];
    assert_eq!(status["phase"], "succeeded", "{status:#}");
}

#[tokio::test]
async fn a_background_analysis_failing_mid_bake_rolls_back_on_step_functions() {
    let rig = Rig::with_definition(two_analysis_strategy("60s")).await;
    let name = "cats-green-9";
    rig.start(name).await;
    rig.baking(name, "Bake50").await;
    let before = rig.bridge.calls_to(name, "cutover-error-rate");
    rig.bridge.make_errors_high(true);
    let (status, _) = rig.ended(name).await;
    assert_eq!(status, "FAILED");
    assert_eq!(rig.bridge.weights(name), vec![10, 50, 0], "back to blue from 50%");
    // A background analysis found it (one answered healthy may have slipped in between).
    assert!(
        rig.bridge.calls_to(name, "cutover-error-rate") > before,
        "a background analysis ran after the errors rose"
    );
    let status = &rig.cli_json("status", &[name])[0];
    assert_eq!(status["phase"], "rolled-back", "{status:#}");
    assert!(
        status["cause"].as_str().unwrap().contains("result < 0.01"),
        "{status:#}"
    );
    let entered: Vec<String> = rig.entered(name).await.into_iter().map(|(s, _)| s).collect();
    assert!(
        !entered.iter().any(|s| s == "Check50"),
        "the bake's own check never ran: {entered:?}"
    );
}

#[tokio::test]
async fn two_services_roll_out_at_once_each_task_naming_its_service() {
    let rig = Rig::with_services(2, &["cats", "dogs"]).await;
    let (cats, dogs) = ("cats-green-7", "dogs-green-4");
    rig.start_service(cats, "cats").await;
    rig.start_service(dogs, "dogs").await;
    // Both run at once (started together, each bakes three times): neither supersedes the
    // other (one rollout per service, not per file) — both succeed and nothing is audited. Not
    // polled mid-bake: a 2 s bake is shorter than a status call through moto on a loaded machine.
    assert_eq!(rig.ended(cats).await.0, "SUCCEEDED");
    assert_eq!(rig.ended(dogs).await.0, "SUCCEEDED");
    // Step Functions handed every Task of each rollout its own service (the handlers pick their
    // per-service configuration by it).
    assert_eq!(rig.bridge.services(cats), ["cats"]);
    assert_eq!(rig.bridge.services(dogs), ["dogs"]);
    assert_eq!(rig.bridge.weights(cats), [10, 50, 100]);
    assert_eq!(rig.bridge.weights(dogs), [10, 50, 100]);
    let audit = rig.store.audit_log(None).await.unwrap();
    assert!(audit.is_empty(), "nothing superseded: {audit:#?}");
}
