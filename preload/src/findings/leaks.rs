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
//! Who left a reference behind: when the extension's visible increments on
//! the object (`Py_IncRef`, limited-API `Py_INCREF`: the provenance ledger)
//! outnumber its decrements, the increment's line (exact when all the
//! unmatched increments are on one line, else the function with its
//! candidate lines); otherwise the line that created the object. An object
//! the extension did not create (an argument) whose unheld references are
//! all ones its methods' calls left (`provenance::growth`) is blamed on the
//! method, at function level, with the lines where DWARF places an inlined
//! `Py_INCREF` in it as candidates (pinned to one line by watchpoints). An
//! object a new-reference call returned with other references already (an
//! attribute's value, a callback's result, an iterator's item) whose unheld
//! references are at most the ones such calls handed over
//! (`provenance::received`) is blamed on the call that handed most, exactly.
//! Objects the interpreter shares from places no walk reads (static
//! objects, and before 3.12 small ints, interned strings and the cached
//! empty and one-character strs, bytes and tuples) are never blamed.
//!
//! The rule, "grows with the number of calls": a call site leaks when at
//! least [`LEAK_MIN_OBJECTS`] of the objects it created are left with
//! references nothing holds. A leak adds one such object per call; a single
//! one is a one-time singleton or cache kept where refwatch cannot see (a C
//! struct on the heap) and is listed under `held`, never as a finding. A
//! leak of references to an object made elsewhere adds one reference per
//! call to the same object: there, as many unheld references make a leak.

use super::heap;
use crate::follow::provenance::apis;
use crate::follow::provenance::growth::{Growth, GROWTH};
use crate::follow::provenance::ledger::{LedgerEntry, LEDGER};
use crate::follow::provenance::received::{Receipts, RECEIVED};
use crate::follow::provenance::tracked::{self, Origin};
use crate::interpose;
use crate::python::{api, layout, runtime};
use crate::report;
use crate::symbolize::{self, Place};
use crate::sys::memory::Readable;
use refwatch_model::event::{Finding, FindingKind, Held, Precision};
use std::collections::HashMap;

/// Unheld objects from one site that make a leak.
pub const LEAK_MIN_OBJECTS: u64 = 2;

/// What refwatch knows of an object alive at the check, kept small (24
/// bytes: a check may hold a million of them); its address is at the same
/// index in `Suspects::objects`.
struct Suspect {
    /// The call site that created it; 0 when it was not followed from its
    /// creation.
    site: usize,
    /// Its refcount (saturated: no object has more).
    refcount: u32,
    /// Its index in `Suspects::more`, plus one; 0 for none.
    more: u32,
    /// The C-API function that created it.
    api: u8,
}

impl Suspect {
    fn created(&self) -> Option<(usize, u8)> {
        (self.site != 0).then_some((self.site, self.api))
    }
}

/// The objects alive at the check that refwatch knows something of.
#[derive(Default)]
struct Suspects {
    objects: Vec<usize>,
    known: Vec<Suspect>,
    /// The visible increments and the growth method calls left, which few
    /// objects have.
    more: Vec<More>,
}

impl Suspects {
    fn push(&mut self, object: usize, refcount: u64, created: Option<(usize, u8)>, more: Option<More>) {
        let more = more.map_or(0, |m| {
            self.more.push(m);
            self.more.len() as u32
        });
        let (site, api) = created.unwrap_or((0, 0));
        let refcount = u32::try_from(refcount).unwrap_or(u32::MAX);
        self.objects.push(object);
        self.known.push(Suspect { site, refcount, more, api });
    }

    fn more_of(&self, s: &Suspect) -> Option<&More> {
        (s.more as usize).checked_sub(1).map(|i| &self.more[i])
    }
}

#[derive(Default)]
struct More {
    ledger: Option<LedgerEntry>,
    growth: Option<Growth>,
    received: Option<Receipts>,
}

/// Where unheld references are blamed: one line (`candidates` empty), or a
/// function and the lines in it that may be the one.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Blame {
    place: Place,
    candidates: Vec<u32>,
    how: How,
}

/// How the blamed place left references behind.
#[derive(Clone, PartialEq, Eq, Hash)]
enum How {
    /// It created the object and never released it.
    Created,
    /// A new-reference call here returned the object, which had other
    /// references already, and the reference was never released.
    Received,
    /// This deallocator freed instances that held the object at this offset
    /// of their struct without releasing it.
    Dealloc(u32),
    /// Its visible increments outnumber its decrements.
    Increments,
    /// Calls of this method left them on an argument, without a visible
    /// increment (an inline `Py_INCREF`).
    MethodCalls,
    /// As `MethodCalls`, with the increment's line pinned by watchpoints
    /// on this many calls of this method.
    Pinned(u32, Option<String>),
}

/// What was found for one blame.
#[derive(Default)]
struct Tally {
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
    // The suspects are read without holding them: no collection may free
    // one (a cycle of garbage) before the walk is done.
    runtime::with_gc_paused(check_now).flatten()
}

fn check_now() -> Option<(Vec<Finding>, Vec<Held>)> {
    let memory = Readable::now();
    let mut suspects = suspects(&memory);
    if suspects.objects.is_empty() {
        return Some((Vec::new(), Vec::new()));
    }
    let chosen = heap::Chosen::new(std::mem::take(&mut suspects.objects));
    // References that holders make to each suspect: C statics and the heap.
    let mut held_by = vec![0u32; suspects.known.len()];
    // SAFETY: checks run with the GIL held; the suspects are alive.
    if unsafe { heap::count_holders(&chosen, &mut held_by, &memory) }.is_none() {
        static TOLD: std::sync::Once = std::sync::Once::new();
        TOLD.call_once(|| {
            crate::sys::warn(format_args!("leak check skipped: the walk of the heap did not finish"))
        });
        return None;
    }
    let objects = chosen.into_objects();
    let mut tallies: HashMap<Blame, Tally> = HashMap::new();
    // One blame per method, however many objects its calls left references on.
    let mut method_blames: HashMap<u32, Blame> = HashMap::new();
    for ((&object, s), &held_by) in objects.iter().zip(&suspects.known).zip(&held_by) {
        let held_by = u64::from(held_by);
        let (ledger, growth, received) =
            suspects.more_of(s).map_or((None, None, None), |m| (m.ledger, m.growth, m.received));
        let unheld = u64::from(s.refcount).saturating_sub(held_by);
        // The interpreter's own shared objects (None, small ints, interned
        // strings) have holders no walk sees: never blamed on anyone.
        let shared = unheld > 0 && shared(object);
        let by_increment = if shared { 0 } else { ledger.map_or(0, |e| e.net.max(0) as u64).min(unheld) };
        let rest = unheld - by_increment;
        // New references to an object with others already, never released:
        // at most as many as the calls handed over. The creator's own
        // reference comes first, unless something holds the object: then
        // that holder most likely has it (made, then stored), and the
        // unheld ones are those handed over since.
        let receipts = |rest: u64| match received {
            Some(r) if rest > 0 && !shared => r.count.min(rest),
            _ => 0,
        };
        let creation = |rest: u64| if s.site != 0 && !shared { rest } else { 0 };
        let (by_creation, by_receipt) = if held_by > 0 && received.is_some() {
            let by_receipt = receipts(rest);
            (creation(rest - by_receipt), by_receipt)
        } else {
            let by_creation = creation(rest);
            (by_creation, receipts(rest - by_creation))
        };
        let rest = rest - by_creation - by_receipt;
        // References instances held, which their deallocator did not
        // release (at most as many as it left).
        let by_dealloc = match growth {
            Some(g) if g.dealloc != 0 && rest > 0 && !shared => u64::from(g.dealloc_left).min(rest),
            _ => 0,
        };
        let rest = rest - by_dealloc;
        // Only when the method calls left at least the unheld references
        // (a container the calls also stored it in may have let go of its
        // own since).
        let by_calls = match growth {
            Some(g) if rest > 0 && rest <= g.net && !shared => rest,
            _ => 0,
        };
        let blames = [
            (by_increment, ledger.and_then(|e| increment_blame(&e))),
            (
                by_creation,
                s.created().map(|(site, _)| Blame {
                    place: symbolize::place_of(site),
                    candidates: Vec::new(),
                    how: How::Created,
                }),
            ),
            (
                by_receipt,
                received.map(|r| Blame {
                    place: symbolize::place_of(r.main_site().ra),
                    candidates: Vec::new(),
                    how: How::Received,
                }),
            ),
            (
                by_dealloc,
                growth.filter(|g| g.dealloc != 0).map(|g| {
                    let dealloc = crate::follow::methods::function_of(g.dealloc - 1);
                    Blame {
                        place: symbolize::function_place(dealloc),
                        candidates: Vec::new(),
                        how: How::Dealloc(g.offset),
                    }
                }),
            ),
            (
                by_calls,
                growth
                    .filter(|_| by_calls > 0)
                    .map(|g| method_blames.entry(g.method).or_insert_with(|| method_blame(g.method)).clone()),
            ),
        ];
        for (references, blame) in blames {
            let Some(blame) = blame.filter(|_| references > 0) else { continue };
            let how = blame.how.clone();
            let tally = tallies.entry(blame).or_default();
            tally.objects += 1;
            tally.references += references;
            tally.orphans += u64::from(held_by == 0);
            // SAFETY: the object is alive (checked in `suspects`); its type too.
            let type_name = unsafe { layout::type_name(layout::type_of(object)) };
            *tally.types.entry(type_name).or_default() += 1;
            let api = match how {
                How::Created => s.created().map_or("?", |(_, api)| apis::name(api as usize)),
                How::Received => received.map_or("?", |r| apis::name(r.main_site().api as usize)),
                _ => "Py_INCREF",
            };
            *tally.apis.entry(api).or_default() += 1;
        }
    }
    Some(conclude(tallies))
}

/// Followed objects and objects with unmatched visible increments that are
/// still alive (their address still holds an object of their type).
fn suspects(readable: &Readable) -> Suspects {
    // The maps are keyed by memory block; the object follows its pre-header.
    // Objects with increments or growth, by object: their type then, and
    // what is known.
    let mut more: HashMap<usize, (usize, More)> = HashMap::new();
    // SAFETY: checks run with the GIL held (at exit, in a pending call).
    unsafe {
        LEDGER.for_each(|block, entry| {
            if entry.net > 0 {
                let object = block + entry.pre_header as usize;
                more.entry(object).or_insert((entry.type_object, More::default())).1.ledger = Some(entry);
            }
        });
        GROWTH.for_each(|block, entry| {
            let object = block + entry.pre_header as usize;
            more.entry(object).or_insert((entry.type_object, More::default())).1.growth = Some(entry);
        });
        RECEIVED.for_each(|block, entry| {
            let object = block + entry.pre_header as usize;
            more.entry(object).or_insert((entry.type_object, More::default())).1.received = Some(entry);
        });
    }
    // A reused or freed address shows another type or an impossible
    // refcount: the refcount of the object that is there, if it is one.
    let alive = |object: usize, expected: &dyn Fn(usize) -> bool| {
        if !readable.contains(object, 64) {
            return None;
        }
        // SAFETY: the header is readable (checked above).
        let (type_object, refcount) = unsafe { (layout::type_of(object), layout::refcount(object)) };
        (expected(type_object) && (1..layout::IMMORTAL).contains(&refcount)).then_some(refcount)
    };
    let mut suspects = Suspects::default();
    // SAFETY: as above.
    let followed = unsafe { tracked::len() } + more.len();
    suspects.objects.reserve_exact(followed);
    suspects.known.reserve_exact(followed);
    let mut visit = |block, origin: Origin| {
        let object = block + origin.pre_header as usize;
        let known = more.remove(&object).map(|(_, m)| m);
        if let Some(refcount) = alive(object, &|t| origin.is_type(t)) {
            suspects.push(object, refcount, Some((origin.site, origin.api)), known);
        }
    };
    // SAFETY: as above. A copy of the process that ends after the check
    // gives the map's memory back as it reads it: its peak then stays near
    // the program's.
    unsafe {
        if crate::sys::isolate::in_the_copy() {
            tracked::read_out(&mut visit)
        } else {
            tracked::for_each(&mut visit)
        }
    };
    for (object, (expected, known)) in more {
        if let Some(refcount) = alive(object, &|t| t == expected) {
            suspects.push(object, refcount, None, Some(known));
        }
    }
    suspects
}

/// Whether the interpreter itself keeps references to `object` where the
/// walk cannot count them: a static object (in a loaded file's data), and
/// before 3.12 (where they became immortal) a cached small int or an
/// interned string.
fn shared(object: usize) -> bool {
    if interpose::objects::object_at(object).is_some() {
        return true;
    }
    static TYPES: std::sync::OnceLock<[usize; 4]> = std::sync::OnceLock::new();
    let [int, str, bytes, tuple] = *TYPES.get_or_init(|| {
        [c"PyLong_Type", c"PyUnicode_Type", c"PyBytes_Type", c"PyTuple_Type"].map(api::export)
    });
    // SAFETY: a live object (checked plausible by `suspects`).
    let type_object = unsafe { layout::type_of(object) };
    // SAFETY: as above: an int, str, bytes or tuple of this interpreter's
    // layout.
    unsafe {
        (type_object == int && layout::is_small_int(object))
            || (type_object == str && (layout::is_interned(object) || layout::is_cached_singleton(object)))
            || ((type_object == bytes || type_object == tuple) && layout::is_cached_singleton(object))
    }
}

/// Where an object's unmatched increments are: the lines with more
/// increments than decrements, in the function that has most of them.
fn increment_blame(entry: &LedgerEntry) -> Option<Blame> {
    type Function = (Option<String>, Option<String>); // module, function
    let mut by_function: HashMap<Function, Vec<(Place, i64)>> = HashMap::new();
    for &(ra, net) in entry.call_sites.iter().filter(|s| s.0 != 0 && s.1 > 0) {
        let place = symbolize::place_of(ra);
        by_function.entry((place.module.clone(), place.function.clone())).or_default().push((place, net));
    }
    let (_, mut places) =
        by_function.into_iter().max_by_key(|(_, p)| p.iter().map(|(_, n)| n).sum::<i64>())?;
    places.sort_by_key(|(p, _)| p.line);
    places.dedup_by_key(|(p, _)| p.line);
    let place = places[0].0.clone();
    let candidates =
        if places.len() > 1 { places.iter().filter_map(|(p, _)| p.line).collect() } else { Vec::new() };
    Some(Blame { place, candidates, how: How::Increments })
}

/// The method behind stub `method`: the lines its watched calls' increments
/// were pinned to (`watch`), or else the lines where DWARF places an inlined
/// `Py_INCREF` in it as candidates, the finding's line the first of them.
fn method_blame(method: u32) -> Blame {
    let (mut place, candidates) =
        symbolize::function_and_increments(crate::follow::methods::function_of(method));
    // The instruction after each write: its line is the write's own, in the
    // method or in code it ran (a helper, a thread it started).
    let pinned = symbolize::lines_of(crate::follow::watch::increments(method).into_iter().map(|(ip, _)| ip));
    if let [line] = &pinned[..] {
        let how = How::Pinned(crate::follow::watch::armed_calls(method), place.function.clone());
        return Blame { place: line.clone(), candidates: Vec::new(), how };
    }
    let same_function = pinned.iter().all(|p| p.function == place.function);
    let candidates = if pinned.is_empty() || !same_function {
        candidates
    } else {
        pinned.iter().filter_map(|p| p.line).collect()
    };
    if let Some(&first) = candidates.first() {
        place.line = Some(first);
    }
    Blame { place, candidates, how: How::MethodCalls }
}

fn conclude(tallies: HashMap<Blame, Tally>) -> (Vec<Finding>, Vec<Held>) {
    let created = report::created_by_place();
    // With REFWATCH_SAMPLE=N one fresh object in N was followed: scale the
    // counts up to estimates (the rule applies to the objects followed).
    let scale = u64::from(crate::count::sample());
    let mut findings = Vec::new();
    let mut held = Vec::new();
    for (blame, tally) in tallies {
        let type_name = type_names(&tally.types);
        let place = &blame.place;
        // Fresh objects leak one per call; references left on an object
        // made elsewhere (an argument) pile up on that one object.
        let grows = match blame.how {
            How::Created => tally.objects,
            _ => tally.objects.max(tally.references),
        };
        let leaked = grows >= LEAK_MIN_OBJECTS;
        let tally = Tally {
            objects: tally.objects * scale,
            references: tally.references * scale,
            orphans: tally.orphans * scale,
            ..tally
        };
        if leaked && place.module.is_some() {
            let at_function = matches!(blame.how, How::MethodCalls | How::Dealloc(_));
            let precision = if blame.candidates.is_empty() && !at_function {
                Precision::Exact
            } else {
                Precision::Function
            };
            findings.push(Finding {
                id: 0,
                kind: FindingKind::Leak,
                module: place.module.clone(),
                file: place.file.clone(),
                line: place.line,
                precision,
                function: place.function.clone(),
                count: tally.references,
                evidence: evidence(&blame, &tally, &type_name, created.get(place).copied(), scale > 1),
                candidates: blame.candidates,
                py_file: None,
                py_line: None,
            });
        } else {
            held.push(Held {
                file: place.file.clone(),
                line: place.line,
                function: place.function.clone(),
                count: tally.objects,
                type_name,
            });
        }
    }
    findings.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| (&a.file, a.line).cmp(&(&b.file, b.line))));
    held.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    (findings, held)
}

fn evidence(blame: &Blame, tally: &Tally, type_name: &str, created: Option<u64>, estimated: bool) -> String {
    let about = if estimated { "about " } else { "" };
    let n = format!("{about}{}", tally.objects);
    let refs = tally.references;
    if let How::MethodCalls | How::Pinned(..) = &blame.how {
        let method = match &blame.how {
            How::Pinned(_, Some(method)) => method.as_str(),
            _ => blame.place.function.as_deref().unwrap_or("this function"),
        };
        let left = format!(
            "{n} {type_name} objects passed to {method} keep {refs} reference(s) that nothing holds, each left by \
             a call of {method} without a visible increment"
        );
        if let How::Pinned(calls, _) = blame.how {
            return format!(
                "{left}: the inline Py_INCREF here, pinned by a hardware watchpoint on the arguments' refcounts \
                 over {calls} call(s), is never given back"
            );
        }
        let lines = blame.candidates.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(", ");
        let candidates = if lines.is_empty() {
            "DWARF lists no inlined Py_INCREF in it".to_string()
        } else {
            format!("candidate lines {lines}")
        };
        let why =
            crate::follow::watch::unavailable().unwrap_or_else(|| "no watched call pinned one line".into());
        return format!("{left} (an inline Py_INCREF no hook sees; {candidates}; not pinned: {why})");
    }
    if let How::Dealloc(offset) = blame.how {
        let function = blame.place.function.as_deref().unwrap_or("this deallocator");
        return format!(
            "{n} {type_name} objects keep {refs} reference(s) that nothing holds: instances held them (the member at \
             offset {offset} of their struct) and {function} freed those instances without releasing them (a \
             Py_XDECREF of the member is missing)"
        );
    }
    if blame.how == How::Received {
        let api = most_common(&tally.apis).unwrap_or("?");
        if apis::fills_buffers(api) {
            return format!(
                "{n} {type_name} objects keep {refs} reference(s) held by the Py_buffer {api} filled here, never \
                 given back: PyBuffer_Release is missing, so the exporter stays alive (and locked against \
                 resizing)"
            );
        }
        return format!(
            "{n} {type_name} objects keep {refs} reference(s) returned here by {api} that were never released: the \
             objects had other references already (made elsewhere, cached or long-lived), and nothing holds these"
        );
    }
    if blame.how == How::Increments {
        let where_ = if blame.candidates.is_empty() { "here" } else { "in this function" };
        return format!(
            "{n} {type_name} objects keep {refs} reference(s) taken {where_} by Py_INCREF/Py_IncRef that were never \
             given back: more increments than decrements, and nothing holds those references"
        );
    }
    let api = most_common(&tally.apis).unwrap_or("?");
    let made = format!("{n} {type_name} objects created here by {api}");
    let all = format!("{} were created here in all", created.unwrap_or(tally.objects));
    if tally.orphans == tally.objects {
        format!("{made} are alive and held by nothing ({all}); they grow with every call of this line")
    } else {
        format!(
            "{made} are alive with {refs} more reference(s) than their holders account for ({all}): \
             the reference this call returned was never released"
        )
    }
}

/// The type of the objects of one finding: the most common first, then up
/// to two more ("A/B/C"), for a line that makes objects of several types.
fn type_names(types: &HashMap<String, u64>) -> String {
    let mut by_count: Vec<(&String, &u64)> = types.iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    let names: Vec<&str> = by_count.iter().take(3).map(|(t, _)| t.as_str()).collect();
    if names.is_empty() {
        return "object".to_string();
    }
    let more = if by_count.len() > 3 { "/..." } else { "" };
    format!("{}{more}", names.join("/"))
}

fn most_common<K: AsRef<str>>(counts: &HashMap<K, u64>) -> Option<&str> {
    counts
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.as_ref().cmp(a.0.as_ref())))
        .map(|(k, _)| k.as_ref())
}
