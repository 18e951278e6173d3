//! `health-check` (in progress).
