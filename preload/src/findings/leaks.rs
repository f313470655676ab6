//! Leaks: objects a watched extension received fresh from a new-reference
//! call that are still alive with references nothing holds.
//!
//! At a check (at exit, with the GIL held, before finalization), for every
//! followed object still alive: its refcount, minus the references that
//! holders make to it — objects the garbage collector tracks and everything
//! reachable from them, tracked or not (dicts of atomic values, untracked
//! tuples), and the watched extensions' static data (C statics) — is what
//! nobody holds. Objects reachable only from a leaked object are held by it:
//! only the root of a leaked structure is reported.
//!
//! The rule, "grows with the number of calls": a call site leaks when at
//! least [`LEAK_MIN_OBJECTS`] of the objects it created are left with
//! references nothing holds. A leak adds one such object per call; a single
//! one is a one-time singleton or cache kept where refwatch cannot see (a C
//! struct on the heap) and is listed under `held`, never as a finding.

use super::memory::Readable;
use crate::interpose;
use crate::provenance::{apis, tracked};
use crate::python::{layout, runtime};
use crate::report;
use crate::symbolize::Place;
use refwatch_model::event::{Finding, FindingKind, Held, Precision};
use std::collections::HashMap;

/// Unheld objects from one site that make a leak.
pub const LEAK_MIN_OBJECTS: u64 = 2;

/// What was found for one source line.
#[derive(Default)]
struct Line {
    /// Objects left with references nothing holds.
    objects: u64,
    /// Those references, in all.
    references: u64,
    /// Objects nothing holds at all (refcount == unheld references).
    orphans: u64,
    types: HashMap<String, u64>,
    apis: HashMap<&'static str, u64>,
}

/// Checks every followed object. `None` when Python could not be asked
/// (then nothing is claimed).
pub fn check() -> Option<(Vec<Finding>, Vec<Held>)> {
    let readable = Readable::now();
    // SAFETY: checks run with the GIL held (at exit, in a pending call).
    let followed = unsafe { tracked::all() };
    let alive: Vec<(usize, tracked::Origin, u64)> = followed
        .into_iter()
        .filter(|(object, _)| readable.contains(*object, 64))
        .filter_map(|(object, origin)| {
            // SAFETY: the header is readable (checked above); a reused or
            // freed address shows another type or an impossible refcount.
            let (type_object, refcount) = unsafe { (layout::type_of(object), layout::refcount(object)) };
            let plausible = type_object == origin.type_object && (1..layout::IMMORTAL).contains(&refcount);
            plausible.then_some((object, origin, refcount))
        })
        .collect();
    if alive.is_empty() {
        return Some((Vec::new(), Vec::new()));
    }
    let objects: Vec<usize> = alive.iter().map(|a| a.0).collect();
    let statics = static_references(&objects);
    let visits = runtime::holder_visits(&objects)?;
    let mut lines: HashMap<Place, Line> = HashMap::new();
    for (i, (object, origin, refcount)) in alive.iter().enumerate() {
        let unheld = refcount.saturating_sub(visits[i] + statics[i]);
        if unheld == 0 {
            continue;
        }
        let line = lines.entry(report::place_of(origin.site)).or_default();
        line.objects += 1;
        line.references += unheld;
        line.orphans += u64::from(unheld == *refcount);
        // SAFETY: the object is alive (checked above); its type object is too.
        let type_name = unsafe { layout::type_name(layout::type_of(*object)) };
        *line.types.entry(type_name).or_default() += 1;
        *line.apis.entry(apis::name(origin.api as usize)).or_default() += 1;
    }
    let created = report::created_by_place();
    let mut findings = Vec::new();
    let mut held = Vec::new();
    for (place, line) in lines {
        let type_name = most_common(&line.types).unwrap_or("object").to_string();
        if line.objects >= LEAK_MIN_OBJECTS && place.module.is_some() {
            let api = most_common(&line.apis).unwrap_or("?");
            let total = created.get(&place).copied().unwrap_or(line.objects);
            findings.push(Finding {
                id: 0,
                kind: FindingKind::Leak,
                module: place.module.clone(),
                file: place.file.clone(),
                line: place.line,
                precision: Precision::Exact,
                candidates: Vec::new(),
                function: place.function.clone(),
                count: line.references,
                evidence: evidence(&line, &type_name, api, total),
                py_file: None,
                py_line: None,
            });
        } else {
            held.push(Held {
                file: place.file.clone(),
                line: place.line,
                function: place.function.clone(),
                count: line.objects,
                type_name,
            });
        }
    }
    findings.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| (&a.file, a.line).cmp(&(&b.file, b.line))));
    held.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    Some((findings, held))
}

fn evidence(line: &Line, type_name: &str, api: &str, created: u64) -> String {
    let n = line.objects;
    let made = format!("{n} {type_name} objects created here by {api}");
    let all = format!("{created} were created here in all");
    if line.orphans == n {
        format!("{made} are alive and held by nothing ({all}); they grow with every call of this line")
    } else {
        format!(
            "{made} are alive with {} more reference(s) than their holders account for ({all}): \
             a reference the extension took was never released",
            line.references
        )
    }
}

fn most_common<K: AsRef<str>>(counts: &HashMap<K, u64>) -> Option<&str> {
    counts
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.as_ref().cmp(a.0.as_ref())))
        .map(|(k, _)| k.as_ref())
}

/// How many words of the watched extensions' static data point at each
/// object: references held by C statics (one-time caches, singletons).
fn static_references(objects: &[usize]) -> Vec<u64> {
    let index: HashMap<usize, usize> = objects.iter().enumerate().map(|(i, &o)| (o, i)).collect();
    let mut counts = vec![0u64; objects.len()];
    let readable = Readable::now();
    for watched in interpose::watched() {
        for range in watched.writable.iter().flat_map(|r| readable.within(r)) {
            let start = (range.start + 7) & !7;
            let words = range.end.saturating_sub(start) / 8;
            // SAFETY: the words lie in one readable mapping of a loaded
            // object (`within`), aligned; reading them has no side effects.
            let data = unsafe { std::slice::from_raw_parts(start as *const usize, words) };
            for word in data {
                if let Some(&i) = index.get(word) {
                    counts[i] += 1;
                }
            }
        }
    }
    counts
}
