//! What stages share while they are built: one AWS configuration, the clock, where embedded
//! backends keep their files, and the metrics.
//!
//! Stages never build SDK clients from scratch: they ask [`BuildContext::aws_config`], which
//! loads one `SdkConfig` on first use (rustls with ring as the one TLS stack) with the endpoint,
//! region, credentials and retry overrides set in one place — moto in tests, LocalStack, or real
//! AWS in production.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use tokio::sync::OnceCell;

use crate::config::Siblings;
use crate::error::BuildError;
pub use crate::metrics::{Counter, HISTOGRAM_BOUNDS, Histogram, Labels, Metrics};
use crate::pipeline::{Pipeline, build_stages};
use crate::stage::BoxFuture;

/// A source of time. Production reads the wall clock; tests and the demo use virtual or
/// accelerated time with the same code.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> SystemTime;
    /// Waits `duration` of this clock's time.
    fn sleep(&self, duration: Duration) -> BoxFuture<'_, ()>;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// Virtual time: starts at a fixed instant, `sleep` advances it at once, `advance` moves it by
/// hand. Deterministic for tests.
#[derive(Debug)]
pub struct ManualClock {
    start: SystemTime,
    offset_ms: AtomicU64,
}

impl ManualClock {
    /// A clock reading `start`.
    pub fn new(start: SystemTime) -> Self {
        Self {
            start,
            offset_ms: AtomicU64::new(0),
        }
    }

    /// Moves time forward.
    pub fn advance(&self, by: Duration) {
        self.offset_ms.fetch_add(
            u64::try_from(by.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        self.start + Duration::from_millis(self.offset_ms.load(Ordering::SeqCst))
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'_, ()> {
        self.advance(duration);
        Box::pin(std::future::ready(()))
    }
}

/// Overrides for the shared AWS configuration. Unset fields fall back to the SDK's usual
/// sources (environment, profile), so `AWS_ENDPOINT_URL`, `AWS_REGION` and `AWS_MAX_ATTEMPTS`
/// work as documented by AWS.
#[derive(Clone, Default)]
pub struct AwsSettings {
    /// Send every request here (moto, LocalStack).
    pub endpoint_url: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Static credentials (access key, secret), for emulators.
    pub credentials: Option<(String, String)>,
    /// Total attempts per call including the first (1 disables retries).
    pub max_attempts: Option<u32>,
    /// The longest one HTTP attempt may take.
    pub attempt_timeout: Option<Duration>,
    /// The longest one call may take, retries included.
    pub operation_timeout: Option<Duration>,
}

impl fmt::Debug for AwsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsSettings")
            .field("endpoint_url", &self.endpoint_url)
            .field("region", &self.region)
            .field("credentials", &self.credentials.as_ref().map(|_| "<static>"))
            .field("max_attempts", &self.max_attempts)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .finish()
    }
}

impl AwsSettings {
    /// Settings for a local emulator at `endpoint_url` with dummy credentials.
    pub fn emulator(endpoint_url: impl Into<String>) -> Self {
        Self {
            endpoint_url: Some(endpoint_url.into()),
            region: Some("us-east-1".into()),
            credentials: Some(("testing".into(), "testing".into())),
            max_attempts: None,
            attempt_timeout: None,
            operation_timeout: None,
        }
    }

    /// Loads an `SdkConfig` with these overrides.
    pub async fn load(&self) -> SdkConfig {
        use aws_smithy_http_client::tls;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
        if let Some(url) = &self.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some(region) = &self.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some((key, secret)) = &self.credentials {
            loader = loader.credentials_provider(aws_credential_types::Credentials::new(
                key,
                secret,
                None,
                None,
                "cutover-static",
            ));
        }
        if let Some(n) = self.max_attempts {
            loader =
                loader.retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(n.max(1)));
        }
        if self.attempt_timeout.is_some() || self.operation_timeout.is_some() {
            // Replacing the timeout configuration drops the SDK's default connect timeout:
            // keep it (3.1 s, as `BehaviorVersion::latest` sets it).
            let mut timeouts =
                aws_config::timeout::TimeoutConfig::builder().connect_timeout(Duration::from_millis(3100));
            if let Some(t) = self.attempt_timeout {
                timeouts = timeouts.operation_attempt_timeout(t);
            }
            if let Some(t) = self.operation_timeout {
                timeouts = timeouts.operation_timeout(t);
            }
            loader = loader.timeout_config(timeouts.build());
        }
        loader.load().await
    }
}

/// Work that outlives the event that started it (an embedded state-machine execution). Hosts
/// [`drain`](Background::drain) it before they exit, so nothing started is cut off.
#[derive(Debug, Clone, Default)]
pub struct Background {
    tasks: Arc<Mutex<tokio::task::JoinSet<()>>>,
}

impl Background {
    /// Runs `future` in the background (needs a Tokio runtime).
    pub fn spawn(&self, future: impl std::future::Future<Output = ()> + Send + 'static) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.spawn(future);
        }
    }

    /// How many tasks have not finished.
    pub fn pending(&self) -> usize {
        self.tasks
            .lock()
            .map(|mut t| {
                while t.try_join_next().is_some() {}
                t.len()
            })
            .unwrap_or(0)
    }

    /// Stops every task where it is (a Tokio abort) and waits for them to go; returns how many
    /// there were. Embedded executions checkpoint each state, so a stopped one resumes from
    /// there in the next process. A [`drain`](Self::drain) in progress is stopped by dropping it.
    pub async fn abort(&self) -> usize {
        let mut tasks = match self.tasks.lock() {
            Ok(mut t) => std::mem::take(&mut *t),
            Err(_) => return 0,
        };
        while tasks.try_join_next().is_some() {}
        let n = tasks.len();
        tasks.shutdown().await;
        n
    }

    /// Waits until every task (including tasks spawned meanwhile) has finished.
    pub async fn drain(&self) {
        loop {
            let mut batch = match self.tasks.lock() {
                Ok(mut t) => std::mem::take(&mut *t),
                Err(_) => return,
            };
            if batch.is_empty() {
                return;
            }
            while let Some(done) = batch.join_next().await {
                if let Err(error) = done {
                    tracing::error!(%error, "a background task failed");
                }
            }
        }
    }
}

/// Shared resources handed to [`StageConfig::build`](crate::StageConfig::build).
#[derive(Debug, Clone)]
pub struct BuildContext {
    aws_settings: AwsSettings,
    aws: Arc<OnceCell<SdkConfig>>,
    clock: Arc<dyn Clock>,
    data_dir: PathBuf,
    base_dir: PathBuf,
    metrics: Metrics,
    background: Background,
    siblings: Option<Arc<Siblings>>,
    building: Arc<[String]>,
    scratch: bool,
}

impl Default for BuildContext {
    fn default() -> Self {
        Self::new(crate::config::DEFAULT_DATA_DIR)
    }
}

impl BuildContext {
    /// A context whose embedded backends keep their files in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            aws_settings: AwsSettings::default(),
            aws: Arc::new(OnceCell::new()),
            clock: Arc::new(SystemClock),
            data_dir: data_dir.into(),
            base_dir: PathBuf::from("."),
            metrics: Metrics::default(),
            background: Background::default(),
            siblings: None,
            building: Arc::from(Vec::new()),
            scratch: false,
        }
    }

    /// Lets stages build the pipelines of this file ([`build_pipeline`](Self::build_pipeline)).
    pub fn with_siblings(mut self, siblings: Siblings) -> Self {
        self.siblings = Some(Arc::new(siblings));
        self
    }

    /// Whether sibling pipelines are known.
    pub fn has_siblings(&self) -> bool {
        self.siblings.is_some()
    }

    /// Builds another pipeline of the same file (a state machine's Task handler, say).
    /// A pipeline that (indirectly) builds itself is an error, not a loop.
    pub fn build_pipeline<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Pipeline, BuildError>> {
        Box::pin(async move {
            let siblings = self.siblings.as_ref().ok_or_else(|| {
                BuildError::Backend(format!("no pipeline file to take pipeline \"{name}\" from"))
            })?;
            let stages = siblings.stages(name).ok_or_else(|| {
                let names: Vec<&str> = siblings.names().collect();
                BuildError::Backend(format!(
                    "{}: no pipeline \"{name}\"; the file has: {}",
                    siblings.file(),
                    names.join(", ")
                ))
            })?;
            if self.building.iter().any(|b| b == name) {
                return Err(BuildError::Backend(format!(
                    "pipeline \"{name}\" refers to itself through {}",
                    self.building.join(" → ")
                )));
            }
            let mut cx = self.clone();
            cx.building = self.building.iter().cloned().chain([name.to_owned()]).collect();
            build_stages(name, stages, &cx).await.map_err(|errors| {
                // Each stage's error keeps its field (`field "probe.url": …`).
                let text: Vec<String> = errors
                    .into_iter()
                    .map(|(i, t, e)| format!("pipeline \"{name}\", stage {i} ({t}): {e}"))
                    .collect();
                BuildError::Backend(text.join("; "))
            })
        })
    }

    /// Work started by stages that outlives its event.
    pub fn background(&self) -> &Background {
        &self.background
    }

    /// Uses these AWS overrides (before the configuration is first loaded).
    pub fn with_aws(mut self, settings: AwsSettings) -> Self {
        self.aws_settings = settings;
        self.aws = Arc::new(OnceCell::new());
        self
    }

    /// Uses this clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Resolves relative paths in stage configurations against `dir` (the pipeline file's).
    pub fn with_base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base_dir = dir.into();
        self
    }

    /// Marks the data directory as scratch: only this process uses it and it is deleted when
    /// the process ends (a `replay` without `--state`), so embedded backends need not sync what
    /// they write there, nor replace files atomically for readers that cannot exist.
    pub fn with_scratch_data(mut self, scratch: bool) -> Self {
        self.scratch = scratch;
        self
    }

    /// Whether the data directory is scratch ([`BuildContext::with_scratch_data`]): when it is,
    /// no write to it needs to survive a crash or be read by another process.
    pub fn data_is_scratch(&self) -> bool {
        self.scratch
    }

    /// Keeps embedded backends' files in `dir`.
    pub fn with_data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = dir.into();
        self
    }

    /// Shares these metrics.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The one shared AWS configuration, loaded on first use.
    pub async fn aws_config(&self) -> &SdkConfig {
        self.aws.get_or_init(|| self.aws_settings.load()).await
    }

    /// The AWS overrides in force.
    pub fn aws_settings(&self) -> &AwsSettings {
        &self.aws_settings
    }

    /// The clock.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// Where embedded backends keep their files.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A path for an embedded backend: relative paths land in the data directory.
    pub fn data_path(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref();
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.data_dir.join(path)
        }
    }

    /// Whether a file configured as `path` (resolved by [`BuildContext::data_path`]) is
    /// scratch: the data directory is ([`BuildContext::data_is_scratch`]) and the path stays
    /// inside it — relative, without `..`. An absolute path, or one that climbs out, names a
    /// file another process may read, kept as durable as ever.
    pub fn is_scratch_path(&self, path: impl AsRef<Path>) -> bool {
        let path = path.as_ref();
        self.scratch
            && path.is_relative()
            && path
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir))
    }

    /// A path named in a pipeline file: relative paths are relative to that file.
    pub fn config_path(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref();
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.base_dir.join(path)
        }
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_clock_sleeps_instantly() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let clock = ManualClock::new(start);
        clock.sleep(Duration::from_secs(60)).await;
        assert_eq!(clock.now(), start + Duration::from_secs(60));
    }

    #[test]
    fn relative_paths_resolve_where_documented() {
        let cx = BuildContext::new("/var/lib/cutover").with_base_dir("/etc/cutover");
        assert_eq!(
            cx.data_path("dedup.db"),
            PathBuf::from("/var/lib/cutover/dedup.db")
        );
        assert_eq!(
            cx.config_path("canary.asl.json"),
            PathBuf::from("/etc/cutover/canary.asl.json")
        );
    }

    #[test]
    fn only_paths_inside_a_scratch_data_directory_are_scratch() {
        let scratch = BuildContext::new("/tmp/replay").with_scratch_data(true);
        for (path, inside) in [
            ("dedup.sqlite", true),
            ("./traffic/www.json", true),
            ("/var/lib/cutover/dedup.sqlite", false),
            ("../shared/w.json", false),
            ("traffic/../../w.json", false),
        ] {
            assert_eq!(scratch.is_scratch_path(path), inside, "{path}");
        }
        let kept = BuildContext::new("/tmp/replay");
        assert!(!kept.is_scratch_path("dedup.sqlite"));
    }

    #[test]
    fn metrics_add_up() {
        let m = Metrics::default();
        m.add("events", &[("pipeline", "p")], 2);
        m.add("events", &[("pipeline", "p")], 1);
        assert_eq!(m.snapshot()[0].value, 3);
    }
}
