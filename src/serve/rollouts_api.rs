//! The daemon's rollout operations API, authenticated like `POST /events` and audited like the
//! `cutover rollouts` commands:
//!
//! - `GET /rollouts` (`?all=true`: ended ones too) — `{"rollouts": [ … ]}`
//! - `GET /rollouts/{id}` — one rollout (`id`: execution name, ARN, unique prefix or part)
//! - `GET /rollouts/{id}/history` — `{"rollout": …, "history": [ … ]}`
//! - `GET /rollouts/{id}/definition` — `{"definition": …}`: the state machine it runs (the
//!   dashboard draws it)
//! - `POST /rollouts/{id}/{abort|promote|pause|resume|retry}` with `{"reason": "…"}`
//!   (`"full": true` with promote: straight to 100%) — `{"rollout", "action", "audit"}`; the
//!   body must be declared `content-type: application/json` (415 otherwise): an HTML form of
//!   another site cannot send that type without the browser asking this server first (CORS,
//!   which it never allows), so a page elsewhere cannot steer a rollout (CSRF); no cookie is
//!   ever read.
//!
//! Errors are `{"error": "…"}`: 404 for an unknown rollout or route, 409 for an action the
//! rollout's state refuses (ended, not waiting, ambiguous id), 400 for a bad request, 503 when
//! the store cannot be reached.

use cutover_stages::rollouts::Action;
use cutover_stages::rollouts::ops::{OpsError, Rollouts};
use http::StatusCode;
use serde_json::{Value, json};

/// What a request to `/rollouts…` asks for.
#[derive(Debug, PartialEq)]
pub(crate) enum Call<'a> {
    List { all: bool },
    Status(&'a str),
    History(&'a str),
    Definition(&'a str),
    Act(&'a str, &'a str),
}

/// Reads the route of a `/rollouts…` request; `None` when it is not one.
pub(crate) fn route<'a>(
    method: &http::Method,
    path: &'a str,
    query: Option<&str>,
) -> Option<Result<Call<'a>, (StatusCode, String)>> {
    let rest = path.strip_prefix("/rollouts")?;
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    let get = *method == http::Method::GET;
    let post = *method == http::Method::POST;
    Some(match parts.as_slice() {
        [] if get => Ok(Call::List {
            all: query.is_some_and(|q| {
                q.split('&')
                    .any(|kv| kv == "all=true" || kv == "all=1" || kv == "all")
            }),
        }),
        [id] if get => Ok(Call::Status(id)),
        [id, "history"] if get => Ok(Call::History(id)),
        [id, "definition"] if get => Ok(Call::Definition(id)),
        [id, action] if post => Ok(Call::Act(id, action)),
        [] | [_] | [_, "history" | "definition"] => Err((
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} {path}: use GET"),
        )),
        [_, _] => Err((
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} {path}: use POST with {{\"reason\": \"…\"}}"),
        )),
        _ => Err((
            StatusCode::NOT_FOUND,
            format!(
                "no route {path}: GET /rollouts, /rollouts/ID, /rollouts/ID/history; POST /rollouts/ID/ACTION"
            ),
        )),
    })
}

impl Call<'_> {
    /// Whether the call changes a rollout (a POST).
    pub(crate) fn acts(&self) -> bool {
        matches!(self, Call::Act(..))
    }
}

/// Whether a request's body is declared JSON (`application/json`, parameters allowed): what
/// a rollout action must be sent as (the CSRF defence).
pub(crate) fn is_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

fn status_of(e: &OpsError) -> StatusCode {
    match e {
        OpsError::Unknown(_) => StatusCode::NOT_FOUND,
        OpsError::NoReason => StatusCode::BAD_REQUEST,
        OpsError::Backend(e) if e.retryable => StatusCode::SERVICE_UNAVAILABLE,
        OpsError::Backend(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::CONFLICT,
    }
}

/// Answers a call: the status and the JSON body.
pub(crate) async fn answer(
    rollouts: &Rollouts,
    call: Call<'_>,
    body: &[u8],
    actor: &str,
    metrics: &cutover_core::Metrics,
) -> (StatusCode, Value) {
    let result = match call {
        Call::List { all } => rollouts
            .list(all)
            .await
            .map(|list| json!({"rollouts": list.iter().map(|r| r.to_json()).collect::<Vec<_>>()})),
        Call::Status(id) => rollouts.status(id).await.map(|r| r.to_json()),
        Call::History(id) => rollouts
            .history(id)
            .await
            .map(|(r, lines)| json!({"rollout": r.to_json(), "history": lines})),
        Call::Definition(id) => rollouts
            .resolve(id)
            .await
            .map(|_| json!({"definition": rollouts.definition()})),
        Call::Act(id, action) => {
            let request: Value = match serde_json::from_slice(body) {
                Ok(v @ Value::Object(_)) => v,
                _ => {
                    return (
                        StatusCode::BAD_REQUEST,
                        json!({"error": "send a JSON object: {\"reason\": \"…\"}"}),
                    );
                }
            };
            let full = request["full"].as_bool().unwrap_or(false);
            let action = match (Action::parse(action), full) {
                (Some(Action::Promote), true) => Action::PromoteFull,
                (Some(a), _) => a,
                (None, _) => {
                    return (
                        StatusCode::NOT_FOUND,
                        json!({"error": format!(
                            "no action {action:?}: abort, promote, promote-full, pause, resume or retry"
                        )}),
                    );
                }
            };
            let reason = request["reason"].as_str().unwrap_or_default();
            // The daemon resumes rollouts nobody runs by itself: no driving in a request.
            rollouts.act(id, action, reason, actor, false).await.map(|acted| {
                metrics.add("cutover_rollout_actions_total", &[("action", action.as_str())], 1);
                json!({"rollout": acted.rollout, "action": action.as_str(), "audit": acted.audit})
            })
        }
    };
    match result {
        Ok(body) => (StatusCode::OK, body),
        Err(e) => (status_of(&e), json!({"error": e.to_string()})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn routes_are_read_and_wrong_methods_named() {
        assert_eq!(
            route(&Method::GET, "/rollouts", None),
            Some(Ok(Call::List { all: false }))
        );
        assert_eq!(
            route(&Method::GET, "/rollouts", Some("all=true")),
            Some(Ok(Call::List { all: true }))
        );
        assert_eq!(
            route(&Method::GET, "/rollouts/cats-2", None),
            Some(Ok(Call::Status("cats-2")))
        );
        assert_eq!(
            route(&Method::GET, "/rollouts/cats-2/history", None),
            Some(Ok(Call::History("cats-2")))
        );
        assert_eq!(
            route(&Method::POST, "/rollouts/cats-2/abort", None),
            Some(Ok(Call::Act("cats-2", "abort")))
        );
        assert_eq!(
            route(&Method::POST, "/rollouts/cats-2", None)
                .unwrap()
                .unwrap_err()
                .0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            route(&Method::GET, "/rollouts/a/b/c", None)
                .unwrap()
                .unwrap_err()
                .0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            route(&Method::GET, "/rollouts/cats-2/definition", None),
            Some(Ok(Call::Definition("cats-2")))
        );
        assert_eq!(route(&Method::GET, "/events", None), None);
    }

    #[test]
    fn only_json_bodies_count_as_json() {
        let with = |t: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::CONTENT_TYPE, t.parse().unwrap());
            is_json(&h)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(!with("text/plain"));
        assert!(!with("application/x-www-form-urlencoded"));
        assert!(!with("multipart/form-data; boundary=x"));
        assert!(!is_json(&http::HeaderMap::new()));
    }
}
