//! Per-thread, single-writer, lock-free counters keyed by call site.
//!
//! Each thread owns one [`table::Table`] (taken from the [`registry`] pool on
//! its first event); the reporter reads every table without stopping anyone.

pub mod registry;
pub mod table;
mod tls;

pub use table::Kind;

use std::sync::atomic::{AtomicU32, Ordering};

/// Record one event in `SAMPLE` per thread (1 = all). Set once at start.
static SAMPLE: AtomicU32 = AtomicU32::new(1);

pub fn set_sample(n: u32) {
    SAMPLE.store(n.max(1), Ordering::Relaxed);
}

pub fn sample() -> u32 {
    SAMPLE.load(Ordering::Relaxed)
}

/// Counts one event of `kind` at return address `ra`: the hot path.
/// Returns whether it was recorded (with sampling, one in N is).
#[inline(always)]
pub fn record(ra: usize, kind: Kind) -> bool {
    if !chosen() {
        return false;
    }
    bump(ra, kind);
    true
}

/// Whether sampling chooses this event (always, without sampling); it is
/// not counted here.
#[inline(always)]
pub fn chosen() -> bool {
    let sample = SAMPLE.load(Ordering::Relaxed);
    // SAFETY: `current` returns a table that lives for the rest of the
    // process (the pool is never unmapped) and that only this thread writes,
    // or the shared overflow table, which is updated atomically.
    sample <= 1 || unsafe { &*registry::current() }.sample_tick(sample)
}

/// Counts one event that sampling already chose (or every event, without
/// sampling).
#[inline(always)]
pub fn bump(ra: usize, kind: Kind) {
    // SAFETY: as in `chosen`.
    unsafe { &*registry::current() }.bump(ra, kind);
}

/// The calling thread's counter of `kind` at `ra` when it is in its home
/// slot of a single-writer table (bump it with `table::bump_single`); else
/// `bump` finds or makes it.
#[inline(always)]
pub fn home_counter(ra: usize, kind: Kind) -> Option<&'static std::sync::atomic::AtomicU64> {
    let table = tls::get();
    // SAFETY: as in `chosen`; null before the thread's first event.
    (!table.is_null()).then(|| unsafe { &*table }).and_then(|t| t.home_counter(ra, kind))
}

/// The number of events until the next sampled one: random, uniform in
/// 1..2N, drawn from the calling thread's generator.
pub fn next_gap() -> u64 {
    // SAFETY: as in `chosen`.
    u64::from(unsafe { &*registry::current() }.gap(sample()))
}
