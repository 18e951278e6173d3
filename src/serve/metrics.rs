//! `GET /metrics`: the pipeline's counters in the Prometheus text exposition format (0.0.4),
//! plus the daemon's in-flight gauge.

use std::fmt::Write as _;

use cutover_core::{Counter, HISTOGRAM_BOUNDS, Histogram};

/// The `Content-Type` of the exposition format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders counters (grouped by name, one `# TYPE` line each) and gauges.
pub(crate) fn render(counters: &[Counter], gauges: &[(&str, &str, u64)]) -> String {
    let mut out = String::new();
    let mut counters: Vec<&Counter> = counters.iter().collect();
    // Stable grouping: a name's samples must be contiguous.
    counters.sort_by(|a, b| a.name.cmp(&b.name));
    let mut last: Option<&str> = None;
    for c in counters {
        if last != Some(c.name.as_str()) {
            let _ = writeln!(out, "# TYPE {} counter", c.name);
            last = Some(&c.name);
        }
        out.push_str(&c.name);
        if !c.labels.is_empty() {
            out.push('{');
            for (i, (k, v)) in c.labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{k}=\"{}\"", escape(v));
            }
            out.push('}');
        }
        let _ = writeln!(out, " {}", c.value);
    }
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
    }
    out
}

/// Renders histograms: cumulative `_bucket` samples with `le`, then `_sum` and `_count`.
pub(crate) fn render_histograms(histograms: &[Histogram]) -> String {
    let mut out = String::new();
    let mut histograms: Vec<&Histogram> = histograms.iter().collect();
    histograms.sort_by(|a, b| a.name.cmp(&b.name));
    let mut last: Option<&str> = None;
    for h in histograms {
        if last != Some(h.name.as_str()) {
            let _ = writeln!(out, "# TYPE {} histogram", h.name);
            last = Some(&h.name);
        }
        let labels = |extra: Option<String>| {
            let mut parts: Vec<String> = h
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            parts.extend(extra);
            if parts.is_empty() {
                String::new()
            } else {
                format!("{{{}}}", parts.join(","))
            }
        };
        let mut cumulative = 0;
        for (bound, n) in HISTOGRAM_BOUNDS.iter().zip(h.buckets) {
            cumulative += n;
            let _ = writeln!(
                out,
                "{}_bucket{} {cumulative}",
                h.name,
                labels(Some(format!("le=\"{bound}\"")))
            );
        }
        let _ = writeln!(
            out,
            "{}_bucket{} {}",
            h.name,
            labels(Some("le=\"+Inf\"".into())),
            h.count
        );
        let _ = writeln!(out, "{}_sum{} {}", h.name, labels(None), h.sum);
        let _ = writeln!(out, "{}_count{} {}", h.name, labels(None), h.count);
    }
    out
}

/// Escapes a label value: backslash, double quote and newline.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for ch in value.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(name: &str, labels: &[(&str, &str)], value: u64) -> Counter {
        Counter {
            name: name.into(),
            labels: labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
            value,
        }
    }

    #[test]
    fn renders_the_text_format() {
        let text = render(
            &[
                counter(
                    "cutover_events_total",
                    &[("pipeline", "p"), ("outcome", "dropped"), ("stage", "filter")],
                    41,
                ),
                counter("cutover_dead_letters_total", &[("stage", "say \"hi\"\\\n")], 1),
                counter(
                    "cutover_events_total",
                    &[("pipeline", "p"), ("outcome", "passed"), ("stage", "")],
                    1,
                ),
            ],
            &[("cutover_serve_in_flight", "Events running now.", 2)],
        );
        expect_test::expect![[r#"
            # TYPE cutover_dead_letters_total counter
            cutover_dead_letters_total{stage="say \"hi\"\\\n"} 1
            # TYPE cutover_events_total counter
            cutover_events_total{pipeline="p",outcome="dropped",stage="filter"} 41
            cutover_events_total{pipeline="p",outcome="passed",stage=""} 1
            # HELP cutover_serve_in_flight Events running now.
            # TYPE cutover_serve_in_flight gauge
            cutover_serve_in_flight 2
        "#]]
        .assert_eq(&text);
    }
}
