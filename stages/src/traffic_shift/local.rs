//! The embedded router: one weighted name whose weights live in a small JSON file in the data
//! directory, answered by the authoritative DNS server of [`super::dns`].
//!
//! The file is replaced atomically (written beside, then renamed), so a crash never leaves a
//! half-written state and the weights survive a restart. The router and the DNS server share
//! one [`WeightStore`], so a shift is visible to the very next query; a server in another
//! process sees it too, because the store re-reads the file when it changes.
//!
//! ```toml
//! router = { type = "local", zone = "catsndogs.lol", record = "www.catsndogs.lol", blue = "127.0.0.1", green = "127.0.0.2", listen = "127.0.0.1:5353", ttl = "5s" }
//! ```

use std::fs;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cutover_core::{BoxFuture, BuildContext, BuildError, FieldError, StageError};
use serde::{Deserialize, Deserializer, Serialize};

use super::dns::LocalDnsServer;
use super::{ShiftResult, TrafficRouter, Weights};

/// Configuration of `router = { type = "local", … }`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalRouterConfig {
    /// The zone the DNS server is authoritative for (`catsndogs.lol`); names inside it other
    /// than `record` get NXDOMAIN, names outside it REFUSED.
    pub zone: String,
    /// The weighted name (`www.catsndogs.lol`), inside `zone`.
    pub record: String,
    /// Blue's addresses (one or a list; IPv4 answer `A` queries, IPv6 `AAAA`).
    #[serde(deserialize_with = "one_or_many")]
    pub blue: Vec<IpAddr>,
    /// Green's addresses (one or a list).
    #[serde(deserialize_with = "one_or_many")]
    pub green: Vec<IpAddr>,
    /// Where the DNS server listens, UDP and TCP (`dig @127.0.0.1 -p 5353 www.catsndogs.lol`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Whether building the stage starts the DNS server on `listen` (one per address and
    /// process, shared by every stage naming it). `false` only keeps the weights, for a server
    /// started on its own ([`LocalDnsServer::start`]).
    #[serde(default = "yes")]
    pub serve: bool,
    /// The TTL of the answers; short, so clients follow a shift quickly.
    #[serde(default = "default_ttl", with = "crate::duration")]
    pub ttl: Duration,
    /// The weights file; relative paths are in the data directory. Default
    /// `traffic/<record>.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_file: Option<PathBuf>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5353))
}
fn yes() -> bool {
    true
}
fn default_ttl() -> Duration {
    Duration::from_secs(5)
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<IpAddr>),
        One(IpAddr),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::Many(v) => v,
        OneOrMany::One(v) => vec![v],
    })
}

impl LocalRouterConfig {
    pub(super) fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if let Err(e) = self.spec() {
            errors.push(e);
        }
        if self.blue.is_empty() {
            errors.push(FieldError::new("router.blue", "give at least one address"));
        }
        if self.green.is_empty() {
            errors.push(FieldError::new("router.green", "give at least one address"));
        }
        errors
    }

    /// The record this configuration describes.
    pub fn spec(&self) -> Result<RecordSpec, FieldError> {
        let zone = normalise(&self.zone);
        let record = normalise(&self.record);
        if zone.is_empty() {
            return Err(FieldError::new("router.zone", "must not be empty"));
        }
        if record != zone && !record.ends_with(&format!(".{zone}")) {
            return Err(FieldError::new(
                "router.record",
                format!("\"{}\" is not in the zone \"{}\"", self.record, self.zone),
            ));
        }
        Ok(RecordSpec {
            zone,
            record,
            blue: self.blue.clone(),
            green: self.green.clone(),
            ttl: u32::try_from(self.ttl.as_secs()).unwrap_or(u32::MAX),
        })
    }

    pub(super) fn build(&self, cx: &BuildContext) -> Result<LocalRouter, BuildError> {
        let spec = self.spec().map_err(BuildError::Field)?;
        let path = cx.data_path(
            self.state_file
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("traffic/{}.json", spec.record))),
        );
        let store = WeightStore::open(spec, &path).map_err(|e| {
            BuildError::field(
                "router.state_file",
                format!("cannot open the weights file {}: {e}", path.display()),
            )
        })?;
        let server = if self.serve {
            Some(LocalDnsServer::shared(self.listen, store.clone()).map_err(|e| {
                BuildError::field(
                    "router.listen",
                    format!("cannot serve DNS on {}: {e}", self.listen),
                )
            })?)
        } else {
            None
        };
        Ok(LocalRouter { store, server })
    }
}

/// Lowercase, without the trailing dot.
pub(crate) fn normalise(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

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
}

#[derive(Debug)]
struct State {
    weights: Weights,
    change: u64,
}

/// The weights of one weighted name, kept in a JSON file and shared between the router and
/// the DNS server. A name never shifted is all blue.
#[derive(Debug)]
pub struct WeightStore {
    spec: RecordSpec,
    path: PathBuf,
    state: Mutex<State>,
    answers: AtomicU64,
}

impl WeightStore {
    /// Opens (or starts) the weights of `spec` kept at `path`.
    pub fn open(spec: RecordSpec, path: impl Into<PathBuf>) -> io::Result<Arc<Self>> {
        let path = path.into();
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            fs::create_dir_all(dir)?;
        }
        let store = Self {
            spec,
            path,
            state: Mutex::new(State {
                weights: Weights::green(0),
                change: 0,
            }),
            answers: AtomicU64::new(0),
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

    /// Sets the weights, writing the file atomically; returns the change number.
    pub fn set(&self, weights: Weights) -> io::Result<u64> {
        let _ = self.reload();
        let mut state = self.lock();
        let change = state.change + 1;
        let file = StateFile {
            record: self.spec.record.clone(),
            blue: weights.blue,
            green: weights.green,
            change,
        };
        let tmp = self
            .path
            .with_extension(format!("json.tmp{}", std::process::id()));
        fs::write(&tmp, serde_json::to_vec_pretty(&file).map_err(io::Error::other)?)?;
        fs::rename(&tmp, &self.path)?;
        state.weights = weights;
        state.change = change;
        Ok(change)
    }

    /// The side the next answer goes to. Answers follow a fixed, evenly spread sequence: every
    /// 100 consecutive answers hold exactly `green` green ones (so 0 and 100 are exact), spread
    /// out rather than in a block. Both weights 0 share evenly, as Route 53 does.
    pub fn pick(&self) -> Side {
        let Weights { blue, green } = self.weights();
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
        Ok(())
    }
}

/// The embedded [`TrafficRouter`]: sets the weights in a [`WeightStore`], served by a
/// [`LocalDnsServer`] when one was started with it.
#[derive(Debug)]
pub struct LocalRouter {
    store: Arc<WeightStore>,
    server: Option<Arc<LocalDnsServer>>,
}

impl LocalRouter {
    /// A router over `store`, with no DNS server of its own.
    pub fn new(store: Arc<WeightStore>) -> Self {
        Self { store, server: None }
    }

    /// The weights it sets.
    pub fn store(&self) -> &Arc<WeightStore> {
        &self.store
    }

    /// The DNS server it started, if any.
    pub fn server(&self) -> Option<&Arc<LocalDnsServer>> {
        self.server.as_ref()
    }
}

impl TrafficRouter for LocalRouter {
    fn set_weights(&self, weights: Weights) -> BoxFuture<'_, Result<ShiftResult, StageError>> {
        Box::pin(async move {
            let store = self.store.clone();
            let change = tokio::task::spawn_blocking(move || store.set(weights))
                .await
                .map_err(|e| StageError::retryable(format!("weights writer: {e}")))?
                .map_err(|e| {
                    StageError::retryable(format!(
                        "cannot write the weights file {}: {e}",
                        self.store.path().display()
                    ))
                })?;
            let now = self.store.weights();
            if now != weights {
                return Err(StageError::permanent(format!(
                    "asked for blue {} / green {}, but {} / {} is in force",
                    weights.blue, weights.green, now.blue, now.green
                ))
                .with_kind(super::NOT_APPLIED));
            }
            Ok(ShiftResult {
                blue: now.blue,
                green: now.green,
                change_id: format!("local-{change}"),
                status: "INSYNC".into(),
            })
        })
    }

    fn weights(&self) -> BoxFuture<'_, Result<Weights, StageError>> {
        Box::pin(std::future::ready(Ok(self.store.weights())))
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
        let path = dir.path().join("sub/w.json");
        let store = WeightStore::open(spec(), &path).unwrap();
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
    fn picks_follow_the_weights_exactly_per_hundred() {
        let dir = tempfile::tempdir().unwrap();
        let store = WeightStore::open(spec(), dir.path().join("w.json")).unwrap();
        for green in [0u8, 1, 10, 33, 50, 99, 100] {
            store.set(Weights::green(green)).unwrap();
            let greens = (0..100).filter(|_| store.pick() == Side::Green).count();
            assert_eq!(greens, usize::from(green));
        }
    }

    #[test]
    fn record_outside_the_zone_is_named() {
        let cfg: LocalRouterConfig = toml::from_str(
            "zone = \"catsndogs.lol\"\nrecord = \"www.example.com\"\nblue = \"127.0.0.1\"\ngreen = \"127.0.0.2\"",
        )
        .unwrap();
        let errors = cfg.validate();
        assert_eq!(errors[0].field, "router.record", "{errors:?}");
    }

    #[tokio::test]
    async fn a_port_in_use_names_router_listen() {
        let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cfg: LocalRouterConfig = toml::from_str(&format!(
            "zone = \"catsndogs.lol\"\nrecord = \"www.catsndogs.lol\"\nblue = \"127.0.0.1\"\ngreen = \"127.0.0.2\"\nlisten = \"{}\"",
            taken.local_addr().unwrap()
        ))
        .unwrap();
        let err = cfg.build(&BuildContext::new(dir.path())).unwrap_err();
        let BuildError::Field(e) = err else {
            panic!("expected a field error, got {err}")
        };
        assert_eq!(e.field, "router.listen");
        assert!(e.message.contains("cannot serve DNS"), "{}", e.message);
    }
}
