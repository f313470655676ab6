//! The functions refwatch exports to interpose on: `dlopen`, `dlclose`,
//! `_exit`, `_Exit`. Everything else it hooks goes through patched GOTs.

use super::objects;
use crate::lifecycle;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
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
    static REAL: AtomicUsize = AtomicUsize::new(0);
    let address = next(&REAL, c"dlopen");
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
        objects::scan();
    }
    handle
}

/// Calling dlopen from refwatch makes the loader search refwatch's RUNPATH
/// instead of the caller's. For a bare name, redo the caller's DT_RPATH /
/// LD_LIBRARY_PATH / DT_RUNPATH part of the search, in the loader's order;
/// `None` leaves the rest (cache, default dirs) to the real dlopen.
fn caller_search(filename: *const c_char, caller: usize) -> Option<CString> {
    if filename.is_null() {
        return None;
    }
    // SAFETY: dlopen's contract: a non-null filename is a C string.
    let name = unsafe { CStr::from_ptr(filename) }.to_str().ok()?;
    if name.contains('/') || name.is_empty() {
        return None;
    }
    let object = objects::object_at(caller)?;
    // SAFETY: the caller is executing in this object, so it is loaded.
    let (dirs, is_runpath) = unsafe { object.dynamic()?.search_path()? };
    let origin = match object.path.as_str() {
        "" => std::fs::read_link("/proc/self/exe").ok()?.to_string_lossy().into_owned(),
        p => p.to_string(),
    };
    let origin = origin.rsplit_once('/').map_or(".", |(d, _)| d).to_string();
    let expand = |d: &str| d.replace("${ORIGIN}", &origin).replace("$ORIGIN", &origin);
    let env_dirs = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    let own: Vec<String> = dirs.split(':').map(expand).collect();
    let ordered: Vec<String> = if is_runpath {
        env_dirs.split(':').map(str::to_string).chain(own).collect()
    } else {
        own.into_iter().chain(env_dirs.split(':').map(str::to_string)).collect()
    };
    ordered
        .iter()
        .filter(|d| !d.is_empty())
        .map(|d| format!("{d}/{name}"))
        .find(|p| std::path::Path::new(p).exists())
        .and_then(|p| CString::new(p).ok())
}

type DlcloseFn = unsafe extern "C" fn(*mut c_void) -> c_int;

/// `dlclose`, then forget what was unloaded.
///
/// # Safety
/// As for libc's `dlclose`: `handle` came from `dlopen`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn dlclose(handle: *mut c_void) -> c_int {
    static REAL: AtomicUsize = AtomicUsize::new(0);
    // SAFETY: libc's dlclose has this signature.
    let real: DlcloseFn = unsafe { std::mem::transmute(next(&REAL, c"dlclose")) };
    // SAFETY: forwarding the caller's handle.
    let status = unsafe { real(handle) };
    objects::forget_unloaded();
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
    static REAL: AtomicUsize = AtomicUsize::new(0);
    exit_now(&REAL, c"_exit", status)
}

#[cfg_attr(not(test), no_mangle)]
#[allow(non_snake_case)] // the C name
pub extern "C" fn _Exit(status: c_int) -> ! {
    static REAL: AtomicUsize = AtomicUsize::new(0);
    exit_now(&REAL, c"_Exit", status)
}
