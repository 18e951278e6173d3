//! README.md shows real output: the replay command it gives is run, and every line of the sample
//! under it must appear, in order, in what the command prints. Both are read from README.md, so
//! neither can drift from the code unnoticed.

use crate::{cutover, repo};

/// The text of README.md under `heading` (a whole `## ` line), up to the next `## ` heading.
fn section<'a>(readme: &'a str, heading: &str) -> &'a str {
    let start = readme
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README.md has no heading {heading:?}"));
    let rest = &readme[start + heading.len() + 2..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

/// The first inline code span of `text` that starts with `prefix`.
fn inline_code<'a>(text: &'a str, prefix: &str) -> &'a str {
    let start = text
        .find(&format!("`{prefix}"))
        .unwrap_or_else(|| panic!("no `{prefix}…` in the section"))
        + 1;
    let len = text[start..].find('`').expect("the code span is closed");
    &text[start..start + len]
}

/// The lines of the first fenced block tagged `lang` in `text`.
fn fenced<'a>(text: &'a str, lang: &str) -> Vec<&'a str> {
    let open = format!("```{lang}\n");
    let start = text
        .find(&open)
        .unwrap_or_else(|| panic!("no {open:?} block in the section"))
        + open.len();
    let len = text[start..].find("```").expect("the block is closed");
    text[start..start + len].lines().collect()
}

/// Whether `line` is what README's `shown` stands for: equal, except that each `…` in `shown`
/// stands for any text.
fn shows(shown: &str, line: &str) -> bool {
    let mut parts = shown.split('…');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = line.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        let Some(at) = rest.find(part) else {
            return false;
        };
        rest = &rest[at + part.len()..];
    }
    rest.ends_with(last)
}

#[test]
fn ellipses_stand_for_any_text() {
    assert!(shows("a 1 b", "a 1 b"));
    assert!(!shows("a 1 b", "a 1 bc"));
    assert!(shows("a …: b", "a xyz: b"));
    assert!(shows("a …: b {…} c…", "a x: b {y} c"));
    assert!(!shows("a …: b", "a x: c"));
    assert!(!shows("a …: b…", "x a: b"));
    assert!(!shows("…ab…ba", "xaba"), "the parts may not overlap");
}

#[test]
fn the_replay_sample_is_what_replay_prints() {
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let section = section(&readme, "## Replaying traces");
    let command = inline_code(section, "cutover replay ");
    let output = cutover()
        .args(command.split_whitespace().skip(1))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "`{command}` failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let sample: Vec<&str> = fenced(section, "text")
        .into_iter()
        .filter(|line| line.trim() != "…")
        .collect();
    assert!(
        sample.len() >= 3,
        "README's replay sample is too short to mean anything: {sample:?}"
    );
    let mut printed = stdout.lines();
    for shown in sample {
        assert!(
            printed.any(|line| shows(shown, line)),
            "README.md's replay sample line\n  {shown}\nis not in the output of `{command}` (or not in this order):\n{stdout}"
        );
    }
}
