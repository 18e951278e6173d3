//! Errors of loading, validating and building pipelines.
//!
//! Loading collects problems instead of stopping at the first: every [`LoadError`] names the
//! file, and where it applies the pipeline, the stage (1-based index and type) and the field.

use std::fmt;

/// A problem with one field of a stage's configuration, found by
/// [`StageConfig::validate`](crate::StageConfig::validate) or while building.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field, as a dotted path inside the stage (`store.table`); empty for the whole stage.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl FieldError {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::error::Error for FieldError {}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "field \"{}\": {}", self.field, self.message)
        }
    }
}

/// Why a stage could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A field's value cannot work.
    #[error("{0}")]
    Field(FieldError),
    /// A backend could not be set up (file, socket, AWS configuration).
    #[error("{0}")]
    Backend(String),
}

impl BuildError {
    /// A problem with one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        BuildError::Field(FieldError::new(field, message))
    }
}

/// One problem found while loading, validating or building a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// The file (as given by the user).
    pub file: String,
    /// The pipeline, if the problem is inside one.
    pub pipeline: Option<String>,
    /// The stage's 1-based index and type, if the problem is inside one.
    pub stage: Option<(usize, String)>,
    /// The field, if known.
    pub field: Option<String>,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.file)?;
        if let Some(p) = &self.pipeline {
            write!(f, " pipeline \"{p}\",")?;
        }
        if let Some((i, ty)) = &self.stage {
            write!(f, " stage {i} ({ty}):")?;
        }
        match &self.field {
            Some(field) if !self.message.contains(&format!("\"{field}\"")) => {
                write!(f, " field \"{field}\": {}", self.message)
            }
            _ => write!(f, " {}", self.message),
        }
    }
}

/// Every problem found in one or more pipeline files.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoadErrors(pub Vec<LoadError>);

/// A pipeline that cannot be chosen from a loaded file, or a file whose pipeline has no single
/// EventBridge rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// The name matches no pipeline.
    #[error("{file}: no pipeline \"{name}\"; the file has: {}", .names.join(", "))]
    Unknown {
        /// The file.
        file: String,
        /// The name asked for.
        name: String,
        /// The file's pipelines.
        names: Vec<String>,
    },
    /// `settings.default_pipeline` matches no pipeline.
    #[error("{file}: settings.default_pipeline names no pipeline \"{name}\"; the file has: {}", .names.join(", "))]
    UnknownDefault {
        /// The file.
        file: String,
        /// The default named.
        name: String,
        /// The file's pipelines.
        names: Vec<String>,
    },
    /// No name was given and the file has several pipelines.
    #[error("{file}: the file has several pipelines ({}); choose one with --pipeline", .names.join(", "))]
    Ambiguous {
        /// The file.
        file: String,
        /// The file's pipelines.
        names: Vec<String>,
    },
    /// Two filtering stages constrain one field of the event pattern.
    #[error(
        "stage \"{stage}\" constrains \"{path}\", which an earlier stage already constrains; \
         an EventBridge rule can hold one condition per field"
    )]
    PatternConflict {
        /// The later stage.
        stage: String,
        /// The field both constrain (`detail.lastStatus`).
        path: String,
    },
}

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_file_pipeline_stage_and_field() {
        let e = LoadError {
            file: "pipelines/x.toml".into(),
            pipeline: Some("ecs-events".into()),
            stage: Some((2, "dedup".into())),
            field: Some("ttl".into()),
            message: "invalid type: string \"x\", expected a duration".into(),
        };
        assert_eq!(
            e.to_string(),
            "pipelines/x.toml: pipeline \"ecs-events\", stage 2 (dedup): field \"ttl\": invalid type: string \"x\", expected a duration"
        );
    }
}
