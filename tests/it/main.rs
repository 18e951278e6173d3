//! Integration tests of the whole system: the `cutover` binary, the shipped pipelines and
//! fixtures, and every AWS backend against a real emulator (moto server).

mod analysis;
mod cli;
mod crash;
mod dashboard;
mod dedup;
mod demo;
mod dlq;
mod ecs_hook;
mod faults;
#[cfg(feature = "ecs")]
mod filter_ecs;
mod fixtures;
mod health;
pub(crate) mod lambda;
mod moto;
mod observed_split;
mod prometheus;
mod readme;
mod registry;
mod restart;
mod rollouts;
mod rollouts_sfn;
mod rule;
mod serve;
mod services;
mod state_machine;
mod template;
pub(crate) mod traffic;

/// Path of a file in the repository.
pub(crate) fn repo(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A fixture of `tests/fixtures`, parsed.
pub(crate) fn fixture(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(repo(&format!("tests/fixtures/{name}"))).unwrap()).unwrap()
}

/// A `cutover` command run from the repository root.
pub(crate) fn cutover() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cutover"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("CUTOVER_LOG");
    cmd
}

/// The execution records the embedded engine keeps in `dir` (with their histories), as JSON;
/// none when the directory does not exist yet.
pub(crate) fn execution_records(dir: &std::path::Path) -> Vec<serde_json::Value> {
    if !dir.exists() {
        return Vec::new();
    }
    cutover_asl::FileStore::new(dir)
        .and_then(|store| store.list())
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .iter()
        .map(|r| serde_json::to_value(r).expect("records serialise"))
        .collect()
}

/// Asks `status` every `every` until its answer satisfies `done`, within `limit`; that answer.
/// Panics with `what` it waited for and the last answer.
pub(crate) fn wait_for_status(
    limit: std::time::Duration,
    every: std::time::Duration,
    what: &str,
    status: impl Fn() -> Option<serde_json::Value>,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let status = status();
        if let Some(s) = &status
            && done(s)
        {
            return s.clone();
        }
        assert!(std::time::Instant::now() < deadline, "never {what}: {status:#?}");
        std::thread::sleep(every);
    }
}

/// Echoes a child's stderr, each line prefixed `  daemon: `, so a failing test shows it.
pub(crate) fn echo_stderr(child: &mut std::process::Child) {
    use std::io::BufRead;
    let stderr = child.stderr.take().expect("stderr is piped");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("  daemon: {line}");
        }
    });
}
