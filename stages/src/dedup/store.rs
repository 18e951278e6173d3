//! The idempotency record and the [`DedupStore`] contract every backend honours.
//!
//! A claim is one atomic conditional write. It succeeds when the key is absent, when its record
//! has expired (TTL), when it is an in-progress claim whose lease ran out (its claimer crashed),
//! or when it is the in-progress claim of the owner the caller names as the one it replaces (a
//! takeover by another attempt of the same event); otherwise it fails and returns the existing
//! record, so a lost race costs no extra read.
//!
//! A claim recognises itself: a write that fails against a record carrying the caller's own
//! owner token was in fact applied by an earlier try of the same request (its answer was lost and
//! the SDK retried), so it has won. Completing, renewing, releasing and recording a failure are
//! guarded by the owner token, so a claimer whose lease was taken over cannot overwrite its
//! successor, and each of them may be repeated safely.

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
    /// Whether a new claim may take this record's place at `now`; `replacing` is the owner of
    /// an in-progress claim the caller may take over.
    pub fn claimable(&self, now: i64, replacing: Option<&str>) -> bool {
        self.expires <= now
            || (self.status == Status::InProgress
                && (self.lease_expires <= now || replacing == Some(self.owner.as_str())))
    }

    /// The outcome of a conditional claim that found this record in place of `claim`.
    pub fn contested_by(self, claim: &Record) -> Claim {
        if self.owner == claim.owner && self.status == Status::InProgress {
            // The caller's own write, applied by a try whose answer was lost.
            Claim::Won
        } else {
            Claim::Lost(self)
        }
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
    /// Claims `record.key` with one conditional write (see the module docs), taking over the
    /// in-progress claim of `replacing` if that owner still holds it.
    fn claim<'a>(
        &'a self,
        record: &'a Record,
        now: i64,
        replacing: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Claim, StageError>>;
    /// Reads the record of `key`, if any (strongly consistent).
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Record>, StageError>>;
    /// Extends an in-progress claim's lease to `lease_expires` — if `owner` still holds it.
    /// `Ok(false)`: somebody else holds the key now (the lease ran out and was taken over).
    fn renew<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        lease_expires: i64,
    ) -> BoxFuture<'a, Result<bool, StageError>>;
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
    fn claim<'a>(
        &'a self,
        record: &'a Record,
        now: i64,
        replacing: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Claim, StageError>> {
        Box::pin(async move {
            self.with(|m| match m.get(&record.key) {
                Some(existing) if !existing.claimable(now, replacing) => {
                    existing.clone().contested_by(record)
                }
                _ => {
                    m.insert(record.key.clone(), record.clone());
                    Claim::Won
                }
            })
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Record>, StageError>> {
        Box::pin(async move { self.with(|m| m.get(key).cloned()) })
    }

    fn renew<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        lease_expires: i64,
    ) -> BoxFuture<'a, Result<bool, StageError>> {
        Box::pin(async move {
            self.with(|m| match m.get_mut(key) {
                Some(r) if r.owner == owner && r.status == Status::InProgress => {
                    r.lease_expires = lease_expires;
                    true
                }
                _ => false,
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
