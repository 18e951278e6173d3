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
