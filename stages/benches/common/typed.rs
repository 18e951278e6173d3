//! The typed baseline the filter issue names: a borrowing `serde` parse of only the fields
//! the filter needs, then the checks. Shared by `benches/filter.rs` and
//! `examples/accept_decisions.rs`.

use serde::Deserialize;

#[derive(Deserialize)]
struct Typed<'a> {
    #[serde(borrow)]
    source: &'a str,
    #[serde(rename = "detail-type", borrow)]
    detail_type: &'a str,
    #[serde(borrow)]
    detail: TypedDetail<'a>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypedDetail<'a> {
    #[serde(borrow, default)]
    cluster_arn: &'a str,
    #[serde(borrow, default)]
    last_status: &'a str,
    #[serde(borrow, default)]
    desired_status: &'a str,
    #[serde(borrow, default)]
    containers: Vec<TypedContainer<'a>>,
}

#[derive(Deserialize)]
struct TypedContainer<'a> {
    #[serde(borrow)]
    name: &'a str,
}

/// Whether the event is a green task that reached RUNNING in the cluster.
pub(crate) fn typed_decision(bytes: &[u8]) -> bool {
    let Ok(t) = serde_json::from_slice::<Typed<'_>>(bytes) else {
        return false;
    };
    t.source == "aws.ecs"
        && t.detail_type == "ECS Task State Change"
        && t.detail.cluster_arn.ends_with(":cluster/catsndogsECScluster")
        && t.detail.last_status == "RUNNING"
        && t.detail.desired_status == "RUNNING"
        && t.detail.containers.iter().any(|c| c.name == "cats-green")
}
