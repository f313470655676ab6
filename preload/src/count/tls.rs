//! The calling thread's table pointer, in refwatch's own TLS slot reached
//! with the initial-exec model (`fs`-relative, no call): a `thread_local!`
//! in a shared object goes through `__tls_get_addr` on every access, which
//! cost as much as the counting itself. refwatch is loaded at start-up by
//! LD_PRELOAD, so its TLS is in the static block.

use super::table::Table;

#[cfg(not(target_arch = "x86_64"))]
compile_error!("refwatch's TLS access exists for x86_64 only so far");

core::arch::global_asm!(
    ".section .tbss,\"awT\",@nobits",
    ".p2align 3",
    ".globl refwatch_current_table",
    ".hidden refwatch_current_table",
    ".type refwatch_current_table,@object",
    ".size refwatch_current_table, 8",
    "refwatch_current_table:",
    ".zero 8",
    ".text",
);

/// Where the calling thread's table pointer lives.
#[inline(always)]
fn slot() -> *mut *const Table {
    let slot: *mut *const Table;
    // SAFETY: computes the address of this thread's copy of a TLS variable
    // defined above; reads only the thread pointer (fs:0) and the GOT.
    unsafe {
        core::arch::asm!(
            "mov {slot}, qword ptr [rip + refwatch_current_table@GOTTPOFF]",
            "add {slot}, qword ptr fs:[0]",
            slot = out(reg) slot,
            options(nostack, preserves_flags, pure, readonly),
        );
    }
    slot
}

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
