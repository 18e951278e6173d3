//! Persistence of executions so a restarted process can resume them.
//!
//! The engine saves an [`ExecutionRecord`] after every completed top-level
//! state: the state to run next, its input, and the history so far.
//! [`MemoryStore`] keeps records in memory; [`FileStore`] writes one JSON
//! file per execution, atomically (temporary file + rename), and lets one
//! process at a time drive an execution (see [`ExecutionStore::lease`]).

use crate::history::HistoryEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Status of an execution, as in Step Functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExecutionStatus {
    /// Still running (or interrupted and resumable).
    Running,
    /// Finished successfully.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Ran past the machine's `TimeoutSeconds`.
    TimedOut,
    /// Stopped from outside.
    Aborted,
}

/// A persisted execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionRecord {
    /// Execution ARN (the store key).
    pub execution_arn: String,
    /// Execution name.
    pub name: String,
    /// State machine name.
    pub state_machine: String,
    /// Status.
    pub status: ExecutionStatus,
    /// Execution input.
    pub input: Value,
    /// Start time (ISO-8601).
    pub start_time: String,
    /// The top-level state to run next (while running).
    pub next_state: Option<String>,
    /// That state's input.
    pub next_input: Option<Value>,
    /// Final output (succeeded).
    pub output: Option<Value>,
    /// Error name (failed).
    pub error: Option<String>,
    /// Cause (failed).
    pub cause: Option<String>,
    /// History so far.
    pub history: Vec<HistoryEvent>,
}

/// Where executions are persisted.
pub trait ExecutionStore: Send + Sync + Debug {
    /// Insert or replace a record.
    fn save(&self, record: &ExecutionRecord) -> Result<(), String>;
    /// Load a record by execution ARN.
    fn load(&self, id: &str) -> Result<Option<ExecutionRecord>, String>;
    /// Every record still `Running`.
    fn list_unfinished(&self) -> Result<Vec<ExecutionRecord>, String>;
    /// Takes the exclusive right to run execution `id`, or `None` while
    /// someone else holds it. The engine holds the lease from start (or
    /// resume) until the execution finishes, so two processes sharing a
    /// store never drive one execution twice. The default suits a store
    /// used by one engine in one process, where the engine's own running
    /// set already excludes a second driver.
    fn lease(&self, id: &str) -> Result<Option<ExecutionLease>, String> {
        let _ = id;
        Ok(Some(ExecutionLease::default()))
    }
}

/// The exclusive right to run one execution; dropping it gives the right
/// up (and a process that dies gives it up too).
#[derive(Debug, Default)]
pub struct ExecutionLease {
    _file: Option<std::fs::File>,
}

/// In-memory store (shared between engines through an `Arc`).
#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<BTreeMap<String, ExecutionRecord>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

impl ExecutionStore for MemoryStore {
    fn save(&self, record: &ExecutionRecord) -> Result<(), String> {
        let mut g = self.records.lock().map_err(|e| e.to_string())?;
        g.insert(record.execution_arn.clone(), record.clone());
        Ok(())
    }
    fn load(&self, id: &str) -> Result<Option<ExecutionRecord>, String> {
        let g = self.records.lock().map_err(|e| e.to_string())?;
        Ok(g.get(id).cloned())
    }
    fn list_unfinished(&self) -> Result<Vec<ExecutionRecord>, String> {
        let g = self.records.lock().map_err(|e| e.to_string())?;
        Ok(g.values()
            .filter(|r| r.status == ExecutionStatus::Running)
            .cloned()
            .collect())
    }
}

/// One JSON file per execution in a directory.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    /// Use (and create) `dir`.
    pub fn new(dir: impl AsRef<Path>) -> Result<FileStore, String> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(FileStore { dir })
    }

    fn file_for(&self, id: &str) -> PathBuf {
        // ARNs hold ':' and maybe '/'; keep file names portable.
        let safe: String = id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in id.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
        let tail = &safe[safe.len().saturating_sub(80)..];
        self.dir.join(format!("{tail}-{h:016x}.json"))
    }
}

/// Distinguishes the temporary files of concurrent writers in one process.
static TMP_SEQUENCE: AtomicU64 = AtomicU64::new(0);

impl ExecutionStore for FileStore {
    fn save(&self, record: &ExecutionRecord) -> Result<(), String> {
        let path = self.file_for(&record.execution_arn);
        // A name no other writer (thread or process) uses, so a rename never
        // publishes someone else's half-written file.
        let tmp = path.with_extension(format!(
            "json.{}.{}.tmp",
            std::process::id(),
            TMP_SEQUENCE.fetch_add(1, Ordering::Relaxed)
        ));
        let text = serde_json::to_vec_pretty(record).map_err(|e| e.to_string())?;
        {
            use std::io::Write as _;
            let mut f = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
            f.write_all(&text)
                .map_err(|e| format!("{}: {e}", tmp.display()))?;
            // Durable before it becomes visible: a crash leaves either the
            // old record or the new one, never a torn file.
            f.sync_all().map_err(|e| format!("{}: {e}", tmp.display()))?;
        }
        std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))
    }
    fn load(&self, id: &str) -> Result<Option<ExecutionRecord>, String> {
        let path = self.file_for(id);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }
    fn list_unfinished(&self) -> Result<Vec<ExecutionRecord>, String> {
        let mut out = Vec::new();
        let rd = std::fs::read_dir(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        for entry in rd {
            let entry = entry.map_err(|e| e.to_string())?;
            let p = entry.path();
            if p.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let b = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            let r: ExecutionRecord =
                serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", p.display()))?;
            if r.status == ExecutionStatus::Running {
                out.push(r);
            }
        }
        out.sort_by(|a, b| a.execution_arn.cmp(&b.execution_arn));
        Ok(out)
    }
    /// An advisory lock (`flock`) on a `.lock` file beside the record: the
    /// operating system drops it when its holder exits, crashed or not, so an
    /// abandoned execution is free to resume at once. Lock files stay behind
    /// (deleting one would race with a process about to lock it).
    fn lease(&self, id: &str) -> Result<Option<ExecutionLease>, String> {
        let path = self.file_for(id).with_extension("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(ExecutionLease { _file: Some(file) })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(format!("{}: {e}", path.display())),
        }
    }
}
