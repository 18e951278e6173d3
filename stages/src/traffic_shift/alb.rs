//! ALB weighted target groups: the listener's default action forwards to blue's and green's
//! target groups with the two weights.
//!
//! Unlike DNS weights, a listener change takes effect for the next request — clients caching
//! DNS answers (the seed's known weakness) move too. One shift is one `ModifyListener` call;
//! the listener is then read back with `DescribeListeners` and the weights compared. ELBv2
//! applies listener changes at once, so the status is `INSYNC` as soon as they read back.
//!
//! ```toml
//! router = { type = "alb", listener_arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/catsndogs/50dc6c495c0c9188/f2f7dc8efc522ab2", blue_target_group = "arn:…:targetgroup/blue/…", green_target_group = "arn:…:targetgroup/green/…" }
//! ```

use aws_sdk_elasticloadbalancingv2::types::{Action, ActionTypeEnum, ForwardActionConfig, TargetGroupTuple};
use cutover_core::{BoxFuture, BuildContext, FieldError, StageError};
use serde::{Deserialize, Serialize};

use super::{NOT_APPLIED, ShiftResult, TrafficRouter, Weights};
use crate::aws::aws_error;

/// Configuration of `router = { type = "alb", … }`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlbRouterConfig {
    /// The listener whose default action is set.
    pub listener_arn: String,
    /// Blue's target group ARN (gets `100 - weight`).
    pub blue_target_group: String,
    /// Green's target group ARN (gets `weight`).
    pub green_target_group: String,
}

impl AlbRouterConfig {
    pub(super) fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        for (field, value) in [
            ("router.listener_arn", &self.listener_arn),
            ("router.blue_target_group", &self.blue_target_group),
            ("router.green_target_group", &self.green_target_group),
        ] {
            if value.trim().is_empty() {
                errors.push(FieldError::new(field, "must not be empty"));
            }
        }
        if self.blue_target_group == self.green_target_group && !self.blue_target_group.is_empty() {
            errors.push(FieldError::new(
                "router.green_target_group",
                "must differ from blue's",
            ));
        }
        errors
    }

    pub(super) async fn build(&self, cx: &BuildContext) -> AlbRouter {
        AlbRouter {
            client: aws_sdk_elasticloadbalancingv2::Client::new(cx.aws_config().await),
            config: self.clone(),
        }
    }
}

/// The ALB [`TrafficRouter`].
#[derive(Debug)]
pub struct AlbRouter {
    client: aws_sdk_elasticloadbalancingv2::Client,
    config: AlbRouterConfig,
}

/// Names the configuration field behind well-known ELBv2 errors.
fn explain(mut error: StageError) -> StageError {
    let field = match error.kind.as_deref() {
        Some("ListenerNotFound") => Some("router.listener_arn"),
        Some("TargetGroupNotFound") => Some("router.blue_target_group"),
        _ => None,
    };
    if let Some(field) = field {
        error.message = format!("field \"{field}\": {}", error.message);
        error.kind = Some(format!("TrafficShift.{}", error.kind.unwrap_or_default()));
    }
    error
}

impl AlbRouter {
    /// A router for `config` calling `client`.
    pub fn new(client: aws_sdk_elasticloadbalancingv2::Client, config: AlbRouterConfig) -> Self {
        Self { client, config }
    }

    /// The weights of blue's and green's target groups in the listener's default forward
    /// action (`None` where a group is not in it).
    async fn read(&self) -> Result<(Option<i32>, Option<i32>), StageError> {
        let out = self
            .client
            .describe_listeners()
            .listener_arns(&self.config.listener_arn)
            .send()
            .await
            .map_err(|e| explain(aws_error("DescribeListeners", &e)))?;
        let groups: Vec<(String, Option<i32>)> = out
            .listeners()
            .iter()
            .flat_map(|l| l.default_actions())
            .filter(|a| a.r#type() == Some(&ActionTypeEnum::Forward))
            .flat_map(|a| {
                let weighted = a.forward_config().map(|f| {
                    f.target_groups()
                        .iter()
                        .map(|t| (t.target_group_arn().unwrap_or_default().to_owned(), t.weight()))
                        .collect::<Vec<_>>()
                });
                // A plain forward to one group sends it everything.
                weighted.unwrap_or_else(|| {
                    a.target_group_arn()
                        .map(|arn| vec![(arn.to_owned(), Some(1))])
                        .unwrap_or_default()
                })
            })
            .collect();
        let weight_of = |arn: &str| groups.iter().find(|(a, _)| a == arn).map(|(_, w)| w.unwrap_or(1));
        Ok((
            weight_of(&self.config.blue_target_group),
            weight_of(&self.config.green_target_group),
        ))
    }
}

impl TrafficRouter for AlbRouter {
    fn set_weights(&self, weights: Weights) -> BoxFuture<'_, Result<ShiftResult, StageError>> {
        Box::pin(async move {
            let forward = ForwardActionConfig::builder()
                .target_groups(
                    TargetGroupTuple::builder()
                        .target_group_arn(&self.config.blue_target_group)
                        .weight(i32::from(weights.blue))
                        .build(),
                )
                .target_groups(
                    TargetGroupTuple::builder()
                        .target_group_arn(&self.config.green_target_group)
                        .weight(i32::from(weights.green))
                        .build(),
                )
                .build();
            let action = Action::builder()
                .r#type(ActionTypeEnum::Forward)
                .forward_config(forward)
                .build();
            self.client
                .modify_listener()
                .listener_arn(&self.config.listener_arn)
                .default_actions(action)
                .send()
                .await
                .map_err(|e| explain(aws_error("ModifyListener", &e)))?;
            let (blue, green) = self.read().await?;
            let (want_blue, want_green) = (i32::from(weights.blue), i32::from(weights.green));
            // ELBv2 drops zero-weight groups from the description on some paths: read them as 0.
            let (blue, green) = (blue.unwrap_or(0), green.unwrap_or(0));
            if blue != want_blue || green != want_green {
                return Err(StageError::permanent(format!(
                    "{} forwards blue {blue} / green {green}, not {want_blue} / {want_green}",
                    self.config.listener_arn
                ))
                .with_kind(NOT_APPLIED));
            }
            Ok(ShiftResult {
                blue: weights.blue,
                green: weights.green,
                change_id: self.config.listener_arn.clone(),
                status: "INSYNC".into(),
            })
        })
    }

    fn weights(&self) -> BoxFuture<'_, Result<Weights, StageError>> {
        Box::pin(async move {
            let (blue, green) = self.read().await?;
            let (blue, green) = (blue.unwrap_or(0), green.unwrap_or(0));
            let total = blue + green;
            if total <= 0 {
                return Err(StageError::permanent(format!(
                    "{} forwards to neither blue's nor green's target group",
                    self.config.listener_arn
                )));
            }
            // Listener weights go up to 999; report them as shares of 100.
            let green = u8::try_from((green * 100 + total / 2) / total).unwrap_or(100);
            Ok(Weights::green(green))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_each_bad_field() {
        let cfg: AlbRouterConfig =
            toml::from_str("listener_arn = \"\"\nblue_target_group = \"tg\"\ngreen_target_group = \"tg\"")
                .unwrap();
        let fields: Vec<String> = cfg.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["router.listener_arn", "router.green_target_group"]);
    }

    #[test]
    fn listener_not_found_names_the_field() {
        let e = explain(StageError::permanent("DescribeListeners: nope").with_kind("ListenerNotFound"));
        assert!(
            e.message.starts_with("field \"router.listener_arn\""),
            "{}",
            e.message
        );
    }
}
