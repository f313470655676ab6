//! The objects refwatch follows: every fresh object a watched extension
//! received from a new-reference call, by address, with where it came from.
//!
//! Invariant: only touched with the GIL held (the hooks that insert and
//! remove run inside C-API calls and deallocations, the checks in at-exit and
//! pending calls), so one interpreter's accesses are serialized and the table
//! needs no lock (DESIGN.md §8). Free-threaded builds do not enable it.
//!
//! Open addressing with linear probing and backward-shift deletion, in one
//! anonymous mapping made at start: pages are backed only once used.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, Ordering};

/// Where a followed object came from.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct Origin {
    /// Return address of the call that created it (the extension's site).
    pub site: usize,
    /// Its type when created (a reused address shows another type).
    pub type_object: usize,
    /// Index of the C-API function in `apis::NEW_REFERENCE`.
    pub api: u32,
    /// Bytes between the start of its memory block and the object.
    pub pre_header: u32,
}

#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Slot {
    object: usize,
    origin: Origin,
}

/// Slots: 2^21 (64 MiB of address space, 24 bytes... per slot rounded up);
/// following stops at 3/4 full, well above a million live objects.
const CAPACITY: usize = 1 << 21;
const LIMIT: usize = CAPACITY / 4 * 3;

struct Table {
    slots: *mut Slot,
    len: usize,
    /// Objects not followed because the table was full.
    dropped: u64,
}

struct Shared(UnsafeCell<Table>);
// SAFETY: every access happens with the GIL held (module invariant), which
// serializes them.
unsafe impl Sync for Shared {}

static TABLE: Shared = Shared(UnsafeCell::new(Table { slots: std::ptr::null_mut(), len: 0, dropped: 0 }));
static READY: AtomicBool = AtomicBool::new(false);

/// Maps the table. Called once at start, before any hook can insert.
pub fn init() -> bool {
    if READY.load(Ordering::Acquire) {
        return true;
    }
    let bytes = CAPACITY * size_of::<Slot>();
    // SAFETY: an anonymous private mapping with no address hint, checked
    // against MAP_FAILED before use; zeroed memory is a table of free slots.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return false;
    }
    // SAFETY: start runs once, before any hook is patched in, so nothing
    // else accesses the table yet.
    unsafe { (*TABLE.0.get()).slots = base.cast() };
    READY.store(true, Ordering::Release);
    true
}

/// # Safety
/// The caller holds the GIL (module invariant).
unsafe fn table() -> Option<&'static mut Table> {
    if !READY.load(Ordering::Acquire) {
        return None;
    }
    // SAFETY: the GIL serializes all access (caller's contract).
    Some(unsafe { &mut *TABLE.0.get() })
}

#[inline(always)]
fn home(object: usize) -> usize {
    (object.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) & (CAPACITY - 1)
}

impl Table {
    fn slot(&mut self, i: usize) -> &mut Slot {
        // SAFETY: i < CAPACITY (callers mask with CAPACITY - 1) and the
        // mapping holds CAPACITY slots.
        unsafe { &mut *self.slots.add(i) }
    }

    fn find(&mut self, object: usize) -> Option<usize> {
        let mut i = home(object);
        loop {
            match self.slot(i).object {
                0 => return None,
                o if o == object => return Some(i),
                _ => i = (i + 1) & (CAPACITY - 1),
            }
        }
    }
}

/// Follows `object`. A new object at an address that is still in the table
/// replaces the old entry (its free went unseen).
///
/// # Safety
/// The caller holds the GIL.
pub unsafe fn insert(object: usize, origin: Origin) {
    // SAFETY: forwarded.
    let Some(t) = (unsafe { table() }) else { return };
    if let Some(i) = t.find(object) {
        t.slot(i).origin = origin;
        return;
    }
    if t.len >= LIMIT {
        t.dropped += 1;
        return;
    }
    let mut i = home(object);
    while t.slot(i).object != 0 {
        i = (i + 1) & (CAPACITY - 1);
    }
    *t.slot(i) = Slot { object, origin };
    t.len += 1;
}

/// Stops following `object` (it was freed). One probe when it is not
/// followed, which is the common case.
///
/// # Safety
/// The caller holds the GIL.
#[inline]
pub unsafe fn remove(object: usize) {
    // SAFETY: forwarded.
    unsafe { take(object) };
}

/// Where a followed object came from, if it is followed.
///
/// # Safety
/// The caller holds the GIL.
#[inline]
pub unsafe fn get(object: usize) -> Option<Origin> {
    // SAFETY: forwarded.
    let t = (unsafe { table() })?;
    let i = t.find(object)?;
    Some(t.slot(i).origin)
}

/// Stops following `object` and returns where it came from.
///
/// # Safety
/// The caller holds the GIL.
pub unsafe fn take(object: usize) -> Option<Origin> {
    // SAFETY: forwarded.
    let t = (unsafe { table() })?;
    let mut hole = t.find(object)?;
    let origin = t.slot(hole).origin;
    // Backward-shift deletion: move later entries of the run into the hole
    // when their home position allows it.
    let mut i = hole;
    loop {
        i = (i + 1) & (CAPACITY - 1);
        let candidate = *t.slot(i);
        if candidate.object == 0 {
            break;
        }
        let h = home(candidate.object);
        // Distance from home to i, and from home to the hole, along the run.
        let to_i = i.wrapping_sub(h) & (CAPACITY - 1);
        let to_hole = hole.wrapping_sub(h) & (CAPACITY - 1);
        if to_hole <= to_i {
            *t.slot(hole) = candidate;
            hole = i;
        }
    }
    *t.slot(hole) = Slot::default();
    t.len -= 1;
    Some(origin)
}

/// Every followed object with its origin.
///
/// # Safety
/// The caller holds the GIL.
pub unsafe fn all() -> Vec<(usize, Origin)> {
    // SAFETY: forwarded.
    let Some(t) = (unsafe { table() }) else { return Vec::new() };
    let mut out = Vec::with_capacity(t.len);
    for i in 0..CAPACITY {
        let slot = *t.slot(i);
        if slot.object != 0 {
            out.push((slot.object, slot.origin));
        }
    }
    out
}

/// Forgets everything (a forked child follows its own objects from scratch
/// and has one thread: the one that forked, holding the GIL).
///
/// # Safety
/// The caller holds the GIL.
pub unsafe fn clear() {
    // SAFETY: forwarded.
    let Some(t) = (unsafe { table() }) else { return };
    for i in 0..CAPACITY {
        if t.slot(i).object != 0 {
            *t.slot(i) = Slot::default();
        }
    }
    t.len = 0;
}
