//! `cutover demo --services N`: N services rolling out at once from one pipeline set.
//!
//! The shipped `pipelines/catsndogs.toml` with its `[services]` tables replaced by N generated
//! ones (cats, dogs, then svc3, svc4, …): each service has its own embedded record
//! (`<name>.catsndogs.lol`, all served by one embedded DNS server) and its own green web server
//! on a loopback address of its own (127.0.1.<n>). One green deployment event per service starts
//! N canaries that run concurrently on the embedded engine; the last service's green falls sick
//! at 50%, so that one rolls back while the others are promoted.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use cutover_asl::EventKind;
use cutover_core::{Event, Outcome};
use cutover_stages::traffic_shift::dns::query_address;
use cutover_stages::traffic_shift::local::WeightStore;
use cutover_stages::traffic_shift::{RouterConfig, TrafficShiftConfig};
use serde_json::json;

use super::{BLUE, DNS_SAMPLES, PIPELINE, Reporter, STRATEGY, TRACE, executions, serve_page};

/// The most services the demo generates (one loopback address each).
pub(super) const MAX_SERVICES: usize = 200;

/// One generated service.
struct Demo {
    name: String,
    record: String,
    green: Ipv4Addr,
    port: u16,
    sick: bool,
}

fn service_names(n: usize) -> Vec<String> {
    (1..=n)
        .map(|i| match i {
            1 => "cats".to_owned(),
            2 => "dogs".to_owned(),
            i => format!("svc{i}"),
        })
        .collect()
}

/// The shipped file with `services` in place of its own `[services]` tables.
fn pipeline_text(services: &[Demo]) -> anyhow::Result<String> {
    let start = PIPELINE
        .find("[services.")
        .context("the shipped pipeline has no [services]")?;
    let end = PIPELINE
        .find("[pipelines.")
        .context("the shipped pipeline has no pipelines")?;
    let mut tables = String::new();
    for s in services {
        tables.push_str(&format!(
            "[services.{name}]\ngreen_container = \"{name}-green\"\nrecord = \"{record}\"\nblue = \"{BLUE}\"\n\
             green = \"{green}\"\nhealth_url = \"http://{green}:{port}/\"\nexpect_body = \"{name} v2\"\n\n",
            name = s.name,
            record = s.record,
            green = s.green,
            port = s.port,
        ));
    }
    Ok(format!("{}{tables}{}", &PIPELINE[..start], &PIPELINE[end..]))
}

/// A green deployment event of `service`: the seed's first green RUNNING task, renamed.
fn green_event(service: &str) -> anyhow::Result<Vec<u8>> {
    let line = TRACE
        .lines()
        .find(|l| {
            l.contains("cats-green")
                && l.contains(":cluster/catsndogsECScluster\"")
                && l.contains("\"lastStatus\":\"RUNNING\"")
                && l.contains("\"desiredStatus\":\"RUNNING\"")
        })
        .context("the seed trace has a green RUNNING task")?;
    let mut event: serde_json::Value =
        serde_json::from_str(&line.replace("cats-green", &format!("{service}-green")))?;
    event["id"] = json!(format!("demo-{service}"));
    Ok(event.to_string().into_bytes())
}

async fn sample(dns: SocketAddr, record: &str, green: Ipv4Addr) -> (usize, usize) {
    let (mut b, mut g) = (0, 0);
    for _ in 0..DNS_SAMPLES {
        match query_address(dns, record).await {
            Ok(Some(IpAddr::V4(ip))) if ip == green => g += 1,
            Ok(Some(_)) => b += 1,
            _ => {}
        }
    }
    (b, g)
}

/// Runs the demo with `n` services (2 or more).
pub(super) async fn run(n: usize, speed: f64, out: &Reporter, root: &Path) -> anyhow::Result<ExitCode> {
    if !(2..=MAX_SERVICES).contains(&n) {
        bail!("--services takes 2 to {MAX_SERVICES} (one loopback address each)");
    }
    let mut services = Vec::with_capacity(n);
    for (i, name) in service_names(n).into_iter().enumerate() {
        let green = Ipv4Addr::new(127, 0, 1, u8::try_from(i + 1)?);
        let port = std::net::TcpListener::bind((green, 0))
            .with_context(|| format!("binding {green}"))?
            .local_addr()?
            .port();
        services.push(Demo {
            record: format!("{name}.catsndogs.lol"),
            sick: i + 1 == n,
            name,
            green,
            port,
        });
    }
    let pipelines_dir = root.join("pipelines");
    std::fs::create_dir_all(&pipelines_dir)?;
    let file_path = pipelines_dir.join("catsndogs.toml");
    std::fs::write(&file_path, pipeline_text(&services)?)?;
    std::fs::write(pipelines_dir.join("canary.strategy.toml"), STRATEGY)?;
    let data = root.join("state");
    // Free for UDP and TCP alike: the DNS server takes both (a UDP port alone, picked by the
    // kernel, may be some other process's TCP port).
    let dns = SocketAddr::from((BLUE, super::free_port()?));
    let file = super::embedded_loader(dns).load_file(&file_path)?;

    // Each service's green reads its own weights, so the sick one falls ill at 50%.
    let shift = file
        .pipeline("traffic-shift")
        .and_then(|p| p.stages.first())
        .context("the demo pipeline has a traffic-shift stage")?;
    let mut weights = BTreeMap::new();
    for s in &shift.per_service {
        let Some(RouterConfig::Local(router)) = s
            .config
            .as_any()
            .downcast_ref::<TrafficShiftConfig>()
            .map(|c| &c.router)
        else {
            bail!("the demo pipeline's traffic-shift stage has no local router");
        };
        let spec = router.spec()?;
        let path = data.join(format!("traffic/{}.json", spec.record));
        weights.insert(s.service.clone(), WeightStore::open(spec, &path)?);
    }
    for s in &services {
        let page: &'static str = Box::leak(format!("<h1>{} v2</h1>\n", s.name).into_boxed_str());
        let store = weights
            .get(&s.name)
            .context("a weights file per service")?
            .clone();
        let sick = s.sick;
        serve_page(
            SocketAddr::from((s.green, s.port)),
            page,
            move |_| sick && store.weights().green >= 50,
            None,
        )
        .await?;
    }
    let (cx, pipeline) = super::build_scaled(&file, &data, speed).await?;
    let sick = services.last().map(|s| s.name.clone()).unwrap_or_default();
    out.say(
        &format!(
            "cutover demo: {n} services from one pipeline file ({}), each with its own record and green; \
             DNS {dns}; time ×{speed}; {sick}'s green will fail at 50%",
            file_path.display()
        ),
        json!({"demo": {"services": n, "dns": dns.to_string(), "speed": speed, "sick": sick}}),
    );

    let started = Instant::now();
    for s in &services {
        match pipeline.run(Event::from_bytes(green_event(&s.name)?)).await {
            Outcome::Passed { context } => out.say(
                &format!(
                    "{:<6} green deployment → rollout started: {}",
                    s.name,
                    context["execution"].as_str().unwrap_or("")
                ),
                json!({"service": s.name, "outcome": "passed", "execution": context["execution"]}),
            ),
            other => out.say(
                &format!("{:<6} {other}", s.name),
                json!({"service": s.name, "outcome": other.kind(), "detail": other.to_string()}),
            ),
        }
    }

    // Progress: every shift of every rollout, as the executions record them.
    let executions_dir = data.join("executions");
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut report = |out: &Reporter| {
        for record in executions(&executions_dir) {
            let service = record.input["control"]["service"]
                .as_str()
                .unwrap_or("?")
                .to_owned();
            let done = seen.entry(record.name.clone()).or_default();
            for event in record.history.iter().skip(*done) {
                *done += 1;
                match &event.kind {
                    EventKind::TaskSucceeded { resource, output }
                        if resource.ends_with("cutover-traffic-shift") =>
                    {
                        let (b, g) = (
                            output["blue"].as_u64().unwrap_or(0),
                            output["green"].as_u64().unwrap_or(0),
                        );
                        out.say(
                            &format!("{service:<6} shift   blue {b:>3}% / green {g:>3}%"),
                            json!({"service": service, "step": "shift", "blue": b, "green": g}),
                        );
                    }
                    EventKind::ExecutionFailed { cause, .. } => out.say(
                        &format!("{service:<6} rolled back: {}", cause.as_deref().unwrap_or("")),
                        json!({"service": service, "step": "end", "status": "FAILED", "cause": cause}),
                    ),
                    EventKind::ExecutionSucceeded { .. } => out.say(
                        &format!("{service:<6} promoted"),
                        json!({"service": service, "step": "end", "status": "SUCCEEDED"}),
                    ),
                    _ => {}
                }
            }
        }
    };
    let drained = cx.background().drain();
    tokio::pin!(drained);
    loop {
        tokio::select! {
            () = &mut drained => break,
            () = tokio::time::sleep(Duration::from_millis(100)) => report(out),
        }
    }
    report(out);

    let records = executions(&executions_dir);
    let mut as_designed = records.len() == n;
    let mut summary = Vec::new();
    for s in &services {
        let status = records
            .iter()
            .find(|r| r.input["control"]["service"] == s.name.as_str())
            .map(|r| format!("{:?}", r.status).to_ascii_uppercase())
            .unwrap_or_else(|| "NOT STARTED".into());
        let w = weights[&s.name].weights();
        let (db, dg) = sample(dns, &s.record, s.green).await;
        let expected = if s.sick { (100, 0) } else { (0, 100) };
        as_designed &= (w.blue, w.green) == expected;
        out.say(
            &format!(
                "{:<6} {status:<9} final blue {:>3}% / green {:>3}%; dig {} ×{DNS_SAMPLES}: {db} blue, {dg} green",
                s.name, w.blue, w.green, s.record
            ),
            json!({"service": s.name, "status": status, "final": {"blue": w.blue, "green": w.green}, "dns": {"blue": db, "green": dg}}),
        );
        summary
            .push(json!({"service": s.name, "status": status, "final": {"blue": w.blue, "green": w.green}}));
    }
    out.say(
        &format!(
            "{n} services, {} rollouts in {:.1} s: {}",
            records.len(),
            started.elapsed().as_secs_f64(),
            if as_designed {
                format!("every healthy service promoted, {sick} rolled back")
            } else {
                "NOT as designed".to_owned()
            }
        ),
        json!({"summary": {"services": n, "executions": records.len(), "as_designed": as_designed, "rollouts": summary}}),
    );
    Ok(if as_designed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
