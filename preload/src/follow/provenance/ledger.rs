//! The references a watched extension visibly took and gave back, per
//! object: every `Py_IncRef`/`Py_DecRef` it calls, and every `Py_INCREF`/
//! `Py_DECREF` of a limited-API build (`_Py_IncRef`/`_Py_DecRef`), with the
//! call sites. An object left with references nothing holds, whose ledger
//! shows more increments than decrements, was leaked by an increment.
//! GIL-serialized, like every `AddressMap`.

use super::address_map::AddressMap;
use crate::python::layout;

/// Call sites remembered per object; more are folded into the last one.
pub const CALL_SITES: usize = 3;

#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct LedgerEntry {
    /// Increments minus decrements.
    pub net: i64,
    /// Per call site (return address), its increments minus decrements.
    pub call_sites: [(usize, i64); CALL_SITES],
    /// The object's type and pre-header, as for `tracked::Origin`.
    pub type_object: usize,
    pub pre_header: u32,
}

impl LedgerEntry {
    fn add(&mut self, object: usize, ra: usize, delta: i64) {
        if self.type_object == 0 {
            // SAFETY: the object is alive (the refcount call is being made
            // on it), and so is its type.
            unsafe {
                self.type_object = layout::type_of(object);
                self.pre_header = layout::pre_header(self.type_object) as u32;
            }
        }
        self.net += delta;
        let slot = self.call_sites.iter().position(|s| s.0 == ra || s.0 == 0).unwrap_or(CALL_SITES - 1);
        if self.call_sites[slot].0 == 0 {
            self.call_sites[slot].0 = ra;
        }
        self.call_sites[slot].1 += delta;
    }
}

/// 2^19 slots of 80 bytes (40 MiB of address space, backed as used).
const CAPACITY: usize = 1 << 19;

pub static LEDGER: AddressMap<LedgerEntry> = AddressMap::new();

pub fn init() -> bool {
    LEDGER.init(CAPACITY)
}

/// Records `delta` (+1 or -1) on `object`, made from return address `ra`.
///
/// # Safety
/// The caller holds the GIL (refcount calls are made with it).
#[inline]
pub unsafe fn note(object: usize, ra: usize, delta: i64) {
    // SAFETY: forwarded; the object is alive (a refcount call is being made
    // on it), and so is its type.
    unsafe {
        if super::seen_dying(layout::type_of(object)) {
            LEDGER.update(super::key_of(object), |e| e.add(object, ra, delta));
        }
    }
}
