//! Findings: what refwatch is certain of, with the evidence. Each finding
//! gets an id when first established and is written at once (a `finding`
//! event); the summary repeats every finding with its final count.

mod heap;
pub mod leaks;
pub mod overrelease;

use refwatch_model::event::Finding;
use std::sync::Mutex;

/// Findings established so far in this process.
static FINDINGS: Mutex<Vec<Finding>> = Mutex::new(Vec::new());

/// Records `finding` (an update when the same kind and place was found
/// before) and returns it with its id, and whether it is new.
pub fn establish(finding: Finding) -> (Finding, bool) {
    record(finding, false)
}

/// Records one more occurrence of `finding` (over-releases are counted as
/// they happen) and returns it with its id and running count.
pub fn establish_counted(finding: Finding) -> (Finding, bool) {
    record(finding, true)
}

fn record(mut finding: Finding, accumulate: bool) -> (Finding, bool) {
    let mut all = FINDINGS.lock().unwrap_or_else(|e| e.into_inner());
    let same = |f: &&mut Finding| {
        f.kind == finding.kind
            && f.module == finding.module
            && f.file == finding.file
            && f.line == finding.line
            && f.function == finding.function
    };
    if let Some(existing) = all.iter_mut().find(same) {
        finding.id = existing.id;
        if accumulate {
            finding.count += existing.count;
        }
        *existing = finding.clone();
        return (finding, false);
    }
    finding.id = all.len() as u32 + 1;
    all.push(finding.clone());
    (finding, true)
}

/// Every finding, with its latest count.
pub fn all() -> Vec<Finding> {
    FINDINGS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// A forked child reports only its own findings.
pub fn reset_after_fork() {
    FINDINGS.lock().unwrap_or_else(|e| e.into_inner()).clear();
}
