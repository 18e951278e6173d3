//! Property tests: the prefilter never changes a decision, and no input
//! makes `matches_json` panic.

use cutover_pattern::Pattern;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const WORDS: &[&str] = &[
    "x",
    "xy",
    "cats-green",
    "RUNNING",
    "running",
    "10.0.0.1",
    "10.0.0.255",
    "2001:db8::1",
    "2001:0db8:0:0:0:0:0:1",
    "a\"b",
    "a\\b",
    "a/b",
    "é",
    "É",
    "",
    "*",
    "init/file",
    "dir/init/x",
    "\u{1}",
];
// Dotted keys name the same fields as nested ones (EventBridge joins names with `.`).
const KEYS: &[&str] = &["a", "b", "detail", "name", "c d", "x\"y", "a.b", "detail.name"];

fn word() -> impl Strategy<Value = String> {
    prop::sample::select(WORDS).prop_map(str::to_owned)
}

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(KEYS).prop_map(str::to_owned)
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-3i64..300).prop_map(Value::from),
        prop::sample::select(&[0.5f64, 1.0, 101.0, 301.8, -2.25][..]).prop_map(Value::from),
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => word().prop_map(Value::String),
        1 => number(),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => Just(Value::Null),
    ]
}

fn event_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn event() -> impl Strategy<Value = Value> {
    prop::collection::vec((key(), event_value()), 0..5)
        .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>()))
}

fn wildcard_text() -> impl Strategy<Value = String> {
    prop::collection::vec(prop_oneof![word(), Just("*".to_owned())], 1..4).prop_map(|parts| parts.concat())
}

fn matcher() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => scalar(),
        2 => word().prop_map(|w| json!({"prefix": w})),
        2 => word().prop_map(|w| json!({"suffix": w})),
        1 => word().prop_map(|w| json!({"equals-ignore-case": w})),
        1 => word().prop_map(|w| json!({"prefix": {"equals-ignore-case": w}})),
        1 => word().prop_map(|w| json!({"suffix": {"equals-ignore-case": w}})),
        2 => wildcard_text().prop_map(|w| json!({"wildcard": w})),
        1 => word().prop_map(|w| json!({"anything-but": w})),
        1 => prop::collection::vec(word(), 1..3).prop_map(|w| json!({"anything-but": w})),
        1 => word().prop_map(|w| json!({"anything-but": {"prefix": w}})),
        1 => wildcard_text().prop_map(|w| json!({"anything-but": {"wildcard": w}})),
        1 => number().prop_map(|n| json!({"numeric": [">", n]})),
        1 => (number(), number()).prop_map(|(a, b)| json!({"numeric": [">=", a, "<", b]})),
        1 => any::<bool>().prop_map(|b| json!({"exists": b})),
        1 => prop::sample::select(&["10.0.0.0/24", "2001:db8::/32"][..])
            .prop_map(|c| json!({"cidr": c})),
    ]
}

fn pattern_object(depth: u32) -> BoxedStrategy<Value> {
    let leaf = prop::collection::vec(matcher(), 1..4).prop_map(Value::Array);
    let field = if depth == 0 {
        leaf.boxed()
    } else {
        prop_oneof![3 => leaf, 1 => pattern_object(depth - 1)].boxed()
    };
    let fields =
        prop::collection::vec((key(), field), 1..3).prop_map(|kv| kv.into_iter().collect::<Map<_, _>>());
    if depth == 0 {
        return fields.prop_map(Value::Object).boxed();
    }
    let or = prop::collection::vec(pattern_object(depth - 1), 2..3);
    (fields, prop::option::weighted(0.2, or))
        .prop_map(|(mut m, or)| {
            if let Some(or) = or {
                m.insert("$or".to_owned(), Value::Array(or));
            }
            Value::Object(m)
        })
        .boxed()
}

fn leaf_object_conflict(a: &Value, b: &Value) -> bool {
    // Every path either pattern constrains, alternatives of `$or` included, with whether it
    // is a leaf there.
    fn kinds(v: &Value, prefix: &str, out: &mut Vec<(String, bool)>) {
        let Value::Object(map) = v else { return };
        for (k, item) in map {
            match item {
                Value::Array(alternatives) if k == "$or" => {
                    alternatives.iter().for_each(|alt| kinds(alt, prefix, out));
                }
                Value::Object(_) => {
                    let path = format!("{prefix}.{k}");
                    out.push((path.clone(), false));
                    kinds(item, &path, out);
                }
                _ => out.push((format!("{prefix}.{k}"), true)),
            }
        }
    }
    let mut all = Vec::new();
    kinds(a, "", &mut all);
    kinds(b, "", &mut all);
    all.iter()
        .any(|(path, leaf)| all.iter().any(|(p, l)| p == path && l != leaf))
}

/// Serialises like JSON but escapes some characters that need no escaping
/// (`\/`, `\uXXXX`), as other producers may.
fn write_escaped(v: &Value, escape_mask: &[bool], i: &mut usize, out: &mut String) {
    match v {
        Value::String(s) => write_str(s, escape_mask, i, out),
        Value::Array(items) => {
            out.push('[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push_str(", ");
                }
                write_escaped(item, escape_mask, i, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (n, (k, item)) in map.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                write_str(k, escape_mask, i, out);
                out.push(':');
                write_escaped(item, escape_mask, i, out);
            }
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn write_str(s: &str, escape_mask: &[bool], i: &mut usize, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        let force = !escape_mask.is_empty() && escape_mask[*i % escape_mask.len()];
        *i += 1;
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' if force => out.push_str("\\/"),
            c if (c as u32) < 0x20 || (force && (c as u32) < 0x10000) => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn prefilter_never_changes_a_decision(
        pattern in pattern_object(2),
        events in prop::collection::vec(event(), 1..6),
        mask in prop::collection::vec(prop::bool::weighted(0.1), 0..7),
    ) {
        let Ok(p) = Pattern::from_value(&pattern) else { return Ok(()) };
        for e in &events {
            let expected = p.matches(e);
            let plain = serde_json::to_vec(e).unwrap();
            let mut escaped = String::new();
            write_escaped(e, &mask, &mut 0, &mut escaped);
            for bytes in [plain.as_slice(), escaped.as_bytes()] {
                if !p.prefilter().may_match(bytes) {
                    prop_assert!(!expected, "prefilter rejected a match: {pattern} on {}",
                        String::from_utf8_lossy(bytes));
                }
                prop_assert_eq!(p.matches_json(bytes).unwrap(), expected);
            }
        }
    }

    #[test]
    fn text_and_value_forms_agree(pattern in pattern_object(2), e in event()) {
        let a = Pattern::from_value(&pattern);
        let b = Pattern::parse(&pattern.to_string());
        match (a, b) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a.matches(&e), b.matches(&e)),
            (Err(a), Err(b)) => prop_assert_eq!(a, b),
            (a, b) => prop_assert!(false, "disagree: {:?} vs {:?}", a.is_ok(), b.is_ok()),
        }
    }

    #[test]
    fn duplicate_keys_print_faithfully(
        a in pattern_object(2),
        b in pattern_object(2),
        events in prop::collection::vec(event(), 1..4),
    ) {
        // A path that is a leaf in one place and an object in another ($or alternatives
        // included) has no JSON form without the repetition; skip those.
        prop_assume!(!leaf_object_conflict(&a, &b));
        // Join the two objects' entries into one text, repeating keys.
        let (ta, tb) = (a.to_string(), b.to_string());
        let text = format!("{},{}", &ta[..ta.len() - 1], &tb[1..]);
        let Ok(p) = Pattern::parse(&text) else { return Ok(()) };
        let printed = Pattern::from_value(p.as_value()).expect("printed pattern compiles");
        for e in &events {
            prop_assert_eq!(p.matches(e), printed.matches(e), "{} vs {} on {}", text, p.as_value(), e);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(pattern in pattern_object(1), bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(p) = Pattern::from_value(&pattern) {
            let _ = p.matches_json(&bytes);
        }
    }

    #[test]
    fn truncated_events_never_panic(pattern in pattern_object(1), e in event(), cut in any::<prop::sample::Index>()) {
        if let Ok(p) = Pattern::from_value(&pattern) {
            let bytes = serde_json::to_vec(&e).unwrap();
            let _ = p.matches_json(&bytes[..cut.index(bytes.len() + 1)]);
        }
    }

    #[test]
    fn arbitrary_pattern_text_never_panics(text in ".{0,80}") {
        let _ = Pattern::parse(&text);
    }
}

#[test]
fn ecs_events_are_rejected_without_parsing() {
    let p = Pattern::parse(
        r#"{"source": ["aws.ecs"], "detail-type": ["ECS Task State Change"],
            "detail": {"clusterArn": [{"suffix": ":cluster/catsndogsECScluster"}],
                       "containers": {"name": ["cats-green"]}}}"#,
    )
    .unwrap();
    let other = br#"{"source": "aws.ecs", "detail-type": "ECS Task State Change",
        "detail": {"clusterArn": "arn:aws:ecs:us-east-1:1:cluster/other",
                   "containers": [{"name": "cats-green"}]}}"#;
    assert!(!p.prefilter().may_match(other));
    assert!(p.prefilter().literals().len() >= 3);
}

/// Guards the properties above against vacuity: the generators must yield
/// valid patterns, matches, and prefilter rejections.
#[test]
fn generators_are_not_vacuous() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut valid, mut matched, mut rejected, mut nontrivial) = (0, 0, 0, 0);
    for _ in 0..3000 {
        let pattern = pattern_object(2).new_tree(&mut runner).unwrap().current();
        let e = event().new_tree(&mut runner).unwrap().current();
        let Ok(p) = Pattern::from_value(&pattern) else {
            continue;
        };
        valid += 1;
        if !p.prefilter().is_trivial() {
            nontrivial += 1;
        }
        if p.matches(&e) {
            matched += 1;
        }
        if !p.prefilter().may_match(&serde_json::to_vec(&e).unwrap()) {
            rejected += 1;
        }
    }
    eprintln!("valid {valid}, matched {matched}, rejected {rejected}, nontrivial {nontrivial}");
    assert!(valid > 1000 && matched > 50 && rejected > 300 && nontrivial > 500);
}
