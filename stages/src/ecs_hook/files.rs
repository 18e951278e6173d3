//! The embedded hook store: one JSON file per hook execution in a directory of the data
//! directory (`<data>/ecs-hooks/<sha256 of the key>.json`), replaced atomically under an
//! exclusive lock on the directory's `.lock` file, so processes sharing the directory never
//! both win one version. Expired records are removed when a new one is written.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use cutover_core::{BoxFuture, StageError};
use sha2::{Digest, Sha256};

use super::{HookRecord, HookStore};

/// Hook records as files in a directory.
#[derive(Debug, Clone)]
pub struct FileHookStore {
    dir: PathBuf,
}

fn io_error(what: &str, path: &Path, e: io::Error) -> StageError {
    StageError::retryable(format!("ECS hook store: cannot {what} {}: {e}", path.display()))
        .with_kind("EcsHook.Store")
}

impl FileHookStore {
    /// The store in `dir` (created when first written).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn path(&self, key: &str) -> PathBuf {
        let digest = Sha256::digest(key.as_bytes());
        let name: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{name}.json"))
    }

    fn read(path: &Path, now_s: u64) -> io::Result<Option<HookRecord>> {
        match fs::read(path) {
            Ok(bytes) => {
                let record: HookRecord = serde_json::from_slice(&bytes).map_err(io::Error::other)?;
                Ok((record.expires_at > now_s).then_some(record))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn sweep(&self, now_s: u64) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") && matches!(Self::read(&path, now_s), Ok(None)) {
                let _ = fs::remove_file(&path);
            }
        }
    }

    fn put_sync(&self, record: &HookRecord, now_s: u64) -> io::Result<bool> {
        fs::create_dir_all(&self.dir)?;
        let lock = File::create(self.dir.join(".lock"))?;
        lock.lock()?;
        let path = self.path(&record.key);
        let stored = Self::read(&path, now_s)?.map_or(0, |r| r.version);
        if stored + 1 != record.version {
            return Ok(false);
        }
        if record.version == 1 {
            self.sweep(now_s);
        }
        let tmp = path.with_extension(format!("json.tmp{}", std::process::id()));
        fs::write(&tmp, serde_json::to_vec_pretty(record).map_err(io::Error::other)?)?;
        fs::rename(&tmp, &path)?;
        Ok(true)
    }
}

impl HookStore for FileHookStore {
    fn get<'a>(&'a self, key: &'a str, now_s: u64) -> BoxFuture<'a, Result<Option<HookRecord>, StageError>> {
        Box::pin(async move {
            let path = self.path(key);
            Self::read(&path, now_s).map_err(|e| io_error("read", &path, e))
        })
    }

    fn put<'a>(&'a self, record: &'a HookRecord, now_s: u64) -> BoxFuture<'a, Result<bool, StageError>> {
        Box::pin(async move {
            self.put_sync(record, now_s)
                .map_err(|e| io_error("write", &self.path(&record.key), e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health_check::analysis::Tally;

    pub(crate) fn record(key: &str, version: u64, expires_at: u64) -> HookRecord {
        HookRecord {
            key: key.into(),
            stage: "POST_TEST_TRAFFIC_SHIFT".into(),
            pipeline: "p".into(),
            first_at_ms: 0,
            invocations: u32::try_from(version).unwrap(),
            tally: Tally::default(),
            verdict: None,
            version,
            expires_at,
        }
    }

    #[tokio::test]
    async fn versions_are_written_once_in_order_and_expired_records_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileHookStore::new(dir.path().join("hooks"));
        assert!(store.get("k", 10).await.unwrap().is_none());
        assert!(store.put(&record("k", 1, 100), 10).await.unwrap());
        assert!(
            !store.put(&record("k", 1, 100), 10).await.unwrap(),
            "version 1 again loses"
        );
        assert!(
            !store.put(&record("k", 3, 100), 10).await.unwrap(),
            "a skipped version loses"
        );
        assert!(store.put(&record("k", 2, 100), 10).await.unwrap());
        assert_eq!(store.get("k", 10).await.unwrap().unwrap().version, 2);
        // Past its expiry the record is absent, and a new hook execution starts over.
        assert!(store.get("k", 100).await.unwrap().is_none());
        assert!(store.put(&record("other", 1, 300), 200).await.unwrap());
        assert!(!store.path("k").exists(), "swept");
    }
}
