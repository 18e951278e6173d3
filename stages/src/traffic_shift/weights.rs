//! The weights of the embedded router's weighted name: a small JSON file in the data directory,
//! shared by the router that sets them ([`super::local`]) and the DNS server that answers by
//! them ([`super::dns`]).
//!
//! The file is replaced atomically (written beside, then renamed), so a crash never leaves a
//! half-written state and the weights survive a restart; a server in another process sees a
//! change because the store re-reads the file.

use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Weights;

/// The weighted name the embedded zone serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSpec {
    /// The zone apex, lowercase, no trailing dot.
    pub zone: String,
    /// The weighted name, lowercase, no trailing dot.
    pub record: String,
    /// Blue's addresses.
    pub blue: Vec<IpAddr>,
    /// Green's addresses.
    pub green: Vec<IpAddr>,
    /// Answer TTL in seconds.
    pub ttl: u32,
}

/// Which side an answer sends a client to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The current version.
    Blue,
    /// The new version.
    Green,
}

#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    record: String,
    blue: u8,
    green: u8,
    change: u64,
    /// The weights before the last change (all blue before the first).
    #[serde(default = "all_blue")]
    previous: [u8; 2],
    /// When the last change was made, milliseconds since the epoch.
    #[serde(default)]
    changed_at_ms: u64,
    /// How long after a change the DNS server still answers by `previous`.
    #[serde(default)]
    answer_lag_ms: u64,
}

fn all_blue() -> [u8; 2] {
    [100, 0]
}

#[derive(Debug)]
struct State {
    weights: Weights,
    change: u64,
    previous: Weights,
    changed_at_ms: u64,
    answer_lag_ms: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How many answers the DNS server gave each side of one name, since the store was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AnswerCounts {
    /// Answers sending clients to blue.
    pub blue: u64,
    /// Answers sending clients to green.
    pub green: u64,
}

/// The weights of one weighted name, kept in a JSON file and shared between the router and
/// the DNS server. A name never shifted is all blue.
#[derive(Debug)]
pub struct WeightStore {
    spec: RecordSpec,
    path: PathBuf,
    /// Whether a change is synced to disk before it is in force (not in a scratch directory).
    synced: bool,
    state: Mutex<State>,
    answers: AtomicU64,
    answered_blue: AtomicU64,
    answered_green: AtomicU64,
    answer_lag_ms: AtomicU64,
}

impl WeightStore {
    /// Opens (or starts) the weights of `spec` kept at `path`.
    pub fn open(spec: RecordSpec, path: impl Into<PathBuf>) -> io::Result<Arc<Self>> {
        Self::open_with(spec, path.into(), true)
    }

    /// Opens weights kept in a scratch data directory
    /// ([`cutover_core::BuildContext::data_is_scratch`]): changes still replace the file
    /// atomically, but are not synced to disk.
    pub fn open_scratch(spec: RecordSpec, path: impl Into<PathBuf>) -> io::Result<Arc<Self>> {
        Self::open_with(spec, path.into(), false)
    }

    fn open_with(spec: RecordSpec, path: PathBuf, synced: bool) -> io::Result<Arc<Self>> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            fs::create_dir_all(dir)?;
        }
        let store = Self {
            spec,
            path,
            synced,
            state: Mutex::new(State {
                weights: Weights::green(0),
                change: 0,
                previous: Weights::green(0),
                changed_at_ms: 0,
                answer_lag_ms: 0,
            }),
            answers: AtomicU64::new(0),
            answered_blue: AtomicU64::new(0),
            answered_green: AtomicU64::new(0),
            answer_lag_ms: AtomicU64::new(0),
        };
        store.reload()?;
        Ok(Arc::new(store))
    }

    /// The name served.
    pub fn spec(&self) -> &RecordSpec {
        &self.spec
    }

    /// The weights file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The weights in force (re-read if another process changed the file).
    pub fn weights(&self) -> Weights {
        if let Err(e) = self.reload() {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot re-read the weights file");
        }
        self.lock().weights
    }

    /// From now on, changes this store makes are answered by the DNS server only `lag` after
    /// they are made (the previous weights until then): what resolver caches and weights that
    /// land late do to real traffic, for demos and for testing a gate that checks the split
    /// actually observed (`router.answer_lag`).
    pub fn set_answer_lag(&self, lag: Duration) {
        self.answer_lag_ms.store(
            u64::try_from(lag.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Sets the weights, writing the file atomically; returns the change number.
    pub fn set(&self, weights: Weights) -> io::Result<u64> {
        let _ = self.reload();
        let mut state = self.lock();
        let change = state.change + 1;
        let (changed_at_ms, answer_lag_ms) = (now_ms(), self.answer_lag_ms.load(Ordering::Relaxed));
        let file = StateFile {
            record: self.spec.record.clone(),
            blue: weights.blue,
            green: weights.green,
            change,
            previous: [state.weights.blue, state.weights.green],
            changed_at_ms,
            answer_lag_ms,
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(io::Error::other)?;
        cutover_core::fs::write_atomically_with(&self.path, &bytes, self.synced)?;
        state.previous = state.weights;
        state.weights = weights;
        state.change = change;
        state.changed_at_ms = changed_at_ms;
        state.answer_lag_ms = answer_lag_ms;
        Ok(change)
    }

    /// The weights the DNS server answers by now: the weights in force, or the previous ones
    /// while a change is younger than its answer lag.
    pub fn answered_weights(&self) -> Weights {
        let current = self.weights();
        let state = self.lock();
        if state.answer_lag_ms > 0 && now_ms() < state.changed_at_ms.saturating_add(state.answer_lag_ms) {
            state.previous
        } else {
            current
        }
    }

    /// How many answers went to each side so far (counted by [`pick`](Self::pick)).
    pub fn answer_counts(&self) -> AnswerCounts {
        AnswerCounts {
            blue: self.answered_blue.load(Ordering::Relaxed),
            green: self.answered_green.load(Ordering::Relaxed),
        }
    }

    /// The side the next answer goes to. Answers follow a fixed, evenly spread sequence: every
    /// 100 consecutive answers hold exactly `green` green ones (so 0 and 100 are exact), spread
    /// out rather than in a block. Both weights 0 share evenly, as Route 53 does.
    pub fn pick(&self) -> Side {
        let side = self.pick_by(self.answered_weights());
        match side {
            Side::Blue => self.answered_blue.fetch_add(1, Ordering::Relaxed),
            Side::Green => self.answered_green.fetch_add(1, Ordering::Relaxed),
        };
        side
    }

    fn pick_by(&self, Weights { blue, green }: Weights) -> Side {
        let n = self.answers.fetch_add(1, Ordering::Relaxed);
        // 37 is coprime with 100, so `slot` visits every value of 0..100 once per 100 answers.
        let slot = (n % 100) * 37 % 100;
        let (blue, green) = if blue == 0 && green == 0 {
            (1, 1)
        } else {
            (u64::from(blue), u64::from(green))
        };
        if slot * (blue + green) < green * 100 {
            Side::Green
        } else {
            Side::Blue
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads the file again (it is a hundred bytes): a modification time cannot tell two writes
    /// within one tick of a coarse file system apart. The file, replaced atomically by every
    /// writer, is the truth.
    fn reload(&self) -> io::Result<()> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let file: StateFile = serde_json::from_slice(&bytes).map_err(io::Error::other)?;
        if file.green > 100 || u16::from(file.blue) + u16::from(file.green) > 100 {
            return Err(io::Error::other(format!(
                "weights {}/{} out of range",
                file.blue, file.green
            )));
        }
        let mut state = self.lock();
        state.weights = Weights {
            blue: file.blue,
            green: file.green,
        };
        state.change = file.change;
        state.previous = Weights {
            blue: file.previous[0].min(100),
            green: file.previous[1].min(100),
        };
        state.changed_at_ms = file.changed_at_ms;
        state.answer_lag_ms = file.answer_lag_ms;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RecordSpec {
        RecordSpec {
            zone: "catsndogs.lol".into(),
            record: "www.catsndogs.lol".into(),
            blue: vec!["127.0.0.1".parse().unwrap()],
            green: vec!["127.0.0.2".parse().unwrap()],
            ttl: 5,
        }
    }

    #[test]
    fn weights_survive_a_reopen_and_start_all_blue() {
        let dir = tempfile::tempdir().unwrap();
        // Synced, and in a scratch directory (the same file, not synced).
        for (open, sub) in [
            (
                WeightStore::open as fn(RecordSpec, PathBuf) -> io::Result<Arc<WeightStore>>,
                "synced",
            ),
            (WeightStore::open_scratch, "scratch"),
        ] {
            let path = dir.path().join(sub).join("w.json");
            let store = open(spec(), path.clone()).unwrap();
            assert_eq!(store.weights(), Weights::green(0));
            assert_eq!(store.set(Weights::green(10)).unwrap(), 1);
            drop(store);
            let store = WeightStore::open(spec(), &path).unwrap();
            assert_eq!(store.weights(), Weights::green(10));
            assert_eq!(store.set(Weights::green(50)).unwrap(), 2);
            let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(
                leftovers,
                vec![std::ffi::OsString::from("w.json")],
                "no temp files left"
            );
        }
    }

    #[test]
    fn another_writer_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.json");
        let a = WeightStore::open(spec(), &path).unwrap();
        let b = WeightStore::open(spec(), &path).unwrap();
        // Writes in quick succession (one file-system tick) are all seen.
        for green in [100, 10, 50] {
            b.set(Weights::green(green)).unwrap();
            assert_eq!(a.weights(), Weights::green(green));
        }
    }

    #[test]
    fn answers_lag_a_change_by_the_answer_lag_and_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.json");
        let router = WeightStore::open(spec(), &path).unwrap();
        router.set_answer_lag(Duration::from_secs(3600));
        router.set(Weights::green(10)).unwrap();
        // A server in another process reads the lag from the file: still all blue for an hour.
        let server = WeightStore::open(spec(), &path).unwrap();
        assert_eq!(server.weights(), Weights::green(10));
        assert_eq!(server.answered_weights(), Weights::green(0));
        for _ in 0..100 {
            server.pick();
        }
        assert_eq!(server.answer_counts(), AnswerCounts { blue: 100, green: 0 });
        // Without a lag, the next change is answered at once.
        router.set_answer_lag(Duration::ZERO);
        router.set(Weights::green(50)).unwrap();
        assert_eq!(server.answered_weights(), Weights::green(50));
        for _ in 0..100 {
            server.pick();
        }
        assert_eq!(server.answer_counts(), AnswerCounts { blue: 150, green: 50 });
    }

    #[test]
    fn picks_follow_the_weights_exactly_per_hundred() {
        let dir = tempfile::tempdir().unwrap();
        let store = WeightStore::open(spec(), dir.path().join("w.json")).unwrap();
        for green in [0u8, 1, 10, 33, 50, 99, 100] {
            store.set(Weights::green(green)).unwrap();
            let greens = (0..100).filter(|_| store.pick() == Side::Green).count();
            assert_eq!(greens, usize::from(green));
        }
    }
}
