//! The `stdin` source: JSON Lines, each event started as soon as its line arrives (so
//! `tail -f events.jsonl | cutover serve … --source stdin` works), one JSON line per outcome on
//! stdout in the order events finish: `{"source":"<stdin>:3","id":…,"outcome":…}`.
//!
//! Nobody can redeliver a line, so a retryable failure is retried here (up to
//! [`RETRIES`] more times, backing off) and then dead-lettered like a permanent one. At the end
//! of input, the daemon finishes what is running and exits; on a signal it stops reading at
//! once, even while the pipe stays open.

use std::io::BufRead as _;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{Handled, Host, Input, backoff, read_event, stopped};

/// Extra attempts for an event that failed retryably.
pub(crate) const RETRIES: u32 = 3;

/// Reads stdin until its end or shutdown.
pub(crate) async fn serve(
    host: Arc<Host>,
    max_line: usize,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    eprintln!("cutover serve: reading events from stdin (JSON Lines)");
    let mut lines = read_lines();
    let mut tasks = JoinSet::new();
    let mut number = 0u64;
    loop {
        let line = tokio::select! {
            () = stopped(&mut shutdown) => break,
            line = lines.recv() => line.transpose().context("reading events from stdin")?,
        };
        let Some(line) = line else { break };
        number += 1;
        let text = line.trim_ascii();
        if text.is_empty() {
            continue;
        }
        // A line that was read is processed even if shutdown comes meanwhile: it cannot be
        // read again.
        let permit = host.permit().await;
        let mut input = Input {
            raw: Arc::from(text),
            id: None,
            origin: format!("<stdin>:{number}"),
        };
        let problem = if text.len() > max_line {
            Some(format!(
                "line {number} is longer than {max_line} bytes (--max-body)"
            ))
        } else {
            match read_event(text) {
                Ok(id) => {
                    input.id = id;
                    None
                }
                Err(e) => Some(format!("line {number}: {e}")),
            }
        };
        let host = host.clone();
        tasks.spawn(async move {
            let handled = match problem {
                Some(message) => host.reject(&input, message).await,
                None => with_retries(&host, &input).await,
            };
            drop(permit);
            report(&input, &handled);
        });
        while tasks.try_join_next().is_some() {}
    }
    while let Some(done) = tasks.join_next().await {
        if let Err(error) = done {
            tracing::error!(%error, "an event's task failed");
        }
    }
    Ok(())
}

/// Lines of stdin, read on a thread of their own: a read blocked on an open pipe must not keep
/// the daemon from exiting on a signal (Tokio waits for its own blocking reads at shutdown, not
/// for a plain thread). A small channel keeps reading in step with processing.
fn read_lines() -> tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    std::thread::spawn(move || {
        let mut input = std::io::stdin().lock();
        loop {
            let mut line = Vec::new();
            match input.read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => {
                    if tx.blocking_send(Ok(line)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    rx
}

async fn with_retries(host: &Host, input: &Input) -> Handled {
    let mut attempt = 0;
    loop {
        let outcome = host.run(input).await;
        if !outcome.is_retryable() || attempt >= RETRIES {
            return host.settle(input, outcome, true).await;
        }
        let wait = backoff(attempt, Duration::from_millis(500), Duration::from_secs(5));
        tracing::info!(origin = %input.origin, %outcome, retry_in_ms = wait.as_millis() as u64, "retrying");
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

fn report(input: &Input, handled: &Handled) {
    let mut line = serde_json::json!({"source": input.origin});
    if let (Some(out), serde_json::Value::Object(fields)) = (line.as_object_mut(), handled.to_json()) {
        out.extend(fields);
    }
    // A closed stdout must not stop the daemon: the outcomes are also in the metrics and logs.
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}
