//! The embedded dedup store: one SQLite file, safe to share between `cutover` processes on a
//! host.
//!
//! Why SQLite: a claim must be atomic across processes, and SQLite's `BEGIN IMMEDIATE` takes
//! the database's write lock before reading, so the read-decide-write of a claim is one
//! serialised step even when two processes race on the same key; WAL mode keeps readers from
//! blocking it, and `busy_timeout` makes a contending process wait instead of failing. A plain
//! file with `flock` would need the same protocol written by hand.
//!
//! Expired records are deleted now and then (every 256 claims, and when the store opens).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cutover_core::{BoxFuture, StageError};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::store::{Claim, DedupStore, Record, Status};

/// The SQLite-backed store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    claims: Arc<AtomicU32>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS dedup (
    key           TEXT PRIMARY KEY,
    status        TEXT NOT NULL,
    lease_expires INTEGER NOT NULL,
    expires       INTEGER NOT NULL,
    payload_hash  TEXT NOT NULL,
    owner         TEXT NOT NULL,
    claimed_at    INTEGER NOT NULL,
    event_id      TEXT NOT NULL,
    result        TEXT
);
CREATE INDEX IF NOT EXISTS dedup_expires ON dedup (expires);
";

/// How long a process waits for another one holding the store's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

fn db_error(path: &Path, e: &rusqlite::Error) -> StageError {
    let message = format!("dedup store {}: {e}", path.display());
    if is_busy(e) {
        StageError::retryable(message).with_kind("Dedup.StoreBusy")
    } else {
        StageError::permanent(message)
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path, now: i64) -> Result<Self, crate::Error> {
        Self::open_with(path, now, false)
    }

    /// Opens the store at `path` in a scratch directory (a replay's: one process, deleted at
    /// exit), whose writes need not survive a crash: SQLite neither syncs them nor keeps a
    /// write-ahead log.
    pub fn open_scratch(path: &Path, now: i64) -> Result<Self, crate::Error> {
        Self::open_with(path, now, true)
    }

    fn open_with(path: &Path, now: i64, scratch: bool) -> Result<Self, crate::Error> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|error| crate::Error::CreateDir {
                path: dir.to_owned(),
                error,
            })?;
        }
        let failed = |action, error| crate::Error::Sqlite {
            action,
            path: path.to_owned(),
            error,
        };
        let mut conn = Connection::open(path).map_err(|e| failed("open", e))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| failed("open", e))?;
        // Two processes opening a new store at once contend for the switch to WAL and for the
        // schema; SQLite reports some of those conflicts as busy without waiting (it would
        // deadlock otherwise), so the setup retries them until the busy timeout is spent.
        let setup = |conn: &mut Connection| -> Result<(), rusqlite::Error> {
            // A scratch store has one process and no crash to survive: its journal stays in
            // memory (no WAL file to create, map and checkpoint at close). Several connections
            // (one per service) still take turns through the busy timeout.
            conn.pragma_update(None, "journal_mode", if scratch { "MEMORY" } else { "WAL" })?;
            conn.pragma_update(None, "synchronous", if scratch { "OFF" } else { "NORMAL" })?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(SCHEMA)?;
            tx.execute("DELETE FROM dedup WHERE expires <= ?1", [now])?;
            tx.commit()
        };
        let started = std::time::Instant::now();
        loop {
            match setup(&mut conn) {
                Ok(()) => break,
                Err(e) if is_busy(&e) && started.elapsed() < BUSY_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(failed("set up the dedup table in", e)),
            }
        }
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_owned(),
            claims: Arc::new(AtomicU32::new(0)),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, StageError> {
        let conn = self.conn.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| StageError::permanent("dedup store connection poisoned"))?;
            f(&mut guard).map_err(|e| db_error(&path, &e))
        })
        .await
        .map_err(|e| StageError::retryable(format!("dedup store task failed: {e}")))?
    }
}

fn read(row: &rusqlite::Row<'_>) -> Result<Record, rusqlite::Error> {
    let status: String = row.get("status")?;
    Ok(Record {
        key: row.get("key")?,
        status: Status::parse(&status).unwrap_or(Status::InProgress),
        lease_expires: row.get("lease_expires")?,
        expires: row.get("expires")?,
        payload_hash: row.get("payload_hash")?,
        owner: row.get("owner")?,
        claimed_at: row.get("claimed_at")?,
        event_id: row.get("event_id")?,
        result: row.get("result")?,
    })
}

impl DedupStore for SqliteStore {
    fn claim<'a>(
        &'a self,
        record: &'a Record,
        now: i64,
        replacing: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Claim, StageError>> {
        let record = record.clone();
        let replacing = replacing.map(str::to_owned);
        let sweep = self.claims.fetch_add(1, Ordering::Relaxed) % 256 == 255;
        Box::pin(self.blocking(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let existing = tx
                .query_row("SELECT * FROM dedup WHERE key = ?1", [&record.key], read)
                .optional()?;
            if let Some(existing) = existing.filter(|r| !r.claimable(now, replacing.as_deref())) {
                tx.commit()?;
                return Ok(existing.contested_by(&record));
            }
            tx.execute(
                "INSERT OR REPLACE INTO dedup (key, status, lease_expires, expires, payload_hash, owner, claimed_at, event_id, result)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL)",
                params![
                    record.key,
                    record.status.as_str(),
                    record.lease_expires,
                    record.expires,
                    record.payload_hash,
                    record.owner,
                    record.claimed_at,
                    record.event_id
                ],
            )?;
            if sweep {
                tx.execute("DELETE FROM dedup WHERE expires <= ?1", [now])?;
            }
            tx.commit()?;
            Ok(Claim::Won)
        }))
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Record>, StageError>> {
        let key = key.to_owned();
        Box::pin(self.blocking(move |conn| {
            conn.query_row("SELECT * FROM dedup WHERE key = ?1", [&key], read)
                .optional()
        }))
    }

    fn renew<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        lease_expires: i64,
    ) -> BoxFuture<'a, Result<bool, StageError>> {
        let (key, owner) = (key.to_owned(), owner.to_owned());
        Box::pin(self.blocking(move |conn| {
            conn.execute(
                "UPDATE dedup SET lease_expires = ?3 WHERE key = ?1 AND owner = ?2 AND status = 'IN_PROGRESS'",
                params![key, owner, lease_expires],
            )
            .map(|changed| changed == 1)
        }))
    }

    fn finish<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        status: Status,
        result: &'a str,
        expires: i64,
    ) -> BoxFuture<'a, Result<(), StageError>> {
        let (key, owner, result) = (key.to_owned(), owner.to_owned(), result.to_owned());
        Box::pin(self.blocking(move |conn| {
            conn.execute(
                "UPDATE dedup SET status = ?3, result = ?4, expires = ?5 WHERE key = ?1 AND owner = ?2",
                params![key, owner, status.as_str(), result, expires],
            )
            .map(drop)
        }))
    }

    fn release<'a>(&'a self, key: &'a str, owner: &'a str) -> BoxFuture<'a, Result<(), StageError>> {
        let (key, owner) = (key.to_owned(), owner.to_owned());
        Box::pin(self.blocking(move |conn| {
            conn.execute(
                "DELETE FROM dedup WHERE key = ?1 AND owner = ?2",
                params![key, owner],
            )
            .map(drop)
        }))
    }
}
