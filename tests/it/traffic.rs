//! `traffic-shift` against moto's Route 53: a canary walk through real weighted records.

use cutover_core::{BuildContext, Event, Loader, Outcome, Pipeline};
use cutover_stages::traffic_shift::route53::aws_sdk_route53 as route53;
use serde_json::json;

use crate::moto;

/// A fresh hosted zone: its id and name.
pub(crate) async fn zone(client: &route53::Client) -> (String, String) {
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
pub(crate) async fn load(router: &str, cx: &BuildContext) -> Result<Pipeline, String> {
    let text = format!(
        "[pipelines.canary]\n[[pipelines.canary.stages]]\ntype = \"traffic-shift\"\nresult_key = \"traffic\"\n{router}\n"
    );
    let file = Loader::new()
        .load_str("canary.toml", &text, std::path::Path::new("."))
        .map_err(|e| e.to_string())?;
    file.build("canary", cx).await.map_err(|e| e.to_string())
}

/// Weight of each SetIdentifier of `record`, read straight from Route 53.
pub(crate) async fn weights(client: &route53::Client, zone_id: &str, record: &str) -> Vec<(String, i64)> {
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
        assert!(
            traffic["change_id"].as_str().is_some_and(|id| !id.is_empty()),
            "{traffic}"
        );
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
    assert!(
        error.message.contains("router.hosted_zone_id"),
        "{}",
        error.message
    );
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

/// One EC2 Query API call to moto (the tests have no EC2 SDK); returns the response XML.
fn ec2(moto: &moto::Moto, params: &str) -> String {
    use std::io::{Read, Write};
    let host = moto.url.trim_start_matches("http://");
    let body = format!("{params}&Version=2016-11-15");
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    // moto routes unsigned requests by the credential scope of the Authorization header.
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

fn xml_value(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = xml.find(&open).unwrap_or_else(|| panic!("no <{tag}> in {xml}")) + open.len();
    let end = start + xml[start..].find('<').unwrap();
    xml[start..end].to_owned()
}

#[tokio::test]
async fn alb_listener_weights_follow_the_canary_walk() {
    use cutover_stages::health_check::elbv2::aws_sdk_elasticloadbalancingv2 as elbv2;
    use elbv2::types::{Action, ActionTypeEnum, ProtocolEnum};

    let moto = moto::shared();
    let dir = tempfile::tempdir().unwrap();
    let cx = BuildContext::new(dir.path()).with_aws(moto.aws());
    let vpc = xml_value(&ec2(moto, "Action=CreateVpc&CidrBlock=10.9.0.0%2F16"), "vpcId");
    let subnets: Vec<String> = [("10.9.1.0%2F24", "us-east-1a"), ("10.9.2.0%2F24", "us-east-1b")]
        .iter()
        .map(|(cidr, az)| {
            xml_value(
                &ec2(
                    moto,
                    &format!("Action=CreateSubnet&VpcId={vpc}&CidrBlock={cidr}&AvailabilityZone={az}"),
                ),
                "subnetId",
            )
        })
        .collect();
    let client = elbv2::Client::new(cx.aws_config().await);
    let lb = client
        .create_load_balancer()
        .name(moto::unique("cats"))
        .set_subnets(Some(subnets))
        .send()
        .await
        .expect("create a load balancer in moto");
    let lb_arn = lb.load_balancers()[0].load_balancer_arn().unwrap().to_owned();
    let mut groups = Vec::new();
    for side in ["blue", "green"] {
        let tg = client
            .create_target_group()
            .name(moto::unique(side))
            .protocol(ProtocolEnum::Http)
            .port(80)
            .vpc_id(&vpc)
            .send()
            .await
            .unwrap();
        groups.push(tg.target_groups()[0].target_group_arn().unwrap().to_owned());
    }
    let listener = client
        .create_listener()
        .load_balancer_arn(&lb_arn)
        .protocol(ProtocolEnum::Http)
        .port(80)
        .default_actions(
            Action::builder()
                .r#type(ActionTypeEnum::Forward)
                .target_group_arn(&groups[0])
                .build(),
        )
        .send()
        .await
        .unwrap();
    let listener_arn = listener.listeners()[0].listener_arn().unwrap().to_owned();

    let router = format!(
        "router = {{ type = \"alb\", listener_arn = \"{listener_arn}\", blue_target_group = \"{}\", green_target_group = \"{}\" }}",
        groups[0], groups[1]
    );
    let pipeline = load(&router, &cx).await.unwrap();
    for w in [0i64, 10, 50, 100, 0] {
        let out = pipeline.run(Event::from_value(json!({ "weight": w }))).await;
        let Outcome::Passed { context } = out else {
            panic!("weight {w}: {out}")
        };
        assert_eq!(context["traffic"]["green"], json!(w));
        let described = client
            .describe_listeners()
            .listener_arns(&listener_arn)
            .send()
            .await
            .unwrap();
        let forward = described.listeners()[0].default_actions()[0]
            .forward_config()
            .unwrap();
        let weights: Vec<(String, Option<i32>)> = forward
            .target_groups()
            .iter()
            .map(|t| (t.target_group_arn().unwrap().to_owned(), t.weight()))
            .collect();
        assert_eq!(
            weights,
            vec![
                (groups[0].clone(), Some(i32::try_from(100 - w).unwrap())),
                (groups[1].clone(), Some(i32::try_from(w).unwrap()))
            ]
        );
    }
}
