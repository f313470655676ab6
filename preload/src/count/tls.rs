//! The calling thread's table pointer, in refwatch's own TLS slot reached
//! with the initial-exec model (`crate::sys::static_thread_block`): a
//! `thread_local!` in a shared object goes through `__tls_get_addr` on
//! every access, which cost as much as the counting itself.

use super::table::Table;

#[cfg(not(target_arch = "x86_64"))]
compile_error!("refwatch's TLS access exists for x86_64 only so far");

crate::sys::static_thread_block!(fn slot() -> *const Table, "refwatch_current_table");

/// The calling thread's table, or null before its first event.
#[inline(always)]
pub fn get() -> *const Table {
    // SAFETY: the slot is this thread's, aligned and always mapped.
    unsafe { slot().read() }
}

#[inline(always)]
pub fn set(table: *const Table) {
    // SAFETY: as above; only this thread writes its slot.
    unsafe { slot().write(table) }
}
