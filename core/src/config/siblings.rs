//! The pipelines of one file, handed to stages that build a sibling pipeline
//! ([`BuildContext::build_pipeline`](crate::BuildContext::build_pipeline)).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{PipelineSpec, StageSpec};

/// The pipelines of one file with their typed stage configurations (shared, not re-parsed).
#[derive(Debug, Clone, Default)]
pub struct Siblings {
    file: String,
    pipelines: BTreeMap<String, Arc<[StageSpec]>>,
}

impl Siblings {
    /// The pipelines of the file `file`.
    pub fn new(file: &str, pipelines: &[PipelineSpec]) -> Self {
        Self {
            file: file.to_owned(),
            pipelines: pipelines
                .iter()
                .map(|p| (p.name.clone(), Arc::from(p.stages.as_slice())))
                .collect(),
        }
    }

    /// The pipeline names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.pipelines.keys().map(String::as_str)
    }

    /// The stages of the pipeline `name`.
    pub fn stages(&self, name: &str) -> Option<&[StageSpec]> {
        self.pipelines.get(name).map(|s| &s[..])
    }

    /// The file they come from, as the user named it.
    pub fn file(&self) -> &str {
        &self.file
    }
}
