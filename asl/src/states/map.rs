//! Map: runs its item processor once per item of an array (at most
//! `MaxConcurrency` at a time); the output is the array of their outputs.
//! With `ToleratedFailureCount`/`Percentage`, failed iterations count
//! against the threshold instead of failing the state at once.

use super::retry::error_object;
use super::scope::raw_text;
use super::{Kind, Root, Scope, Shape, Source, Stop, fail};
use crate::definition::validate::{Validator, num_source, path_field, template};
use crate::definition::{Machine, NumSource, compile_machine};
use crate::history::EventKind;
use crate::jsonpath::JsonPath;
use crate::payload::Template;
use futures_util::StreamExt as _;
use serde_json::Value;
use std::sync::Arc;

/// A compiled Map state.
#[derive(Debug)]
pub(crate) struct MapState {
    pub(crate) items_path: Option<JsonPath>,
    /// `ItemSelector`, or the legacy `Parameters`.
    pub(crate) item_selector: Option<Template>,
    /// `ItemProcessor`, or the legacy `Iterator`.
    pub(crate) processor: Arc<Machine>,
    pub(crate) max_concurrency: Option<NumSource>,
    pub(crate) tolerated_count: Option<NumSource>,
    pub(crate) tolerated_pct: Option<NumSource>,
}

pub(crate) const SHAPE: Shape = Shape {
    name: "Map",
    fields: &[
        "Next",
        "End",
        "InputPath",
        "OutputPath",
        "ResultSelector",
        "ResultPath",
        "Retry",
        "Catch",
        "ItemProcessor",
        "Iterator",
        "ItemsPath",
        "ItemSelector",
        "Parameters",
        "MaxConcurrency",
        "MaxConcurrencyPath",
        "ToleratedFailureCount",
        "ToleratedFailureCountPath",
        "ToleratedFailurePercentage",
        "ToleratedFailurePercentagePath",
        "ItemReader",
        "ResultWriter",
        "ItemBatcher",
        "Label",
    ],
    transitions: true,
    io_paths: true,
    optional: &["Parameters", "ResultSelector", "ResultPath", "Retry", "Catch"],
    own_parameters: true,
    compile,
};

fn compile(cx: &mut Validator<'_>, src: &Source<'_>) -> Option<Kind> {
    let o = src.obj;
    if o.contains_key("ItemReader") || o.contains_key("ResultWriter") {
        cx.err(
            "ItemReader",
            "ItemReader/ResultWriter (distributed map over S3) is not supported",
        );
    }
    let (pf, pv) = match (o.get("ItemProcessor"), o.get("Iterator")) {
        (Some(p), None) => ("ItemProcessor", Some(p)),
        (None, Some(p)) => ("Iterator", Some(p)),
        (Some(_), Some(_)) => {
            cx.err(
                "ItemProcessor",
                "use either 'ItemProcessor' or 'Iterator', not both",
            );
            ("ItemProcessor", None)
        }
        (None, None) => {
            cx.err(
                "ItemProcessor",
                "a Map state needs 'ItemProcessor' (or legacy 'Iterator')",
            );
            ("ItemProcessor", None)
        }
    };
    let processor = pv.and_then(|p| compile_machine(p, &format!("{}.{pf}", cx.loc), cx.errs));
    let items_path = o.get("ItemsPath").and_then(|v| path_field(cx, v, "ItemsPath"));
    let item_selector = if o.contains_key("ItemSelector") && o.contains_key("Parameters") {
        cx.err(
            "ItemSelector",
            "use either 'ItemSelector' or legacy 'Parameters', not both",
        );
        None
    } else if o.contains_key("ItemSelector") {
        template(cx, o, "ItemSelector", false)
    } else {
        template(cx, o, "Parameters", true)
    };
    let max_concurrency = num_source(cx, o, "MaxConcurrency", false);
    let tolerated_count = num_source(cx, o, "ToleratedFailureCount", false);
    let tolerated_pct = num_source(cx, o, "ToleratedFailurePercentage", false);
    if let Some(NumSource::Lit(p)) = &tolerated_pct
        && !(0.0..=100.0).contains(p)
    {
        cx.err("ToleratedFailurePercentage", "must be between 0 and 100");
    }
    Some(Kind::Map(Box::new(MapState {
        items_path,
        item_selector,
        processor: Arc::new(processor?),
        max_concurrency,
        tolerated_count,
        tolerated_pct,
    })))
}

/// The numeric settings, resolved against one attempt's input.
struct Limits {
    /// 0 or less: no limit.
    max_concurrency: i64,
    tolerated_count: Option<i64>,
    tolerated_pct: Option<f64>,
}

impl Limits {
    fn resolve(scope: &Scope<'_>, map: &MapState, input: &Value) -> Result<Limits, Stop> {
        let max_concurrency = match &map.max_concurrency {
            None => 0,
            Some(NumSource::Lit(n)) => *n as i64,
            Some(NumSource::Path(p)) => int_path(scope, p, input, "MaxConcurrencyPath")?,
        };
        let tolerated_count = match &map.tolerated_count {
            None => None,
            Some(NumSource::Lit(n)) => Some(*n as i64),
            Some(NumSource::Path(p)) => {
                let n = int_path(scope, p, input, "ToleratedFailureCountPath")?;
                if n < 0 {
                    return Err(scope.runtime("ToleratedFailureCount cannot be negative.".into()));
                }
                Some(n)
            }
        };
        let tolerated_pct = match &map.tolerated_pct {
            None => None,
            Some(NumSource::Lit(n)) => Some(*n),
            Some(NumSource::Path(p)) => {
                let v = scope.select(p, input, Root::Input)?;
                let Some(n) = v.as_f64() else {
                    return Err(scope.runtime(format!(
                        "The ToleratedFailurePercentagePath field refers to value \"{}\" which is not a valid float: {p}",
                        raw_text(&v)
                    )));
                };
                if !(0.0..=100.0).contains(&n) {
                    return Err(scope.runtime("ToleratedFailurePercentage must be between 0 and 100.".into()));
                }
                Some(n)
            }
        };
        Ok(Limits {
            max_concurrency,
            tolerated_count,
            tolerated_pct,
        })
    }

    /// Whether failed iterations are counted rather than failing the state.
    fn tolerant(&self) -> bool {
        self.tolerated_count.is_some() || self.tolerated_pct.is_some()
    }

    fn exceeded(&self, failures: usize, n_items: usize) -> bool {
        let over_count = self.tolerated_count.is_some_and(|c| failures as i64 > c);
        let over_pct = self
            .tolerated_pct
            .is_some_and(|p| failures as f64 * 100.0 / n_items.max(1) as f64 > p);
        over_count || over_pct
    }
}

fn int_path(scope: &Scope<'_>, p: &JsonPath, input: &Value, field: &str) -> Result<i64, Stop> {
    let v = scope.select(p, input, Root::Input)?;
    match v.as_i64() {
        Some(n) => Ok(n),
        None => Err(scope.runtime(format!(
            "The {field} field refers to value \"{}\" which is not a valid integer: {p}",
            raw_text(&v)
        ))),
    }
}

/// One attempt (see `retry`): the iterations' outputs, before
/// `ResultSelector`. `input` is the state's input after `InputPath`.
pub(super) async fn attempt(scope: &Scope<'_>, map: &MapState, input: &Value) -> Result<Value, Stop> {
    let items = match &map.items_path {
        None => input.clone(),
        Some(p) => scope.select(p, input, Root::Context(None))?,
    };
    let Value::Array(items) = items else {
        return Err(scope.runtime(format!("Items of the Map state must be an array, got: {}", items)));
    };
    let limits = Limits::resolve(scope, map, input)?;
    let n_items = items.len();
    let item_inputs = item_inputs(scope, map, input, items)?;
    scope.run.push(EventKind::MapStateStarted { length: n_items });
    let (outs, failures) = iterate(scope, map, item_inputs, &limits).await?;
    if failures > 0 && limits.exceeded(failures, n_items) {
        scope.run.push(EventKind::MapStateFailed);
        return Err(fail(
            "States.ExceedToleratedFailureThreshold",
            format!(
                "The specified tolerated failure threshold was exceeded: {failures} of {n_items} iterations failed"
            ),
        ));
    }
    scope.run.push(EventKind::MapStateSucceeded);
    Ok(Value::Array(outs))
}

/// Each item through `ItemSelector`.
fn item_inputs(
    scope: &Scope<'_>,
    map: &MapState,
    input: &Value,
    items: Vec<Value>,
) -> Result<Vec<Value>, Stop> {
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        out.push(match &map.item_selector {
            Some(t) => scope.eval(t, input, || scope.context(None, Some((i, &item)), None))?,
            None => item,
        });
    }
    Ok(out)
}

/// Run the iterations; returns their outputs in item order (a tolerated
/// failure's output is its error object) and how many failed.
async fn iterate(
    scope: &Scope<'_>,
    map: &MapState,
    item_inputs: Vec<Value>,
    limits: &Limits,
) -> Result<(Vec<Value>, usize), Stop> {
    let run = scope.run;
    let n_items = item_inputs.len();
    let tolerant = limits.tolerant();
    let limit = if limits.max_concurrency <= 0 {
        n_items.max(1)
    } else {
        limits.max_concurrency as usize
    };
    let processor: &Machine = &map.processor;
    let mut stream =
        futures_util::stream::iter(item_inputs.into_iter().enumerate().map(|(i, v)| async move {
            run.push(EventKind::MapIterationStarted { index: i });
            let r = run.run_machine(processor, processor.start, v, false).await;
            match &r {
                Ok(_) => run.push(EventKind::MapIterationSucceeded { index: i }),
                Err(_) => run.push(EventKind::MapIterationFailed { index: i }),
            };
            r
        }))
        .buffered(limit);
    let mut outs = Vec::with_capacity(n_items);
    let mut failures = 0usize;
    while let Some(r) = stream.next().await {
        match r {
            Ok(v) => outs.push(v),
            Err(Stop::Fail(f)) if tolerant => {
                failures += 1;
                outs.push(error_object(&f));
            }
            Err(e) => {
                run.push(EventKind::MapStateFailed);
                return Err(e);
            }
        }
    }
    Ok((outs, failures))
}
