//! The stage contracts: [`StageConfig`] (what TOML deserialises into, registered with
//! `typetag`) builds a runtime [`Stage`], an around-middleware over the rest of the chain.
//!
//! A stage receives the event and a [`Next`]: it may add to the event's context and call
//! `next.run(event)`, then observe the outcome of everything after it (dedup marks its key
//! completed or releases it); or it may end the event itself with [`Outcome::dropped`] or
//! [`Outcome::failed`]. This is tower's `Layer` shape; [`StageLayer`] adapts any stage to a
//! real `tower::Layer` so stages compose with tower middleware too.
//!
//! A minimal stage, as a plugin crate would write it:
//!
//! ```
//! use std::sync::Arc;
//! use cutover_core::{BoxFuture, BuildContext, BuildError, Event, Next, Outcome, Stage, StageConfig};
//! use serde::{Deserialize, Serialize};
//!
//! /// Adds `team = "…"` to the context.
//! #[derive(Debug, Serialize, Deserialize)]
//! #[serde(deny_unknown_fields)]
//! pub struct TeamConfig {
//!     /// The team that owns the service.
//!     pub team: String,
//! }
//!
//! #[typetag::serde(name = "doc-team")]
//! impl StageConfig for TeamConfig {
//!     fn build<'a>(&'a self, _cx: &'a BuildContext) -> BoxFuture<'a, Result<Arc<dyn Stage>, BuildError>> {
//!         Box::pin(async move { Ok(Arc::new(Team(self.team.clone())) as Arc<dyn Stage>) })
//!     }
//! }
//!
//! #[derive(Debug)]
//! struct Team(String);
//!
//! impl Stage for Team {
//!     fn process<'a>(&'a self, mut event: Event, next: Next<'a>) -> BoxFuture<'a, Outcome> {
//!         event.context_mut().insert("team".into(), self.0.clone().into());
//!         Box::pin(next.run(event))
//!     }
//! }
//! cutover_core::register_stage!("doc-team", "Adds the owning team to the context.");
//! ```

use std::borrow::Cow;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

use crate::context::BuildContext;
use crate::deploy::{DeployContext, Deployment};
use crate::error::{BuildError, FieldError};
use crate::event::Event;
use crate::outcome::Outcome;

/// A boxed, sendable future (the shape every stage method returns).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A runtime stage: an around-middleware over the rest of the chain.
pub trait Stage: Send + Sync + fmt::Debug {
    /// Handles one event; call `next.run(event)` to continue the chain.
    fn process<'a>(&'a self, event: Event, next: Next<'a>) -> BoxFuture<'a, Outcome>;

    /// A verdict from what the event holds (its bytes, its context), for a stage that drops
    /// most events before looking further (a filter: its prefilters): `Some(reason)` promises
    /// that [`process`](Self::process) would drop this event with exactly this reason, with no
    /// side effect and without running the rest of the chain. A
    /// [`Pipeline`](crate::Pipeline) asks its first stage that is not
    /// [transparent to drops](Self::transparent_to_drops) before running the chain, so an event
    /// ruled out costs no chain call; a stage configured per service asks a service's stage
    /// before handing that service a copy. It must be cheap (no parse, no I/O): it runs for
    /// every event. The default, `None`, promises nothing.
    fn rules_out(&self, _event: &Event) -> Option<Cow<'_, str>> {
        None
    }

    /// Whether [`rules_out`](Self::rules_out) answers `Some` for `event`, for a host that only
    /// counts drops and needs no reason ([`Batch::rules_out`](crate::Batch::rules_out)). The
    /// default asks `rules_out`; a stage whose reason costs something to build (a joint reason
    /// of several services) answers without building it. It must agree with `rules_out`.
    fn is_ruled_out(&self, event: &Event) -> bool {
        self.rules_out(event).is_some()
    }

    /// Whether this stage is transparent to an event a later stage drops: it hands every event
    /// on unchanged (`next.run(event)`, nothing added to its context) and, when the outcome is
    /// a drop, returns it as it is with no other effect — nothing written, counted or sent (a
    /// notifier not configured for drops). A pipeline then decides such a drop with the later
    /// stage's [`rules_out`](Self::rules_out) without calling this one. The default, `false`,
    /// is always right.
    fn transparent_to_drops(&self) -> bool {
        false
    }
}

/// A configuration seen as [`Any`](std::any::Any), to downcast to its concrete type.
/// Implemented for every `'static` type.
pub trait AsAny {
    /// `self` as `&dyn Any`.
    fn as_any(&self) -> &dyn std::any::Any;
}

impl<T: std::any::Any> AsAny for T {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// The configuration of a stage, as written in a pipeline file.
///
/// Every configuration is also [`AsAny`], so a host that knows a stage's type can read its
/// typed configuration from a loaded file (`spec.config.as_any().downcast_ref::<T>()`).
///
/// Implementations are registered with `#[typetag::serde(name = "…")]` and
/// [`register_stage!`](crate::register_stage); use `#[serde(deny_unknown_fields)]` and a `///`
/// doc on every field — those docs are the user reference.
#[typetag::serde(tag = "type")]
pub trait StageConfig: AsAny + fmt::Debug + Send + Sync {
    /// Builds the runtime stage. Build everything expensive here (clients, compiled patterns),
    /// not per event.
    fn build<'a>(&'a self, cx: &'a BuildContext) -> BoxFuture<'a, Result<Arc<dyn Stage>, BuildError>>;

    /// Checks beyond what deserialisation checks (templates, ranges, files, references), all
    /// problems at once. The default finds none.
    fn validate(&self, _cx: &ValidateContext<'_>) -> Vec<FieldError> {
        Vec::new()
    }

    /// The EventBridge event pattern this stage requires of events, if it is a filter:
    /// `cutover rule` ANDs these into the rule that triggers the pipeline.
    fn event_pattern(&self) -> Option<serde_json::Value> {
        None
    }

    /// Conditions this stage checks that its [`event_pattern`](Self::event_pattern) cannot
    /// express (e.g. ECS resource tags, which events do not carry), for `cutover rule` to say.
    fn checks_beyond_pattern(&self) -> Vec<String> {
        Vec::new()
    }

    /// What this stage adds to the AWS stack `cutover template` generates: resources,
    /// parameters, outputs, the IAM permissions of its function's role, and environment
    /// variables of the function (see [`crate::deploy`]). An error (naming the field and what to
    /// change) means the stage as configured cannot run in Lambda, e.g. an embedded-only backend.
    /// The default adds nothing: right for a stage that calls no AWS API and keeps no state.
    fn deployment(&self, _cx: &DeployContext<'_>) -> Result<Deployment, FieldError> {
        Ok(Deployment::default())
    }

    /// What this configuration takes exclusive charge of, as stable names (a DNS record, a
    /// listener, a target group): the loader refuses two services' configurations claiming the
    /// same one, since their rollouts would shift each other's traffic. The default: nothing.
    fn claims(&self) -> Vec<String> {
        Vec::new()
    }

    /// Files this stage reads when it is loaded or run (a state-machine definition, a CA file),
    /// as the configuration names them: relative to the pipeline file. `cutover package`
    /// puts them in the Lambda zip beside the pipeline file. The default: none.
    fn files(&self) -> Vec<std::path::PathBuf> {
        Vec::new()
    }
}

/// What [`StageConfig::validate`] may consult.
#[derive(Debug, Clone, Copy)]
pub struct ValidateContext<'a> {
    /// Directory of the pipeline file (relative paths in a stage are resolved against it).
    pub base_dir: &'a std::path::Path,
    /// Names of every pipeline in the same file.
    pub pipelines: &'a [String],
}

/// The rest of the chain after the current stage.
#[derive(Debug)]
pub struct Next<'a> {
    inner: NextInner<'a>,
}

enum NextInner<'a> {
    Chain {
        stages: &'a [Arc<dyn Stage>],
        names: &'a [String],
    },
    Service(BoxCloneSyncService<Event, Outcome, Infallible>),
}

impl fmt::Debug for NextInner<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NextInner::Chain { names, .. } => f.debug_struct("Chain").field("stages", names).finish(),
            NextInner::Service(_) => f.write_str("Service"),
        }
    }
}

impl<'a> Next<'a> {
    /// The chain made of `stages` (named by `names`, the same length).
    pub(crate) fn chain(stages: &'a [Arc<dyn Stage>], names: &'a [String]) -> Self {
        Self {
            inner: NextInner::Chain { stages, names },
        }
    }

    /// The end of a chain: every event passes with its context.
    pub fn end() -> Next<'static> {
        Next {
            inner: NextInner::Chain {
                stages: &[],
                names: &[],
            },
        }
    }

    /// A `Next` that hands the event to a tower service.
    pub fn service(service: BoxCloneSyncService<Event, Outcome, Infallible>) -> Next<'static> {
        Next {
            inner: NextInner::Service(service),
        }
    }

    /// Runs the rest of the chain.
    pub async fn run(self, event: Event) -> Outcome {
        match self.inner {
            NextInner::Chain { stages, names } => match (stages.split_first(), names.split_first()) {
                (Some((stage, rest)), Some((name, rest_names))) => stage
                    .process(event, Next::chain(rest, rest_names))
                    .await
                    .attribute_to(name),
                _ => Outcome::Passed {
                    context: event.into_context(),
                },
            },
            NextInner::Service(svc) => match svc.oneshot(event).await {
                Ok(outcome) => outcome,
                Err(never) => match never {},
            },
        }
    }
}

/// A stage as a real `tower::Layer`: wrap any service of events with it.
#[derive(Debug, Clone)]
pub struct StageLayer {
    stage: Arc<dyn Stage>,
    name: Arc<str>,
}

impl StageLayer {
    /// Wraps `stage`, naming it `name` in outcomes.
    pub fn new(name: impl Into<Arc<str>>, stage: Arc<dyn Stage>) -> Self {
        Self {
            stage,
            name: name.into(),
        }
    }
}

impl<S> Layer<S> for StageLayer
where
    S: Service<Event, Response = Outcome, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    type Service = StageService;

    fn layer(&self, inner: S) -> Self::Service {
        StageService {
            stage: self.stage.clone(),
            name: self.name.clone(),
            inner: BoxCloneSyncService::new(inner),
        }
    }
}

/// The service [`StageLayer`] makes.
#[derive(Debug, Clone)]
pub struct StageService {
    stage: Arc<dyn Stage>,
    name: Arc<str>,
    inner: BoxCloneSyncService<Event, Outcome, Infallible>,
}

impl Service<Event> for StageService {
    type Response = Outcome;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Outcome, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, event: Event) -> Self::Future {
        let stage = self.stage.clone();
        let name = self.name.clone();
        let inner = self.inner.clone();
        Box::pin(async move {
            Ok(stage
                .process(event, Next::service(inner))
                .await
                .attribute_to(&name))
        })
    }
}

/// A registered stage type, for `cutover stages` and for error messages.
#[derive(Debug)]
pub struct StageInfo {
    /// The `type` written in TOML.
    pub name: &'static str,
    /// One line saying what it does.
    pub summary: &'static str,
    /// The crate that provides it.
    pub provider: &'static str,
    /// Whether the stage renders its `{…}` placeholders per event (a notify message, an
    /// execution input, a dedup key): then `{service.…}` in its table is read from the event's
    /// service when it runs, and the loader keeps one configuration for all services instead
    /// of one per service (see [`crate::config::Services`]).
    pub per_event_templates: bool,
}

inventory::collect!(StageInfo);

/// Registers a stage type's name and one-line doc (next to its `#[typetag::serde]` impl).
/// Add `per_event_templates` when the stage renders its placeholders per event
/// ([`StageInfo::per_event_templates`]).
#[macro_export]
macro_rules! register_stage {
    ($name:literal, $summary:literal) => {
        $crate::inventory::submit! {
            $crate::StageInfo {
                name: $name,
                summary: $summary,
                provider: env!("CARGO_PKG_NAME"),
                per_event_templates: false,
            }
        }
    };
    ($name:literal, $summary:literal, per_event_templates) => {
        $crate::inventory::submit! {
            $crate::StageInfo {
                name: $name,
                summary: $summary,
                provider: env!("CARGO_PKG_NAME"),
                per_event_templates: true,
            }
        }
    };
}

/// Every stage type linked into this program, sorted by name.
pub fn registered_stages() -> Vec<&'static StageInfo> {
    let mut all: Vec<_> = inventory::iter::<StageInfo>.into_iter().collect();
    all.sort_by_key(|i| i.name);
    all
}

/// The stage type names typetag knows (the ones TOML can use), sorted. Tests compare this with
/// [`registered_stages`] so a stage cannot be usable but undocumented, or the reverse.
pub fn typetag_names() -> Vec<String> {
    let probe = serde_json::json!({"type": "\u{1}probe"});
    let err = match serde_json::from_value::<Box<dyn StageConfig>>(probe) {
        Ok(_) => return Vec::new(),
        Err(e) => e.to_string(),
    };
    // serde's unknown_variant lists the names: "expected `a`", "expected `a` or `b`",
    // "expected one of `a`, `b`, `c`".
    let Some((_, list)) = err.split_once("expected ") else {
        return Vec::new();
    };
    let list = list.strip_prefix("one of ").unwrap_or(list);
    let mut names: Vec<String> = list
        .split(", ")
        .flat_map(|part| part.split(" or "))
        .map(|s| s.trim().trim_matches('`').to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug)]
    struct Tag(&'static str);

    impl Stage for Tag {
        fn process<'a>(&'a self, mut event: Event, next: Next<'a>) -> BoxFuture<'a, Outcome> {
            event.context_mut().insert(self.0.into(), json!(true));
            Box::pin(next.run(event))
        }
    }

    #[derive(Debug)]
    struct DropAll;

    impl Stage for DropAll {
        fn process<'a>(&'a self, _event: Event, _next: Next<'a>) -> BoxFuture<'a, Outcome> {
            Box::pin(async { Outcome::dropped("not today") })
        }
    }

    #[tokio::test]
    async fn chain_accumulates_context_and_names_the_dropping_stage() {
        let stages: Vec<Arc<dyn Stage>> = vec![Arc::new(Tag("a")), Arc::new(Tag("b"))];
        let names = vec!["first".to_owned(), "second".to_owned()];
        let out = Next::chain(&stages, &names)
            .run(Event::from_bytes(b"{}".to_vec()))
            .await;
        assert_eq!(
            out,
            Outcome::Passed {
                context: json!({"a": true, "b": true}).as_object().unwrap().clone()
            }
        );

        let stages: Vec<Arc<dyn Stage>> = vec![Arc::new(Tag("a")), Arc::new(DropAll)];
        let out = Next::chain(&stages, &names)
            .run(Event::from_bytes(b"{}".to_vec()))
            .await;
        assert_eq!(out.stage(), Some("second"));
    }

    #[tokio::test]
    async fn stage_layer_composes_with_tower() {
        let end = tower::service_fn(|e: Event| async move {
            Ok::<_, Infallible>(Outcome::Passed {
                context: e.into_context(),
            })
        });
        let svc = StageLayer::new("tagger", Arc::new(Tag("t"))).layer(end);
        let out = svc.oneshot(Event::from_bytes(b"{}".to_vec())).await.unwrap();
        assert!(out.is_passed());
        let svc = StageLayer::new("dropper", Arc::new(DropAll)).layer(svc_end());
        assert_eq!(
            svc.oneshot(Event::from_bytes(b"{}".to_vec()))
                .await
                .unwrap()
                .stage(),
            Some("dropper")
        );
    }

    fn svc_end() -> BoxCloneSyncService<Event, Outcome, Infallible> {
        BoxCloneSyncService::new(tower::service_fn(|_e: Event| async {
            Ok::<_, Infallible>(Outcome::Passed {
                context: Default::default(),
            })
        }))
    }
}
