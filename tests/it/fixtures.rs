//! The JSON fixtures are real ECS event shapes: parse → serialize → reparse loses nothing.

use cutover_core::event::ecs::EcsEvent;
use serde_json::Value;

fn fixtures() -> Vec<(String, Value)> {
    let dir = crate::repo("tests/fixtures");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = match path.extension().and_then(|e| e.to_str()) {
            Some("json" | "jsonl") => std::fs::read_to_string(&path).unwrap(),
            _ => continue,
        };
        if name.ends_with(".jsonl") {
            for (i, line) in text.lines().enumerate() {
                out.push((format!("{name}:{}", i + 1), serde_json::from_str(line).unwrap()));
            }
        } else {
            out.push((name, serde_json::from_str(&text).unwrap()));
        }
    }
    assert!(
        out.len() > 100,
        "fixtures are missing: run python3 scripts/make-fixtures.py"
    );
    out
}

#[test]
fn every_fixture_round_trips_through_the_typed_model() {
    for (name, value) in fixtures() {
        let event = EcsEvent::from_value(&value).unwrap_or_else(|e| panic!("{name}: {e}"));
        let envelope = serde_json::to_value(event.envelope()).unwrap();
        assert_eq!(envelope, value, "{name}: envelope");
        let reparsed = EcsEvent::from_value(&envelope).unwrap();
        assert_eq!(reparsed, event, "{name}: reparse");
        if let Some(task) = event.task() {
            assert_eq!(
                &serde_json::to_value(task).unwrap(),
                value.get("detail").unwrap(),
                "{name}: detail"
            );
            assert!(task.last_status.is_some() && task.task_arn.is_some(), "{name}");
        }
    }
}

#[test]
fn detail_types_are_recognised() {
    let kinds: Vec<&str> = fixtures()
        .iter()
        .filter(|(n, _)| n.ends_with(".json"))
        .map(|(_, v)| match EcsEvent::from_value(v).unwrap() {
            EcsEvent::Task(..) => "task",
            EcsEvent::ContainerInstance(..) => "instance",
            EcsEvent::Service(..) => "service",
            _ => "other",
        })
        .collect();
    for k in ["task", "instance", "service", "other"] {
        assert!(kinds.contains(&k), "no {k} fixture in {kinds:?}");
    }
}
