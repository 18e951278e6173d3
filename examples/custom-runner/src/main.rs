//! Your own runner: a pipeline built in code (no TOML file) from cutover's built-in stages
//! plus a stage of your own, fed from your own source — here a spool directory where another
//! system drops one JSON event per file. Processed files move to `done/`, events that fail
//! permanently to `dead/` with the error beside them (nothing is lost), and retryable failures
//! stay for the next pass.
//!
//! `cargo run -p cutover-example-runner -- SPOOL_DIR`

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cutover::core::{BoxFuture, BuildContext, Event, Next, Outcome, Pipeline, Stage, StageConfig};
use cutover::stages::filter::FilterConfig;

/// A stage of this runner's own: counts the green deployments it sees.
#[derive(Debug, Default)]
struct Count(AtomicU64);

impl Stage for Count {
    fn process<'a>(&'a self, event: Event, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Box::pin(next.run(event))
    }
}

/// What one pass over the spool did.
#[derive(Debug, Default, PartialEq, Eq)]
struct Pass {
    passed: usize,
    dropped: usize,
    dead: usize,
    retry: usize,
}

async fn pipeline(cx: &BuildContext) -> Result<(Pipeline, Arc<Count>), String> {
    let filter: FilterConfig =
        toml::from_str("cluster = \"catsndogsECScluster\"\ngreen = { container = \"cats-green\" }")
            .map_err(|e| e.to_string())?;
    let filter = filter.build(cx).await.map_err(|e| e.to_string())?;
    let count = Arc::new(Count::default());
    let pipeline = Pipeline::from_stages(
        "spool",
        vec![("filter".into(), filter), ("count".into(), count.clone())],
    );
    Ok((pipeline, count))
}

async fn pass(spool: &Path, pipeline: &Pipeline) -> std::io::Result<Pass> {
    let (done, dead) = (spool.join("done"), spool.join("dead"));
    std::fs::create_dir_all(&done)?;
    std::fs::create_dir_all(&dead)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(spool)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut result = Pass::default();
    for file in files {
        let bytes = std::fs::read(&file)?;
        let name = file.file_name().map(PathBuf::from).unwrap_or_default();
        // Like cutover's own hosts, check the bytes are JSON at the edge: the filter may reject
        // a torn event from its bytes alone, and a torn event belongs in dead/, not done/.
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            result.dead += 1;
            std::fs::write(
                dead.join(&name).with_extension("error.txt"),
                format!("input: not valid JSON: {e}\n"),
            )?;
            std::fs::rename(&file, dead.join(&name))?;
            continue;
        }
        match pipeline.run(Event::from_bytes(bytes)).await {
            Outcome::Passed { .. } => {
                result.passed += 1;
                std::fs::rename(&file, done.join(&name))?;
            }
            Outcome::Dropped { .. } => {
                result.dropped += 1;
                std::fs::rename(&file, done.join(&name))?;
            }
            Outcome::Failed { error, .. } if error.retryable => result.retry += 1,
            Outcome::Failed { stage, error } => {
                result.dead += 1;
                std::fs::write(
                    dead.join(&name).with_extension("error.txt"),
                    format!("{stage}: {}\n", error.message),
                )?;
                std::fs::rename(&file, dead.join(&name))?;
            }
        }
    }
    Ok(result)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    cutover::link_builtin_stages();
    let Some(spool) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: cutover-example-runner SPOOL_DIR");
        return std::process::ExitCode::from(2);
    };
    let cx = BuildContext::new(spool.join(".state"));
    let (pipeline, count) = match pipeline(&cx).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match pass(&spool, &pipeline).await {
        Ok(p) => {
            println!(
                "{p:?}; green deployments seen: {}",
                count.0.load(Ordering::Relaxed)
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}: {e}", spool.display());
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pass_routes_every_file_and_loses_none() {
        let spool = tempfile::tempdir().unwrap();
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures");
        for name in [
            "task-fargate-running.json",
            "task-ec2-running.json",
            "service-action.json",
        ] {
            std::fs::copy(format!("{fixtures}/{name}"), spool.path().join(name)).unwrap();
        }
        std::fs::write(spool.path().join("torn.json"), b"{\"detail-type\": \"ECS Task State Change\", \"source\": \"aws.ecs\", \"detail\": {\"containers\": [{\"name\": \"cats-green\"").unwrap();
        let cx = BuildContext::new(spool.path().join(".state"));
        let (pipeline, count) = pipeline(&cx).await.unwrap();
        let result = pass(spool.path(), &pipeline).await.unwrap();
        assert_eq!(
            result,
            Pass {
                passed: 1,
                dropped: 2,
                dead: 1,
                retry: 0
            }
        );
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        assert!(spool.path().join("dead/torn.json").exists());
        let why = std::fs::read_to_string(spool.path().join("dead/torn.error.txt")).unwrap();
        assert!(why.starts_with("input: not valid JSON"), "{why}");
        assert_eq!(std::fs::read_dir(spool.path().join("done")).unwrap().count(), 3);
    }
}
