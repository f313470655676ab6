//! The objects refwatch follows: every fresh object a watched extension
//! received from a new-reference call, by memory block, with where it came
//! from. GIL-serialized, like every `AddressMap`.
//!
//! Most followed objects die young, often inside the call that made them,
//! so they first go to a nursery: a direct-mapped array indexed by address,
//! where an insert and a removal are a store each, in memory that stays in
//! cache (the allocator reuses a freed block first, and with it the slot).
//! An object whose slot is wanted by a newer one moves to the map.

use super::address_map::{count_key, maybe_present, AddressMap};
use std::cell::UnsafeCell;

/// Where a followed object came from (16 bytes: a map slot is 24).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct Origin {
    /// Return address of the call that created it (the extension's site).
    pub site: usize,
    /// The low half of its type's address when created: a reused address
    /// shows another type.
    type_tag: u32,
    /// Index of the C-API function in `apis::APIS`.
    pub api: u8,
    /// Bytes between the start of its memory block and the object.
    pub pre_header: u8,
}

const _: () = assert!(super::trampolines::ENTRIES <= 256 && size_of::<Origin>() == 16);

impl Origin {
    /// No origin (a placeholder).
    pub const NONE: Origin = Origin { site: 0, type_tag: 0, api: 0, pre_header: 0 };

    pub fn new(site: usize, type_object: usize, api: usize, pre_header: usize) -> Origin {
        Origin { site, type_tag: type_object as u32, api: api as u8, pre_header: pre_header as u8 }
    }

    /// Whether `type_object` may be the type it was created with.
    pub fn is_type(&self, type_object: usize) -> bool {
        type_object as u32 == self.type_tag
    }
}

/// 2^21 slots of 24 bytes (48 MiB of address space, backed as used): room
/// for 1.5 million followed objects.
const CAPACITY: usize = 1 << 21;

/// Nursery slots (24 bytes each, 384 KiB in `.bss`): one per 16-byte
/// granule of a 256 KiB address window, so the blocks of neighbouring pools
/// never share a slot.
const NURSERY: usize = 1 << 14;

#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Young {
    /// The memory block, 0 for a free slot.
    block: usize,
    origin: Origin,
}

struct Nursery(UnsafeCell<[Young; NURSERY]>);

// SAFETY: touched only with the GIL held, like the maps.
unsafe impl Sync for Nursery {}

static YOUNG: Nursery = Nursery(UnsafeCell::new([Young { block: 0, origin: Origin::NONE }; NURSERY]));

/// Followed objects that outlived their nursery slot.
static OLD: AddressMap<Origin> = AddressMap::new();

pub fn init() -> bool {
    OLD.init(CAPACITY)
}

/// # Safety
/// The caller holds the GIL.
#[inline(always)]
unsafe fn slot(block: usize) -> &'static mut Young {
    // SAFETY: the index is below NURSERY; the GIL makes the caller the only
    // accessor (caller's contract).
    unsafe { &mut (*YOUNG.0.get())[(block >> 4) & (NURSERY - 1)] }
}

/// Follows the object in `block`, replacing what was known of the block
/// (an object kept on a type's free list is reused without a free).
///
/// # Safety
/// The caller holds the GIL.
#[inline(always)]
pub unsafe fn insert(block: usize, origin: Origin) {
    // SAFETY: forwarded (GIL held).
    unsafe {
        if !insert_young(block, origin) {
            insert_displacing(block, origin);
        }
    }
}

/// `insert` when the nursery's slot holds another object, or the map may
/// hold this block.
///
/// # Safety
/// The caller holds the GIL.
#[cold]
unsafe fn insert_displacing(block: usize, origin: Origin) {
    // SAFETY: forwarded (GIL held).
    unsafe {
        let young = slot(block);
        if maybe_present(block) {
            remove_old(block);
        }
        if young.block != 0 {
            promote(*young);
        }
        count_key(block, 1);
        *young = Young { block, origin };
    }
}

/// `insert` when it is one store: the nursery's slot is free or holds
/// this block, and the map cannot hold it. False (and nothing done)
/// otherwise.
///
/// # Safety
/// The caller holds the GIL.
#[inline(always)]
pub unsafe fn insert_young(block: usize, origin: Origin) -> bool {
    // SAFETY: forwarded (GIL held).
    unsafe {
        let young = slot(block);
        if young.block != block {
            if young.block != 0 || maybe_present(block) {
                return false;
            }
            count_key(block, 1);
        }
        *young = Young { block, origin };
        true
    }
}

/// Moves an object out of the nursery into the map.
///
/// # Safety
/// The caller holds the GIL.
#[cold]
unsafe fn promote(young: Young) {
    // SAFETY: forwarded (GIL held).
    unsafe {
        count_key(young.block, -1);
        OLD.update(young.block, |o| *o = young.origin);
    }
}

/// `remove` for an object of the nursery: false (and nothing done) when
/// `block` (not 0) is not there.
///
/// # Safety
/// The caller holds the GIL.
#[inline(always)]
pub unsafe fn remove_young(block: usize) -> bool {
    // SAFETY: forwarded (GIL held).
    unsafe {
        let young = slot(block);
        if young.block != block {
            return false;
        }
        young.block = 0;
        count_key(block, -1);
        true
    }
}

/// Stops following the object in `block`, returning where it came from.
///
/// # Safety
/// The caller holds the GIL.
#[inline(always)]
pub unsafe fn remove(block: usize) -> Option<Origin> {
    // SAFETY: forwarded (GIL held).
    unsafe {
        let young = slot(block);
        if young.block == block {
            young.block = 0;
            count_key(block, -1);
            return Some(young.origin);
        }
        remove_old(block)
    }
}

/// `remove` for an object that is not in the nursery (out of line: the
/// nursery's paths then need no registers of their own).
///
/// # Safety
/// The caller holds the GIL.
#[cold]
#[inline(never)]
unsafe fn remove_old(block: usize) -> Option<Origin> {
    // SAFETY: forwarded (GIL held).
    unsafe { OLD.remove(block) }
}

/// Calls `f` with every followed object's block and origin.
///
/// # Safety
/// The caller holds the GIL; `f` does not follow or forget objects.
pub unsafe fn for_each(mut f: impl FnMut(usize, Origin)) {
    // SAFETY: forwarded (GIL held).
    unsafe {
        OLD.for_each(&mut f);
        for young in (*YOUNG.0.get()).iter().filter(|y| y.block != 0) {
            f(young.block, young.origin);
        }
    }
}

/// Followed objects.
///
/// # Safety
/// The caller holds the GIL.
pub unsafe fn len() -> usize {
    // SAFETY: forwarded (GIL held).
    unsafe { OLD.len() + (*YOUNG.0.get()).iter().filter(|y| y.block != 0).count() }
}

/// `for_each` that gives the map's memory back as it reads it (see
/// `AddressMap::read_out`): for a check in a copy of the process.
///
/// # Safety
/// As for `AddressMap::read_out`.
pub unsafe fn read_out(mut f: impl FnMut(usize, Origin)) {
    // SAFETY: forwarded (GIL held).
    unsafe {
        OLD.read_out(&mut f);
        for young in (*YOUNG.0.get()).iter().filter(|y| y.block != 0) {
            f(young.block, young.origin);
        }
    }
}

/// Forgets everything.
///
/// # Safety
/// The caller holds the GIL.
pub unsafe fn clear() {
    // SAFETY: forwarded (GIL held).
    unsafe {
        OLD.clear();
        for young in (*YOUNG.0.get()).iter_mut().filter(|y| y.block != 0) {
            count_key(young.block, -1);
            young.block = 0;
        }
    }
}
