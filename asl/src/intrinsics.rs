//! Intrinsic functions (`States.Format(...)`, `States.Array(...)`, …) as
//! they appear in `.$` payload-template fields, `ErrorPath` and `CausePath`.
//!
//! ```
//! use cutover_asl::intrinsics::Intrinsic;
//! let f = Intrinsic::parse("States.Format('Hello {}', $.name)").unwrap();
//! let out = f.eval(&serde_json::json!({"name": "you"}), &serde_json::Value::Null).unwrap();
//! assert_eq!(out, serde_json::json!("Hello you"));
//! ```

use crate::jsonpath::JsonPath;
use base64::Engine as _;
use serde_json::{Number, Value};
use std::sync::atomic::{AtomicU64, Ordering};

/// A parsed intrinsic function call.
#[derive(Debug, Clone, PartialEq)]
pub struct Intrinsic {
    name: String,
    args: Vec<Arg>,
    src: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Arg {
    Lit(Value),
    Path(JsonPath),
    Call(Box<Intrinsic>),
}

const FUNCTIONS: &[&str] = &[
    "States.Format",
    "States.StringToJson",
    "States.JsonToString",
    "States.Array",
    "States.ArrayPartition",
    "States.ArrayContains",
    "States.ArrayRange",
    "States.ArrayGetItem",
    "States.ArrayLength",
    "States.ArrayUnique",
    "States.Base64Encode",
    "States.Base64Decode",
    "States.Hash",
    "States.JsonMerge",
    "States.MathRandom",
    "States.MathAdd",
    "States.StringSplit",
    "States.UUID",
];

/// Whether `s` looks like an intrinsic function call rather than a path.
pub fn looks_like_call(s: &str) -> bool {
    s.trim_start().starts_with("States.")
}

impl Intrinsic {
    /// Parse a whole intrinsic call; trailing text is an error.
    pub fn parse(src: &str) -> Result<Intrinsic, String> {
        let chars: Vec<char> = src.trim().chars().collect();
        let mut pos = 0;
        let f = parse_call(&chars, &mut pos, src, 0)?;
        skip_ws(&chars, &mut pos);
        if pos != chars.len() {
            return Err(format!("unexpected text after the intrinsic function in '{src}'"));
        }
        Ok(f)
    }

    /// The source text.
    pub fn as_str(&self) -> &str {
        &self.src
    }

    /// Whether any argument reads the context object.
    pub fn uses_context(&self) -> bool {
        self.args.iter().any(|a| match a {
            Arg::Path(p) => p.is_context(),
            Arg::Call(c) => c.uses_context(),
            Arg::Lit(_) => false,
        })
    }

    /// Evaluate against the state input and the context object. The error is
    /// a cause message for `States.IntrinsicFailure` / `States.Runtime`.
    pub fn eval(&self, input: &Value, context: &Value) -> Result<Value, IntrinsicError> {
        let mut args = Vec::with_capacity(self.args.len());
        for a in &self.args {
            args.push(match a {
                Arg::Lit(v) => v.clone(),
                Arg::Path(p) => {
                    let root = if p.is_context() { context } else { input };
                    p.select(root)
                        .ok_or_else(|| IntrinsicError::PathNotFound(p.to_string()))?
                }
                Arg::Call(c) => c.eval(input, context)?,
            });
        }
        call(&self.name, args)
            .map_err(|m| IntrinsicError::Failure(format!("The function '{}' {m}", self.src.trim())))
    }
}

/// Why an intrinsic function could not be evaluated.
#[derive(Debug, Clone, PartialEq)]
pub enum IntrinsicError {
    /// An argument path selected nothing.
    PathNotFound(String),
    /// The function rejected its arguments.
    Failure(String),
}

fn skip_ws(c: &[char], pos: &mut usize) {
    while *pos < c.len() && c[*pos].is_whitespace() {
        *pos += 1;
    }
}

/// Intrinsic calls may nest; bound the recursion for hostile input.
const MAX_DEPTH: usize = 16;

fn parse_call(c: &[char], pos: &mut usize, src: &str, depth: usize) -> Result<Intrinsic, String> {
    if depth > MAX_DEPTH {
        return Err(format!("intrinsic functions nest too deeply in '{src}'"));
    }
    skip_ws(c, pos);
    let start = *pos;
    while *pos < c.len() && (c[*pos].is_alphanumeric() || c[*pos] == '.') {
        *pos += 1;
    }
    let name: String = c[start..*pos].iter().collect();
    if !FUNCTIONS.contains(&name.as_str()) {
        return Err(format!("unknown intrinsic function '{name}' in '{src}'"));
    }
    skip_ws(c, pos);
    if c.get(*pos) != Some(&'(') {
        return Err(format!("expected '(' after {name} in '{src}'"));
    }
    *pos += 1;
    let mut args = Vec::new();
    skip_ws(c, pos);
    if c.get(*pos) == Some(&')') {
        *pos += 1;
    } else {
        loop {
            skip_ws(c, pos);
            args.push(parse_arg(c, pos, src, depth)?);
            skip_ws(c, pos);
            match c.get(*pos) {
                Some(',') => *pos += 1,
                Some(')') => {
                    *pos += 1;
                    break;
                }
                _ => return Err(format!("expected ',' or ')' in '{src}'")),
            }
        }
    }
    let text: String = c[start..*pos].iter().collect();
    let f = Intrinsic {
        name,
        args,
        src: text,
    };
    check_arity(&f).map_err(|m| format!("{m} in '{src}'"))?;
    Ok(f)
}

fn check_arity(f: &Intrinsic) -> Result<(), String> {
    let n = f.args.len();
    let ok = match f.name.as_str() {
        "States.Format" => n >= 1,
        "States.Array" => true,
        "States.UUID" => n == 0,
        "States.StringToJson"
        | "States.JsonToString"
        | "States.ArrayLength"
        | "States.ArrayUnique"
        | "States.Base64Encode"
        | "States.Base64Decode" => n == 1,
        "States.ArrayPartition"
        | "States.ArrayContains"
        | "States.ArrayGetItem"
        | "States.Hash"
        | "States.MathAdd"
        | "States.StringSplit" => n == 2,
        "States.ArrayRange" | "States.JsonMerge" => n == 3,
        "States.MathRandom" => n == 2 || n == 3,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{} was given {n} argument(s)", f.name))
    }
}

fn parse_arg(c: &[char], pos: &mut usize, src: &str, depth: usize) -> Result<Arg, String> {
    match c.get(*pos) {
        Some('\'') => {
            *pos += 1;
            let mut s = String::new();
            loop {
                let ch = *c
                    .get(*pos)
                    .ok_or_else(|| format!("unterminated string in '{src}'"))?;
                *pos += 1;
                match ch {
                    '\\' => {
                        let n = *c
                            .get(*pos)
                            .ok_or_else(|| format!("unterminated string in '{src}'"))?;
                        *pos += 1;
                        // `\{` and `\}` stay escaped so States.Format can
                        // tell them from placeholders.
                        if n == '{' || n == '}' {
                            s.push('\\');
                        }
                        s.push(n);
                    }
                    '\'' => break,
                    other => s.push(other),
                }
            }
            Ok(Arg::Lit(Value::String(s)))
        }
        Some('$') => {
            let start = *pos;
            let mut depth = 0i32;
            let mut quote: Option<char> = None;
            while let Some(&ch) = c.get(*pos) {
                if let Some(q) = quote {
                    if ch == '\\' {
                        *pos += 1;
                    } else if ch == q {
                        quote = None;
                    }
                } else {
                    match ch {
                        '\'' | '"' => quote = Some(ch),
                        '[' | '(' => depth += 1,
                        ']' => depth -= 1,
                        ')' if depth > 0 => depth -= 1,
                        ',' | ')' if depth == 0 => break,
                        _ => {}
                    }
                }
                *pos += 1;
            }
            let text: String = c[start..*pos].iter().collect();
            Ok(Arg::Path(JsonPath::parse(text.trim())?))
        }
        Some('S') => Ok(Arg::Call(Box::new(parse_call(c, pos, src, depth + 1)?))),
        Some(_) => {
            let start = *pos;
            while let Some(&ch) = c.get(*pos) {
                if ch == ',' || ch == ')' || ch.is_whitespace() {
                    break;
                }
                *pos += 1;
            }
            let text: String = c[start..*pos].iter().collect();
            match serde_json::from_str::<Value>(&text) {
                Ok(v @ (Value::Number(_) | Value::Bool(_) | Value::Null)) => Ok(Arg::Lit(v)),
                _ => Err(format!("invalid argument '{text}' in '{src}'")),
            }
        }
        None => Err(format!("unexpected end of '{src}'")),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn want_str(v: &Value, what: &str) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(format!(
            "expected {what} to be a string, got {}",
            type_name(other)
        )),
    }
}

fn want_arr(v: Value, what: &str) -> Result<Vec<Value>, String> {
    match v {
        Value::Array(a) => Ok(a),
        other => Err(format!(
            "expected {what} to be an array, got {}",
            type_name(&other)
        )),
    }
}

fn want_int(v: &Value, what: &str) -> Result<i64, String> {
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(i)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.fract() == 0.0 && f.abs() < 9e15 {
                    Ok(f as i64)
                } else {
                    Err(format!("expected {what} to be an integer, got {n}"))
                }
            }
        }
        other => Err(format!(
            "expected {what} to be an integer, got {}",
            type_name(other)
        )),
    }
}

fn want_num(v: &Value, what: &str) -> Result<f64, String> {
    match v {
        Value::Number(n) => Ok(n.as_f64().unwrap_or(0.0)),
        other => Err(format!(
            "expected {what} to be a number, got {}",
            type_name(other)
        )),
    }
}

// Java's Math.round: half-way cases go towards positive infinity.
fn round_half_up(f: f64) -> i64 {
    (f + 0.5).floor() as i64
}

/// An argument as `States.Format` writes it: strings as they are, and objects and arrays the way
/// Step Functions (Java) prints them — `{Arg1=1, Arg2=[a, b]}`, not JSON.
fn format_arg(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(format_arg).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(fields) => {
            let fields: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("{k}={}", format_arg(v)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
        other => other.to_string(),
    }
}

static RNG_STATE: AtomicU64 = AtomicU64::new(0);

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A process-wide pseudo-random number (splitmix64 over a counter seeded
/// from the wall clock). Good enough for UUIDs, jitter and MathRandom.
pub(crate) fn random_u64() -> u64 {
    if RNG_STATE.load(Ordering::Relaxed) == 0 {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1;
        let _ = RNG_STATE.compare_exchange(0, seed, Ordering::Relaxed, Ordering::Relaxed);
    }
    let s = RNG_STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    splitmix(s)
}

/// A random version-4 UUID.
pub(crate) fn uuid_v4() -> String {
    let a = random_u64();
    let b = random_u64();
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_be_bytes());
    bytes[8..].copy_from_slice(&b.to_be_bytes());
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let h: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Run the intrinsic `name` on its evaluated arguments (their count is
/// checked at parse time); `Err` ends the cause "The function '…' …".
fn call(name: &str, mut args: Vec<Value>) -> Result<Value, String> {
    let v = match name {
        "States.Format" => format_string(&args)?,
        "States.StringToJson" => {
            let s = want_str(&args[0], "the argument")?;
            if s.trim().is_empty() {
                Value::Null
            } else {
                let parsed: Value =
                    serde_json::from_str(&s).map_err(|e| format!("could not parse JSON: {e}"))?;
                // Step Functions reads "-0" as the integer 0, not the float -0.0.
                match parsed.as_f64() {
                    Some(z) if z == 0.0 && z.is_sign_negative() => Value::from(0),
                    _ => parsed,
                }
            }
        }
        "States.JsonToString" => Value::String(args[0].to_string()),
        "States.Array" => Value::Array(args),
        "States.ArrayPartition" => {
            let size = want_int(&args[1], "the chunk size")?;
            if size <= 0 {
                return Err(format!("requires a chunk size greater than 0, got {size}"));
            }
            let arr = want_arr(args.swap_remove(0), "the first argument")?;
            Value::Array(
                arr.chunks(size as usize)
                    .map(|c| Value::Array(c.to_vec()))
                    .collect(),
            )
        }
        "States.ArrayContains" => {
            let needle = args.pop().unwrap_or(Value::Null);
            let arr = want_arr(args.swap_remove(0), "the first argument")?;
            Value::Bool(arr.contains(&needle))
        }
        "States.ArrayRange" => array_range(&args)?,
        "States.ArrayGetItem" => {
            let idx = want_int(&args[1], "the index")?;
            let arr = want_arr(args.swap_remove(0), "the first argument")?;
            if idx < 0 || idx as usize >= arr.len() {
                return Err(format!(
                    "was given index {idx} out of bounds for an array of length {}",
                    arr.len()
                ));
            }
            arr[idx as usize].clone()
        }
        "States.ArrayLength" => Value::from(want_arr(args.swap_remove(0), "the argument")?.len()),
        "States.ArrayUnique" => {
            let arr = want_arr(args.swap_remove(0), "the argument")?;
            let mut out: Vec<Value> = Vec::new();
            for v in arr {
                if !out.contains(&v) {
                    out.push(v);
                }
            }
            Value::Array(out)
        }
        "States.Base64Encode" => {
            let s = want_str(&args[0], "the argument")?;
            if s.len() > 10_000 {
                return Err("was given more than 10000 characters".into());
            }
            Value::String(base64::engine::general_purpose::STANDARD.encode(s))
        }
        "States.Base64Decode" => base64_decode(&args)?,
        "States.Hash" => hash(&args)?,
        "States.JsonMerge" => json_merge(args)?,
        "States.MathRandom" => math_random(&args)?,
        "States.MathAdd" => {
            let a = round_half_up(want_num(&args[0], "the first argument")?);
            let b = round_half_up(want_num(&args[1], "the second argument")?);
            Value::Number(Number::from(a.saturating_add(b)))
        }
        "States.StringSplit" => {
            let s = want_str(&args[0], "the first argument")?;
            let d = want_str(&args[1], "the delimiter")?;
            Value::Array(
                s.split(|c| d.contains(c))
                    .filter(|p| !p.is_empty())
                    .map(|p| Value::String(p.to_string()))
                    .collect(),
            )
        }
        "States.UUID" => Value::String(uuid_v4()),
        other => return Err(format!("is unknown ({other})")),
    };
    Ok(v)
}

fn format_string(args: &[Value]) -> Result<Value, String> {
    let tpl = want_str(&args[0], "the format string")?;
    let mut out = String::new();
    let mut rest = args[1..].iter();
    let mut chars = tpl.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            '{' if chars.peek() == Some(&'}') => {
                chars.next();
                let a = rest
                    .next()
                    .ok_or("has more placeholders '{}' than arguments".to_string())?;
                out.push_str(&format_arg(a));
            }
            other => out.push(other),
        }
    }
    if rest.next().is_some() {
        return Err("has more arguments than placeholders '{}'".into());
    }
    Ok(Value::String(out))
}

fn array_range(args: &[Value]) -> Result<Value, String> {
    let first = want_int(&args[0], "the first argument")?;
    let last = want_int(&args[1], "the second argument")?;
    let step = want_int(&args[2], "the step")?;
    if step == 0 {
        return Err("requires a non-zero step".into());
    }
    let mut out = Vec::new();
    let mut i = first;
    while (step > 0 && i <= last) || (step < 0 && i >= last) {
        out.push(Value::from(i));
        if out.len() > 1000 {
            return Err("would return more than 1000 items".into());
        }
        match i.checked_add(step) {
            Some(n) => i = n,
            None => break,
        }
    }
    Ok(Value::Array(out))
}

fn base64_decode(args: &[Value]) -> Result<Value, String> {
    let s = want_str(&args[0], "the argument")?;
    if s.len() > 10_000 {
        return Err("was given more than 10000 characters".into());
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| format!("could not decode base64: {e}"))?;
    Ok(Value::String(
        String::from_utf8(bytes).map_err(|_| "decoded bytes are not UTF-8".to_string())?,
    ))
}

fn hash(args: &[Value]) -> Result<Value, String> {
    use md5::Digest as _;
    let data = format_arg(&args[0]);
    let alg = want_str(&args[1], "the algorithm")?;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let h = match alg.as_str() {
        "MD5" => hex(&md5::Md5::digest(data.as_bytes())),
        "SHA-1" => hex(&sha1::Sha1::digest(data.as_bytes())),
        "SHA-256" => hex(&sha2::Sha256::digest(data.as_bytes())),
        "SHA-384" => hex(&sha2::Sha384::digest(data.as_bytes())),
        "SHA-512" => hex(&sha2::Sha512::digest(data.as_bytes())),
        other => {
            return Err(format!(
                "does not support the algorithm '{other}' (use MD5, SHA-1, SHA-256, SHA-384 or SHA-512)"
            ));
        }
    };
    Ok(Value::String(h))
}

fn json_merge(mut args: Vec<Value>) -> Result<Value, String> {
    if args[2] != Value::Bool(false) {
        return Err("supports only shallow merges (third argument false)".into());
    }
    let b = args.swap_remove(1);
    let a = args.swap_remove(0);
    match (a, b) {
        (Value::Object(mut a), Value::Object(b)) => {
            for (k, v) in b {
                a.insert(k, v);
            }
            Ok(Value::Object(a))
        }
        _ => Err("requires two JSON objects".into()),
    }
}

fn math_random(args: &[Value]) -> Result<Value, String> {
    let start = round_half_up(want_num(&args[0], "the start")?);
    let end = round_half_up(want_num(&args[1], "the end")?);
    if end <= start {
        return Err("requires the end to be greater than the start".into());
    }
    let r = match args.get(2) {
        Some(seed) => splitmix(want_int(seed, "the seed")? as u64),
        None => random_u64(),
    };
    let span = (end as i128 - start as i128) as u128;
    Ok(Value::from((start as i128 + (r as u128 % span) as i128) as i64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(s: &str, input: Value) -> Value {
        Intrinsic::parse(s).unwrap().eval(&input, &Value::Null).unwrap()
    }

    #[test]
    fn format_prints_objects_and_arrays_as_step_functions_does_and_minus_zero_is_zero() {
        assert_eq!(
            ev(
                "States.Format('got {} and {}', $.o, $.a)",
                json!({"o": {"Arg1": 1, "Arg2": [], "Arg3": {"x": "y"}}, "a": [1, "two", null]})
            ),
            json!("got {Arg1=1, Arg2=[], Arg3={x=y}} and [1, two, null]")
        );
        assert_eq!(ev("States.StringToJson('-0')", json!({})), json!(0));
        assert!(ev("States.StringToJson('-0')", json!({})).is_i64());
        assert_eq!(ev("States.StringToJson('-1.5')", json!({})), json!(-1.5));
    }

    #[test]
    fn functions() {
        assert_eq!(ev("States.MathAdd(-0.5, 0.5)", json!({})), json!(1));
        assert_eq!(
            ev("States.ArrayRange(1, 9, 2)", json!({})),
            json!([1, 3, 5, 7, 9])
        );
        assert_eq!(
            ev("States.Format('a\\{\\} {} {}', $.x, 2)", json!({"x": "b"})),
            json!("a{} b 2")
        );
        assert_eq!(
            ev("States.StringSplit('a,,b', ',')", json!({})),
            json!(["a", "b"])
        );
        assert_eq!(
            ev("States.Hash('input data', 'MD5')", json!({})),
            json!("812f45842bc6d66ee14572ce20db8e86")
        );
        assert_eq!(ev("States.ArrayLength(States.Array(1, 2))", json!({})), json!(2));
        assert!(Intrinsic::parse("States.Nope(1)").is_err());
        assert!(Intrinsic::parse("States.UUID(1)").is_err());
        assert_eq!(ev("States.UUID()", json!({})).as_str().unwrap().len(), 36);
    }
}
