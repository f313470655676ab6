//! A map from object address to a small `Copy` value, for the per-object
//! state provenance keeps (`tracked`, `ledger`): open addressing with linear
//! probing and backward-shift deletion, in one anonymous mapping made at
//! start (pages are backed only once used), so the hot path never allocates.
//!
//! Invariant: a map is only touched with the GIL held (inserts and removals
//! run inside C-API calls and deallocations, reads in at-exit and pending
//! calls), which serializes all access on GIL builds (DESIGN.md §8);
//! free-threaded builds do not enable provenance.

use std::cell::UnsafeCell;

#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Slot<V> {
    key: usize,
    value: V,
}

struct Table<V> {
    /// A counting filter in front of the slots: most lookups are for
    /// addresses that are absent (every free in the process is checked), and
    /// one byte in a 1 MiB array is far likelier in cache than a slot.
    filter: *mut u8,
    slots: *mut Slot<V>,
    /// Power of two.
    capacity: usize,
    len: usize,
    /// Inserts refused because the map was 3/4 full.
    dropped: u64,
}

pub struct AddressMap<V>(UnsafeCell<Table<V>>);

// SAFETY: every access happens with the GIL held (module invariant), which
// serializes them.
unsafe impl<V> Sync for AddressMap<V> {}

/// Objects are at least 16 bytes apart, and those made one after another
/// sit side by side in the allocator's pools: keyed by `address / 16`, they
/// land in neighbouring slots, so a burst of inserts and removes touches a
/// few cache lines rather than one line each.
#[inline(always)]
fn home(key: usize, capacity: usize) -> usize {
    (key >> 4) & (capacity - 1)
}

/// Counters in the filter (one byte each).
const FILTER: usize = 1 << 20;

#[inline(always)]
fn filter_index(key: usize) -> usize {
    (key >> 4) & (FILTER - 1)
}

/// Saturated counters stay set: the filter then only says "maybe".
const STUCK: u8 = u8::MAX;

impl<V: Copy + Default> AddressMap<V> {
    pub const fn new() -> Self {
        AddressMap(UnsafeCell::new(Table {
            filter: std::ptr::null_mut(),
            slots: std::ptr::null_mut(),
            capacity: 0,
            len: 0,
            dropped: 0,
        }))
    }

    /// Maps room for `capacity` (a power of two) slots. Called once at
    /// start, before any hook can use the map.
    pub fn init(&self, capacity: usize) -> bool {
        // SAFETY: start runs once, before any hook that touches the map is
        // patched in, so nothing else accesses it yet.
        let t = unsafe { &mut *self.0.get() };
        if !t.slots.is_null() {
            return true;
        }
        // Zeroed memory is an empty filter followed by free slots (key 0);
        // FILTER keeps the slots page-aligned.
        let Some(base) = crate::sys::zeroed_mapping(FILTER + capacity * size_of::<Slot<V>>()) else {
            return false;
        };
        t.filter = base;
        // SAFETY: the mapping holds FILTER bytes before the slots.
        t.slots = unsafe { base.add(FILTER) }.cast();
        t.capacity = capacity;
        true
    }

    /// # Safety
    /// The caller holds the GIL (module invariant).
    // A `&mut` from `&self` is sound here only because the GIL makes every
    // caller the sole accessor for the duration of its call.
    #[allow(clippy::mut_from_ref)]
    #[inline(always)]
    unsafe fn table(&self) -> Option<&mut Table<V>> {
        // SAFETY: the GIL serializes all access (caller's contract).
        let t = unsafe { &mut *self.0.get() };
        (!t.slots.is_null()).then_some(t)
    }

    /// The value for `key`, if present.
    ///
    /// # Safety
    /// The caller holds the GIL.
    #[inline]
    pub unsafe fn get(&self, key: usize) -> Option<V> {
        // SAFETY: forwarded.
        let t = unsafe { self.table() }?;
        t.find(key).map(|i| t.slot(i).value)
    }

    /// Changes the value for `key` (inserting `V::default()` first when it is
    /// absent). Returns false when the map is full.
    ///
    /// # Safety
    /// The caller holds the GIL.
    #[inline]
    pub unsafe fn update(&self, key: usize, f: impl FnOnce(&mut V)) -> bool {
        // SAFETY: forwarded.
        let Some(t) = (unsafe { self.table() }) else { return false };
        let i = match t.find(key) {
            Some(i) => i,
            None => {
                if t.len >= t.capacity / 4 * 3 {
                    t.dropped += 1;
                    return false;
                }
                let mut i = home(key, t.capacity);
                while t.slot(i).key != 0 {
                    i = (i + 1) & (t.capacity - 1);
                }
                *t.slot(i) = Slot { key, value: V::default() };
                t.len += 1;
                let counter = t.counter(key);
                *counter = counter.saturating_add(1);
                i
            }
        };
        f(&mut t.slot(i).value);
        true
    }

    /// Removes `key` when its value `matches` (one lookup when the key is
    /// absent, the common case).
    ///
    /// # Safety
    /// The caller holds the GIL.
    #[inline]
    pub unsafe fn remove_if(&self, key: usize, matches: impl FnOnce(&V) -> bool) -> Option<V> {
        // SAFETY: forwarded.
        let t = unsafe { self.table() }?;
        let i = t.find(key)?;
        if !matches(&t.slot(i).value) {
            return None;
        }
        // SAFETY: forwarded.
        unsafe { self.remove(key) }
    }

    /// Removes `key`, returning its value. One probe when it is absent, the
    /// common case.
    ///
    /// # Safety
    /// The caller holds the GIL.
    #[inline]
    pub unsafe fn remove(&self, key: usize) -> Option<V> {
        // SAFETY: forwarded.
        let t = unsafe { self.table() }?;
        let mut hole = t.find(key)?;
        let value = t.slot(hole).value;
        // Backward-shift deletion: move later entries of the run into the
        // hole when their home position allows it.
        let mask = t.capacity - 1;
        let mut i = hole;
        loop {
            i = (i + 1) & mask;
            let candidate = *t.slot(i);
            if candidate.key == 0 {
                break;
            }
            let h = home(candidate.key, t.capacity);
            if hole.wrapping_sub(h) & mask <= i.wrapping_sub(h) & mask {
                *t.slot(hole) = candidate;
                hole = i;
            }
        }
        *t.slot(hole) = Slot::default();
        t.len -= 1;
        let counter = t.counter(key);
        if *counter != STUCK {
            *counter -= 1;
        }
        Some(value)
    }

    /// Every entry.
    ///
    /// # Safety
    /// The caller holds the GIL.
    pub unsafe fn entries(&self) -> Vec<(usize, V)> {
        // SAFETY: forwarded.
        let Some(t) = (unsafe { self.table() }) else { return Vec::new() };
        let mut out = Vec::with_capacity(t.len);
        for i in 0..t.capacity {
            let slot = *t.slot(i);
            if slot.key != 0 {
                out.push((slot.key, slot.value));
            }
        }
        out
    }

    /// Removes everything.
    ///
    /// # Safety
    /// The caller holds the GIL.
    pub unsafe fn clear(&self) {
        // SAFETY: forwarded.
        let Some(t) = (unsafe { self.table() }) else { return };
        for i in 0..t.capacity {
            let key = t.slot(i).key;
            if key != 0 {
                *t.slot(i) = Slot::default();
                *t.counter(key) = 0;
            }
        }
        t.len = 0;
    }
}

impl<V> Table<V> {
    #[inline(always)]
    fn slot(&mut self, i: usize) -> &mut Slot<V> {
        // SAFETY: i < capacity (callers mask with capacity - 1) and the
        // mapping holds `capacity` slots.
        unsafe { &mut *self.slots.add(i) }
    }

    #[inline(always)]
    fn counter(&mut self, key: usize) -> &mut u8 {
        // SAFETY: filter_index masks with FILTER - 1; the filter holds
        // FILTER counters.
        unsafe { &mut *self.filter.add(filter_index(key)) }
    }

    #[inline(always)]
    fn find(&mut self, key: usize) -> Option<usize> {
        if self.len == 0 || *self.counter(key) == 0 {
            return None;
        }
        let mut i = home(key, self.capacity);
        loop {
            match self.slot(i).key {
                0 => return None,
                k if k == key => return Some(i),
                _ => i = (i + 1) & (self.capacity - 1),
            }
        }
    }
}
