//! Payload templates (`Parameters`, `ResultSelector`, `ItemSelector`):
//! JSON whose `"key.$"` fields are replaced by a path selection or an
//! intrinsic function result, compiled once at definition load.

use crate::intrinsics::{Intrinsic, IntrinsicError, looks_like_call};
use crate::jsonpath::JsonPath;
use serde_json::{Map, Value};

/// A compiled payload template.
#[derive(Debug, Clone)]
pub(crate) enum Template {
    Lit(Value),
    Obj(Vec<(String, Template)>),
    Arr(Vec<Template>),
    Path { field: String, path: JsonPath },
    Call { f: Intrinsic },
}

/// A template evaluation failure: Step Functions error name and cause.
#[derive(Debug, Clone)]
pub(crate) struct EvalError {
    pub(crate) error: &'static str,
    pub(crate) cause: String,
}

impl Template {
    /// Compile; errors name the offending field.
    pub(crate) fn compile(v: &Value) -> Result<Template, String> {
        Ok(match v {
            Value::Object(m) => {
                let mut out = Vec::with_capacity(m.len());
                for (k, val) in m {
                    if let Some(key) = k.strip_suffix(".$") {
                        let Value::String(s) = val else {
                            return Err(format!(
                                "the field '{k}' must hold a path or an intrinsic function string"
                            ));
                        };
                        let t = if looks_like_call(s) {
                            Template::Call {
                                f: Intrinsic::parse(s).map_err(|e| format!("field '{k}': {e}"))?,
                            }
                        } else {
                            Template::Path {
                                field: k.clone(),
                                path: JsonPath::parse(s).map_err(|e| format!("field '{k}': {e}"))?,
                            }
                        };
                        out.push((key.to_string(), t));
                    } else {
                        out.push((k.clone(), Template::compile(val)?));
                    }
                }
                if out.iter().all(|(_, t)| matches!(t, Template::Lit(_))) {
                    Template::Lit(v.clone())
                } else {
                    Template::Obj(out)
                }
            }
            Value::Array(a) => {
                let items = a.iter().map(Template::compile).collect::<Result<Vec<_>, _>>()?;
                if items.iter().all(|t| matches!(t, Template::Lit(_))) {
                    Template::Lit(v.clone())
                } else {
                    Template::Arr(items)
                }
            }
            other => Template::Lit(other.clone()),
        })
    }

    /// Whether evaluating may read the context object.
    pub(crate) fn uses_context(&self) -> bool {
        match self {
            Template::Lit(_) => false,
            Template::Obj(o) => o.iter().any(|(_, t)| t.uses_context()),
            Template::Arr(a) => a.iter().any(Template::uses_context),
            Template::Path { path, .. } => path.is_context(),
            Template::Call { f } => f.uses_context(),
        }
    }

    /// Evaluate against the input and the (already built) context object.
    pub(crate) fn eval(&self, input: &Value, ctx: &Value) -> Result<Value, EvalError> {
        Ok(match self {
            Template::Lit(v) => v.clone(),
            Template::Obj(o) => {
                let mut m = Map::with_capacity(o.len());
                for (k, t) in o {
                    m.insert(k.clone(), t.eval(input, ctx)?);
                }
                Value::Object(m)
            }
            Template::Arr(a) => Value::Array(
                a.iter()
                    .map(|t| t.eval(input, ctx))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Template::Path { field, path } => {
                let root = if path.is_context() { ctx } else { input };
                path.select(root).ok_or_else(|| EvalError {
                    error: "States.Runtime",
                    cause: format!(
                        "The JSONPath '{path}' specified for the field '{field}' could not be found in the input '{input}'"
                    ),
                })?
            }
            Template::Call { f } => f.eval(input, ctx).map_err(|e| match e {
                IntrinsicError::PathNotFound(p) => EvalError {
                    error: "States.Runtime",
                    cause: format!(
                        "The JSONPath '{p}' specified for the function '{}' could not be found in the input '{input}'",
                        f.as_str()
                    ),
                },
                IntrinsicError::Failure(m) => EvalError {
                    error: "States.IntrinsicFailure",
                    cause: m,
                },
            })?,
        })
    }
}
