//! The filter stage on a reject-heavy trace of ~2 KB ECS events, beside the baselines the
//! issue names: a full `serde_json::Value` parse, a typed borrowing parse of only the needed
//! fields, and a plain `memmem` scan (the ceiling). The Python baseline runs separately on the
//! trace this bench writes (`scripts/bench-python-filter.py target/bench/filter-trace.jsonl`).
//!
//! Run: `cargo bench -p cutover-stages --bench filter`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use cutover_core::{BuildContext, Event, StageConfig};
use cutover_stages::filter::{Decision, Filter, FilterConfig};
use serde_json::Value;

#[path = "common/typed.rs"]
mod typed;

use typed::typed_decision;

const EVENTS: usize = 20_000;

/// Noise from the fixture traces with fresh ids; one green RUNNING event in 250.
fn trace() -> Vec<Arc<[u8]>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures");
    let text = std::fs::read_to_string(format!("{dir}/two-revisions-trace.jsonl")).expect("fixtures");
    let all: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let is_green = |v: &Value| {
        v.pointer("/detail/containers/0/name").and_then(Value::as_str) == Some("cats-green")
            && v.pointer("/detail/clusterArn")
                .and_then(Value::as_str)
                .is_some_and(|c| c.ends_with("/catsndogsECScluster"))
    };
    let green: Vec<&Value> = all
        .iter()
        .filter(|v| is_green(v) && v.pointer("/detail/lastStatus") == Some(&Value::from("RUNNING")))
        .collect();
    let noise: Vec<&Value> = all.iter().filter(|v| !is_green(v)).collect();
    (0..EVENTS)
        .map(|i| {
            let base = if i % 250 == 0 {
                green[i % green.len()]
            } else {
                noise[i % noise.len()]
            };
            let mut v = base.clone();
            v["id"] = Value::from(format!("{i:08x}-bench"));
            Arc::from(serde_json::to_vec(&v).expect("serialize"))
        })
        .collect()
}

/// How many of `events` the stage passes, deciding each as a fresh `Event`.
fn stage_passes(rt: &tokio::runtime::Runtime, filter: &Filter, events: &[Arc<[u8]>]) -> usize {
    rt.block_on(async {
        let mut n = 0;
        for e in events {
            n += usize::from(matches!(
                filter.decide(&Event::from_bytes(e.clone())).await,
                Ok(Decision::Pass)
            ));
        }
        n
    })
}

fn bench(c: &mut Criterion) {
    let events = trace();
    let out = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench");
    std::fs::create_dir_all(out).expect("target/bench");
    let mut file = Vec::new();
    for e in &events {
        file.extend_from_slice(e);
        file.push(b'\n');
    }
    std::fs::write(format!("{out}/filter-trace.jsonl"), file).expect("write trace");
    let bytes: usize = events.iter().map(|e| e.len()).sum();
    eprintln!(
        "trace: {} events, {} bytes on average",
        events.len(),
        bytes / events.len()
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let cfg: FilterConfig =
        toml::from_str("cluster = \"catsndogsECScluster\"\ngreen = { container = \"cats-green\" }")
            .expect("config");
    let stage = rt
        .block_on(cfg.build(&BuildContext::new("unused")))
        .expect("build");
    let filter = format!("{stage:?}");
    assert!(filter.starts_with("Filter"));
    let filter: Filter = rt.block_on(Filter::from_config(&cfg)).expect("filter");

    let passing = stage_passes(&rt, &filter, &events);
    assert_eq!(
        passing,
        events.iter().filter(|e| typed_decision(e)).count(),
        "the baselines decide alike"
    );
    eprintln!(
        "passing: {passing} of {} ({:.2}%)",
        events.len(),
        passing as f64 * 100.0 / events.len() as f64
    );

    // The Python baseline, one pass at a time, alternating with one pass of the stage: this
    // machine's speed drifts too much for numbers taken minutes apart to be compared.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/bench-python-filter.py");
    let mut ratios = Vec::new();
    let mut python_rates = Vec::new();
    for _ in 0..7 {
        let Ok(output) = std::process::Command::new("python3")
            .args([script, &format!("{out}/filter-trace.jsonl"), "1"])
            .output()
        else {
            eprintln!("python3 not found: no Python baseline");
            break;
        };
        let report: Value = serde_json::from_slice(&output.stdout).expect("the script's JSON line");
        let python = report["events_per_second"].as_f64().expect("events_per_second");
        let started = std::time::Instant::now();
        black_box(stage_passes(&rt, &filter, &events));
        let stage = events.len() as f64 / started.elapsed().as_secs_f64();
        python_rates.push(python);
        ratios.push(stage / python);
    }
    if !ratios.is_empty() {
        ratios.sort_by(f64::total_cmp);
        python_rates.sort_by(f64::total_cmp);
        eprintln!(
            "reject-heavy trace, {} alternating passes: Python median {:.0} events/s; filter stage / Python: median {:.1}x (range {:.1}x-{:.1}x)",
            ratios.len(),
            python_rates[python_rates.len() / 2],
            ratios[ratios.len() / 2],
            ratios[0],
            ratios[ratios.len() - 1]
        );
    }

    let mut g = c.benchmark_group("filter-trace");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.sample_size(20);
    g.bench_function("filter stage", |b| {
        b.iter(|| black_box(stage_passes(&rt, &filter, &events)))
    });
    g.bench_function("serde_json::Value parse", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for e in &events {
                n += usize::from(serde_json::from_slice::<Value>(e).is_ok());
            }
            black_box(n)
        })
    });
    g.bench_function("typed borrowed parse + checks", |b| {
        b.iter(|| black_box(events.iter().filter(|e| typed_decision(e)).count()))
    });
    // What replay and the daemon check of every event at their edge (issue 15).
    g.bench_function("edge check (check_json)", |b| {
        b.iter(|| {
            let checked = events.iter().filter(|e| cutover_pattern::check_json(e).is_ok());
            black_box(checked.count())
        })
    });
    let finder = memchr::memmem::Finder::new("\"cats-green\"");
    g.bench_function("memmem scan (ceiling)", |b| {
        b.iter(|| black_box(events.iter().filter(|e| finder.find(e).is_some()).count()))
    });
    g.finish();

    // The accept path alone: events that pass every condition (the green RUNNING events of
    // the trace, with fresh ids), against the typed borrowing parse the issue names as the
    // bound and the full `Value` parse the stage used before it parsed projections.
    let accepted: Vec<Arc<[u8]>> = events
        .iter()
        .filter(|e| typed_decision(e))
        .cycle()
        .take(2_000)
        .enumerate()
        .map(|(i, e)| {
            let mut v: Value = serde_json::from_slice(e).expect("json");
            v["id"] = Value::from(format!("{i:08x}-accept"));
            Arc::from(serde_json::to_vec(&v).expect("serialize"))
        })
        .collect();
    let pattern =
        cutover_pattern::Pattern::from_value(&cfg.compiled_pattern().expect("pattern")).expect("compiles");
    // This machine's speed drifts by ±30% over a minute, more than the difference measured
    // here; so besides criterion's groups (one function after the other), the stage and the
    // typed parse also run in alternating rounds, and the medians are compared.
    let mut stage_ns = Vec::new();
    let mut typed_ns = Vec::new();
    for _ in 0..41 {
        let started = std::time::Instant::now();
        black_box(stage_passes(&rt, &filter, &accepted));
        stage_ns.push(started.elapsed().as_nanos() as f64 / accepted.len() as f64);
        let started = std::time::Instant::now();
        black_box(accepted.iter().filter(|e| typed_decision(e)).count());
        typed_ns.push(started.elapsed().as_nanos() as f64 / accepted.len() as f64);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (stage, typed) = (median(&mut stage_ns), median(&mut typed_ns));
    eprintln!(
        "accept path, 41 alternating rounds of {} events: filter stage {:.2} µs/event, typed borrowed parse + checks {:.2} µs/event (stage/typed = {:.2})",
        accepted.len(),
        stage / 1000.0,
        typed / 1000.0,
        stage / typed
    );

    let mut g = c.benchmark_group("filter-accept");
    g.throughput(Throughput::Elements(accepted.len() as u64));
    g.sample_size(20);
    g.bench_function("filter stage", |b| {
        b.iter(|| {
            let n = stage_passes(&rt, &filter, &accepted);
            assert_eq!(n, accepted.len());
            black_box(n)
        })
    });
    g.bench_function("typed borrowed parse + checks", |b| {
        b.iter(|| black_box(accepted.iter().filter(|e| typed_decision(e)).count()))
    });
    // Where the filter's accept time goes: the byte prefilter, UTF-8 validation, and the
    // projected parse, each alone.
    g.bench_function("part: byte prefilter (all literals found)", |b| {
        b.iter(|| {
            black_box(
                accepted
                    .iter()
                    .filter(|e| pattern.prefilter().may_match(e))
                    .count(),
            )
        })
    });
    g.bench_function("part: UTF-8 validation", |b| {
        b.iter(|| black_box(accepted.iter().filter(|e| std::str::from_utf8(e).is_ok()).count()))
    });
    let projection = cutover_pattern::Projection::of([&pattern]);
    g.bench_function("part: projected parse", |b| {
        b.iter(|| black_box(accepted.iter().filter(|e| projection.parse(e).is_ok()).count()))
    });
    g.bench_function("serde_json::Value parse + pattern match", |b| {
        b.iter(|| {
            black_box(
                accepted
                    .iter()
                    .filter(|e| serde_json::from_slice::<Value>(e).is_ok_and(|v| pattern.matches(&v)))
                    .count(),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
