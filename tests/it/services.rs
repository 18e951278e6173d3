//! `[services]`: the shipped catsndogs file declares "cats" and "dogs"; one pipeline set rolls
//! both out, each on its own record, health endpoint and service slot.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;

use serde_json::Value;

use crate::{cutover, execution_records, repo};

/// The seed trace plus a green deployment of dogs (its RUNNING events: the same task events with
/// dogs' names), so both services deploy in one replay.
fn two_service_trace(dir: &Path) -> std::path::PathBuf {
    let trace = std::fs::read_to_string(repo("tests/fixtures/deployment-trace.jsonl")).unwrap();
    let mut lines: Vec<String> = trace.lines().map(str::to_owned).collect();
    let dogs: Vec<String> = trace
        .lines()
        .filter(|l| l.contains("cats-green") && l.contains("\"lastStatus\":\"RUNNING\""))
        .map(|l| {
            let mut v: Value = serde_json::from_str(&l.replace("cats-green", "dogs-green")).unwrap();
            let id = format!("dogs-{}", v["id"].as_str().unwrap());
            v["id"] = Value::String(id);
            v.to_string()
        })
        .collect();
    assert!(!dogs.is_empty(), "the seed trace has cats-green RUNNING events");
    lines.extend(dogs);
    let path = dir.join("trace.jsonl");
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

/// An HTTP server on `ip` answering every request 200 with `body`, on a free port.
fn green_server(ip: &str, body: &'static str) -> u16 {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten().take(200) {
            let mut stream = stream;
            let mut buf = [0u8; 2048];
            let _ = stream.read(&mut buf);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// A loopback port nothing listens on.
fn closed_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

#[test]
fn cats_and_dogs_roll_out_from_one_pipeline_set_on_the_embedded_engine() {
    let dir = tempfile::tempdir().unwrap();
    let trace = two_service_trace(dir.path());
    let state = dir.path().join("state");
    let dogs_port = green_server("127.0.0.4", "<h1>dogs v2</h1>");
    let cats_port = closed_port("127.0.0.2");
    let out = cutover()
        .args(["replay", "pipelines/catsndogs.toml", "--json", "--state"])
        .arg(&state)
        .arg(&trace)
        .env(
            "CUTOVER_SERVICES__DOGS__HEALTH_URL",
            format!("http://127.0.0.4:{dogs_port}/"),
        )
        .env(
            "CUTOVER_SERVICES__CATS__HEALTH_URL",
            format!("http://127.0.0.2:{cats_port}/"),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outcomes: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let started: Vec<&str> = outcomes
        .iter()
        .filter(|o| o["outcome"] == "passed")
        .map(|o| o["context"]["service"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(started, ["cats", "dogs"], "one rollout per service");
    // A task of no service (the blue "dogs" containers) is dropped saying why for each service.
    let no_service = outcomes
        .iter()
        .find(|o| {
            o["reason"]
                .as_str()
                .is_some_and(|r| r.contains("container name is not"))
        })
        .expect("a task of no service");
    let reason = no_service["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("matches no service (cats: ") && reason.contains("dogs: "),
        "{reason}"
    );

    let records = execution_records(&state.join("executions"));
    assert_eq!(records.len(), 2, "{records:#?}");
    let of = |service: &str| {
        records
            .iter()
            .find(|r| r["input"]["control"]["service"] == service)
            .unwrap_or_else(|| panic!("no rollout of {service}: {records:#?}"))
    };
    // Each service probed its own green: dogs' answers, cats' does not.
    assert_eq!(of("dogs")["status"], "SUCCEEDED", "{:#?}", of("dogs"));
    assert_eq!(of("cats")["status"], "FAILED");
    assert!(
        of("cats")["cause"]
            .as_str()
            .is_some_and(|c| c.contains(&format!("127.0.0.2:{cats_port}"))),
        "{}",
        of("cats")["cause"]
    );
    // Each shifted its own record.
    let weights = |record: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(state.join(format!("traffic/{record}.json"))).unwrap())
            .unwrap()
    };
    assert_eq!(weights("dogs.catsndogs.lol")["green"], 100);
    assert_eq!(weights("www.catsndogs.lol")["green"], 0);
    // Different services do not supersede each other.
    let audit = std::fs::read_to_string(state.join("rollouts/audit.jsonl")).unwrap_or_default();
    assert!(!audit.contains("superseded"), "{audit}");
}

#[test]
fn validation_names_the_service_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(repo("pipelines/catsndogs.toml")).unwrap();
    std::fs::copy(
        repo("pipelines/canary.strategy.toml"),
        dir.path().join("canary.strategy.toml"),
    )
    .unwrap();
    let check = |text: &str| -> String {
        let path = dir.path().join("p.toml");
        std::fs::write(&path, text).unwrap();
        let out = cutover().arg("validate").arg(&path).output().unwrap();
        assert!(!out.status.success(), "{text}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // A service without a value the stages use.
    let missing = check(&shipped.replace("expect_body = \"dogs\"\n", ""));
    assert!(
        missing.contains("pipeline \"health-check\", stage 1 (health-check): field \"probe.body_contains\"")
            && missing.contains("service \"dogs\" does not define \"expect_body\""),
        "{missing}"
    );
    // A value the stage refuses, named with its service.
    let bad = check(&shipped.replace("green = \"127.0.0.4\"", "green = \"dogs.example\""));
    assert!(
        bad.contains(
            "pipeline \"traffic-shift\", stage 1 (traffic-shift): field \"router\": service \"dogs\": "
        ),
        "{bad}"
    );
    // Two services on one traffic target.
    let clash = check(&shipped.replace(
        "record = \"dogs.catsndogs.lol\"",
        "record = \"www.catsndogs.lol\"",
    ));
    assert!(
        clash.contains("services \"cats\" and \"dogs\" both claim the embedded record www.catsndogs.lol"),
        "{clash}"
    );
    // `{service.…}` without a services table.
    let start = shipped.find("[services.cats]").unwrap();
    let end = shipped.find("[pipelines.ecs-events]").unwrap();
    let none = check(&format!("{}{}", &shipped[..start], &shipped[end..]));
    assert!(none.contains("no [services.NAME] tables"), "{none}");
}
