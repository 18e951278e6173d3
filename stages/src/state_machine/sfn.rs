//! The AWS Step Functions engine: `StartExecution`, idempotent by name; executions read back
//! for `cutover rollouts` (`ListExecutions`, `GetExecutionHistory`).

use aws_sdk_sfn::Client;
use aws_sdk_sfn::operation::describe_execution::DescribeExecutionError;
use aws_sdk_sfn::operation::get_execution_history::GetExecutionHistoryError;
use aws_sdk_sfn::operation::start_execution::StartExecutionError;
use cutover_core::{BoxFuture, StageError};
use serde_json::Value;

use super::{Started, StateMachineEngine};
use crate::aws::aws_error;
use crate::rollouts::ops::{Recorded, RolloutSource};
use crate::rollouts::view::{Entry, Happened};

/// Starts executions of one state machine.
#[derive(Debug, Clone)]
pub struct SfnEngine {
    client: Client,
    state_machine_arn: String,
}

impl SfnEngine {
    /// An engine for `state_machine_arn`, using `client`.
    pub fn new(client: Client, state_machine_arn: &str) -> Self {
        Self {
            client,
            state_machine_arn: state_machine_arn.to_owned(),
        }
    }

    /// The ARN an execution named `name` has.
    pub fn execution_arn(&self, name: &str) -> String {
        format!(
            "{}:{name}",
            self.state_machine_arn
                .replacen(":stateMachine:", ":execution:", 1)
        )
    }
}

impl StateMachineEngine for SfnEngine {
    fn start<'a>(&'a self, name: &'a str, input: &'a Value) -> BoxFuture<'a, Result<Started, StageError>> {
        Box::pin(async move {
            let text = serde_json::to_string(input).map_err(|e| StageError::permanent(e.to_string()))?;
            let result = self
                .client
                .start_execution()
                .state_machine_arn(&self.state_machine_arn)
                .name(name)
                .input(&text)
                .send()
                .await;
            match result {
                Ok(out) => Ok(Started::New {
                    arn: out.execution_arn().to_owned(),
                    status: None,
                }),
                Err(err)
                    if matches!(
                        err.as_service_error(),
                        Some(StartExecutionError::ExecutionAlreadyExists(_))
                    ) =>
                {
                    let arn = self.execution_arn(name);
                    let existing = self
                        .client
                        .describe_execution()
                        .execution_arn(&arn)
                        .send()
                        .await
                        .map_err(|e| aws_error("states:DescribeExecution", &e))?;
                    let same = existing
                        .input()
                        .and_then(|i| serde_json::from_str::<Value>(i).ok())
                        .is_some_and(|i| &i == input);
                    Ok(Started::Duplicate {
                        arn,
                        same_input: same,
                    })
                }
                Err(err) => Err(aws_error("states:StartExecution", &err)),
            }
        })
    }

    fn status<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<String>, StageError>> {
        Box::pin(async move {
            match self
                .client
                .describe_execution()
                .execution_arn(self.execution_arn(name))
                .send()
                .await
            {
                Ok(out) => Ok(Some(out.status().as_str().to_owned())),
                Err(err)
                    if matches!(
                        err.as_service_error(),
                        Some(DescribeExecutionError::ExecutionDoesNotExist(_))
                    ) =>
                {
                    Ok(None)
                }
                Err(err) => Err(aws_error("states:DescribeExecution", &err)),
            }
        })
    }
}

/// An AWS timestamp as the embedded engine writes them (`…T05:00:00.000Z`), so histories and
/// audit entries of both sort alike.
fn iso(t: &aws_smithy_types::DateTime) -> String {
    let nanos = i128::from(t.secs()) * 1_000_000_000 + i128::from(t.subsec_nanos());
    cutover_asl::timestamp::format(nanos)
}

/// A JSON text from the history (inputs and outputs), or the text itself.
fn json_text(text: Option<&str>) -> Value {
    text.map(|t| serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.to_owned())))
        .unwrap_or(Value::Null)
}

/// One Step Functions history event as a rollout entry (the kinds a rollout view reads).
fn entry(e: &aws_sdk_sfn::types::HistoryEvent) -> Option<Entry> {
    use aws_sdk_sfn::types::HistoryEventType as T;
    let ended = |status: &str, error: Option<&str>, cause: Option<&str>| Happened::Ended {
        status: status.to_owned(),
        error: error.map(str::to_owned),
        cause: cause.map(str::to_owned),
    };
    let what = match e.r#type() {
        T::ExecutionStarted => Happened::Started {
            input: json_text(e.execution_started_event_details().and_then(|d| d.input())),
        },
        T::ExecutionSucceeded => ended("SUCCEEDED", None, None),
        T::ExecutionFailed => {
            let d = e.execution_failed_event_details();
            ended("FAILED", d.and_then(|d| d.error()), d.and_then(|d| d.cause()))
        }
        T::ExecutionAborted => {
            let d = e.execution_aborted_event_details();
            ended("ABORTED", d.and_then(|d| d.error()), d.and_then(|d| d.cause()))
        }
        T::ExecutionTimedOut => {
            let d = e.execution_timed_out_event_details();
            ended("TIMED_OUT", d.and_then(|d| d.error()), d.and_then(|d| d.cause()))
        }
        other if other.as_str().ends_with("StateEntered") => {
            let d = e.state_entered_event_details()?;
            Happened::Entered {
                state: d.name().to_owned(),
                input: std::sync::Arc::new(json_text(d.input())),
            }
        }
        other if other.as_str().ends_with("StateExited") => {
            let d = e.state_exited_event_details()?;
            Happened::Exited {
                state: d.name().to_owned(),
                output: std::sync::Arc::new(json_text(d.output())),
            }
        }
        _ => return None,
    };
    Some(Entry {
        at: iso(e.timestamp()),
        what,
    })
}

impl RolloutSource for SfnEngine {
    fn list(&self, all: bool) -> BoxFuture<'_, Result<Vec<(String, String)>, StageError>> {
        Box::pin(async move {
            let mut out = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let mut request = self
                    .client
                    .list_executions()
                    .state_machine_arn(&self.state_machine_arn)
                    .set_next_token(token.take());
                if !all {
                    request = request.status_filter(aws_sdk_sfn::types::ExecutionStatus::Running);
                }
                let page = request
                    .send()
                    .await
                    .map_err(|e| aws_error("states:ListExecutions", &e))?;
                for e in page.executions() {
                    out.push((
                        e.start_date().secs(),
                        e.name().to_owned(),
                        e.execution_arn().to_owned(),
                    ));
                }
                match page.next_token() {
                    Some(t) if !t.is_empty() && out.len() < 1000 => token = Some(t.to_owned()),
                    _ => break,
                }
            }
            out.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            Ok(out.into_iter().map(|(_, name, arn)| (name, arn)).collect())
        })
    }

    fn history<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Recorded>, StageError>> {
        Box::pin(async move {
            let arn = self.execution_arn(name);
            let mut entries = Vec::new();
            let mut token: Option<String> = None;
            let mut seen = std::collections::HashSet::new();
            loop {
                let page = match self
                    .client
                    .get_execution_history()
                    .execution_arn(&arn)
                    .include_execution_data(true)
                    .set_next_token(token.take())
                    .send()
                    .await
                {
                    Ok(page) => page,
                    Err(err)
                        if matches!(
                            err.as_service_error(),
                            Some(GetExecutionHistoryError::ExecutionDoesNotExist(_))
                        ) =>
                    {
                        return Ok(None);
                    }
                    Err(err) => return Err(aws_error("states:GetExecutionHistory", &err)),
                };
                let mut events: Vec<_> = page.events().iter().filter(|e| seen.insert(e.id())).collect();
                // In event order whatever order the service returned them in.
                events.sort_by_key(|e| e.id());
                entries.extend(events.into_iter().filter_map(entry));
                match page.next_token() {
                    Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                    _ => break,
                }
            }
            Ok(Some((arn, entries)))
        })
    }
}
