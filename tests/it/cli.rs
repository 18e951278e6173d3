//! The `cutover` command as a user runs it.

use expect_test::expect;
use serde_json::Value;

use crate::cutover;

fn run(cmd: &mut std::process::Command) -> (i32, String, String) {
    let out = cmd.output().expect("cutover runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_accepts_every_shipped_pipeline() {
    let mut files: Vec<String> = std::fs::read_dir(crate::repo("pipelines"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let (code, stdout, stderr) = run(cutover().arg("validate").args(&files));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.lines().count(), files.len(), "{stdout}");
}

#[test]
fn validate_lists_every_problem_of_a_broken_file() {
    let (code, stdout, stderr) = run(cutover().args(["validate", "tests/fixtures/pipelines/broken.toml"]));
    assert_eq!(code, 1);
    assert_eq!(stdout, "");
    let registered = cutover_core::registered_stages()
        .iter()
        .map(|s| s.name)
        .collect::<Vec<_>>()
        .join(", ");
    let stderr = stderr.replace(
        &format!("registered types: {registered}"),
        "registered types: <registered>",
    );
    expect![[r#"
        tests/fixtures/pipelines/broken.toml: pipeline "ecs-events", stage 1 (notify): unknown field "fiel", expected one of: file, on, message
        tests/fixtures/pipelines/broken.toml: pipeline "ecs-events", stage 2 (notifyy): unknown stage type "notifyy"; registered types: <registered>
        tests/fixtures/pipelines/broken.toml: pipeline "ecs-events", stage 3 (notify): field "on[1]": unknown variant "sometimes", expected one of: passed, dropped, failed
        tests/fixtures/pipelines/broken.toml: pipeline "other", unknown key "descripton", expected one of: description, ecs_hook, stages
        tests/fixtures/pipelines/broken.toml: pipeline "other", no stages: add [[pipelines.other.stages]] tables, each with a `type`
    "#]]
    .assert_eq(&stderr);
}

#[test]
fn environment_overrides_reach_stage_fields_and_are_validated() {
    let (code, _, stderr) = run(cutover()
        .args(["validate", "pipelines/catsndogs.toml"])
        .env("CUTOVER_PIPELINES__ECS_EVENTS__STAGES__NOTIFY__ON", "[\"never\"]"));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("stage 1 (notify): field \"on[0]\": unknown variant \"never\""),
        "{stderr}"
    );
    let (code, _, stderr) = run(cutover()
        .args(["validate", "pipelines/catsndogs.toml"])
        .env("CUTOVER_PIPELINES__NOPE__STAGES__1__X", "1"));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("CUTOVER_PIPELINES__NOPE__STAGES__1__X: no pipeline matches \"NOPE\""),
        "{stderr}"
    );
}

#[test]
fn stages_lists_builtin_and_plugin_stages() {
    let (code, stdout, _) = run(cutover().arg("stages"));
    assert_eq!(code, 0);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("notify ") && l.ends_with("[cutover-plugin-notify]")),
        "{stdout}"
    );
}

#[test]
fn replay_reports_each_event_and_a_summary_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.jsonl");
    let good = std::fs::read_to_string(crate::repo("tests/fixtures/task-fargate-running.json")).unwrap();
    let good: Value = serde_json::from_str(&good).unwrap();
    std::fs::write(&trace, format!("{good}\n{{\"id\": \n\n{good}\n")).unwrap();
    let (code, stdout, stderr) = run(cutover()
        .args(["replay", "pipelines/catsndogs.toml", "--json"])
        .arg(&trace));
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert_eq!(lines[0]["id"], good["id"]);
    assert_eq!(lines[1]["outcome"], "failed");
    assert_eq!(lines[1]["stage"], "input");
    assert!(
        lines[1]["reason"]
            .as_str()
            .unwrap()
            .starts_with("line 2: not valid JSON"),
        "{}",
        lines[1]
    );
    assert_eq!(lines[3]["summary"]["events"], 3);
    assert_eq!(lines[3]["summary"]["failed"], 1);
}

/// `--summary` counts the events it need not report by a shorter way (a drop by the
/// filter's bytes alone builds no outcome): its counts are those of the reports, for a
/// filter alone and for the full pipeline (whose rollouts, dedup drops and torn lines count
/// too).
#[test]
fn replay_summary_counts_what_the_reports_say() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.jsonl");
    let mut text = std::fs::read_to_string(crate::repo("tests/fixtures/deployment-trace.jsonl")).unwrap();
    text.push_str("{\"id\": \n");
    std::fs::write(&trace, text).unwrap();
    for pipeline in ["scripts/bench/filter-only.toml", "pipelines/catsndogs.toml"] {
        let replay = |report: &str| {
            let (code, stdout, stderr) = run(cutover().args(["replay", pipeline, report]).arg(&trace));
            assert_eq!(code, 0, "{stderr}");
            stdout
        };
        let reports = replay("--json");
        let mut counted = serde_json::json!({"events": 0, "passed": 0, "dropped": {}, "failed": 0});
        let mut last = Value::Null;
        for line in reports.lines() {
            let report: Value = serde_json::from_str(line).unwrap();
            if report.get("summary").is_some() {
                last = report["summary"].clone();
                continue;
            }
            counted["events"] = (counted["events"].as_u64().unwrap() + 1).into();
            match report["outcome"].as_str().unwrap() {
                "dropped" => {
                    let stage = report["stage"].as_str().unwrap();
                    let n = counted["dropped"][stage].as_u64().unwrap_or(0);
                    counted["dropped"][stage] = (n + 1).into();
                }
                kind => counted[kind] = (counted[kind].as_u64().unwrap() + 1).into(),
            }
        }
        assert_eq!(last, counted, "{pipeline}: the reports' own summary");
        let summary: Value = serde_json::from_str(&replay("--summary")).unwrap();
        assert_eq!(summary["summary"], counted, "{pipeline}");
        assert_eq!(counted["events"], 51, "{pipeline}");
        assert_eq!(counted["failed"], 1, "{pipeline}: the torn line");
        assert!(
            counted["dropped"]["filter"].as_u64().unwrap() > 30,
            "{pipeline}: {counted}"
        );
    }
}

/// A summary of a file reads it in ranges, each thread its own (no line is numbered): lines
/// straddling ranges, a line longer than a range and torn lines in several of them count as
/// they do when one reader reads the file through, with any number of jobs.
#[test]
fn replay_summary_of_a_big_file_counts_what_its_reports_say() {
    let mut lines = noise_lines(1500);
    let green = std::fs::read_to_string(crate::repo("tests/fixtures/deployment-trace.jsonl")).unwrap();
    lines.splice(700..700, green.lines().map(str::to_owned));
    lines.insert(900, format!("{{\"id\": \"{}\"}}", "x".repeat(1 << 20)));
    for at in [4, 299, 649, 1201] {
        let half = lines[at].len() / 2;
        lines[at].truncate(half);
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.jsonl");
    std::fs::write(&trace, lines.join("\n")).unwrap();
    assert!(std::fs::metadata(&trace).unwrap().len() > 3 << 20);
    for pipeline in ["scripts/bench/filter-only.toml", "pipelines/catsndogs.toml"] {
        let replay = |args: &[&str]| {
            let (code, stdout, stderr) = run(cutover().arg("replay").arg(pipeline).args(args).arg(&trace));
            assert_eq!(code, 0, "{stderr}");
            stdout
        };
        let reports = replay(&["--json", "--jobs", "1"]);
        let summary: Value = serde_json::from_str(reports.lines().last().unwrap()).unwrap();
        assert_eq!(summary["summary"]["events"], lines.len(), "{pipeline}");
        assert_eq!(summary["summary"]["failed"], 4, "{pipeline}: the torn lines");
        for jobs in ["1", "2", "5"] {
            let counted: Value = serde_json::from_str(&replay(&["--summary", "--jobs", jobs])).unwrap();
            assert_eq!(counted, summary, "{pipeline}, --jobs {jobs}");
        }
    }
}

#[test]
fn replay_summary_reads_stdin() {
    use std::io::Write;
    let mut child = replay_on_stdin(&["pipelines/catsndogs.toml", "--summary"])
        .spawn()
        .unwrap();
    let trace = std::fs::read(crate::repo("tests/fixtures/deployment-trace.jsonl")).unwrap();
    child.stdin.take().unwrap().write_all(&trace).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let summary: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["summary"]["events"], 50);
}

#[test]
fn replay_human_output_names_the_source_line() {
    let (code, stdout, stderr) = run(cutover().args([
        "replay",
        "pipelines/catsndogs.toml",
        "tests/fixtures/task-ec2-running.json",
    ]));
    assert_eq!(code, 0, "{stderr}");
    let mut lines = stdout.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("tests/fixtures/task-ec2-running.json "),
        "{stdout}"
    );
    assert!(lines.next().unwrap().starts_with("1 events:"), "{stdout}");
}

/// `cutover replay ARGS -`, its stdin and stdout piped.
fn replay_on_stdin(args: &[&str]) -> std::process::Command {
    let mut replay = cutover();
    replay
        .arg("replay")
        .args(args)
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    replay
}

/// Noise lines of the fixture trace (events the catsndogs filter drops), `n` of them.
fn noise_lines(n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(crate::repo("tests/fixtures/two-revisions-trace.jsonl")).unwrap();
    let noise: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("cats-green") && !l.trim().is_empty())
        .collect();
    (0..n).map(|i| noise[i % noise.len()].to_owned()).collect()
}

#[test]
fn replay_with_several_jobs_reports_every_line_in_input_order() {
    // More lines than one batch, so that several batches are decided at once; torn lines in
    // different batches are failures where they are, never dropped.
    let mut lines = noise_lines(700);
    for at in [4, 299, 649] {
        let half = lines[at].len() / 2;
        lines[at].truncate(half);
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.jsonl");
    std::fs::write(&trace, lines.join("\n")).unwrap();
    let replay = |jobs: &str| {
        let (code, stdout, stderr) = run(cutover()
            .args(["replay", "pipelines/catsndogs.toml", "--json", "--jobs", jobs])
            .arg(&trace));
        assert_eq!(code, 0, "{stderr}");
        stdout
    };
    let one = replay("1");
    let three = replay("3");
    assert_eq!(one, three, "--jobs 3 reports differently from --jobs 1");
    let reports: Vec<Value> = three.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(reports.len(), 701);
    for (i, report) in reports[..700].iter().enumerate() {
        let source = format!("{}:{}", trace.display(), i + 1);
        assert_eq!(report["source"], source.as_str());
        if [4, 299, 649].contains(&i) {
            assert_eq!(report["outcome"], "failed", "{report}");
            assert_eq!(report["stage"], "input", "{report}");
            let reason = report["reason"].as_str().unwrap();
            assert!(
                reason.starts_with(&format!("line {}: not valid JSON", i + 1)),
                "{reason}"
            );
        } else {
            assert_eq!(report["outcome"], "dropped", "{report}");
        }
    }
    assert_eq!(reports[700]["summary"]["failed"], 3);
    assert_eq!(reports[700]["summary"]["dropped"]["filter"], 697);
}

#[test]
fn replay_reads_sources_of_every_shape_in_turn_and_reports_them_in_order() {
    // JSON Lines files long enough for several blocks (read by the deciding threads in turn),
    // an array (read by a reader thread) and a pretty-printed document (read whole), mixed.
    let dir = tempfile::tempdir().unwrap();
    let lines = noise_lines(900);
    let first = dir.path().join("first.jsonl");
    std::fs::write(&first, lines.join("\n")).unwrap();
    let array = dir.path().join("array.json");
    std::fs::write(&array, format!("\n [{}, {}]\n", lines[0], lines[1])).unwrap();
    let pretty = dir.path().join("one.json");
    let event: Value = serde_json::from_str(&lines[2]).unwrap();
    std::fs::write(&pretty, serde_json::to_string_pretty(&event).unwrap()).unwrap();
    let last = dir.path().join("last.jsonl");
    std::fs::write(&last, format!("{}\n\n{}\n", lines[3], lines[4])).unwrap();
    for jobs in ["1", "2", "5"] {
        let (code, stdout, stderr) = run(cutover()
            .args(["replay", "pipelines/catsndogs.toml", "--json", "--jobs", jobs])
            .args([&first, &array, &pretty, &last]));
        assert_eq!(code, 0, "{stderr}");
        let sources: Vec<String> = stdout
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter_map(|r| r["source"].as_str().map(str::to_owned))
            .collect();
        let mut expected: Vec<String> = (1..=900).map(|n| format!("{}:{n}", first.display())).collect();
        expected.extend([
            format!("{}[0]", array.display()),
            format!("{}[1]", array.display()),
        ]);
        expected.push(pretty.display().to_string());
        expected.extend([format!("{}:1", last.display()), format!("{}:3", last.display())]);
        assert_eq!(sources, expected, "--jobs {jobs}");
    }
}

#[test]
fn replay_reports_what_it_decided_then_the_source_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.jsonl");
    std::fs::write(&good, noise_lines(3).join("\n")).unwrap();
    let unreadable = dir.path().join("a-directory");
    std::fs::create_dir(&unreadable).unwrap();
    let (code, stdout, stderr) = run(cutover()
        .args(["replay", "pipelines/catsndogs.toml", "--json", "--jobs", "2"])
        .args([&good, &unreadable, &good]));
    assert_ne!(code, 0, "{stdout}");
    assert!(
        stderr.contains(&format!("reading events from {}", unreadable.display())),
        "{stderr}"
    );
    // The first file's events were decided and reported; nothing after the failing source.
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
}

#[test]
fn replay_stops_when_its_output_is_closed_though_its_input_stays_open() {
    use std::io::{BufRead, Write};
    // Like `tail -f events | cutover replay p.toml - | head -1` once the log is quiet: all input
    // is read, one thread's reports fill the pipe while the other waits for more input; the
    // pipe's reader goes away, and replay must end although stdin stays open.
    let mut child = replay_on_stdin(&["pipelines/catsndogs.toml", "--json", "--jobs", "2"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    // Small events (the filter drops them), whose reports are three times what a pipe holds.
    for i in 0..1_000 {
        writeln!(stdin, "{{\"id\": \"n{i}\"}}").unwrap();
    }
    stdin.flush().unwrap();
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.contains("\"dropped\""), "{first}");
    drop(stdout);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("replay went on with its output closed");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    drop(stdin);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    // Quietly, as `… | head` expects.
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(stderr, "");
}

#[test]
fn replay_reports_each_event_typed_on_stdin_while_it_is_open() {
    use std::io::{BufRead, Write};
    let mut child = replay_on_stdin(&["pipelines/catsndogs.toml"]).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut line = String::new();
        while stdout.read_line(&mut line).unwrap() > 0 {
            tx.send(std::mem::take(&mut line)).unwrap();
        }
    });
    // Two events (the first tells JSON Lines from a single document only with the second),
    // then nothing more while the pipe stays open: both reports come, a few hundred bytes.
    for line in noise_lines(2) {
        writeln!(stdin, "{line}").unwrap();
    }
    stdin.flush().unwrap();
    for n in 1..=2 {
        let report = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no report of event {n} while stdin is open"));
        assert!(report.starts_with(&format!("<stdin>:{n} ")), "{report}");
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
    reader.join().unwrap();
    let summary = rx.recv().unwrap();
    assert!(summary.starts_with("2 events:"), "{summary}");
}

#[test]
fn replay_decides_events_while_stdin_is_still_open() {
    use std::io::{BufRead, Write};
    let mut child = replay_on_stdin(&["pipelines/catsndogs.toml", "--json"])
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        let first = lines.next();
        tx.send(first).unwrap();
        lines.count()
    });
    // Several reads' worth (read while written, so that no pipe fills up), with the pipe left open: the reports must come before its end.
    for line in noise_lines(600) {
        writeln!(stdin, "{line}").unwrap();
    }
    stdin.flush().unwrap();
    let first = rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("no report while stdin is open: replay waited for the end of its input")
        .unwrap()
        .unwrap();
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["source"], "<stdin>:1");
    assert_eq!(first["outcome"], "dropped");
    drop(stdin);
    assert!(child.wait().unwrap().success());
    assert_eq!(reader.join().unwrap(), 600, "599 more reports and the summary");
}
