//! One HTTP/1.1 request on a fresh connection, plain or TLS (rustls with ring): what the
//! metric and webhook probes send.

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;

use super::http::Tls;

/// The most of a response body read.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// Sends `method` to `uri` with an optional JSON body; the status and body, or why not.
pub(crate) async fn send(
    tls: &Tls,
    method: Method,
    uri: &Uri,
    json: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<(u16, Bytes), String> {
    match tokio::time::timeout(timeout, exchange(tls, method, uri, json)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {}", crate::duration::format(timeout))),
    }
}

async fn exchange(
    tls: &Tls,
    method: Method,
    uri: &Uri,
    json: Option<Vec<u8>>,
) -> Result<(u16, Bytes), String> {
    let host = uri.host().ok_or("the URL has no host")?;
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let stream = tokio::net::TcpStream::connect((bare_host, port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let authority = uri.authority().map_or(host, |a| a.as_str()).to_owned();
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::USER_AGENT, "cutover-health-check");
    if json.is_some() {
        request = request.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let request = request
        .body(Full::new(Bytes::from(json.unwrap_or_default())))
        .map_err(|e| e.to_string())?;
    if https {
        let name = rustls_pki_types::ServerName::try_from(bare_host.to_owned())
            .map_err(|e| format!("{host} cannot be checked against a certificate: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(tls.config()?)
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS handshake with {host}:{port}: {e}"))?;
        round_trip(stream, request).await
    } else {
        round_trip(stream, request).await
    }
}

async fn round_trip<S>(stream: S, request: Request<Full<Bytes>>) -> Result<(u16, Bytes), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| format!("reading the answer: {e}"))?;
    Ok((status, body))
}
