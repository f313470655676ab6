//! New references a watched extension received to objects it did not make
//! fresh: a new-reference call (`PyObject_GetAttrString`, `PyObject_Call*`
//! for a callback's result, `PyIter_Next`, `PySequence_GetItem`, ...) that
//! returned an object with other references already (a long-lived str, a
//! cached tuple, an iterator's reused item). Each such reference is the
//! extension's to release; whether it did is not seen on a release build
//! (an inline `Py_DECREF`). At a check, an object left with references
//! nothing holds, and at most as many as it was handed here, was leaked
//! by the calls that handed them over. GIL-serialized, like every
//! `AddressMap`.

use super::address_map::AddressMap;
use crate::python::layout;

/// Call sites remembered per object; more are folded into the last one.
pub const SITES: usize = 3;

/// One call site that received references to the object.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct Receipt {
    /// The call's return address.
    pub ra: usize,
    /// References received there.
    pub count: u32,
    /// The new-reference function (`apis::APIS` index).
    pub api: u32,
}

#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct Receipts {
    /// References received, in all.
    pub count: u64,
    pub sites: [Receipt; SITES],
    /// The object's type and pre-header, as for `tracked::Origin`.
    pub type_object: usize,
    pub pre_header: u32,
}

impl Receipts {
    /// The call site that received most of them.
    pub fn main_site(&self) -> Receipt {
        self.sites.iter().copied().max_by_key(|s| s.count).unwrap_or_default()
    }
}

/// 2^18 slots of 80 bytes (20 MiB of address space, backed as used).
const CAPACITY: usize = 1 << 18;

/// References beyond which an object is taken to be one the interpreter
/// shares widely (`None` and the other singletons before 3.12 made them
/// immortal, a module's name): not noted, a map update saved per call.
const SHARED: u64 = 1 << 20;

pub static RECEIVED: AddressMap<Receipts> = AddressMap::new();

pub fn init() -> bool {
    RECEIVED.init(CAPACITY)
}

/// The call at `ra` to new-reference function `api` returned `object`,
/// which had other references already.
///
/// # Safety
/// The caller holds the GIL; `object` is alive.
#[inline(never)]
pub unsafe fn note(object: usize, ra: usize, api: usize) {
    // SAFETY: caller's contract: a live object and its type.
    unsafe {
        if layout::refcount(object) >= SHARED {
            return;
        }
        let type_object = layout::type_of(object);
        if !super::seen_dying(type_object) {
            return;
        }
        let pre_header = layout::pre_header(type_object) as u32;
        RECEIVED.update(object - pre_header as usize, |e| {
            e.count += 1;
            e.type_object = type_object;
            e.pre_header = pre_header;
            let slot = e.sites.iter().position(|s| s.ra == ra || s.ra == 0).unwrap_or(SITES - 1);
            let site = &mut e.sites[slot];
            if site.ra == 0 {
                *site = Receipt { ra, count: 0, api: api as u32 };
            }
            site.count = site.count.saturating_add(1);
        });
    }
}
