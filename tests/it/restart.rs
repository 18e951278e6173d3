//! Stopping and restarting `cutover serve` mid-rollout: a signal stops the daemon promptly even
//! with stdin still open, running executions stop at their current state, and the next process
//! resumes them on their original schedule — after a restart, through a restart loop, and in a
//! second daemon that takes over when the first stops (a rolling restart).

use std::io::Write;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{crash, cutover, faults, moto};

/// A daemon reading the scenario's events from a pipe that stays open until closed.
struct Daemon {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Daemon {
    fn start(file: &Path, data: &Path, events: &[Value]) -> Daemon {
        let mut child = cutover()
            .arg("serve")
            .arg(file)
            .args([
                "--source",
                "stdin",
                "--pipeline",
                "ecs-events",
                "--shutdown-timeout",
                "5s",
            ])
            .env("CUTOVER_SETTINGS__DATA_DIR", data)
            .env("CUTOVER_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        for e in events {
            writeln!(stdin, "{e}").unwrap();
        }
        stdin.flush().unwrap();
        crate::echo_stderr(&mut child);
        Daemon {
            child,
            stdin: Some(stdin),
        }
    }

    /// SIGTERM; the time until the process exited, and its status.
    fn terminate(&mut self) -> (Duration, std::process::ExitStatus) {
        let started = Instant::now();
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = started + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (started.elapsed(), status);
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not exit within 60 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Closes stdin and waits for the daemon to finish everything and exit.
    fn finish(mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        self.child.wait().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The execution records in `data`.
fn records(data: &Path) -> Vec<Value> {
    crate::execution_records(&data.join("executions"))
}

/// Waits until every deployment's execution is in its bake.
fn wait_for_bake(data: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(records(data).len() == 2 && records(data).iter().all(|r| r["next_state"] == "Bake")) {
        assert!(
            Instant::now() < deadline,
            "no bake within 30 s: {:#?}",
            records(data)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every `WaitStarted` deadline of the bake in each record.
fn bake_deadlines(data: &Path) -> Vec<Vec<String>> {
    records(data)
        .iter()
        .map(|r| {
            r["history"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["type"] == "WaitStarted")
                .map(|e| e["until"].as_str().unwrap().to_owned())
                .collect()
        })
        .collect()
}

fn count(record: &Value, kind: &str) -> usize {
    record["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == kind)
        .count()
}

async fn setup(bake: u64) -> (tempfile::TempDir, std::path::PathBuf, Vec<Value>) {
    let s = faults::scenario(moto::shared(), 1).await;
    let data = tempfile::tempdir().unwrap();
    let file = crash::embedded_file(data.path(), bake);
    (data, file, s.events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_bake_exits_promptly_and_restarts_keep_the_schedule() {
    let (data, file, events) = setup(15).await;
    let dir = data.path().to_owned();
    tokio::task::spawn_blocking(move || {
        // Three stops and restarts, each a second or so into a 15 s bake (room for three
        // restarts on a loaded machine before the bake would end), stdin open.
        let mut daemon = Daemon::start(&file, &dir, &events);
        for round in 0..3 {
            wait_for_bake(&dir);
            // A restarted daemon is stopped only once it drives the rollouts again (before
            // that, it may not even handle the signal yet).
            let deadline = Instant::now() + Duration::from_secs(30);
            while !records(&dir)
                .iter()
                .all(|r| count(r, "ExecutionResumed") == round)
            {
                assert!(
                    Instant::now() < deadline,
                    "round {round}: not resumed: {:#?}",
                    records(&dir)
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_millis(1200));
            let (took, status) = daemon.terminate();
            println!("round {round}: SIGTERM mid-bake → exit in {took:?} ({status})");
            assert!(status.success(), "round {round}: {status}");
            assert!(
                took < Duration::from_secs(5),
                "round {round}: the daemon waited {took:?}, not for the 15 s bake"
            );
            assert!(records(&dir).iter().all(|r| r["status"] == "RUNNING"));
            // The restarted daemon gets every event again (all duplicates now).
            daemon = Daemon::start(&file, &dir, &events);
        }
        let status = daemon.finish();
        assert!(status.success(), "{status}");
        let records = records(&dir);
        assert_eq!(records.len(), 2, "{records:#?}");
        for r in &records {
            assert_eq!(r["status"], "SUCCEEDED", "{r:#}");
            assert_eq!(count(r, "ExecutionResumed"), 3, "{r:#}");
        }
        // However often it was restarted, each bake ends when it first would have.
        for deadlines in bake_deadlines(&dir) {
            assert_eq!(deadlines.len(), 4, "{deadlines:?}");
            assert!(deadlines.iter().all(|d| *d == deadlines[0]), "{deadlines:?}");
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_takes_over_the_rollouts_the_first_releases() {
    let (data, file, events) = setup(10).await;
    let dir = data.path().to_owned();
    tokio::task::spawn_blocking(move || {
        let mut old = Daemon::start(&file, &dir, &events);
        wait_for_bake(&dir);
        // The new daemon of a rolling restart starts beside the old one, on the same directory.
        let new = Daemon::start(&file, &dir, &[]);
        std::thread::sleep(Duration::from_millis(1500));
        assert!(
            records(&dir).iter().all(|r| count(r, "ExecutionResumed") == 0),
            "the new daemon leaves alone what the old one drives"
        );
        let (took, status) = old.terminate();
        assert!(
            status.success() && took < Duration::from_secs(5),
            "{took:?} {status}"
        );
        let released = Instant::now();
        let deadline = released + Duration::from_secs(10);
        while !records(&dir).iter().all(|r| count(r, "ExecutionResumed") == 1) {
            assert!(Instant::now() < deadline, "not taken over: {:#?}", records(&dir));
            std::thread::sleep(Duration::from_millis(20));
        }
        println!("taken over {:?} after the old daemon exited", released.elapsed());
        assert!(new.finish().success());
        for r in records(&dir) {
            assert_eq!(r["status"], "SUCCEEDED", "{r:#}");
            assert_eq!(count(&r, "ExecutionResumed"), 1, "one driver at a time: {r:#}");
        }
    })
    .await
    .unwrap();
}
