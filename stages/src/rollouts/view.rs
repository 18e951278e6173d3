//! What an operator sees of a rollout, derived the same way from either engine's history: the
//! states it entered and left (with their input and output), how it started and how it ended.
//!
//! The canary's states carry everything: a shift's output holds the weights it verified
//! (`$.traffic`), a check's the health report (`$.health`), a wait's state input its window
//! (`$.bake`: name, seconds, elapsed), the control read the operator's last action (`$.op`).

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value, json};

use super::{Action, AuditEntry, Control};

/// One thing that happened in an execution, as both engines record it.
#[derive(Debug, Clone, PartialEq)]
pub enum Happened {
    /// The execution started with this input.
    Started {
        /// The execution input.
        input: Value,
    },
    /// A state was entered.
    Entered {
        /// The state's name.
        state: String,
        /// Its input (the embedded engine's history shares it with the previous state's output).
        input: Arc<Value>,
    },
    /// A state was left.
    Exited {
        /// The state's name.
        state: String,
        /// Its output.
        output: Arc<Value>,
    },
    /// The execution ended.
    Ended {
        /// `SUCCEEDED`, `FAILED`, `ABORTED`, `TIMED_OUT`.
        status: String,
        /// The error name, when it failed.
        error: Option<String>,
        /// The cause, when it failed.
        cause: Option<String>,
    },
}

/// One history entry: when, and what.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// ISO-8601 UTC.
    pub at: String,
    /// What happened.
    pub what: Happened,
}

/// How a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Shifting, baking or checking.
    Running,
    /// Held by an operator (health checks go on).
    Paused,
    /// Done: green serves everything.
    Succeeded,
    /// Green was sick, or a step failed: traffic went back to blue.
    RolledBack,
    /// Ended by an operator (or a newer deployment): traffic went back to blue.
    Aborted,
    /// Ended without its rollback (stopped from outside, timed out, a rollback that failed).
    Failed,
}

impl Phase {
    /// Whether the rollout has ended.
    pub fn ended(self) -> bool {
        !matches!(self, Phase::Running | Phase::Paused)
    }

    /// The name shown and used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::Paused => "paused",
            Phase::Succeeded => "succeeded",
            Phase::RolledBack => "rolled-back",
            Phase::Aborted => "aborted",
            Phase::Failed => "failed",
        }
    }
}

/// The wait a rollout is in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Window {
    /// The wait's state name (`Bake50`).
    pub name: String,
    /// How long it lasts, in seconds.
    pub seconds: u64,
    /// How much of it has passed.
    pub elapsed: u64,
}

/// A rollout as `cutover rollouts status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rollout {
    /// The execution name (what commands take).
    pub id: String,
    /// The execution ARN.
    pub arn: String,
    /// What is being deployed: the input's `group` and `task_definition`, when present.
    pub deployment: String,
    /// How it stands.
    pub phase: Phase,
    /// The state it is in (running) or ended in.
    pub step: Option<String>,
    /// The steps of the canary: the weights its shifts set, in order.
    pub steps: Vec<u64>,
    /// The weights last verified (blue, green).
    pub weights: Option<(u64, u64)>,
    /// The wait it is in, if any.
    pub window: Option<Window>,
    /// The last health report.
    pub health: Option<Value>,
    /// When it started.
    pub started: String,
    /// When it ended.
    pub ended: Option<String>,
    /// The error and cause it ended with.
    pub error: Option<String>,
    /// Why it ended as it did (the cause).
    pub cause: Option<String>,
    /// The operator's last action (the control record).
    pub control: Option<Control>,
    /// The execution input.
    #[serde(skip)]
    pub input: Value,
}

/// The weights in a shift's output (`{"blue": 90, "green": 10}`).
fn weights_of(v: &Value) -> Option<(u64, u64)> {
    Some((v.get("blue")?.as_u64()?, v.get("green")?.as_u64()?))
}

fn window_of(input: &Value) -> Option<Window> {
    let bake = input.get("bake")?;
    Some(Window {
        name: bake.get("name")?.as_str()?.to_owned(),
        seconds: bake.get("seconds")?.as_u64()?,
        elapsed: bake.get("elapsed")?.as_u64()?,
    })
}

/// The steps of a canary definition: the green weights its shifts set, in increasing order
/// (Task states with a literal `weight` above 0 in their parameters).
pub fn steps_of(definition: &Value) -> Vec<u64> {
    let mut steps: Vec<u64> = definition
        .get("States")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(_, s)| s.get("Type").and_then(Value::as_str) == Some("Task"))
        .filter_map(|(_, s)| s.pointer("/Parameters/weight")?.as_u64())
        .filter(|w| *w > 0)
        .collect();
    steps.sort_unstable();
    steps.dedup();
    steps
}

/// The states worth a line of history: shifts, checks, the rollback and the end states.
fn is_step(state: &str) -> bool {
    ["Shift", "Check", "HoldCheck", "Rollback", "Background-"]
        .iter()
        .any(|p| state.starts_with(p))
        || matches!(state, "Promoted" | "Aborted" | "Unhealthy" | "FailedStep")
}

/// The states that judge green: a step's analyses (`Check50`, `Check50-error-rate`), the
/// check while paused, and the background analyses (`Background-error-rate`).
fn is_check(state: &str) -> bool {
    state.starts_with("Check") || state == "HoldCheck" || state.starts_with("Background-")
}

/// The states in which a rollout waits (its window is current), the health checks of a pause
/// included: they happen while it holds.
fn in_window(state: &str) -> bool {
    matches!(
        state,
        "ReadControl"
            | "Steer"
            | "Tick"
            | "Count"
            | "Hold"
            | "HoldCount"
            | "HoldDue"
            | "HoldCheck"
            | "HoldHealthy"
            | "HoldReset"
    ) || (state.starts_with("Background") && state != "BackgroundStart")
}

impl Rollout {
    /// Derives the rollout from an execution's history and its control record.
    pub fn from_history(id: &str, arn: &str, history: &[Entry], control: Option<Control>) -> Rollout {
        let mut r = Rollout {
            id: id.to_owned(),
            arn: arn.to_owned(),
            deployment: String::new(),
            phase: Phase::Running,
            step: None,
            steps: Vec::new(),
            weights: None,
            window: None,
            health: None,
            started: history.first().map(|e| e.at.clone()).unwrap_or_default(),
            ended: None,
            error: None,
            cause: None,
            control,
            input: Value::Null,
        };
        // A rollout's history runs to hundreds of states: what the walk finds is borrowed, and
        // copied once at the end.
        let mut step: Option<&str> = None;
        let mut health: Option<&Value> = None;
        let mut window_input: Option<&Value> = None;
        for entry in history {
            match &entry.what {
                Happened::Started { input } => {
                    r.deployment = deployment_of(input);
                    r.input = input.clone();
                }
                Happened::Entered { state, input } => {
                    step = Some(state);
                    window_input = in_window(state).then_some(input.as_ref());
                }
                Happened::Exited { state, output } => {
                    if let Some(w) = output.get("traffic").and_then(weights_of)
                        && (state.starts_with("Shift"))
                    {
                        r.weights = Some(w);
                    }
                    if state == "Rollback"
                        && let Some(w) = output.get("rollback").and_then(weights_of)
                    {
                        r.weights = Some(w);
                    }
                    if is_check(state) {
                        health = output.get("health");
                    }
                }
                Happened::Ended { status, error, cause } => {
                    r.ended = Some(entry.at.clone());
                    r.error = error.clone();
                    r.cause = cause.clone();
                    window_input = None;
                    r.phase = match (status.as_str(), error.as_deref()) {
                        ("SUCCEEDED", _) => Phase::Succeeded,
                        ("FAILED", Some("Canary.Aborted")) => Phase::Aborted,
                        ("FAILED", Some("Canary.Unhealthy" | "Canary.StepFailed")) => Phase::RolledBack,
                        _ => Phase::Failed,
                    };
                }
            }
        }
        r.step = step.map(str::to_owned);
        r.health = health.cloned();
        r.window = window_input.and_then(window_of);
        if r.phase == Phase::Running && r.control.as_ref().is_some_and(|c| c.action == Action::Pause) {
            r.phase = Phase::Paused;
        }
        r
    }

    /// Seconds left in the current wait.
    pub fn time_left(&self) -> Option<u64> {
        self.window.as_ref().map(|w| w.seconds.saturating_sub(w.elapsed))
    }

    /// The rollout as JSON (`--json`, the daemon's API).
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(fields) = &mut v {
            fields.insert("phase".into(), json!(self.phase.as_str()));
            fields.insert(
                "weights".into(),
                match self.weights {
                    Some((blue, green)) => json!({"blue": blue, "green": green}),
                    None => Value::Null,
                },
            );
            fields.insert("time_left".into(), json!(self.time_left()));
        }
        v
    }
}

/// `group @ task_definition` from an execution input (what cutover's default input holds).
fn deployment_of(input: &Value) -> String {
    let s = |k: &str| input.get(k).and_then(Value::as_str).unwrap_or_default();
    let td = s("task_definition").rsplit('/').next().unwrap_or_default();
    match (s("group"), td) {
        ("", "") => String::new(),
        (group, "") => group.to_owned(),
        ("", td) => td.to_owned(),
        (group, td) => format!("{group} {td}"),
    }
}

/// One line of `cutover rollouts history`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Line {
    /// When.
    pub at: String,
    /// `state`, `weights`, `health`, `action`, `end`.
    pub kind: &'static str,
    /// What, for people.
    pub text: String,
    /// What, for programs.
    pub detail: Value,
}

/// The history of a rollout for people and programs: each state with its duration, each
/// verified weight change, each health result, each operator action (from the audit log) and
/// the end, in time order.
pub fn history_lines(history: &[Entry], audit: &[AuditEntry]) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut entered: Option<(&str, &str)> = None;
    // The wait being counted down, and since when.
    let mut open: Option<(Window, String)> = None;
    for entry in history {
        let leaves_wait = match &entry.what {
            // Checks while paused belong to the wait.
            Happened::Entered { state, .. } => !in_window(state) && !state.starts_with("Hold"),
            Happened::Ended { .. } => true,
            _ => false,
        };
        if leaves_wait && let Some((w, since)) = open.take() {
            let seconds = seconds_between(&since, &entry.at);
            // A gate (a wait of 0 s) passed at once is not worth a line.
            if w.seconds > 0 || seconds >= 1.0 {
                lines.push(Line {
                    at: since,
                    kind: "state",
                    text: format!("{} ({} of {}s)", w.name, duration_text(seconds), w.seconds),
                    detail: json!({"state": w.name, "seconds": seconds, "wait": w.seconds}),
                });
            }
        }
        match &entry.what {
            Happened::Started { input } => lines.push(Line {
                at: entry.at.clone(),
                kind: "state",
                text: format!("started {}", deployment_of(input)),
                detail: json!({"started": input}),
            }),
            Happened::Entered { state, .. } => entered = Some((state, &entry.at)),
            Happened::Exited { state, output } => {
                let since = entered
                    .take()
                    .filter(|(s, _)| s == state)
                    .map_or(entry.at.as_str(), |(_, at)| at);
                let seconds = seconds_between(since, &entry.at);
                // Shown: the steps (shifts, checks, the rollback) and how it ended; the ticks
                // of a wait are shown as the wait, and the choices between steps not at all.
                if is_step(state) {
                    lines.push(Line {
                        at: since.to_owned(),
                        kind: "state",
                        text: format!("{state} ({})", duration_text(seconds)),
                        detail: json!({"state": state, "seconds": seconds}),
                    });
                }
                if state.starts_with("Shift") || state == "Rollback" {
                    let key = if state == "Rollback" {
                        "rollback"
                    } else {
                        "traffic"
                    };
                    if let Some((blue, green)) = output.get(key).and_then(weights_of) {
                        lines.push(Line {
                            at: entry.at.clone(),
                            kind: "weights",
                            text: format!("weights blue {blue}% / green {green}% (verified)"),
                            detail: json!({"blue": blue, "green": green}),
                        });
                    }
                }
                if is_check(state)
                    && let Some(health) = output.get("health")
                {
                    let verdict = health.get("State").and_then(Value::as_str).unwrap_or("?");
                    let reason = health.get("reason").and_then(Value::as_str).unwrap_or("");
                    lines.push(Line {
                        at: entry.at.clone(),
                        kind: "health",
                        text: if reason.is_empty() {
                            format!("health {verdict}")
                        } else {
                            format!("health {verdict}: {reason}")
                        },
                        detail: health.clone(),
                    });
                }
                // Most states carry the wait's window; only the wait itself opens it.
                let names_it = output.pointer("/bake/name").and_then(Value::as_str) == Some(state);
                if let Some(w) = names_it.then(|| window_of(output)).flatten() {
                    open = Some((w, entry.at.clone()));
                }
            }
            Happened::Ended { status, error, cause } => lines.push(Line {
                at: entry.at.clone(),
                kind: "end",
                text: match (error, cause) {
                    (Some(e), Some(c)) => format!("{status}: {e}: {c}"),
                    (Some(e), None) => format!("{status}: {e}"),
                    _ => status.clone(),
                },
                detail: json!({"status": status, "error": error, "cause": cause}),
            }),
        }
    }
    for a in audit {
        lines.push(Line {
            at: a.at.clone(),
            kind: "action",
            text: format!("{} by {}: {}", a.action, a.actor, a.reason),
            detail: serde_json::to_value(a).unwrap_or(Value::Null),
        });
    }
    // ISO-8601 UTC strings of one format sort in time order; the sort is stable.
    lines.sort_by(|a, b| a.at.cmp(&b.at));
    lines
}

fn seconds_between(from: &str, to: &str) -> f64 {
    match (
        cutover_asl::timestamp::parse(from),
        cutover_asl::timestamp::parse(to),
    ) {
        (Some(a), Some(b)) => (b - a) as f64 / 1e9,
        _ => 0.0,
    }
}

fn duration_text(seconds: f64) -> String {
    if seconds < 1.0 {
        format!("{:.0} ms", seconds * 1000.0)
    } else {
        format!("{seconds:.1} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: u64) -> String {
        format!("2026-11-29T05:00:{second:02}.000Z")
    }

    /// The state `state` entered at `from` and left at `to`, with `data` as input and output.
    fn state(from: u64, to: u64, state: &str, data: &Value) -> [Entry; 2] {
        [
            Entry {
                at: at(from),
                what: Happened::Entered {
                    state: state.into(),
                    input: Arc::new(data.clone()),
                },
            },
            Entry {
                at: at(to),
                what: Happened::Exited {
                    state: state.into(),
                    output: Arc::new(data.clone()),
                },
            },
        ]
    }

    #[test]
    fn a_pause_and_its_health_checks_stay_inside_the_wait() {
        let baking = json!({"traffic": {"blue": 90, "green": 10},
                            "bake": {"name": "Bake10", "seconds": 5, "elapsed": 2, "held": 0}});
        let mut checked = baking.clone();
        checked["health"] = json!({"State": "healthy", "reason": "all targets healthy"});
        let mut history = vec![Entry {
            at: at(0),
            what: Happened::Started { input: json!({}) },
        }];
        history.extend(state(0, 0, "Bake10", &baking));
        for (t, s) in [
            (0, "ReadControl"),
            (0, "Steer"),
            (0, "Hold"),
            (1, "HoldCount"),
            (1, "HoldDue"),
        ] {
            history.extend(state(t, t, s, &baking));
        }
        let [entered, left] = state(1, 1, "HoldCheck", &checked);
        history.push(entered);
        let during = Rollout::from_history("r", "arn", &history, None);
        assert_eq!(during.window.map(|w| w.name).as_deref(), Some("Bake10"));
        history.push(left);
        for (t, s) in [
            (1, "HoldHealthy"),
            (1, "HoldReset"),
            (9, "ReadControl"),
            (9, "Steer"),
        ] {
            history.extend(state(t, t, s, &checked));
        }
        history.extend(state(9, 9, "WindowOver", &checked));

        let lines = history_lines(&history, &[]);
        let waits: Vec<&Line> = lines.iter().filter(|l| l.detail["state"] == "Bake10").collect();
        assert_eq!(waits.len(), 1, "{lines:#?}");
        assert_eq!(
            waits[0].detail["seconds"], 9.0,
            "the whole wait, the pause included"
        );
        assert!(lines.iter().any(|l| l.kind == "health"), "{lines:#?}");
        // The check made while paused has a line of its own, inside the wait.
        assert!(
            lines.iter().any(|l| l.detail["state"] == "HoldCheck"),
            "{lines:#?}"
        );
    }
}
