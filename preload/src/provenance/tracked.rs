//! The objects refwatch follows: every fresh object a watched extension
//! received from a new-reference call, by memory block, with where it came from.
//! GIL-serialized, like every `AddressMap`.

use super::address_map::AddressMap;

/// Where a followed object came from.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct Origin {
    /// Return address of the call that created it (the extension's site).
    pub site: usize,
    /// Its type when created (a reused address shows another type).
    pub type_object: usize,
    /// Index of the C-API function in `apis::APIS`.
    pub api: u32,
    /// Bytes between the start of its memory block and the object.
    pub pre_header: u32,
}

/// 2^21 slots of 32 bytes (64 MiB of address space, backed as used): room
/// for 1.5 million followed objects.
const CAPACITY: usize = 1 << 21;

pub static TRACKED: AddressMap<Origin> = AddressMap::new();

pub fn init() -> bool {
    TRACKED.init(CAPACITY)
}
