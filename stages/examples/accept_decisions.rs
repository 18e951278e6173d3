//! Decides the fixture `task-fargate-running.json` N times (env `N`, default 1000) with the
//! filter stage, or with the typed borrowing parse (`typed` argument) or a full
//! `serde_json::Value` parse (`value`): a fixed workload for counting instructions, which do
//! not drift as timings do on a shared machine. BENCHMARKS.md gives the command.

use std::sync::Arc;

use cutover_core::Event;
use cutover_stages::filter::{Decision, Filter, FilterConfig};

#[path = "../benches/common/typed.rs"]
mod typed;

fn main() {
    let cfg: FilterConfig =
        toml::from_str("cluster = \"catsndogsECScluster\"\ngreen = { container = \"cats-green\" }")
            .expect("config");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let filter = rt.block_on(Filter::from_config(&cfg)).expect("filter");
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/task-fargate-running.json"
    );
    let value: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("JSON");
    let bytes: Arc<[u8]> = Arc::from(serde_json::to_vec(&value).expect("serialize"));
    let n: u32 = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let which = std::env::args().nth(1).unwrap_or_default();
    rt.block_on(async {
        for _ in 0..n {
            let passed = match which.as_str() {
                "typed" => typed::typed_decision(std::hint::black_box(&bytes)),
                "value" => serde_json::from_slice::<serde_json::Value>(std::hint::black_box(&bytes)).is_ok(),
                _ => matches!(
                    filter.decide(&Event::from_bytes(bytes.clone())).await,
                    Ok(Decision::Pass)
                ),
            };
            assert!(passed, "the fixture is a green task that reached RUNNING");
        }
    });
}
