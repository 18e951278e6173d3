use std::sync::Mutex;
use std::time::SystemTime;

use cutover_core::{ManualClock, Next, Stage};

use super::*;

/// A stage answering from a script, one outcome per run.
#[derive(Debug)]
struct Scripted(Mutex<Vec<Outcome>>);

impl Stage for Scripted {
    fn process<'a>(&'a self, _event: Event, _next: Next<'a>) -> BoxFuture<'a, Outcome> {
        let next = self.0.lock().unwrap().remove(0);
        Box::pin(std::future::ready(next))
    }
}

fn healthy(yes: bool) -> Outcome {
    let state = if yes { "healthy" } else { "unhealthy" };
    Outcome::Passed {
        context: json!({"health": {"State": state, "reason": format!("green is {state}")}})
            .as_object()
            .unwrap()
            .clone(),
    }
}

fn hooks(spec: &str, script: Vec<Outcome>, dir: &std::path::Path, clock: Arc<ManualClock>) -> EcsHooks {
    let spec: EcsHookSpec = toml::from_str(spec).unwrap();
    let pipeline = Pipeline::from_stages(
        "judge",
        vec![("health-check".into(), Arc::new(Scripted(Mutex::new(script))) as _)],
    );
    let judge = Arc::new(StageJudge {
        pipeline_name: "judge".into(),
        spec: spec.clone(),
        pipeline,
        store: Arc::new(files::FileHookStore::new(dir)),
    });
    EcsHooks {
        judges: spec.stages.iter().map(|s| (s.clone(), judge.clone())).collect(),
        clock,
    }
}

/// A request in the documented shape.
pub(crate) fn request(stage: &str, hook_details: Option<Value>) -> Value {
    let mut v = json!({
        "executionDetails": {
            "testTrafficWeights": {},
            "productionTrafficWeights": {},
            "serviceArn": "arn:aws:ecs:us-west-2:1234567890:service/myCluster/myService",
            "targetServiceRevisionArn": "arn:aws:ecs:us-west-2:1234567890:service-revision/myCluster/myService/01275892"
        },
        "executionId": "a1b2c3",
        "lifecycleStage": stage,
        "resourceArn": "arn:aws:ecs:us-west-2:1234567890:service-deployment/myCluster/myService/d1"
    });
    if let Some(d) = hook_details {
        v["hookDetails"] = d;
    }
    v
}

#[test]
fn requests_parse_keep_unknown_fields_and_round_trip() {
    let mut v = request("POST_TEST_TRAFFIC_SHIFT", Some(json!({"team": "cats"})));
    v["newField"] = json!(1);
    assert!(is_hook_request(&v));
    assert!(!is_hook_request(
        &json!({"source": "aws.ecs", "detail-type": "x"})
    ));
    let text = request("POST_SCALE_UP", Some(json!("{\"team\": \"dogs\"}")));
    let r: HookRequest = serde_json::from_value(text).unwrap();
    let answer = respond(&r, HookStatus::Succeeded, None, "ok", None);
    assert_eq!(
        answer.hook_details.unwrap()["team"],
        "dogs",
        "hookDetails given as JSON text"
    );
    let r: HookRequest = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(r.lifecycle_stage, "POST_TEST_TRAFFIC_SHIFT");
    assert_eq!(serde_json::to_value(&r).unwrap(), v);
    let answer = HookResponse {
        hook_status: HookStatus::InProgress,
        call_back_delay: Some(60),
        hook_details: None,
    };
    assert_eq!(
        serde_json::to_value(answer).unwrap(),
        json!({"hookStatus": "IN_PROGRESS", "callBackDelay": 60})
    );
}

#[tokio::test]
async fn collects_in_progress_then_succeeds_and_repeats_the_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let h = hooks(
        "stages = [\"POST_TEST_TRAFFIC_SHIFT\"]\ncount = 3\nfailure_limit = 1\ncallback_delay = \"20s\"",
        vec![healthy(true), healthy(false), healthy(true)],
        dir.path(),
        clock.clone(),
    );
    let mut details = Some(json!({"team": "cats"}));
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let a = h
            .answer(request("POST_TEST_TRAFFIC_SHIFT", details.clone()))
            .await
            .unwrap();
        statuses.push((a.hook_status, a.call_back_delay));
        assert_eq!(
            a.hook_details.as_ref().unwrap()["team"],
            "cats",
            "the configured details are kept"
        );
        details = a.hook_details;
        clock.advance(Duration::from_secs(20));
    }
    assert_eq!(
        statuses,
        [
            (HookStatus::InProgress, Some(20)),
            (HookStatus::InProgress, Some(20)),
            (HookStatus::Succeeded, None)
        ]
    );
    let d = details.unwrap();
    assert_eq!(d["cutover"]["measurements"], 3);
    assert_eq!(d["cutover"]["failed"], 1);
    // Asked again (a retried invocation): the same verdict, and the pipeline is not run again
    // (its script is empty: running it would panic).
    let again = h
        .answer(request("POST_TEST_TRAFFIC_SHIFT", Some(d)))
        .await
        .unwrap();
    assert_eq!(again.hook_status, HookStatus::Succeeded);
}

#[tokio::test]
async fn fails_with_the_reason_on_unhealthy_on_a_permanent_failure_and_on_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let h = hooks(
        "stages = [\"PRODUCTION_TRAFFIC_SHIFT\"]\ncount = 2",
        vec![healthy(false)],
        dir.path(),
        clock.clone(),
    );
    let a = h.answer(request("PRODUCTION_TRAFFIC_SHIFT", None)).await.unwrap();
    assert_eq!(a.hook_status, HookStatus::Failed);
    let reason = a.hook_details.unwrap()["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains("green is unhealthy"), "{reason}");

    let dir = tempfile::tempdir().unwrap();
    let h = hooks(
        "stages = [\"POST_SCALE_UP\"]",
        vec![Outcome::failed(StageError::permanent("no such target group"))],
        dir.path(),
        clock.clone(),
    );
    let a = h.answer(request("POST_SCALE_UP", None)).await.unwrap();
    assert_eq!(a.hook_status, HookStatus::Failed);
    assert!(
        a.hook_details.unwrap()["reason"]
            .as_str()
            .unwrap()
            .contains("no such target group")
    );

    // Still collecting when the hook's time is up: FAILED, saying so.
    let dir = tempfile::tempdir().unwrap();
    let h = hooks(
        "stages = [\"POST_SCALE_UP\"]\ncount = 5\ninconclusive_limit = 5\ntimeout = \"60s\"",
        vec![Outcome::failed(StageError::retryable("connection refused"))],
        dir.path(),
        clock.clone(),
    );
    let a = h.answer(request("POST_SCALE_UP", None)).await.unwrap();
    assert_eq!(a.hook_status, HookStatus::InProgress);
    clock.advance(Duration::from_secs(61));
    let a = h.answer(request("POST_SCALE_UP", a.hook_details)).await.unwrap();
    assert_eq!(a.hook_status, HookStatus::Failed);
    let reason = a.hook_details.unwrap()["reason"].as_str().unwrap().to_owned();
    assert!(
        reason.contains("no verdict within 60s (1 of 5") && reason.contains("connection refused"),
        "{reason}"
    );
}

#[tokio::test]
async fn an_unanswered_stage_and_a_bad_payload_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let h = hooks("stages = [\"POST_SCALE_UP\"]", vec![], dir.path(), clock);
    let a = h.answer(request("PRE_SCALE_UP", None)).await.unwrap();
    assert_eq!(a.hook_status, HookStatus::Failed);
    let reason = a.hook_details.unwrap()["reason"].as_str().unwrap().to_owned();
    assert!(
        reason.contains("no pipeline answers PRE_SCALE_UP") && reason.contains("POST_SCALE_UP"),
        "{reason}"
    );
    let e = h
        .answer(json!({"executionDetails": {}, "lifecycleStage": "POST_SCALE_UP"}))
        .await
        .unwrap_err();
    assert!(e.message.contains("serviceArn"), "{}", e.message);
}

/// A store that cannot be reached.
#[derive(Debug)]
struct Unreachable;

impl HookStore for Unreachable {
    fn get<'a>(
        &'a self,
        _key: &'a str,
        _now_s: u64,
    ) -> BoxFuture<'a, Result<Option<HookRecord>, StageError>> {
        Box::pin(std::future::ready(Err(StageError::retryable(
            "dynamodb:GetItem: timed out",
        ))))
    }
    fn put<'a>(&'a self, _record: &'a HookRecord, _now_s: u64) -> BoxFuture<'a, Result<bool, StageError>> {
        Box::pin(std::future::ready(Err(StageError::retryable(
            "dynamodb:PutItem: timed out",
        ))))
    }
}

#[tokio::test]
async fn an_unreachable_store_asks_to_be_called_again_rather_than_rolling_back() {
    let spec: EcsHookSpec = toml::from_str("stages = [\"POST_SCALE_UP\"]\ncallback_delay = \"10s\"").unwrap();
    let judge = Arc::new(StageJudge {
        pipeline_name: "judge".into(),
        spec,
        pipeline: Pipeline::from_stages("judge", vec![]),
        store: Arc::new(Unreachable),
    });
    let h = EcsHooks {
        judges: BTreeMap::from([("POST_SCALE_UP".to_owned(), judge)]),
        clock: Arc::new(ManualClock::new(SystemTime::now())),
    };
    let a = h.answer(request("POST_SCALE_UP", None)).await.unwrap();
    assert_eq!(
        (a.hook_status, a.call_back_delay),
        (HookStatus::InProgress, Some(10))
    );
    assert!(
        a.hook_details.unwrap()["reason"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "the reason says why"
    );
}
