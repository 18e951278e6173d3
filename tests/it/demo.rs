//! `cutover demo`, the README's first command, end to end on compressed time.

use serde_json::Value;

use crate::cutover;

/// `cutover demo --json` judged by the HTTP probe only (deterministic on a loaded machine).
fn demo(args: &[&str]) -> (i32, Vec<Value>) {
    demo_with(&["--speed", "120", "--no-prometheus"], args)
}

fn demo_with(base: &[&str], args: &[&str]) -> (i32, Vec<Value>) {
    let out = cutover()
        .args(["demo", "--json", "--no-ui"])
        .args(base)
        .args(args)
        .output()
        .unwrap();
    // 2 is an error (a port taken, a file unwritable): never a demo's outcome.
    assert_ne!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (out.status.code().unwrap_or(-1), lines)
}

fn steps<'a>(lines: &'a [Value], step: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["step"] == step).collect()
}

#[test]
fn healthy_green_is_promoted_step_by_step() {
    let (code, lines) = demo(&[]);
    assert_eq!(code, 0, "{lines:?}");
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(summary["events"], 50);
    assert_eq!(
        summary["executions"], 1,
        "one rollout for a deployment of three tasks"
    );
    assert_eq!(
        summary["weights"],
        serde_json::json!([[90, 10], [50, 50], [0, 100]])
    );
    assert_eq!(summary["final"], serde_json::json!({"blue": 0, "green": 100}));
    assert_eq!(summary["rolled_back"], false);
    let started: Vec<_> = lines.iter().filter(|l| l["outcome"] == "passed").collect();
    assert_eq!(started.len(), 1);
    // DNS answers follow the weights exactly at each step.
    let shifts = steps(&lines, "shift");
    let dns: Vec<(u64, u64)> = shifts
        .iter()
        .map(|s| {
            (
                s["dns"]["blue"].as_u64().unwrap(),
                s["dns"]["green"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(dns, [(90, 10), (50, 50), (0, 100)]);
    assert_eq!(steps(&lines, "before")[0]["dns"]["green"], 0);
    // One health check after each of the three shifts, all healthy.
    let health = steps(&lines, "health");
    assert_eq!(health.len(), 3, "{lines:?}");
    assert!(health.iter().all(|h| h["state"] == "healthy"), "{health:?}");
    // Before each bake, the split the demo's clients actually got beside the weight set.
    let observed = steps(&lines, "observe");
    let set: Vec<u64> = observed.iter().map(|o| o["set"].as_u64().unwrap()).collect();
    assert_eq!(set, [10, 50, 100], "{observed:?}");
    for o in &observed {
        assert_eq!(o["state"], "healthy", "{o}");
        let share = o["observed"].as_f64().unwrap();
        assert!((share - o["set"].as_f64().unwrap()).abs() <= 5.0, "{o}");
    }
}

#[test]
fn sick_green_is_rolled_back_at_50_percent() {
    let (code, lines) = demo(&["--fail-green"]);
    assert_eq!(code, 1, "a rollback ends the demo with status 1: {lines:?}");
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(
        summary["weights"],
        serde_json::json!([[90, 10], [50, 50], [100, 0]])
    );
    assert_eq!(summary["final"], serde_json::json!({"blue": 100, "green": 0}));
    assert_eq!(summary["rolled_back"], true);
    assert_eq!(summary["executions"], 1);
    let health = steps(&lines, "health");
    assert_eq!(health.len(), 2);
    assert_eq!(health[1]["state"], "unhealthy");
    assert!(
        health[1]["reason"].as_str().unwrap().contains("status 500"),
        "{}",
        health[1]
    );
    let last_shift = steps(&lines, "shift").pop().unwrap().clone();
    assert_eq!(
        (
            last_shift["dns"]["blue"].as_u64(),
            last_shift["dns"]["green"].as_u64()
        ),
        (Some(100), Some(0))
    );
}

#[test]
fn the_abort_scenario_steers_the_rollout_back_to_blue_at_50_percent() {
    let (code, lines) = demo(&["--scenario", "abort"]);
    assert_eq!(code, 1, "not promoted: {lines:?}");
    let actions = steps(&lines, "action");
    assert_eq!(actions.len(), 1, "{lines:?}");
    assert_eq!(actions[0]["action"], "abort");
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(
        summary["weights"],
        serde_json::json!([[90, 10], [50, 50], [100, 0]]),
        "aborted while at 50%, then all blue"
    );
    assert_eq!(summary["final"], serde_json::json!({"blue": 100, "green": 0}));
    assert!(
        lines.iter().any(|l| l["steer"]["file"].is_string()),
        "prints how to steer it"
    );
}

#[test]
fn the_pause_scenario_holds_then_resumes_and_promotes() {
    let (code, lines) = demo(&["--scenario", "pause"]);
    assert_eq!(code, 0, "{lines:?}");
    let actions: Vec<&Value> = steps(&lines, "action")
        .into_iter()
        .map(|a| &a["action"])
        .collect();
    assert_eq!(actions, ["pause", "resume"]);
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(
        summary["weights"],
        serde_json::json!([[90, 10], [50, 50], [0, 100]])
    );
    // Green was checked while paused, besides the three checks after the shifts.
    assert!(steps(&lines, "health").len() > 3, "{lines:?}");
}

#[test]
fn the_errors_scenario_is_seen_by_the_metric_analysis_only_and_rolled_back() {
    let prometheus = crate::prometheus::prometheus_binary();
    let (code, lines) = demo_with(
        &["--speed", "30", "--prometheus", &prometheus],
        &["--scenario", "errors"],
    );
    assert_eq!(code, 1, "rolled back: {lines:#?}");
    assert!(
        lines.iter().any(|l| l["metrics"]["prometheus"].is_string()),
        "a real Prometheus judged it: {lines:#?}"
    );
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(
        summary["weights"],
        serde_json::json!([[90, 10], [50, 50], [100, 0]])
    );
    // Green's health page stayed fine: every HTTP probe passed; the error rate failed.
    let health = steps(&lines, "health");
    assert!(health.iter().all(|h| h["state"] == "healthy"), "{health:#?}");
    let metric = steps(&lines, "metric");
    let failed = metric.last().unwrap();
    assert_eq!(failed["state"], "unhealthy", "{metric:#?}");
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains("failed result < 0.05"),
        "{failed}"
    );
}

#[test]
fn several_services_roll_out_at_once_and_only_the_sick_one_rolls_back() {
    let (code, lines) = demo(&["--services", "3"]);
    assert_eq!(code, 0, "{lines:?}");
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(summary["executions"], 3, "{summary}");
    assert_eq!(summary["as_designed"], true, "{summary}");
    let rollouts = summary["rollouts"].as_array().unwrap();
    let outcome = |name: &str| rollouts.iter().find(|r| r["service"] == name).unwrap().clone();
    for healthy in ["cats", "dogs"] {
        assert_eq!(outcome(healthy)["status"], "SUCCEEDED", "{summary}");
        assert_eq!(
            outcome(healthy)["final"],
            serde_json::json!({"blue": 0, "green": 100})
        );
    }
    assert_eq!(outcome("svc3")["status"], "FAILED", "{summary}");
    assert_eq!(
        outcome("svc3")["final"],
        serde_json::json!({"blue": 100, "green": 0})
    );
    // Each service answered on its own record: its DNS follows its own weights.
    for line in lines
        .iter()
        .filter(|l| l["service"].is_string() && l["dns"].is_object())
    {
        let green = line["final"]["green"].as_u64().unwrap();
        assert_eq!(line["dns"]["green"].as_u64().unwrap(), green, "{line}");
    }
}
