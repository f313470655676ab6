//! From counts to reports: sum every thread's table per return address,
//! name each address's line, aggregate per line, and write the event.

mod output;

use crate::count::{self, registry, Kind};
use crate::symbolize::{place_of, places_of, Place};
use refwatch_model::{Event, Format, Output, Site, Totals};
use std::collections::HashMap;
use std::sync::OnceLock;

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
    let scale = u64::from(count::sample());
    let counted: Vec<(usize, [u64; count::table::KINDS])> = snapshot().into_iter().collect();
    let places = places_of(counted.iter().map(|(ra, _)| *ra));
    let mut by_place: HashMap<Place, Site> = HashMap::new();
    for ((_, counts), place) in counted.into_iter().zip(places) {
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

/// Where and how events are written, handed down by the agent's doors when
/// it starts: the settings' output and format, and how to make this
/// process's `start` event (written first to every output it opens, a
/// forked child's too).
pub struct Config {
    pub output: &'static Output,
    pub format: Format,
    pub start_event: fn() -> Event,
}

static CONFIG: OnceLock<Config> = OnceLock::new();

/// Sets where events go; events emitted before it are dropped.
pub fn configure(config: Config) {
    let _ = CONFIG.set(config);
}

/// Writes one event to the configured output. A finding also goes to the
/// launcher's findings file (`refwatch run --fail-on-findings`).
pub fn emit(event: &Event) {
    let Some(config) = CONFIG.get() else { return };
    output::write(&target(config), event, config.start_event);
    if let Event::Finding { .. } = event {
        output::note_finding(event);
    }
}

/// Writes this process's `start` event (the output opens on first use).
pub fn emit_start() {
    let Some(config) = CONFIG.get() else { return };
    output::open_for_this_process(&target(config), config.start_event);
}

fn target(config: &Config) -> output::Target<'static> {
    output::Target { output: config.output, format: config.format }
}
