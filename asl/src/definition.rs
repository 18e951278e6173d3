//! Loading and validating a state machine definition.
//!
//! [`Definition::parse`] compiles every path, template and Choice rule up
//! front and reports *every* problem at once, each naming the state and the
//! field, so a definition that loads cannot fail later for a structural
//! reason.
//!
//! ```
//! use cutover_asl::Definition;
//! let def = Definition::parse(r#"{"StartAt": "A", "States": {"A": {"Type": "Pass", "End": true}}}"#).unwrap();
//! assert!(def.task_resources().is_empty());
//! let err = Definition::parse(r#"{"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "B"}}}"#).unwrap_err();
//! assert!(err.to_string().contains("States.A.Next"));
//! ```

use crate::choice::Rule;
use crate::error::{ValidationError, ValidationErrors};
use crate::intrinsics::{Intrinsic, looks_like_call};
use crate::jsonpath::JsonPath;
use crate::payload::Template;
use crate::timestamp;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// A validated, compiled state machine definition.
#[derive(Debug, Clone)]
pub struct Definition {
    pub(crate) machine: Arc<Machine>,
    pub(crate) source: Value,
    pub(crate) name: String,
}

#[derive(Debug)]
pub(crate) struct Machine {
    pub(crate) start: usize,
    pub(crate) states: Vec<State>,
    pub(crate) index: HashMap<String, usize>,
    pub(crate) timeout_seconds: Option<u64>,
}

#[derive(Debug)]
pub(crate) enum IoPath {
    Root,
    Null,
    Path(JsonPath),
}

#[derive(Debug, Clone)]
pub(crate) enum ResultPathSpec {
    Discard,
    Path(JsonPath),
}

#[derive(Debug)]
pub(crate) enum StrSource {
    None,
    Lit(String),
    Path(JsonPath),
    Call(Intrinsic),
}

#[derive(Debug)]
pub(crate) enum NumSource {
    Lit(f64),
    Path(JsonPath),
}

#[derive(Debug)]
pub(crate) enum WaitSpec {
    Seconds(u64),
    SecondsPath(JsonPath),
    Timestamp(i128),
    TimestampPath(JsonPath),
}

#[derive(Debug)]
pub(crate) struct Retrier {
    pub(crate) errors: Vec<String>,
    pub(crate) interval: f64,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: f64,
    pub(crate) max_delay: Option<f64>,
    pub(crate) jitter_full: bool,
}

#[derive(Debug)]
pub(crate) struct Catcher {
    pub(crate) errors: Vec<String>,
    pub(crate) next: usize,
    pub(crate) result_path: ResultPathSpec,
}

#[derive(Debug)]
pub(crate) struct MapSpec {
    pub(crate) items_path: Option<JsonPath>,
    pub(crate) item_selector: Option<Template>,
    pub(crate) processor: Arc<Machine>,
    pub(crate) max_concurrency: Option<NumSource>,
    pub(crate) tolerated_count: Option<NumSource>,
    pub(crate) tolerated_pct: Option<NumSource>,
}

#[derive(Debug)]
pub(crate) enum Kind {
    Pass {
        result: Option<Value>,
    },
    Task {
        resource: String,
        timeout: Option<NumSource>,
        heartbeat: Option<NumSource>,
    },
    Choice {
        choices: Vec<(Rule, usize)>,
        default: Option<usize>,
    },
    Wait(WaitSpec),
    Succeed,
    Fail {
        error: StrSource,
        cause: StrSource,
    },
    Parallel {
        branches: Vec<Arc<Machine>>,
    },
    Map(Box<MapSpec>),
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) name: String,
    pub(crate) type_name: &'static str,
    pub(crate) input_path: IoPath,
    pub(crate) output_path: IoPath,
    pub(crate) parameters: Option<Template>,
    pub(crate) result_selector: Option<Template>,
    pub(crate) result_path: ResultPathSpec,
    pub(crate) next: Option<usize>,
    pub(crate) retry: Vec<Retrier>,
    pub(crate) catch: Vec<Catcher>,
    pub(crate) kind: Kind,
}

impl Definition {
    /// Parse and validate a definition from JSON text.
    pub fn parse(text: &str) -> Result<Definition, ValidationErrors> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| ValidationErrors::one("", format!("the definition is not valid JSON: {e}")))?;
        Definition::from_value(&v)
    }

    /// Validate and compile a definition already parsed as JSON.
    pub fn from_value(v: &Value) -> Result<Definition, ValidationErrors> {
        let mut errs = Vec::new();
        let machine = compile_machine(v, "", &mut errs);
        match machine {
            Some(m) if errs.is_empty() => Ok(Definition {
                machine: Arc::new(m),
                source: v.clone(),
                name: "StateMachine".to_string(),
            }),
            _ => {
                if errs.is_empty() {
                    errs.push(ValidationError {
                        location: String::new(),
                        message: "the definition is invalid".into(),
                    });
                }
                Err(ValidationErrors { errors: errs })
            }
        }
    }

    /// Give the state machine a name (used in ARNs and `$$.StateMachine`).
    pub fn with_name(mut self, name: impl Into<String>) -> Definition {
        self.name = name.into();
        self
    }

    /// The state machine's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The definition as JSON, exactly as loaded.
    pub fn source(&self) -> &Value {
        &self.source
    }

    /// Every distinct Task `Resource`, including those inside Parallel
    /// branches and Map processors, in order of first appearance.
    pub fn task_resources(&self) -> Vec<String> {
        let mut out = Vec::new();
        collect_resources(&self.machine, &mut out);
        out
    }

    /// A Mermaid `stateDiagram-v2` of the machine.
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("stateDiagram-v2\n");
        let mut counter = 0usize;
        mermaid(&self.machine, "", &mut out, &mut counter, 1);
        out
    }
}

fn collect_resources(m: &Machine, out: &mut Vec<String>) {
    for s in &m.states {
        match &s.kind {
            Kind::Task { resource, .. } if !out.contains(resource) => out.push(resource.clone()),
            Kind::Parallel { branches } => branches.iter().for_each(|b| collect_resources(b, out)),
            Kind::Map(spec) => collect_resources(&spec.processor, out),
            _ => {}
        }
    }
}

fn mermaid_id(prefix: &str, name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{prefix}{clean}")
}

fn mermaid(m: &Machine, prefix: &str, out: &mut String, counter: &mut usize, depth: usize) {
    let ind = "    ".repeat(depth);
    let id = |i: usize| mermaid_id(prefix, &m.states[i].name);
    for s in &m.states {
        let sid = mermaid_id(prefix, &s.name);
        let label = s.name.replace('"', "'");
        match &s.kind {
            Kind::Parallel { branches } => {
                out.push_str(&format!("{ind}state \"{label} (Parallel)\" as {sid} {{\n"));
                for (n, b) in branches.iter().enumerate() {
                    if n > 0 {
                        out.push_str(&format!("{ind}    --\n"));
                    }
                    *counter += 1;
                    let p = format!("{prefix}b{}_", *counter);
                    mermaid(b, &p, out, counter, depth + 1);
                }
                out.push_str(&format!("{ind}}}\n"));
            }
            Kind::Map(spec) => {
                out.push_str(&format!("{ind}state \"{label} (Map)\" as {sid} {{\n"));
                *counter += 1;
                let p = format!("{prefix}m{}_", *counter);
                mermaid(&spec.processor, &p, out, counter, depth + 1);
                out.push_str(&format!("{ind}}}\n"));
            }
            _ => out.push_str(&format!("{ind}state \"{label} ({})\" as {sid}\n", s.type_name)),
        }
    }
    out.push_str(&format!("{ind}[*] --> {}\n", id(m.start)));
    for (i, s) in m.states.iter().enumerate() {
        let from = id(i);
        match &s.kind {
            Kind::Choice { choices, default } => {
                for (rule, next) in choices {
                    let text: String = rule
                        .describe()
                        .chars()
                        .map(|c| {
                            if matches!(c, '"' | ';' | '#' | '\n') {
                                '\''
                            } else {
                                c
                            }
                        })
                        .collect();
                    out.push_str(&format!("{ind}{from} --> {}: {text}\n", id(*next)));
                }
                if let Some(d) = default {
                    out.push_str(&format!("{ind}{from} --> {}: Default\n", id(*d)));
                }
            }
            Kind::Succeed | Kind::Fail { .. } => out.push_str(&format!("{ind}{from} --> [*]\n")),
            _ => match s.next {
                Some(n) => out.push_str(&format!("{ind}{from} --> {}\n", id(n))),
                None => out.push_str(&format!("{ind}{from} --> [*]\n")),
            },
        }
        for c in &s.catch {
            out.push_str(&format!(
                "{ind}{from} --> {}: catch {}\n",
                id(c.next),
                c.errors.join(", ")
            ));
        }
    }
}

struct Ctx<'e> {
    errs: &'e mut Vec<ValidationError>,
    loc: String,
}

impl Ctx<'_> {
    fn err(&mut self, field: &str, msg: impl Into<String>) {
        let location = if field.is_empty() {
            self.loc.clone()
        } else if self.loc.is_empty() {
            field.to_string()
        } else {
            format!("{}.{field}", self.loc)
        };
        self.errs.push(ValidationError {
            location,
            message: msg.into(),
        });
    }
}

fn join(prefix: &str, rest: &str) -> String {
    if prefix.is_empty() {
        rest.to_string()
    } else {
        format!("{prefix}.{rest}")
    }
}

fn compile_machine(v: &Value, loc: &str, errs: &mut Vec<ValidationError>) -> Option<Machine> {
    let mut cx = Ctx {
        errs,
        loc: loc.to_string(),
    };
    let Value::Object(obj) = v else {
        cx.err("", "a state machine must be a JSON object");
        return None;
    };
    unknown_fields(
        &mut cx,
        obj,
        "",
        &[
            "StartAt",
            "States",
            "Comment",
            "Version",
            "TimeoutSeconds",
            "QueryLanguage",
            "ProcessorConfig",
        ],
    );
    if obj.contains_key("QueryLanguage") && obj.get("QueryLanguage") != Some(&Value::from("JSONPath")) {
        cx.err("QueryLanguage", "only the JSONPath query language is supported");
    }
    let Some(Value::Object(states)) = obj.get("States") else {
        cx.err("States", "'States' must be an object of named states");
        return None;
    };
    if states.is_empty() {
        cx.err("States", "'States' must not be empty");
        return None;
    }
    let index: HashMap<String, usize> = states.keys().enumerate().map(|(i, k)| (k.clone(), i)).collect();
    let start = match obj.get("StartAt") {
        Some(Value::String(s)) => match index.get(s) {
            Some(i) => Some(*i),
            None => {
                cx.err("StartAt", format!("'StartAt' names '{s}', which is not a state"));
                None
            }
        },
        _ => {
            cx.err("StartAt", "'StartAt' (a state name) is required");
            None
        }
    };
    let timeout_seconds = match obj.get("TimeoutSeconds") {
        None => None,
        Some(t) => match t.as_u64() {
            Some(n) if n > 0 => Some(n),
            _ => {
                cx.err("TimeoutSeconds", "'TimeoutSeconds' must be a positive integer");
                None
            }
        },
    };
    let mut out = Vec::with_capacity(states.len());
    for (name, sv) in states {
        let loc = join(loc, &format!("States.{name}"));
        if name.is_empty() || name.chars().count() > 80 {
            cx.errs.push(ValidationError {
                location: loc.clone(),
                message: "state names must be 1 to 80 characters".into(),
            });
        }
        if let Some(s) = compile_state(name, sv, &loc, &index, cx.errs) {
            out.push(s);
        }
    }
    let start = start?;
    if out.len() != states.len() {
        return None;
    }
    // Reachability from StartAt.
    let mut seen = HashSet::new();
    let mut stack = vec![start];
    while let Some(i) = stack.pop() {
        if !seen.insert(i) {
            continue;
        }
        let s = &out[i];
        stack.extend(s.next);
        stack.extend(s.catch.iter().map(|c| c.next));
        if let Kind::Choice { choices, default } = &s.kind {
            stack.extend(choices.iter().map(|(_, n)| *n));
            stack.extend(*default);
        }
    }
    for (i, s) in out.iter().enumerate() {
        if !seen.contains(&i) {
            cx.errs.push(ValidationError {
                location: join(loc, &format!("States.{}", s.name)),
                message: format!("state '{}' is unreachable from StartAt", s.name),
            });
        }
    }
    Some(Machine {
        start,
        states: out,
        index,
        timeout_seconds,
    })
}

const TYPES: &[&str] = &[
    "Pass", "Task", "Choice", "Wait", "Succeed", "Fail", "Parallel", "Map",
];

fn compile_state(
    name: &str,
    v: &Value,
    loc: &str,
    index: &HashMap<String, usize>,
    errs: &mut Vec<ValidationError>,
) -> Option<State> {
    let before = errs.len();
    let mut cx = Ctx {
        errs,
        loc: loc.to_string(),
    };
    let Value::Object(o) = v else {
        cx.err("", "a state must be a JSON object");
        return None;
    };
    let ty = match o.get("Type") {
        Some(Value::String(t)) => match TYPES.iter().find(|x| **x == t) {
            Some(t) => *t,
            None => {
                cx.err(
                    "Type",
                    format!("unknown state Type '{t}' (expected one of {})", TYPES.join(", ")),
                );
                return None;
            }
        },
        _ => {
            cx.err("Type", "'Type' is required");
            return None;
        }
    };
    let allowed: &[&str] = match ty {
        "Pass" => &[
            "Next",
            "End",
            "InputPath",
            "OutputPath",
            "Parameters",
            "Result",
            "ResultPath",
        ],
        "Task" => &[
            "Next",
            "End",
            "InputPath",
            "OutputPath",
            "Parameters",
            "ResultSelector",
            "ResultPath",
            "Retry",
            "Catch",
            "Resource",
            "TimeoutSeconds",
            "TimeoutSecondsPath",
            "HeartbeatSeconds",
            "HeartbeatSecondsPath",
            "Credentials",
        ],
        "Choice" => &["InputPath", "OutputPath", "Choices", "Default"],
        "Wait" => &[
            "Next",
            "End",
            "InputPath",
            "OutputPath",
            "Seconds",
            "SecondsPath",
            "Timestamp",
            "TimestampPath",
        ],
        "Succeed" => &["InputPath", "OutputPath"],
        "Fail" => &["Error", "ErrorPath", "Cause", "CausePath"],
        "Parallel" => &[
            "Next",
            "End",
            "InputPath",
            "OutputPath",
            "Parameters",
            "ResultSelector",
            "ResultPath",
            "Retry",
            "Catch",
            "Branches",
        ],
        _ => &[
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
    };
    unknown_fields(&mut cx, o, &format!("{ty} state"), allowed);
    let terminal = matches!(ty, "Succeed" | "Fail");
    let mut next = None;
    if ty == "Choice" || terminal {
        for f in ["Next", "End"] {
            if o.contains_key(f) {
                cx.err(f, format!("a {ty} state must not have '{f}'"));
            }
        }
    } else {
        match (o.get("Next"), o.get("End")) {
            (Some(Value::String(n)), None) | (Some(Value::String(n)), Some(Value::Bool(false))) => {
                match index.get(n) {
                    Some(i) => next = Some(*i),
                    None => cx.err("Next", format!("'Next' names '{n}', which is not a state")),
                }
            }
            (None, Some(Value::Bool(true))) => {}
            (Some(_), Some(Value::Bool(true))) => cx.err("Next", "a state cannot have both 'Next' and 'End'"),
            (None, _) => cx.err("Next", "a non-terminal state needs 'Next' or \"End\": true"),
            (Some(_), _) => cx.err("Next", "'Next' must be a state name"),
        }
    }
    let allows_io = ty != "Fail";
    let input_path = if allows_io {
        io_path(&mut cx, o, "InputPath")
    } else {
        IoPath::Root
    };
    let output_path = if allows_io {
        io_path(&mut cx, o, "OutputPath")
    } else {
        IoPath::Root
    };
    let may = |f: &str| match f {
        "Parameters" => matches!(ty, "Pass" | "Task" | "Parallel" | "Map"),
        "ResultSelector" => matches!(ty, "Task" | "Parallel" | "Map"),
        "ResultPath" => matches!(ty, "Pass" | "Task" | "Parallel" | "Map"),
        "Retry" | "Catch" => matches!(ty, "Task" | "Parallel" | "Map"),
        _ => true,
    };
    for f in ["Parameters", "ResultSelector", "ResultPath", "Retry", "Catch"] {
        if o.contains_key(f) && !may(f) {
            cx.err(f, format!("a {ty} state cannot have '{f}'"));
        }
    }
    let template = |cx: &mut Ctx<'_>, f: &str| -> Option<Template> {
        let v = o.get(f)?;
        if !(v.is_object() || (ty == "Map" && f == "ItemSelector")) {
            cx.err(f, format!("'{f}' must be an object"));
            return None;
        }
        match Template::compile(v) {
            Ok(t) => Some(t),
            Err(e) => {
                cx.err(f, e);
                None
            }
        }
    };
    let parameters = if ty == "Map" {
        None
    } else {
        template(&mut cx, "Parameters")
    };
    let result_selector = template(&mut cx, "ResultSelector");
    let result_path = result_path(&mut cx, o.get("ResultPath"), "ResultPath");
    let retry = retriers(&mut cx, o.get("Retry"));
    let catch = catchers(&mut cx, o.get("Catch"), index);

    let kind = match ty {
        "Pass" => Kind::Pass {
            result: o.get("Result").cloned(),
        },
        "Task" => {
            let resource = match o.get("Resource") {
                Some(Value::String(r)) if !r.is_empty() => r.clone(),
                _ => {
                    cx.err("Resource", "a Task state needs a 'Resource' string");
                    String::new()
                }
            };
            let timeout = num_source(&mut cx, o, "TimeoutSeconds", true);
            let heartbeat = num_source(&mut cx, o, "HeartbeatSeconds", true);
            if let (Some(NumSource::Lit(t)), Some(NumSource::Lit(h))) = (&timeout, &heartbeat)
                && h >= t
            {
                cx.err(
                    "HeartbeatSeconds",
                    "'HeartbeatSeconds' must be smaller than 'TimeoutSeconds'",
                );
            }
            Kind::Task {
                resource,
                timeout,
                heartbeat,
            }
        }
        "Choice" => {
            let mut choices = Vec::new();
            match o.get("Choices") {
                Some(Value::Array(a)) if !a.is_empty() => {
                    for (n, c) in a.iter().enumerate() {
                        let f = format!("Choices[{n}]");
                        let next = match c.get("Next") {
                            Some(Value::String(s)) => match index.get(s) {
                                Some(i) => Some(*i),
                                None => {
                                    cx.err(
                                        &format!("{f}.Next"),
                                        format!("'Next' names '{s}', which is not a state"),
                                    );
                                    None
                                }
                            },
                            _ => {
                                cx.err(&format!("{f}.Next"), "each Choice rule needs 'Next'");
                                None
                            }
                        };
                        match Rule::parse(c, true) {
                            Ok(r) => {
                                if let Some(n) = next {
                                    choices.push((r, n));
                                }
                            }
                            Err(e) => cx.err(&f, e),
                        }
                    }
                }
                _ => cx.err("Choices", "a Choice state needs a non-empty 'Choices' array"),
            }
            let default = match o.get("Default") {
                None => None,
                Some(Value::String(s)) => match index.get(s) {
                    Some(i) => Some(*i),
                    None => {
                        cx.err("Default", format!("'Default' names '{s}', which is not a state"));
                        None
                    }
                },
                Some(_) => {
                    cx.err("Default", "'Default' must be a state name");
                    None
                }
            };
            Kind::Choice { choices, default }
        }
        "Wait" => {
            let fields: Vec<&str> = ["Seconds", "SecondsPath", "Timestamp", "TimestampPath"]
                .into_iter()
                .filter(|f| o.contains_key(*f))
                .collect();
            if fields.len() != 1 {
                cx.err(
                    "",
                    "a Wait state needs exactly one of Seconds, SecondsPath, Timestamp, TimestampPath",
                );
                Kind::Wait(WaitSpec::Seconds(0))
            } else {
                let f = fields[0];
                let v = &o[f];
                let spec = match f {
                    "Seconds" => match v.as_u64() {
                        Some(n) => WaitSpec::Seconds(n),
                        None => {
                            cx.err(f, "'Seconds' must be a non-negative integer");
                            WaitSpec::Seconds(0)
                        }
                    },
                    "Timestamp" => match v.as_str().and_then(timestamp::parse) {
                        Some(t) => WaitSpec::Timestamp(t),
                        None => {
                            cx.err(f, "'Timestamp' must be an ISO-8601 date-time with offset");
                            WaitSpec::Seconds(0)
                        }
                    },
                    _ => match path_field(&mut cx, v, f) {
                        Some(p) if f == "SecondsPath" => WaitSpec::SecondsPath(p),
                        Some(p) => WaitSpec::TimestampPath(p),
                        None => WaitSpec::Seconds(0),
                    },
                };
                Kind::Wait(spec)
            }
        }
        "Succeed" => Kind::Succeed,
        "Fail" => {
            let error = str_source(&mut cx, o, "Error", "ErrorPath");
            let cause = str_source(&mut cx, o, "Cause", "CausePath");
            Kind::Fail { error, cause }
        }
        "Parallel" => {
            let mut branches = Vec::new();
            match o.get("Branches") {
                Some(Value::Array(a)) if !a.is_empty() => {
                    for (n, b) in a.iter().enumerate() {
                        let l = format!("{loc}.Branches[{n}]");
                        if let Some(m) = compile_machine(b, &l, cx.errs) {
                            branches.push(Arc::new(m));
                        }
                    }
                }
                _ => cx.err("Branches", "a Parallel state needs a non-empty 'Branches' array"),
            }
            Kind::Parallel { branches }
        }
        "Map" => {
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
            let processor = pv.and_then(|p| compile_machine(p, &format!("{loc}.{pf}"), cx.errs));
            let items_path = o
                .get("ItemsPath")
                .and_then(|v| path_field(&mut cx, v, "ItemsPath"));
            let item_selector = if o.contains_key("ItemSelector") && o.contains_key("Parameters") {
                cx.err(
                    "ItemSelector",
                    "use either 'ItemSelector' or legacy 'Parameters', not both",
                );
                None
            } else if o.contains_key("ItemSelector") {
                template(&mut cx, "ItemSelector")
            } else {
                template(&mut cx, "Parameters")
            };
            let max_concurrency = num_source(&mut cx, o, "MaxConcurrency", false);
            let tolerated_count = num_source(&mut cx, o, "ToleratedFailureCount", false);
            let tolerated_pct = num_source(&mut cx, o, "ToleratedFailurePercentage", false);
            if let Some(NumSource::Lit(p)) = tolerated_pct
                && !(0.0..=100.0).contains(&p)
            {
                cx.err("ToleratedFailurePercentage", "must be between 0 and 100");
            }
            match processor {
                Some(p) => Kind::Map(Box::new(MapSpec {
                    items_path,
                    item_selector,
                    processor: Arc::new(p),
                    max_concurrency,
                    tolerated_count,
                    tolerated_pct,
                })),
                None => return None,
            }
        }
        _ => return None,
    };
    if errs_len(&cx) != before {
        return None;
    }
    Some(State {
        name: name.to_string(),
        type_name: ty,
        input_path,
        output_path,
        parameters,
        result_selector,
        result_path,
        next,
        retry,
        catch,
        kind,
    })
}

/// Reject fields a state type does not have (typos would otherwise be
/// silently ignored). `Comment` is allowed everywhere; JSONata and
/// variables get a specific message.
fn unknown_fields(cx: &mut Ctx<'_>, o: &Map<String, Value>, what: &str, allowed: &[&str]) {
    for k in o.keys() {
        if k == "Comment" || k == "Type" || allowed.contains(&k.as_str()) {
            continue;
        }
        if matches!(k.as_str(), "Assign" | "Arguments" | "Output" | "Items") {
            cx.err(
                k,
                format!("'{k}' (JSONata / variables) is not supported: only the JSONPath query language is"),
            );
        } else if what.is_empty() {
            cx.err(k, format!("unknown field '{k}' in a state machine"));
        } else {
            cx.err(k, format!("unknown field '{k}' in a {what}"));
        }
    }
}

fn errs_len(cx: &Ctx<'_>) -> usize {
    cx.errs.len()
}

fn path_field(cx: &mut Ctx<'_>, v: &Value, f: &str) -> Option<JsonPath> {
    match v {
        Value::String(s) => match JsonPath::parse(s) {
            Ok(p) => Some(p),
            Err(e) => {
                cx.err(f, e);
                None
            }
        },
        _ => {
            cx.err(f, format!("'{f}' must be a JSONPath string"));
            None
        }
    }
}

fn io_path(cx: &mut Ctx<'_>, o: &Map<String, Value>, f: &str) -> IoPath {
    match o.get(f) {
        None => IoPath::Root,
        Some(Value::Null) => IoPath::Null,
        Some(v) => match path_field(cx, v, f) {
            Some(p) => IoPath::Path(p),
            None => IoPath::Root,
        },
    }
}

fn result_path(cx: &mut Ctx<'_>, v: Option<&Value>, f: &str) -> ResultPathSpec {
    let root = || ResultPathSpec::Path(JsonPath::parse("$").expect("'$' parses"));
    match v {
        None => root(),
        Some(Value::Null) => ResultPathSpec::Discard,
        Some(v) => match path_field(cx, v, f) {
            Some(p) if p.is_reference() => ResultPathSpec::Path(p),
            Some(p) => {
                cx.err(
                    f,
                    format!("'{p}' is not a reference path (only member names and indexes are allowed)"),
                );
                root()
            }
            None => root(),
        },
    }
}

fn num_source(cx: &mut Ctx<'_>, o: &Map<String, Value>, f: &str, positive: bool) -> Option<NumSource> {
    let pf = format!("{f}Path");
    match (o.get(f), o.get(&pf)) {
        (Some(_), Some(_)) => {
            cx.err(f, format!("use either '{f}' or '{pf}', not both"));
            None
        }
        (Some(v), None) => match v.as_f64() {
            Some(n) if n >= 0.0 && (!positive || n > 0.0) => Some(NumSource::Lit(n)),
            _ => {
                cx.err(
                    f,
                    format!(
                        "'{f}' must be a {} number",
                        if positive { "positive" } else { "non-negative" }
                    ),
                );
                None
            }
        },
        (None, Some(v)) => path_field(cx, v, &pf).map(NumSource::Path),
        (None, None) => None,
    }
}

fn str_source(cx: &mut Ctx<'_>, o: &Map<String, Value>, f: &str, pf: &str) -> StrSource {
    match (o.get(f), o.get(pf)) {
        (Some(_), Some(_)) => {
            cx.err(f, format!("use either '{f}' or '{pf}', not both"));
            StrSource::None
        }
        (Some(Value::String(s)), None) => StrSource::Lit(s.clone()),
        (Some(_), None) => {
            cx.err(f, format!("'{f}' must be a string"));
            StrSource::None
        }
        (None, Some(Value::String(s))) => {
            if looks_like_call(s) {
                match Intrinsic::parse(s) {
                    Ok(i) => StrSource::Call(i),
                    Err(e) => {
                        cx.err(pf, e);
                        StrSource::None
                    }
                }
            } else {
                match JsonPath::parse(s) {
                    Ok(p) => StrSource::Path(p),
                    Err(e) => {
                        cx.err(pf, e);
                        StrSource::None
                    }
                }
            }
        }
        (None, Some(_)) => {
            cx.err(pf, format!("'{pf}' must be a path string"));
            StrSource::None
        }
        (None, None) => StrSource::None,
    }
}

fn error_equals(cx: &mut Ctx<'_>, v: &Value, f: &str) -> Vec<String> {
    match v.get("ErrorEquals") {
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_string) => {
            let names: Vec<String> = a.iter().filter_map(|s| s.as_str().map(String::from)).collect();
            if names.iter().any(|n| n == "States.ALL") && names.len() > 1 {
                cx.err(&format!("{f}.ErrorEquals"), "'States.ALL' must appear alone");
            }
            names
        }
        _ => {
            cx.err(
                &format!("{f}.ErrorEquals"),
                "'ErrorEquals' must be a non-empty array of error names",
            );
            Vec::new()
        }
    }
}

fn retriers(cx: &mut Ctx<'_>, v: Option<&Value>) -> Vec<Retrier> {
    let Some(v) = v else { return Vec::new() };
    let Value::Array(a) = v else {
        cx.err("Retry", "'Retry' must be an array");
        return Vec::new();
    };
    let mut out = Vec::new();
    for (n, r) in a.iter().enumerate() {
        let f = format!("Retry[{n}]");
        let Value::Object(ro) = r else {
            cx.err(&f, "a retrier must be an object");
            continue;
        };
        let before = cx.loc.clone();
        cx.loc = join(&before, &f);
        unknown_fields(
            cx,
            ro,
            "retrier",
            &[
                "ErrorEquals",
                "IntervalSeconds",
                "MaxAttempts",
                "BackoffRate",
                "MaxDelaySeconds",
                "JitterStrategy",
            ],
        );
        cx.loc = before;
        let errors = error_equals(cx, r, &f);
        if errors.iter().any(|e| e == "States.ALL") && n + 1 != a.len() {
            cx.err(&f, "a retrier with 'States.ALL' must be the last one");
        }
        let num = |cx: &mut Ctx<'_>, k: &str, d: f64, min: f64| -> f64 {
            match r.get(k) {
                None => d,
                Some(x) => match x.as_f64() {
                    Some(n) if n >= min => n,
                    _ => {
                        cx.err(&format!("{f}.{k}"), format!("'{k}' must be a number >= {min}"));
                        d
                    }
                },
            }
        };
        let interval = num(cx, "IntervalSeconds", 1.0, 1.0);
        let max_attempts = num(cx, "MaxAttempts", 3.0, 0.0) as u32;
        let backoff = num(cx, "BackoffRate", 2.0, 1.0);
        let max_delay = r
            .get("MaxDelaySeconds")
            .map(|_| num(cx, "MaxDelaySeconds", 0.0, 1.0));
        let jitter_full = match r.get("JitterStrategy") {
            None => false,
            Some(Value::String(s)) if s == "FULL" => true,
            Some(Value::String(s)) if s == "NONE" => false,
            Some(_) => {
                cx.err(
                    &format!("{f}.JitterStrategy"),
                    "'JitterStrategy' must be FULL or NONE",
                );
                false
            }
        };
        out.push(Retrier {
            errors,
            interval,
            max_attempts,
            backoff,
            max_delay,
            jitter_full,
        });
    }
    out
}

fn catchers(cx: &mut Ctx<'_>, v: Option<&Value>, index: &HashMap<String, usize>) -> Vec<Catcher> {
    let Some(v) = v else { return Vec::new() };
    let Value::Array(a) = v else {
        cx.err("Catch", "'Catch' must be an array");
        return Vec::new();
    };
    let mut out = Vec::new();
    for (n, c) in a.iter().enumerate() {
        let f = format!("Catch[{n}]");
        let Value::Object(co) = c else {
            cx.err(&f, "a catcher must be an object");
            continue;
        };
        let before = cx.loc.clone();
        cx.loc = join(&before, &f);
        unknown_fields(cx, co, "catcher", &["ErrorEquals", "Next", "ResultPath"]);
        cx.loc = before;
        let errors = error_equals(cx, c, &f);
        if errors.iter().any(|e| e == "States.ALL") && n + 1 != a.len() {
            cx.err(&f, "a catcher with 'States.ALL' must be the last one");
        }
        let next = match c.get("Next") {
            Some(Value::String(s)) => match index.get(s) {
                Some(i) => Some(*i),
                None => {
                    cx.err(
                        &format!("{f}.Next"),
                        format!("'Next' names '{s}', which is not a state"),
                    );
                    None
                }
            },
            _ => {
                cx.err(&format!("{f}.Next"), "a catcher needs 'Next'");
                None
            }
        };
        let result_path = result_path(cx, c.get("ResultPath"), &format!("{f}.ResultPath"));
        if let Some(next) = next {
            out.push(Catcher {
                errors,
                next,
                result_path,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reports_every_problem() {
        let err = Definition::from_value(&json!({
            "StartAt": "A",
            "States": {
                "A": {"Type": "Pass", "Next": "Nope"},
                "B": {"Type": "Bogus"},
                "C": {"Type": "Task", "End": true, "InputPath": "no-dollar"},
                "D": {"Type": "Choice", "Choices": [{"Variable": "$.x", "Wat": 1, "Next": "A"}]},
                "E": {"Type": "Wait", "End": true},
                "F": {"Type": "Task", "Resource": "r", "End": true, "TimeoutSecond": 5,
                      "Retry": [{"ErrorEquals": ["States.ALL"], "MaxAttempt": 2}]}
            }
        }))
        .unwrap_err();
        let text = err.to_string();
        for needle in [
            "States.A.Next",
            "States.B.Type",
            "States.C.Resource",
            "States.C.InputPath",
            "States.D.Choices[0]",
            "States.E",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
    }

    #[test]
    fn unreachable_and_mermaid() {
        let err = Definition::from_value(&json!({
            "StartAt": "A",
            "States": {"A": {"Type": "Succeed"}, "B": {"Type": "Succeed"}}
        }))
        .unwrap_err();
        assert!(err.to_string().contains("unreachable"));
        let def = Definition::from_value(&json!({
            "StartAt": "A",
            "States": {
                "A": {"Type": "Task", "Resource": "shift", "Next": "B",
                      "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "F"}]},
                "B": {"Type": "Choice", "Choices": [{"Variable": "$.ok", "BooleanEquals": true, "Next": "S"}], "Default": "F"},
                "S": {"Type": "Succeed"},
                "F": {"Type": "Fail", "Error": "X"}
            }
        }))
        .unwrap();
        let m = def.to_mermaid();
        assert!(m.contains("[*] --> A"));
        assert!(m.contains("A --> F: catch States.ALL"));
        assert_eq!(def.task_resources(), vec!["shift".to_string()]);
        assert!(Definition::parse("not json").is_err());
        assert!(Definition::parse("[]").is_err());
    }
}
