//! Turning AWS SDK errors into stage errors: which ones a retry may fix.
//!
//! The SDK already retries throttling and transient errors with backoff (standard retry mode,
//! 3 attempts unless `AWS_MAX_ATTEMPTS` says otherwise). What still fails after that becomes a
//! [`StageError`]: retryable for throttling, timeouts, connection failures and 5xx, so the
//! event is redelivered rather than lost; permanent for everything else.

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use cutover_core::StageError;

const RETRYABLE_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "ProvisionedThroughputExceededException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "PriorRequestNotComplete",
    "TransactionInProgressException",
    "InternalServerError",
    "InternalFailure",
    "ServiceUnavailable",
];

/// A stage error for a failed AWS call, named after the operation.
pub(crate) fn aws_error<E>(operation: &str, err: &SdkError<E, HttpResponse>) -> StageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (retryable, code) = match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => (true, None),
        SdkError::ServiceError(e) => {
            let code = e.err().code().map(str::to_owned);
            let retryable = code.as_deref().is_some_and(|c| RETRYABLE_CODES.contains(&c))
                || e.raw().status().is_server_error();
            (retryable, code)
        }
        _ => (false, None),
    };
    let message = format!("{operation}: {}", DisplayErrorContext(err));
    let error = if retryable {
        StageError::retryable(message)
    } else {
        StageError::permanent(message)
    };
    // A retryable failure is named for what it calls for, not its AWS code (still in the
    // message): a state machine's `Retry` on `Cutover.Retryable` covers every such fault.
    match code {
        Some(c) if !retryable => error.with_kind(c),
        _ => error,
    }
}

/// A DynamoDB string attribute.
pub(crate) fn string_attr(v: &str) -> aws_sdk_dynamodb::types::AttributeValue {
    aws_sdk_dynamodb::types::AttributeValue::S(v.to_owned())
}

/// Waits (up to a minute) until a DynamoDB table just created is `ACTIVE`.
pub(crate) async fn wait_until_active(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<(), crate::Error> {
    for _ in 0..60 {
        let d = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| crate::Error::Aws(aws_error("dynamodb:DescribeTable", &e).message))?;
        if d.table()
            .and_then(|t| t.table_status())
            .is_some_and(|s| s.as_str() == "ACTIVE")
        {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    Ok(())
}

/// A loopback HTTP server that gives every request one canned answer (a recorded AWS response
/// or error), for tests of how the SDK and our code read it.
#[cfg(test)]
pub(crate) mod canned {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Starts the server: its URL and a count of the requests it answered.
    pub(crate) async fn serve(status: &str, content_type: &str, body: &str) -> (String, Arc<AtomicU32>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let count = Arc::new(AtomicU32::new(0));
        let seen = count.clone();
        let response: Arc<str> = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (seen, response) = (seen.clone(), response.clone());
                tokio::spawn(async move {
                    // Read the whole request (head and Content-Length body) before answering.
                    let mut data = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        let Ok(n) = socket.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        data.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&data).to_ascii_lowercase();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let length = text
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            if data.len() >= end + 4 + length {
                                break;
                            }
                        }
                    }
                    seen.fetch_add(1, Ordering::SeqCst);
                    let _ = socket.write_all(response.as_bytes()).await;
                });
            }
        });
        (url, count)
    }
}
