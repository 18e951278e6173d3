//! The embedded rollout store: files in `<data>/rollouts/`, safe to share between `cutover`
//! processes on one host.
//!
//! - `control/<rollout>.json` — each control record, replaced atomically (written beside, then
//!   renamed), so a reader sees the old record or the new one, never half of one;
//! - `services.json` — the running rollout of each service, read and rewritten under an
//!   exclusive lock on `services.lock`;
//! - `audit.jsonl` — the audit log, one JSON object per line, appended under an exclusive lock
//!   on the file itself.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use cutover_core::{BoxFuture, StageError};

use serde::{Deserialize, Serialize};

use super::{AuditEntry, Claim, Control, RolloutStore, Slot};

/// Control records, service slots and the audit log in a directory.
#[derive(Debug, Clone)]
pub struct FileRolloutStore {
    dir: PathBuf,
    /// Whether writes are synced to disk (not in a scratch directory).
    synced: bool,
}

fn io_error(what: &str, path: &Path, e: io::Error) -> StageError {
    StageError::retryable(format!("rollout store: cannot {what} {}: {e}", path.display()))
        .with_kind("Rollouts.Store")
}

impl FileRolloutStore {
    /// The store in `dir` (created when first written).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            synced: true,
        }
    }

    /// The store in `dir` of a scratch data directory
    /// ([`cutover_core::BuildContext::data_is_scratch`]): files are still replaced atomically,
    /// but nothing is synced to disk.
    pub fn scratch(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            synced: false,
        }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The audit log's file.
    pub fn audit_path(&self) -> PathBuf {
        self.dir.join("audit.jsonl")
    }

    fn control_path(&self, rollout: &str) -> PathBuf {
        // Execution names hold no `/` (Step Functions forbids it); keep any other name inside.
        self.dir
            .join("control")
            .join(format!("{}.json", rollout.replace(['/', '\\'], "_")))
    }

    /// Reads the control record of `rollout` (synchronously: a few hundred bytes).
    pub fn read_control(&self, rollout: &str) -> Result<Option<Control>, StageError> {
        let path = self.control_path(rollout);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| io_error("read", &path, io::Error::other(e))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("read", &path, e)),
        }
    }

    /// Replaces the control record of `rollout` (synchronously).
    pub fn write_control(&self, rollout: &str, control: &Control) -> Result<(), StageError> {
        let path = self.control_path(rollout);
        let bytes = serde_json::to_vec_pretty(control).unwrap_or_default();
        cutover_core::fs::write_atomically_with(&path, &bytes, self.synced)
            .map_err(|e| io_error("write", &path, e))
    }

    fn append_audit(&self, entry: &AuditEntry) -> Result<(), StageError> {
        let path = self.audit_path();
        let mut line = serde_json::to_vec(entry).unwrap_or_default();
        line.push(b'\n');
        let append = || -> io::Result<()> {
            fs::create_dir_all(&self.dir)?;
            let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
            file.lock()?;
            file.write_all(&line)?;
            if self.synced {
                file.sync_data()?;
            }
            Ok(())
        };
        append().map_err(|e| io_error("append to", &path, e))
    }

    fn read_audit(&self, rollout: Option<&str>) -> Result<Vec<AuditEntry>, StageError> {
        let path = self.audit_path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error("read", &path, e)),
        };
        Ok(text
            .lines()
            .filter_map(|line| serde_json::from_str::<AuditEntry>(line).ok())
            .filter(|e| rollout.is_none_or(|r| e.rollout == r))
            .collect())
    }

    fn swap_service(&self, service: &str, rollout: &str, at: i64) -> Result<Claim, StageError> {
        let path = self.dir.join("services.json");
        let swap = || -> io::Result<Claim> {
            fs::create_dir_all(&self.dir)?;
            let lock = File::create(self.dir.join("services.lock"))?;
            lock.lock()?;
            let mut slots: BTreeMap<String, SlotFile> = match fs::read(&path) {
                Ok(bytes) => serde_json::from_slice(&bytes).map_err(io::Error::other)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
                Err(e) => return Err(e),
            };
            let (claim, taken) = Slot::claim(slots.get(service).map(SlotFile::slot).as_ref(), rollout, at);
            if let Some(taken) = taken {
                slots.insert(service.to_owned(), SlotFile::Held(taken));
                let bytes = serde_json::to_vec_pretty(&slots).map_err(io::Error::other)?;
                cutover_core::fs::write_atomically_with(&path, &bytes, self.synced)?;
            }
            Ok(claim)
        };
        swap().map_err(|e| io_error("update", &path, e))
    }
}

/// One service's slot in `services.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum SlotFile {
    Held(Slot),
    /// Written before slots were ordered: just the holder, as old as can be.
    Name(String),
}

impl SlotFile {
    fn slot(&self) -> Slot {
        match self {
            SlotFile::Held(slot) => slot.clone(),
            SlotFile::Name(rollout) => Slot {
                rollout: rollout.clone(),
                at: i64::MIN,
                previous: None,
            },
        }
    }
}

impl RolloutStore for FileRolloutStore {
    fn control<'a>(&'a self, rollout: &'a str) -> BoxFuture<'a, Result<Option<Control>, StageError>> {
        Box::pin(async move { self.read_control(rollout) })
    }

    fn set_control<'a>(
        &'a self,
        rollout: &'a str,
        control: &'a Control,
    ) -> BoxFuture<'a, Result<(), StageError>> {
        Box::pin(async move { self.write_control(rollout, control) })
    }

    fn audit<'a>(&'a self, entry: &'a AuditEntry) -> BoxFuture<'a, Result<(), StageError>> {
        Box::pin(async move { self.append_audit(entry) })
    }

    fn audit_log<'a>(
        &'a self,
        rollout: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<AuditEntry>, StageError>> {
        Box::pin(async move { self.read_audit(rollout) })
    }

    fn claim_service<'a>(
        &'a self,
        service: &'a str,
        rollout: &'a str,
        at: i64,
    ) -> BoxFuture<'a, Result<Claim, StageError>> {
        Box::pin(async move { self.swap_service(service, rollout, at) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollouts::Action;

    fn control(action: Action) -> Control {
        Control {
            action,
            target: None,
            reason: "why".into(),
            actor: "me".into(),
            at: "2026-11-29T05:00:00Z".into(),
            id: "1".into(),
        }
    }

    #[tokio::test]
    async fn control_records_replace_each_other_and_the_audit_log_appends() {
        let dir = tempfile::tempdir().unwrap();
        // Synced, and in a scratch directory (the same files, not synced).
        for store in [
            FileRolloutStore::new(dir.path().join("rollouts")),
            FileRolloutStore::scratch(dir.path().join("scratch")),
        ] {
            assert_eq!(store.control("a").await.unwrap(), None);
            store.set_control("a", &control(Action::Pause)).await.unwrap();
            store.set_control("a", &control(Action::Resume)).await.unwrap();
            assert_eq!(store.control("a").await.unwrap().unwrap().action, Action::Resume);
            assert_eq!(store.control("b").await.unwrap(), None);
            for (rollout, action) in [("a", Action::Pause), ("b", Action::Abort), ("a", Action::Resume)] {
                store
                    .audit(&AuditEntry {
                        at: "t".into(),
                        rollout: rollout.into(),
                        action,
                        reason: "r".into(),
                        actor: "me".into(),
                        change: Value::Null,
                        id: "x".into(),
                    })
                    .await
                    .unwrap();
            }
            let a: Vec<Action> = store
                .audit_log(Some("a"))
                .await
                .unwrap()
                .iter()
                .map(|e| e.action)
                .collect();
            assert_eq!(a, vec![Action::Pause, Action::Resume]);
            assert_eq!(store.audit_log(None).await.unwrap().len(), 3);
            // What it wrote is there for a store opened anew.
            let again = FileRolloutStore::new(store.dir());
            assert_eq!(again.control("a").await.unwrap().unwrap().action, Action::Resume);
        }
    }

    #[tokio::test]
    async fn a_service_slot_hands_over_to_the_later_deployment_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileRolloutStore::new(dir.path());
        let taken = |previous: Option<&str>| Claim::Taken {
            previous: previous.map(str::to_owned),
        };
        assert_eq!(store.claim_service("cats", "v2", 20).await.unwrap(), taken(None));
        assert_eq!(
            store.claim_service("cats", "v2", 20).await.unwrap(),
            taken(None),
            "its own slot"
        );
        assert_eq!(
            store.claim_service("cats", "v3", 30).await.unwrap(),
            taken(Some("v2"))
        );
        assert_eq!(
            store.claim_service("cats", "v3", 30).await.unwrap(),
            taken(Some("v2")),
            "a claim tried again (its answer lost) still learns what it replaced"
        );
        assert_eq!(
            store.claim_service("cats", "v1", 10).await.unwrap(),
            Claim::Later {
                holder: "v3".into(),
                at: 30
            },
            "an event delivered late does not hand the service back"
        );
        assert_eq!(
            store.claim_service("cats", "v4", 30).await.unwrap(),
            taken(Some("v3")),
            "same time: the later arrival"
        );
        assert_eq!(store.claim_service("dogs", "v1", 5).await.unwrap(), taken(None));
    }

    #[tokio::test]
    async fn slots_written_before_they_were_ordered_are_read_as_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("services.json"), r#"{"cats": "v2"}"#).unwrap();
        let store = FileRolloutStore::new(dir.path());
        assert_eq!(
            store.claim_service("cats", "v3", 0).await.unwrap(),
            Claim::Taken {
                previous: Some("v2".into())
            }
        );
    }

    use serde_json::Value;
}
