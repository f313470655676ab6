//! `refwatch check FILE.jsonl`: prints the findings a run wrote, as text;
//! exits 1 when there are any, 0 when none, 2 when the file can't be read.

use refwatch_model::{text, Event, Finding};
use std::path::Path;
use std::process::ExitCode;

pub fn check(path: &Path) -> ExitCode {
    let content = match std::fs::read_to_string(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("refwatch: check: cannot read {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let findings = match findings(&content) {
        Ok(f) => f,
        Err((line, e)) => {
            eprintln!("refwatch: check: {}:{line}: not a refwatch JSON line: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let mut out = String::new();
    for (pid, finding) in &findings {
        out.push_str(&format!("[{pid}] "));
        text::render_finding(&mut out, finding);
    }
    print!("{out}");
    if findings.is_empty() {
        println!("refwatch: no findings in {}", path.display());
        ExitCode::SUCCESS
    } else {
        println!("refwatch: {} finding(s) in {}", findings.len(), path.display());
        ExitCode::from(1)
    }
}

/// Every finding, once per process: streamed `finding` events, updated by the
/// summary's final counts. Other lines (a program's own stderr) are skipped
/// only if they do not look like JSON.
fn findings(content: &str) -> Result<Vec<(u32, Finding)>, (usize, String)> {
    let mut out: Vec<(u32, Finding)> = Vec::new();
    let mut merge = |pid: u32, f: Finding| match out.iter_mut().find(|(p, g)| *p == pid && g.id == f.id) {
        Some(slot) => slot.1 = f,
        None => out.push((pid, f)),
    };
    for (n, line) in content.lines().enumerate() {
        if !line.trim_start().starts_with('{') {
            continue;
        }
        match serde_json::from_str::<Event>(line).map_err(|e| (n + 1, e.to_string()))? {
            Event::Finding { pid, finding } => merge(pid, finding),
            Event::Summary { pid, findings, .. } => findings.into_iter().for_each(|f| merge(pid, f)),
            _ => {}
        }
    }
    Ok(out)
}
