//! The idempotency record and the [`DedupStore`] contract every backend honours.
//!
//! A claim is one atomic conditional write. It succeeds when the key is absent, when its record
//! has expired (TTL), or when it is an in-progress claim whose lease ran out (its claimer
//! crashed); otherwise it fails and returns the existing record, so a lost race costs no extra
//! read. Completing, releasing and recording a failure are guarded by the claimer's token, so a
//! claimer whose lease was taken over cannot overwrite its successor.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use cutover_core::{BoxFuture, StageError};
use serde::{Deserialize, Serialize};

/// Where a key stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Claimed; the rest of the pipeline is running (or its claimer died: see the lease).
    InProgress,
    /// The rest of the pipeline succeeded; the key blocks duplicates until it expires.
    Completed,
    /// The rest of the pipeline failed permanently; kept so the failure is visible.
    Failed,
}

impl Status {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::InProgress => "IN_PROGRESS",
            Status::Completed => "COMPLETED",
            Status::Failed => "FAILED",
        }
    }

    /// Reads the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "IN_PROGRESS" => Some(Status::InProgress),
            "COMPLETED" => Some(Status::Completed),
            "FAILED" => Some(Status::Failed),
            _ => None,
        }
    }
}

/// One idempotency record. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The rendered key.
    pub key: String,
    /// Where it stands.
    pub status: Status,
    /// Until when an in-progress claim blocks others.
    pub lease_expires: i64,
    /// When the record stops counting (the DynamoDB TTL attribute).
    pub expires: i64,
    /// Hash of the deciding payload.
    pub payload_hash: String,
    /// Who claimed it (`host/pid/event-id`), also the token guarding later updates.
    pub owner: String,
    /// When it was claimed.
    pub claimed_at: i64,
    /// The id of the event that claimed it.
    pub event_id: String,
    /// What the pipeline produced (e.g. the execution ARN), or the failure.
    pub result: Option<String>,
}

impl Record {
    /// Whether a new claim may take this record's place at `now`.
    pub fn claimable(&self, now: i64) -> bool {
        self.expires <= now || (self.status == Status::InProgress && self.lease_expires <= now)
    }
}

/// The result of a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This caller owns the key now.
    Won,
    /// Somebody else holds it; here is their record.
    Lost(Record),
}

/// Storage for idempotency records.
pub trait DedupStore: Send + Sync + fmt::Debug {
    /// Claims `record.key` with one conditional write (see the module docs).
    fn claim<'a>(&'a self, record: &'a Record, now: i64) -> BoxFuture<'a, Result<Claim, StageError>>;
    /// Marks the key `Completed` with the pipeline's result, or `Failed` with the permanent
    /// failure, and sets when it expires — if `owner` still holds it.
    fn finish<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        status: Status,
        result: &'a str,
        expires: i64,
    ) -> BoxFuture<'a, Result<(), StageError>>;
    /// Deletes the claim so a redelivered event can proceed, if `owner` still holds it.
    fn release<'a>(&'a self, key: &'a str, owner: &'a str) -> BoxFuture<'a, Result<(), StageError>>;
}

/// In-memory store for tests: the same semantics, one process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<HashMap<String, Record>>,
}

impl MemoryStore {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Record>) -> T) -> Result<T, StageError> {
        let mut guard = self
            .records
            .lock()
            .map_err(|_| StageError::permanent("dedup memory store poisoned"))?;
        Ok(f(&mut guard))
    }
}

impl DedupStore for MemoryStore {
    fn claim<'a>(&'a self, record: &'a Record, now: i64) -> BoxFuture<'a, Result<Claim, StageError>> {
        Box::pin(async move {
            self.with(|m| match m.get(&record.key) {
                Some(existing) if !existing.claimable(now) => Claim::Lost(existing.clone()),
                _ => {
                    m.insert(record.key.clone(), record.clone());
                    Claim::Won
                }
            })
        })
    }

    fn finish<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        status: Status,
        result: &'a str,
        expires: i64,
    ) -> BoxFuture<'a, Result<(), StageError>> {
        Box::pin(async move {
            self.with(|m| {
                if let Some(r) = m.get_mut(key).filter(|r| r.owner == owner) {
                    r.status = status;
                    r.result = Some(result.to_owned());
                    r.expires = expires;
                }
            })
        })
    }

    fn release<'a>(&'a self, key: &'a str, owner: &'a str) -> BoxFuture<'a, Result<(), StageError>> {
        Box::pin(async move {
            self.with(|m| {
                if m.get(key).is_some_and(|r| r.owner == owner) {
                    m.remove(key);
                }
            })
        })
    }
}
