//! `team`: a custom stage that adds the owning team to the context.

use std::sync::Arc;

use cutover::core::{
    BoxFuture, BuildContext, BuildError, Event, FieldError, Next, Outcome, Stage, StageConfig,
    ValidateContext,
};
use serde::{Deserialize, Serialize};

cutover::core::register_stage!("team", "Adds the owning team to the context (example stage).");

/// Keeps this module's registration linked.
pub(crate) fn link() {}

/// Configuration of the `team` stage.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TeamConfig {
    /// The team that owns the service.
    team: String,
}

#[typetag::serde(name = "team")]
impl StageConfig for TeamConfig {
    fn build<'a>(&'a self, _cx: &'a BuildContext) -> BoxFuture<'a, Result<Arc<dyn Stage>, BuildError>> {
        Box::pin(async move { Ok(Arc::new(Team(self.team.clone())) as Arc<dyn Stage>) })
    }

    fn validate(&self, _cx: &ValidateContext<'_>) -> Vec<FieldError> {
        if self.team.trim().is_empty() {
            vec![FieldError::new("team", "empty: name the owning team")]
        } else {
            Vec::new()
        }
    }
}

#[derive(Debug)]
struct Team(String);

impl Stage for Team {
    fn process<'a>(&'a self, mut event: Event, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        event.context_mut().insert("team".into(), self.0.clone().into());
        Box::pin(next.run(event))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    #[tokio::test]
    async fn the_function_tags_green_events_and_answers_drops() {
        super::link();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/pipeline.toml");
        let hosted = cutover::load(dir, Some("ecs-events")).await.unwrap();
        let handler = cutover::lambda::LambdaHandler::new(hosted.pipeline, hosted.context);
        let fixture = |name: &str| -> Value {
            let path = format!("{}/../../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
        };
        let passed = handler
            .handle(fixture("task-fargate-running.json"))
            .await
            .unwrap();
        assert_eq!(passed["outcome"], "passed");
        assert_eq!(passed["context"]["team"], "cat-platform");
        let dropped = handler.handle(fixture("task-ec2-running.json")).await.unwrap();
        assert_eq!(dropped["outcome"], "dropped");
        assert_eq!(dropped["stage"], "filter");
    }
}
