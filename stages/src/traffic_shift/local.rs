//! The embedded router: one weighted name whose weights live in a small JSON file in the data
//! directory ([`super::weights`]), answered by the authoritative DNS server of [`super::dns`].
//! The router and the DNS server share one [`WeightStore`], so a shift is visible to the very
//! next query; a server in another process sees it too, because the store re-reads the file.
//!
//! ```toml
//! router = { type = "local", zone = "catsndogs.lol", record = "www.catsndogs.lol", blue = "127.0.0.1", green = "127.0.0.2", listen = "127.0.0.1:5353", ttl = "5s" }
//! ```

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cutover_core::{BoxFuture, BuildContext, BuildError, FieldError, StageError};
use serde::{Deserialize, Serialize};

use super::dns::LocalDnsServer;
pub use super::weights::{RecordSpec, Side, WeightStore};
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
    #[serde(deserialize_with = "crate::fields::one_or_many")]
    pub blue: Vec<IpAddr>,
    /// Green's addresses (one or a list).
    #[serde(deserialize_with = "crate::fields::one_or_many")]
    pub green: Vec<IpAddr>,
    /// Where the DNS server listens, UDP and TCP (`dig @127.0.0.1 -p 5353 www.catsndogs.lol`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Whether building the stage starts the DNS server on `listen` (one per address and
    /// process, shared by every stage naming it). `false` only keeps the weights, for a server
    /// started on its own ([`LocalDnsServer::start`]).
    #[serde(default = "crate::fields::yes")]
    pub serve: bool,
    /// The TTL of the answers; short, so clients follow a shift quickly.
    #[serde(default = "default_dns_ttl", with = "crate::duration")]
    pub ttl: Duration,
    /// The weights file; relative paths are in the data directory. Default
    /// `traffic/<record>.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_file: Option<PathBuf>,
    /// How long after a shift the DNS server still answers by the previous weights: what
    /// resolver caches and late-landing weights do to real traffic. For demos and for testing
    /// the `observed-split` gate; default 0 (answers follow at once).
    #[serde(default, with = "crate::duration", skip_serializing_if = "Duration::is_zero")]
    pub answer_lag: Duration,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5353))
}
fn default_dns_ttl() -> Duration {
    Duration::from_secs(5)
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
        // Only a file inside a scratch data directory is scratch (not one named by a path
        // out of it, which another process may read).
        let scratch = self
            .state_file
            .as_ref()
            .map_or(cx.data_is_scratch(), |f| cx.is_scratch_path(f));
        let open = if scratch {
            WeightStore::open_scratch
        } else {
            WeightStore::open
        };
        let store = open(spec, &path).map_err(|e| {
            BuildError::field(
                "router.state_file",
                format!("cannot open the weights file {}: {e}", path.display()),
            )
        })?;
        store.set_answer_lag(self.answer_lag);
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
