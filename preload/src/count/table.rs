//! One thread's counts: an open-addressing table keyed by return address.
//!
//! Invariant: a table has one writer at a time (the thread that owns it; the
//! overflow table, shared by threads the pool could not serve, is the
//! exception and uses atomic read-modify-write). A writer publishes a key with
//! `Release` before bumping its counters; the reporter reads keys with
//! `Acquire` and counters with `Relaxed`, so it sees every site, with counts
//! at most a moment old.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// What happened at a site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Kind {
    /// A reference taken through a call (`Py_IncRef`, `_Py_IncRef`, the debug
    /// build's per-`Py_INCREF` total function).
    Incref = 0,
    /// A reference released through a call.
    Decref = 1,
    /// `_Py_Dealloc`: the extension's release freed the object.
    Dealloc = 2,
    /// `_Py_NegativeRefcount`: a debug build caught a refcount below zero.
    Negative = 3,
    /// A fresh object received from a new-reference C-API call.
    New = 4,
}

pub const KINDS: usize = 5;

/// Slots per table; a power of two. 4096 call sites per thread is far more
/// than an extension's refcount operations; more are counted in `dropped`.
pub const SLOTS: usize = 4096;
const MAX_PROBES: usize = 64;

#[repr(C)]
pub struct Slot {
    /// Return address, 0 while free.
    key: AtomicUsize,
    counts: [AtomicU64; KINDS],
}

#[repr(C)]
pub struct Table {
    /// Set when the table may be written by several threads at once.
    shared: AtomicBool,
    /// Events left until the next recorded one, when sampling.
    countdown: AtomicU32,
    /// xorshift state for the sampling gaps.
    random: AtomicU32,
    /// Events that found no free slot.
    dropped: AtomicU64,
    slots: [Slot; SLOTS],
}

/// Spreads return addresses (which share their high bits) over the slots.
#[inline(always)]
fn hash(ra: usize) -> usize {
    (ra.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) & (SLOTS - 1)
}

/// Adds one to a counter that only this thread writes: a plain load and
/// store, no `lock` prefix.
#[inline(always)]
pub fn bump_single(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

impl Table {
    /// An empty table, for a `static`.
    pub const fn new() -> Table {
        Table {
            shared: AtomicBool::new(false),
            countdown: AtomicU32::new(0),
            random: AtomicU32::new(0),
            dropped: AtomicU64::new(0),
            slots: [const { Slot { key: AtomicUsize::new(0), counts: [const { AtomicU64::new(0) }; KINDS] } };
                SLOTS],
        }
    }

    /// Marks the table as written by several threads (the overflow table).
    pub fn set_shared(&self) {
        self.shared.store(true, Ordering::Relaxed);
    }

    /// With sampling, true for one call in `sample` on average. The gaps
    /// are random (uniform in 1..2N), so that a code path repeating a fixed
    /// pattern of calls is not always sampled at the same call.
    #[inline(always)]
    pub fn sample_tick(&self, sample: u32) -> bool {
        let left = self.countdown.load(Ordering::Relaxed);
        if left > 1 {
            self.countdown.store(left - 1, Ordering::Relaxed);
            return false;
        }
        self.countdown.store(self.gap(sample), Ordering::Relaxed);
        true
    }

    /// A random gap between sampled events, uniform in 1..2N (xorshift).
    pub fn gap(&self, sample: u32) -> u32 {
        let mut x = self.random.load(Ordering::Relaxed);
        if x == 0 {
            x = 0x9E37_79B9 ^ (self as *const Table as usize as u32);
        }
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.random.store(x, Ordering::Relaxed);
        1 + x % (2 * sample.max(1) - 1)
    }

    /// Counts one event at `ra`. The usual case, the site already in its
    /// home slot of a single-writer table, is inline; the rest is not.
    #[inline(always)]
    pub fn bump(&self, ra: usize, kind: Kind) {
        match self.home_counter(ra, kind) {
            Some(counter) => bump_single(counter),
            None => self.probe_and_bump(ra, kind),
        }
    }

    /// The counter of `kind` at `ra` when `bump` would find it at once (a
    /// single-writer table, the site in its home slot).
    #[inline(always)]
    pub fn home_counter(&self, ra: usize, kind: Kind) -> Option<&AtomicU64> {
        let slot = &self.slots[hash(ra)];
        (slot.key.load(Ordering::Relaxed) == ra && !self.shared.load(Ordering::Relaxed))
            .then(|| &slot.counts[kind as usize])
    }

    /// `bump` past the home slot, or on the shared table.
    #[inline(never)]
    fn probe_and_bump(&self, ra: usize, kind: Kind) {
        let mut i = hash(ra);
        for _ in 0..MAX_PROBES {
            let slot = &self.slots[i];
            let key = slot.key.load(Ordering::Relaxed);
            if key == ra {
                return self.bump_counter(&slot.counts[kind as usize]);
            }
            if key == 0 && self.claim(slot, ra) {
                return self.bump_counter(&slot.counts[kind as usize]);
            }
            i = (i + 1) & (SLOTS - 1);
        }
        self.bump_counter(&self.dropped);
    }

    #[inline(always)]
    fn bump_counter(&self, counter: &AtomicU64) {
        if self.shared.load(Ordering::Relaxed) {
            counter.fetch_add(1, Ordering::Relaxed);
        } else {
            bump_single(counter);
        }
    }

    /// Takes a free slot for `ra`. Single writer: a plain store. Shared: a
    /// compare-exchange, and another thread may have taken it for `ra` too.
    #[cold]
    fn claim(&self, slot: &Slot, ra: usize) -> bool {
        if !self.shared.load(Ordering::Relaxed) {
            slot.key.store(ra, Ordering::Release);
            return true;
        }
        match slot.key.compare_exchange(0, ra, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => true,
            Err(current) => current == ra,
        }
    }

    /// Calls `f(ra, counts)` for every used slot (the reporter's read).
    pub fn for_each(&self, mut f: impl FnMut(usize, [u64; KINDS])) {
        for slot in &self.slots {
            let key = slot.key.load(Ordering::Acquire);
            if key != 0 {
                f(key, std::array::from_fn(|k| slot.counts[k].load(Ordering::Relaxed)));
            }
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Forgets every count (a forked child starts fresh). Only while no other
    /// thread writes: in a child just after `fork`, the only thread left.
    pub fn clear(&self) {
        // Only used slots are written, so untouched pages stay shared with
        // the parent.
        for slot in self.slots.iter().filter(|s| s.key.load(Ordering::Relaxed) != 0) {
            slot.key.store(0, Ordering::Relaxed);
            for c in &slot.counts {
                c.store(0, Ordering::Relaxed);
            }
        }
        self.dropped.store(0, Ordering::Relaxed);
        self.countdown.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
