//! The functions refwatch exports to interpose on: `dlopen`, `dlclose`,
//! `_exit`, `_Exit`. Everything else it hooks goes through patched GOTs.

use super::lifecycle;
use crate::interpose::{self, search::caller_search};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The next definition of `name` after refwatch (libc's), cached in `slot`.
fn next(slot: &AtomicUsize, name: &CStr) -> usize {
    let mut address = slot.load(Ordering::Relaxed);
    if address == 0 {
        // SAFETY: `name` is a valid C string; RTLD_NEXT finds the definition
        // that follows this library in the lookup order.
        address = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
        slot.store(address, Ordering::Relaxed);
    }
    address
}

type DlopenFn = unsafe extern "C" fn(*const c_char, c_int) -> *mut c_void;

fn real_dlopen() -> DlopenFn {
    static LIBC_DLOPEN: AtomicUsize = AtomicUsize::new(0);
    let address = next(&LIBC_DLOPEN, c"dlopen");
    // SAFETY: libc's dlopen has this signature; it always exists under glibc.
    unsafe { std::mem::transmute::<usize, DlopenFn>(address) }
}

/// `dlopen`: the trampoline adds the caller's return address, which the
/// loader would otherwise take from refwatch's own frame.
///
/// # Safety
/// As for libc's `dlopen`: `filename` is null or a C string.
#[cfg_attr(not(test), no_mangle)]
#[unsafe(naked)]
pub unsafe extern "C" fn dlopen(_filename: *const c_char, _flags: c_int) -> *mut c_void {
    core::arch::naked_asm!("mov rdx, qword ptr [rsp]", "jmp {hook}", hook = sym dlopen_from)
}

extern "C" fn dlopen_from(filename: *const c_char, flags: c_int, caller: usize) -> *mut c_void {
    let path = caller_search(filename, caller);
    let name = path.as_ref().map_or(filename, |p| p.as_ptr());
    // SAFETY: forwarding the caller's arguments (or a path found on the
    // caller's RUNPATH) to libc's dlopen.
    let handle = unsafe { real_dlopen()(name, flags) };
    if !handle.is_null() {
        interpose::scan(&lifecycle::WIRING);
    }
    handle
}

type DlcloseFn = unsafe extern "C" fn(*mut c_void) -> c_int;

/// `dlclose`, then forget what was unloaded.
///
/// # Safety
/// As for libc's `dlclose`: `handle` came from `dlopen`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn dlclose(handle: *mut c_void) -> c_int {
    static LIBC_DLCLOSE: AtomicUsize = AtomicUsize::new(0);
    // SAFETY: libc's dlclose has this signature.
    let real: DlcloseFn = unsafe { std::mem::transmute(next(&LIBC_DLCLOSE, c"dlclose")) };
    // SAFETY: forwarding the caller's handle.
    let status = unsafe { real(handle) };
    interpose::forget_unloaded();
    status
}

type ExitFn = unsafe extern "C" fn(c_int) -> !;

fn exit_now(slot: &AtomicUsize, name: &CStr, status: c_int) -> ! {
    lifecycle::on_process_exit();
    let address = next(slot, name);
    if address == 0 {
        // SAFETY: exit_group ends the process; nothing runs after it.
        unsafe { libc::syscall(libc::SYS_exit_group, status) };
    }
    // SAFETY: libc's _exit/_Exit have this signature and never return.
    unsafe { std::mem::transmute::<usize, ExitFn>(address)(status) }
}

/// `_exit` (what `os._exit` calls) skips atexit handlers: write the summary
/// first.
#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn _exit(status: c_int) -> ! {
    static LIBC__EXIT: AtomicUsize = AtomicUsize::new(0);
    exit_now(&LIBC__EXIT, c"_exit", status)
}

#[cfg_attr(not(test), no_mangle)]
#[allow(non_snake_case)] // the C name
pub extern "C" fn _Exit(status: c_int) -> ! {
    static LIBC__EXIT_UPPER: AtomicUsize = AtomicUsize::new(0);
    exit_now(&LIBC__EXIT_UPPER, c"_Exit", status)
}
