//! Persistence of executions so a restarted process can resume them.
//!
//! The engine saves an [`ExecutionRecord`] after every completed top-level
//! state: the state to run next, its input, and the history so far.
//! [`MemoryStore`] keeps records in memory; [`FileStore`] keeps one JSON
//! file per execution, replaced atomically (temporary file + rename), with
//! the history beside it in a JSON Lines file that only grows, and lets one
//! process at a time drive an execution (see [`ExecutionStore::lease`]).

use crate::history::HistoryEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::fmt::Debug;
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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
    /// Whether the checkpoints of a running execution are kept: a store that keeps only an
    /// execution's start and end (a scratch directory) says no, and the engine then saves the
    /// start and the end only, instead of assembling a record for each checkpoint. The default:
    /// yes.
    fn keeps_checkpoints(&self) -> bool {
        true
    }
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

/// One JSON file per execution in a directory, and its history beside it.
///
/// A rollout's history grows with every state (thousands of events when its
/// waits tick every second), and the engine saves after every top-level
/// state: rewriting the history each time would write its square. So
/// `<record>.json` holds the record without its history but with the number
/// of events (`history_len`), and `<record>.history.jsonl` the events, one
/// per line, appended and synced *before* the record that counts them is
/// replaced: a crash between the two leaves extra lines, which a load
/// ignores and the next save overwrites. Records written with the history
/// inline (before this layout) still load.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
    /// Events known to be in each history file (by record path), so a save
    /// appends only the new ones.
    appended: Arc<Mutex<HashMap<PathBuf, usize>>>,
    /// A scratch directory: records only, not synced (see [`FileStore::scratch`]).
    scratch: bool,
}

impl FileStore {
    /// Use (and create) `dir`.
    pub fn new(dir: impl AsRef<Path>) -> Result<FileStore, String> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(FileStore {
            dir,
            appended: Arc::default(),
            scratch: false,
        })
    }

    /// For a scratch directory that only this process uses and that is deleted when it ends
    /// (a replay's): an execution's record is written when it starts and when it ends, without
    /// its history and not at every checkpoint between (a rollout checkpoints every second of
    /// its bakes: that was most of what a replayed rollout cost), and writes are not synced,
    /// since a crash loses the directory anyway. Records are still replaced atomically: this
    /// process reads them while its executions run. Loading a record gives it without its
    /// history.
    pub fn scratch(mut self) -> FileStore {
        self.scratch = true;
        self
    }

    /// The record files of the directory, by file name.
    fn record_paths(&self) -> Result<Vec<PathBuf>, String> {
        let mut paths = Vec::new();
        let rd = std::fs::read_dir(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        for entry in rd {
            let p = entry.map_err(|e| e.to_string())?.path();
            if p.extension().and_then(|e| e.to_str()) == Some("json") {
                paths.push(p);
            }
        }
        paths.sort();
        Ok(paths)
    }

    /// Every record in the directory (finished or not), by file name.
    pub fn list(&self) -> Result<Vec<ExecutionRecord>, String> {
        let paths = self.record_paths()?;
        let mut out = Vec::new();
        for p in paths {
            // A record removed between the listing and the read is skipped.
            if let Some(r) = read_record(&p)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Every record in the directory without its history (only the small record files are
    /// read): what listing and scanning need, however long the histories have grown.
    pub fn headers(&self) -> Result<Vec<RecordHeader>, String> {
        let paths = self.record_paths()?;
        let mut out = Vec::new();
        for p in paths {
            if let Some(h) = read_header(&p)? {
                out.push(h);
            }
        }
        Ok(out)
    }

    /// One record without its history, by execution ARN.
    pub fn header(&self, id: &str) -> Result<Option<RecordHeader>, String> {
        read_header(&self.file_for(id))
    }

    /// Events `from..to` of the execution `id`'s history, read from byte `offset` of its history
    /// file (where event `from` starts: 0 for event 0), and the offset after them: a reader that
    /// keeps the offset reads only what was appended since. `None` for a record of the older
    /// layout (history inline): load it whole.
    pub fn history_since(
        &self,
        id: &str,
        from: usize,
        offset: u64,
        to: usize,
    ) -> Result<Option<(Vec<HistoryEvent>, u64)>, String> {
        use std::io::{BufRead, Seek, SeekFrom};
        let file = history_path(&self.file_for(id));
        let mut f = match std::fs::File::open(&file) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", file.display())),
        };
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| format!("{}: {e}", file.display()))?;
        let mut reader = std::io::BufReader::new(f);
        let mut events = Vec::with_capacity(to.saturating_sub(from));
        let mut at = offset;
        let mut line = String::new();
        while from + events.len() < to {
            line.clear();
            let n = reader
                .read_line(&mut line)
                .map_err(|e| format!("{}: {e}", file.display()))?;
            if n == 0 || !line.ends_with('\n') {
                return Err(format!(
                    "{}: {} events, the record counts {to}",
                    file.display(),
                    from + events.len()
                ));
            }
            at += n as u64;
            events.push(serde_json::from_str(&line).map_err(|e| format!("{}: {e}", file.display()))?);
        }
        Ok(Some((events, at)))
    }

    /// Deletes the execution `id`: its record, history and lease files. For finished
    /// executions (retention): a running one would be saved again by its driver.
    pub fn remove(&self, id: &str) -> Result<(), String> {
        let path = self.file_for(id);
        for file in [history_path(&path), path.with_extension("lock"), path.clone()] {
            match std::fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("{}: {e}", file.display())),
            }
        }
        if let Ok(mut appended) = self.appended.lock() {
            appended.remove(&path);
        }
        Ok(())
    }

    fn save_history(&self, path: &Path, history: &[HistoryEvent]) -> Result<(), String> {
        let file = history_path(path);
        let mut appended = self.appended.lock().map_err(|e| e.to_string())?;
        let known = appended.get(path).copied().filter(|n| *n <= history.len());
        match known {
            Some(n) => {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&file)
                    .map_err(|e| format!("{}: {e}", file.display()))?;
                let mut text = Vec::new();
                for event in &history[n..] {
                    serde_json::to_writer(&mut text, event).map_err(|e| e.to_string())?;
                    text.push(b'\n');
                }
                f.write_all(&text)
                    .map_err(|e| format!("{}: {e}", file.display()))?;
                f.sync_data().map_err(|e| format!("{}: {e}", file.display()))?;
            }
            // First save by this store (or a history that shrank): write the
            // whole file, which also drops lines a crash left past the count.
            None => {
                let mut text = Vec::new();
                for event in history {
                    serde_json::to_writer(&mut text, event).map_err(|e| e.to_string())?;
                    text.push(b'\n');
                }
                self.write(&file, &text)?;
            }
        }
        appended.insert(path.to_owned(), history.len());
        Ok(())
    }

    /// Replaces the file at `path` with `bytes` atomically (readers in this process, such as
    /// a duplicate start or a superseding rollout reading a status, never see a torn file),
    /// synced unless the store is scratch.
    fn write(&self, path: &Path, bytes: &[u8]) -> Result<(), String> {
        write_atomically(path, bytes, !self.scratch)
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

/// The record as `<record>.json` holds it: every field but the history, and
/// how many events of the history file are its history.
#[derive(Serialize)]
struct Header<'a> {
    execution_arn: &'a str,
    name: &'a str,
    state_machine: &'a str,
    status: ExecutionStatus,
    input: &'a Value,
    start_time: &'a str,
    next_state: &'a Option<String>,
    next_input: &'a Option<Value>,
    output: &'a Option<Value>,
    error: &'a Option<String>,
    cause: &'a Option<String>,
    history_len: usize,
}

impl<'a> Header<'a> {
    fn of(r: &'a ExecutionRecord) -> Self {
        Header {
            execution_arn: &r.execution_arn,
            name: &r.name,
            state_machine: &r.state_machine,
            status: r.status,
            input: &r.input,
            start_time: &r.start_time,
            next_state: &r.next_state,
            next_input: &r.next_input,
            output: &r.output,
            error: &r.error,
            cause: &r.cause,
            history_len: r.history.len(),
        }
    }
}

/// The history file of the record at `path`.
fn history_path(path: &Path) -> PathBuf {
    path.with_extension("history.jsonl")
}

/// Writes `bytes` to a temporary file beside `path` and renames it over
/// `path`, synced first (with `sync`): a crash leaves the old file or the new
/// one, never a torn one, and a reader never sees a half-written one. The
/// temporary name is no other writer's (thread or process), so a rename never
/// publishes someone else's half-written file.
fn write_atomically(path: &Path, bytes: &[u8], sync: bool) -> Result<(), String> {
    let tmp = path.with_extension(format!(
        "{}.{}.{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("json"),
        std::process::id(),
        TMP_SEQUENCE.fetch_add(1, Ordering::Relaxed)
    ));
    {
        let mut f = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        f.write_all(bytes)
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        if sync {
            f.sync_all().map_err(|e| format!("{}: {e}", tmp.display()))?;
        }
    }
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A record without its history: what [`FileStore::headers`] lists.
#[derive(Debug, Clone)]
pub struct RecordHeader {
    /// The record, its `history` left empty.
    pub record: ExecutionRecord,
    /// How many events its history holds.
    pub history_len: usize,
    /// When the record was last saved (for a finished execution: about when it ended).
    pub saved: Option<std::time::SystemTime>,
}

/// Reads the record at `path` without its history; `None` when there is none.
fn read_header(path: &Path) -> Result<Option<RecordHeader>, String> {
    let (bytes, saved) = match std::fs::read(path) {
        Ok(b) => (b, std::fs::metadata(path).and_then(|m| m.modified()).ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut value: Value = serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let fields = value
        .as_object_mut()
        .ok_or_else(|| format!("{}: not a record", path.display()))?;
    let history_len = match fields.shift_remove("history_len").and_then(|n| n.as_u64()) {
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        // The older layout keeps the history inline: count it, then drop it.
        None => fields
            .get("history")
            .and_then(Value::as_array)
            .map_or(0, Vec::len),
    };
    fields.insert("history".into(), Value::Array(Vec::new()));
    let record: ExecutionRecord =
        serde_json::from_value(value).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some(RecordHeader {
        record,
        history_len,
        saved,
    }))
}

/// Reads the record at `path` with its history (from the history file, or
/// inline in a record of the older layout); `None` when there is none.
fn read_record(path: &Path) -> Result<Option<ExecutionRecord>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut value: Value = serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let history_len = value
        .as_object_mut()
        .and_then(|fields| fields.shift_remove("history_len"))
        .and_then(|n| n.as_u64());
    let mut history = Vec::new();
    if let Some(n) = history_len {
        let file = history_path(path);
        // An empty history may have no file (a scratch store writes none).
        if n > 0 {
            let f = std::fs::File::open(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            for line in std::io::BufReader::new(f).lines().take(n as usize) {
                let line = line.map_err(|e| format!("{}: {e}", file.display()))?;
                history.push(serde_json::from_str(&line).map_err(|e| format!("{}: {e}", file.display()))?);
            }
        }
        if history.len() as u64 != n {
            return Err(format!(
                "{}: {} events, the record counts {n}",
                file.display(),
                history.len()
            ));
        }
        if let Value::Object(fields) = &mut value {
            fields.insert("history".into(), Value::Array(Vec::new()));
        }
    }
    let mut record: ExecutionRecord =
        serde_json::from_value(value).map_err(|e| format!("{}: {e}", path.display()))?;
    if history_len.is_some() {
        record.history = history;
    }
    Ok(Some(record))
}

impl ExecutionStore for FileStore {
    fn keeps_checkpoints(&self) -> bool {
        !self.scratch
    }

    fn save(&self, record: &ExecutionRecord) -> Result<(), String> {
        let path = self.file_for(&record.execution_arn);
        if self.scratch {
            // A scratch directory keeps each execution's record, written when it starts (a
            // start is then known by its name and input) and when it ends, without its history:
            // the checkpoints between serve a resume after a crash, which a scratch directory
            // does not survive, and the history readers in other processes, which it has none
            // of.
            let started = self
                .appended
                .lock()
                .map_err(|e| e.to_string())?
                .insert(path.clone(), 0)
                .is_some();
            if started && record.status == ExecutionStatus::Running {
                return Ok(());
            }
            let mut header = Header::of(record);
            header.history_len = 0;
            let text = serde_json::to_vec_pretty(&header).map_err(|e| e.to_string())?;
            return self.write(&path, &text);
        }
        self.save_history(&path, &record.history)?;
        let text = serde_json::to_vec_pretty(&Header::of(record)).map_err(|e| e.to_string())?;
        self.write(&path, &text)
    }
    fn load(&self, id: &str) -> Result<Option<ExecutionRecord>, String> {
        read_record(&self.file_for(id))
    }
    fn list_unfinished(&self) -> Result<Vec<ExecutionRecord>, String> {
        // Only the running ones' histories are read: finished executions accumulate.
        let mut out = Vec::new();
        for h in self.headers()? {
            if h.record.status == ExecutionStatus::Running
                && let Some(r) = self.load(&h.record.execution_arn)?
            {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::EventKind;

    fn record(events: usize) -> ExecutionRecord {
        ExecutionRecord {
            execution_arn: "arn:aws:states:us-east-1:1:execution:m:e".into(),
            name: "e".into(),
            state_machine: "m".into(),
            status: ExecutionStatus::Running,
            input: serde_json::json!({"a": 1}),
            start_time: "2026-11-29T00:00:00Z".into(),
            next_state: Some("S".into()),
            next_input: Some(serde_json::json!({"b": 2})),
            output: None,
            error: None,
            cause: None,
            history: (1..=events as u64)
                .map(|id| HistoryEvent {
                    id,
                    previous_event_id: id - 1,
                    timestamp: "2026-11-29T00:00:00Z".into(),
                    kind: EventKind::StateEntered {
                        name: format!("S{id}"),
                        input: std::sync::Arc::new(serde_json::json!({})),
                    },
                })
                .collect(),
        }
    }

    #[test]
    fn saves_append_the_history_and_loads_read_exactly_the_counted_events() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path()).unwrap();
        let id = record(0).execution_arn;
        for n in [0, 1, 5, 6, 40] {
            store.save(&record(n)).unwrap();
            assert_eq!(store.load(&id).unwrap(), Some(record(n)));
        }
        let path = store.file_for(&id);
        let header = std::fs::read_to_string(&path).unwrap();
        assert!(!header.contains("\"history\""), "{header}");
        assert_eq!(
            std::fs::read_to_string(history_path(&path))
                .unwrap()
                .lines()
                .count(),
            40
        );

        // A crash after appending but before the record was replaced: the
        // extra lines are not history, and a new store's save drops them.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(history_path(&path))
            .unwrap();
        f.write_all(b"{\"torn\n").unwrap();
        assert_eq!(store.load(&id).unwrap(), Some(record(40)));
        let again = FileStore::new(dir.path()).unwrap();
        again.save(&record(41)).unwrap();
        assert_eq!(again.load(&id).unwrap(), Some(record(41)));
        assert_eq!(again.list().unwrap(), vec![record(41)]);
        assert_eq!(again.list_unfinished().unwrap(), vec![record(41)]);
    }

    #[test]
    fn a_scratch_store_writes_an_execution_when_it_starts_and_ends_without_its_history() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path()).unwrap().scratch();
        let id = record(0).execution_arn;
        let without_history = |mut r: ExecutionRecord| {
            r.history.clear();
            r
        };
        // The start is written: a second start by the same name finds it, input and all.
        store.save(&record(1)).unwrap();
        assert_eq!(store.load(&id).unwrap(), Some(without_history(record(1))));
        // Checkpoints while it runs are not.
        let mut later = record(7);
        later.next_state = Some("T".into());
        store.save(&later).unwrap();
        assert_eq!(store.load(&id).unwrap().unwrap().next_state.as_deref(), Some("S"));
        // The end is.
        let mut ended = record(9);
        ended.status = ExecutionStatus::Succeeded;
        ended.next_state = None;
        ended.output = Some(serde_json::json!({"done": true}));
        store.save(&ended).unwrap();
        assert_eq!(store.load(&id).unwrap(), Some(without_history(ended)));
        assert!(!history_path(&store.file_for(&id)).exists());
        // Only the record: no history, no temporary files left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_record_with_its_history_inline_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path()).unwrap();
        let old = record(3);
        std::fs::write(
            store.file_for(&old.execution_arn),
            serde_json::to_vec_pretty(&old).unwrap(),
        )
        .unwrap();
        assert_eq!(store.load(&old.execution_arn).unwrap(), Some(old));
    }
}
