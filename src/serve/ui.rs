//! The dashboard: three static files (`ui/index.html`, `ui/app.js`, `ui/app.css`) built into
//! the binary, served at `/ui/` by `cutover serve --ui` and by `cutover demo`. The page holds
//! no data and no secret: it asks the `/rollouts` API for everything, every second, with the
//! API key the operator types in (kept in the tab's `sessionStorage`).
//!
//! The files are written by hand — no framework, no build step, nothing fetched at run time —
//! and are served with a Content-Security-Policy that allows only this origin's script and
//! style files (no inline code), so text from events can never run as code; the script only
//! ever sets `textContent`.
//!
//! [`serve_read_only`] is the demo's listener: the dashboard and the `GET` half of the API,
//! for the rollouts of a pipeline that runs in the same process.

use std::convert::Infallible;
use std::net::SocketAddr;

use cutover_stages::rollouts::ops::Rollouts;
use http::{HeaderValue, Method, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Bytes;
use serde_json::json;
use tokio::net::TcpListener;

use super::http::{Body, error, json_response};
use super::rollouts_api;

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");

/// Only this origin's files; no inline script or style, no frames, no plug-ins, no form posts
/// elsewhere.
const POLICY: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; \
                      base-uri 'none'; frame-ancestors 'none'; form-action 'none'";

/// Answers a request for the dashboard's files; `None` when the path is not under `/ui`.
pub(crate) fn route(method: &Method, path: &str) -> Option<Response<Body>> {
    let file = match path {
        "/ui" => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
            r.headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/ui/"));
            return Some(r);
        }
        "/ui/" | "/ui/index.html" => (INDEX, "text/html; charset=utf-8"),
        "/ui/app.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/ui/app.css" => (STYLE, "text/css; charset=utf-8"),
        p if p.starts_with("/ui/") => {
            return Some(error(StatusCode::NOT_FOUND, format!("no file {p}")));
        }
        _ => return None,
    };
    if *method != Method::GET && *method != Method::HEAD {
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} {path}: use GET"),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Some(r);
    }
    let (body, content_type) = file;
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let headers = r.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(r)
}

/// One request to the demo's listener: the dashboard, or a `GET` of the rollouts API.
async fn read_only(rollouts: &Rollouts, method: &Method, path: &str, query: Option<&str>) -> Response<Body> {
    if let Some(response) = route(method, path) {
        return response;
    }
    match rollouts_api::route(method, path, query) {
        Some(Ok(call)) if call.acts() => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "the demo's dashboard is read-only: steer it with `cutover rollouts` (the demo prints how)",
        ),
        Some(Ok(call)) => {
            let metrics = cutover_core::Metrics::default();
            let (status, value) = rollouts_api::answer(rollouts, call, b"", "demo", &metrics).await;
            json_response(status, &value)
        }
        Some(Err((status, message))) => error(status, message),
        None if path == "/" => json_response(StatusCode::OK, &json!({"dashboard": "/ui/"})),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no route {path}; the dashboard is at /ui/"),
        ),
    }
}

/// Serves the dashboard and the read-only rollouts API on `listener` until the task is
/// dropped (the demo's listener: nobody but the local user, no credentials).
pub(crate) async fn serve_read_only(listener: TcpListener, rollouts: Rollouts) {
    let rollouts = std::sync::Arc::new(rollouts);
    while let Ok((stream, _)) = listener.accept().await {
        let rollouts = rollouts.clone();
        let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let rollouts = rollouts.clone();
            async move {
                let uri = request.uri();
                // No credentials here: answer only requests addressed to the loopback address
                // itself (a page cannot reach it by rebinding a name of its own).
                let response = if super::http::addressed_directly(request.headers()) {
                    read_only(&rollouts, request.method(), uri.path(), uri.query()).await
                } else {
                    error(
                        StatusCode::FORBIDDEN,
                        "the demo's dashboard answers only requests addressed to 127.0.0.1 or localhost",
                    )
                };
                Ok::<_, Infallible>(response)
            }
        });
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

/// Binds the demo's dashboard listener on a free loopback port.
pub(crate) async fn bind_loopback() -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_served_with_their_types_and_a_strict_policy() {
        for (path, kind) in [
            ("/ui/", "text/html"),
            ("/ui/index.html", "text/html"),
            ("/ui/app.js", "text/javascript"),
            ("/ui/app.css", "text/css"),
        ] {
            let r = route(&Method::GET, path).unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            let h = r.headers();
            assert!(
                h[header::CONTENT_TYPE].to_str().unwrap().starts_with(kind),
                "{path}"
            );
            assert!(
                h[header::CONTENT_SECURITY_POLICY]
                    .to_str()
                    .unwrap()
                    .starts_with("default-src 'self'")
            );
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        }
        assert_eq!(
            route(&Method::GET, "/ui").unwrap().status(),
            StatusCode::PERMANENT_REDIRECT
        );
        assert_eq!(
            route(&Method::GET, "/ui/x.js").unwrap().status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            route(&Method::POST, "/ui/").unwrap().status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert!(route(&Method::GET, "/rollouts").is_none());
    }

    #[test]
    fn the_page_has_no_inline_script_or_style_and_never_renders_html() {
        assert!(!INDEX.contains("<script>"), "inline script");
        assert!(!INDEX.contains("style="), "inline style");
        assert!(!INDEX.contains("<style"), "inline style");
        assert!(
            !INDEX.contains("http://") && !INDEX.contains("https://"),
            "no remote files"
        );
        assert!(!SCRIPT.contains("innerHTML") && !SCRIPT.contains("outerHTML"));
        assert!(!SCRIPT.contains("insertAdjacentHTML") && !SCRIPT.contains("eval("));
    }
}
