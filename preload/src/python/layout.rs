//! Reading an object's header, the one layout fact refwatch relies on:
//! `PyObject` is `{ob_refcnt, ob_type}`, preceded by the refchain's two
//! links on trace-refs builds up to 3.12 (`facts::header_extra`).

use std::sync::atomic::{AtomicUsize, Ordering};

static EXTRA: AtomicUsize = AtomicUsize::new(0);

/// Records the header layout of this interpreter (at start).
pub fn set_header_extra(bytes: usize) {
    EXTRA.store(bytes, Ordering::Relaxed);
}

/// Refcounts at or above this are immortal objects (3.12+), not counts.
pub const IMMORTAL: u64 = 1 << 30;

/// `ob_refcnt`.
///
/// # Safety
/// `object` is a live object.
#[inline(always)]
pub unsafe fn refcount(object: usize) -> u64 {
    // SAFETY: a live object's header is readable (caller's contract).
    unsafe { ((object + EXTRA.load(Ordering::Relaxed)) as *const u64).read() }
}

/// `ob_type`.
///
/// # Safety
/// `object` is a live object.
#[inline(always)]
pub unsafe fn type_of(object: usize) -> usize {
    // SAFETY: as above; ob_type follows ob_refcnt.
    unsafe { ((object + EXTRA.load(Ordering::Relaxed) + 8) as *const usize).read() }
}

/// `tp_name` of a type object: after the `PyVarObject` header (`ob_size`).
///
/// # Safety
/// `type_object` is a live type object.
pub unsafe fn type_name(type_object: usize) -> String {
    let at = type_object + EXTRA.load(Ordering::Relaxed) + 16 + 8;
    // SAFETY: every type object has a NUL-terminated tp_name.
    let name = unsafe { *(at as *const *const libc::c_char) };
    if name.is_null() {
        return "?".into();
    }
    // SAFETY: as above.
    let full = unsafe { std::ffi::CStr::from_ptr(name) }.to_string_lossy();
    // "module.Type" for extension types: the short name reads better.
    full.rsplit('.').next().unwrap_or(&full).to_string()
}
