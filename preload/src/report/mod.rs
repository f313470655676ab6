//! From counts to reports: sum every thread's table per return address,
//! name each address's line, aggregate per line, and write the event.

mod output;
pub mod thread;

use crate::count::{self, registry, Kind};
use crate::interpose;
use crate::lifecycle;
use crate::symbolize::{Place, Symbolizer};
use refwatch_model::{Event, Site, Totals};
use std::collections::HashMap;
use std::sync::Mutex;

static SYMBOLIZER: Mutex<Option<Symbolizer>> = Mutex::new(None);

/// Counts per return address, summed over every thread's table.
fn snapshot() -> HashMap<usize, [u64; count::table::KINDS]> {
    let mut sums: HashMap<usize, [u64; count::table::KINDS]> = HashMap::new();
    let mut dropped = 0;
    registry::for_each_table(|table| {
        dropped += table.dropped();
        table.for_each(|ra, counts| {
            let sum = sums.entry(ra).or_default();
            for (s, c) in sum.iter_mut().zip(counts) {
                *s += c;
            }
        });
    });
    if dropped > 0 {
        static TOLD: std::sync::Once = std::sync::Once::new();
        TOLD.call_once(|| {
            crate::sys::warn(format_args!(
                "a thread made refcount calls from more call sites than its table holds; {dropped} events were not counted"
            ))
        });
    }
    sums
}

/// The place of a return address (symbolized once, cached).
pub fn place_of(ra: usize) -> Place {
    let mut symbolizer = SYMBOLIZER.lock().unwrap_or_else(|e| e.into_inner());
    let symbolizer = symbolizer.get_or_insert_with(Symbolizer::default);
    // The leak check asks once per object: most sites are named already,
    // and only a miss needs the list of watched objects.
    symbolizer.cached(ra).unwrap_or_else(|| locate(symbolizer, ra, &interpose::watched()))
}

/// The place of `ra`; a method's tail call (`methods::call_site`) is named
/// at the method's function.
fn locate(symbolizer: &mut Symbolizer, ra: usize, watched: &[interpose::Watched]) -> Place {
    match crate::methods::tail_call_function(ra) {
        Some(function) => place_of_entry(symbolizer, function, watched),
        None => symbolizer.place(ra, watched),
    }
}

/// The place of the function at `function` (an entry address).
fn place_of_entry(symbolizer: &mut Symbolizer, function: usize, watched: &[interpose::Watched]) -> Place {
    // The entry address is the "return address" of nothing: name the
    // instruction at it (a return address names the one before).
    symbolizer.place(function + 1, watched)
}

/// The place of the function at `function` (an entry address; cached).
pub fn function_place(function: usize) -> Place {
    let mut symbolizer = SYMBOLIZER.lock().unwrap_or_else(|e| e.into_inner());
    let symbolizer = symbolizer.get_or_insert_with(Symbolizer::default);
    place_of_entry(symbolizer, function, &interpose::watched())
}

/// The function at `function` (an entry address) and the lines in it
/// where DWARF places an inlined `Py_INCREF`.
pub fn function_and_increments(function: usize) -> (Place, Vec<u32>) {
    let mut symbolizer = SYMBOLIZER.lock().unwrap_or_else(|e| e.into_inner());
    let symbolizer = symbolizer.get_or_insert_with(Symbolizer::default);
    let watched = interpose::watched();
    (place_of_entry(symbolizer, function, &watched), symbolizer.increment_lines(function, &watched))
}

/// The distinct source lines, in watched objects, of the instructions
/// before `ips` (each the instruction after an access a watchpoint saw).
pub fn lines_of(ips: impl IntoIterator<Item = usize>) -> Vec<Place> {
    let mut places: Vec<Place> =
        ips.into_iter().map(place_of).filter(|p| p.module.is_some() && p.line.is_some()).collect();
    places.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    places.dedup_by(|a, b| (&a.file, a.line) == (&b.file, b.line));
    places
}

/// Fresh objects received per source line (estimates when sampling).
pub fn created_by_place() -> HashMap<Place, u64> {
    let mut out: HashMap<Place, u64> = HashMap::new();
    let scale = u64::from(count::sample());
    for (ra, counts) in snapshot() {
        let created = counts[Kind::New as usize];
        if created > 0 {
            *out.entry(place_of(ra)).or_default() += created * scale;
        }
    }
    out
}

/// The current per-line sites, busiest first. With sampling, counts are
/// scaled up to estimates.
pub fn sites() -> Vec<Site> {
    let watched = interpose::watched();
    let scale = u64::from(count::sample());
    let mut symbolizer = SYMBOLIZER.lock().unwrap_or_else(|e| e.into_inner());
    let symbolizer = symbolizer.get_or_insert_with(Symbolizer::default);
    let mut by_place: HashMap<Place, Site> = HashMap::new();
    for (ra, counts) in snapshot() {
        let place = locate(symbolizer, ra, &watched);
        let site = by_place.entry(place.clone()).or_insert_with(|| Site {
            module: place.module,
            file: place.file,
            line: place.line,
            function: place.function,
            ..Site::default()
        });
        site.incref += counts[Kind::Incref as usize] * scale;
        site.decref += counts[Kind::Decref as usize] * scale;
        site.dealloc += counts[Kind::Dealloc as usize] * scale;
    }
    let mut sites: Vec<Site> =
        by_place.into_values().filter(|s| s.incref + s.decref + s.dealloc > 0).collect();
    sites.sort_by(|a, b| {
        let total = |s: &Site| s.incref + s.decref + s.dealloc;
        total(b).cmp(&total(a)).then_with(|| (&a.module, &a.file, a.line).cmp(&(&b.module, &b.file, b.line)))
    });
    sites
}

/// Fills `refs_delta` from the previous totals.
pub fn with_delta(mut totals: Totals, previous: Option<&Totals>) -> Totals {
    if let (Some(now), Some(before)) = (totals.refs, previous.and_then(|p| p.refs)) {
        totals.refs_delta = Some(now - before);
    }
    totals
}

/// The `sample` field of reports: present only when sampling.
pub fn sample_field() -> Option<u32> {
    Some(count::sample()).filter(|&n| n > 1)
}

/// Writes one event to the configured output. A finding also goes to the
/// launcher's findings file (`refwatch run --fail-on-findings`).
pub fn emit(event: &Event) {
    let Some(target) = target() else { return };
    output::write(&target, event, lifecycle::start_event);
    if let Event::Finding { .. } = event {
        output::note_finding(event);
    }
}

/// Writes this process's `start` event (the output opens on first use).
pub fn emit_start() {
    let Some(target) = target() else { return };
    output::open_for_this_process(&target, lifecycle::start_event);
}

/// Where and how events are written, once the agent started.
fn target() -> Option<output::Target<'static>> {
    let settings = lifecycle::settings()?;
    Some(output::Target { output: &settings.output, format: settings.format })
}
