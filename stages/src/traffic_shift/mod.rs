//! `traffic-shift`: moves a share of traffic from blue to green by setting the weights of a
//! weighted DNS name, and reports success only once the new weights are really in force.
//!
//! The green weight (0–100; blue gets the rest) comes from the event — the Step Functions Task
//! input — at `weight_field` (default `weight`), or is fixed with `weight = …`. The stage writes
//! `{ "blue": 90, "green": 10, "change_id": "…", "status": "INSYNC" }` into the context (at its
//! top level, or under `result_key`), which is the Task's output when the stage runs as a Task
//! handler. Where the weights live is a [`TrafficRouter`]:
//!
//! - `route53` ([`route53`]): both weighted records UPSERTed in one change batch, `GetChange`
//!   polled until `INSYNC`, then the records read back and compared;
//! - `local` ([`local`]): the embedded default, weights kept in a small JSON file in the data
//!   directory and answered by an authoritative DNS server ([`dns::LocalDnsServer`]);
//! - `alb` ([`alb`]): an ALB listener forwarding to blue's and green's target groups with the
//!   two weights (no DNS caching in the way).
//!
//! ```toml
//! [[pipelines.canary.stages]]
//! type = "traffic-shift"
//! router = { type = "local", zone = "catsndogs.lol", record = "www.catsndogs.lol", blue = "127.0.0.1", green = "127.0.0.2", listen = "127.0.0.1:5353" }
//! # weight_field = "weight" (default), or a fixed `weight = 10`
//! ```
//!
//! A change that does not reach `INSYNC` within `sync_timeout` fails with the kind
//! `TrafficShift.NotInSync` (the Step Functions error name), weights that read back wrong with
//! `TrafficShift.NotApplied`, a bad input weight with `TrafficShift.InvalidWeight`.

pub mod alb;
pub mod dns;
pub mod local;
pub mod route53;
pub mod weights;

use std::fmt;
use std::sync::Arc;

use cutover_core::{
    BoxFuture, BuildContext, BuildError, Event, FieldError, FieldPath, Next, Outcome, Stage, StageConfig,
    StageError, ValidateContext,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use self::alb::AlbRouterConfig;
use self::local::LocalRouterConfig;
use self::route53::Route53RouterConfig;

cutover_core::register_stage!(
    "traffic-shift",
    "Sets the blue/green weights of a weighted DNS name (Route 53 or the embedded DNS server) and verifies them."
);

/// Error kind: the change did not reach `INSYNC` within `sync_timeout`.
pub const NOT_IN_SYNC: &str = "TrafficShift.NotInSync";
/// Error kind: the records read back after the change do not carry the requested weights.
pub const NOT_APPLIED: &str = "TrafficShift.NotApplied";
/// Error kind: the green weight is missing, not a number, or outside 0–100.
pub const INVALID_WEIGHT: &str = "TrafficShift.InvalidWeight";

/// Configuration of the `traffic-shift` stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficShiftConfig {
    /// Where the weights are set: `{ type = "local", … }` (embedded DNS server),
    /// `{ type = "route53", … }` or `{ type = "alb", … }`.
    pub router: RouterConfig,
    /// A fixed green weight, 0–100 (blue gets `100 - weight`). When absent, the weight is read
    /// from the event at `weight_field`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
    /// The event field (the Task input) holding the green weight, a number or a numeric
    /// string; `context.…` reads what earlier stages added.
    #[serde(default = "default_weight_field")]
    pub weight_field: String,
    /// Put the result under this key of the context instead of merging it at the top level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_key: Option<String>,
}

fn default_weight_field() -> String {
    "weight".into()
}

/// The router backends.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum RouterConfig {
    /// Route 53 weighted records.
    #[serde(rename = "route53")]
    Route53(Route53RouterConfig),
    /// The embedded weighted zone and DNS server.
    Local(LocalRouterConfig),
    /// An ALB listener forwarding to two weighted target groups.
    Alb(AlbRouterConfig),
}

/// Blue and green weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Weights {
    /// Blue's weight.
    pub blue: u8,
    /// Green's weight.
    pub green: u8,
}

impl Weights {
    /// `green` to green and the rest of 100 to blue.
    pub fn green(green: u8) -> Self {
        let green = green.min(100);
        Self {
            blue: 100 - green,
            green,
        }
    }
}

/// What a shift did: the stage's result, written into the context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShiftResult {
    /// Blue's weight now in force.
    pub blue: u8,
    /// Green's weight now in force.
    pub green: u8,
    /// The backend's change id (Route 53 `/change/…`, `local-N` for the embedded zone).
    pub change_id: String,
    /// `INSYNC` once the change is in force.
    pub status: String,
}

/// Where traffic weights are set: Route 53, the embedded zone, or a test double.
pub trait TrafficRouter: Send + Sync + fmt::Debug {
    /// Sets both weights and returns once they are in force (or fails saying why).
    fn set_weights(&self, weights: Weights) -> BoxFuture<'_, Result<ShiftResult, StageError>>;
    /// The weights currently in force.
    fn weights(&self) -> BoxFuture<'_, Result<Weights, StageError>>;
}

#[typetag::serde(name = "traffic-shift")]
impl StageConfig for TrafficShiftConfig {
    fn build<'a>(&'a self, cx: &'a BuildContext) -> BoxFuture<'a, Result<Arc<dyn Stage>, BuildError>> {
        Box::pin(async move {
            if let Some(e) = self.own_errors().into_iter().next() {
                return Err(BuildError::Field(e));
            }
            let router: Arc<dyn TrafficRouter> = match &self.router {
                RouterConfig::Route53(c) => Arc::new(c.build(cx).await?),
                RouterConfig::Local(c) => Arc::new(c.build(cx)?),
                RouterConfig::Alb(c) => Arc::new(c.build(cx).await),
            };
            let source = match self.weight {
                Some(w) => WeightSource::Fixed(Weights::green(u8::try_from(w).unwrap_or(100))),
                None => WeightSource::Field(
                    self.weight_field
                        .parse()
                        .map_err(|e| BuildError::field("weight_field", format!("{e}")))?,
                ),
            };
            Ok(Arc::new(TrafficShift::new(router, source, self.result_key.clone())) as Arc<dyn Stage>)
        })
    }

    fn validate(&self, _cx: &ValidateContext<'_>) -> Vec<FieldError> {
        self.own_errors()
    }

    fn claims(&self) -> Vec<String> {
        match &self.router {
            RouterConfig::Route53(c) => vec![format!(
                "the Route 53 record {} in zone {}",
                local::normalise(&c.record),
                c.hosted_zone_id.trim().trim_start_matches("/hostedzone/")
            )],
            RouterConfig::Local(c) => vec![format!("the embedded record {}", local::normalise(&c.record))],
            RouterConfig::Alb(c) => vec![
                format!("the listener {}", c.listener_arn),
                format!("the target group {}", c.blue_target_group),
                format!("the target group {}", c.green_target_group),
            ],
        }
    }

    fn deployment(
        &self,
        cx: &cutover_core::DeployContext<'_>,
    ) -> Result<cutover_core::Deployment, FieldError> {
        use cutover_core::{Deployment, Statement};
        use serde_json::json;
        let secs = |d: std::time::Duration| u32::try_from(d.as_secs()).unwrap_or(900);
        match &self.router {
            RouterConfig::Local(_) => Err(FieldError::new(
                "router",
                "the embedded weighted zone (type = \"local\") lives inside one process and cannot \
                 run in Lambda: use router = { type = \"route53\", hosted_zone_id = \"…\", record = \"…\", \
                 blue = { … }, green = { … } } or { type = \"alb\", … }",
            )),
            RouterConfig::Route53(c) => {
                // Zone and record are stack parameters (defaulting to the file's values), so one
                // file deploys to several zones; the function takes them through overrides.
                let (zone, record) = (cx.logical_id("HostedZoneId"), cx.logical_id("Record"));
                let zone_arn =
                    json!({"Fn::Sub": format!("arn:${{AWS::Partition}}:route53:::hostedzone/${{{zone}}}")});
                Ok(Deployment::default()
                    .parameter(
                        &zone,
                        json!({
                            "Type": "String",
                            "Default": c.hosted_zone_id.trim().trim_start_matches("/hostedzone/"),
                            "Description": format!("The hosted zone whose weighted records pipeline \"{}\" shifts", cx.pipeline),
                        }),
                    )
                    .parameter(
                        &record,
                        json!({
                            "Type": "String",
                            "Default": c.record,
                            "Description": format!("The weighted record name pipeline \"{}\" shifts", cx.pipeline),
                        }),
                    )
                    .env(cx.override_var("router.hosted_zone_id"), json!({"Ref": zone}))
                    .env(cx.override_var("router.record"), json!({"Ref": record}))
                    .allow(Statement::new(
                        ["route53:ChangeResourceRecordSets", "route53:ListResourceRecordSets"],
                        [zone_arn],
                        "set blue's and green's weights in one change batch, then read the records back",
                    ))
                    .allow(Statement::new(
                        ["route53:GetChange"],
                        [json!({"Fn::Sub": "arn:${AWS::Partition}:route53:::change/*"})],
                        "wait until the change is INSYNC (change ids are only known once made)",
                    ))
                    .timeout(secs(c.sync_timeout).saturating_add(30)))
            }
            RouterConfig::Alb(c) => Ok(Deployment::default()
                .allow(Statement::new(
                    ["elasticloadbalancing:ModifyListener"],
                    [json!(c.listener_arn)],
                    "set the weights of the listener's forward action",
                ))
                .allow(Statement::new(
                    ["elasticloadbalancing:DescribeListeners"],
                    [json!("*")],
                    "read the weights back; ELBv2 Describe actions support no resource-level \
                     permissions, so the resource must be \"*\"",
                ))),
        }
    }
}

impl TrafficShiftConfig {
    fn own_errors(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if let Some(w) = self.weight
            && !(0..=100).contains(&w)
        {
            errors.push(FieldError::new(
                "weight",
                format!("the green weight must be between 0 and 100, not {w}"),
            ));
        }
        if let Err(e) = self.weight_field.parse::<FieldPath>() {
            errors.push(FieldError::new("weight_field", e.to_string()));
        }
        if self.result_key.as_deref() == Some("") {
            errors.push(FieldError::new("result_key", "must not be empty"));
        }
        match &self.router {
            RouterConfig::Route53(c) => errors.extend(c.validate()),
            RouterConfig::Local(c) => errors.extend(c.validate()),
            RouterConfig::Alb(c) => errors.extend(c.validate()),
        }
        errors
    }
}

/// Where the green weight comes from.
#[derive(Debug, Clone)]
pub enum WeightSource {
    /// Always these weights.
    Fixed(Weights),
    /// The event field at this path.
    Field(FieldPath),
}

impl WeightSource {
    /// The weights an event asks for.
    pub fn read(&self, event: &Event) -> Result<Weights, StageError> {
        let path = match self {
            WeightSource::Fixed(w) => return Ok(*w),
            WeightSource::Field(path) => path,
        };
        let invalid = |msg: String| StageError::permanent(msg).with_kind(INVALID_WEIGHT);
        let value = event
            .lookup(path)
            .map_err(|e| invalid(e.to_string()))?
            .ok_or_else(|| invalid(format!("the event has no green weight at \"{path}\"")))?;
        let number = match value {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        match number {
            Some(n) if (0.0..=100.0).contains(&n) && n.fract() == 0.0 => {
                // In range and whole, so the cast is exact.
                Ok(Weights::green(n as u8))
            }
            _ => Err(invalid(format!(
                "field \"{path}\": the green weight must be a whole number between 0 and 100, not {value}"
            ))),
        }
    }
}

/// The runtime `traffic-shift` stage.
#[derive(Debug)]
pub struct TrafficShift {
    router: Arc<dyn TrafficRouter>,
    source: WeightSource,
    result_key: Option<String>,
}

impl TrafficShift {
    /// A stage shifting with `router` to the weights `source` gives.
    pub fn new(router: Arc<dyn TrafficRouter>, source: WeightSource, result_key: Option<String>) -> Self {
        Self {
            router,
            source,
            result_key,
        }
    }

    /// The router.
    pub fn router(&self) -> &Arc<dyn TrafficRouter> {
        &self.router
    }

    /// Reads the weight of `event` and shifts to it.
    pub async fn shift(&self, event: &Event) -> Result<ShiftResult, StageError> {
        let weights = self.source.read(event)?;
        let result = self.router.set_weights(weights).await?;
        tracing::info!(
            blue = result.blue,
            green = result.green,
            change_id = %result.change_id,
            "traffic shifted"
        );
        Ok(result)
    }
}

impl Stage for TrafficShift {
    fn process<'a>(&'a self, mut event: Event, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            match self.shift(&event).await {
                Ok(result) => {
                    let value = serde_json::to_value(&result).unwrap_or(Value::Null);
                    event.add_result(self.result_key.as_deref(), value);
                    next.run(event).await
                }
                Err(error) => Outcome::failed(error),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use serde_json::json;

    /// Records what it was asked; fails when told to.
    #[derive(Debug, Default)]
    struct FakeRouter {
        set: Mutex<Vec<Weights>>,
        fail: Option<StageError>,
    }

    impl TrafficRouter for FakeRouter {
        fn set_weights(&self, weights: Weights) -> BoxFuture<'_, Result<ShiftResult, StageError>> {
            self.set.lock().unwrap().push(weights);
            let out = match &self.fail {
                Some(e) => Err(e.clone()),
                None => Ok(ShiftResult {
                    blue: weights.blue,
                    green: weights.green,
                    change_id: "c-1".into(),
                    status: "INSYNC".into(),
                }),
            };
            Box::pin(std::future::ready(out))
        }

        fn weights(&self) -> BoxFuture<'_, Result<Weights, StageError>> {
            let last = self
                .set
                .lock()
                .unwrap()
                .last()
                .copied()
                .unwrap_or(Weights::green(0));
            Box::pin(std::future::ready(Ok(last)))
        }
    }

    fn stage(router: Arc<FakeRouter>, source: WeightSource, key: Option<&str>) -> TrafficShift {
        TrafficShift::new(router, source, key.map(str::to_owned))
    }

    async fn run(stage: &TrafficShift, input: Value) -> Outcome {
        stage.process(Event::from_value(input), Next::end()).await
    }

    #[tokio::test]
    async fn reads_the_weight_from_the_task_input_and_reports_the_shift() {
        let router = Arc::new(FakeRouter::default());
        let s = stage(
            router.clone(),
            WeightSource::Field("weight".parse().unwrap()),
            None,
        );
        let out = run(&s, json!({"weight": 10})).await;
        assert_eq!(
            out,
            Outcome::Passed {
                context: json!({"blue": 90, "green": 10, "change_id": "c-1", "status": "INSYNC"})
                    .as_object()
                    .unwrap()
                    .clone()
            }
        );
        let out = run(&s, json!({"weight": "50"})).await;
        assert!(out.is_passed());
        assert_eq!(
            *router.set.lock().unwrap(),
            vec![Weights::green(10), Weights::green(50)]
        );
    }

    #[tokio::test]
    async fn result_key_nests_the_result() {
        let router = Arc::new(FakeRouter::default());
        let s = stage(router, WeightSource::Fixed(Weights::green(100)), Some("traffic"));
        let Outcome::Passed { context } = run(&s, json!({})).await else {
            panic!("expected a pass")
        };
        assert_eq!(context["traffic"]["green"], json!(100));
        assert_eq!(context["traffic"]["blue"], json!(0));
    }

    #[tokio::test]
    async fn bad_weights_are_permanent_failures_naming_the_field() {
        let router = Arc::new(FakeRouter::default());
        let s = stage(
            router.clone(),
            WeightSource::Field("input.weight".parse().unwrap()),
            None,
        );
        for input in [
            json!({"input": {"weight": 101}}),
            json!({"input": {"weight": -1}}),
            json!({"input": {"weight": 12.5}}),
            json!({"input": {"weight": "lots"}}),
            json!({"input": {}}),
        ] {
            let out = run(&s, input.clone()).await;
            let Outcome::Failed { error, .. } = out else {
                panic!("{input}: expected a failure")
            };
            assert!(!error.retryable, "{input}");
            assert_eq!(error.kind.as_deref(), Some(INVALID_WEIGHT));
            assert!(error.message.contains("input.weight"), "{}", error.message);
        }
        assert!(
            router.set.lock().unwrap().is_empty(),
            "nothing may be shifted on bad input"
        );
    }

    #[tokio::test]
    async fn a_router_failure_ends_the_event_with_its_kind() {
        let router = Arc::new(FakeRouter {
            fail: Some(StageError::retryable("still PENDING after 5m").with_kind(NOT_IN_SYNC)),
            ..FakeRouter::default()
        });
        let s = stage(router, WeightSource::Fixed(Weights::green(50)), None);
        let Outcome::Failed { error, .. } = run(&s, json!({})).await else {
            panic!("expected a failure")
        };
        assert_eq!(error.kind.as_deref(), Some(NOT_IN_SYNC));
    }

    #[test]
    fn validation_rejects_a_fixed_weight_out_of_range() {
        let cfg: TrafficShiftConfig = toml::from_str(
            "weight = 150\nrouter = { type = \"local\", zone = \"catsndogs.lol\", record = \"www.catsndogs.lol\", blue = \"127.0.0.1\", green = \"127.0.0.2\" }",
        )
        .unwrap();
        let errors = cfg.validate(&ValidateContext {
            base_dir: std::path::Path::new("."),
            pipelines: &[],
        });
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "weight");
    }

    #[test]
    fn unknown_fields_and_router_types_are_rejected() {
        let err = toml::from_str::<TrafficShiftConfig>(
            "wieght = 1\nrouter = { type = \"local\", zone = \"z\", record = \"r.z\", blue = \"127.0.0.1\", green = \"127.0.0.2\" }",
        )
        .unwrap_err();
        assert!(err.to_string().contains("wieght"), "{err}");
        let err = toml::from_str::<TrafficShiftConfig>("router = { type = \"carrier-pigeon\" }").unwrap_err();
        assert!(err.to_string().contains("carrier-pigeon"), "{err}");
    }

    #[test]
    fn every_config_round_trips_through_toml() {
        for text in [
            "router = { type = \"local\", zone = \"catsndogs.lol\", record = \"www.catsndogs.lol\", blue = \"127.0.0.1\", green = [\"127.0.0.2\", \"::2\"], listen = \"127.0.0.1:5353\", ttl = \"5s\" }",
            "weight = 10\nresult_key = \"traffic\"\nrouter = { type = \"local\", zone = \"catsndogs.lol\", record = \"www.catsndogs.lol\", blue = \"127.0.0.1\", green = \"127.0.0.2\", serve = false, state_file = \"/tmp/w.json\" }",
            "router = { type = \"alb\", listener_arn = \"arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/c/1/2\", blue_target_group = \"arn:tg/blue\", green_target_group = \"arn:tg/green\" }",
            "weight_field = \"input.weight\"\n[router]\ntype = \"route53\"\nhosted_zone_id = \"Z0123\"\nrecord = \"www.catsndogs.lol\"\nttl = \"1m\"\nsync_timeout = \"2m\"\nblue = { set_identifier = \"blue\", alias = { dns_name = \"blue-123.us-east-1.elb.amazonaws.com\", hosted_zone_id = \"Z35SXDOTRQ7X7K\", evaluate_target_health = true } }\ngreen = { set_identifier = \"green\", values = [\"192.0.2.10\"], type = \"A\" }",
        ] {
            let cfg: TrafficShiftConfig = toml::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            let again = toml::to_string(&cfg).unwrap();
            let back: TrafficShiftConfig = toml::from_str(&again).unwrap_or_else(|e| panic!("{again}: {e}"));
            assert_eq!(
                serde_json::to_value(&cfg).unwrap(),
                serde_json::to_value(&back).unwrap(),
                "{again}"
            );
            let boxed: Box<dyn StageConfig> =
                toml::from_str(&format!("type = \"traffic-shift\"\n{text}")).unwrap();
            assert!(format!("{boxed:?}").contains("TrafficShiftConfig"));
        }
    }
}
