//! Errors of the built-in stages' public functions that run outside a pipeline (store setup,
//! table creation, pattern compilation). Inside a pipeline, stages report
//! [`StageError`](cutover_core::StageError)s and [`BuildError`](cutover_core::BuildError)s.

use std::path::PathBuf;

/// What went wrong, with the file, table or option it concerns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A directory for a store's file could not be created.
    #[error("cannot create {}: {error}", .path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The embedded dedup store could not be opened or set up.
    #[error("cannot {action} {}: {error}", .path.display())]
    Sqlite {
        /// What was being done: `open`, `set up the dedup table in`.
        action: &'static str,
        /// The store's file.
        path: PathBuf,
        /// Why.
        error: rusqlite::Error,
    },
    /// An AWS call failed (the message names the operation).
    #[error("{0}")]
    Aws(String),
    /// Two filter options constrain one field of the event pattern.
    #[error(
        "{option} and another option both constrain \"{path}\"; set it in one place (an empty list \
         switches a defaulted option off)"
    )]
    PatternConflict {
        /// The later option.
        option: String,
        /// The field both constrain.
        path: String,
    },
}
