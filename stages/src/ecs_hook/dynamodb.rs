//! The hook store on AWS: a DynamoDB table with the string partition key `pk` (the hook
//! execution's key), one item per hook execution: `version` (number), `expires_at` (number,
//! seconds since the epoch: the table's TTL attribute) and `record` (the JSON of a
//! [`HookRecord`]). Every write is one conditional `PutItem` on the version read, so
//! overlapping invocations from different Lambda sandboxes never both count.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use cutover_core::{BoxFuture, StageError};

use super::{HookRecord, HookStore};
use crate::aws::{aws_error, string_attr as s};

/// Hook records in a DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoHookStore {
    client: Client,
    table: String,
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

impl DynamoHookStore {
    /// The store in `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// Creates the table (on-demand billing, key `pk`) and waits until it is active; for tests
    /// and manual setups (`cutover template` declares it in the stack).
    pub async fn create_table(client: &Client, table: &str) -> Result<(), crate::Error> {
        let build = |e: aws_sdk_dynamodb::error::BuildError| crate::Error::Aws(e.to_string());
        client
            .create_table()
            .table_name(table)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("pk")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(build)?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("pk")
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(build)?,
            )
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .map_err(|e| crate::Error::Aws(aws_error("dynamodb:CreateTable", &e).message))?;
        crate::aws::wait_until_active(client, table).await
    }
}

impl HookStore for DynamoHookStore {
    fn get<'a>(&'a self, key: &'a str, now_s: u64) -> BoxFuture<'a, Result<Option<HookRecord>, StageError>> {
        Box::pin(async move {
            let out = self
                .client
                .get_item()
                .table_name(&self.table)
                .key("pk", s(key))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| aws_error("dynamodb:GetItem", &e))?;
            let Some(item) = out.item else { return Ok(None) };
            let text = item.get("record").and_then(|v| v.as_s().ok()).ok_or_else(|| {
                StageError::permanent(format!("ECS hook store {}: item {key} has no record", self.table))
            })?;
            let record: HookRecord = serde_json::from_str(text).map_err(|e| {
                StageError::permanent(format!("ECS hook store {}: item {key}: {e}", self.table))
            })?;
            // TTL deletion is lazy (up to days): an expired item is absent here already.
            Ok((record.expires_at > now_s).then_some(record))
        })
    }

    fn put<'a>(&'a self, record: &'a HookRecord, now_s: u64) -> BoxFuture<'a, Result<bool, StageError>> {
        Box::pin(async move {
            let json = serde_json::to_string(record).unwrap_or_default();
            let item = HashMap::from([
                ("pk".to_owned(), s(&record.key)),
                ("version".to_owned(), n(record.version)),
                ("expires_at".to_owned(), n(record.expires_at)),
                ("record".to_owned(), s(&json)),
            ]);
            let mut put = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item));
            put = if record.version <= 1 {
                put.condition_expression("attribute_not_exists(pk) OR expires_at <= :now")
                    .expression_attribute_values(":now", n(now_s))
            } else {
                put.condition_expression("version = :prev")
                    .expression_attribute_values(":prev", n(record.version - 1))
            };
            match put.send().await {
                Ok(_) => Ok(true),
                Err(e)
                    if matches!(
                        e.as_service_error(),
                        Some(PutItemError::ConditionalCheckFailedException(_))
                    ) =>
                {
                    Ok(false)
                }
                Err(e) => Err(aws_error("dynamodb:PutItem", &e)),
            }
        })
    }
}
