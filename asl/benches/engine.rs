//! Engine throughput on virtual time: state transitions per second for a
//! Pass/Choice loop, and the wall time of a whole canary with 60 s Waits.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use cutover_asl::{
    Definition, Engine, ExecutionStatus, NoTasks, TaskContext, TaskFailure, TaskHandler, VirtualClock,
};
use serde_json::{Value, json};
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::Arc;

const ITERATIONS: u64 = 10_000;

fn loop_definition() -> Arc<Definition> {
    Arc::new(
        Definition::from_value(&json!({
            "StartAt": "Init",
            "States": {
                "Init": {"Type": "Pass", "Result": 0, "ResultPath": "$.n", "Next": "Check"},
                "Check": {"Type": "Choice",
                          "Choices": [{"Variable": "$.n", "NumericLessThan": ITERATIONS, "Next": "Step"}],
                          "Default": "Done"},
                "Step": {"Type": "Pass", "Parameters": {"n.$": "States.MathAdd($.n, 1)"}, "Next": "Check"},
                "Done": {"Type": "Succeed"}
            }
        }))
        .expect("valid loop definition"),
    )
}

#[derive(Debug)]
struct Canary;

impl TaskHandler for Canary {
    fn invoke<'a>(
        &'a self,
        resource: &'a str,
        input: Value,
        _cx: TaskContext<'a>,
    ) -> Pin<Box<dyn Future<Output = Result<Value, TaskFailure>> + Send + 'a>> {
        Box::pin(async move {
            Ok(match resource {
                "shift" => json!({"weight": input["weight"]}),
                _ => json!({"healthy": true}),
            })
        })
    }
}

fn canary_definition() -> Arc<Definition> {
    let mut states = serde_json::Map::new();
    let weights = [5, 10, 25, 50, 75, 100];
    for (i, w) in weights.iter().enumerate() {
        let next = if i + 1 == weights.len() {
            "Done".to_string()
        } else {
            format!("Shift{}", weights[i + 1])
        };
        states.insert(
            format!("Shift{w}"),
            json!({"Type": "Task", "Resource": "shift",
            "Parameters": {"weight": w}, "ResultPath": "$.shift", "Next": format!("Bake{w}")}),
        );
        states.insert(
            format!("Bake{w}"),
            json!({"Type": "Wait", "Seconds": 60, "Next": format!("Check{w}")}),
        );
        states.insert(
            format!("Check{w}"),
            json!({"Type": "Task", "Resource": "check",
            "ResultPath": "$.health", "Next": format!("Healthy{w}")}),
        );
        states.insert(
            format!("Healthy{w}"),
            json!({"Type": "Choice",
            "Choices": [{"Variable": "$.health.healthy", "BooleanEquals": true, "Next": next}],
            "Default": "Rollback"}),
        );
    }
    states.insert(
        "Rollback".into(),
        json!({"Type": "Fail", "Error": "Canary.Unhealthy"}),
    );
    states.insert("Done".into(), json!({"Type": "Succeed"}));
    Arc::new(
        Definition::from_value(&json!({"StartAt": "Shift5", "States": states}))
            .expect("valid canary definition"),
    )
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let def = loop_definition();
    // Init + Done + (Check + Step) per iteration + the final Check.
    let transitions = 2 * ITERATIONS + 3;
    let mut g = c.benchmark_group("transitions");
    g.throughput(Throughput::Elements(transitions));
    g.sample_size(10);
    g.bench_function("pass_choice_loop_10k", |b| {
        b.iter(|| {
            let engine = Engine::new(Arc::new(NoTasks), Arc::new(VirtualClock::new()), None);
            let out = rt
                .block_on(engine.start(def.clone(), "bench", json!({})))
                .expect("runs");
            assert_eq!(out.status, ExecutionStatus::Succeeded);
            black_box(out.history.len())
        })
    });
    g.finish();

    let def = canary_definition();
    c.bench_function("canary_6_steps_60s_waits_virtual", |b| {
        b.iter(|| {
            let engine = Engine::new(Arc::new(Canary), Arc::new(VirtualClock::new()), None);
            let out = rt
                .block_on(engine.start(def.clone(), "canary", json!({})))
                .expect("runs");
            assert_eq!(out.status, ExecutionStatus::Succeeded);
            black_box(out)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
