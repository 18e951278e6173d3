//! Dedup semantics against the memory and SQLite stores (DynamoDB: tests/it/dedup.rs).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use cutover_core::{ManualClock, Pipeline};

use super::*;

/// The rest of the chain: counts calls and ends as told.
#[derive(Debug)]
struct Downstream {
    calls: AtomicUsize,
    outcome: Outcome,
    delay: Duration,
}

impl Downstream {
    fn new(outcome: Outcome) -> Arc<Self> {
        Arc::new(Self {
            calls: AtomicUsize::new(0),
            outcome,
            delay: Duration::ZERO,
        })
    }
}

impl Stage for Downstream {
    fn process<'a>(&'a self, mut event: Event, _next: Next<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            match &self.outcome {
                Outcome::Passed { context } => {
                    event.context_mut().extend(context.clone());
                    Outcome::Passed {
                        context: event.into_context(),
                    }
                }
                other => other.clone(),
            }
        })
    }
}

fn started() -> Outcome {
    Outcome::Passed {
        context: json!({"execution": "arn:exec:1"}).as_object().unwrap().clone(),
    }
}

fn event(task: &str, revision: u32) -> Event {
    Event::from_value(json!({
        "id": format!("evt-{task}-{revision}"),
        "detail": {
            "clusterArn": "arn:aws:ecs:us-west-2:1:cluster/c",
            "group": "service:cats-green",
            "taskDefinitionArn": format!("arn:aws:ecs:us-west-2:1:task-definition/cats-green:{revision}"),
            "taskArn": format!("arn:aws:ecs:us-west-2:1:task/c/{task}"),
        }
    }))
}

/// The defaults, but waiting only briefly for another event's claim (the tests' clock is
/// manual: a lease never runs out on its own).
fn config(store: StoreConfig) -> DedupConfig {
    toml::from_str::<DedupConfig>("")
        .map(|c| DedupConfig {
            store,
            wait: Duration::from_millis(300),
            ..c
        })
        .unwrap()
}

struct Fixture {
    pipeline: Pipeline,
    downstream: Arc<Downstream>,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

async fn fixture(store: &str, downstream: Arc<Downstream>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    ));
    let cx = BuildContext::new(dir.path()).with_clock(clock.clone());
    let store = match store {
        "memory" => StoreConfig::Memory,
        _ => StoreConfig::Local {
            path: "dedup.sqlite".into(),
        },
    };
    let stage = config(store).build(&cx).await.unwrap();
    let pipeline = Pipeline::from_stages(
        "p",
        vec![("dedup".into(), stage), ("rest".into(), downstream.clone())],
    );
    Fixture {
        pipeline,
        downstream,
        clock,
        _dir: dir,
    }
}

const STORES: [&str; 2] = ["memory", "local"];

/// A duplicate waiting on a claim this process holds learns the outcome when the claim
/// settles, not at its next poll (100 ms later at first): on paused time, the duplicate ends
/// when the claimer's 30 ms chain does.
#[tokio::test(start_paused = true)]
async fn a_duplicate_waiting_in_the_same_process_is_woken_when_the_claim_settles() {
    let down = Arc::new(Downstream {
        calls: AtomicUsize::new(0),
        outcome: started(),
        delay: Duration::from_millis(30),
    });
    let f = fixture("memory", down).await;
    let start = tokio::time::Instant::now();
    let first = tokio::spawn({
        let p = f.pipeline.clone();
        async move { p.run(event("t1", 7)).await }
    });
    // The duplicate arrives once the first holds the claim.
    tokio::time::sleep(Duration::from_millis(1)).await;
    let second = f.pipeline.run(event("t2", 7)).await;
    let waited = start.elapsed();
    assert!(first.await.unwrap().is_passed());
    let Outcome::Dropped { reason, .. } = &second else {
        panic!("{second}")
    };
    assert!(reason.contains("result arn:exec:1"), "{reason}");
    assert_eq!(
        waited,
        Duration::from_millis(30),
        "woken when the claim settled, not at a poll"
    );
}

/// Runs `n` events at once through a stage on each store (the rest of the chain takes 20 ms):
/// exactly one passes, and the others waited for its claim to complete, so they are dropped
/// knowing what they duplicate.
async fn pass_exactly_once(n: usize, event_of: impl Fn(usize) -> Event) {
    for store in STORES {
        let down = Arc::new(Downstream {
            calls: AtomicUsize::new(0),
            outcome: started(),
            delay: Duration::from_millis(20),
        });
        let f = fixture(store, down).await;
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (p, e) = (f.pipeline.clone(), event_of(i));
                tokio::spawn(async move { p.run(e).await })
            })
            .collect();
        let mut passed = 0;
        for h in handles {
            match h.await.unwrap() {
                Outcome::Passed { .. } => passed += 1,
                Outcome::Dropped { reason, .. } => {
                    assert!(reason.contains("result arn:exec:1"), "{store}: {reason}")
                }
                other => panic!("{store}: {other}"),
            }
        }
        assert_eq!(passed, 1, "{store}");
        assert_eq!(f.downstream.calls.load(Ordering::SeqCst), 1, "{store}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_events_of_one_deployment_pass_exactly_once() {
    pass_exactly_once(64, |i| event(&format!("t{i}"), 7)).await;
}

/// Deliveries of one event at once (EventBridge delivers at least once, a replayed trace may
/// hold an event twice): each later one finds the first's claim under way in this process and
/// waits for it like any duplicate, instead of taking it over as a retry of its own earlier
/// attempt and starting the rollout a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_deliveries_of_one_event_pass_exactly_once() {
    pass_exactly_once(16, |_| event("t1", 7)).await;
}

/// A fixture whose downstream takes 10 s, and event `t1`'s attempt spawned and working under
/// its claim (the clock is paused: it stays there until the test lets time pass).
async fn first_under_its_claim() -> (Fixture, tokio::task::JoinHandle<Outcome>) {
    let down = Arc::new(Downstream {
        calls: AtomicUsize::new(0),
        outcome: started(),
        delay: Duration::from_secs(10),
    });
    let f = fixture("memory", down).await;
    let first = tokio::spawn({
        let p = f.pipeline.clone();
        async move { p.run(event("t1", 7)).await }
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(f.downstream.calls.load(Ordering::SeqCst), 1);
    (f, first)
}

/// An attempt abandoned under its claim (its future dropped: a host's deadline, a shutdown) is
/// no longer under way: the retry of its event takes the claim over at once, where it would
/// wait for a live attempt (and fail retryably here, after the 300 ms wait, with the claim
/// still in progress).
#[tokio::test(start_paused = true)]
async fn an_abandoned_attempt_is_taken_over_at_once_by_the_retry_of_its_event() {
    let (f, first) = first_under_its_claim().await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    let retry = f.pipeline.run(event("t1", 7)).await;
    assert!(retry.is_passed(), "{retry}");
    assert_eq!(f.downstream.calls.load(Ordering::SeqCst), 2);
}

/// A claim whose attempt is under way in this process is alive even when the stage's clock has
/// run past its lease before the next renewal (a virtual clock can): another event of the
/// deployment waits for it instead of claiming the key as abandoned.
#[tokio::test(start_paused = true)]
async fn a_live_claim_past_its_lease_on_the_stages_clock_is_not_claimed() {
    let (f, first) = first_under_its_claim().await;
    // Past the lease at once: no renewal has run since the claim.
    f.clock.advance(Duration::from_secs(3600));
    let other = f.pipeline.run(event("t2", 7)).await;
    assert!(!other.is_passed(), "{other}");
    assert!(first.await.unwrap().is_passed());
    assert_eq!(f.downstream.calls.load(Ordering::SeqCst), 1);
}

/// A store whose first `lose` claims are applied but answered with an error, as when the answer
/// to a DynamoDB PutItem is lost after every SDK retry.
#[derive(Debug)]
struct LosesFirstAnswer {
    inner: MemoryStore,
    lost: AtomicUsize,
    lose: usize,
}

impl DedupStore for LosesFirstAnswer {
    fn claim<'a>(
        &'a self,
        record: &'a Record,
        now: i64,
        replacing: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Claim, StageError>> {
        Box::pin(async move {
            let claim = self.inner.claim(record, now, replacing).await?;
            if self.lost.fetch_add(1, Ordering::SeqCst) < self.lose {
                return Err(StageError::retryable("dynamodb:PutItem: connection reset"));
            }
            Ok(claim)
        })
    }
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Record>, StageError>> {
        self.inner.get(key)
    }
    fn renew<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        lease: i64,
    ) -> BoxFuture<'a, Result<bool, StageError>> {
        self.inner.renew(key, owner, lease)
    }
    fn finish<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        status: Status,
        result: &'a str,
        expires: i64,
    ) -> BoxFuture<'a, Result<(), StageError>> {
        self.inner.finish(key, owner, status, result, expires)
    }
    fn release<'a>(&'a self, key: &'a str, owner: &'a str) -> BoxFuture<'a, Result<(), StageError>> {
        self.inner.release(key, owner)
    }
}

fn losing(lose: usize) -> (Pipeline, Arc<LosesFirstAnswer>, Arc<Downstream>) {
    let clock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    ));
    let store = Arc::new(LosesFirstAnswer {
        inner: MemoryStore::default(),
        lost: AtomicUsize::new(0),
        lose,
    });
    let stage = Arc::new(Dedup::new(config(StoreConfig::Memory), store.clone(), clock));
    let down = Downstream::new(started());
    let p = Pipeline::from_stages("p", vec![("dedup".into(), stage), ("rest".into(), down.clone())]);
    (p, store, down)
}

#[tokio::test]
async fn a_claim_whose_answer_was_lost_recognises_itself_when_repeated() {
    let (p, store, down) = losing(1);
    assert!(p.run(event("a", 1)).await.is_passed());
    assert_eq!(
        store.lost.load(Ordering::SeqCst),
        2,
        "the claim was written twice"
    );
    assert_eq!(down.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_claim_whose_answers_were_all_lost_is_taken_over_by_the_retry_of_the_same_event() {
    // Every try of the first attempt is applied and unanswered: the event fails retryably.
    let (p, _store, down) = losing(1 + STORE_RETRIES as usize);
    let first = p.run(event("a", 1)).await;
    assert!(first.is_retryable(), "{first}");
    // The host retries the same event: it finds its own claim and takes it over at once,
    // without waiting for the lease.
    let retry = p.run(event("a", 1)).await;
    assert!(retry.is_passed(), "{retry}");
    // Another task of the deployment is a duplicate of the completed key.
    let other = p.run(event("b", 1)).await;
    assert!(format!("{other}").contains("result arn:exec:1"), "{other}");
    assert_eq!(down.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_retried_write_of_the_same_claim_recognises_itself() {
    let dir = tempfile::tempdir().unwrap();
    let stores: [Arc<dyn DedupStore>; 3] = [
        Arc::new(MemoryStore::default()),
        Arc::new(SqliteStore::open(&dir.path().join("d.sqlite"), 0).unwrap()),
        // A replay's (no sync, journal in memory): the same contract.
        Arc::new(SqliteStore::open_scratch(&dir.path().join("scratch.sqlite"), 0).unwrap()),
    ];
    for store in stores {
        let mine = Record {
            key: "k".into(),
            status: Status::InProgress,
            lease_expires: 130,
            expires: 1000,
            payload_hash: "h".into(),
            owner: "host/1/evt/100/0".into(),
            claimed_at: 100,
            event_id: "evt".into(),
            result: None,
        };
        assert_eq!(store.claim(&mine, 100, None).await.unwrap(), Claim::Won);
        assert_eq!(
            store.claim(&mine, 101, None).await.unwrap(),
            Claim::Won,
            "{store:?}"
        );
        let theirs = Record {
            owner: "host/2/evt2/101/0".into(),
            event_id: "evt2".into(),
            ..mine.clone()
        };
        assert!(
            matches!(store.claim(&theirs, 101, None).await.unwrap(), Claim::Lost(r) if r.owner == mine.owner)
        );
        // A takeover names the owner it replaces; another owner's claim is not replaced.
        assert!(matches!(
            store.claim(&theirs, 101, Some("somebody/else")).await.unwrap(),
            Claim::Lost(_)
        ));
        assert!(store.renew("k", &mine.owner, 140).await.unwrap());
        assert_eq!(
            store.claim(&theirs, 102, Some(&mine.owner)).await.unwrap(),
            Claim::Won
        );
        assert!(
            !store.renew("k", &mine.owner, 150).await.unwrap(),
            "the old owner lost it"
        );
        assert_eq!(store.get("k").await.unwrap().unwrap().owner, theirs.owner);
        // The old owner's completion is a no-op, its successor's counts.
        store
            .finish("k", &mine.owner, Status::Completed, "old", 900)
            .await
            .unwrap();
        assert_eq!(store.get("k").await.unwrap().unwrap().status, Status::InProgress);
        store
            .finish("k", &theirs.owner, Status::Completed, "new", 900)
            .await
            .unwrap();
        assert_eq!(
            store.get("k").await.unwrap().unwrap().result.as_deref(),
            Some("new")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_of_a_live_claim_is_settled_and_of_a_dead_one_retried() {
    for store in STORES {
        let dir = tempfile::tempdir().unwrap();
        // Real time: the claimer's lease renewals must move.
        let cx = BuildContext::new(dir.path());
        let cfg = DedupConfig {
            lease: Duration::from_secs(3),
            wait: Duration::from_millis(2500),
            ..config(if store == "memory" {
                StoreConfig::Memory
            } else {
                StoreConfig::Local {
                    path: "d.sqlite".into(),
                }
            })
        };
        let stage = cfg.build(&cx).await.unwrap();
        let down = Arc::new(Downstream {
            calls: AtomicUsize::new(0),
            outcome: started(),
            delay: Duration::from_millis(4500),
        });
        let p = Pipeline::from_stages("p", vec![("dedup".into(), stage), ("rest".into(), down.clone())]);
        let first = tokio::spawn({
            let p = p.clone();
            async move { p.run(event("a", 1)).await }
        });
        // Once the first holds the claim (its chain has begun), not after a fixed sleep.
        while down.calls.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let dup = p.run(event("b", 1)).await;
        let Outcome::Dropped { reason, .. } = &dup else {
            panic!("{store}: {dup}")
        };
        assert!(
            reason.contains("in progress") && reason.contains("alive"),
            "{reason}"
        );
        assert!(first.await.unwrap().is_passed());
        assert_eq!(down.calls.load(Ordering::SeqCst), 1, "{store}");
        assert_eq!(
            cx.metrics()
                .snapshot()
                .iter()
                .filter(|c| c.name.starts_with("cutover_dedup_"))
                .count(),
            0,
            "no takeover, lost lease or bookkeeping error"
        );
    }
}

#[tokio::test]
async fn completed_keys_block_until_ttl_and_new_revisions_pass() {
    for store in STORES {
        let f = fixture(store, Downstream::new(started())).await;
        assert!(f.pipeline.run(event("a", 1)).await.is_passed());
        let dup = f.pipeline.run(event("b", 1)).await;
        let Outcome::Dropped { stage, reason } = &dup else {
            panic!("{store}: {dup}")
        };
        assert_eq!(stage, "dedup");
        assert!(
            reason.contains("result arn:exec:1") && reason.contains("by event evt-a-1"),
            "{reason}"
        );
        assert!(
            f.pipeline.run(event("c", 2)).await.is_passed(),
            "{store}: the next revision is a new deployment"
        );
        f.clock.advance(Duration::from_secs(86_400 + 1));
        assert!(
            f.pipeline.run(event("d", 1)).await.is_passed(),
            "{store}: after the TTL the key is free"
        );
        assert_eq!(f.downstream.calls.load(Ordering::SeqCst), 3);
    }
}

#[tokio::test]
async fn retryable_failure_releases_and_permanent_failure_is_recorded() {
    for store in STORES {
        let f = fixture(
            store,
            Downstream::new(Outcome::failed(StageError::retryable("throttled"))),
        )
        .await;
        assert!(f.pipeline.run(event("a", 1)).await.is_retryable());
        assert!(
            f.pipeline.run(event("a", 1)).await.is_retryable(),
            "{store}: released, so the retry runs again"
        );
        assert_eq!(f.downstream.calls.load(Ordering::SeqCst), 2);

        let f = fixture(
            store,
            Downstream::new(Outcome::failed(StageError::permanent("bad input"))),
        )
        .await;
        let first = f.pipeline.run(event("a", 1)).await;
        assert_eq!(first.stage(), Some("rest"));
        let again = f.pipeline.run(event("a", 1)).await;
        assert!(
            format!("{again}").contains("failed permanently: rest: bad input"),
            "{store}: {again}"
        );
        assert_eq!(f.downstream.calls.load(Ordering::SeqCst), 1);
    }
}

#[tokio::test]
async fn abandoned_claims_expire_with_their_lease() {
    for store in STORES {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        ));
        let cx = BuildContext::new(dir.path()).with_clock(clock.clone());
        let cfg = config(if store == "memory" {
            StoreConfig::Memory
        } else {
            StoreConfig::Local {
                path: "d.sqlite".into(),
            }
        });
        let stage = cfg.build(&cx).await.unwrap();
        // A claimer that "crashed": it claimed through the store and never completed.
        let crashed = Record {
            key: cfg.key.render(&event("a", 1)).unwrap(),
            status: Status::InProgress,
            lease_expires: 1_700_000_000 + 300,
            expires: 1_700_000_000 + 86_400,
            payload_hash: String::new(),
            owner: "other-host/1/evt/0".into(),
            claimed_at: 1_700_000_000,
            event_id: "evt-crashed".into(),
            result: None,
        };
        let store_impl: Arc<dyn DedupStore> = match store {
            "memory" => Arc::new(MemoryStore::default()),
            _ => Arc::new(SqliteStore::open(&dir.path().join("d.sqlite"), 0).unwrap()),
        };
        let stage = if store == "memory" {
            Arc::new(Dedup::new(cfg.clone(), store_impl.clone(), clock.clone())) as Arc<dyn Stage>
        } else {
            stage
        };
        assert_eq!(
            store_impl.claim(&crashed, 1_700_000_000, None).await.unwrap(),
            Claim::Won
        );
        let down = Downstream::new(started());
        let p = Pipeline::from_stages("p", vec![("dedup".into(), stage), ("rest".into(), down.clone())]);
        let blocked = p.run(event("a", 1)).await;
        assert!(
            blocked.is_retryable() && format!("{blocked}").contains("by event evt-crashed"),
            "{store}: {blocked}"
        );
        clock.advance(Duration::from_secs(301));
        assert!(
            p.run(event("a", 1)).await.is_passed(),
            "{store}: the lease ran out, the retry takes over"
        );
        assert_eq!(down.calls.load(Ordering::SeqCst), 1);
    }
}

#[tokio::test]
async fn downstream_drop_releases_the_key() {
    let f = fixture("local", Downstream::new(Outcome::dropped("not today"))).await;
    assert_eq!(f.pipeline.run(event("a", 1)).await.stage(), Some("rest"));
    assert_eq!(f.pipeline.run(event("a", 1)).await.stage(), Some("rest"));
    assert_eq!(f.downstream.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_missing_key_field_fails_that_event_clearly() {
    let f = fixture("memory", Downstream::new(started())).await;
    let out = f
        .pipeline
        .run(Event::from_value(json!({"detail": {"group": "g"}})))
        .await;
    let Outcome::Failed { error, .. } = out else {
        panic!()
    };
    assert!(!error.retryable);
    assert!(error.message.contains("detail.clusterArn"), "{}", error.message);
}

#[test]
fn config_round_trips_and_validates_key_fields() {
    let text = "key = \"{detail.taskArn}\"\nstore = { type = \"dynamodb\", table = \"t\" }\nttl = \"2h\"\nlease = \"90s\"";
    let cfg: DedupConfig = toml::from_str(text).unwrap();
    let again: DedupConfig = toml::from_str(&toml::to_string(&cfg).unwrap()).unwrap();
    assert_eq!(again.store, cfg.store);
    assert_eq!(
        (again.ttl, again.lease),
        (Duration::from_secs(7200), Duration::from_secs(90))
    );
    assert_eq!(again.key.as_str(), "{detail.taskArn}");

    let vcx = ValidateContext {
        base_dir: std::path::Path::new("."),
        pipelines: &[],
    };
    assert!(cfg.validate(&vcx).is_empty());
    let bad: DedupConfig = toml::from_str("key = \"{detail.gruop}\"\nttl = \"10s\"").unwrap();
    let errors = bad.validate(&vcx);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0]
            .message
            .contains("no field \"detail.gruop\"; did you mean detail.group?"),
        "{}",
        errors[0].message
    );
    assert_eq!(errors[1].field, "ttl");
}

#[tokio::test]
async fn only_a_store_inside_a_scratch_directory_is_scratch() {
    // A replay's scratch directory: its own store keeps no write-ahead log; a store named by an
    // absolute path is a real one, opened as durably as ever (WAL), scratch replay or not.
    let scratch = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let real = elsewhere.path().join("real.sqlite");
    let cx = cutover_core::BuildContext::default()
        .with_data_dir(scratch.path())
        .with_scratch_data(true);
    let inside: DedupConfig = toml::from_str("store = { type = \"local\", path = \"d.sqlite\" }").unwrap();
    let outside: DedupConfig = toml::from_str(&format!(
        "store = {{ type = \"local\", path = {:?} }}",
        real.display().to_string()
    ))
    .unwrap();
    let _inside = inside.build(&cx).await.unwrap();
    let _outside = outside.build(&cx).await.unwrap();
    let journal = |db: &std::path::Path| -> String {
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .unwrap()
    };
    assert_eq!(journal(&real), "wal");
    assert!(scratch.path().join("d.sqlite").exists());
    assert!(!scratch.path().join("d.sqlite-wal").exists());
}
