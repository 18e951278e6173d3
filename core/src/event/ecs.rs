//! Typed access to the ECS events EventBridge delivers (`source = "aws.ecs"`).
//!
//! Field names follow the AWS documentation "Amazon ECS events". Every field is optional and
//! every struct keeps the fields it does not know in `extra`, so a new field added by AWS never
//! fails a parse and a parse → serialize round trip loses nothing.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The `detail-type` of a task state change.
pub const TASK_STATE_CHANGE: &str = "ECS Task State Change";
/// The `detail-type` of a container instance state change.
pub const CONTAINER_INSTANCE_STATE_CHANGE: &str = "ECS Container Instance State Change";
/// The `detail-type` of a service deployment state change.
pub const DEPLOYMENT_STATE_CHANGE: &str = "ECS Deployment State Change";
/// The `detail-type` of a service action event.
pub const SERVICE_ACTION: &str = "ECS Service Action";

/// The EventBridge envelope with its `detail` left as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Envelope {
    /// Envelope version, `"0"` today.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Unique id of the event (EventBridge may deliver the same id more than once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// What happened, e.g. `ECS Task State Change`.
    #[serde(rename = "detail-type", default, skip_serializing_if = "Option::is_none")]
    pub detail_type: Option<String>,
    /// The emitting service, `aws.ecs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// AWS account id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// When the event happened (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// AWS region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// ARNs the event is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Vec<String>>,
    /// The service-specific body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
    /// Fields this version does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An ECS event, by detail type.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EcsEvent {
    /// `ECS Task State Change`.
    Task(Envelope, Box<TaskStateChange>),
    /// `ECS Container Instance State Change`.
    ContainerInstance(Envelope, Box<ContainerInstanceStateChange>),
    /// `ECS Deployment State Change` or `ECS Service Action`.
    Service(Envelope, ServiceEvent),
    /// Any other detail type: kept, never an error.
    Other(Envelope),
}

impl EcsEvent {
    /// Reads an event of any detail type.
    pub fn from_value(value: &Value) -> Result<Self, serde_json::Error> {
        let envelope = Envelope::deserialize(value)?;
        let detail = envelope.detail.clone().unwrap_or(Value::Null);
        Ok(match envelope.detail_type.as_deref() {
            Some(TASK_STATE_CHANGE) => EcsEvent::Task(envelope, Box::new(serde_json::from_value(detail)?)),
            Some(CONTAINER_INSTANCE_STATE_CHANGE) => {
                EcsEvent::ContainerInstance(envelope, Box::new(serde_json::from_value(detail)?))
            }
            Some(DEPLOYMENT_STATE_CHANGE | SERVICE_ACTION) => {
                EcsEvent::Service(envelope, serde_json::from_value(detail)?)
            }
            _ => EcsEvent::Other(envelope),
        })
    }

    /// The envelope, whatever the detail type.
    pub fn envelope(&self) -> &Envelope {
        match self {
            EcsEvent::Task(e, _)
            | EcsEvent::ContainerInstance(e, _)
            | EcsEvent::Service(e, _)
            | EcsEvent::Other(e) => e,
        }
    }

    /// The task state change, if this is one.
    pub fn task(&self) -> Option<&TaskStateChange> {
        match self {
            EcsEvent::Task(_, t) => Some(t),
            _ => None,
        }
    }
}

/// `detail` of an `ECS Task State Change` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TaskStateChange {
    /// ARN of the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_arn: Option<String>,
    /// ARN of the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_arn: Option<String>,
    /// ARN of the task definition, with its revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_definition_arn: Option<String>,
    /// `service:NAME` for tasks of a service, `family:NAME` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Who started the task (`ecs-svc/…` for a service deployment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    /// Current status: PROVISIONING, PENDING, ACTIVATING, RUNNING, DEACTIVATING, STOPPING, DEPROVISIONING, STOPPED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<String>,
    /// What ECS wants: RUNNING or STOPPED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_status: Option<String>,
    /// FARGATE or EC2 (or EXTERNAL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_type: Option<String>,
    /// Increases with every state change of the task; orders out-of-order deliveries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Why the task stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
    /// The task's containers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<Container>,
    /// Fields this version does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One container of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// Container name from the task definition (the seed's `TRIGGER_CONTAINERS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Image reference, e.g. `…/cats:v3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Container status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<String>,
    /// ARN of the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_arn: Option<String>,
    /// Exit code once stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// Fields this version does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `detail` of an `ECS Container Instance State Change` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContainerInstanceStateChange {
    /// ARN of the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_arn: Option<String>,
    /// ARN of the container instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_instance_arn: Option<String>,
    /// EC2 instance id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ec2_instance_id: Option<String>,
    /// ACTIVE, DRAINING, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Whether the agent is connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_connected: Option<bool>,
    /// Fields this version does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `detail` of `ECS Deployment State Change` and `ECS Service Action` events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEvent {
    /// INFO, WARN or ERROR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// E.g. SERVICE_DEPLOYMENT_COMPLETED, SERVICE_STEADY_STATE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_name: Option<String>,
    /// ARN of the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_arn: Option<String>,
    /// Deployment id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Fields this version does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl TaskStateChange {
    /// The cluster name (the last segment of the cluster ARN).
    pub fn cluster_name(&self) -> Option<&str> {
        self.cluster_arn
            .as_deref()
            .map(|arn| arn.rsplit('/').next().unwrap_or(arn))
    }

    /// The task definition family (`cats-green` of `…:task-definition/cats-green:7`).
    pub fn task_definition_family(&self) -> Option<&str> {
        let arn = self.task_definition_arn.as_deref()?;
        let name = arn.rsplit('/').next()?;
        Some(name.split(':').next().unwrap_or(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_and_detail_types_are_kept() {
        let v = serde_json::json!({
            "version": "0", "id": "x", "detail-type": "Something New", "source": "aws.ecs",
            "brandNew": 1, "detail": {"a": 1}
        });
        let e = EcsEvent::from_value(&v).unwrap();
        assert!(matches!(e, EcsEvent::Other(_)));
        assert_eq!(e.envelope().extra.get("brandNew"), Some(&Value::from(1)));
        assert_eq!(serde_json::to_value(e.envelope()).unwrap(), v);
    }

    #[test]
    fn task_names_are_derived_from_arns() {
        let t = TaskStateChange {
            cluster_arn: Some("arn:aws:ecs:us-west-2:111122223333:cluster/catsndogsECScluster".into()),
            task_definition_arn: Some(
                "arn:aws:ecs:us-west-2:111122223333:task-definition/cats-green:7".into(),
            ),
            ..Default::default()
        };
        assert_eq!(t.cluster_name(), Some("catsndogsECScluster"));
        assert_eq!(t.task_definition_family(), Some("cats-green"));
    }
}
