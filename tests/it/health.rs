//! `health-check` against moto's ELBv2: every target of the green target group counts.

use cutover_core::{BuildContext, Event, Loader, Outcome, Pipeline};
use cutover_stages::health_check::elbv2::aws_sdk_elasticloadbalancingv2 as elbv2;
use serde_json::json;

use crate::moto;

async fn load(probe: &str, cx: &BuildContext) -> Pipeline {
    let text = format!("[pipelines.canary]\n[[pipelines.canary.stages]]\ntype = \"health-check\"\n{probe}\n");
    let file = Loader::new()
        .load_str("canary.toml", &text, std::path::Path::new("."))
        .unwrap_or_else(|e| panic!("{e}"));
    file.build("canary", cx).await.unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn elbv2_target_group_with_registered_targets_is_healthy() {
    let moto = moto::shared();
    let cx = BuildContext::new("unused").with_aws(moto.aws());
    let client = elbv2::Client::new(cx.aws_config().await);
    // Lambda target groups need no VPC; moto reports registered targets healthy.
    let tg = client
        .create_target_group()
        .name(moto::unique("green").replace('_', "-"))
        .target_type(elbv2::types::TargetTypeEnum::Lambda)
        .send()
        .await
        .expect("create a target group in moto");
    let arn = tg.target_groups()[0].target_group_arn().unwrap().to_owned();
    client
        .register_targets()
        .target_group_arn(&arn)
        .targets(
            elbv2::types::TargetDescription::builder()
                .id("arn:aws:lambda:us-east-1:123456789012:function:cats-green")
                .build(),
        )
        .send()
        .await
        .expect("register a target");

    // The ARN comes from the Task input through the template.
    let pipeline = load(
        "probe = { type = \"elbv2\", target_group_arn = \"{target_group_arn}\", min_healthy_percent = 100 }",
        &cx,
    )
    .await;
    let out = pipeline
        .run(Event::from_value(json!({ "target_group_arn": arn })))
        .await;
    let Outcome::Passed { context } = out else {
        panic!("{out}")
    };
    assert_eq!(context["State"], json!("healthy"), "{context:?}");
    assert_eq!(context["checks"].as_array().unwrap().len(), 1);
    assert_eq!(context["checks"][0]["state"], json!("healthy"));
}

#[tokio::test]
async fn an_empty_target_group_is_unhealthy_and_a_missing_one_fails() {
    let moto = moto::shared();
    let cx = BuildContext::new("unused").with_aws(moto.aws_no_retries());
    let client = elbv2::Client::new(cx.aws_config().await);
    let tg = client
        .create_target_group()
        .name(moto::unique("empty").replace('_', "-"))
        .target_type(elbv2::types::TargetTypeEnum::Lambda)
        .send()
        .await
        .unwrap();
    let arn = tg.target_groups()[0].target_group_arn().unwrap().to_owned();
    let pipeline = load(
        &format!("result_key = \"health\"\nprobe = {{ type = \"elbv2\", target_group_arn = \"{arn}\" }}"),
        &cx,
    )
    .await;
    let Outcome::Passed { context } = pipeline.run(Event::from_value(json!({}))).await else {
        panic!("unhealthy is a pass")
    };
    assert_eq!(context["health"]["State"], json!("unhealthy"));
    assert!(
        context["health"]["reason"]
            .as_str()
            .unwrap()
            .contains("no registered targets")
    );

    let missing = arn.replace("targetgroup/", "targetgroup/nope-");
    let pipeline = load(
        &format!("probe = {{ type = \"elbv2\", target_group_arn = \"{missing}\" }}"),
        &cx,
    )
    .await;
    let out = pipeline.run(Event::from_value(json!({}))).await;
    let Outcome::Failed { error, .. } = out else {
        panic!("expected a failure, got {out}")
    };
    assert!(!error.retryable, "{error:?}");
    assert!(
        error.message.contains("probe.target_group_arn"),
        "{}",
        error.message
    );
}
