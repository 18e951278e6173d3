//! Errors: definition validation problems ([`ValidationErrors`]) and engine
//! failures ([`EngineError`]). A *failed execution* is not an error — it is
//! an [`ExecutionOutcome`](crate::ExecutionOutcome) with status `Failed`.

use std::fmt;

/// One problem in a definition, located by a dotted path such as
/// `States.Check.Choices[0].Next`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// Where: `States.<name>.<field>` (nested machines are prefixed by their
    /// parent state and field).
    pub location: String,
    /// What is wrong.
    pub message: String,
}

/// Every problem found in a definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors {
    /// The problems, in definition order.
    pub errors: Vec<ValidationError>,
}

impl ValidationErrors {
    pub(crate) fn one(location: &str, message: String) -> ValidationErrors {
        ValidationErrors {
            errors: vec![ValidationError {
                location: location.to_string(),
                message,
            }],
        }
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, e) in self.errors.iter().enumerate() {
            if n > 0 {
                writeln!(f)?;
            }
            if e.location.is_empty() {
                write!(f, "{}", e.message)?;
            } else {
                write!(f, "{}: {}", e.location, e.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Why the engine could not run (or finish running) an execution.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// An execution with this id already exists in the store.
    #[error("execution '{0}' already exists")]
    ExecutionAlreadyExists(String),
    /// The execution is already being driven by this engine, a clone of it,
    /// or another process sharing its store.
    #[error("execution '{0}' is already running")]
    AlreadyRunning(String),
    /// No persisted execution has this id.
    #[error("execution '{0}' not found")]
    ExecutionNotFound(String),
    /// The persisted execution points at a state the definition lacks.
    #[error("execution '{id}' cannot resume: state '{state}' is not in the definition")]
    DefinitionMismatch {
        /// The execution.
        id: String,
        /// The missing state.
        state: String,
    },
    /// A resumable engine operation needs an [`ExecutionStore`](crate::ExecutionStore).
    #[error("no execution store is configured")]
    NoStore,
    /// The store failed to save or load.
    #[error("execution store: {0}")]
    Store(String),
    /// A Task handler panicked; the execution is left unfinished (and can be
    /// resumed from its last completed state).
    #[error("task handler for '{resource}' in state '{state}' panicked: {message}")]
    HandlerPanicked {
        /// The state that was running.
        state: String,
        /// The Task resource.
        resource: String,
        /// The panic payload, when it was a string.
        message: String,
    },
    /// The execution was stopped on purpose (a handler returned
    /// [`TaskFailure::interrupt`](crate::TaskFailure::interrupt)); it is left
    /// unfinished and can be resumed.
    #[error("execution interrupted in state '{state}': {reason}")]
    Interrupted {
        /// The state that was running.
        state: String,
        /// Why.
        reason: String,
    },
}
