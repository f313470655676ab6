//! A map from an object's memory block (its address less its pre-header:
//! what the allocator frees) to a small `Copy` value, for the per-object
//! state provenance keeps (`tracked`, `ledger`, `assoc`): open addressing with linear
//! probing and backward-shift deletion, in one anonymous mapping made at
//! start (pages are backed only once used), so the hot path never allocates.
//!
//! Invariant: a map is only touched with the GIL held (inserts and removals
//! run inside C-API calls and deallocations, reads in at-exit and pending
//! calls), which serializes all access on GIL builds (docs/design.md §7.1);
//! free-threaded builds do not enable provenance.

use std::cell::UnsafeCell;

#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Slot<V> {
    key: usize,
    value: V,
}

struct Table<V> {
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
/// sit side by side in the allocator's pools: within each 1 KiB of address
/// space they keep neighbouring slots (a burst of inserts and removes
/// touches a few cache lines), while the 1 KiB chunks are scattered by a
/// multiplicative hash, so that a heap denser than the table does not
/// pile up into one long run (linear probing then degrades to a scan).
#[inline(always)]
fn home(key: usize, capacity: usize) -> usize {
    let granule = key >> 4;
    let chunk = ((granule >> 6) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 24;
    (((chunk as usize) << 6) | (granule & 63)) & (capacity - 1)
}

/// A counting filter in front of every map, shared by all of them: most
/// lookups are for addresses that are in no map (every free in the process
/// is checked), and one byte in a 1 MiB array is far likelier in cache than
/// a slot; one shared filter answers "in none of them" with one load. It is
/// a static in `.bss`: no pointer to load, and its pages are only backed
/// once written.
struct Filter(UnsafeCell<[u8; FILTER_BYTES + MIRROR]>);

// SAFETY: only touched with the GIL held, like the maps.
unsafe impl Sync for Filter {}

/// Counters in the filter (one byte each).
const FILTER_BYTES: usize = 1 << 20;
/// The first counters are mirrored after the last ones, so that the
/// counters of three neighbouring keys can be read with one 4-byte load
/// (`maybe_present_any3`) without wrapping.
const MIRROR: usize = 4;

static FILTER: Filter = Filter(UnsafeCell::new([0; FILTER_BYTES + MIRROR]));

/// Saturated counters stay set: the filter then only says "maybe".
const STUCK: u8 = u8::MAX;

#[inline(always)]
fn filter_index(key: usize) -> usize {
    (key >> 4) & (FILTER_BYTES - 1)
}

#[inline(always)]
fn filter() -> *mut u8 {
    FILTER.0.get().cast()
}

/// Adds `delta` to `key`'s counter (and its mirror); saturated counters
/// stay saturated.
///
/// # Safety
/// The caller holds the GIL.
#[inline(always)]
pub(super) unsafe fn count_key(key: usize, delta: i8) {
    let i = filter_index(key);
    // SAFETY: i < FILTER_BYTES, inside the filter; the GIL makes this the
    // only access (caller's contract).
    let c = unsafe { &mut *filter().add(i) };
    if *c == STUCK {
        return;
    }
    *c = c.wrapping_add_signed(delta);
    if i < MIRROR {
        // SAFETY: the filter has MIRROR bytes after FILTER_BYTES.
        unsafe { *filter().add(FILTER_BYTES + i) = *c };
    }
}

/// False when `key` is surely in no map; true when it may be in one.
///
/// # Safety
/// The caller holds the GIL.
#[inline(always)]
pub unsafe fn maybe_present(key: usize) -> bool {
    // SAFETY: the index is inside the filter; GIL per caller.
    unsafe { *filter().add(filter_index(key)) != 0 }
}

/// False when none of `key`, `key + 16` and `key + 32` can be in any map,
/// with one load.
///
/// # Safety
/// The caller holds the GIL.
#[inline(always)]
pub unsafe fn maybe_present_any3(key: usize) -> bool {
    // SAFETY: filter_index < FILTER_BYTES and MIRROR bytes follow, so the
    // four bytes are inside the filter; unaligned reads are allowed.
    unsafe { filter().add(filter_index(key)).cast::<u32>().read_unaligned() & 0x00ff_ffff != 0 }
}

impl<V: Copy + Default> AddressMap<V> {
    pub const fn new() -> Self {
        AddressMap(UnsafeCell::new(Table { slots: std::ptr::null_mut(), capacity: 0, len: 0, dropped: 0 }))
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
        // Zeroed memory is free slots (key 0).
        let Some(base) = crate::sys::zeroed_mapping(capacity * size_of::<Slot<V>>()) else {
            return false;
        };
        t.slots = base.cast();
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
                // SAFETY: the GIL is held (caller).
                unsafe { count_key(key, 1) };
                i
            }
        };
        f(&mut t.slot(i).value);
        true
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
        let i = t.find(key)?;
        // SAFETY: forwarded.
        Some(unsafe { t.remove_at(i) })
    }

    /// Calls `f` with every entry (without copying them all first).
    ///
    /// # Safety
    /// The caller holds the GIL; `f` does not change the map.
    pub unsafe fn for_each(&self, mut f: impl FnMut(usize, V)) {
        // SAFETY: forwarded.
        let Some(t) = (unsafe { self.table() }) else { return };
        for i in 0..t.capacity {
            let slot = *t.slot(i);
            if slot.key != 0 {
                f(slot.key, slot.value);
            }
        }
    }

    /// Entries in the map.
    ///
    /// # Safety
    /// The caller holds the GIL.
    pub unsafe fn len(&self) -> usize {
        // SAFETY: forwarded.
        unsafe { self.table() }.map_or(0, |t| t.len)
    }

    /// `for_each` that gives the memory of the slots back to the system as
    /// it reads them: the map is empty after. Only for a copy of the
    /// process that ends after a check (`isolate`): its pages are its own,
    /// and the copy then needs no more than the program had.
    ///
    /// # Safety
    /// The caller holds the GIL; nothing uses the map's entries after.
    pub unsafe fn read_out(&self, mut f: impl FnMut(usize, V)) {
        // SAFETY: forwarded.
        let Some(t) = (unsafe { self.table() }) else { return };
        const STEP: usize = 2 << 20;
        let (base, bytes) = (t.slots as usize, t.capacity * size_of::<Slot<V>>());
        let page_mask = !(crate::sys::page_size() - 1);
        let mut released = 0; // bytes from base given back
        for i in 0..t.capacity {
            let slot = *t.slot(i);
            if slot.key != 0 {
                f(slot.key, slot.value);
            }
            // The pages wholly read, a step at a time (the mapping starts
            // on a page).
            let read = (i + 1) * size_of::<Slot<V>>();
            if read - released >= STEP || read == bytes {
                let end = if read == bytes { bytes } else { read & page_mask };
                // SAFETY: [base + released, base + end) lies in the map's
                // own mapping, its slots are read, and nothing reads them
                // again (caller's contract); they read as zeros (empty) if
                // anything did.
                unsafe {
                    libc::madvise((base + released) as *mut libc::c_void, end - released, libc::MADV_DONTNEED)
                };
                released = end;
            }
        }
        t.len = 0;
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
                // SAFETY: forwarded.
                unsafe { count_key(key, -1) };
            }
        }
        t.len = 0;
    }
}

impl<V: Copy + Default> Table<V> {
    /// Empties slot `i` (which holds an entry) and returns its value.
    ///
    /// # Safety
    /// The caller holds the GIL.
    unsafe fn remove_at(&mut self, mut hole: usize) -> V {
        let key = self.slot(hole).key;
        let value = self.slot(hole).value;
        // Backward-shift deletion: move later entries of the run into the
        // hole when their home position allows it.
        let mask = self.capacity - 1;
        let mut i = hole;
        loop {
            i = (i + 1) & mask;
            let candidate = *self.slot(i);
            if candidate.key == 0 {
                break;
            }
            let h = home(candidate.key, self.capacity);
            if hole.wrapping_sub(h) & mask <= i.wrapping_sub(h) & mask {
                *self.slot(hole) = candidate;
                hole = i;
            }
        }
        *self.slot(hole) = Slot::default();
        self.len -= 1;
        // SAFETY: GIL per caller.
        unsafe { count_key(key, -1) };
        value
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
    fn find(&mut self, key: usize) -> Option<usize> {
        // SAFETY: every map access holds the GIL (module invariant).
        if self.len == 0 || !unsafe { maybe_present(key) } {
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

#[cfg(test)]
mod tests;
