//! A function's execution role: one inline policy of [`Grant`]s, each an IAM statement with
//! the reason for it, which the template writes as a comment above the statement.
//!
//! Every grant is an `Allow`, except those that only make sense while the stack's `Tracing`
//! parameter is on: such a statement is allowed then and denied otherwise ([`Grant::WhileTracing`]).

use cutover_core::{Statement, deploy};
use serde_json::{Value, json};

use super::hardening;
use super::yaml::COMMENT;

/// The reason given for a tracing statement while tracing is off.
const TRACING_OFF: &str = "tracing is disabled (parameter Tracing): no X-Ray traces";

/// The role of one pipeline's function.
#[derive(Debug)]
pub(crate) struct RolePlan {
    /// Its logical ID (`EcsEventsRole`).
    pub(crate) id: String,
    /// The name of its inline policy (`cutover-ecs-events`).
    pub(crate) policy_name: String,
    /// The policy's statements, in order: the function's logs, the stages' permissions, the
    /// dead-letter queue, X-Ray.
    pub(crate) grants: Vec<Grant>,
}

/// One statement of a role's policy.
#[derive(Debug)]
pub(crate) enum Grant {
    /// Always allowed.
    Allow(Statement),
    /// Allowed while tracing is enabled (parameter `Tracing`), denied otherwise. (Denying rather
    /// than leaving the statement out keeps `AWS::NoValue` out of the statement list, which
    /// CloudFormation accepts but emulators do not, and says plainly that the role sends no
    /// traces.)
    WhileTracing(Statement),
}

impl Grant {
    /// The policy statement.
    pub(crate) fn render(&self) -> Value {
        match self {
            Grant::Allow(s) => statement("Allow", s),
            Grant::WhileTracing(s) => hardening::if_tracing(
                statement("Allow", s),
                statement(
                    "Deny",
                    &Statement {
                        why: TRACING_OFF.into(),
                        ..s.clone()
                    },
                ),
            ),
        }
    }
}

impl RolePlan {
    /// The `AWS::IAM::Role` Lambda assumes, with its policy.
    pub(crate) fn render(&self) -> Value {
        let statements: Vec<Value> = self.grants.iter().map(Grant::render).collect();
        deploy::service_role(
            "lambda.amazonaws.com",
            json!([{
                "PolicyName": self.policy_name,
                "PolicyDocument": {"Version": "2012-10-17", "Statement": statements},
            }]),
        )
    }
}

/// An IAM statement with its reason as a comment above it.
pub(crate) fn statement(effect: &str, s: &Statement) -> Value {
    json!({
        COMMENT: s.why,
        "Effect": effect,
        "Action": s.actions,
        "Resource": s.resources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tracing_grant_is_allowed_with_tracing_and_denied_without() {
        let grant = Grant::WhileTracing(Statement::new(["xray:PutTraceSegments"], [json!("*")], "traces"));
        let rendered = grant.render();
        let [on, off] = [&rendered["Fn::If"][1], &rendered["Fn::If"][2]];
        assert_eq!(rendered["Fn::If"][0], "TracingEnabled");
        assert_eq!((&on["Effect"], &on[COMMENT]), (&json!("Allow"), &json!("traces")));
        assert_eq!(
            (&off["Effect"], &off[COMMENT]),
            (&json!("Deny"), &json!(TRACING_OFF))
        );
        assert_eq!(on["Action"], off["Action"]);
        assert_eq!(on["Resource"], json!(["*"]));
    }
}
