//! Engine scenarios on virtual time with fake Task handlers.

use cutover_asl::{
    Clock, Definition, Engine, EngineError, EventKind, ExecutionStatus, ExecutionStore, FileStore,
    MemoryStore, TaskContext, TaskFailure, TaskHandler, VirtualClock,
};
use serde_json::{Value, json};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type TaskFut<'a> = Pin<Box<dyn Future<Output = Result<Value, TaskFailure>> + Send + 'a>>;

/// Fake traffic router + health probe: `shift` sets the weight, `check`
/// reports unhealthy once the weight reaches `unhealthy_at`.
#[derive(Debug, Default)]
struct FakeCanary {
    weight: AtomicU64,
    unhealthy_at: Option<u64>,
    calls: Mutex<Vec<(String, Value)>>,
    crash_on_check: AtomicBool,
}

impl TaskHandler for FakeCanary {
    fn invoke<'a>(&'a self, resource: &'a str, input: Value, _cx: TaskContext<'a>) -> TaskFut<'a> {
        Box::pin(async move {
            self.calls
                .lock()
                .unwrap()
                .push((resource.to_string(), input.clone()));
            match resource {
                "shift" => {
                    let w = input["weight"]
                        .as_u64()
                        .ok_or_else(|| TaskFailure::new("Shift.BadInput", "weight must be an integer"))?;
                    self.weight.store(w, Ordering::SeqCst);
                    Ok(json!({"weight": w}))
                }
                "check" => {
                    if self.crash_on_check.load(Ordering::SeqCst) {
                        panic!("simulated crash while checking health");
                    }
                    let w = self.weight.load(Ordering::SeqCst);
                    let healthy = self.unhealthy_at.is_none_or(|u| w < u);
                    Ok(json!({
                        "healthy": healthy,
                        "reason": format!("error rate 7.5% above 5% at {w}%")
                    }))
                }
                other => Err(TaskFailure::new(
                    "States.TaskFailed",
                    format!("unknown resource {other}"),
                )),
            }
        })
    }
}

fn canary_definition() -> Arc<Definition> {
    let step = |w: u64, next: &str| {
        json!({
            format!("Shift{w}"): {"Type": "Task", "Resource": "shift", "Parameters": {"weight": w},
                                   "ResultPath": "$.shift", "Next": format!("Bake{w}")},
            format!("Bake{w}"): {"Type": "Wait", "Seconds": 60, "Next": format!("Check{w}")},
            format!("Check{w}"): {"Type": "Task", "Resource": "check",
                                   "Parameters": {"weight.$": "$.shift.weight"},
                                   "ResultPath": "$.health", "Next": format!("Healthy{w}")},
            format!("Healthy{w}"): {"Type": "Choice",
                "Choices": [{"Variable": "$.health.healthy", "BooleanEquals": true, "Next": next}],
                "Default": "Rollback"}
        })
    };
    let mut states = serde_json::Map::new();
    for (w, next) in [(10, "Shift50"), (50, "Shift100")] {
        if let Value::Object(m) = step(w, next) {
            states.extend(m);
        }
    }
    states.insert(
        "Shift100".into(),
        json!({"Type": "Task", "Resource": "shift", "Parameters": {"weight": 100},
               "ResultPath": "$.shift", "Next": "Done"}),
    );
    states.insert("Done".into(), json!({"Type": "Succeed"}));
    states.insert(
        "Rollback".into(),
        json!({"Type": "Task", "Resource": "shift", "Parameters": {"weight": 0},
               "ResultPath": "$.rollback", "Next": "RolledBack"}),
    );
    states.insert(
        "RolledBack".into(),
        json!({"Type": "Fail", "Error": "Canary.Unhealthy", "CausePath": "$.health.reason"}),
    );
    let def = json!({"StartAt": "Shift10", "States": states});
    Arc::new(Definition::from_value(&def).unwrap().with_name("canary"))
}

fn engine(
    handler: Arc<dyn TaskHandler>,
    clock: Arc<VirtualClock>,
    store: Option<Arc<dyn ExecutionStore>>,
) -> Engine {
    Engine::new(handler, clock, store)
}

#[tokio::test]
async fn canary_healthy_reaches_100() {
    let h = Arc::new(FakeCanary::default());
    let clock = Arc::new(VirtualClock::new());
    let t0 = clock.now();
    let out = engine(h.clone(), clock.clone(), None)
        .start(canary_definition(), "healthy", json!({"release": "v2"}))
        .await
        .unwrap();
    assert_eq!(out.status, ExecutionStatus::Succeeded, "{out:?}");
    assert_eq!(h.weight.load(Ordering::SeqCst), 100);
    let output = out.output.unwrap();
    assert_eq!(output["shift"]["weight"], 100);
    assert_eq!(output["release"], "v2");
    assert_eq!(clock.now().duration_since(t0).unwrap(), Duration::from_secs(120));
    // History is a chain, ends with success, and shows both waits.
    for (n, e) in out.history.iter().enumerate() {
        assert_eq!(e.id, n as u64 + 1);
        assert_eq!(e.previous_event_id, n as u64);
    }
    assert!(matches!(
        out.history.last().unwrap().kind,
        EventKind::ExecutionSucceeded { .. }
    ));
    let waits = out
        .history
        .iter()
        .filter(|e| matches!(e.kind, EventKind::WaitStarted { .. }))
        .count();
    assert_eq!(waits, 2);
    // History serialises and reads back.
    let text = serde_json::to_string(&out.history).unwrap();
    let back: Vec<cutover_asl::HistoryEvent> = serde_json::from_str(&text).unwrap();
    assert_eq!(back, out.history);
}

#[tokio::test]
async fn canary_unhealthy_rolls_back_and_fails() {
    let h = Arc::new(FakeCanary {
        unhealthy_at: Some(50),
        ..Default::default()
    });
    let clock = Arc::new(VirtualClock::new());
    let out = engine(h.clone(), clock, None)
        .start(canary_definition(), "unhealthy", json!({}))
        .await
        .unwrap();
    assert_eq!(out.status, ExecutionStatus::Failed);
    assert_eq!(out.error.as_deref(), Some("Canary.Unhealthy"));
    assert_eq!(out.cause.as_deref(), Some("error rate 7.5% above 5% at 50%"));
    assert_eq!(h.weight.load(Ordering::SeqCst), 0);
    let shifts: Vec<u64> = h
        .calls
        .lock()
        .unwrap()
        .iter()
        .filter(|(r, _)| r == "shift")
        .map(|(_, v)| v["weight"].as_u64().unwrap())
        .collect();
    assert_eq!(shifts, vec![10, 50, 0]);
}

/// Fails `failures` times with `error`, then succeeds; records attempts.
#[derive(Debug)]
struct Flaky {
    failures: u32,
    error: &'static str,
    attempts: AtomicU32,
    retry_counts: Mutex<Vec<u32>>,
}

impl TaskHandler for Flaky {
    fn invoke<'a>(&'a self, _r: &'a str, _input: Value, cx: TaskContext<'a>) -> TaskFut<'a> {
        Box::pin(async move {
            self.retry_counts.lock().unwrap().push(cx.retry_count);
            let n = self.attempts.fetch_add(1, Ordering::SeqCst);
            if n < self.failures {
                Err(TaskFailure::new(self.error, format!("attempt {n} failed")))
            } else {
                Ok(json!({"ok": true, "attempt": n}))
            }
        })
    }
}

fn flaky(failures: u32, error: &'static str) -> Arc<Flaky> {
    Arc::new(Flaky {
        failures,
        error,
        attempts: AtomicU32::new(0),
        retry_counts: Mutex::new(Vec::new()),
    })
}

#[tokio::test]
async fn retry_backs_off_on_virtual_time() {
    let def = Arc::new(
        Definition::from_value(&json!({
            "StartAt": "T",
            "States": {"T": {"Type": "Task", "Resource": "x", "End": true,
                "Retry": [{"ErrorEquals": ["Other"], "MaxAttempts": 5},
                          {"ErrorEquals": ["States.TaskFailed"], "IntervalSeconds": 2, "BackoffRate": 2.0, "MaxAttempts": 3}]}}
        }))
        .unwrap(),
    );
    let h = flaky(2, "Flaky.Error");
    let clock = Arc::new(VirtualClock::new());
    let t0 = clock.now();
    let out = engine(h.clone(), clock.clone(), None)
        .start(def.clone(), "r", json!({}))
        .await
        .unwrap();
    assert_eq!(out.status, ExecutionStatus::Succeeded, "{out:?}");
    assert_eq!(out.output.unwrap()["attempt"], 2);
    assert_eq!(*h.retry_counts.lock().unwrap(), vec![0, 1, 2]);
    assert_eq!(clock.now().duration_since(t0).unwrap(), Duration::from_secs(6));

    // Exhausted retries fail with the task's error.
    let h = flaky(10, "Flaky.Error");
    let out = engine(h.clone(), Arc::new(VirtualClock::new()), None)
        .start(def, "r2", json!({}))
        .await
        .unwrap();
    assert_eq!(out.status, ExecutionStatus::Failed);
    assert_eq!(out.error.as_deref(), Some("Flaky.Error"));
    assert_eq!(h.attempts.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn max_delay_and_catch() {
    let def = Arc::new(
        Definition::from_value(&json!({
            "StartAt": "T",
            "States": {
                "T": {"Type": "Task", "Resource": "x", "Next": "Ok",
                      "Retry": [{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 10, "BackoffRate": 10, "MaxDelaySeconds": 15, "MaxAttempts": 2}],
                      "Catch": [{"ErrorEquals": ["Nope"], "Next": "Ok"},
                                {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Handled"}]},
                "Ok": {"Type": "Succeed"},
                "Handled": {"Type": "Pass", "End": true}
            }
        }))
        .unwrap(),
    );
    let h = flaky(100, "Boom");
    let clock = Arc::new(VirtualClock::new());
    let t0 = clock.now();
    let out = engine(h, clock.clone(), None)
        .start(def, "c", json!({"keep": 1}))
        .await
        .unwrap();
    assert_eq!(out.status, ExecutionStatus::Succeeded);
    assert_eq!(
        out.output.unwrap(),
        json!({"keep": 1, "error": {"Error": "Boom", "Cause": "attempt 2 failed"}})
    );
    // 10 s, then min(100, 15) s.
    assert_eq!(clock.now().duration_since(t0).unwrap(), Duration::from_secs(25));
}

/// Sleeps on the engine clock, optionally heart-beating.
#[derive(Debug)]
struct Slow {
    secs: u64,
    beat_every: Option<u64>,
}

impl TaskHandler for Slow {
    fn invoke<'a>(&'a self, _r: &'a str, _input: Value, cx: TaskContext<'a>) -> TaskFut<'a> {
        Box::pin(async move {
            match self.beat_every {
                None => cx.clock.sleep(Duration::from_secs(self.secs)).await,
                Some(b) => {
                    let mut left = self.secs;
                    while left > 0 {
                        let step = b.min(left);
                        cx.clock.sleep(Duration::from_secs(step)).await;
                        cx.heartbeat();
                        left -= step;
                    }
                }
            }
            Ok(json!("slow done"))
        })
    }
}

fn task_def(extra: Value) -> Arc<Definition> {
    let mut t = json!({"Type": "Task", "Resource": "slow", "End": true});
    t.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    Arc::new(Definition::from_value(&json!({"StartAt": "T", "States": {"T": t}})).unwrap())
}

#[tokio::test]
async fn task_timeout_and_heartbeat() {
    let clock = Arc::new(VirtualClock::new());
    let t0 = clock.now();
    let out = engine(
        Arc::new(Slow {
            secs: 100,
            beat_every: None,
        }),
        clock.clone(),
        None,
    )
    .start(task_def(json!({"TimeoutSeconds": 10})), "t", json!({}))
    .await
    .unwrap();
    assert_eq!(out.error.as_deref(), Some("States.Timeout"));
    assert_eq!(clock.now().duration_since(t0).unwrap(), Duration::from_secs(10));

    // Fast enough: finishes before the timeout.
    let out = engine(
        Arc::new(Slow {
            secs: 5,
            beat_every: None,
        }),
        Arc::new(VirtualClock::new()),
        None,
    )
    .start(
        task_def(json!({"TimeoutSecondsPath": "$.limit"})),
        "t2",
        json!({"limit": 10}),
    )
    .await
    .unwrap();
    assert_eq!(out.status, ExecutionStatus::Succeeded, "{out:?}");

    // Heartbeats keep a long task alive; silence kills it.
    let out = engine(
        Arc::new(Slow {
            secs: 50,
            beat_every: Some(3),
        }),
        Arc::new(VirtualClock::new()),
        None,
    )
    .start(
        task_def(json!({"HeartbeatSeconds": 5, "TimeoutSeconds": 100})),
        "t3",
        json!({}),
    )
    .await
    .unwrap();
    assert_eq!(out.status, ExecutionStatus::Succeeded, "{out:?}");
    let out = engine(
        Arc::new(Slow {
            secs: 50,
            beat_every: None,
        }),
        Arc::new(VirtualClock::new()),
        None,
    )
    .start(task_def(json!({"HeartbeatSeconds": 5})), "t4", json!({}))
    .await
    .unwrap();
    assert_eq!(out.error.as_deref(), Some("States.HeartbeatTimeout"));
}

#[tokio::test]
async fn parallel_branches_wait_concurrently() {
    let def = Arc::new(
        Definition::from_value(&json!({
            "StartAt": "P",
            "TimeoutSeconds": 1000,
            "States": {"P": {"Type": "Parallel", "End": true, "Branches": [
                {"StartAt": "A", "States": {"A": {"Type": "Wait", "Seconds": 60, "Next": "A2"},
                                            "A2": {"Type": "Task", "Resource": "slow", "End": true}}},
                {"StartAt": "B", "States": {"B": {"Type": "Wait", "Seconds": 30, "End": true}}}
            ]}}
        }))
        .unwrap(),
    );
    let clock = Arc::new(VirtualClock::new());
    let t0 = clock.now();
    let out = engine(
        Arc::new(Slow {
            secs: 5,
            beat_every: None,
        }),
        clock.clone(),
        None,
    )
    .start(def, "p", json!({"x": 1}))
    .await
    .unwrap();
    assert_eq!(out.output, Some(json!(["slow done", {"x": 1}])));
    assert_eq!(clock.now().duration_since(t0).unwrap(), Duration::from_secs(65));
}

#[tokio::test]
async fn execution_timeout() {
    let def = Arc::new(
        Definition::from_value(&json!({
            "StartAt": "W", "TimeoutSeconds": 30,
            "States": {"W": {"Type": "Wait", "Seconds": 3600, "End": true}}
        }))
        .unwrap(),
    );
    let out = engine(
        Arc::new(cutover_asl::NoTasks),
        Arc::new(VirtualClock::new()),
        None,
    )
    .start(def, "w", json!({}))
    .await
    .unwrap();
    assert_eq!(out.status, ExecutionStatus::TimedOut);
    assert_eq!(out.error.as_deref(), Some("States.Timeout"));
}

#[tokio::test]
async fn resume_after_a_crash_does_not_repeat_completed_tasks() {
    let store: Arc<dyn ExecutionStore> = Arc::new(MemoryStore::new());
    let crashing = Arc::new(FakeCanary::default());
    crashing.crash_on_check.store(true, Ordering::SeqCst);
    let def = canary_definition();
    let clock = Arc::new(VirtualClock::new());
    let err = engine(crashing.clone(), clock.clone(), Some(store.clone()))
        .start(def.clone(), "crashy", json!({}))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::HandlerPanicked { .. }), "{err}");
    let unfinished = store.list_unfinished().unwrap();
    assert_eq!(unfinished.len(), 1);
    assert_eq!(unfinished[0].next_state.as_deref(), Some("Check10"));

    // "Restart": a new engine and handler on the same store.
    let fresh = Arc::new(FakeCanary::default());
    fresh.weight.store(10, Ordering::SeqCst);
    let e2 = engine(fresh.clone(), clock, Some(store.clone()));
    assert_eq!(e2.unfinished().unwrap().len(), 1);
    let out = e2
        .resume(def.clone(), &unfinished[0].execution_arn)
        .await
        .unwrap();
    assert_eq!(out.status, ExecutionStatus::Succeeded, "{out:?}");
    let calls: Vec<String> = fresh
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|(r, v)| format!("{r}:{}", v["weight"]))
        .collect();
    // Shift10 (and the Wait) completed before the crash and are not re-run.
    assert_eq!(calls, vec!["check:10", "shift:50", "check:50", "shift:100"]);
    assert!(store.list_unfinished().unwrap().is_empty());
    assert!(
        out.history
            .iter()
            .any(|e| matches!(e.kind, EventKind::ExecutionResumed { .. }))
    );
    // Resuming a finished execution just reports it; starting it again is refused.
    let again = e2.resume(def.clone(), "crashy").await.unwrap();
    assert_eq!(again.status, ExecutionStatus::Succeeded);
    assert!(matches!(
        e2.start(def, "crashy", json!({})).await,
        Err(EngineError::ExecutionAlreadyExists(_))
    ));
}

/// Interrupts (a sentinel "crash") on the first call to `check`.
#[derive(Debug, Default)]
struct InterruptOnce {
    inner: FakeCanary,
    interrupted: AtomicBool,
}

impl TaskHandler for InterruptOnce {
    fn invoke<'a>(&'a self, resource: &'a str, input: Value, cx: TaskContext<'a>) -> TaskFut<'a> {
        if resource == "check" && !self.interrupted.swap(true, Ordering::SeqCst) {
            return Box::pin(async { Err(TaskFailure::interrupt("process killed")) });
        }
        self.inner.invoke(resource, input, cx)
    }
}

#[tokio::test]
async fn file_store_resume_after_interrupt() {
    let dir = temp_store_dir("test");
    let store: Arc<dyn ExecutionStore> = Arc::new(FileStore::new(&dir).unwrap());
    let h = Arc::new(InterruptOnce::default());
    let def = canary_definition();
    let clock = Arc::new(VirtualClock::new());
    let err = engine(h.clone(), clock.clone(), Some(store.clone()))
        .start(def.clone(), "file-run", json!({"release": "v3"}))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Interrupted { .. }), "{err}");

    // A brand-new store object over the same directory, as after a restart.
    let store2: Arc<dyn ExecutionStore> = Arc::new(FileStore::new(&dir).unwrap());
    let pending = store2.list_unfinished().unwrap();
    assert_eq!(pending.len(), 1);
    let out = engine(h.clone(), clock, Some(store2.clone()))
        .resume(def, &pending[0].execution_arn)
        .await
        .unwrap();
    assert_eq!(out.status, ExecutionStatus::Succeeded);
    assert_eq!(out.output.unwrap()["release"], "v3");
    let shift10 = h
        .inner
        .calls
        .lock()
        .unwrap()
        .iter()
        .filter(|(r, v)| r == "shift" && v["weight"] == 10)
        .count();
    assert_eq!(shift10, 1);
    assert!(store2.list_unfinished().unwrap().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

fn temp_store_dir(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "cutover-asl-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ))
}

#[tokio::test]
async fn file_stores_sharing_a_directory_let_one_engine_drive_an_execution() {
    let dir = temp_store_dir("lease");
    // Two store objects over one directory stand for two processes: their locks are as
    // independent as two processes' would be.
    let store_a: Arc<dyn ExecutionStore> = Arc::new(FileStore::new(&dir).unwrap());
    let store_b: Arc<dyn ExecutionStore> = Arc::new(FileStore::new(&dir).unwrap());
    let h = Arc::new(InterruptOnce::default());
    let clock = Arc::new(VirtualClock::new());
    let (a, b) = (
        engine(h.clone(), clock.clone(), Some(store_a.clone())),
        engine(h.clone(), clock.clone(), Some(store_b.clone())),
    );
    let def = canary_definition();

    let reserved = a.reserve(&def, "shared").unwrap();
    let err = b.reserve(&def, "shared").unwrap_err();
    assert!(matches!(err, EngineError::AlreadyRunning(_)), "{err}");
    let err = a
        .start_reserved(def.clone(), reserved, json!({"release": "v3"}))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Interrupted { .. }), "{err}");
    // Interrupted, so resumable; but not while someone else holds the lease.
    let arn = a.execution_arn(&def, "shared");
    let held = store_a.lease(&arn).unwrap().expect("free after the interruption");
    let err = b.resume(def.clone(), &arn).await.unwrap_err();
    assert!(matches!(err, EngineError::AlreadyRunning(_)), "{err}");
    drop(held);
    let out = b.resume(def.clone(), &arn).await.unwrap();
    assert_eq!(out.status, ExecutionStatus::Succeeded);
    let err = a.reserve(&def, "shared").unwrap_err();
    assert!(matches!(err, EngineError::ExecutionAlreadyExists(_)), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn map_runs_tasks_with_context_and_tolerates_failures() {
    let def = Arc::new(
        Definition::from_value(&json!({
            "StartAt": "M",
            "States": {"M": {"Type": "Map", "ItemsPath": "$.items", "MaxConcurrency": 2,
                "ItemSelector": {"i.$": "$$.Map.Item.Index", "v.$": "$$.Map.Item.Value"},
                "ItemProcessor": {"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "x", "End": true}}},
                "ToleratedFailureCount": 1,
                "ResultSelector": {"results.$": "$"},
                "End": true}}
        }))
        .unwrap(),
    );
    let h = flaky(1, "Once");
    let out = engine(h, Arc::new(VirtualClock::new()), None)
        .start(def, "m", json!({"items": ["a", "b", "c"]}))
        .await
        .unwrap();
    assert_eq!(out.status, ExecutionStatus::Succeeded, "{out:?}");
    let results = out.output.unwrap()["results"].clone();
    assert_eq!(results.as_array().unwrap().len(), 3);
    assert_eq!(results[0]["Error"], "Once");
}

#[tokio::test]
async fn never_panics_on_bad_input() {
    for text in [
        "",
        "{",
        "[]",
        "{\"StartAt\": 1}",
        "{\"StartAt\": \"A\", \"States\": {\"A\": 5}}",
        "{\"StartAt\": \"A\", \"States\": {\"A\": {\"Type\": \"Pass\", \"End\": true, \"Parameters\": {\"x.$\": \"States.Format(\"}}}}",
    ] {
        assert!(Definition::parse(text).is_err(), "{text}");
    }
    let def = Arc::new(
        Definition::from_value(&json!({
            "StartAt": "A",
            "States": {"A": {"Type": "Pass", "Parameters": {"x.$": "States.ArrayGetItem($.a, 5)"}, "End": true}}
        }))
        .unwrap(),
    );
    let out = engine(
        Arc::new(cutover_asl::NoTasks),
        Arc::new(VirtualClock::new()),
        None,
    )
    .start(def, "bad", json!({"a": [1]}))
    .await
    .unwrap();
    assert_eq!(out.error.as_deref(), Some("States.IntrinsicFailure"));
}

#[test]
fn engine_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let engine = engine(
        Arc::new(cutover_asl::NoTasks),
        Arc::new(VirtualClock::new()),
        None,
    );
    let def = canary_definition();
    let start = engine.start(def.clone(), "s", json!({}));
    assert_send(&start);
    let resume = engine.resume(def, "s");
    assert_send(&resume);
}

#[tokio::test]
async fn abort_stops_a_waiting_execution() {
    let def = Arc::new(
        Definition::from_value(&json!({
            "StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 3600, "End": true}}
        }))
        .unwrap(),
    );
    let store: Arc<dyn ExecutionStore> = Arc::new(MemoryStore::new());
    // Real time and an hour's wait: the abort lands while the Wait is pending, however slow
    // the machine is to start the run.
    let e = Engine::new(
        Arc::new(cutover_asl::NoTasks),
        Arc::new(cutover_asl::ScaledClock { speed: 1.0 }),
        Some(store.clone()),
    );
    let arn = e.execution_arn(&def, "stop-me");
    let e2 = e.clone();
    let run = tokio::spawn(async move { e2.start(def, "stop-me", json!({})).await });
    let mut aborted = false;
    for _ in 0..3000 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if e.abort(&arn, Some("operator said stop".into())) {
            aborted = true;
            break;
        }
    }
    assert!(aborted);
    let out = run.await.unwrap().unwrap();
    assert_eq!(out.status, ExecutionStatus::Aborted);
    assert_eq!(out.cause.as_deref(), Some("operator said stop"));
    assert_eq!(
        store.load(&arn).unwrap().unwrap().status,
        ExecutionStatus::Aborted
    );
    assert!(!e.abort(&arn, None));
}

#[tokio::test]
async fn handlers_can_be_tested_directly() {
    let clock = VirtualClock::new();
    let cx = TaskContext::detached("arn:test", "Shift", &clock);
    cx.heartbeat();
    let h = FakeCanary::default();
    let out = h.invoke("shift", json!({"weight": 25}), cx).await.unwrap();
    assert_eq!(out, json!({"weight": 25}));
    let err = h.invoke("shift", json!({}), cx).await.unwrap_err();
    assert_eq!(err.error, "Shift.BadInput");
}

/// Cheap stand-in for the cargo-fuzz target: mutate every conformance
/// definition and run every machine on hostile inputs; nothing may panic.
#[tokio::test]
async fn mutated_definitions_and_inputs_never_panic() {
    let text = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../conformance/asl-executions.jsonl"
    ));
    let mut seed: u64 = 0x5eed;
    let mut next = move || {
        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let alphabet = b"{}[]\",:$.*?@()'\\0123456789-+eE tnrufalsSTRAxyz";
    for case in cutover_asl::conformance::parse_cases(text).into_iter().flatten() {
        let src = case.definition.to_string();
        for _ in 0..8 {
            let mut bytes = src.clone().into_bytes();
            for _ in 0..(1 + next() % 3) {
                let i = (next() as usize) % bytes.len();
                match next() % 3 {
                    0 => bytes[i] = alphabet[(next() as usize) % alphabet.len()],
                    1 => {
                        bytes.remove(i);
                    }
                    _ => bytes.insert(i, alphabet[(next() as usize) % alphabet.len()]),
                }
            }
            if let Ok(t) = String::from_utf8(bytes)
                && let Ok(def) = Definition::parse(&t)
            {
                let _ = def.to_mermaid();
            }
        }
        let def = Arc::new(Definition::from_value(&case.definition).unwrap());
        for input in [
            json!(null),
            json!([]),
            json!("x"),
            json!(1.5),
            json!({"a": {"b": [1, {}]}}),
        ] {
            let e = engine(
                Arc::new(cutover_asl::NoTasks),
                Arc::new(VirtualClock::new()),
                None,
            );
            let _ = e.start(def.clone(), "hostile", input).await;
        }
    }
}

#[tokio::test]
async fn endless_loops_hit_the_history_limit() {
    let def = Arc::new(
        Definition::from_value(&json!({
            "StartAt": "Spin",
            "States": {"Spin": {"Type": "Choice",
                "Choices": [{"Variable": "$.never", "IsPresent": true, "Next": "Out"}], "Default": "Spin"},
                "Out": {"Type": "Succeed"}}
        }))
        .unwrap(),
    );
    let out = engine(
        Arc::new(cutover_asl::NoTasks),
        Arc::new(VirtualClock::new()),
        None,
    )
    .with_max_events(1000)
    .start(def, "spin", json!({}))
    .await
    .unwrap();
    assert_eq!(out.status, ExecutionStatus::Failed);
    assert_eq!(out.error.as_deref(), Some("States.Runtime"));
}

#[tokio::test]
async fn a_resumed_wait_keeps_its_original_deadline() {
    let store: Arc<dyn ExecutionStore> = Arc::new(MemoryStore::new());
    let def = Arc::new(
        Definition::from_value(&json!({
            "StartAt": "Bake",
            "States": {
                "Bake": {"Type": "Wait", "Seconds": 1, "Next": "Done"},
                "Done": {"Type": "Pass", "End": true}
            }
        }))
        .unwrap()
        .with_name("bake"),
    );
    let first = Engine::new(
        Arc::new(cutover_asl::NoTasks),
        Arc::new(cutover_asl::WallClock),
        Some(store.clone()),
    );
    // The process "stops" 100 ms into the 1 s wait: the run is dropped where it is.
    let stopped = tokio::time::timeout(
        Duration::from_millis(100),
        first.start(def.clone(), "b", json!({})),
    )
    .await;
    assert!(stopped.is_err(), "still waiting when stopped");
    let unfinished = store.list_unfinished().unwrap();
    assert_eq!(unfinished[0].next_state.as_deref(), Some("Bake"));
    let waits = |history: &[cutover_asl::HistoryEvent]| -> Vec<String> {
        history
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::WaitStarted { until, .. } => Some(until.clone()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        waits(&unfinished[0].history).len(),
        1,
        "the deadline was checkpointed"
    );

    let second = Engine::new(
        Arc::new(cutover_asl::NoTasks),
        Arc::new(cutover_asl::WallClock),
        Some(store.clone()),
    );
    let out = second.resume(def, &unfinished[0].execution_arn).await.unwrap();
    assert_eq!(out.status, ExecutionStatus::Succeeded);
    let deadlines = waits(&out.history);
    assert_eq!(deadlines.len(), 2, "{:?}", out.history);
    assert_eq!(
        deadlines[0], deadlines[1],
        "the resumed wait ends when the first would have"
    );
}
