//! Renders a [`StackPlan`] into a template, once for both formats: the passes over the stack in
//! their order, and each function with everything made for it. The few parts the formats spell
//! differently — the function resource, how its rule is made, the template's `Transform` — come
//! from a [`Dialect`] ([`CloudFormation`](super::cloudformation::CloudFormation) or
//! [`Sam`](super::sam::Sam)).
//!
//! The order matters to the stack: the stages' tables, queues and log groups are encrypted and
//! their state machines hardened before the functions are added, so those passes see only what
//! the stages made (the template's own resources are made hardened); the alarms come after
//! everything they watch, and the output naming them last.

use serde_json::{Map, Value, json};

use super::function::FunctionPlan;
use super::plan::StackPlan;
use super::rule::RulePlan;
use super::{alarms, dead_letter, hardening, state_machines};

/// What differs between the formats.
pub(crate) trait Dialect {
    /// The template's `Transform`, if the format has one.
    fn transform(&self) -> Option<&'static str>;

    /// The function resource.
    fn function(&self, function: &FunctionPlan) -> Value;

    /// Makes `function`'s `rule` (adding to `stack` what the format writes as resources of their
    /// own) and returns the rule's logical ID.
    fn rule(&self, stack: &mut Stack, function: &FunctionPlan, rule: &RulePlan) -> String;
}

/// The template's sections while it is rendered.
#[derive(Debug, Default)]
pub(crate) struct Stack {
    /// Template parameters by name.
    pub(crate) parameters: Map<String, Value>,
    /// Resources by logical ID.
    pub(crate) resources: Map<String, Value>,
    /// Outputs by name.
    pub(crate) outputs: Map<String, Value>,
    /// The logical IDs of the alarms, for the output that names them.
    pub(crate) alarms: Vec<String>,
}

/// The template of `plan` in `dialect`.
pub(crate) fn render(plan: &StackPlan, dialect: &dyn Dialect) -> Value {
    let mut stack = Stack {
        parameters: plan.parameters.clone(),
        resources: plan.resources.clone(),
        outputs: plan.outputs.clone(),
        alarms: Vec::new(),
    };
    hardening::encrypt_at_rest(&mut stack.resources);
    let machines = state_machines::harden(&mut stack.resources);
    for function in &plan.functions {
        add_function(&mut stack, function, dialect);
    }
    for machine in &machines {
        alarms::state_machine(&mut stack, machine);
    }
    if !plan.functions.is_empty() {
        alarms::rollbacks(&mut stack, &plan.functions);
    }
    alarms::name_them(&mut stack);

    let mut template = Map::new();
    template.insert("AWSTemplateFormatVersion".into(), json!("2010-09-09"));
    if let Some(transform) = dialect.transform() {
        template.insert("Transform".into(), json!(transform));
    }
    template.insert("Description".into(), json!(plan.description));
    stack.parameters.extend(alarms::parameters());
    stack.parameters.extend(hardening::parameters(hardening::Used {
        state_machines: !machines.is_empty(),
    }));
    let mut conditions = alarms::conditions();
    conditions.extend(hardening::conditions());
    template.insert("Parameters".into(), Value::Object(stack.parameters));
    template.insert("Conditions".into(), Value::Object(conditions));
    template.insert("Resources".into(), Value::Object(stack.resources));
    template.insert("Outputs".into(), Value::Object(stack.outputs));
    Value::Object(template)
}

/// The function, its log group and role, output and alarms, and — with a rule — the rule and
/// the dead-letter queue.
fn add_function(stack: &mut Stack, function: &FunctionPlan, dialect: &dyn Dialect) {
    stack
        .resources
        .insert(function.log_group_id(), function.log_group());
    stack
        .resources
        .insert(function.role.id.clone(), function.role.render());
    stack.resources.insert(function.id(), dialect.function(function));
    let (name, output) = function.output();
    stack.outputs.insert(name, output);
    alarms::function(stack, function);
    if let Some(rule) = &function.rule {
        let rule_id = dialect.rule(stack, function, rule);
        dead_letter::render(stack, function, rule, &rule_id);
    }
}
