//! The `http` source, made to be the target of an EventBridge API destination (which POSTs the
//! event as the body and retries on 429 and 5xx):
//!
//! - `POST /events` — one event or a JSON array of events. 200 with
//!   `{"results":[{"id","outcome","stage","reason",…}]}` when every event is finished (passed,
//!   dropped, or failed permanently and dead-lettered); 503 with the same results and an
//!   `error` when any is not (a retryable failure, or a dead letter that could not be
//!   written), so the sender retries — the whole request, which is safe because the dedup
//!   stage makes redelivery harmless. 401 without accepted credentials, 429 (`Retry-After`)
//!   while `--max-requests` requests are already being served, 413 over `--max-body`, 400 for
//!   a body that is not JSON events; error bodies are `{"error":"…"}`.
//! - `GET /healthz` — 200 `{"status":"ok"}` while serving.
//! - `GET /metrics` — Prometheus text.
//! - `/rollouts…` — the rollout operations API ([`rollouts_api`]).
//! - `GET /ui/…` — the dashboard's files, with `--ui` ([`ui`]); no credentials needed (they
//!   hold no data: the page asks `/rollouts` for it, with the operator's key).
//!
//! Each event runs in a task of its own once it has a permit, so a client that hangs up does
//! not cut an event off halfway; shutdown waits for those tasks.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use cutover_core::{Outcome, StageError};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::auth::Auth;
use super::{Handled, Host, Input, metrics, read_event, rollouts_api, stopped, ui};

/// How long a client may take to send the request head, and then the body.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of the HTTP source.
#[derive(Debug)]
pub(crate) struct Config {
    /// Accepted credentials.
    pub(crate) auth: Auth,
    /// The largest body accepted.
    pub(crate) max_body: usize,
    /// The most `POST /events` requests taken at once; more get 429.
    pub(crate) max_requests: usize,
    /// Whether `POST /events` is served (false: only `/healthz` and `/metrics`, next to another
    /// source).
    pub(crate) events: bool,
    /// Whether the dashboard is served at `/ui/` (`--ui`).
    pub(crate) ui: bool,
}

#[derive(Debug)]
struct Server {
    host: Arc<Host>,
    /// One permit per `POST /events` request being served (`--max-requests`).
    admission: Arc<Semaphore>,
    config: Config,
}

pub(crate) type Body = Full<Bytes>;

/// Binds the listening socket (before anything is served, so a taken port is reported at once).
pub(crate) async fn bind(listen: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))
}

/// Serves until shutdown is requested, then lets every connection finish its request.
pub(crate) async fn serve(
    host: Arc<Host>,
    listener: TcpListener,
    config: Config,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().context("reading the bound address")?;
    if config.events {
        eprintln!("cutover serve: listening on http://{addr}");
        tracing::info!(%addr, pipeline = %host.pipeline().name(), "serving POST /events");
    } else {
        eprintln!("cutover serve: health and metrics on http://{addr}");
    }
    let server = Arc::new(Server {
        host,
        admission: Arc::new(Semaphore::new(config.max_requests)),
        config,
    });
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stopped(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(connection(server.clone(), stream, peer, shutdown.clone()));
                }
                Err(error) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    tracing::info!(
        connections = connections.len(),
        "stopped accepting; finishing open requests"
    );
    while connections.join_next().await.is_some() {}
    Ok(())
}

async fn connection(
    server: Arc<Server>,
    stream: TcpStream,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |request| {
        let server = server.clone();
        async move { Ok::<_, Infallible>(server.route(request, peer).await) }
    });
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(READ_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        }
        () = stopped(&mut shutdown) => {
            // Finishes the request in progress, if any, then closes.
            conn.as_mut().graceful_shutdown();
            let _ = conn.as_mut().await;
        }
    }
}

pub(crate) fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    json_response(status, &json!({ "error": message.into() }))
}

/// Whether the request's `Host` is an IP address or `localhost` (with or without a port), or
/// absent (HTTP/1.0 clients).
pub(crate) fn addressed_directly(headers: &http::HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return true;
    };
    let name = match host.strip_prefix('[') {
        // [::1]:8080
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

impl Server {
    async fn route(&self, request: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let path = request.uri().path().to_owned();
        let method = request.method().clone();
        let query = request.uri().query().map(str::to_owned);
        let browser_facing = path.starts_with("/rollouts") || path.starts_with("/ui");
        // Without credentials, what a browser can reach answers only requests addressed to an
        // IP address or localhost: a web page cannot then reach it by rebinding its own name
        // to this daemon's address (DNS rebinding).
        if browser_facing && self.config.auth.is_open() && !addressed_directly(request.headers()) {
            return error(
                StatusCode::FORBIDDEN,
                "without credentials (--no-auth) /rollouts and /ui answer only requests addressed to an \
                 IP address or localhost; configure --api-key-env or --basic-auth-env to use a host name",
            );
        }
        if let Some(call) = rollouts_api::route(&method, &path, query.as_deref()) {
            let response = self.rollouts(call, request).await;
            self.host.pipeline().metrics().add(
                "cutover_http_requests_total",
                &[("route", "/rollouts"), ("status", response.status().as_str())],
                1,
            );
            return response;
        }
        if self.config.ui
            && let Some(response) = ui::route(&method, &path)
        {
            return response;
        }
        let (route, response) = match (&method, path.as_str()) {
            (_, "/events") if !self.config.events => (
                "other",
                error(
                    StatusCode::NOT_FOUND,
                    "this listener serves only /healthz and /metrics; events come from another source",
                ),
            ),
            (&Method::POST, "/events") => ("/events", self.events(request, peer).await),
            (&Method::GET, "/healthz") => (
                "/healthz",
                json_response(StatusCode::OK, &json!({"status": "ok"})),
            ),
            (&Method::GET, "/metrics") => ("/metrics", self.metrics()),
            (_, "/events" | "/healthz" | "/metrics") => {
                let allow = if path == "/events" { "POST" } else { "GET" };
                let mut r = error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("{method} {path}: use {allow}"),
                );
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
                ("other", r)
            }
            _ => (
                "other",
                error(
                    StatusCode::NOT_FOUND,
                    format!("no route {path}; POST events to /events"),
                ),
            ),
        };
        self.host.pipeline().metrics().add(
            "cutover_http_requests_total",
            &[("route", route), ("status", response.status().as_str())],
            1,
        );
        response
    }

    fn metrics(&self) -> Response<Body> {
        let host = &self.host;
        let mut text = metrics::render(
            &host.pipeline().metrics().snapshot(),
            &[
                (
                    "cutover_serve_in_flight",
                    "Events running now.",
                    host.in_flight() as u64,
                ),
                (
                    "cutover_serve_concurrency",
                    "The most events run at once (--concurrency).",
                    u64::from(host.concurrency()),
                ),
            ],
        );
        text.push_str(&metrics::render_histograms(
            &host.pipeline().metrics().histograms(),
        ));
        let mut response = Response::new(Full::new(Bytes::from(text)));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(metrics::CONTENT_TYPE),
        );
        response
    }

    /// `/rollouts…`: authenticated like `/events`; the caller's name goes to the audit log.
    async fn rollouts(
        &self,
        call: Result<rollouts_api::Call<'_>, (StatusCode, String)>,
        request: Request<Incoming>,
    ) -> Response<Body> {
        if !self.config.events {
            return error(
                StatusCode::NOT_FOUND,
                "this listener serves only /healthz and /metrics",
            );
        }
        let Some(actor) = self.config.auth.who(request.headers()) else {
            return error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong credentials: send the API key in x-api-key (or Authorization: Bearer), \
                 or HTTP Basic credentials, as configured",
            );
        };
        let call = match call {
            Ok(call) => call,
            Err((status, message)) => return error(status, message),
        };
        if call.acts() && !rollouts_api::is_json(request.headers()) {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the action as content-type: application/json, {\"reason\": \"…\"}",
            );
        }
        let Some(rollouts) = self.host.rollouts() else {
            return error(
                StatusCode::NOT_FOUND,
                format!(
                    "pipeline \"{}\" starts no rollouts (it has no start-state-machine stage)",
                    self.host.pipeline().name()
                ),
            );
        };
        let body = match Limited::new(request.into_body(), self.config.max_body.max(4096))
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(_) => return error(StatusCode::BAD_REQUEST, "the request body could not be read"),
        };
        let metrics = self.host.pipeline().metrics();
        let (status, value) = rollouts_api::answer(rollouts, call, &body, &actor, metrics).await;
        json_response(status, &value)
    }

    async fn events(&self, request: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let auth = &self.config.auth;
        if !auth.allows(request.headers()) {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong credentials: send the API key in x-api-key (or Authorization: Bearer), \
                 or HTTP Basic credentials, as configured",
            );
            if auth.wants_basic() {
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"cutover\""),
                );
            }
            return r;
        }
        // Taken before the body is read, and held until the answer: an overload costs one
        // small 429 per extra request, not a buffered body waiting for a permit.
        let Ok(_admitted) = self.admission.clone().try_acquire_owned() else {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "busy: {} requests are being served (--max-requests); send the request again later",
                    self.config.max_requests
                ),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        };
        let max = self.config.max_body;
        let too_large = || {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {max} bytes (--max-body)"),
            )
        };
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max as u64) {
            return too_large();
        }
        let body = match tokio::time::timeout(READ_TIMEOUT, Limited::new(request.into_body(), max).collect())
            .await
        {
            Err(_) => {
                return error(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("the body did not arrive within {} s", READ_TIMEOUT.as_secs()),
                );
            }
            Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
            Ok(Err(e)) => return error(StatusCode::BAD_REQUEST, format!("cannot read the body: {e}")),
            Ok(Ok(collected)) => collected.to_bytes(),
        };
        let inputs = match split(&body, &format!("http:{peer}")) {
            Ok(inputs) => inputs,
            Err(message) => return error(StatusCode::BAD_REQUEST, message),
        };
        let handled = self.run_all(inputs).await;
        let results: Vec<Value> = handled.iter().map(Handled::to_json).collect();
        let unsettled = handled.iter().filter(|h| !h.settled).count();
        if unsettled == 0 {
            return json_response(StatusCode::OK, &json!({ "results": results }));
        }
        let mut r = json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({
                "error": format!(
                    "{unsettled} of {} event(s) not finished (a retryable failure, or the dead letter could not be written); send the request again",
                    handled.len()
                ),
                "results": results,
            }),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        r
    }

    /// Runs every event of a request, each in its own task under a permit, and returns what
    /// became of them in request order.
    async fn run_all(&self, inputs: Vec<Input>) -> Vec<Handled> {
        let mut tasks = Vec::with_capacity(inputs.len());
        for input in inputs {
            let permit = self.host.permit().await;
            let host = self.host.clone();
            let id = input.id.clone();
            let task = tokio::spawn(async move {
                let handled = host.handle(&input).await;
                drop(permit);
                handled
            });
            tasks.push((id, task));
        }
        let mut handled = Vec::with_capacity(tasks.len());
        for (id, task) in tasks {
            handled.push(task.await.unwrap_or_else(|e| {
                tracing::error!(error = %e, id = id.as_deref().unwrap_or("-"), "an event's task panicked");
                Handled {
                    id,
                    outcome: Outcome::Failed {
                        stage: "serve".into(),
                        error: StageError::retryable(format!("internal error: {e}")),
                    },
                    settled: false,
                    dead_lettered: false,
                }
            }));
        }
        handled
    }
}

/// Splits a request body into events: one JSON object, or an array of them.
fn split(body: &[u8], origin: &str) -> Result<Vec<Input>, String> {
    let trimmed = body.trim_ascii_start();
    if trimmed.is_empty() {
        return Err("empty body: send one EventBridge event or a JSON array of them".into());
    }
    if !trimmed.starts_with(b"[") {
        let id = read_event(body).map_err(|e| format!("invalid event: {e}"))?;
        return Ok(vec![Input {
            raw: Arc::from(body),
            id,
            origin: origin.to_owned(),
        }]);
    }
    let items: Vec<&RawValue> =
        serde_json::from_slice(body).map_err(|e| format!("invalid JSON array of events: {e}"))?;
    items
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            let bytes = raw.get().as_bytes();
            let id = read_event(bytes).map_err(|e| format!("invalid event [{i}]: {e}"))?;
            Ok(Input {
                raw: Arc::from(bytes),
                id,
                origin: format!("{origin}[{i}]"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ip_and_localhost_hosts_are_addressed_directly() {
        let with = |host: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
            addressed_directly(&h)
        };
        for ok in [
            "127.0.0.1:8080",
            "localhost",
            "LOCALHOST:1",
            "[::1]:8080",
            "10.0.0.5",
        ] {
            assert!(with(ok), "{ok}");
        }
        for rebound in ["evil.example:8080", "cutover.internal", "127.0.0.1.nip.io:80"] {
            assert!(!with(rebound), "{rebound}");
        }
        assert!(addressed_directly(&http::HeaderMap::new()));
    }

    fn origins(body: &str) -> Result<Vec<(String, Option<String>)>, String> {
        split(body.as_bytes(), "http:x").map(|v| v.into_iter().map(|i| (i.origin, i.id)).collect())
    }

    #[test]
    fn splits_one_event_or_a_batch() {
        assert_eq!(
            origins(r#"{"id":"a"}"#),
            Ok(vec![("http:x".into(), Some("a".into()))])
        );
        assert_eq!(
            origins(r#" [{"id":"a"}, {"detail":{}}] "#),
            Ok(vec![
                ("http:x[0]".into(), Some("a".into())),
                ("http:x[1]".into(), None)
            ])
        );
        assert_eq!(origins("[]"), Ok(vec![]));
    }

    #[test]
    fn rejects_what_is_not_json_events() {
        assert!(origins("").unwrap_err().starts_with("empty body"));
        assert!(
            origins("{\"id\":")
                .unwrap_err()
                .starts_with("invalid event: not valid JSON")
        );
        assert!(origins("[{}, 3]").unwrap_err().starts_with("invalid event [1]"));
        assert!(origins("[{}").unwrap_err().starts_with("invalid JSON array"));
        assert!(origins("\"text\"").unwrap_err().contains("JSON object"));
    }
}
