//! The stand-in for cutover's Lambda functions (traffic shift, health check, error rate): an HTTP server in the test process in
//! front of moto's own service calls (moto sends them to `localhost:$MOTO_PORT`). It answers
//! Lambda's Invoke as cutover's functions would — a traffic shift verifies its weights, a health
//! check says healthy, or unhealthy once the test makes green sick — records each call, and
//! forwards every other request (the canary's DynamoDB `GetItem`) to moto.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use serde_json::{Value, json};

use crate::moto::{self, Moto};

/// A Lambda invocation the bridge answered.
#[derive(Debug, Clone)]
struct Call {
    at: Instant,
    /// The execution name the canary passes (`$$.Execution.Name`).
    execution: String,
    /// The weight of a traffic shift; `None` for a health check.
    weight: Option<u64>,
    /// The function called (`cutover-health-check`, `cutover-error-rate`, …).
    function: String,
    /// The rollout's service, as the canary passes it (`control.service`).
    service: String,
}

/// What the bridge has answered, and how it answers health checks.
#[derive(Debug, Default)]
struct Bridged {
    calls: Mutex<Vec<Call>>,
    sick: AtomicBool,
    /// The second analysis of a strategy (`cutover-error-rate`) finds green unhealthy.
    errors_high: AtomicBool,
}

impl Bridged {
    /// The answer of the function `path` names to `payload`, as cutover's Lambda host gives it.
    fn invoke(&self, path: &str, payload: &Value) -> Option<Value> {
        let execution = payload["execution"].as_str().unwrap_or_default().to_owned();
        let service = payload["control"]["service"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let (weight, answer) = if path.contains("cutover-traffic-shift") {
            let weight = payload["weight"].as_u64()?;
            (
                Some(weight),
                json!({"blue": 100u64.saturating_sub(weight), "green": weight, "status": "INSYNC"}),
            )
        } else if path.contains("cutover-health-check") {
            let answer = if self.sick.load(Ordering::SeqCst) {
                json!({"State": "unhealthy", "reason": "green answers 503 on /health"})
            } else {
                json!({"State": "healthy", "reason": "all 3 targets healthy"})
            };
            (None, answer)
        } else if path.contains("cutover-error-rate") {
            let answer = if self.errors_high.load(Ordering::SeqCst) {
                json!({"State": "unhealthy", "reason": "1 of 1 measurements failed result < 0.01: last [0.2]"})
            } else {
                json!({"State": "healthy", "reason": "1 of 1 measurements met result < 0.01"})
            };
            (None, answer)
        } else {
            return None;
        };
        // The function's name ends the (URL-encoded) ARN in the path.
        let function = path
            .find("cutover-")
            .map(|at| path[at..].split(['/', '%', ':']).next().unwrap_or_default())
            .unwrap_or_default()
            .to_owned();
        self.calls.lock().unwrap().push(Call {
            at: Instant::now(),
            execution,
            weight,
            function,
            service,
        });
        Some(answer)
    }
}

/// Stands in for cutover's Lambda functions in front of moto's own service calls. It runs on a
/// runtime of its own, so a test may block its thread (running the CLI) while moto calls it.
pub(super) struct LambdaBridge {
    bridged: Arc<Bridged>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for LambdaBridge {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

type HttpClient =
    hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl LambdaBridge {
    /// A moto server whose service integrations call a new bridge, and the bridge.
    pub(super) fn start() -> (LambdaBridge, Moto) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port for the bridge");
        let port = listener.local_addr().unwrap().port();
        let moto = moto::dedicated_with_env(&[("MOTO_PORT", port.to_string())]);
        listener.set_nonblocking(true).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("the bridge's runtime");
        let bridged = Arc::new(Bridged::default());
        runtime.spawn(serve(listener, moto.url.clone(), bridged.clone()));
        let bridge = LambdaBridge {
            bridged,
            runtime: Some(runtime),
        };
        (bridge, moto)
    }

    /// From now on, health checks say green is unhealthy (`true`) or healthy.
    pub(super) fn make_sick(&self, sick: bool) {
        self.bridged.sick.store(sick, Ordering::SeqCst);
    }

    /// From now on, the error-rate analysis says green is unhealthy (`true`) or healthy.
    pub(super) fn make_errors_high(&self, high: bool) {
        self.bridged.errors_high.store(high, Ordering::SeqCst);
    }

    /// How many times `execution` called the function `function`.
    pub(super) fn calls_to(&self, execution: &str, function: &str) -> usize {
        self.calls(execution)
            .iter()
            .filter(|c| c.function == function)
            .count()
    }

    fn calls(&self, execution: &str) -> Vec<Call> {
        self.bridged
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.execution == execution)
            .cloned()
            .collect()
    }

    /// Every traffic shift, in order: the execution and the weight it set.
    pub(super) fn shifts(&self) -> Vec<(String, u64)> {
        self.bridged
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter_map(|c| Some((c.execution.clone(), c.weight?)))
            .collect()
    }

    /// The weights the traffic shifts of `execution` set, in order.
    pub(super) fn weights(&self, execution: &str) -> Vec<u64> {
        self.calls(execution).iter().filter_map(|c| c.weight).collect()
    }

    /// The services the Task calls of `execution` named, each once, in order.
    pub(super) fn services(&self, execution: &str) -> Vec<String> {
        let mut out: Vec<String> = self.calls(execution).into_iter().map(|c| c.service).collect();
        out.dedup();
        out
    }

    /// When the health checks of `execution` ran.
    pub(super) fn checks(&self, execution: &str) -> Vec<Instant> {
        self.calls(execution)
            .iter()
            .filter(|c| c.weight.is_none())
            .map(|c| c.at)
            .collect()
    }
}

async fn serve(listener: std::net::TcpListener, upstream: String, bridged: Arc<Bridged>) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("the bridge listens");
    let client: HttpClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let upstream: Arc<str> = upstream.into();
    while let Ok((stream, _)) = listener.accept().await {
        let (client, upstream, bridged) = (client.clone(), upstream.clone(), bridged.clone());
        let service = hyper::service::service_fn(move |request| {
            answer(client.clone(), upstream.clone(), bridged.clone(), request)
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    client: HttpClient,
    upstream: Arc<str>,
    bridged: Arc<Bridged>,
    request: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Full<Bytes>>, BoxError> {
    let (mut parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    let path = parts.uri.path().to_owned();
    // Lambda's Invoke: POST /2015-03-31/functions/{FunctionName}/invocations.
    if parts.method == http::Method::POST
        && path.starts_with("/2015-03-31/functions/")
        && path.ends_with("/invocations")
    {
        let payload: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let (status, answer) = match bridged.invoke(&path, &payload) {
            Some(answer) => (200, answer),
            None => (
                404,
                json!({"Type": "User", "Message": format!("the bridge serves no {path} with {payload}")}),
            ),
        };
        return Ok(http::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(answer.to_string())))?);
    }
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    parts.uri = format!("{upstream}{path_and_query}").parse()?;
    let response = client
        .request(http::Request::from_parts(parts, Full::new(body)))
        .await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(http::Response::from_parts(parts, Full::new(body)))
}
