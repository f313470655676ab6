//! Text rendering for people: the classic `file:line N refs` shape, grouped
//! by extension, busiest first; findings before counts.

use crate::event::{Event, Finding, FindingKind, Held, Precision, Site, Totals};
use std::fmt::Write;

/// Renders an event as text (several lines, newline-terminated), or `None`
/// for events that have no text form (`start` is written as one line).
pub fn render(event: &Event) -> String {
    let mut out = String::new();
    match event {
        Event::Start { pid, python, flavour, executable, .. } => {
            let build = if flavour.debug { "debug" } else { "release" };
            let trace = if flavour.trace_refs { " trace-refs" } else { "" };
            let lib = if flavour.shared_libpython { "shared" } else { "static" };
            let _ = writeln!(
                out,
                "refwatch[{pid}] watching {executable} (Python {python}, {build}{trace}, {lib} libpython)"
            );
        }
        Event::Report { pid, seq, elapsed, sites, totals, sample } => {
            let _ = writeln!(out, "refwatch[{pid}] report #{seq} at {elapsed:.1}s{}", sampled(*sample));
            render_sites(&mut out, sites);
            render_totals(&mut out, totals);
        }
        Event::Finding { pid, finding } => {
            let _ = write!(out, "refwatch[{pid}] ");
            render_finding(&mut out, finding);
        }
        Event::Summary { pid, elapsed, sites, totals, findings, held, sample } => {
            let _ = writeln!(
                out,
                "refwatch[{pid}] summary at exit ({elapsed:.1}s): {} finding(s){}",
                findings.len(),
                sampled(*sample)
            );
            for f in findings {
                out.push_str("  ");
                render_finding(&mut out, f);
            }
            render_sites(&mut out, sites);
            render_totals(&mut out, totals);
            render_held(&mut out, held);
        }
    }
    out
}

fn sampled(sample: Option<u32>) -> String {
    match sample {
        Some(n) if n > 1 => format!(" (sampling 1 in {n}: counts are estimates)"),
        _ => String::new(),
    }
}

/// `file:line`, or what stands for it when DWARF could not say.
pub fn location(file: Option<&str>, line: Option<u32>) -> String {
    match (file, line) {
        (Some(f), Some(l)) => format!("{f}:{l}"),
        (Some(f), None) => f.to_string(),
        _ => "?".to_string(),
    }
}

pub fn render_finding(out: &mut String, f: &Finding) {
    let kind = match f.kind {
        FindingKind::Leak => "LEAK",
        FindingKind::Overrelease => "OVER-RELEASE",
    };
    let precision = match f.precision {
        Precision::Exact => String::new(),
        Precision::Function if f.candidates.is_empty() => " (in this function)".to_string(),
        Precision::Function => format!(" (in this function; candidate lines {:?})", f.candidates),
        Precision::Origin => " (where the reference came from)".to_string(),
    };
    let _ = write!(
        out,
        "{kind} {} in {}{precision}: {}",
        location(f.file.as_deref(), f.line),
        f.function.as_deref().unwrap_or("?"),
        f.evidence
    );
    if let (Some(pf), Some(pl)) = (&f.py_file, f.py_line) {
        let _ = write!(out, " [driven from {pf}:{pl}]");
    }
    out.push('\n');
}

fn render_sites(out: &mut String, sites: &[Site]) {
    if sites.is_empty() {
        out.push_str("  no refcount calls from watched extensions yet\n");
        return;
    }
    let total = |s: &Site| s.incref + s.decref + s.dealloc;
    let mut modules: Vec<(Option<&str>, Vec<&Site>)> = Vec::new();
    for site in sites {
        let module = site.module.as_deref();
        match modules.iter_mut().find(|(m, _)| *m == module) {
            Some((_, list)) => list.push(site),
            None => modules.push((module, vec![site])),
        }
    }
    let module_total = |list: &Vec<&Site>| list.iter().map(|s| total(s)).sum::<u64>();
    modules.sort_by_key(|(m, list)| (m.is_none(), std::cmp::Reverse(module_total(list))));
    let _ = writeln!(out, "  {:>12} {:>12} {:>12}  site", "incref", "decref", "dealloc");
    for (module, mut list) in modules {
        let _ = writeln!(out, "  {}", module.unwrap_or("(site unknown: tail calls from the interpreter)"));
        list.sort_by_key(|s| (std::cmp::Reverse(total(s)), s.file.clone(), s.line));
        for s in list {
            let place = if s.is_unknown() {
                String::new()
            } else {
                let func = s.function.as_deref().map(|f| format!(" in {f}")).unwrap_or_default();
                format!("{}{func}", location(s.file.as_deref(), s.line))
            };
            let _ = writeln!(out, "  {:>12} {:>12} {:>12}  {place}", s.incref, s.decref, s.dealloc);
        }
    }
}

fn render_totals(out: &mut String, t: &Totals) {
    if t.is_empty() {
        return;
    }
    let mut parts = Vec::new();
    if let Some(refs) = t.refs {
        let delta = t.refs_delta.map(|d| format!(" ({d:+})")).unwrap_or_default();
        parts.push(format!("{refs} refs{delta}"));
    }
    if let Some(objects) = t.objects {
        let from = t.objects_from.as_deref().unwrap_or("census");
        parts.push(format!("{objects} objects ({from})"));
    }
    if let Some(sum) = t.refcount_sum {
        parts.push(format!("refcount sum {sum}"));
    }
    let _ = writeln!(out, "  totals: {}", parts.join(", "));
    if !t.by_type.is_empty() {
        let types: Vec<String> = t.by_type.iter().map(|c| format!("{} {}", c.type_name, c.count)).collect();
        let _ = writeln!(out, "  by type: {}", types.join(", "));
    }
}

fn render_held(out: &mut String, held: &[Held]) {
    for h in held {
        let _ = writeln!(
            out,
            "  held (not a leak): {} {} at {} in {}",
            h.count,
            h.type_name,
            location(h.file.as_deref(), h.line),
            h.function.as_deref().unwrap_or("?")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_shows_file_line_counts() {
        let e = Event::Report {
            pid: 1,
            seq: 2,
            elapsed: 3.0,
            sites: vec![
                Site {
                    module: Some("m.so".into()),
                    file: Some("m.c".into()),
                    line: Some(10),
                    function: Some("f".into()),
                    incref: 5,
                    decref: 1,
                    dealloc: 0,
                },
                Site { incref: 2, ..Default::default() },
            ],
            totals: Totals { refs: Some(100), refs_delta: Some(-4), ..Default::default() },
            sample: Some(10),
        };
        let text = render(&e);
        assert!(text.contains("report #2"), "{text}");
        assert!(text.contains("estimates"), "{text}");
        assert!(text.contains("m.c:10 in f"), "{text}");
        assert!(text.contains("100 refs (-4)"), "{text}");
        let known = text.find("m.so").unwrap();
        let unknown = text.find("site unknown").unwrap();
        assert!(known < unknown, "{text}");
    }
}
