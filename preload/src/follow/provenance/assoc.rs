//! Where a reference the extension did not own came from: the container a
//! borrowing call lent it from, or the container a stealing call gave it to.
//! If the extension's own release later frees the object while that
//! container still points at it, the release was not the extension's to
//! make. GIL-serialized, like every `AddressMap`.

use super::address_map::AddressMap;
use super::apis::Slot;

#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct Association {
    pub container: usize,
    /// The container's type then (a reused address shows another).
    pub container_type: usize,
    /// Index in a tuple or list (unused for a dict).
    pub index: usize,
    /// Return address of the borrowing or stealing call.
    pub site: usize,
    /// Index of that call in `apis::APIS`.
    pub api: u32,
    /// `Slot` as a number (0 tuple, 1 list, 2 dict, 3 module).
    pub slot: u8,
    /// Given away (stolen) rather than borrowed.
    pub stolen: bool,
    /// The container's pre-header (its memory block starts that much
    /// before it: its key in `CONTAINERS`).
    pub container_pre_header: u8,
    /// The extension method whose call made the association (its stub in
    /// `methods`, plus one; 0: none).
    pub method: u32,
    /// The object's pre-header, as for `tracked::Origin`.
    pub pre_header: u32,
}

impl Association {
    pub fn slot(&self) -> Slot {
        match self.slot {
            0 => Slot::TupleIndex,
            1 => Slot::ListIndex,
            2 => Slot::DictValue,
            _ => Slot::ModuleAttr,
        }
    }

    pub fn slot_number(slot: Slot) -> u8 {
        match slot {
            Slot::TupleIndex => 0,
            Slot::ListIndex => 1,
            Slot::DictValue => 2,
            Slot::ModuleAttr => 3,
        }
    }
}

/// 2^19 slots of 48 bytes (24 MiB of address space, backed as used).
const CAPACITY: usize = 1 << 19;

pub static ASSOC: AddressMap<Association> = AddressMap::new();

/// The containers associations point into, by memory block, until they are
/// seen freed: a container found here was not given back to the allocator,
/// so its memory can be read without a look at the process's mappings. (A
/// container kept on a free list is not freed: its memory stays readable,
/// its refcount is 0.)
pub static CONTAINERS: AddressMap<u8> = AddressMap::new();

/// 2^18 slots of 16 bytes.
const CONTAINER_CAPACITY: usize = 1 << 18;

pub fn init() -> bool {
    ASSOC.init(CAPACITY) && CONTAINERS.init(CONTAINER_CAPACITY)
}

impl Association {
    /// Whether the container's memory is still the interpreter's (readable).
    ///
    /// # Safety
    /// The caller holds the GIL.
    pub unsafe fn container_readable(&self) -> bool {
        let block = self.container - usize::from(self.container_pre_header);
        // SAFETY: forwarded.
        unsafe { CONTAINERS.get(block) }.is_some()
    }
}
