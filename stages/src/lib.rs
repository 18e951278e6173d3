//! cutover's built-in stages, each in its own module with its AWS and embedded backends.
//!
//! Linking this crate registers the stage types with `typetag`; binaries call [`link`] so the
//! linker keeps the registrations even when no other item is named.

/// Keeps this crate's stage registrations in a binary.
pub fn link() {}
