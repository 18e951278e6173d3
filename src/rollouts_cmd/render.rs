//! How `cutover rollouts` shows rollouts to people.

use std::fmt::Write as _;
use std::time::SystemTime;

use cutover_stages::rollouts::Action;
use cutover_stages::rollouts::view::{Line, Phase, Rollout};
use serde_json::Value;

/// "12s", "3m04s", "2h05m" since `at` (ISO-8601), or "".
fn age(at: &str) -> String {
    let Some(then) = cutover_asl::timestamp::parse(at) else {
        return String::new();
    };
    let now = cutover_asl::timestamp::to_nanos(SystemTime::now());
    let secs = u64::try_from((now - then) / 1_000_000_000).unwrap_or(0);
    span(secs)
}

fn span(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s / 60) % 60),
    }
}

fn weights(r: &Rollout) -> String {
    match r.weights {
        Some((blue, green)) => format!("{blue}/{green}"),
        None => "100/0".into(),
    }
}

fn health(v: &Option<Value>) -> String {
    let Some(h) = v else {
        return "not checked yet".into();
    };
    let state = h.get("State").and_then(Value::as_str).unwrap_or("?");
    match h.get("reason").and_then(Value::as_str) {
        Some(reason) if !reason.is_empty() => format!("{state}: {reason}"),
        _ => state.to_owned(),
    }
}

/// Where the rollout is, in a few words: "Bake50 (42s left)", "Check10", "ended in Unhealthy".
fn where_(r: &Rollout) -> String {
    match (&r.window, r.phase.ended()) {
        (Some(w), false) => format!(
            "{} ({}s left of {}s)",
            w.name,
            w.seconds.saturating_sub(w.elapsed),
            w.seconds
        ),
        (_, false) => r.step.clone().unwrap_or_else(|| "starting".into()),
        (_, true) => r
            .step
            .clone()
            .map(|s| format!("ended in {s}"))
            .unwrap_or_default(),
    }
}

/// `list`: one row per rollout.
pub(super) fn table(rollouts: &[Rollout]) -> String {
    let rows: Vec<[String; 7]> = rollouts
        .iter()
        .map(|r| {
            [
                r.id.clone(),
                r.phase.as_str().to_owned(),
                where_(r),
                weights(r),
                r.deployment.clone(),
                r.started.clone(),
                age(&r.started),
            ]
        })
        .collect();
    let header = [
        "ROLLOUT",
        "PHASE",
        "STEP",
        "BLUE/GREEN",
        "DEPLOYMENT",
        "STARTED",
        "AGE",
    ]
    .map(str::to_owned);
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    out.trim_end().to_owned()
}

/// The steps with a mark each: done, current, to come.
fn steps(r: &Rollout) -> String {
    let green = r.weights.map(|(_, g)| g).unwrap_or(0);
    r.steps
        .iter()
        .map(|s| {
            let mark = if r.phase == Phase::Succeeded || *s < green {
                "done"
            } else if *s == green && !r.phase.ended() {
                "now"
            } else if *s == green {
                "reached"
            } else {
                "to come"
            };
            format!("{s}% {mark}")
        })
        .collect::<Vec<_>>()
        .join(" · ")
}

/// `status`: the whole picture.
pub(super) fn status(r: &Rollout) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "rollout     {}", r.id);
    let _ = writeln!(out, "execution   {}", r.arn);
    if !r.deployment.is_empty() {
        let _ = writeln!(out, "deployment  {}", r.deployment);
    }
    let _ = writeln!(out, "phase       {}", r.phase.as_str());
    let _ = writeln!(out, "step        {}", where_(r));
    if !r.steps.is_empty() {
        let _ = writeln!(out, "steps       {}", steps(r));
    }
    let (blue, green) = r.weights.unwrap_or((100, 0));
    let _ = writeln!(out, "weights     blue {blue}% / green {green}%  {}", bar(green));
    let _ = writeln!(out, "health      {}", health(&r.health));
    if let Some(c) = &r.control {
        let _ = writeln!(
            out,
            "last action {} by {} at {}: {}",
            c.action, c.actor, c.at, c.reason
        );
    }
    let _ = writeln!(out, "started     {} ({} ago)", r.started, age(&r.started));
    if let Some(ended) = &r.ended {
        let _ = writeln!(out, "ended       {ended}");
    }
    if let Some(error) = &r.error {
        let _ = writeln!(out, "error       {error}: {}", r.cause.as_deref().unwrap_or(""));
    }
    out.trim_end().to_owned()
}

/// Green's share as a bar of 20 cells.
fn bar(green: u64) -> String {
    let cells = usize::try_from(green.min(100) / 5).unwrap_or(0);
    format!("[{}{}]", "#".repeat(cells), ".".repeat(20 - cells))
}

/// `watch` on a terminal: the status block and what is next.
pub(super) fn live(r: &Rollout) -> String {
    let mut out = status(r);
    if !r.phase.ended() {
        let _ = write!(
            out,
            "\n\n(updated every second; Ctrl-C stops watching, not the rollout)"
        );
    }
    out
}

/// `watch` elsewhere: one line, printed when it changes (the rollout is named once, first);
/// with `countdown`, the time left in the wait too (which alone is not a change).
pub(super) fn one_line(r: &Rollout, countdown: bool) -> String {
    let verdict = r
        .health
        .as_ref()
        .and_then(|h| h.get("State"))
        .and_then(Value::as_str)
        .unwrap_or("not checked yet");
    let step = match &r.window {
        Some(w) if !r.phase.ended() && countdown => {
            format!("{} {}s left", w.name, w.seconds.saturating_sub(w.elapsed))
        }
        Some(w) if !r.phase.ended() => w.name.clone(),
        _ => r.step.clone().unwrap_or_default(),
    };
    let mut line = format!(
        "{:<11} {step:<16} blue/green {:<7} health {verdict}",
        r.phase.as_str(),
        weights(r)
    );
    if let Some(error) = &r.error {
        let _ = write!(line, " — {error}: {}", r.cause.as_deref().unwrap_or(""));
    }
    line
}

/// `history`: a line per entry, with the time since the start.
pub(super) fn history(r: &Rollout, lines: &[Line]) -> String {
    let start = cutover_asl::timestamp::parse(&r.started).unwrap_or(0);
    let mut out = format!("rollout {} ({})\n", r.id, r.phase.as_str());
    for line in lines {
        let offset = cutover_asl::timestamp::parse(&line.at)
            .map(|t| (t - start) as f64 / 1e9)
            .unwrap_or(0.0);
        let _ = writeln!(
            out,
            "{}  +{offset:>7.1}s  {:<8} {}",
            line.at, line.kind, line.text
        );
    }
    out.trim_end().to_owned()
}

/// What a control action does, said when it is taken.
pub(super) fn effect(action: Action) -> &'static str {
    match action {
        Action::Abort => "traffic goes back to blue (verified) within a tick, then it ends as aborted",
        Action::Pause => {
            "it holds at its weight within a tick; health checks go on, a sick green still rolls back"
        }
        Action::Resume => "it goes on within a tick",
        Action::Promote => "its wait ends within a tick and it goes on with the next step",
        Action::PromoteFull => "it goes to 100% green (verified) within a tick",
        Action::Retry => "a new rollout starts",
    }
}
