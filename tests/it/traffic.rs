//! `traffic-shift` against moto's Route 53: a canary walk through real weighted records.

use cutover_core::{BuildContext, Event, Loader, Outcome, Pipeline};
use cutover_stages::traffic_shift::route53::aws_sdk_route53 as route53;
use serde_json::json;

use crate::moto;

/// A fresh hosted zone: its id and name.
async fn zone(client: &route53::Client) -> (String, String) {
    let name = format!("{}.lol", moto::unique("catsndogs"));
    let out = client
        .create_hosted_zone()
        .name(&name)
        .caller_reference(moto::unique("ref"))
        .send()
        .await
        .expect("create the hosted zone in moto");
    let id = out.hosted_zone().expect("a hosted zone").id().to_owned();
    (id, name)
}

/// The pipeline of one `traffic-shift` stage loaded from TOML, as a pipeline file says it.
async fn load(router: &str, cx: &BuildContext) -> Result<Pipeline, String> {
    let text = format!(
        "[pipelines.canary]\n[[pipelines.canary.stages]]\ntype = \"traffic-shift\"\nresult_key = \"traffic\"\n{router}\n"
    );
    let file = Loader::new()
        .load_str("canary.toml", &text, std::path::Path::new("."))
        .map_err(|e| e.to_string())?;
    file.build("canary", cx).await.map_err(|e| e.to_string())
}

/// Weight of each SetIdentifier of `record`, read straight from Route 53.
async fn weights(client: &route53::Client, zone_id: &str, record: &str) -> Vec<(String, i64)> {
    let out = client
        .list_resource_record_sets()
        .hosted_zone_id(zone_id)
        .send()
        .await
        .unwrap();
    let mut found: Vec<(String, i64)> = out
        .resource_record_sets()
        .iter()
        .filter(|s| s.name().trim_end_matches('.') == record)
        .filter_map(|s| Some((s.set_identifier()?.to_owned(), s.weight()?)))
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn route53_canary_walk_sets_and_verifies_both_weights() {
    let moto = moto::shared();
    let dir = tempfile::tempdir().unwrap();
    let cx = BuildContext::new(dir.path()).with_aws(moto.aws());
    let client = route53::Client::new(cx.aws_config().await);
    let (zone_id, zone_name) = zone(&client).await;
    let record = format!("www.{zone_name}");
    // moto's DELETE matches on SetIdentifier alone: keep them unique in the zone.
    let (blue, green) = (moto::unique("a-blue"), moto::unique("b-green"));
    let router = format!(
        "[pipelines.canary.stages.router]\ntype = \"route53\"\nhosted_zone_id = \"{zone_id}\"\nrecord = \"{record}\"\nsync_timeout = \"10s\"\npoll_interval = \"100ms\"\n\
         blue = {{ set_identifier = \"{blue}\", alias = {{ dns_name = \"blue-alb-1.us-east-1.elb.amazonaws.com\", hosted_zone_id = \"Z35SXDOTRQ7X7K\" }} }}\n\
         green = {{ set_identifier = \"{green}\", values = [\"192.0.2.20\"] }}"
    );
    let pipeline = load(&router, &cx).await.unwrap();

    for w in [0i64, 10, 50, 100, 0] {
        let out = pipeline.run(Event::from_value(json!({ "weight": w }))).await;
        let Outcome::Passed { context } = out else {
            panic!("weight {w}: {out}")
        };
        let traffic = &context["traffic"];
        assert_eq!(traffic["green"], json!(w));
        assert_eq!(traffic["blue"], json!(100 - w));
        assert_eq!(traffic["status"], json!("INSYNC"));
        assert!(traffic["change_id"].as_str().is_some_and(|id| !id.is_empty()), "{traffic}");
        assert_eq!(
            weights(&client, &zone_id, &record).await,
            vec![(blue.clone(), 100 - w), (green.clone(), w)],
            "after shifting to {w}"
        );
    }
}

#[tokio::test]
async fn a_hosted_zone_that_does_not_exist_is_a_permanent_error_naming_the_field() {
    let moto = moto::shared();
    let dir = tempfile::tempdir().unwrap();
    let cx = BuildContext::new(dir.path()).with_aws(moto.aws_no_retries());
    let router = "router = { type = \"route53\", hosted_zone_id = \"ZNOSUCHZONE\", record = \"www.nowhere.lol\", \
                  blue = { set_identifier = \"b\", values = [\"192.0.2.1\"] }, green = { set_identifier = \"g\", values = [\"192.0.2.2\"] } }";
    let pipeline = load(router, &cx).await.unwrap();
    let out = pipeline.run(Event::from_value(json!({ "weight": 10 }))).await;
    let Outcome::Failed { error, stage } = out else {
        panic!("expected a failure, got {out}")
    };
    assert_eq!(stage, "traffic-shift");
    assert!(!error.retryable, "{error:?}");
    assert!(error.message.contains("router.hosted_zone_id"), "{}", error.message);
    assert_eq!(error.kind.as_deref(), Some("TrafficShift.NoSuchHostedZone"));
}

#[tokio::test]
async fn bad_weights_and_bad_config_are_clear_errors() {
    let moto = moto::shared();
    let dir = tempfile::tempdir().unwrap();
    let cx = BuildContext::new(dir.path()).with_aws(moto.aws());
    let router = "router = { type = \"route53\", hosted_zone_id = \"Z1\", record = \"www.x.lol\", \
                  blue = { set_identifier = \"b\", values = [\"192.0.2.1\"] }, green = { set_identifier = \"g\", values = [\"192.0.2.2\"] } }";
    let pipeline = load(router, &cx).await.unwrap();
    let out = pipeline.run(Event::from_value(json!({ "weight": 250 }))).await;
    let Outcome::Failed { error, .. } = out else {
        panic!("expected a failure, got {out}")
    };
    assert_eq!(error.kind.as_deref(), Some("TrafficShift.InvalidWeight"));
    assert!(error.message.contains("\"weight\""), "{}", error.message);

    let err = load(&format!("weight = 101\n{router}"), &cx).await.unwrap_err();
    assert!(err.contains("field \"weight\""), "{err}");
    assert!(err.contains("between 0 and 100"), "{err}");
}
