//! Where events that cannot succeed go, so that acknowledging them loses nothing: a JSON Lines
//! file (appended and synced before the event is acknowledged) or an SQS queue.
//!
//! One record per event:
//!
//! ```json
//! {"time":"2026-11-20T10:00:12.000Z","pipeline":"ecs-events","origin":"http:127.0.0.1:50412",
//!  "id":"1df9…","stage":"dedup","error":"dedup key: …","kind":"Dedup.KeyMissing",
//!  "retryable":false,"event":{…the event as received…}}
//! ```
//!
//! `event` is the event's JSON, or its text when it was not JSON.
//!
//! The file may be rotated by moving it away (logrotate's default): before each record the
//! sink checks that its path still names the file it holds open, and opens a new one there if
//! not, so no record lands in a file that has been moved aside or deleted. It holds an
//! exclusive lock on the file (`flock`) from that check to the end of the record, the lock
//! `cutover dlq redrive --file` takes to rewrite the file: a record written during a redrive
//! lands in the rewritten file, never in the one it replaces.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context as _;
use cutover_core::StageError;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use super::Input;

/// The dead-letter sink.
pub(crate) enum DeadLetter {
    /// Appends JSON lines to a file.
    File {
        /// The file.
        path: PathBuf,
        /// The open file; writes are serialised so lines never interleave.
        file: tokio::sync::Mutex<tokio::fs::File>,
    },
    /// Sends one message per record to a queue.
    Queue {
        /// The SQS client.
        client: aws_sdk_sqs::Client,
        /// The queue URL.
        url: String,
    },
}

impl fmt::Debug for DeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeadLetter({self})")
    }
}

impl fmt::Display for DeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeadLetter::File { path, .. } => write!(f, "{}", path.display()),
            DeadLetter::Queue { url, .. } => f.write_str(url),
        }
    }
}

async fn open_append(path: &Path) -> std::io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
}

/// Whether `path` no longer names the open `file` (moved away, deleted, or replaced).
#[cfg(unix)]
async fn moved(path: &Path, file: &tokio::fs::File) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (tokio::fs::metadata(path).await, file.metadata().await) {
        (Ok(named), Ok(open)) => (named.dev(), named.ino()) != (open.dev(), open.ino()),
        (Err(e), _) => e.kind() == std::io::ErrorKind::NotFound,
        // The open file cannot be examined: keep writing to it.
        (Ok(_), Err(_)) => false,
    }
}

/// Elsewhere files are not moved while open; nothing to check.
#[cfg(not(unix))]
async fn moved(_path: &Path, _file: &tokio::fs::File) -> bool {
    false
}

/// The dead-letter file's lock, held while one record is written; released on drop.
struct Held(std::fs::File);

impl Drop for Held {
    fn drop(&mut self) {
        // The lock belongs to the open file, which the sink keeps: release it explicitly.
        let _ = self.0.unlock();
    }
}

/// Waits for the exclusive lock on `file` (a redrive rewriting it holds it for a moment).
async fn lock(file: &tokio::fs::File) -> std::io::Result<Held> {
    let handle = file.try_clone().await?.into_std().await;
    tokio::task::spawn_blocking(move || handle.lock().map(|()| Held(handle)))
        .await
        .map_err(std::io::Error::other)?
}

impl DeadLetter {
    /// Opens (creating it and its directory if needed) a JSON Lines file for appending.
    pub(crate) async fn file(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir).await.with_context(|| {
                format!(
                    "creating the directory of the dead-letter file {}",
                    path.display()
                )
            })?;
        }
        let file = open_append(path)
            .await
            .with_context(|| format!("opening the dead-letter file {}", path.display()))?;
        Ok(DeadLetter::File {
            path: path.to_owned(),
            file: tokio::sync::Mutex::new(file),
        })
    }

    /// A sink sending to the queue at `url`.
    pub(crate) fn queue(client: aws_sdk_sqs::Client, url: String) -> Self {
        DeadLetter::Queue { client, url }
    }

    /// Records a failed event; `Ok` only once the record is durable (synced to disk, or
    /// accepted by SQS).
    pub(crate) async fn write(
        &self,
        pipeline: &str,
        input: &Input,
        stage: &str,
        error: &StageError,
    ) -> Result<(), String> {
        let line = record(SystemTime::now(), pipeline, input, stage, error).to_string();
        match self {
            DeadLetter::File { path, file } => {
                let mut file = file.lock().await;
                let _held = loop {
                    let held = lock(&file)
                        .await
                        .map_err(|e| format!("locking {}: {e}", path.display()))?;
                    if !moved(path, &file).await {
                        break held;
                    }
                    drop(held);
                    tracing::info!(path = %path.display(), "the dead-letter file was moved or rewritten; opening the new one");
                    *file = open_append(path)
                        .await
                        .map_err(|e| format!("reopening {}: {e}", path.display()))?;
                };
                let mut bytes = line.into_bytes();
                bytes.push(b'\n');
                let written = async {
                    file.write_all(&bytes).await?;
                    file.flush().await?;
                    file.sync_data().await
                };
                written.await.map_err(|e| format!("{}: {e}", path.display()))
            }
            DeadLetter::Queue { client, url } => client
                .send_message()
                .queue_url(url)
                .message_body(line)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| {
                    format!(
                        "SendMessage to {url}: {}",
                        aws_sdk_sqs::error::DisplayErrorContext(&e)
                    )
                }),
        }
    }
}

/// The dead-letter record of one failed event.
fn record(time: SystemTime, pipeline: &str, input: &Input, stage: &str, error: &StageError) -> Value {
    // Re-serialised rather than embedded as received: a pretty-printed event would otherwise
    // break the one-record-per-line format.
    let event = serde_json::from_slice::<Value>(&input.raw)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&input.raw).into_owned()));
    json!({
        "time": cutover_asl::timestamp::format_system(time),
        "pipeline": pipeline,
        "origin": input.origin,
        "id": input.id,
        "stage": stage,
        "error": error.message,
        "kind": error.kind,
        "retryable": error.retryable,
        "event": event,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn input(raw: &[u8]) -> Input {
        Input {
            raw: Arc::from(raw),
            id: Some("e1".into()),
            origin: "test:1".into(),
        }
    }

    #[test]
    fn records_keep_the_event_as_json_or_as_text() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let error = StageError::permanent("no key").with_kind("Dedup.KeyMissing");
        let r = record(t, "p", &input(b"{\n  \"id\": \"e1\"\n}"), "dedup", &error);
        assert_eq!(
            r.to_string(),
            r#"{"time":"2026-11-18T11:06:40.000Z","pipeline":"p","origin":"test:1","id":"e1","stage":"dedup","error":"no key","kind":"Dedup.KeyMissing","retryable":false,"event":{"id":"e1"}}"#
        );
        let r = record(
            t,
            "p",
            &input(b"not json"),
            "input",
            &StageError::permanent("bad"),
        );
        assert_eq!(r["event"], "not json");
        assert_eq!(r["kind"], Value::Null);
    }

    #[tokio::test]
    async fn a_record_written_during_a_rewrite_lands_in_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dl.jsonl");
        let sink = DeadLetter::file(&path).await.unwrap();
        let error = StageError::permanent("boom");
        sink.write("p", &input(b"{}"), "s", &error).await.unwrap();

        // A rewrite as `cutover dlq redrive --file` makes it: lock, replace, unlock.
        let old = std::fs::File::open(&path).unwrap();
        old.lock().unwrap();
        let writing =
            tokio::spawn(async move { sink.write("p", &input(b"{\"late\":true}"), "s", &error).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!writing.is_finished(), "the writer waits for the lock");
        let replacement = dir.path().join("new");
        std::fs::write(&replacement, "").unwrap();
        std::fs::rename(&replacement, &path).unwrap();
        drop(old);
        writing.await.unwrap().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("late"), "{text}");
    }

    #[tokio::test]
    async fn the_file_sink_appends_one_line_per_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dl.jsonl");
        let sink = DeadLetter::file(&path).await.unwrap();
        let error = StageError::permanent("boom");
        sink.write("p", &input(b"{}"), "s", &error).await.unwrap();
        sink.write("p", &input(b"{}"), "s", &error).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.lines().all(|l| serde_json::from_str::<Value>(l).is_ok()));
    }
}
