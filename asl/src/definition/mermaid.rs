//! [`Definition::to_mermaid`](super::Definition::to_mermaid): a Mermaid
//! `stateDiagram-v2` of a compiled machine, with Parallel branches and Map
//! processors drawn as nested composite states.

use super::Machine;
use crate::states::Kind;

/// The whole diagram, header included.
pub(super) fn render(m: &Machine) -> String {
    let mut out = String::from("stateDiagram-v2\n");
    let mut counter = 0usize;
    machine(m, "", &mut out, &mut counter, 1);
    out
}

fn mermaid_id(prefix: &str, name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{prefix}{clean}")
}

/// One machine at `depth`: its states (composites recurse with a fresh id
/// `prefix` from `counter`, so names repeated across branches stay apart),
/// then its transitions.
fn machine(m: &Machine, prefix: &str, out: &mut String, counter: &mut usize, depth: usize) {
    let ind = "    ".repeat(depth);
    for s in &m.states {
        let sid = mermaid_id(prefix, &s.name);
        let label = s.name.replace('"', "'");
        match &s.kind {
            Kind::Parallel(parallel) => {
                out.push_str(&format!("{ind}state \"{label} (Parallel)\" as {sid} {{\n"));
                for (n, b) in parallel.branches.iter().enumerate() {
                    if n > 0 {
                        out.push_str(&format!("{ind}    --\n"));
                    }
                    *counter += 1;
                    let p = format!("{prefix}b{}_", *counter);
                    machine(b, &p, out, counter, depth + 1);
                }
                out.push_str(&format!("{ind}}}\n"));
            }
            Kind::Map(map) => {
                out.push_str(&format!("{ind}state \"{label} (Map)\" as {sid} {{\n"));
                *counter += 1;
                let p = format!("{prefix}m{}_", *counter);
                machine(&map.processor, &p, out, counter, depth + 1);
                out.push_str(&format!("{ind}}}\n"));
            }
            _ => out.push_str(&format!("{ind}state \"{label} ({})\" as {sid}\n", s.type_name)),
        }
    }
    transitions(m, prefix, out, &ind);
}

fn transitions(m: &Machine, prefix: &str, out: &mut String, ind: &str) {
    let id = |i: usize| mermaid_id(prefix, &m.states[i].name);
    out.push_str(&format!("{ind}[*] --> {}\n", id(m.start)));
    for (i, s) in m.states.iter().enumerate() {
        let from = id(i);
        match &s.kind {
            Kind::Choice(choice) => {
                for (rule, next) in &choice.choices {
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
                if let Some(d) = choice.default {
                    out.push_str(&format!("{ind}{from} --> {}: Default\n", id(d)));
                }
            }
            Kind::Succeed | Kind::Fail(_) => out.push_str(&format!("{ind}{from} --> [*]\n")),
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
