//! Rough throughput check of the prefilter on a reject-heavy trace of
//! ~2 KB ECS task state events (one in fifty matches),
//! four passes over 5,000 events (10 MB, so the trace stays in cache).
//!
//! Run: `cargo run --release -p cutover-pattern --example prefilter_bench [TRACE_OUT]`.
//! With `TRACE_OUT`, the trace is also written there as JSON Lines so other
//! tools (e.g. a Python `json.loads` baseline) can run on the same bytes.

use cutover_pattern::Pattern;
use std::hint::black_box;
use std::time::Instant;

fn event(i: usize) -> String {
    let (cluster, container, status) = if i.is_multiple_of(50) {
        ("catsndogsECScluster", "cats-green", "RUNNING")
    } else {
        (
            ["orders", "payments", "search", "catsndogsECScluster"][i % 4],
            ["web", "worker", "cats-blue", "sidecar"][i % 4],
            ["PENDING", "RUNNING", "STOPPED"][i % 3],
        )
    };
    let padding = "x".repeat(900);
    format!(
        r#"{{"version":"0","id":"{i:08}-aaaa-bbbb-cccc-ddddeeeeffff","detail-type":"ECS Task State Change","source":"aws.ecs","account":"111122223333","time":"2026-11-26T21:00:00Z","region":"us-east-1","resources":["arn:aws:ecs:us-east-1:111122223333:task/{cluster}/{i:032x}"],"detail":{{"clusterArn":"arn:aws:ecs:us-east-1:111122223333:cluster/{cluster}","containers":[{{"containerArn":"arn:aws:ecs:us-east-1:111122223333:container/{i:032x}","lastStatus":"{status}","name":"{container}","image":"111122223333.dkr.ecr.us-east-1.amazonaws.com/{container}:v{i}","taskArn":"arn:aws:ecs:us-east-1:111122223333:task/{cluster}/{i:032x}","networkInterfaces":[{{"attachmentId":"{i:036x}","privateIpv4Address":"10.0.{}.{}"}}],"cpu":"256","memory":"512"}}],"createdAt":"2026-11-26T20:59:00Z","desiredStatus":"RUNNING","group":"service:{container}","launchType":"FARGATE","lastStatus":"{status}","overrides":{{"containerOverrides":[{{"name":"{container}"}}]}},"taskDefinitionArn":"arn:aws:ecs:us-east-1:111122223333:task-definition/{container}:{i}","version":{i},"notes":"{padding}"}}}}"#,
        i % 250,
        i % 200
    )
}

fn main() {
    let pattern = Pattern::parse(
        r#"{"source": ["aws.ecs"], "detail-type": ["ECS Task State Change"],
            "detail": {"clusterArn": [{"suffix": ":cluster/catsndogsECScluster"}],
                       "lastStatus": ["RUNNING"],
                       "containers": {"name": ["cats-green"]}}}"#,
    )
    .expect("valid pattern");
    println!("prefilter: {}", pattern.prefilter());
    let base: Vec<String> = (0..5_000).map(event).collect();
    // Four passes over a trace that fits in L3: the events are not memory-bound.
    let trace: Vec<&str> = base
        .iter()
        .cycle()
        .take(4 * base.len())
        .map(String::as_str)
        .collect();
    println!("event size: {} bytes", trace[1].len());
    if let Some(path) = std::env::args().nth(1) {
        std::fs::write(&path, base.join("\n")).expect("write trace");
    }

    let t = Instant::now();
    let mut hits = 0;
    for e in &trace {
        hits += usize::from(pattern.matches_json(black_box(e.as_bytes())).unwrap());
    }
    let filtered = t.elapsed();

    let t = Instant::now();
    let mut passed = 0;
    for e in &trace {
        passed += usize::from(pattern.prefilter().may_match(black_box(e.as_bytes())));
    }
    let prefilter_only = t.elapsed();

    let t = Instant::now();
    let mut hits_full = 0;
    for e in &trace {
        let v: serde_json::Value = serde_json::from_str(black_box(e)).unwrap();
        hits_full += usize::from(pattern.matches(&v));
    }
    let full = t.elapsed();
    assert_eq!(hits, hits_full);

    let per = |d: std::time::Duration| d.as_nanos() as f64 / trace.len() as f64;
    println!("matches: {hits} of {}", trace.len());
    println!("prefilter passed: {passed}");
    println!("prefilter only:            {:8.0} ns/event", per(prefilter_only));
    println!("prefilter + parse on pass: {:8.0} ns/event", per(filtered));
    println!("always parse:              {:8.0} ns/event", per(full));
}
