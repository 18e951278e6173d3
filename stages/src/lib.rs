//! cutover's built-in stages, each in its own module with its AWS and embedded backends.
//!
//! Linking this crate registers the stage types with `typetag`; binaries call [`link`] so the
//! linker keeps the registrations even when no other item is named.
//!
//! | type | module | what it does |
//! | --- | --- | --- |
//! | `dedup` | [`dedup`] | lets exactly one event per key (deployment) through, with conditional writes |
//! | `filter` | [`filter`] | passes only green tasks that reached RUNNING; compiles to the EventBridge rule |
//! | `start-state-machine` | [`state_machine`] | starts one canary execution (Step Functions or the embedded ASL engine) |
//! | `health-check` | [`health_check`] | probes green (HTTP, ELBv2 target health) and reports `healthy`/`unhealthy` |
//! | `traffic-shift` | [`traffic_shift`] | sets blue/green weights (Route 53, embedded weighted DNS) and verifies them |

mod aws;
pub mod dedup;
pub mod ecs_hook;
mod error;
mod fields;
#[cfg(test)]
mod test_support;
use cutover_core::duration;
pub mod filter;
pub mod health_check;
pub mod rollouts;
pub mod state_machine;
pub mod traffic_shift;
pub mod webhook_notify;

pub use error::Error;

/// Keeps this crate's stage registrations in a binary.
pub fn link() {}
