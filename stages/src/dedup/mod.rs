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
//! - a duplicate arriving while another event's claim is in progress waits (`wait`) for it to
//!   settle; a claim still in progress after that whose claimer is alive drops it as a
//!   duplicate of an in-progress rollout, one whose claimer may be dead fails it retryably
//!   (`Dedup.InProgress`) for its host to retry;
//! - the claimer renews its lease while the rest runs, so a claimer that crashed holds its key
//!   only until `lease` runs out (tens of seconds), and then the next delivery takes over;
//! - another attempt of the *same* event (a lost answer, a crashed process, a host's retry)
//!   takes over that event's claim at once: the work after the claim is idempotent. A claim
//!   whose attempt is still under way in this process is never taken over, not even when its
//!   lease has run out (as a virtual clock may make it between two renewals): a second
//!   delivery of the event arriving meanwhile waits for it like any duplicate.
//!
//! ```toml
//! [[pipelines.ecs-events.stages]]
//! type = "dedup"
//! store = { type = "local" }                   # embedded SQLite, the default
//! # store = { type = "dynamodb", table = "cutover-dedup" }
//! # key = "{detail.taskArn}"                     # one pass per task instead of per deployment
//! ttl = "24h"
//! lease = "30s"                               # renewed while the rollout starts
//! wait = "20s"                                # how long a duplicate waits for an in-progress claim
//! ```

mod dynamodb;
mod sqlite;
mod store;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use cutover_core::{
    BoxFuture, BuildContext, BuildError, Clock, DeployContext, Deployment, Event, FieldError, Metrics, Next,
    Outcome, Stage, StageConfig, StageError, Statement, Template, ValidateContext, ValueTemplate,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

pub use self::dynamodb::{DynamoStore, KEY_ATTRIBUTE, TTL_ATTRIBUTE};
pub use self::sqlite::SqliteStore;
pub use self::store::{Claim, DedupStore, MemoryStore, Record, Status};

cutover_core::register_stage!(
    "dedup",
    "Lets exactly one event per key (default: per deployment) through, with conditional writes.",
    per_event_templates
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
    #[serde(default = "default_claim_ttl", with = "crate::duration")]
    pub ttl: Duration,
    /// How long an in-progress claim blocks others before it counts as abandoned. The claimer
    /// renews it every third of it while the rest of the pipeline runs, so it bounds how long
    /// a crashed claimer blocks its deployment, not how long the pipeline may take.
    #[serde(default = "default_lease", with = "crate::duration")]
    pub lease: Duration,
    /// How long an event that meets another event's in-progress claim waits for it to settle:
    /// a completion drops it as a duplicate, a release or an abandoned lease lets it claim. If
    /// the claim is still in progress then and its claimer renewed the lease meanwhile (it is
    /// alive and answers for the deployment), the event is dropped as a duplicate of an
    /// in-progress rollout; otherwise it fails retryably (`Dedup.InProgress`) for its host to
    /// retry. Longer than a third of `lease` tells live claimers from dead ones.
    #[serde(default = "default_wait", with = "crate::duration")]
    pub wait: Duration,
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
fn default_claim_ttl() -> Duration {
    Duration::from_secs(86_400)
}
fn default_lease() -> Duration {
    Duration::from_secs(30)
}
fn default_wait() -> Duration {
    Duration::from_secs(20)
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
                StoreConfig::Local { path } => {
                    // Only a file inside the scratch directory is scratch: any other path
                    // names a real store, kept as durable as ever.
                    let scratch = cx.is_scratch_path(path);
                    let (path, now) = (cx.data_path(path), unix(cx.clock().as_ref()));
                    let store = if scratch {
                        SqliteStore::open_scratch(&path, now)
                    } else {
                        SqliteStore::open(&path, now)
                    };
                    Arc::new(store.map_err(|e| BuildError::field("store.path", e.to_string()))?)
                }
                StoreConfig::Dynamodb { table } => {
                    let client = aws_sdk_dynamodb::Client::new(cx.aws_config().await);
                    Arc::new(DynamoStore::new(client, table))
                }
            };
            Ok(
                Arc::new(Dedup::new(self.clone(), store, cx.clock()).with_metrics(cx.metrics().clone()))
                    as Arc<dyn Stage>,
            )
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
        if self.lease < Duration::from_secs(3) {
            errors.push(FieldError::new(
                "lease",
                "must be at least \"3s\" (it is renewed every third of it), e.g. \"30s\"",
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
        // An invocation may wait for another event's claim, and repeats its own store writes.
        let budget = secs(self.wait).saturating_add(30);
        Ok(Deployment::default()
            .timeout(u32::try_from(budget).unwrap_or(900))
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
    metrics: Metrics,
    owner: String,
    /// The claims this stage holds right now, each with what wakes the events of this process
    /// waiting on it when it settles: they learn at once instead of at their next poll (other
    /// processes' waiters still poll).
    held: HeldClaims,
}

/// Numbers the attempts of this process: with the host and process in an owner token, no two
/// attempts of this process, in any stage, share one.
static ATTEMPTS: AtomicU64 = AtomicU64::new(0);

/// The owner tokens of this process's attempts under way (claiming, or working under the claim
/// they won): their claims are alive, whatever their leases say, and are waited for, never
/// taken over.
static UNDER_WAY: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Mutex::default);

/// An attempt under way: its owner token is in [`UNDER_WAY`] until the attempt ends or is
/// abandoned (its future dropped).
struct UnderWay(String);

impl UnderWay {
    fn new(owner: &str) -> Self {
        UNDER_WAY
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(owner.to_owned());
        Self(owner.to_owned())
    }

    /// Whether the attempt that owns `owner` is under way in this process.
    fn has(owner: &str) -> bool {
        UNDER_WAY
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(owner)
    }
}

impl Drop for UnderWay {
    fn drop(&mut self) {
        UNDER_WAY
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.0);
    }
}

/// The claims a stage holds, by key, each with what wakes its waiters.
type HeldClaims = Arc<Mutex<HashMap<String, Arc<Notify>>>>;

/// A claim this stage holds: when dropped (its outcome recorded, or the attempt abandoned), the
/// waiters of this process are woken.
struct Held {
    key: String,
    notify: Arc<Notify>,
    held: HeldClaims,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.get(&self.key).is_some_and(|n| Arc::ptr_eq(n, &self.notify)) {
            held.remove(&self.key);
        }
        // Under the lock: a waiter that found the claim held has enabled its wake-up already.
        self.notify.notify_waiters();
    }
}

impl Dedup {
    /// A stage over `store`.
    pub fn new(config: DedupConfig, store: Arc<dyn DedupStore>, clock: Arc<dyn Clock>) -> Self {
        Self {
            config,
            store,
            clock,
            metrics: Metrics::default(),
            owner: owner_prefix(),
            held: Arc::default(),
        }
    }

    /// Counts takeovers, lost leases and bookkeeping errors in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
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

    /// A fresh claim for one attempt of `event_id`: its owner token is unique to the attempt, so
    /// a retried write of this very record recognises itself.
    fn record(&self, key: &str, hash: &str, event_id: &str, now: i64) -> Record {
        let attempt = ATTEMPTS.fetch_add(1, Ordering::Relaxed);
        Record {
            key: key.to_owned(),
            status: Status::InProgress,
            lease_expires: now.saturating_add(secs(self.config.lease)),
            expires: now.saturating_add(secs(self.config.ttl)),
            payload_hash: hash.to_owned(),
            owner: format!("{}/{event_id}/{now}/{attempt}", self.owner),
            claimed_at: now,
            event_id: event_id.to_owned(),
            result: None,
        }
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
        let event_id = event.id().unwrap_or_default().to_owned();
        let waiting_since = Instant::now();
        let mut replacing: Option<String> = None;
        let mut takeovers = 0;
        // The in-progress claim of another event as first seen, to tell a live claimer (its
        // lease was renewed since) from a dead one.
        let mut first_seen: Option<Record> = None;
        let mut polls = 0;
        loop {
            let now = unix(self.clock.as_ref());
            let record = self.record(&key, &hash, &event_id, now);
            // Before the claim: the record is in the store before its claim returns.
            let under_way = UnderWay::new(&record.owner);
            let mut existing = match self.live_claim(&key).await {
                // Not written over, even if its lease has run out (a virtual clock may pass it
                // between two renewals).
                Some(live) => live,
                None => match self.claim(&record, now, replacing.as_deref()).await {
                    Err(e) => return Outcome::failed(e),
                    Ok(Claim::Won) => {
                        if let Some(previous) = &replacing {
                            self.metrics.add("cutover_dedup_takeovers_total", &[], 1);
                            tracing::warn!(stage = "dedup", %key, previous, "took over this event's own earlier claim");
                        }
                        let held = self.hold(&key);
                        let outcome = self.run_claimed(event, next, record).await;
                        // No longer under way before its waiters are woken.
                        drop(under_way);
                        drop(held);
                        return outcome;
                    }
                    Ok(Claim::Lost(existing)) => existing,
                },
            };
            // Wait while another event's claim is in progress; anything else ends the wait.
            loop {
                if existing.status != Status::InProgress {
                    return duplicate(&existing, &hash, now);
                }
                // Another attempt of this same event (its answer was lost, its process died, or
                // its host retried it): take it over. Safe because what follows the claim is
                // idempotent (see ARCHITECTURE.md, "Invariant: a claim's work is idempotent").
                // An attempt still under way here is alive: wait for it instead (two deliveries
                // of one event at once would otherwise both start the rollout).
                let own = !event_id.is_empty()
                    && existing.event_id == event_id
                    && existing.payload_hash == hash
                    && replacing.as_deref() != Some(existing.owner.as_str())
                    && !UnderWay::has(&existing.owner);
                if own && takeovers < MAX_TAKEOVERS {
                    takeovers += 1;
                    replacing = Some(existing.owner.clone());
                    break;
                }
                let seen = first_seen.get_or_insert_with(|| existing.clone());
                if waiting_since.elapsed() >= self.config.wait {
                    let alive = seen.owner == existing.owner && existing.lease_expires > seen.lease_expires;
                    return in_progress(&existing, &hash, unix(self.clock.as_ref()), alive);
                }
                self.wait_for(&key, polls).await;
                polls += 1;
                match self.store.get(&key).await {
                    // A failed poll changes nothing: poll again until the wait ends.
                    Err(e) if e.retryable => {}
                    Err(e) => return Outcome::failed(e),
                    Ok(Some(r))
                        if !r.claimable(unix(self.clock.as_ref()), None) || UnderWay::has(&r.owner) =>
                    {
                        existing = r
                    }
                    // Released, expired or abandoned: claim it.
                    Ok(_) => break,
                }
            }
        }
    }

    /// The claim on `key` that this stage works under now, if any: read from the store (a
    /// failed read is no answer; the claim's conditional write still guards the key).
    async fn live_claim(&self, key: &str) -> Option<Record> {
        if !self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(key)
        {
            return None;
        }
        match self.store.get(key).await {
            Ok(Some(r)) if r.status == Status::InProgress && UnderWay::has(&r.owner) => Some(r),
            _ => None,
        }
    }

    /// Marks `key` as claimed by this stage until the returned guard is dropped.
    fn hold(&self, key: &str) -> Held {
        let notify = Arc::new(Notify::new());
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_owned(), notify.clone());
        Held {
            key: key.to_owned(),
            notify,
            held: self.held.clone(),
        }
    }

    /// Waits before polling another event's claim on `key` again: until this process's claimer
    /// settles it (at once), or the poll interval. The first wait of an event whose claimer is
    /// not (or no longer) in this process is skipped: the claim may have settled between the
    /// claim and this look, and a read tells.
    async fn wait_for(&self, key: &str, polls: u32) {
        let notify = self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned();
        let Some(notify) = notify else {
            if polls > 0 {
                tokio::time::sleep(poll_interval(polls)).await;
            }
            return;
        };
        let settled = notify.notified();
        tokio::pin!(settled);
        {
            // Enabled under the lock the claimer wakes under: no wake-up falls between.
            let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            if !held.get(key).is_some_and(|n| Arc::ptr_eq(n, &notify)) {
                return;
            }
            settled.as_mut().enable();
        }
        tokio::select! {
            () = &mut settled => {}
            () = tokio::time::sleep(poll_interval(polls)) => {}
        }
    }

    /// One claim, its write repeated after retryable store errors (beyond the SDK's own
    /// retries, whose quota a burst of faults can spend): a repeat of an applied write
    /// recognises itself, so repeating is safe.
    async fn claim(&self, record: &Record, now: i64, replacing: Option<&str>) -> Result<Claim, StageError> {
        let mut attempt = 0;
        loop {
            match self.store.claim(record, now, replacing).await {
                Err(e) if e.retryable && attempt < STORE_RETRIES => {
                    tracing::warn!(stage = "dedup", key = %record.key, error = %e, "could not claim the key; retrying");
                    tokio::time::sleep(poll_interval(attempt + 2)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Runs the rest of the chain under a claim this attempt won, renewing its lease meanwhile,
    /// and records how it ended.
    async fn run_claimed<'a>(&'a self, mut event: Event, next: Next<'a>, claim: Record) -> Outcome {
        let Record { key, owner, .. } = claim;
        event.context_mut().insert("dedup".into(), json!({"key": key}));
        let chain = next.run(event);
        tokio::pin!(chain);
        let outcome = tokio::select! {
            outcome = &mut chain => outcome,
            () = self.heartbeat(&key, &owner) => chain.await,
        };
        let expires = unix(self.clock.as_ref()).saturating_add(secs(self.config.ttl));
        let (what, status, result) = match &outcome {
            Outcome::Passed { context } => {
                let result = context
                    .get(&self.config.result_field)
                    .map(|v| match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .unwrap_or_else(|| "passed".into());
                ("mark the key completed", Some(Status::Completed), result)
            }
            Outcome::Failed { error, stage } if !error.retryable => (
                "record the failure",
                Some(Status::Failed),
                format!("{stage}: {}", error.message),
            ),
            Outcome::Failed { .. } | Outcome::Dropped { .. } => ("release the claim", None, String::new()),
        };
        let mut attempt = 0;
        loop {
            let done = match status {
                Some(status) => self.store.finish(&key, &owner, status, &result, expires).await,
                None => self.store.release(&key, &owner).await,
            };
            match done {
                Ok(()) => return outcome,
                Err(e) if e.retryable && attempt < STORE_RETRIES => {
                    tracing::warn!(stage = "dedup", %key, error = %e, "could not {what}; retrying");
                    tokio::time::sleep(poll_interval(attempt + 2)).await;
                    attempt += 1;
                }
                Err(e) => {
                    // The claim stays in progress until its lease runs out (it is no longer
                    // renewed); a redelivery then takes over, and what follows is idempotent.
                    self.metrics.add("cutover_dedup_bookkeeping_errors_total", &[], 1);
                    tracing::error!(stage = "dedup", %key, error = %e, "could not {what}; the claim ends with its lease");
                    return outcome;
                }
            }
        }
    }

    /// Renews the lease every third of it while the chain runs; returns only if the claim was
    /// taken over (this attempt held it too long without renewing, e.g. paused or partitioned).
    /// A third of the lease is measured on the stage's clock (which may run faster than the wall
    /// clock: an accelerated demo), checked every 100 ms of real time.
    async fn heartbeat(&self, key: &str, owner: &str) {
        let every = secs(self.config.lease / 3).max(1);
        let mut next = unix(self.clock.as_ref()).saturating_add(every);
        loop {
            tokio::time::sleep(HEARTBEAT_CHECK).await;
            let now = unix(self.clock.as_ref());
            if now < next {
                continue;
            }
            let lease_expires = now.saturating_add(secs(self.config.lease));
            match self.store.renew(key, owner, lease_expires).await {
                Ok(true) => next = now.saturating_add(every),
                Ok(false) => {
                    self.metrics.add("cutover_dedup_leases_lost_total", &[], 1);
                    tracing::error!(
                        stage = "dedup",
                        key,
                        "lost the claim: its lease ran out and another attempt took it over; \
                         finishing anyway (what follows the claim is idempotent)"
                    );
                    return;
                }
                Err(e) => {
                    tracing::warn!(stage = "dedup", key, error = %e, "could not renew the claim's lease; retrying");
                    next = now.saturating_add((every / 4).max(1));
                }
            }
        }
    }
}

/// How often the heartbeat looks at the clock.
const HEARTBEAT_CHECK: Duration = Duration::from_millis(100);

/// How many times one event takes over claims of its own earlier attempts before it waits like
/// any other duplicate (bounds a ping-pong between concurrent deliveries of one event in
/// different processes).
const MAX_TAKEOVERS: u32 = 3;

/// Extra tries of a claim, a completion, a failure record or a release after a retryable store
/// error (400 ms, 800 ms, then 1 s apart).
const STORE_RETRIES: u32 = 4;

/// Between polls of another event's claim: 100 ms doubling to 1 s.
fn poll_interval(polls: u32) -> Duration {
    Duration::from_millis(100)
        .saturating_mul(1 << polls.min(4))
        .min(Duration::from_secs(1))
}

/// The end of a wait for another event's claim that is still in progress: a claimer that
/// renewed its lease while this event waited is alive and answers for the deployment, so this
/// event is a settled duplicate; otherwise it cannot be told yet and is retried later.
fn in_progress(existing: &Record, hash: &str, now: i64, alive: bool) -> Outcome {
    let ago = now.saturating_sub(existing.claimed_at);
    let by = if existing.event_id.is_empty() {
        String::new()
    } else {
        format!(" by event {}", existing.event_id)
    };
    let differs = if existing.payload_hash != hash {
        " (its payload differed)"
    } else {
        ""
    };
    if alive {
        Outcome::dropped(format!(
            "duplicate of {}, in progress: claimed {ago}s ago{by}, whose claimer is alive (renewing its lease){differs}",
            existing.key
        ))
    } else {
        Outcome::failed(
            StageError::retryable(format!(
                "{} is in progress: claimed {ago}s ago{by}, lease until {}s from now; retry later",
                existing.key,
                existing.lease_expires.saturating_sub(now)
            ))
            .with_kind("Dedup.InProgress"),
        )
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
        Status::InProgress => in_progress(existing, hash, now, false),
    }
}

impl Stage for Dedup {
    fn process<'a>(&'a self, event: Event, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(self.run(event, next))
    }
}

#[cfg(test)]
mod tests;
