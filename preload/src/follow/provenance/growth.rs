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
}

/// 2^18 slots of 32 bytes (8 MiB of address space, backed as used).
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
            *e = Growth { net: e.net + grew, method, pre_header, type_object };
        });
    }
}
