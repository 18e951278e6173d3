//! Matching a compiled pattern against a parsed event.
//!
//! Semantics (EventBridge's, as implemented by its event-ruler engine):
//! - the pattern matches if one of its branches (one choice per `$or`)
//!   matches; a branch matches if all of its leaves do;
//! - arrays in the event are looked through, but consistently: when two
//!   leaves reach into the same array, they must use the same element, so
//!   `containers.name` and `containers.lastStatus` are checked against one
//!   container. Leaves are tried in path order and an element, once used by
//!   a leaf, binds the later ones;
//! - a leaf matches if some value at its path (under the elements bound so
//!   far) matches one of its alternatives, or, for `exists: false`, if there
//!   is no such value. Objects are not values: `exists: true` never matches
//!   an object, and `exists: false` does;
//! - strings, numbers, booleans and null only ever match their own type,
//!   except `anything-but`, which matches every value it does not exclude.
//!
//! Invariant: nothing here allocates; matching runs once per event.

use crate::compile::{AnythingBut, Branch, BranchField, Leaf, Matcher, NumRange, comparable_key};
use serde_json::{Number, Value};

/// Most array elements bound at once; beyond this, deeper arrays are looked
/// through without consistency (an event would need more than this many
/// arrays nested along one path).
const MAX_BOUND: usize = 64;

/// What the matcher reads from an event: implemented by `serde_json::Value`
/// and by the [`Projected`](crate::Projected) form of a partial parse, which
/// must decide alike.
pub(crate) trait Doc: Sized {
    /// The value at `key`, if this is an object that has it.
    fn field(&self, key: &str) -> Option<&Self>;
    /// The elements, if this is an array.
    fn items(&self) -> Option<&[Self]>;
    /// What kind of value this is, with its content if it is a scalar.
    fn scalar(&self) -> Scalar<'_>;
}

/// A value as a leaf sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scalar<'a> {
    Null,
    Bool(bool),
    Number(&'a Number),
    String(&'a str),
    /// Objects are not values (and arrays are looked through before this).
    Composite,
}

impl Doc for Value {
    fn field(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(map) => map.get(key),
            _ => None,
        }
    }

    fn items(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    fn scalar(&self) -> Scalar<'_> {
        match self {
            Value::Null => Scalar::Null,
            Value::Bool(b) => Scalar::Bool(*b),
            Value::Number(n) => Scalar::Number(n),
            Value::String(s) => Scalar::String(s),
            Value::Array(_) | Value::Object(_) => Scalar::Composite,
        }
    }
}

/// The array elements bound so far: (array identity, index) pairs.
struct Bindings {
    len: usize,
    items: [(usize, usize); MAX_BOUND],
}

impl Bindings {
    fn new() -> Self {
        Bindings {
            len: 0,
            items: [(0, 0); MAX_BOUND],
        }
    }

    fn get(&self, array: usize) -> Option<usize> {
        self.items[..self.len]
            .iter()
            .find(|(a, _)| *a == array)
            .map(|&(_, i)| i)
    }
}

/// Continuation called for each value found at a path.
type Found<'f, D> = dyn FnMut(&D, &mut Bindings) -> bool + 'f;

/// Calls `found` for each value reached by following `path` from `v`,
/// consistently with `bound`, binding the array elements it passes through
/// for the time of the call. Stops at the first `true`.
///
/// With an empty path, `found` gets the value itself unless it is an array
/// (each element is visited instead), so it may get an object.
fn walk<D: Doc>(v: &D, path: &[Box<str>], bound: &mut Bindings, found: &mut Found<'_, D>) -> bool {
    if let Some(items) = v.items() {
        // The buffer address identifies the array; empty arrays hold no
        // elements, so they are never bound.
        let id = items.as_ptr() as usize;
        if let Some(i) = bound.get(id) {
            return walk(&items[i], path, bound, found);
        }
        for (i, item) in items.iter().enumerate() {
            let hit = if bound.len < MAX_BOUND {
                bound.items[bound.len] = (id, i);
                bound.len += 1;
                let hit = walk(item, path, bound, found);
                bound.len -= 1;
                hit
            } else {
                walk(item, path, bound, found)
            };
            if hit {
                return true;
            }
        }
        return false;
    }
    match path.split_first() {
        None => found(v, bound),
        Some((key, rest)) => v.field(key).is_some_and(|child| walk(child, rest, bound, found)),
    }
}

/// Whether some leaf value at `path` under `v`, consistent with `bound`,
/// satisfies `pred`. Binds nothing: used below the prefix later fields share.
fn any_below<D: Doc>(
    v: &D,
    path: &[Box<str>],
    bound: &Bindings,
    pred: &mut dyn FnMut(Scalar<'_>) -> bool,
) -> bool {
    if let Some(items) = v.items() {
        return match bound.get(items.as_ptr() as usize) {
            Some(i) => any_below(&items[i], path, bound, pred),
            None => items.iter().any(|item| any_below(item, path, bound, pred)),
        };
    }
    match (v.scalar(), path.split_first()) {
        (Scalar::Composite, Some((key, rest))) => v
            .field(key)
            .is_some_and(|child| any_below(child, rest, bound, pred)),
        (Scalar::Composite, None) => false,
        (scalar, None) => pred(scalar),
        (_, Some(_)) => false,
    }
}

impl Branch {
    /// Whether this branch matches the event.
    pub(crate) fn matches<D: Doc>(&self, event: &D) -> bool {
        fields_match(&self.fields, event, &mut Bindings::new())
    }
}

fn fields_match<D: Doc>(fields: &[BranchField], root: &D, bound: &mut Bindings) -> bool {
    let Some((field, rest)) = fields.split_first() else {
        return true;
    };
    let leaf = &field.leaf;
    // Bind the arrays within the prefix later fields share, one combination
    // at a time; below it, which value matches makes no difference to them.
    let (shared, below) = field.path.split_at(field.shared.min(field.path.len()));
    if leaf.has_positive
        && walk(root, shared, bound, &mut |v, bound| {
            any_below(v, below, bound, &mut |x| leaf.matches_value(x)) && fields_match(rest, root, bound)
        })
    {
        return true;
    }
    leaf.has_absent
        && !walk(root, shared, bound, &mut |v, bound| {
            any_below(v, below, bound, &mut |_| true)
        })
        && fields_match(rest, root, bound)
}

impl Leaf {
    /// Whether a value matches one of the alternatives other than
    /// `exists: false`.
    fn matches_value(&self, v: Scalar<'_>) -> bool {
        self.alternatives.iter().any(|m| m.matches_value(v))
    }
}

fn key(n: &Number) -> Option<i64> {
    n.as_f64().and_then(comparable_key)
}

fn num_eq(pattern: &Number, pattern_key: Option<i64>, event: &Number) -> bool {
    (pattern_key.is_some() && pattern_key == key(event)) || pattern == event
}

fn in_range(r: &NumRange, n: i64) -> bool {
    let low_ok = match r.low {
        None => true,
        Some((b, inclusive)) => n > b || (inclusive && n == b),
    };
    let high_ok = match r.high {
        None => true,
        Some((b, inclusive)) => n < b || (inclusive && n == b),
    };
    low_ok && high_ok
}

fn eq_ignore_case(s: &str, lowered: &str) -> bool {
    s.chars().flat_map(char::to_lowercase).eq(lowered.chars())
}

fn starts_ignore_case(s: &str, lowered: &str) -> bool {
    let mut hay = s.chars().flat_map(char::to_lowercase);
    lowered.chars().all(|c| hay.next() == Some(c))
}

fn ends_ignore_case(s: &str, lowered: &str) -> bool {
    let mut hay = s.chars().rev().flat_map(|c| c.to_lowercase().rev());
    lowered.chars().rev().all(|c| hay.next() == Some(c))
}

impl Matcher {
    /// Whether one event value (never an array or object) matches.
    fn matches_value(&self, v: Scalar<'_>) -> bool {
        match (self, v) {
            (Matcher::String(p), Scalar::String(s)) => **p == *s,
            (Matcher::Ip(range, text), Scalar::String(s)) => **text == *s || range.contains_str(s),
            (Matcher::Number(p, k), Scalar::Number(n)) => num_eq(p, *k, n),
            (Matcher::Bool(p), Scalar::Bool(b)) => *p == b,
            (Matcher::Null, Scalar::Null) => true,
            (Matcher::Prefix(p), Scalar::String(s)) => s.starts_with(&**p),
            (Matcher::Suffix(p), Scalar::String(s)) => s.ends_with(&**p),
            (Matcher::EqualsIgnoreCase(p), Scalar::String(s)) => eq_ignore_case(s, p),
            (Matcher::PrefixIgnoreCase(p), Scalar::String(s)) => starts_ignore_case(s, p),
            (Matcher::SuffixIgnoreCase(p), Scalar::String(s)) => ends_ignore_case(s, p),
            (Matcher::Wildcard(w), Scalar::String(s)) => w.is_match(s),
            (Matcher::Numeric(r), Scalar::Number(n)) => key(n).is_some_and(|k| in_range(r, k)),
            (Matcher::Cidr(r), Scalar::String(s)) => r.contains_str(s),
            (Matcher::AnythingBut(ab), v) => !ab.excludes(v),
            (Matcher::Exists(present), _) => *present,
            _ => false,
        }
    }
}

impl AnythingBut {
    fn excludes(&self, v: Scalar<'_>) -> bool {
        match (self, v) {
            (AnythingBut::Strings(list), Scalar::String(s)) => list.iter().any(|p| **p == *s),
            (AnythingBut::Numbers(list), Scalar::Number(n)) => {
                let k = key(n);
                list.iter().any(|p| Some(*p) == k)
            }
            (AnythingBut::IgnoreCase(list), Scalar::String(s)) => list.iter().any(|p| eq_ignore_case(s, p)),
            (AnythingBut::Prefixes(list), Scalar::String(s)) => list.iter().any(|p| s.starts_with(&**p)),
            (AnythingBut::Suffixes(list), Scalar::String(s)) => list.iter().any(|p| s.ends_with(&**p)),
            (AnythingBut::Wildcards(list), Scalar::String(s)) => list.iter().any(|w| w.is_match(s)),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Pattern;
    use serde_json::json;

    fn m(p: serde_json::Value, e: serde_json::Value) -> bool {
        Pattern::from_value(&p).unwrap().matches(&e)
    }

    #[test]
    fn arrays_of_objects_match_per_element() {
        let p = json!({"detail": {"containers": {"name": ["cats-green"], "lastStatus": ["RUNNING"]}}});
        let both = json!({"detail": {"containers": [
            {"name": "dogs", "lastStatus": "STOPPED"},
            {"name": "cats-green", "lastStatus": "RUNNING"}
        ]}});
        let split = json!({"detail": {"containers": [
            {"name": "cats-green", "lastStatus": "STOPPED"},
            {"name": "dogs", "lastStatus": "RUNNING"}
        ]}});
        assert!(m(p.clone(), both));
        assert!(!m(p, split));
    }

    #[test]
    fn exists_only_sees_leaves() {
        assert!(!m(json!({"a": [{"exists": true}]}), json!({"a": {"b": 1}})));
        assert!(m(json!({"a": [{"exists": false}]}), json!({"a": {"b": 1}})));
        assert!(m(json!({"a": [{"exists": true}]}), json!({"a": null})));
        assert!(!m(json!({"a": [{"exists": true}]}), json!({"a": []})));
        assert!(m(json!({"a": {"b": [{"exists": false}]}}), json!({"a": []})));
        assert!(m(json!({"a": {"b": [{"exists": false}]}}), json!({})));
    }

    #[test]
    fn exists_false_under_arrays_follows_path_order() {
        // Only absence: checked against every container.
        let p = json!({"d": {"c": {"exitCode": [{"exists": false}]}}});
        assert!(!m(
            p.clone(),
            json!({"d": {"c": [{"exitCode": 0}, {"name": "x"}]}})
        ));
        assert!(m(p, json!({"d": {"c": [{"name": "y"}, {"name": "x"}]}})));
        // The absent path sorts after the one that picks the container.
        let p = json!({"c": {"name": ["x"], "zzz": [{"exists": false}]}});
        assert!(m(
            p.clone(),
            json!({"c": [{"name": "x", "zzz": 1}, {"name": "x"}]})
        ));
        assert!(!m(p, json!({"c": [{"name": "x", "zzz": 1}, {"name": "y"}]})));
        // ... and before it: checked against every container, as in AWS.
        let p = json!({"c": {"exitCode": [{"exists": false}], "name": ["x"]}});
        assert!(!m(p, json!({"c": [{"exitCode": 1, "name": "y"}, {"name": "x"}]})));
    }

    #[test]
    fn or_branch_overrides_outer_field() {
        let p = json!({"a": ["x"], "$or": [{"a": ["y"]}, {"b": ["z"]}]});
        assert!(m(p.clone(), json!({"a": "y"})));
        assert!(m(p.clone(), json!({"a": "x", "b": "z"})));
        assert!(!m(p, json!({"a": "x"})));
    }

    #[test]
    fn nested_arrays_bind_per_level() {
        let p = json!({"a": {"b": {"c": ["1"], "d": ["2"]}}});
        assert!(m(p.clone(), json!({"a": [{"b": [{"c": "1", "d": "2"}]}]})));
        assert!(!m(p.clone(), json!({"a": [{"b": [{"c": "1"}, {"d": "2"}]}]})));
        assert!(!m(p, json!({"a": [{"b": {"c": "1"}}, {"b": {"d": "2"}}]})));
    }

    mod cut {
        use crate::Pattern;
        use proptest::prelude::*;
        use serde_json::{Value, json};

        fn leaf() -> impl Strategy<Value = Value> {
            prop_oneof![
                prop::sample::select(&["x", "y"][..]).prop_map(|s| json!([s])),
                any::<bool>().prop_map(|b| json!([{"exists": b}])),
                Just(json!(["x", {"exists": false}])),
            ]
        }

        fn pattern() -> impl Strategy<Value = Value> {
            let key = || prop::sample::select(&["a", "b"][..]);
            let inner = prop::collection::btree_map(key(), leaf(), 1..3)
                .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()));
            prop::collection::btree_map(key(), prop_oneof![leaf(), inner], 1..3)
                .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
        }

        fn event() -> impl Strategy<Value = Value> {
            let scalar = prop::sample::select(&["x", "y"][..]).prop_map(|s| json!(s));
            scalar.prop_recursive(3, 20, 3, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                    prop::collection::btree_map(prop::sample::select(&["a", "b"][..]), inner, 0..3).prop_map(
                        |m| { Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()) }
                    ),
                ]
            })
        }

        proptest! {
            /// Skipping combinations below the shared prefix never changes
            /// the answer of the full search over array elements.
            #[test]
            fn cut_agrees_with_full_search(p in pattern(), e in event()) {
                let fast = Pattern::from_value(&p).unwrap();
                let mut slow = fast.clone();
                for b in &mut slow.branches {
                    for f in &mut b.fields {
                        f.shared = f.path.len();
                    }
                }
                prop_assert_eq!(fast.matches(&e), slow.matches(&e));
            }
        }
    }

    #[test]
    fn independent_arrays_do_not_multiply_work() {
        let many: Vec<serde_json::Value> = (0..2000).map(|_| json!("x")).collect();
        let p = json!({"a": ["x"], "b": ["x"], "c": ["x"], "d": ["nope"]});
        let e = json!({"a": many, "b": many, "c": many, "d": many});
        // The answer only: speed is for benchmarks (`cargo bench -p cutover-stages --bench
        // filter` times the matcher), not for a clock in a test on a shared machine.
        assert!(!m(p, e));
    }

    #[test]
    fn types_do_not_mix() {
        assert!(!m(json!({"a": [5]}), json!({"a": "5"})));
        assert!(m(json!({"a": [5]}), json!({"a": 5.0})));
        assert!(!m(json!({"a": ["true"]}), json!({"a": true})));
        assert!(m(json!({"a": [{"anything-but": 5}]}), json!({"a": "5"})));
        assert!(m(json!({"a": [{"anything-but": "x"}]}), json!({"a": true})));
        assert!(!m(json!({"a": [{"numeric": [">", 1]}]}), json!({"a": "300"})));
    }

    #[test]
    fn numbers_compare_at_six_decimals_within_five_billion() {
        assert!(m(json!({"a": [1.0000001]}), json!({"a": 1.0000002})));
        assert!(!m(json!({"a": [1.000001]}), json!({"a": 1.000002})));
        assert!(m(
            json!({"a": [{"numeric": ["=", 301.8]}]}),
            json!({"a": 3.018e2})
        ));
        assert!(!m(json!({"a": [{"numeric": [">", 0]}]}), json!({"a": 6e9})));
        assert!(m(json!({"a": [123456789012u64]}), json!({"a": 123456789012u64})));
        assert!(m(json!({"a": [{"numeric": [">", 0, "<=", 5]}]}), json!({"a": 5})));
        assert!(!m(json!({"a": [{"numeric": [">", 0, "<", 5]}]}), json!({"a": 5})));
        assert!(!m(
            json!({"a": [{"anything-but": [100, 200]}]}),
            json!({"a": 100.0})
        ));
    }

    #[test]
    fn ignore_case_variants() {
        assert!(m(
            json!({"a": [{"equals-ignore-case": "AbC"}]}),
            json!({"a": "aBc"})
        ));
        assert!(m(
            json!({"a": [{"prefix": {"equals-ignore-case": "EventB"}}]}),
            json!({"a": "eventbridge"})
        ));
        assert!(m(
            json!({"a": [{"suffix": {"equals-ignore-case": ".PNG"}}]}),
            json!({"a": "x.png"})
        ));
        assert!(!m(
            json!({"a": [{"suffix": {"equals-ignore-case": ".PNG"}}]}),
            json!({"a": "png"})
        ));
    }

    #[test]
    fn ip_values_compare_by_address() {
        assert!(m(
            json!({"ip": ["2001:db8::1"]}),
            json!({"ip": "2001:0db8:0:0:0:0:0:1"})
        ));
        assert!(m(json!({"ip": ["10.0.0.1"]}), json!({"ip": "10.0.0.1"})));
        assert!(!m(json!({"ip": ["10.0.0.1"]}), json!({"ip": "10.0.0.2"})));
    }

    #[test]
    fn or_inside_object() {
        let p = json!({"detail": {"$or": [{"a": ["x"]}, {"b": [{"prefix": "y"}]}]}});
        assert!(m(p.clone(), json!({"detail": {"b": "yes"}})));
        assert!(!m(p, json!({"detail": {"b": "no"}})));
    }
}
