//! The runtime side of `[services]` (see [`crate::config::Services`]): a stage configured per
//! service hands each event to its service's instance.
//!
//! Which service an event belongs to is, in order: the one in the event's context (put there by
//! an earlier stage); for a filtering stage (one with an event pattern), the first service whose
//! instance passes the event; else the event's `control.service` (a Task payload from the canary,
//! which passes the rollout's control block, service included, to every Task) or `service`. An event that matches no service is
//! dropped with each service's reason; one naming a service the file does not have fails.

use std::sync::Arc;

use serde_json::Value;

use crate::config::SERVICE_CONTEXT;
use crate::event::Event;
use crate::outcome::{Outcome, StageError};
use crate::stage::{BoxFuture, Next, Stage};

/// How many services' reasons a "matches no service" drop spells out.
const REASONS_SHOWN: usize = 3;

/// One built instance of a per-service stage.
#[derive(Debug)]
pub(crate) struct Instance {
    pub(crate) service: String,
    pub(crate) values: Arc<Value>,
    pub(crate) stage: Arc<dyn Stage>,
}

/// A stage configured per service: one built stage per service, each event handed to its own.
#[derive(Debug)]
pub(crate) struct PerService {
    instances: Vec<Instance>,
    /// Whether the stage filters (has an event pattern): then it decides an event's service.
    selects: bool,
}

impl PerService {
    pub(crate) fn new(instances: Vec<Instance>, selects: bool) -> Self {
        Self { instances, selects }
    }

    fn instance(&self, service: &str) -> Option<&Instance> {
        self.instances.iter().find(|i| i.service == service)
    }

    fn known(&self) -> String {
        let names: Vec<&str> = self.instances.iter().map(|i| i.service.as_str()).collect();
        names.join(", ")
    }

    /// The first service whose instance passes the event, or why none does.
    async fn select(&self, event: &Event) -> Result<&Instance, String> {
        let mut why = Vec::with_capacity(self.instances.len());
        for instance in &self.instances {
            match instance.stage.process(event.clone(), Next::end()).await {
                Outcome::Passed { .. } => return Ok(instance),
                Outcome::Dropped { reason, .. } => why.push((instance.service.as_str(), reason)),
                Outcome::Failed { error, .. } => why.push((instance.service.as_str(), error.message)),
            }
        }
        // A condition every service shares (the cluster, the status) is said once.
        if !why.is_empty() && why.iter().all(|(_, r)| *r == why[0].1) {
            return Err(why.swap_remove(0).1);
        }
        // Said of nearly every event a trace holds: written in one go, not formatted.
        let more = why.len().saturating_sub(REASONS_SHOWN);
        why.truncate(REASONS_SHOWN);
        let mut text =
            String::with_capacity(64 + why.iter().map(|(s, r)| s.len() + r.len() + 4).sum::<usize>());
        text.push_str("matches no service (");
        for (i, (service, reason)) in why.iter().enumerate() {
            if i > 0 {
                text.push_str("; ");
            }
            text.push_str(service);
            text.push_str(": ");
            text.push_str(reason);
        }
        text.push(')');
        if more > 0 {
            text.push_str(&format!(" and {more} more"));
        }
        Err(text)
    }
}

/// The service named in the event's context, if an earlier stage decided it.
fn from_context(event: &Event) -> Option<String> {
    let service = event.context().get(SERVICE_CONTEXT)?;
    service.get("name")?.as_str().map(str::to_owned)
}

impl Stage for PerService {
    fn process<'a>(&'a self, mut event: Event, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let named = match from_context(&event) {
                Some(n) => Some(n),
                None if self.selects => None,
                None => match event.json() {
                    Ok(v) => v
                        .pointer("/control/service")
                        .or_else(|| v.get(SERVICE_CONTEXT))
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned),
                    Err(e) => return Outcome::failed(StageError::permanent(e.to_string())),
                },
            };
            let instance = match named {
                Some(name) => match self.instance(&name) {
                    Some(i) => i,
                    None => {
                        return Outcome::failed(StageError::permanent(format!(
                            "the event belongs to service \"{name}\", which is not in the file's \
                             [services] (it has: {})",
                            self.known()
                        )));
                    }
                },
                None if self.selects => match self.select(&event).await {
                    Ok(i) => i,
                    Err(why) => return Outcome::dropped(why),
                },
                None => {
                    return Outcome::failed(StageError::permanent(
                        "this stage is configured per service ({service.…}) but the event names no \
                         service: put a filter before it, or pass the rollout's control block (\"control.$\": \"$.control\") \
                         in the Task's Parameters",
                    ));
                }
            };
            event
                .context_mut()
                .insert(SERVICE_CONTEXT.into(), Value::clone(&instance.values));
            instance.stage.process(event, next).await
        })
    }
}
