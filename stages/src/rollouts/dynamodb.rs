//! The rollout store on AWS: one DynamoDB table (the stack creates it; `create_table` for
//! tests and manual setups), partition key `pk` and sort key `sk`, both strings:
//!
//! | item | `pk` | `sk` | attributes |
//! | --- | --- | --- | --- |
//! | control record | `control#<rollout>` | `control` | `action`, `target`, `reason`, `actor`, `at`, `id` |
//! | audit entry | `audit#<rollout>` | `<at>#<id>` | `entry` (the JSON of an [`AuditEntry`]) |
//! | service slot | `service#<service>` | `slot` | `rollout` |
//!
//! The canary's `ReadControl` state reads the control record with a strongly consistent
//! `GetItem` service integration; everything else goes through this store.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use cutover_core::{BoxFuture, StageError};
use serde_json::{Map, Value};

use super::{AuditEntry, CONTROL_SORT_KEY, Claim, Control, RolloutStore, Slot, control_key};
use crate::aws::{aws_error, string_attr as s};

/// Control records, service slots and the audit log in a DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoRolloutStore {
    client: Client,
    table: String,
}

fn key(pk: String, sk: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([("pk".to_owned(), s(&pk)), ("sk".to_owned(), s(sk))])
}

fn audit_from(item: &HashMap<String, AttributeValue>) -> Option<AuditEntry> {
    serde_json::from_str(item.get("entry")?.as_s().ok()?).ok()
}

impl DynamoRolloutStore {
    /// The store in `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table (on demand billing) and waits until it is active.
    pub async fn create_table(client: &Client, table: &str) -> Result<(), crate::Error> {
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| crate::Error::Aws(e.to_string()))
        };
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(|e| crate::Error::Aws(e.to_string()))
        };
        client
            .create_table()
            .table_name(table)
            .attribute_definitions(attribute("pk")?)
            .attribute_definitions(attribute("sk")?)
            .key_schema(key("pk", KeyType::Hash)?)
            .key_schema(key("sk", KeyType::Range)?)
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .map_err(|e| crate::Error::Aws(aws_error("dynamodb:CreateTable", &e).message))?;
        crate::aws::wait_until_active(client, table).await
    }

    async fn get_control(&self, rollout: &str) -> Result<Option<Control>, StageError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(control_key(rollout), CONTROL_SORT_KEY)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| aws_error("dynamodb:GetItem", &e))?;
        let Some(item) = out.item() else {
            return Ok(None);
        };
        let as_json: Map<String, Value> = item
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), serde_json::json!({ "S": v.as_s().ok()? }))))
            .collect();
        Ok(Control::from_item(&as_json))
    }

    async fn put(&self, item: HashMap<String, AttributeValue>) -> Result<(), StageError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| aws_error("dynamodb:PutItem", &e))?;
        Ok(())
    }

    async fn put_control(&self, rollout: &str, control: &Control) -> Result<(), StageError> {
        let item = control
            .to_item(rollout)
            .into_iter()
            .filter_map(|(k, v)| Some((k, s(v.get("S")?.as_str()?))))
            .collect();
        self.put(item).await
    }

    async fn put_audit(&self, entry: &AuditEntry) -> Result<(), StageError> {
        let mut item = key(
            format!("audit#{}", entry.rollout),
            &format!("{}#{}", entry.at, entry.id),
        );
        item.insert(
            "entry".into(),
            s(&serde_json::to_string(entry).unwrap_or_default()),
        );
        self.put(item).await
    }

    async fn read_audit(&self, rollout: Option<&str>) -> Result<Vec<AuditEntry>, StageError> {
        let mut entries = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let (items, next) = match rollout {
                Some(r) => {
                    let out = self
                        .client
                        .query()
                        .table_name(&self.table)
                        .key_condition_expression("pk = :pk")
                        .expression_attribute_values(":pk", s(&format!("audit#{r}")))
                        .consistent_read(true)
                        .set_exclusive_start_key(start.take())
                        .send()
                        .await
                        .map_err(|e| aws_error("dynamodb:Query", &e))?;
                    (out.items().to_vec(), out.last_evaluated_key().cloned())
                }
                None => {
                    let out = self
                        .client
                        .scan()
                        .table_name(&self.table)
                        .filter_expression("begins_with(pk, :audit)")
                        .expression_attribute_values(":audit", s("audit#"))
                        .consistent_read(true)
                        .set_exclusive_start_key(start.take())
                        .send()
                        .await
                        .map_err(|e| aws_error("dynamodb:Scan", &e))?;
                    (out.items().to_vec(), out.last_evaluated_key().cloned())
                }
            };
            entries.extend(items.iter().filter_map(audit_from));
            match next {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        entries.sort_by(|a, b| (&a.at, &a.id).cmp(&(&b.at, &b.id)));
        Ok(entries)
    }

    async fn read_slot(&self, service: &str) -> Result<Option<Slot>, StageError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("service#{service}"), "slot")))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| aws_error("dynamodb:GetItem", &e))?;
        let Some(item) = out.item() else {
            return Ok(None);
        };
        let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
        let Some(rollout) = text("rollout") else {
            return Ok(None);
        };
        Ok(Some(Slot {
            rollout,
            // Slots written before they were ordered have no time: as old as can be.
            at: item
                .get("at")
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse().ok())
                .unwrap_or(i64::MIN),
            previous: text("previous"),
        }))
    }

    /// Reads the slot, decides, and writes it only if nobody wrote it in between (optimistic:
    /// a lost race reads again). A write whose answer was lost is found as the rollout's own
    /// slot when tried again, with what it replaced.
    async fn swap_service(&self, service: &str, rollout: &str, at: i64) -> Result<Claim, StageError> {
        for _ in 0..16 {
            let slot = self.read_slot(service).await?;
            let (claim, taken) = Slot::claim(slot.as_ref(), rollout, at);
            let Some(taken) = taken else {
                return Ok(claim);
            };
            let mut item = key(format!("service#{service}"), "slot");
            item.insert("rollout".into(), s(&taken.rollout));
            item.insert("at".into(), AttributeValue::N(taken.at.to_string()));
            if let Some(previous) = &taken.previous {
                item.insert("previous".into(), s(previous));
            }
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item));
            let put = match &slot {
                Some(held) => put
                    .condition_expression("rollout = :held")
                    .expression_attribute_values(":held", s(&held.rollout)),
                None => put.condition_expression("attribute_not_exists(rollout)"),
            };
            match put.send().await {
                Ok(_) => return Ok(claim),
                Err(e)
                    if matches!(
                        e.as_service_error(),
                        Some(PutItemError::ConditionalCheckFailedException(_))
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(aws_error("dynamodb:PutItem", &e)),
            }
        }
        Err(StageError::retryable(format!(
            "the slot of service {service} kept changing while {rollout} claimed it; trying again later"
        ))
        .with_kind("Rollouts.Superseding"))
    }
}

impl RolloutStore for DynamoRolloutStore {
    fn control<'a>(&'a self, rollout: &'a str) -> BoxFuture<'a, Result<Option<Control>, StageError>> {
        Box::pin(self.get_control(rollout))
    }

    fn set_control<'a>(
        &'a self,
        rollout: &'a str,
        control: &'a Control,
    ) -> BoxFuture<'a, Result<(), StageError>> {
        Box::pin(self.put_control(rollout, control))
    }

    fn audit<'a>(&'a self, entry: &'a AuditEntry) -> BoxFuture<'a, Result<(), StageError>> {
        Box::pin(self.put_audit(entry))
    }

    fn audit_log<'a>(
        &'a self,
        rollout: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<AuditEntry>, StageError>> {
        Box::pin(self.read_audit(rollout))
    }

    fn claim_service<'a>(
        &'a self,
        service: &'a str,
        rollout: &'a str,
        at: i64,
    ) -> BoxFuture<'a, Result<Claim, StageError>> {
        Box::pin(self.swap_service(service, rollout, at))
    }
}
