//! Arguments a watched extension's method kept references to: an object
//! whose refcount grew across a call of a method (`crate::follow::methods`) that
//! did not return it, with the method and how much it grew. If at a check
//! those references are ones nothing holds, the method left them: an inline
//! `Py_INCREF` on a release build, which no hook sees, is found at function
//! level. GIL-serialized, like every `AddressMap`.

use super::address_map::AddressMap;
use crate::python::layout;

#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct Growth {
    /// References the calls left, in all.
    pub net: u64,
    /// The method stub (`methods`) of the latest call that left one.
    pub method: u32,
    /// The object's pre-header, as for `tracked::Origin`.
    pub pre_header: u32,
    /// Its type then (a reused address shows another).
    pub type_object: usize,
    /// References a deallocator (`dealloc`: its method stub, plus one; 0
    /// for none) left when it freed instances that held the object, at
    /// `offset` in their struct.
    pub dealloc_left: u32,
    pub dealloc: u32,
    pub offset: u32,
}

/// 2^18 slots of 48 bytes (12 MiB of address space, backed as used).
const CAPACITY: usize = 1 << 18;

pub static GROWTH: AddressMap<Growth> = AddressMap::new();

pub fn init() -> bool {
    GROWTH.init(CAPACITY)
}

/// A call of method `method` left `object` with `grew` more references.
///
/// # Safety
/// The caller holds the GIL; `object` is alive.
pub unsafe fn note(object: usize, method: u32, grew: u64) {
    if !super::enabled() {
        return;
    }
    // SAFETY: caller's contract: a live object and its type.
    unsafe {
        let type_object = layout::type_of(object);
        if !super::seen_dying(type_object) {
            return;
        }
        let pre_header = layout::pre_header(type_object) as u32;
        GROWTH.update(object - pre_header as usize, |e| {
            *e = Growth { net: e.net + grew, method, pre_header, type_object, ..*e };
        });
    }
}

/// Whether `word` (a word of an instance's struct) is an object a call of
/// the extension's left references on, alive (deaths remove it): then its
/// refcount may be read. One filter load for most words.
///
/// # Safety
/// The caller holds the GIL.
pub unsafe fn is_grown(word: usize) -> bool {
    // Only an aligned address past the first page can be an object.
    if word < 4096 || !word.is_multiple_of(8) {
        return false;
    }
    // SAFETY: forwarded; entries are removed when their objects die, so a
    // present entry whose pre-header puts the object at `word` is alive.
    unsafe {
        super::may_be_followed(word)
            && [0usize, 16, 32]
                .iter()
                .any(|&h| GROWTH.get(word - h).is_some_and(|g| g.pre_header as usize == h))
    }
}

/// The deallocator behind method stub `dealloc` freed an instance holding
/// `object` at `offset` without releasing that reference.
///
/// # Safety
/// The caller holds the GIL; `object` is alive and `is_grown`.
pub unsafe fn note_dealloc_left(object: usize, dealloc: u32, offset: u32) {
    // SAFETY: caller's contract.
    unsafe {
        let pre_header = layout::pre_header(layout::type_of(object));
        GROWTH.update(object - pre_header, |e| {
            e.dealloc_left += 1;
            e.dealloc = dealloc + 1;
            e.offset = offset;
        });
    }
}
