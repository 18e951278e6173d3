//! The HTTP probe: GETs green's health endpoint until it has a verdict, the way an ELB target
//! group does.
//!
//! Each check is one GET on a fresh connection, passing when it answers within `timeout` with
//! a status in `expect_status` (and, if set, a body containing `body_contains`). Checks run
//! `interval` apart, waited on the pipeline's clock. `healthy_threshold` consecutive passes make
//! green healthy; `unhealthy_threshold` consecutive failures make it unhealthy; a pass resets
//! the failure count and a failure the pass count. A target that flaps and reaches neither
//! threshold within `max_checks` checks is unhealthy.
//!
//! `https://` URLs are checked over TLS (rustls): the certificate must be valid for the URL's
//! host and chain to the system's trust store, or to the authorities in `ca_file` when set (a
//! private CA). A certificate that does not verify fails the check, naming why.
//!
//! ```toml
//! probe = { type = "http", url = "http://127.0.0.2:8080/health", expect_status = "200-299", body_contains = "ok", timeout = "2s", interval = "1s", healthy_threshold = 3, unhealthy_threshold = 2 }
//! probe = { type = "http", url = "https://green.internal/health", ca_file = "certs/internal-ca.pem" }
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use cutover_core::{BoxFuture, BuildContext, BuildError, Clock, Event, FieldError, StageError, Template};
use hyper::Uri;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{HealthProbe, HealthReport};

/// The most of a response body read for `body_contains`.
const MAX_BODY: usize = 64 * 1024;

/// Configuration of `probe = { type = "http", … }`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProbeConfig {
    /// The health endpoint, `http://host[:port]/path`; a template, so `{endpoint}/health`
    /// reads the Task input.
    pub url: Template,
    /// Status codes that pass: ranges and single codes, comma-separated (`200-299`, `200,204`).
    #[serde(default = "default_expect_status")]
    pub expect_status: String,
    /// Text the response body must contain (first 64 KiB), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
    /// How long one check may take, connection included.
    #[serde(default = "default_timeout", with = "crate::duration")]
    pub timeout: Duration,
    /// Wait between two checks.
    #[serde(default = "default_interval", with = "crate::duration")]
    pub interval: Duration,
    /// Consecutive passing checks that make green healthy.
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: u32,
    /// Consecutive failing checks that make green unhealthy.
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
    /// Most checks before giving up without a verdict (then unhealthy).
    #[serde(default = "default_max_checks")]
    pub max_checks: u32,
    /// For `https://` URLs: a PEM file of the certificate authorities to trust instead of the
    /// system's (relative to the pipeline file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
}

fn default_expect_status() -> String {
    "200-299".into()
}
fn default_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_healthy_threshold() -> u32 {
    3
}
fn default_unhealthy_threshold() -> u32 {
    2
}
fn default_max_checks() -> u32 {
    10
}

/// Parses `200-299,304` into inclusive ranges.
fn parse_statuses(text: &str) -> Result<Vec<(u16, u16)>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim) {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let parse = |s: &str| {
            s.trim()
                .parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
                .ok_or_else(|| {
                    format!("\"{part}\" is not a status code or range (e.g. \"200-299\" or \"200,204\")")
                })
        };
        let (lo, hi) = (parse(lo)?, parse(hi)?);
        if lo > hi {
            return Err(format!("\"{part}\": the range is backwards"));
        }
        out.push((lo, hi));
    }
    Ok(out)
}

impl HttpProbeConfig {
    pub(super) fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let url = self.url.as_str();
        if !url.starts_with('{') {
            match url.parse::<Uri>() {
                Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {}
                _ => errors.push(FieldError::new(
                    "probe.url",
                    format!("\"{url}\" is not an http(s)://host[:port]/path URL"),
                )),
            }
        }
        if let Err(e) = parse_statuses(&self.expect_status) {
            errors.push(FieldError::new("probe.expect_status", e));
        }
        for (field, value) in [
            ("probe.healthy_threshold", self.healthy_threshold),
            ("probe.unhealthy_threshold", self.unhealthy_threshold),
        ] {
            if value == 0 {
                errors.push(FieldError::new(field, "must be at least 1"));
            }
        }
        if self.max_checks < self.healthy_threshold.max(self.unhealthy_threshold) {
            errors.push(FieldError::new(
                "probe.max_checks",
                "must be at least the larger threshold, or no verdict is ever possible",
            ));
        }
        if self.timeout.is_zero() {
            errors.push(FieldError::new("probe.timeout", "must be more than 0"));
        }
        errors
    }

    pub(super) fn build(&self, cx: &BuildContext) -> Result<HttpProbe, BuildError> {
        if let Some(e) = self.validate().into_iter().next() {
            return Err(BuildError::Field(e));
        }
        let ca_file = self.ca_file.as_ref().map(|f| cx.config_path(f));
        let tls = Tls::new(ca_file);
        // A literal https:// URL or a CA file: find a trust problem now, not at the first check.
        if self.ca_file.is_some() || self.url.as_str().starts_with("https://") {
            let field = if self.ca_file.is_some() {
                "probe.ca_file"
            } else {
                "probe.url"
            };
            tls.config().map_err(|m| BuildError::field(field, m))?;
        }
        Ok(HttpProbe {
            statuses: parse_statuses(&self.expect_status)
                .map_err(|e| BuildError::field("probe.expect_status", e))?,
            config: self.clone(),
            clock: cx.clock(),
            tls,
        })
    }
}

/// The TLS client of `https://` checks, built once, on first need.
#[derive(Debug)]
pub(crate) struct Tls {
    ca_file: Option<std::path::PathBuf>,
    config: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
}

impl Tls {
    pub(crate) fn new(ca_file: Option<std::path::PathBuf>) -> Self {
        Self {
            ca_file,
            config: std::sync::OnceLock::new(),
        }
    }

    pub(crate) fn config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        self.config.get_or_init(|| self.build()).clone()
    }

    fn build(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject as _;
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                let shown = path.display();
                for cert in CertificateDer::pem_file_iter(path).map_err(|e| format!("{shown}: {e}"))? {
                    let cert = cert.map_err(|e| format!("{shown}: {e}"))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("{shown}: not a usable CA certificate: {e}"))?;
                }
                if roots.is_empty() {
                    return Err(format!("{shown} holds no PEM certificate"));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(
                        "no trusted certificate authorities found on this system; set probe.ca_file to a PEM file of the CAs to trust"
                            .into(),
                    );
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The HTTP [`HealthProbe`].
#[derive(Debug)]
pub struct HttpProbe {
    config: HttpProbeConfig,
    statuses: Vec<(u16, u16)>,
    clock: Arc<dyn Clock>,
    tls: Tls,
}

/// What one check saw.
#[derive(Debug, Clone, PartialEq)]
struct Attempt {
    passed: bool,
    status: Option<u16>,
    error: Option<String>,
    millis: u64,
}

impl Attempt {
    fn to_json(&self, n: u32) -> Value {
        let mut v = json!({ "check": n, "passed": self.passed, "latency_ms": self.millis });
        if let Some(s) = self.status {
            v["status"] = json!(s);
        }
        if let Some(e) = &self.error {
            v["error"] = json!(e);
        }
        v
    }
}

impl HttpProbe {
    /// One GET on a fresh connection.
    async fn attempt(&self, uri: &Uri) -> Attempt {
        let start = Instant::now();
        let outcome = tokio::time::timeout(self.config.timeout, self.get(uri)).await;
        let millis = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (status, error) = match outcome {
            Err(_) => (
                None,
                Some(format!(
                    "no answer within {}",
                    crate::duration::format(self.config.timeout)
                )),
            ),
            Ok(Err(e)) => (None, Some(e)),
            Ok(Ok((status, body))) => {
                let mut error = None;
                if !self.statuses.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status)) {
                    error = Some(format!("status {status} is not in {}", self.config.expect_status));
                } else if let Some(needle) = &self.config.body_contains
                    && !body.contains(needle.as_str())
                {
                    error = Some(format!("the body does not contain {needle:?}"));
                }
                (Some(status), error)
            }
        };
        Attempt {
            passed: error.is_none(),
            status,
            error,
            millis,
        }
    }

    async fn get(&self, uri: &Uri) -> Result<(u16, String), String> {
        // The attempt's own timeout bounds the call; this one only keeps the client's shape.
        let (status, body) =
            super::client::send(&self.tls, hyper::Method::GET, uri, None, self.config.timeout).await?;
        let body = if self.config.body_contains.is_some() {
            String::from_utf8_lossy(&body[..body.len().min(MAX_BODY)]).into_owned()
        } else {
            String::new()
        };
        Ok((status, body))
    }

    /// Runs checks until a threshold is reached or `max_checks` is spent.
    async fn judge(&self, uri: &Uri) -> HealthReport {
        let c = &self.config;
        let (mut passes, mut failures) = (0u32, 0u32);
        let mut checks = Vec::new();
        let mut last_error = String::new();
        for n in 1..=c.max_checks {
            if n > 1 {
                self.clock.sleep(c.interval).await;
            }
            let attempt = self.attempt(uri).await;
            checks.push(attempt.to_json(n));
            if attempt.passed {
                passes += 1;
                failures = 0;
                if passes >= c.healthy_threshold {
                    return HealthReport {
                        healthy: true,
                        checks,
                        reason: format!("{passes} consecutive checks of {uri} passed"),
                    };
                }
            } else {
                failures += 1;
                passes = 0;
                last_error = attempt.error.unwrap_or_default();
                if failures >= c.unhealthy_threshold {
                    return HealthReport {
                        healthy: false,
                        checks,
                        reason: format!("{failures} consecutive checks of {uri} failed; last: {last_error}"),
                    };
                }
            }
        }
        HealthReport {
            healthy: false,
            checks,
            reason: format!(
                "no verdict after {} checks of {uri} (needs {} consecutive passes); last failure: {last_error}",
                c.max_checks, c.healthy_threshold
            ),
        }
    }
}

impl HealthProbe for HttpProbe {
    fn check<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<HealthReport, StageError>> {
        Box::pin(async move {
            let url = self.config.url.render(event).map_err(|e| {
                StageError::permanent(format!("field \"probe.url\": {e}"))
                    .with_kind("HealthCheck.InvalidInput")
            })?;
            let uri = url
                .parse::<Uri>()
                .ok()
                .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some())
                .ok_or_else(|| {
                    StageError::permanent(format!(
                        "field \"probe.url\": \"{url}\" is not an http(s)://host[:port]/path URL"
                    ))
                    .with_kind("HealthCheck.InvalidInput")
                })?;
            Ok(self.judge(&uri).await)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::time::SystemTime;

    use cutover_core::ManualClock;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// What the in-test server does with one connection.
    #[derive(Debug, Clone, Copy)]
    enum Reply {
        Status(u16, &'static str),
        Hang,
        Close,
    }

    /// Serves the scripted replies in order, then repeats the last one.
    async fn server(script: Vec<Reply>) -> std::net::SocketAddr {
        serve(script, None).await
    }

    /// The same over TLS, with the test certificate for 127.0.0.1 (`tests/fixtures/tls`).
    async fn tls_server(script: Vec<Reply>) -> std::net::SocketAddr {
        use rustls_pki_types::pem::PemObject as _;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(tls_fixture("server.pem"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(tls_fixture("server.key")).unwrap();
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap();
        serve(script, Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    fn tls_fixture(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/tls")
            .join(name)
    }

    async fn serve(script: Vec<Reply>, tls: Option<tokio_rustls::TlsAcceptor>) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let reply = {
                    let mut s = script.lock().unwrap();
                    if s.len() > 1 { s.pop_front().unwrap() } else { s[0] }
                };
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => answer(socket, reply).await,
                        // A client that rejects the certificate ends the handshake: nothing to answer.
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(socket).await {
                                answer(stream, reply).await;
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    async fn answer<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut socket: S, reply: Reply) {
        let mut buf = vec![0u8; 4096];
        let mut read = 0;
        while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
            match socket.read(&mut buf[read..]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => read += n,
            }
        }
        match reply {
            Reply::Status(code, body) => {
                let text = format!(
                    "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(text.as_bytes()).await;
                let _ = socket.shutdown().await;
            }
            Reply::Hang => tokio::time::sleep(Duration::from_secs(30)).await,
            Reply::Close => drop(socket),
        }
    }

    fn probe(toml_text: &str, clock: Arc<ManualClock>) -> HttpProbe {
        let cfg: HttpProbeConfig = toml::from_str(toml_text).unwrap();
        cfg.build(&BuildContext::new("unused").with_clock(clock)).unwrap()
    }

    fn clock() -> Arc<ManualClock> {
        Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH))
    }

    async fn check(addr: std::net::SocketAddr, extra: &str, clock: Arc<ManualClock>) -> HealthReport {
        let p = probe(&format!("url = \"http://{addr}/health\"\n{extra}"), clock);
        p.check(&Event::from_value(json!({}))).await.unwrap()
    }

    fn elapsed(clock: &ManualClock) -> Duration {
        clock.now().duration_since(SystemTime::UNIX_EPOCH).unwrap()
    }

    #[tokio::test]
    async fn three_passes_make_healthy_waiting_the_interval_between() {
        let addr = server(vec![Reply::Status(200, "ok")]).await;
        let c = clock();
        let report = check(addr, "body_contains = \"ok\"", c.clone()).await;
        assert!(report.healthy, "{report:?}");
        assert_eq!(report.checks.len(), 3);
        assert_eq!(report.checks[0]["status"], json!(200));
        assert_eq!(
            elapsed(&c),
            Duration::from_secs(2),
            "two 1 s intervals on the pipeline clock"
        );
    }

    #[tokio::test]
    async fn https_checks_verify_the_certificate_against_ca_file_or_the_system() {
        let addr = tls_server(vec![Reply::Status(200, "ok")]).await;
        let ca = tls_fixture("ca.pem");
        let url = format!("url = \"https://{addr}/health\"\nbody_contains = \"ok\"\n");
        let trusted = probe(&format!("{url}ca_file = {:?}", ca.display().to_string()), clock());
        let report = trusted.check(&Event::from_value(json!({}))).await.unwrap();
        assert!(report.healthy, "{report:?}");
        assert_eq!(report.checks[0]["status"], json!(200));

        // The test CA is in no system trust store: the handshake fails and says why.
        // (A machine without a trust store cannot build the probe at all, and says so.)
        let cfg: HttpProbeConfig = toml::from_str(&url).unwrap();
        match cfg.build(&BuildContext::new("unused").with_clock(clock())) {
            Ok(system) => {
                let report = system.check(&Event::from_value(json!({}))).await.unwrap();
                assert!(!report.healthy);
                let error = report.checks[0]["error"].as_str().unwrap();
                assert!(error.contains("TLS handshake with 127.0.0.1:"), "{error}");
                assert!(error.to_lowercase().contains("certificate"), "{error}");
            }
            Err(BuildError::Field(error)) => {
                assert_eq!(error.field, "probe.url");
                assert!(error.message.contains("set probe.ca_file"), "{}", error.message);
            }
            Err(other) => panic!("{other}"),
        }

        // A CA file that is not one is a build error naming the field.
        let cfg: HttpProbeConfig = toml::from_str(&format!(
            "{url}ca_file = {:?}",
            tls_fixture("server.key").display().to_string()
        ))
        .unwrap();
        let Err(BuildError::Field(error)) = cfg.build(&BuildContext::new("unused")) else {
            panic!("a key file is not a CA file");
        };
        assert_eq!(error.field, "probe.ca_file");
        assert!(error.message.contains("no PEM certificate"), "{}", error.message);
    }

    #[tokio::test]
    async fn two_500s_make_unhealthy() {
        let addr = server(vec![Reply::Status(500, "boom")]).await;
        let report = check(addr, "", clock()).await;
        assert!(!report.healthy);
        assert_eq!(report.checks.len(), 2);
        assert!(
            report.reason.contains("status 500 is not in 200-299"),
            "{}",
            report.reason
        );
    }

    #[tokio::test]
    async fn a_hanging_server_times_out() {
        let addr = server(vec![Reply::Hang]).await;
        let report = check(addr, "timeout = \"200ms\"", clock()).await;
        assert!(!report.healthy);
        assert!(
            report.reason.contains("no answer within 200ms"),
            "{}",
            report.reason
        );
    }

    #[tokio::test]
    async fn a_closed_connection_fails_the_check() {
        let addr = server(vec![Reply::Close]).await;
        let report = check(addr, "", clock()).await;
        assert!(!report.healthy);
        assert!(
            report.checks[0]["error"]
                .as_str()
                .unwrap()
                .contains("request failed"),
            "{report:?}"
        );
        let nobody = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let report = check(nobody, "", clock()).await;
        assert!(report.reason.contains("cannot connect"), "{}", report.reason);
    }

    #[tokio::test]
    async fn a_failure_resets_the_pass_count() {
        use Reply::Status as S;
        let addr = server(vec![
            S(200, ""),
            S(200, ""),
            S(503, ""),
            S(200, ""),
            S(200, ""),
            S(200, ""),
        ])
        .await;
        let report = check(addr, "", clock()).await;
        assert!(report.healthy);
        assert_eq!(report.checks.len(), 6, "2 passes, a failure, then 3 passes");
        let addr = server(vec![
            S(200, ""),
            S(503, ""),
            S(200, ""),
            S(503, ""),
            S(200, ""),
            S(503, ""),
            S(200, ""),
        ])
        .await;
        let report = check(addr, "max_checks = 6", clock()).await;
        assert!(!report.healthy);
        assert!(
            report.reason.starts_with("no verdict after 6 checks"),
            "{}",
            report.reason
        );
    }

    #[tokio::test]
    async fn body_and_status_expectations_and_templated_urls() {
        let addr = server(vec![Reply::Status(204, "")]).await;
        let report = check(addr, "expect_status = \"200\"\nunhealthy_threshold = 1", clock()).await;
        assert!(!report.healthy);
        let addr = server(vec![Reply::Status(200, "starting")]).await;
        let report = check(
            addr,
            "body_contains = \"ready\"\nunhealthy_threshold = 1",
            clock(),
        )
        .await;
        assert!(
            report.reason.contains("does not contain \"ready\""),
            "{}",
            report.reason
        );

        let addr = server(vec![Reply::Status(200, "")]).await;
        let p = probe("url = \"{endpoint}/health\"\nhealthy_threshold = 1", clock());
        let event = Event::from_value(json!({ "endpoint": format!("http://{addr}") }));
        assert!(p.check(&event).await.unwrap().healthy);
        let err = p.check(&Event::from_value(json!({}))).await.unwrap_err();
        assert!(err.message.contains("probe.url"), "{}", err.message);
    }

    #[test]
    fn status_lists_parse() {
        assert_eq!(parse_statuses("200-299").unwrap(), vec![(200, 299)]);
        assert_eq!(
            parse_statuses("200, 204,300-302").unwrap(),
            vec![(200, 200), (204, 204), (300, 302)]
        );
        for bad in ["2xx", "299-200", "", "700", "200-"] {
            assert!(parse_statuses(bad).is_err(), "{bad}");
        }
    }
}
