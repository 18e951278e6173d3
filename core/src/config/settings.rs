//! `[settings]`: file-wide settings, and reading them from the loaded table.

use std::path::PathBuf;

use serde_json::Value;

use super::load::Problems;

/// Where embedded backends keep their files when `settings.data_dir` is not set (relative to the
/// working directory).
pub const DEFAULT_DATA_DIR: &str = ".cutover";

/// File-wide settings (`[settings]`).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Where embedded backends keep their files (default [`DEFAULT_DATA_DIR`], relative to the
    /// working directory).
    pub data_dir: Option<PathBuf>,
    /// The pipeline commands run when none is named (default: the only one).
    pub default_pipeline: Option<String>,
    /// `[settings.aws]`: how long AWS calls may take and how often they are tried.
    pub aws: AwsCalls,
}

/// `[settings.aws]`: limits on every AWS call the file's stages and hosts make, so a hung
/// connection or a throttled API cannot stall a rollout step for ever. Each call is retried by
/// the SDK's standard mode (exponential backoff with jitter) on throttling, 5xx, timeouts and
/// connection errors; the stages make the retried writes safe (owner-guarded, idempotent names).
///
/// ```toml
/// [settings.aws]
/// attempt_timeout = "10s"     # one HTTP attempt, connect to last byte
/// operation_timeout = "60s"   # one call, all its attempts and backoff included
/// max_attempts = 5            # attempts per call (default: AWS_MAX_ATTEMPTS, else 3)
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsCalls {
    /// The longest one HTTP attempt may take before it is abandoned (and retried).
    #[serde(default = "default_attempt_timeout", with = "crate::duration")]
    pub attempt_timeout: std::time::Duration,
    /// The longest one call may take, all its attempts and backoff included.
    #[serde(default = "default_operation_timeout", with = "crate::duration")]
    pub operation_timeout: std::time::Duration,
    /// Attempts per call; unset: `AWS_MAX_ATTEMPTS`, else the SDK's 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
}

impl Default for AwsCalls {
    fn default() -> Self {
        Self {
            attempt_timeout: default_attempt_timeout(),
            operation_timeout: default_operation_timeout(),
            max_attempts: None,
        }
    }
}

fn default_attempt_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}
fn default_operation_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(60)
}

impl Settings {
    /// The data directory: `data_dir`, else [`DEFAULT_DATA_DIR`].
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
    }
}

/// Reads `[settings]`, reporting each bad or unknown key.
pub(super) fn parse(value: Value, problems: &mut Problems<'_>) -> Settings {
    let mut settings = Settings::default();
    let Value::Object(mut s) = value else {
        problems.file(Some("settings"), "expected a table [settings]");
        return settings;
    };
    match s.shift_remove("data_dir") {
        Some(Value::String(d)) => settings.data_dir = Some(PathBuf::from(d)),
        Some(other) => problems.file(
            Some("settings.data_dir"),
            format!("expected a path string, found {other}"),
        ),
        None => {}
    }
    match s.shift_remove("default_pipeline") {
        Some(Value::String(d)) => settings.default_pipeline = Some(d),
        Some(other) => problems.file(
            Some("settings.default_pipeline"),
            format!("expected a pipeline name, found {other}"),
        ),
        None => {}
    }
    if let Some(aws) = s.shift_remove("aws") {
        match serde_path_to_error::deserialize::<_, AwsCalls>(aws) {
            Ok(aws) => settings.aws = aws,
            Err(e) => {
                let field = super::load::field_below("settings.aws", &e);
                problems.file(Some(&field), e.into_inner().to_string());
            }
        }
    }
    for k in s.keys() {
        problems.file(
            None,
            format!(
                "unknown setting \"{k}\" in [settings], expected one of: data_dir, default_pipeline, aws"
            ),
        );
    }
    settings
}
