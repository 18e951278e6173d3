//! Environment overrides: `CUTOVER_PIPELINES__ECS_EVENTS__STAGES__2__TABLE=cats-dedup` sets
//! `table` of stage 2 (1-based; a stage's `name` or unique `type` works instead of the number),
//! `CUTOVER_SETTINGS__DATA_DIR=/tmp/x` a setting, `CUTOVER_SERVICES__CATS__RECORD=…` a value of
//! `[services.cats]`. Names match case-insensitively with `-`
//! written as `_`; a value is read as JSON when it parses as JSON, otherwise as a string.

use serde_json::{Map, Value};

/// The prefix of overriding environment variables.
pub const ENV_PREFIX: &str = "CUTOVER_";

/// Whether an environment variable overrides a value of the file.
pub(super) fn is_override(key: &str) -> bool {
    key.starts_with("CUTOVER_PIPELINES__")
        || key.starts_with("CUTOVER_SETTINGS__")
        || key.starts_with("CUTOVER_SERVICES__")
}

/// A key as environment variable names spell it: upper case, `-` as `_`.
fn norm(s: &str) -> String {
    s.to_ascii_uppercase().replace('-', "_")
}

/// Sets the value `key` (`CUTOVER_PIPELINES__P__STAGES__2__FIELD`) names to `raw`, read as
/// JSON when it parses as JSON, else as a string.
pub(super) fn apply_override(root: &mut Value, key: &str, raw: &str) -> Result<(), String> {
    let segments: Vec<&str> = key[ENV_PREFIX.len()..].split("__").collect();
    let value = serde_json::from_str::<Value>(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
    let mut cur = root;
    let mut i = 0;
    while i < segments.len() {
        let seg = segments[i];
        let last = i + 1 == segments.len();
        let is_stages =
            matches!(segments.get(i.wrapping_sub(1)), Some(s) if s.eq_ignore_ascii_case("stages")) && i >= 3;
        if is_stages {
            let Value::Array(stages) = cur else {
                return Err("the pipeline has no stage list".into());
            };
            let idx = match seg.parse::<usize>() {
                Ok(n) if n >= 1 && n <= stages.len() => n - 1,
                Ok(n) => {
                    return Err(format!(
                        "there is no stage {n} (the pipeline has {})",
                        stages.len()
                    ));
                }
                Err(_) => {
                    let matches: Vec<usize> = stages
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| {
                            let named = s.get("name").and_then(Value::as_str);
                            let ty = s.get("type").and_then(Value::as_str);
                            named.map(norm).as_deref() == Some(seg)
                                || (named.is_none() && ty.map(norm).as_deref() == Some(seg))
                        })
                        .map(|(i, _)| i)
                        .collect();
                    match matches.as_slice() {
                        [one] => *one,
                        [] => return Err(format!("no stage named or typed \"{seg}\"")),
                        _ => return Err(format!("several stages match \"{seg}\"; use the stage number")),
                    }
                }
            };
            if last {
                return Err("name a field of the stage after its number".into());
            }
            cur = &mut stages[idx];
            i += 1;
            continue;
        }
        let Value::Object(map) = cur else {
            return Err(format!("\"{seg}\" is inside a value that is not a table"));
        };
        let existing = map.keys().find(|k| norm(k) == seg).cloned();
        let k = existing.unwrap_or_else(|| seg.to_ascii_lowercase());
        if last {
            map.insert(k, value);
            return Ok(());
        }
        if i == 1 && !map.contains_key(&k) && segments[0] == "PIPELINES" {
            return Err(format!("no pipeline matches \"{seg}\""));
        }
        if i == 1 && !map.contains_key(&k) && segments[0] == "SERVICES" {
            return Err(format!(
                "no service matches \"{seg}\" (an override sets a value, it adds no service)"
            ));
        }
        cur = map.entry(k).or_insert_with(|| Value::Object(Map::new()));
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_address_stages_by_number_and_type() {
        let mut v = serde_json::json!({"pipelines": {"ecs-events": {"stages": [{"type": "filter"}, {"type": "dedup", "table": "a"}]}}});
        apply_override(&mut v, "CUTOVER_PIPELINES__ECS_EVENTS__STAGES__2__TABLE", "b").unwrap();
        assert_eq!(v["pipelines"]["ecs-events"]["stages"][1]["table"], "b");
        apply_override(
            &mut v,
            "CUTOVER_PIPELINES__ECS_EVENTS__STAGES__FILTER__LAST_STATUS",
            "[\"RUNNING\"]",
        )
        .unwrap();
        assert_eq!(
            v["pipelines"]["ecs-events"]["stages"][0]["last_status"],
            serde_json::json!(["RUNNING"])
        );
        assert!(
            apply_override(&mut v, "CUTOVER_PIPELINES__NOPE__STAGES__1__X", "1")
                .unwrap_err()
                .contains("no pipeline")
        );
        assert!(
            apply_override(&mut v, "CUTOVER_PIPELINES__ECS_EVENTS__STAGES__9__X", "1")
                .unwrap_err()
                .contains("no stage 9")
        );
    }
}
