//! The AWS Step Functions engine: `StartExecution`, idempotent by name.

use aws_sdk_sfn::Client;
use aws_sdk_sfn::operation::start_execution::StartExecutionError;
use cutover_core::{BoxFuture, StageError};
use serde_json::Value;

use super::{Started, StateMachineEngine};
use crate::aws::aws_error;

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
}
