//! Route 53 weighted records: the seed's two records (blue `100 - w`, green `w`), changed
//! together and confirmed before the stage reports success.
//!
//! One shift is one `ChangeResourceRecordSets` call with both records UPSERTed in a single
//! change batch (Route 53 applies a batch atomically), then `GetChange` polled with exponential
//! backoff until the change is `INSYNC` — at most `sync_timeout`, waited on the pipeline's
//! [`Clock`] — then `ListResourceRecordSets` read back to check both weights really are in the
//! zone. Throttling is retried by the SDK's standard retry mode; what still fails is a
//! retryable error of kind `Throttling`.
//!
//! ```toml
//! [router]
//! type = "route53"
//! hosted_zone_id = "Z0123456789ABCDEFGHIJ"
//! record = "www.catsndogs.lol"
//! blue = { set_identifier = "www-blue", alias = { dns_name = "blue-alb-123.us-east-1.elb.amazonaws.com", hosted_zone_id = "Z35SXDOTRQ7X7K", evaluate_target_health = true } }
//! green = { set_identifier = "www-green", alias = { dns_name = "green-alb-456.us-east-1.elb.amazonaws.com", hosted_zone_id = "Z35SXDOTRQ7X7K" } }
//! sync_timeout = "3m"
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The SDK crate [`SdkRecordApi::new`] takes a client of.
pub use aws_sdk_route53;
use aws_sdk_route53::types::{
    AliasTarget, Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
};
use cutover_core::{BoxFuture, BuildContext, BuildError, Clock, FieldError, StageError};
use serde::{Deserialize, Serialize};

use super::local::normalise;
use super::{NOT_APPLIED, NOT_IN_SYNC, ShiftResult, TrafficRouter, Weights};
use crate::aws::aws_error;

/// Configuration of `router = { type = "route53", … }`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route53RouterConfig {
    /// The hosted zone holding the records (`Z…`; `/hostedzone/Z…` is accepted too).
    pub hosted_zone_id: String,
    /// The weighted name (`www.catsndogs.lol`).
    pub record: String,
    /// Blue's record (gets `100 - weight`).
    pub blue: Route53Target,
    /// Green's record (gets `weight`).
    pub green: Route53Target,
    /// TTL of records given by `values` (alias records take their target's).
    #[serde(default = "default_record_ttl", with = "crate::duration")]
    pub ttl: Duration,
    /// How long to wait for the change to reach `INSYNC` before failing with
    /// `TrafficShift.NotInSync`.
    #[serde(default = "default_sync_timeout", with = "crate::duration")]
    pub sync_timeout: Duration,
    /// First wait between `GetChange` polls; doubles after each poll.
    #[serde(default = "default_poll_interval", with = "crate::duration")]
    pub poll_interval: Duration,
    /// Longest wait between two polls.
    #[serde(default = "default_max_poll_interval", with = "crate::duration")]
    pub max_poll_interval: Duration,
}

/// One side's weighted record: an alias (to a load balancer) or plain values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route53Target {
    /// The record's `SetIdentifier`, unique among the name's weighted records.
    pub set_identifier: String,
    /// Alias to an AWS resource (an ALB: its DNS name and canonical hosted zone id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<AliasConfig>,
    /// Record values (IP addresses for `A`), when not an alias.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// Record type; both sides must use the same one.
    #[serde(rename = "type", default = "default_type")]
    pub record_type: String,
}

/// A Route 53 alias target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliasConfig {
    /// The target's DNS name (`my-alb-123.us-east-1.elb.amazonaws.com`).
    pub dns_name: String,
    /// The target's canonical hosted zone id (the load balancer's, not yours).
    pub hosted_zone_id: String,
    /// Let Route 53 skip the target while it is unhealthy.
    #[serde(default)]
    pub evaluate_target_health: bool,
}

fn default_record_ttl() -> Duration {
    Duration::from_secs(60)
}
fn default_sync_timeout() -> Duration {
    Duration::from_secs(180)
}
fn default_poll_interval() -> Duration {
    Duration::from_secs(2)
}
fn default_max_poll_interval() -> Duration {
    Duration::from_secs(20)
}
fn default_type() -> String {
    "A".into()
}

impl Route53RouterConfig {
    pub(super) fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.zone_id().is_empty() {
            errors.push(FieldError::new("router.hosted_zone_id", "must not be empty"));
        }
        if normalise(&self.record).is_empty() {
            errors.push(FieldError::new("router.record", "must not be empty"));
        }
        for (side, t) in [("blue", &self.blue), ("green", &self.green)] {
            if t.set_identifier.is_empty() {
                errors.push(FieldError::new(
                    format!("router.{side}.set_identifier"),
                    "must not be empty",
                ));
            }
            if t.alias.is_some() != t.values.is_empty() {
                errors.push(FieldError::new(
                    format!("router.{side}"),
                    "give either `alias = { … }` or `values = [ … ]`",
                ));
            }
            if !["A", "AAAA", "CNAME"].contains(&t.record_type.as_str()) {
                errors.push(FieldError::new(
                    format!("router.{side}.type"),
                    format!("\"{}\" is not A, AAAA or CNAME", t.record_type),
                ));
            }
        }
        if self.blue.set_identifier == self.green.set_identifier {
            errors.push(FieldError::new(
                "router.green.set_identifier",
                "must differ from blue's",
            ));
        }
        if self.blue.record_type != self.green.record_type {
            errors.push(FieldError::new(
                "router.green.type",
                "weighted records of one name must have the same type as blue's",
            ));
        }
        if self.poll_interval.is_zero() {
            errors.push(FieldError::new("router.poll_interval", "must be more than 0"));
        }
        errors
    }

    fn zone_id(&self) -> &str {
        self.hosted_zone_id.trim().trim_start_matches("/hostedzone/")
    }

    pub(super) async fn build(&self, cx: &BuildContext) -> Result<Route53Router, BuildError> {
        if let Some(e) = self.validate().into_iter().next() {
            return Err(BuildError::Field(e));
        }
        let client = aws_sdk_route53::Client::new(cx.aws_config().await);
        Ok(Route53Router::new(
            self.clone(),
            Arc::new(SdkRecordApi { client }),
            cx.clock(),
        ))
    }
}

/// Both records of one shift, as sent in one change batch.
#[derive(Debug, Clone)]
pub struct WeightedChange {
    /// Hosted zone id.
    pub hosted_zone_id: String,
    /// The record name.
    pub record: String,
    /// TTL (seconds) for value records.
    pub ttl: i64,
    /// Each record with its weight.
    pub records: Vec<(Route53Target, u8)>,
}

/// A weighted record as read back from the zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedRecord {
    /// Its name, normalised (lowercase, no trailing dot).
    pub name: String,
    /// Its type.
    pub record_type: String,
    /// Its `SetIdentifier`.
    pub set_identifier: Option<String>,
    /// Its weight.
    pub weight: Option<i64>,
}

/// The three Route 53 calls a shift makes, behind a trait so the polling and the verification
/// can be tested against answers moto never gives (`PENDING`, weights not applied).
pub trait RecordApi: Send + Sync + fmt::Debug {
    /// `ChangeResourceRecordSets` with both records UPSERTed; returns the change id and status.
    fn upsert(&self, change: WeightedChange) -> BoxFuture<'_, Result<(String, String), StageError>>;
    /// `GetChange`: the change's status (`PENDING` or `INSYNC`).
    fn change_status(&self, change_id: String) -> BoxFuture<'_, Result<String, StageError>>;
    /// `ListResourceRecordSets` from `record`/`record_type` on, the sets of that name and type.
    fn list(
        &self,
        hosted_zone_id: String,
        record: String,
        record_type: String,
    ) -> BoxFuture<'_, Result<Vec<ObservedRecord>, StageError>>;
}

/// [`RecordApi`] over `aws-sdk-route53`.
#[derive(Debug, Clone)]
pub struct SdkRecordApi {
    client: aws_sdk_route53::Client,
}

impl SdkRecordApi {
    /// Uses `client`.
    pub fn new(client: aws_sdk_route53::Client) -> Self {
        Self { client }
    }
}

fn build_error(e: impl fmt::Display) -> StageError {
    StageError::permanent(format!("cannot build the Route 53 request: {e}"))
}

/// Names the configuration field behind well-known Route 53 errors.
fn explain(mut error: StageError) -> StageError {
    let field = match error.kind.as_deref() {
        Some("NoSuchHostedZone") => Some("router.hosted_zone_id"),
        Some("InvalidChangeBatch" | "InvalidInput") => Some("router.record"),
        _ => None,
    };
    if let Some(field) = field {
        error.message = format!("field \"{field}\": {}", error.message);
        error.kind = Some(format!("TrafficShift.{}", error.kind.unwrap_or_default()));
    }
    error
}

impl RecordApi for SdkRecordApi {
    fn upsert(&self, change: WeightedChange) -> BoxFuture<'_, Result<(String, String), StageError>> {
        Box::pin(async move {
            let mut changes = Vec::new();
            for (target, weight) in &change.records {
                let mut set = ResourceRecordSet::builder()
                    .name(&change.record)
                    .r#type(RrType::from(target.record_type.as_str()))
                    .set_identifier(&target.set_identifier)
                    .weight(i64::from(*weight));
                if let Some(alias) = &target.alias {
                    set = set.alias_target(
                        AliasTarget::builder()
                            .dns_name(&alias.dns_name)
                            .hosted_zone_id(&alias.hosted_zone_id)
                            .evaluate_target_health(alias.evaluate_target_health)
                            .build()
                            .map_err(build_error)?,
                    );
                } else {
                    set = set.ttl(change.ttl);
                    for value in &target.values {
                        set = set.resource_records(
                            ResourceRecord::builder()
                                .value(value)
                                .build()
                                .map_err(build_error)?,
                        );
                    }
                }
                changes.push(
                    Change::builder()
                        .action(ChangeAction::Upsert)
                        .resource_record_set(set.build().map_err(build_error)?)
                        .build()
                        .map_err(build_error)?,
                );
            }
            let batch = ChangeBatch::builder()
                .comment(format!(
                    "cutover traffic-shift {}",
                    change
                        .records
                        .iter()
                        .map(|(t, w)| format!("{}={w}", t.set_identifier))
                        .collect::<Vec<_>>()
                        .join(" ")
                ))
                .set_changes(Some(changes))
                .build()
                .map_err(build_error)?;
            let out = self
                .client
                .change_resource_record_sets()
                .hosted_zone_id(&change.hosted_zone_id)
                .change_batch(batch)
                .send()
                .await
                .map_err(|e| explain(aws_error("ChangeResourceRecordSets", &e)))?;
            let info = out
                .change_info()
                .ok_or_else(|| StageError::retryable("ChangeResourceRecordSets returned no ChangeInfo"))?;
            Ok((info.id().to_owned(), info.status().as_str().to_owned()))
        })
    }

    fn change_status(&self, change_id: String) -> BoxFuture<'_, Result<String, StageError>> {
        Box::pin(async move {
            let out = self
                .client
                .get_change()
                .id(&change_id)
                .send()
                .await
                .map_err(|e| aws_error("GetChange", &e))?;
            out.change_info()
                .map(|i| i.status().as_str().to_owned())
                .ok_or_else(|| StageError::retryable("GetChange returned no ChangeInfo"))
        })
    }

    fn list(
        &self,
        hosted_zone_id: String,
        record: String,
        record_type: String,
    ) -> BoxFuture<'_, Result<Vec<ObservedRecord>, StageError>> {
        Box::pin(async move {
            let wanted = normalise(&record);
            let mut out = Vec::new();
            let mut next: Option<(String, RrType, Option<String>)> = None;
            // A name has few weighted records; a handful of pages is plenty.
            for _ in 0..20 {
                let mut req = self
                    .client
                    .list_resource_record_sets()
                    .hosted_zone_id(&hosted_zone_id)
                    .max_items(100);
                req = match &next {
                    None => req
                        .start_record_name(&record)
                        .start_record_type(RrType::from(record_type.as_str())),
                    Some((name, rtype, id)) => req
                        .start_record_name(name)
                        .start_record_type(rtype.clone())
                        .set_start_record_identifier(id.clone()),
                };
                let page = req
                    .send()
                    .await
                    .map_err(|e| explain(aws_error("ListResourceRecordSets", &e)))?;
                let mut past = false;
                for set in page.resource_record_sets() {
                    let name = normalise(set.name());
                    if name != wanted || set.r#type().as_str() != record_type {
                        past = true;
                        continue;
                    }
                    out.push(ObservedRecord {
                        name,
                        record_type: set.r#type().as_str().to_owned(),
                        set_identifier: set.set_identifier().map(str::to_owned),
                        weight: set.weight(),
                    });
                }
                match (
                    page.is_truncated(),
                    page.next_record_name(),
                    page.next_record_type(),
                ) {
                    (true, Some(name), Some(rtype)) if !past => {
                        next = Some((
                            name.to_owned(),
                            rtype.clone(),
                            page.next_record_identifier().map(str::to_owned),
                        ));
                    }
                    _ => break,
                }
            }
            Ok(out)
        })
    }
}

/// The Route 53 [`TrafficRouter`].
#[derive(Debug)]
pub struct Route53Router {
    config: Route53RouterConfig,
    api: Arc<dyn RecordApi>,
    clock: Arc<dyn Clock>,
}

impl Route53Router {
    /// A router for `config` making its calls through `api`, waiting on `clock`.
    pub fn new(config: Route53RouterConfig, api: Arc<dyn RecordApi>, clock: Arc<dyn Clock>) -> Self {
        Self { config, api, clock }
    }

    /// Polls `GetChange` until `INSYNC`, with exponential backoff, for at most `sync_timeout`.
    async fn wait_in_sync(&self, change_id: &str, mut status: String) -> Result<String, StageError> {
        let start = self.clock.now();
        let mut delay = self.config.poll_interval;
        let mut polls = 0u32;
        while status != "INSYNC" {
            let waited = self.clock.now().duration_since(start).unwrap_or_default();
            if waited >= self.config.sync_timeout {
                return Err(StageError::retryable(format!(
                    "Route 53 change {change_id} is still {status} after {} ({polls} polls); the weights may not be in force yet",
                    crate::duration::format(waited)
                ))
                .with_kind(NOT_IN_SYNC));
            }
            self.clock
                .sleep(delay.min(self.config.sync_timeout - waited))
                .await;
            delay = (delay * 2).min(self.config.max_poll_interval.max(self.config.poll_interval));
            status = self.api.change_status(change_id.to_owned()).await?;
            polls += 1;
        }
        Ok(status)
    }

    async fn read_weights(&self) -> Result<(Option<i64>, Option<i64>), StageError> {
        let sets = self
            .api
            .list(
                self.config.zone_id().to_owned(),
                self.config.record.clone(),
                self.config.blue.record_type.clone(),
            )
            .await?;
        let weight_of = |id: &str| {
            sets.iter()
                .find(|s| s.set_identifier.as_deref() == Some(id))
                .and_then(|s| s.weight)
        };
        Ok((
            weight_of(&self.config.blue.set_identifier),
            weight_of(&self.config.green.set_identifier),
        ))
    }
}

impl TrafficRouter for Route53Router {
    fn set_weights(&self, weights: Weights) -> BoxFuture<'_, Result<ShiftResult, StageError>> {
        Box::pin(async move {
            let change = WeightedChange {
                hosted_zone_id: self.config.zone_id().to_owned(),
                record: self.config.record.clone(),
                ttl: i64::try_from(self.config.ttl.as_secs()).unwrap_or(i64::MAX),
                records: vec![
                    (self.config.blue.clone(), weights.blue),
                    (self.config.green.clone(), weights.green),
                ],
            };
            let (change_id, status) = self.api.upsert(change).await?;
            let status = self.wait_in_sync(&change_id, status).await?;
            let (blue, green) = self.read_weights().await?;
            if blue != Some(i64::from(weights.blue)) || green != Some(i64::from(weights.green)) {
                let show = |w: Option<i64>| w.map_or_else(|| "missing".to_owned(), |w| w.to_string());
                return Err(StageError::permanent(format!(
                    "change {change_id} is INSYNC but {} reads blue ({}) {} / green ({}) {}, not {} / {}",
                    self.config.record,
                    self.config.blue.set_identifier,
                    show(blue),
                    self.config.green.set_identifier,
                    show(green),
                    weights.blue,
                    weights.green
                ))
                .with_kind(NOT_APPLIED));
            }
            Ok(ShiftResult {
                blue: weights.blue,
                green: weights.green,
                change_id,
                status,
            })
        })
    }

    fn weights(&self) -> BoxFuture<'_, Result<Weights, StageError>> {
        Box::pin(async move {
            match self.read_weights().await? {
                (Some(blue), Some(green)) => Ok(Weights {
                    blue: u8::try_from(blue.clamp(0, 255)).unwrap_or(u8::MAX),
                    green: u8::try_from(green.clamp(0, 255)).unwrap_or(u8::MAX),
                }),
                // Never shifted: everything still goes to blue.
                (_, None) => Ok(Weights::green(0)),
                (None, Some(_)) => Err(StageError::permanent(format!(
                    "{} has green's weighted record but not blue's ({})",
                    self.config.record, self.config.blue.set_identifier
                ))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::time::SystemTime;

    use cutover_core::ManualClock;

    use super::*;

    /// Answers `GetChange` from a script and keeps what was upserted.
    #[derive(Debug, Default)]
    struct ScriptedApi {
        statuses: Mutex<VecDeque<String>>,
        polls: Mutex<u32>,
        applied: Mutex<Vec<(String, u8)>>,
        ignore_writes: bool,
    }

    impl RecordApi for ScriptedApi {
        fn upsert(&self, change: WeightedChange) -> BoxFuture<'_, Result<(String, String), StageError>> {
            if !self.ignore_writes {
                *self.applied.lock().unwrap() = change
                    .records
                    .iter()
                    .map(|(t, w)| (t.set_identifier.clone(), *w))
                    .collect();
            }
            Box::pin(std::future::ready(Ok(("/change/C1".into(), "PENDING".into()))))
        }

        fn change_status(&self, _id: String) -> BoxFuture<'_, Result<String, StageError>> {
            *self.polls.lock().unwrap() += 1;
            let next = self
                .statuses
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or_else(|| "PENDING".into());
            Box::pin(std::future::ready(Ok(next)))
        }

        fn list(
            &self,
            _z: String,
            record: String,
            _t: String,
        ) -> BoxFuture<'_, Result<Vec<ObservedRecord>, StageError>> {
            let sets = self
                .applied
                .lock()
                .unwrap()
                .iter()
                .map(|(id, w)| ObservedRecord {
                    name: normalise(&record),
                    record_type: "A".into(),
                    set_identifier: Some(id.clone()),
                    weight: Some(i64::from(*w)),
                })
                .collect();
            Box::pin(std::future::ready(Ok(sets)))
        }
    }

    fn config() -> Route53RouterConfig {
        toml::from_str(
            "hosted_zone_id = \"Z1\"\nrecord = \"www.catsndogs.lol\"\nsync_timeout = \"1m\"\npoll_interval = \"1s\"\nmax_poll_interval = \"8s\"\nblue = { set_identifier = \"b\", values = [\"192.0.2.1\"] }\ngreen = { set_identifier = \"g\", values = [\"192.0.2.2\"] }",
        )
        .unwrap()
    }

    fn router(api: Arc<ScriptedApi>) -> (Route53Router, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH));
        (Route53Router::new(config(), api, clock.clone()), clock)
    }

    #[tokio::test]
    async fn polls_pending_until_insync_with_backoff() {
        let api = Arc::new(ScriptedApi {
            statuses: Mutex::new(
                ["PENDING", "PENDING", "PENDING", "INSYNC"]
                    .map(String::from)
                    .into(),
            ),
            ..ScriptedApi::default()
        });
        let (router, clock) = router(api.clone());
        let result = router.set_weights(Weights::green(10)).await.unwrap();
        assert_eq!(result.status, "INSYNC");
        assert_eq!((result.blue, result.green), (90, 10));
        assert_eq!(*api.polls.lock().unwrap(), 4);
        // 1 + 2 + 4 + 8 seconds of backoff.
        assert_eq!(
            clock.now().duration_since(SystemTime::UNIX_EPOCH).unwrap(),
            Duration::from_secs(15)
        );
        assert_eq!(router.weights().await.unwrap(), Weights::green(10));
    }

    #[tokio::test]
    async fn never_insync_is_a_not_in_sync_failure_after_the_timeout() {
        let api = Arc::new(ScriptedApi::default());
        let (router, clock) = router(api.clone());
        let err = router.set_weights(Weights::green(50)).await.unwrap_err();
        assert_eq!(err.kind.as_deref(), Some(NOT_IN_SYNC));
        assert!(err.message.contains("still PENDING after 1m"), "{}", err.message);
        assert_eq!(
            clock.now().duration_since(SystemTime::UNIX_EPOCH).unwrap(),
            Duration::from_secs(60),
            "waits exactly sync_timeout, never longer"
        );
        // 1+2+4+8 then 8 s steps up to 60 s.
        assert_eq!(*api.polls.lock().unwrap(), 10);
    }

    #[tokio::test]
    async fn insync_but_weights_not_in_the_zone_is_not_applied() {
        let api = Arc::new(ScriptedApi {
            statuses: Mutex::new(["INSYNC".to_owned()].into()),
            ignore_writes: true,
            ..ScriptedApi::default()
        });
        let (router, _) = router(api);
        let err = router.set_weights(Weights::green(10)).await.unwrap_err();
        assert_eq!(err.kind.as_deref(), Some(NOT_APPLIED));
        assert!(err.message.contains("missing"), "{}", err.message);
    }

    #[test]
    fn validation_names_each_bad_field() {
        let cfg: Route53RouterConfig = toml::from_str(
            "hosted_zone_id = \"\"\nrecord = \"www.catsndogs.lol\"\nblue = { set_identifier = \"x\" }\ngreen = { set_identifier = \"x\", values = [\"192.0.2.2\"], type = \"MX\" }",
        )
        .unwrap();
        let fields: Vec<String> = cfg.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "router.hosted_zone_id",
                "router.blue",
                "router.green.type",
                "router.green.set_identifier",
                "router.green.type"
            ]
        );
    }

    #[test]
    fn explained_errors_name_the_field() {
        let e =
            explain(StageError::permanent("ChangeResourceRecordSets: no zone").with_kind("NoSuchHostedZone"));
        assert!(
            e.message.starts_with("field \"router.hosted_zone_id\""),
            "{}",
            e.message
        );
        assert_eq!(e.kind.as_deref(), Some("TrafficShift.NoSuchHostedZone"));
        let throttled = explain(StageError::retryable("slow down").with_kind("Throttling"));
        assert!(throttled.retryable);
        assert_eq!(throttled.kind.as_deref(), Some("Throttling"));
    }

    /// Answers every request with Route 53's throttling error; counts the requests.
    async fn throttling_server() -> (String, Arc<std::sync::atomic::AtomicU32>) {
        let body = "<?xml version=\"1.0\"?>\n<ErrorResponse xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>r-1</RequestId></ErrorResponse>";
        crate::aws::canned::serve("400 Bad Request", "text/xml", body).await
    }

    #[tokio::test]
    async fn persistent_throttling_is_retried_then_a_retryable_error() {
        let (url, requests) = throttling_server().await;
        let cx = BuildContext::new("unused").with_aws(cutover_core::AwsSettings {
            max_attempts: Some(2),
            ..cutover_core::AwsSettings::emulator(url)
        });
        let api = SdkRecordApi::new(aws_sdk_route53::Client::new(cx.aws_config().await));
        let cfg = config();
        let err = api
            .upsert(WeightedChange {
                hosted_zone_id: "Z1".into(),
                record: cfg.record.clone(),
                ttl: 60,
                records: vec![(cfg.blue.clone(), 90), (cfg.green.clone(), 10)],
            })
            .await
            .unwrap_err();
        assert!(err.retryable, "{err:?}");
        // Named for what it calls for (the canary's Retry covers it); the code is in the message.
        assert_eq!(err.error_name(), "Cutover.Retryable");
        assert!(err.message.contains("Throttling"), "{}", err.message);
        assert_eq!(
            requests.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "the SDK retried with backoff first"
        );
    }
}
