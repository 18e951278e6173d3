//! Choice rules: the comparison operators (`StringEquals`, `NumericLessThanPath`,
//! `IsPresent`, …) and the `And` / `Or` / `Not` combinators, parsed once and
//! evaluated against the state input.
//!
//! A comparison whose operand has the wrong type is simply false, as in
//! Step Functions; a `Variable` selecting nothing is a `States.Runtime`
//! error except for `IsPresent`.

use crate::jsonpath::JsonPath;
use crate::timestamp;
use serde_json::Value;

/// A parsed Choice rule (without its `Next`).
#[derive(Debug, Clone)]
pub(crate) enum Rule {
    And(Vec<Rule>),
    Or(Vec<Rule>),
    Not(Box<Rule>),
    Cmp { var: JsonPath, op: Op, rhs: Rhs },
}

#[derive(Debug, Clone)]
pub(crate) enum Rhs {
    Lit(Value),
    Path(JsonPath),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    String,
    Numeric,
    Boolean,
    Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Rel {
    Eq,
    Lt,
    Gt,
    Le,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Op {
    Compare(Kind, Rel),
    StringMatches,
    IsNull,
    IsPresent,
    IsNumeric,
    IsString,
    IsBoolean,
    IsTimestamp,
}

fn op_by_name(name: &str) -> Option<(Op, bool)> {
    let (base, path) = match name.strip_suffix("Path") {
        Some(b) => (b, true),
        None => (name, false),
    };
    let op = match base {
        "StringMatches" => Op::StringMatches,
        "IsNull" => Op::IsNull,
        "IsPresent" => Op::IsPresent,
        "IsNumeric" => Op::IsNumeric,
        "IsString" => Op::IsString,
        "IsBoolean" => Op::IsBoolean,
        "IsTimestamp" => Op::IsTimestamp,
        _ => {
            let (kind, rest) = [
                ("String", Kind::String),
                ("Numeric", Kind::Numeric),
                ("Boolean", Kind::Boolean),
                ("Timestamp", Kind::Timestamp),
            ]
            .iter()
            .find_map(|(p, k)| base.strip_prefix(p).map(|r| (*k, r)))?;
            let rel = match rest {
                "Equals" => Rel::Eq,
                "LessThan" => Rel::Lt,
                "GreaterThan" => Rel::Gt,
                "LessThanEquals" => Rel::Le,
                "GreaterThanEquals" => Rel::Ge,
                _ => return None,
            };
            if kind == Kind::Boolean && rel != Rel::Eq {
                return None;
            }
            Op::Compare(kind, rel)
        }
    };
    if path && matches!(op, Op::StringMatches) {
        return None;
    }
    if path
        && matches!(
            op,
            Op::IsNull | Op::IsPresent | Op::IsNumeric | Op::IsString | Op::IsBoolean | Op::IsTimestamp
        )
    {
        return None;
    }
    Some((op, path))
}

impl Rule {
    /// Parse a rule object. `top` rules carry `Next` (ignored here); nested
    /// ones must not.
    pub(crate) fn parse(v: &Value, top: bool) -> Result<Rule, String> {
        let Value::Object(m) = v else {
            return Err("a Choice rule must be an object".into());
        };
        let known = |k: &str| k == "Next" || k == "Comment";
        if !top && m.contains_key("Next") {
            return Err("nested Choice rules must not have 'Next'".into());
        }
        if let Some(a) = m.get("And").or_else(|| m.get("Or")) {
            let is_and = m.contains_key("And");
            let Value::Array(items) = a else {
                return Err("'And'/'Or' must be a non-empty array of rules".into());
            };
            if items.is_empty() {
                return Err("'And'/'Or' must be a non-empty array of rules".into());
            }
            let rules = items
                .iter()
                .map(|r| Rule::parse(r, false))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(if is_and { Rule::And(rules) } else { Rule::Or(rules) });
        }
        if let Some(n) = m.get("Not") {
            return Ok(Rule::Not(Box::new(Rule::parse(n, false)?)));
        }
        let var = match m.get("Variable") {
            Some(Value::String(s)) => JsonPath::parse(s)?,
            Some(_) => return Err("'Variable' must be a string path".into()),
            None => return Err("a Choice rule needs 'Variable' (or And/Or/Not)".into()),
        };
        let mut found = None;
        for (k, val) in m {
            if k == "Variable" || known(k) {
                continue;
            }
            let Some((op, is_path)) = op_by_name(k) else {
                return Err(format!("unknown Choice operator '{k}'"));
            };
            if found.is_some() {
                return Err("a Choice rule must have exactly one comparison operator".into());
            }
            let rhs = if is_path {
                match val {
                    Value::String(s) => Rhs::Path(JsonPath::parse(s)?),
                    _ => return Err(format!("'{k}' must be a path string")),
                }
            } else {
                let ok = match op {
                    Op::Compare(Kind::String, _) | Op::StringMatches => val.is_string(),
                    Op::Compare(Kind::Numeric, _) => val.is_number(),
                    Op::Compare(Kind::Boolean, _) => val.is_boolean(),
                    Op::Compare(Kind::Timestamp, _) => val.as_str().and_then(timestamp::parse).is_some(),
                    _ => val.is_boolean(),
                };
                if !ok {
                    return Err(format!("'{k}' has a value of the wrong type: {val}"));
                }
                Rhs::Lit(val.clone())
            };
            found = Some((op, rhs));
        }
        let Some((op, rhs)) = found else {
            return Err("a Choice rule needs a comparison operator".into());
        };
        Ok(Rule::Cmp { var, op, rhs })
    }

    /// Evaluate; `Err` is a `States.Runtime` cause.
    pub(crate) fn eval(&self, input: &Value, ctx: &dyn Fn() -> Value) -> Result<bool, String> {
        match self {
            Rule::And(rs) => {
                for r in rs {
                    if !r.eval(input, ctx)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Rule::Or(rs) => {
                for r in rs {
                    if r.eval(input, ctx)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Rule::Not(r) => Ok(!r.eval(input, ctx)?),
            Rule::Cmp { var, op, rhs } => {
                let sel = |p: &JsonPath| {
                    if p.is_context() {
                        p.select(&ctx())
                    } else {
                        p.select(input)
                    }
                };
                let lhs = sel(var);
                if *op == Op::IsPresent {
                    let present = match &lhs {
                        None => false,
                        Some(Value::Array(a)) if !var.is_definite() => !a.is_empty(),
                        Some(_) => true,
                    };
                    return Ok(Some(present) == rhs_bool(rhs));
                }
                let Some(lhs) = lhs else {
                    return Err(format!(
                        "Invalid path '{}': The choice state's condition path references an invalid value.",
                        var
                    ));
                };
                let rv = match rhs {
                    Rhs::Lit(v) => v.clone(),
                    Rhs::Path(p) => match sel(p) {
                        Some(v) => v,
                        None => {
                            return Err(format!(
                                "Invalid path '{}': The choice state's condition path references an invalid value.",
                                p
                            ));
                        }
                    },
                };
                Ok(compare(&lhs, *op, &rv))
            }
        }
    }
}

impl Rule {
    /// A short human description, e.g. `$.ok == true`, for diagrams.
    pub(crate) fn describe(&self) -> String {
        match self {
            Rule::And(rs) => rs
                .iter()
                .map(|r| r.describe_nested())
                .collect::<Vec<_>>()
                .join(" and "),
            Rule::Or(rs) => rs
                .iter()
                .map(|r| r.describe_nested())
                .collect::<Vec<_>>()
                .join(" or "),
            Rule::Not(r) => format!("not {}", r.describe_nested()),
            Rule::Cmp { var, op, rhs } => {
                let rhs = match rhs {
                    Rhs::Lit(v) => v.to_string(),
                    Rhs::Path(p) => p.to_string(),
                };
                let op = match op {
                    Op::Compare(_, Rel::Eq) => "==",
                    Op::Compare(_, Rel::Lt) => "<",
                    Op::Compare(_, Rel::Gt) => ">",
                    Op::Compare(_, Rel::Le) => "<=",
                    Op::Compare(_, Rel::Ge) => ">=",
                    Op::StringMatches => "matches",
                    Op::IsNull => "is null",
                    Op::IsPresent => "is present",
                    Op::IsNumeric => "is numeric",
                    Op::IsString => "is string",
                    Op::IsBoolean => "is boolean",
                    Op::IsTimestamp => "is timestamp",
                };
                format!("{var} {op} {rhs}")
            }
        }
    }

    fn describe_nested(&self) -> String {
        match self {
            Rule::Cmp { .. } => self.describe(),
            _ => format!("({})", self.describe()),
        }
    }
}

fn rhs_bool(r: &Rhs) -> Option<bool> {
    match r {
        Rhs::Lit(Value::Bool(b)) => Some(*b),
        _ => None,
    }
}

fn rel_holds(rel: Rel, o: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering::*;
    match rel {
        Rel::Eq => o == Equal,
        Rel::Lt => o == Less,
        Rel::Gt => o == Greater,
        Rel::Le => o != Greater,
        Rel::Ge => o != Less,
    }
}

fn compare(lhs: &Value, op: Op, rhs: &Value) -> bool {
    let want = rhs.as_bool();
    match op {
        Op::IsNull => Some(lhs.is_null()) == want,
        Op::IsNumeric => Some(lhs.is_number()) == want,
        Op::IsString => Some(lhs.is_string()) == want,
        Op::IsBoolean => Some(lhs.is_boolean()) == want,
        Op::IsTimestamp => Some(lhs.as_str().and_then(timestamp::parse).is_some()) == want,
        Op::IsPresent => true,
        Op::StringMatches => match (lhs, rhs) {
            (Value::String(s), Value::String(p)) => string_matches(s, p),
            _ => false,
        },
        Op::Compare(kind, rel) => {
            let ord = match (kind, lhs, rhs) {
                (Kind::String, Value::String(a), Value::String(b)) => Some(a.cmp(b)),
                (Kind::Numeric, Value::Number(a), Value::Number(b)) => match (a.as_i64(), b.as_i64()) {
                    (Some(x), Some(y)) => Some(x.cmp(&y)),
                    _ => a
                        .as_f64()
                        .unwrap_or(f64::NAN)
                        .partial_cmp(&b.as_f64().unwrap_or(f64::NAN)),
                },
                (Kind::Boolean, Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
                (Kind::Timestamp, Value::String(a), Value::String(b)) => {
                    match (timestamp::parse(a), timestamp::parse(b)) {
                        (Some(x), Some(y)) => Some(x.cmp(&y)),
                        _ => None,
                    }
                }
                _ => None,
            };
            ord.is_some_and(|o| rel_holds(rel, o))
        }
    }
}

/// `StringMatches`: `*` matches any run of characters; `\*` and `\\` are
/// literal.
pub(crate) fn string_matches(s: &str, pattern: &str) -> bool {
    #[derive(PartialEq)]
    enum Tok {
        Star,
        Ch(char),
    }
    let mut toks = Vec::new();
    let mut it = pattern.chars();
    while let Some(c) = it.next() {
        match c {
            '\\' => toks.push(Tok::Ch(it.next().unwrap_or('\\'))),
            '*' => toks.push(Tok::Star),
            c => toks.push(Tok::Ch(c)),
        }
    }
    let s: Vec<char> = s.chars().collect();
    // Classic wildcard matching with backtracking to the last star.
    let (mut i, mut j) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if j < toks.len() && toks[j] == Tok::Ch(s[i]) {
            i += 1;
            j += 1;
        } else if j < toks.len() && toks[j] == Tok::Star {
            star = Some((j, i));
            j += 1;
        } else if let Some((sj, si)) = star {
            j = sj + 1;
            i = si + 1;
            star = Some((sj, si + 1));
        } else {
            return false;
        }
    }
    while j < toks.len() && toks[j] == Tok::Star {
        j += 1;
    }
    j == toks.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches() {
        assert!(string_matches("log-2024.txt", "log-*.txt"));
        assert!(string_matches("a*b", "a\\*b"));
        assert!(!string_matches("axb", "a\\*b"));
        assert!(string_matches("", "*"));
        assert!(!string_matches("abc", "*d"));
    }

    #[test]
    fn rules() {
        let r = Rule::parse(
            &json!({"And": [{"Variable": "$.a", "NumericGreaterThan": 1},
                            {"Not": {"Variable": "$.b", "StringEquals": "x"}}], "Next": "N"}),
            true,
        )
        .unwrap();
        let ctx = || Value::Null;
        assert!(r.eval(&json!({"a": 2, "b": "y"}), &ctx).unwrap());
        assert!(!r.eval(&json!({"a": 2, "b": "x"}), &ctx).unwrap());
        assert!(r.eval(&json!({"b": "x"}), &ctx).is_err());
        assert!(Rule::parse(&json!({"Variable": "$.a", "Foo": 1}), true).is_err());
    }
}
