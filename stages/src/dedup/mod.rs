//! `dedup`: exactly one pass per key, under at-least-once delivery, concurrency, crashes and
//! retries.
//!
//! ECS delivers events at least once and out of order, and one release of three green tasks
//! sends three RUNNING events. The stage renders a key from the event — by default the
//! *deployment* (cluster + service group + task definition revision) — and claims it with one
//! conditional write before calling the rest of the chain:
//!
//! - the rest succeeded → the key is marked `COMPLETED` with a small result (e.g. the execution
//!   ARN) and blocks duplicates until `ttl` runs out;
//! - it failed retryably → the claim is released, so the redelivered event can try again;
//! - it failed permanently → the failure is recorded (and blocks like a completion);
//! - it dropped the event → the claim is released (nothing was started);
//! - a duplicate of a completed key is dropped with what it duplicates, when, and the result;
//! - a duplicate arriving while the first is still in progress fails *retryably*
//!   (`Dedup.InProgress`): it is neither dropped nor passed until the first finishes;
//! - a claimer that crashed holds its key only until `lease` runs out.
//!
//! ```toml
//! [[pipelines.ecs-events.stages]]
//! type = "dedup"
//! store = { type = "local" }                   # embedded SQLite, the default
//! # store = { type = "dynamodb", table = "cutover-dedup" }
//! # key = "{detail.taskArn}"                     # one pass per task instead of per deployment
//! ttl = "24h"
//! lease = "5m"
//! ```

mod dynamodb;
mod sqlite;
mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use cutover_core::{
    BoxFuture, BuildContext, BuildError, Clock, DeployContext, Deployment, Event, FieldError, Next, Outcome,
    Stage, StageConfig, StageError, Statement, Template, ValidateContext, ValueTemplate,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub use self::dynamodb::{DynamoStore, KEY_ATTRIBUTE, TTL_ATTRIBUTE};
pub use self::sqlite::SqliteStore;
pub use self::store::{Claim, DedupStore, MemoryStore, Record, Status};

cutover_core::register_stage!(
    "dedup",
    "Lets exactly one event per key (default: per deployment) through, with conditional writes."
);

/// The default key: one rollout per deployment (cluster, service group, task-definition revision).
pub const DEFAULT_KEY: &str = "{detail.clusterArn}|{detail.group}|{detail.taskDefinitionArn}";

/// Fields of an ECS task state change, for checking key templates at load time.
const TASK_FIELDS: &[&str] = &[
    "version",
    "id",
    "detail-type",
    "source",
    "account",
    "time",
    "region",
    "resources",
    "detail",
    "detail.clusterArn",
    "detail.taskArn",
    "detail.taskDefinitionArn",
    "detail.group",
    "detail.startedBy",
    "detail.lastStatus",
    "detail.desiredStatus",
    "detail.launchType",
    "detail.version",
    "detail.stoppedReason",
    "detail.stopCode",
    "detail.containers",
    "detail.cpu",
    "detail.memory",
    "detail.createdAt",
    "detail.startedAt",
    "detail.stoppedAt",
    "detail.updatedAt",
    "detail.availabilityZone",
    "detail.platformVersion",
    "detail.connectivity",
    "detail.containerInstanceArn",
    "detail.attachments",
    "detail.attributes",
    "detail.overrides",
    "detail.tags",
    "detail.capacityProviderName",
    "detail.pullStartedAt",
    "detail.pullStoppedAt",
    "detail.executionStoppedAt",
    "detail.stoppingAt",
    "detail.connectivityAt",
    "detail.enableExecuteCommand",
    "detail.ephemeralStorage",
];

/// Fields whose inside is free-form (lists and objects): any path below them is accepted.
const NESTED_FIELDS: &[&str] = &[
    "resources",
    "detail.containers",
    "detail.attachments",
    "detail.attributes",
    "detail.overrides",
    "detail.tags",
    "detail.ephemeralStorage",
];

/// Configuration of the `dedup` stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    /// The key, a template over event fields. The default identifies the deployment; use
    /// `"{detail.taskArn}"` to let each task through once instead.
    #[serde(default = "default_key")]
    pub key: Template,
    /// Where records live: `{ type = "local", path = "dedup.sqlite" }` (the default; relative
    /// paths land in the data directory), `{ type = "dynamodb", table = "…" }`, or
    /// `{ type = "memory" }` (tests).
    #[serde(default)]
    pub store: StoreConfig,
    /// How long a completed key blocks duplicates (the DynamoDB TTL).
    #[serde(default = "default_ttl", with = "crate::duration")]
    pub ttl: Duration,
    /// How long an in-progress claim blocks others before it counts as abandoned. Make it longer
    /// than the rest of the pipeline can take.
    #[serde(default = "default_lease", with = "crate::duration")]
    pub lease: Duration,
    /// The deciding payload, hashed into the record (default: the key). A duplicate whose
    /// payload hash differs is reported as such.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<ValueTemplate>,
    /// The context field whose value is stored as the result on completion.
    #[serde(default = "default_result_field")]
    pub result_field: String,
}

/// Where dedup records live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum StoreConfig {
    /// The embedded SQLite file.
    Local {
        /// The database file.
        #[serde(default = "default_path")]
        path: PathBuf,
    },
    /// A DynamoDB table (schema: see `cutover dedup create-table`).
    Dynamodb {
        /// The table name.
        table: String,
    },
    /// Process memory, for tests.
    Memory,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::Local { path: default_path() }
    }
}

fn default_key() -> Template {
    DEFAULT_KEY
        .parse()
        .unwrap_or_else(|_| unreachable!("the default key template is valid"))
}
fn default_ttl() -> Duration {
    Duration::from_secs(86_400)
}
fn default_lease() -> Duration {
    Duration::from_secs(300)
}
fn default_path() -> PathBuf {
    PathBuf::from("dedup.sqlite")
}
fn default_result_field() -> String {
    "execution".into()
}

fn unix(clock: &dyn Clock) -> i64 {
    clock
        .now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn owner_prefix() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    format!("{host}/{}", std::process::id())
}

#[typetag::serde(name = "dedup")]
impl StageConfig for DedupConfig {
    fn build<'a>(&'a self, cx: &'a BuildContext) -> BoxFuture<'a, Result<Arc<dyn Stage>, BuildError>> {
        Box::pin(async move {
            let store: Arc<dyn DedupStore> = match &self.store {
                StoreConfig::Memory => Arc::new(MemoryStore::default()),
                StoreConfig::Local { path } => Arc::new(
                    SqliteStore::open(&cx.data_path(path), unix(cx.clock().as_ref()))
                        .map_err(|m| BuildError::field("store.path", m))?,
                ),
                StoreConfig::Dynamodb { table } => {
                    let client = aws_sdk_dynamodb::Client::new(cx.aws_config().await);
                    Arc::new(DynamoStore::new(client, table))
                }
            };
            Ok(Arc::new(Dedup::new(self.clone(), store, cx.clock())) as Arc<dyn Stage>)
        })
    }

    fn validate(&self, _cx: &ValidateContext<'_>) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let mut fields: Vec<_> = self.key.fields().collect();
        if fields.is_empty() {
            errors.push(FieldError::new(
                "key",
                "the key has no {field}: every event would share it; e.g. \"{detail.taskArn}\"",
            ));
        }
        if let Some(p) = &self.payload {
            fields.extend(p.fields());
        }
        for f in fields {
            let text = f.as_str();
            let known = TASK_FIELDS.contains(&text)
                || NESTED_FIELDS
                    .iter()
                    .any(|k| text.starts_with(&format!("{k}.")) || text.starts_with(&format!("{k}[")))
                || f.root() == Some("context");
            if !known {
                let close: Vec<&str> = TASK_FIELDS.iter().filter(|k| similar(k, text)).copied().collect();
                let hint = if close.is_empty() {
                    String::new()
                } else {
                    format!("; did you mean {}?", close.join(" or "))
                };
                errors.push(FieldError::new(
                    "key",
                    format!("ECS task state change events have no field \"{text}\"{hint}"),
                ));
            }
        }
        if self.lease.is_zero() {
            errors.push(FieldError::new(
                "lease",
                "must be longer than the rest of the pipeline takes, e.g. \"5m\"",
            ));
        }
        if self.ttl < self.lease {
            errors.push(FieldError::new(
                "ttl",
                "shorter than the lease: a completed key would be forgotten before an abandoned claim is",
            ));
        }
        if let StoreConfig::Dynamodb { table } = &self.store
            && table.trim().is_empty()
        {
            errors.push(FieldError::new(
                "store.table",
                "empty: name the DynamoDB table (create it with `cutover dedup create-table`)",
            ));
        }
        errors
    }

    fn deployment(&self, cx: &DeployContext<'_>) -> Result<Deployment, FieldError> {
        if !matches!(self.store, StoreConfig::Dynamodb { .. }) {
            return Err(FieldError::new(
                "store",
                "the embedded stores (local SQLite, memory) live inside one process and cannot \
                 serve Lambda, where concurrent invocations share nothing: use \
                 store = { type = \"dynamodb\", table = \"…\" } (the stack creates the table)",
            ));
        }
        // The stack creates and names the table (so two stacks never collide) and points the
        // function at it; the table named in the file is what runs outside this stack.
        let table = cx.logical_id("Table");
        Ok(Deployment::default()
            .resource(
                &table,
                json!({
                    "Type": "AWS::DynamoDB::Table",
                    "Properties": {
                        "BillingMode": "PAY_PER_REQUEST",
                        "AttributeDefinitions": [{"AttributeName": KEY_ATTRIBUTE, "AttributeType": "S"}],
                        "KeySchema": [{"AttributeName": KEY_ATTRIBUTE, "KeyType": "HASH"}],
                        "TimeToLiveSpecification": {"AttributeName": TTL_ATTRIBUTE, "Enabled": true},
                    },
                }),
            )
            .output(
                format!("{table}Name"),
                json!({
                    "Description": format!("The dedup table of stage \"{}\" of pipeline \"{}\"", cx.stage_name, cx.pipeline),
                    "Value": {"Ref": table},
                }),
            )
            .env(cx.override_var("store.table"), json!({"Ref": table}))
            .allow(Statement::new(
                [
                    "dynamodb:GetItem",
                    "dynamodb:PutItem",
                    "dynamodb:UpdateItem",
                    "dynamodb:DeleteItem",
                ],
                [json!({"Fn::GetAtt": [table, "Arn"]})],
                "claim a key (conditional PutItem), read the winner (GetItem), mark it completed or \
                 failed (UpdateItem), release it (DeleteItem)",
            )))
    }
}

/// Whether `a` is within two edits of `b` (a likely typo).
fn similar(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()] <= 2
}

/// The runtime `dedup` stage.
#[derive(Debug)]
pub struct Dedup {
    config: DedupConfig,
    store: Arc<dyn DedupStore>,
    clock: Arc<dyn Clock>,
    owner: String,
}

impl Dedup {
    /// A stage over `store`.
    pub fn new(config: DedupConfig, store: Arc<dyn DedupStore>, clock: Arc<dyn Clock>) -> Self {
        Self {
            config,
            store,
            clock,
            owner: owner_prefix(),
        }
    }

    fn payload_hash(&self, event: &Event, key: &str) -> Result<String, StageError> {
        let payload = match &self.config.payload {
            Some(t) => t
                .render(event)
                .map_err(|e| StageError::permanent(format!("dedup payload: {e}")))?
                .to_string(),
            None => key.to_owned(),
        };
        let digest = Sha256::digest(payload.as_bytes());
        Ok(digest.iter().take(12).map(|b| format!("{b:02x}")).collect())
    }

    async fn run<'a>(&'a self, event: Event, next: Next<'a>) -> Outcome {
        let key = match self.config.key.render(&event) {
            Ok(k) => k,
            Err(e) => {
                return Outcome::failed(
                    StageError::permanent(format!("dedup key: {e}")).with_kind("Dedup.KeyMissing"),
                );
            }
        };
        let hash = match self.payload_hash(&event, &key) {
            Ok(h) => h,
            Err(e) => return Outcome::failed(e),
        };
        let now = unix(self.clock.as_ref());
        let event_id = event.id().unwrap_or_default().to_owned();
        let owner = format!("{}/{}/{}", self.owner, event_id, now);
        let record = Record {
            key: key.clone(),
            status: Status::InProgress,
            lease_expires: now.saturating_add(secs(self.config.lease)),
            expires: now.saturating_add(secs(self.config.ttl)),
            payload_hash: hash.clone(),
            owner: owner.clone(),
            claimed_at: now,
            event_id,
            result: None,
        };
        match self.store.claim(&record, now).await {
            Err(e) => Outcome::failed(e),
            Ok(Claim::Lost(existing)) => duplicate(&existing, &hash, now),
            Ok(Claim::Won) => {
                let mut event = event;
                event.context_mut().insert("dedup".into(), json!({"key": key}));
                let outcome = next.run(event).await;
                let expires = unix(self.clock.as_ref()).saturating_add(secs(self.config.ttl));
                let bookkeeping = match &outcome {
                    Outcome::Passed { context } => {
                        let result = context
                            .get(&self.config.result_field)
                            .map(|v| match v {
                                Value::String(s) => s.clone(),
                                other => other.to_string(),
                            })
                            .unwrap_or_else(|| "passed".into());
                        self.store
                            .finish(&key, &owner, Status::Completed, &result, expires)
                            .await
                    }
                    Outcome::Failed { error, stage } if !error.retryable => {
                        self.store
                            .finish(
                                &key,
                                &owner,
                                Status::Failed,
                                &format!("{stage}: {}", error.message),
                                expires,
                            )
                            .await
                    }
                    Outcome::Failed { .. } | Outcome::Dropped { .. } => {
                        self.store.release(&key, &owner).await
                    }
                };
                match bookkeeping {
                    Ok(()) => outcome,
                    // The rollout started but the record could not be completed: the lease
                    // still blocks duplicates, and the failure must not be hidden.
                    Err(e) if outcome.is_passed() => {
                        tracing::error!(stage = "dedup", %key, error = %e, "started, but could not mark the key completed");
                        outcome
                    }
                    Err(e) => {
                        tracing::error!(stage = "dedup", %key, error = %e, "could not release the claim; it expires with its lease");
                        outcome
                    }
                }
            }
        }
    }
}

fn duplicate(existing: &Record, hash: &str, now: i64) -> Outcome {
    let ago = now.saturating_sub(existing.claimed_at);
    let differs = if existing.payload_hash != hash {
        " (its payload differed)"
    } else {
        ""
    };
    let by = if existing.event_id.is_empty() {
        String::new()
    } else {
        format!(" by event {}", existing.event_id)
    };
    match existing.status {
        Status::Completed => Outcome::dropped(format!(
            "duplicate of {}: claimed {ago}s ago{by}{differs}, result {}",
            existing.key,
            existing.result.as_deref().unwrap_or("-")
        )),
        Status::Failed => Outcome::dropped(format!(
            "duplicate of {}: the first attempt {ago}s ago{by} failed permanently: {}",
            existing.key,
            existing.result.as_deref().unwrap_or("-")
        )),
        Status::InProgress => Outcome::failed(
            StageError::retryable(format!(
                "{} is in progress: claimed {ago}s ago{by}, lease until {}s from now; retry later",
                existing.key,
                existing.lease_expires.saturating_sub(now)
            ))
            .with_kind("Dedup.InProgress"),
        ),
    }
}

impl Stage for Dedup {
    fn process<'a>(&'a self, event: Event, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(self.run(event, next))
    }
}

#[cfg(test)]
mod tests;
