//! The runtime side of `[services]` (see [`crate::config::Services`]): a stage configured per
//! service hands each event to its service's instance.
//!
//! Which service an event belongs to is, in order: the one in the event's context (put there by
//! an earlier stage); for a filtering stage (one with an event pattern), the first service whose
//! instance passes the event; else the event's `control.service` (a Task payload from the canary,
//! which passes the rollout's control block, service included, to every Task) or `service`. An event that matches no service is
//! dropped with each service's reason; one naming a service the file does not have fails.

use std::borrow::Cow;
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

    /// The first service whose instance passes the event, or why none does. A service whose
    /// stage [rules the event out](Stage::rules_out) is not handed a copy.
    async fn select(&self, event: &Event) -> Result<&Instance, String> {
        let mut why: Vec<(&str, Cow<'_, str>)> = Vec::with_capacity(self.instances.len());
        for instance in &self.instances {
            if let Some(reason) = instance.stage.rules_out(event) {
                why.push((&instance.service, reason));
                continue;
            }
            match instance.stage.process(event.clone(), Next::end()).await {
                Outcome::Passed { .. } => return Ok(instance),
                Outcome::Dropped { reason, .. } => why.push((&instance.service, reason.into())),
                Outcome::Failed { error, .. } => why.push((&instance.service, error.message.into())),
            }
        }
        Err(no_service(why).into_owned())
    }

    /// The service an earlier stage put in the event's context, or none.
    fn named_in_context(&self, event: &Event) -> Result<Option<&Instance>, ()> {
        match from_context(event) {
            Some(name) => self.instance(&name).map(Some).ok_or(()),
            None => Ok(None),
        }
    }
}

/// Why an event matches no service, from each service's reason: a condition every service
/// shares (the cluster, the status) is said once.
fn no_service<'a>(mut why: Vec<(&str, Cow<'a, str>)>) -> Cow<'a, str> {
    if !why.is_empty() && why.iter().all(|(_, r)| *r == why[0].1) {
        return why.swap_remove(0).1;
    }
    // Said of nearly every event a trace holds: written in one go, not formatted.
    let more = why.len().saturating_sub(REASONS_SHOWN);
    why.truncate(REASONS_SHOWN);
    let mut text = String::with_capacity(64 + why.iter().map(|(s, r)| s.len() + r.len() + 4).sum::<usize>());
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
    Cow::Owned(text)
}

/// The service named in the event's context, if an earlier stage decided it.
fn from_context(event: &Event) -> Option<String> {
    let service = event.context().get(SERVICE_CONTEXT)?;
    service.get("name")?.as_str().map(str::to_owned)
}

impl Stage for PerService {
    /// Ruled out when the event's own service's stage rules it out or, for a filtering stage
    /// deciding the service, when every service's stage does: the reason `process` would give.
    fn rules_out(&self, event: &Event) -> Option<Cow<'_, str>> {
        match self.named_in_context(event) {
            Ok(Some(instance)) => return instance.stage.rules_out(event),
            // An unknown service fails in `process`; a stage that does not filter finds the
            // service in the event itself (a Task payload), which is not judged here.
            Err(()) => return None,
            Ok(None) if !self.selects => return None,
            Ok(None) => {}
        }
        let mut why = Vec::with_capacity(self.instances.len());
        for instance in &self.instances {
            why.push((instance.service.as_str(), instance.stage.rules_out(event)?));
        }
        Some(no_service(why))
    }

    fn is_ruled_out(&self, event: &Event) -> bool {
        // As `rules_out`, without the joint reason (nearly every event of a trace).
        match self.named_in_context(event) {
            Ok(Some(instance)) => instance.stage.is_ruled_out(event),
            Err(()) => false,
            Ok(None) if !self.selects => false,
            Ok(None) => self.instances.iter().all(|i| i.stage.is_ruled_out(event)),
        }
    }

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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::json;

    use super::*;

    /// A filter of one service: passes events whose bytes hold `needle` (and says so from the
    /// bytes when `from_bytes`); counts the events handed to it.
    #[derive(Debug)]
    struct Needle {
        needle: &'static str,
        from_bytes: bool,
        processed: AtomicUsize,
    }

    impl Needle {
        fn reason(&self, event: &Event) -> Option<String> {
            let text = String::from_utf8_lossy(event.raw());
            if !text.contains("\"cluster\"") {
                return Some("not the cluster".into());
            }
            (!text.contains(self.needle)).then(|| format!("no {}", self.needle))
        }
    }

    impl Stage for Needle {
        fn rules_out(&self, event: &Event) -> Option<Cow<'_, str>> {
            self.from_bytes
                .then(|| self.reason(event))
                .flatten()
                .map(Cow::Owned)
        }

        fn process<'a>(&'a self, event: Event, next: Next<'a>) -> BoxFuture<'a, Outcome> {
            self.processed.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                match self.reason(&event) {
                    Some(reason) => Outcome::dropped(reason),
                    None => next.run(event).await,
                }
            })
        }
    }

    fn per_service(from_bytes: bool) -> (PerService, Vec<Arc<Needle>>) {
        let needles: Vec<Arc<Needle>> = ["cats", "dogs", "owls", "eels"]
            .into_iter()
            .map(|needle| {
                Arc::new(Needle {
                    needle,
                    from_bytes,
                    processed: AtomicUsize::new(0),
                })
            })
            .collect();
        let instances = needles
            .iter()
            .map(|n| Instance {
                service: n.needle.to_owned(),
                values: Arc::new(json!({ "name": n.needle })),
                stage: n.clone() as Arc<dyn Stage>,
            })
            .collect();
        (PerService::new(instances, true), needles)
    }

    #[tokio::test]
    async fn ruling_out_agrees_with_processing_and_spares_the_services_their_copies() {
        let events: [&[u8]; 4] = [
            br#"{"cluster":1,"x":"dogs"}"#,
            br#"{"cluster":1,"x":"bats"}"#,
            br#"{"other":1}"#,
            br#"{"cluster":1,"x":"eels"}"#,
        ];
        let (judged, _) = per_service(true);
        let (processed, needles) = per_service(false);
        for bytes in events {
            let event = Event::from_bytes(bytes.to_vec());
            let slow = processed.process(event.clone(), Next::end()).await;
            let quick = judged.rules_out(&event);
            assert_eq!(judged.is_ruled_out(&event), quick.is_some(), "{slow:?}");
            assert!(!processed.is_ruled_out(&event), "its stages promise nothing");
            match &slow {
                Outcome::Dropped { reason, .. } => assert_eq!(quick.as_deref(), Some(reason.as_str())),
                _ => assert_eq!(quick, None, "{slow:?}"),
            }
            assert_eq!(judged.process(event, Next::end()).await, slow);
        }
        // A reason every service shares is said once; different ones are spelled out.
        let event = Event::from_bytes(br#"{"other":1}"#.to_vec());
        assert_eq!(judged.rules_out(&event).as_deref(), Some("not the cluster"));
        let event = Event::from_bytes(br#"{"cluster":1}"#.to_vec());
        assert_eq!(
            judged.rules_out(&event).as_deref(),
            Some("matches no service (cats: no cats; dogs: no dogs; owls: no owls) and 1 more")
        );
        // Without `rules_out`, every service's stage is handed each event it does not pass on.
        assert!(needles.iter().all(|n| n.processed.load(Ordering::SeqCst) >= 3));

        // A filter that rules events out from their bytes is handed only the others (twice:
        // once to choose the service, once to run it): "dogs" the first event, "eels" the last
        // (the three others ruled it out), no service's stage any event that matches none.
        let (judged, needles) = per_service(true);
        for bytes in events {
            judged
                .process(Event::from_bytes(bytes.to_vec()), Next::end())
                .await;
        }
        let handed: Vec<usize> = needles
            .iter()
            .map(|n| n.processed.load(Ordering::SeqCst))
            .collect();
        assert_eq!(handed, [0, 2, 0, 2]);
    }

    #[tokio::test]
    async fn an_event_of_a_named_service_is_judged_by_that_service_alone() {
        let (judged, _) = per_service(true);
        let mut event = Event::from_bytes(br#"{"cluster":1,"x":"dogs"}"#.to_vec());
        event
            .context_mut()
            .insert(SERVICE_CONTEXT.into(), json!({"name": "cats"}));
        assert_eq!(judged.rules_out(&event).as_deref(), Some("no cats"));
        assert!(judged.is_ruled_out(&event));
        assert_eq!(
            judged.process(event.clone(), Next::end()).await,
            Outcome::dropped("no cats")
        );
        // A service the file does not have is not ruled out: processing fails it, saying so.
        event
            .context_mut()
            .insert(SERVICE_CONTEXT.into(), json!({"name": "bats"}));
        assert_eq!(judged.rules_out(&event), None);
        assert!(!judged.is_ruled_out(&event));
        assert!(matches!(
            judged.process(event, Next::end()).await,
            Outcome::Failed { .. }
        ));
    }
}
