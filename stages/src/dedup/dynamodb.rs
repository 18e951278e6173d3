//! The DynamoDB dedup store.
//!
//! Table schema (what `cutover dedup create-table` creates):
//!
//! | attribute | type | meaning |
//! | --- | --- | --- |
//! | `pk` | S, partition key | the rendered dedup key |
//! | `status` | S | `IN_PROGRESS`, `COMPLETED` or `FAILED` |
//! | `lease_expires` | N | Unix seconds until which an in-progress claim blocks others |
//! | `expires` | N | Unix seconds; the table's TTL attribute |
//! | `payload_hash` | S | hash of the deciding payload |
//! | `owner` | S | who claimed it; guards complete/release/fail |
//! | `claimed_at` | N | Unix seconds |
//! | `event_id` | S | the claiming event's id |
//! | `result` | S | the pipeline's result (e.g. the execution ARN) or the failure |
//!
//! Billing is on demand. DynamoDB's TTL deletes expired items eventually (within days), so the
//! claim condition also treats `expires <= now` as free: correctness never waits for TTL.
//! A claim is one `PutItem` with a condition and `ReturnValuesOnConditionCheckFailure =
//! ALL_OLD`, so losing a race returns the winner's record without a second read.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TimeToLiveSpecification,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use cutover_core::{BoxFuture, StageError};

use super::store::{Claim, DedupStore, Record, Status};
use crate::aws::{aws_error, string_attr as s};

/// The partition key attribute.
pub const KEY_ATTRIBUTE: &str = "pk";
/// The TTL attribute.
pub const TTL_ATTRIBUTE: &str = "expires";

/// The DynamoDB-backed store.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// The claim condition and the names it uses (DynamoDB rejects unused ones).
fn claim_condition(replacing: bool) -> (&'static str, HashMap<String, String>) {
    let mut names = vec![
        ("#pk", KEY_ATTRIBUTE),
        ("#st", "status"),
        ("#lease", "lease_expires"),
        ("#exp", TTL_ATTRIBUTE),
    ];
    let condition = if replacing {
        names.push(("#owner", "owner"));
        "attribute_not_exists(#pk) OR #exp <= :now OR (#st = :inprog AND (#lease <= :now OR #owner = :prev))"
    } else {
        "attribute_not_exists(#pk) OR #exp <= :now OR (#st = :inprog AND #lease <= :now)"
    };
    let names = names
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
    (condition, names)
}

fn record_from(item: &HashMap<String, AttributeValue>) -> Option<Record> {
    let get_s = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    let get_n = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<i64>().ok())
    };
    Some(Record {
        key: get_s(KEY_ATTRIBUTE)?,
        status: Status::parse(&get_s("status")?)?,
        lease_expires: get_n("lease_expires").unwrap_or(0),
        expires: get_n(TTL_ATTRIBUTE).unwrap_or(0),
        payload_hash: get_s("payload_hash").unwrap_or_default(),
        owner: get_s("owner").unwrap_or_default(),
        claimed_at: get_n("claimed_at").unwrap_or(0),
        event_id: get_s("event_id").unwrap_or_default(),
        result: get_s("result"),
    })
}

impl DynamoStore {
    /// A store over `table`, using `client` (built from the shared AWS configuration).
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// Creates the table with the schema above and TTL on `expires`.
    pub async fn create_table(client: &Client, table: &str) -> Result<(), crate::Error> {
        let attr = AttributeDefinition::builder()
            .attribute_name(KEY_ATTRIBUTE)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| crate::Error::Aws(e.to_string()))?;
        let key = KeySchemaElement::builder()
            .attribute_name(KEY_ATTRIBUTE)
            .key_type(KeyType::Hash)
            .build()
            .map_err(|e| crate::Error::Aws(e.to_string()))?;
        client
            .create_table()
            .table_name(table)
            .attribute_definitions(attr)
            .key_schema(key)
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .map_err(|e| crate::Error::Aws(aws_error("dynamodb:CreateTable", &e).message))?;
        crate::aws::wait_until_active(client, table).await?;
        let ttl = TimeToLiveSpecification::builder()
            .attribute_name(TTL_ATTRIBUTE)
            .enabled(true)
            .build()
            .map_err(|e| crate::Error::Aws(e.to_string()))?;
        client
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(ttl)
            .send()
            .await
            .map_err(|e| crate::Error::Aws(aws_error("dynamodb:UpdateTimeToLive", &e).message))?;
        Ok(())
    }

    async fn read(&self, key: &str) -> Result<Option<Record>, StageError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(KEY_ATTRIBUTE, s(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| aws_error("dynamodb:GetItem", &e))?;
        Ok(out.item().and_then(record_from))
    }
}

impl DedupStore for DynamoStore {
    fn claim<'a>(
        &'a self,
        r: &'a Record,
        now: i64,
        replacing: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Claim, StageError>> {
        Box::pin(async move {
            let mut item = HashMap::from([
                (KEY_ATTRIBUTE.to_owned(), s(&r.key)),
                ("status".to_owned(), s(r.status.as_str())),
                ("lease_expires".to_owned(), n(r.lease_expires)),
                (TTL_ATTRIBUTE.to_owned(), n(r.expires)),
                ("payload_hash".to_owned(), s(&r.payload_hash)),
                ("owner".to_owned(), s(&r.owner)),
                ("claimed_at".to_owned(), n(r.claimed_at)),
            ]);
            if !r.event_id.is_empty() {
                item.insert("event_id".to_owned(), s(&r.event_id));
            }
            let (condition, names) = claim_condition(replacing.is_some());
            let mut values = HashMap::from([
                (":now".to_owned(), n(now)),
                (":inprog".to_owned(), s(Status::InProgress.as_str())),
            ]);
            if let Some(prev) = replacing {
                values.insert(":prev".to_owned(), s(prev));
            }
            let result = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression(condition)
                .set_expression_attribute_names(Some(names))
                .set_expression_attribute_values(Some(values))
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .send()
                .await;
            match result {
                Ok(_) => Ok(Claim::Won),
                Err(err) => match err.as_service_error() {
                    Some(PutItemError::ConditionalCheckFailedException(e)) => {
                        match e.item().and_then(record_from) {
                            Some(existing) => Ok(existing.contested_by(r)),
                            // Older emulators do not return ALL_OLD; read it instead.
                            None => match self.read(&r.key).await? {
                                Some(existing) => Ok(existing.contested_by(r)),
                                None => Err(StageError::retryable(format!(
                                    "dedup key {} was held but has disappeared; retry",
                                    r.key
                                ))),
                            },
                        }
                    }
                    _ => Err(aws_error("dynamodb:PutItem", &err)),
                },
            }
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Record>, StageError>> {
        Box::pin(self.read(key))
    }

    fn renew<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        lease_expires: i64,
    ) -> BoxFuture<'a, Result<bool, StageError>> {
        Box::pin(async move {
            let out = self
                .client
                .update_item()
                .table_name(&self.table)
                .key(KEY_ATTRIBUTE, s(key))
                .update_expression("SET #lease = :lease")
                .condition_expression("#owner = :me AND #st = :inprog")
                .expression_attribute_names("#lease", "lease_expires")
                .expression_attribute_names("#owner", "owner")
                .expression_attribute_names("#st", "status")
                .expression_attribute_values(":lease", n(lease_expires))
                .expression_attribute_values(":me", s(owner))
                .expression_attribute_values(":inprog", s(Status::InProgress.as_str()))
                .send()
                .await;
            match out {
                Ok(_) => Ok(true),
                Err(e) if is_condition_failure(&e) => Ok(false),
                Err(e) => Err(aws_error("dynamodb:UpdateItem", &e)),
            }
        })
    }

    fn finish<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        status: Status,
        result: &'a str,
        expires: i64,
    ) -> BoxFuture<'a, Result<(), StageError>> {
        Box::pin(self.update(key, owner, status, result, expires))
    }

    fn release<'a>(&'a self, key: &'a str, owner: &'a str) -> BoxFuture<'a, Result<(), StageError>> {
        Box::pin(async move {
            let result = self
                .client
                .delete_item()
                .table_name(&self.table)
                .key(KEY_ATTRIBUTE, s(key))
                .condition_expression("#owner = :me")
                .expression_attribute_names("#owner", "owner")
                .expression_attribute_values(":me", s(owner))
                .send()
                .await;
            guarded(result, "dynamodb:DeleteItem", key, "before it could be released")
        })
    }
}

impl DynamoStore {
    async fn update(
        &self,
        key: &str,
        owner: &str,
        status: Status,
        result: &str,
        expires: i64,
    ) -> Result<(), StageError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(KEY_ATTRIBUTE, s(key))
            .update_expression("SET #st = :st, #res = :res, #exp = :exp")
            .condition_expression("#owner = :me")
            .expression_attribute_names("#st", "status")
            .expression_attribute_names("#res", "result")
            .expression_attribute_names("#exp", TTL_ATTRIBUTE)
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":st", s(status.as_str()))
            .expression_attribute_values(":res", s(result))
            .expression_attribute_values(":exp", n(expires))
            .expression_attribute_values(":me", s(owner))
            .send()
            .await;
        guarded(
            out,
            "dynamodb:UpdateItem",
            key,
            "before it was finished (lease too short?)",
        )
    }
}

/// The end of a write guarded by the owner token: finding the claim owned by someone else is not
/// an error — the lease ran out and another claimer took over — so say so and go on.
fn guarded<T, E>(
    result: Result<T, SdkError<E, HttpResponse>>,
    operation: &str,
    key: &str,
    when: &str,
) -> Result<(), StageError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(()),
        Err(e) if is_condition_failure(&e) => {
            tracing::warn!(stage = "dedup", key, "the claim was taken over {when}");
            Ok(())
        }
        Err(e) => Err(aws_error(operation, &e)),
    }
}

fn is_condition_failure<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
    e.as_service_error().and_then(ProvideErrorMetadata::code) == Some("ConditionalCheckFailedException")
}
