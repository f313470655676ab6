//! The refcount entry points refwatch puts itself in front of, listed once.
//!
//! Each entry is reached through a patched GOT slot of a watched object. Its
//! trampoline (`arch`) hands the caller's return address (the call site) to a
//! typed hook, which counts the event and calls the real function. Hooks never
//! allocate, lock, log or make a system call.

mod arch;

use crate::count::{record, Kind};
use crate::findings::overrelease::{self, Verdict};
use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};

/// One hooked function.
pub struct Hook {
    /// The symbol name an extension's relocation refers to.
    pub name: &'static str,
    /// Where patched GOT slots point.
    pub entry: unsafe extern "C" fn(),
    /// The interpreter's own function; 0 until resolved at start.
    pub interpreter_fn: &'static AtomicUsize,
}

/// Whether releasing `op` drops its last reference (the release frees it).
///
/// # Safety
/// `op` is NULL or a live object.
#[inline(always)]
unsafe fn releases_last(op: *mut c_void) -> bool {
    // SAFETY: caller's contract.
    !op.is_null() && unsafe { crate::python::layout::refcount(op as usize) } == 1
}

/// Reads the interpreter's function a hook calls on. Only called from
/// hooks, which are only reachable through slots patched after it was set
/// (non-zero).
#[inline(always)]
fn resolved(slot: &AtomicUsize) -> usize {
    slot.load(Ordering::Relaxed)
}

/// Declares the hooks: `name(shape) => kind`. Shapes: `object` for
/// `f(PyObject *)` increments and decrements (also noted in the
/// provenance ledger), `dealloc` for `_Py_Dealloc` (which also tells provenance
/// the object is gone), `total` for `f(void)` (debug builds' per-site total
/// functions), `negative` for `_Py_NegativeRefcount(file, line, op)`.
macro_rules! hooks {
    ($( $name:ident ( $shape:ident ) => $kind:expr ),* $(,)?) => {
        $( hooks!(@one $name $shape $kind); )*
        /// Every hooked function.
        pub static HOOKS: &[Hook] = &[
            $( Hook { name: stringify!($name), entry: $name::entry, interpreter_fn: &$name::INTERPRETER_FN } ),*
        ];
    };
    (@one $name:ident object $kind:expr) => {
        #[allow(non_snake_case)]
        mod $name {
            use super::*;
            pub static INTERPRETER_FN: AtomicUsize = AtomicUsize::new(0);
            extern "C" fn hook(op: *mut c_void, ra: usize) {
                record(ra, $kind);
                let increment = matches!($kind, Kind::Incref);
                // SAFETY: refcount calls are made with the GIL held; this runs
                // before the real call, while the object is surely alive.
                unsafe { crate::follow::provenance::visible_refcount(op as usize, ra, if increment { 1 } else { -1 }) };
                // SAFETY: as above; a limited-API Py_DECREF of the last
                // reference frees inside this call.
                if !increment && unsafe { releases_last(op) } {
                    // SAFETY: as above.
                    if let Verdict::Keep = unsafe { overrelease::before_free(op as usize, ra) } {
                        return;
                    }
                }
                // SAFETY: INTERPRETER_FN holds the address of the interpreter's function
                // of this name, whose C signature is `void f(PyObject *)`.
                let f: extern "C" fn(*mut c_void) = unsafe { std::mem::transmute(resolved(&INTERPRETER_FN)) };
                f(op)
            }
            arch::trampoline!(entry, ra_after_1_arg, hook);
        }
    };
    (@one $name:ident dealloc $kind:expr) => {
        #[allow(non_snake_case)]
        mod $name {
            use super::*;
            pub static INTERPRETER_FN: AtomicUsize = AtomicUsize::new(0);
            extern "C" fn hook(op: *mut c_void, ra: usize) {
                record(ra, $kind);
                // SAFETY: deallocation runs with the GIL held; the object is
                // alive until the real function frees it.
                if let Verdict::Keep = unsafe { overrelease::before_free(op as usize, ra) } {
                    return;
                }
                // SAFETY: as above.
                unsafe { crate::follow::provenance::forget(op as usize) };
                // SAFETY: INTERPRETER_FN holds the address of the interpreter's function
                // of this name, whose C signature is `void f(PyObject *)`.
                let f: extern "C" fn(*mut c_void) = unsafe { std::mem::transmute(resolved(&INTERPRETER_FN)) };
                f(op);
                // SAFETY: the GIL is still held; the object was just freed.
                unsafe { crate::follow::watch::after_free(op as usize, ra) };
            }
            arch::trampoline!(entry, ra_after_1_arg, hook);
        }
    };
    (@one $name:ident total $kind:expr) => {
        #[allow(non_snake_case)]
        mod $name {
            use super::*;
            pub static INTERPRETER_FN: AtomicUsize = AtomicUsize::new(0);
            extern "C" fn hook(ra: usize) {
                record(ra, $kind);
                // SAFETY: INTERPRETER_FN holds the address of the interpreter's function
                // of this name, whose C signature is `void f(void)`.
                let f: extern "C" fn() = unsafe { std::mem::transmute(resolved(&INTERPRETER_FN)) };
                f()
            }
            arch::trampoline!(entry, ra_after_0_args, hook);
        }
    };
    (@one $name:ident negative $kind:expr) => {
        #[allow(non_snake_case)]
        mod $name {
            use super::*;
            pub static INTERPRETER_FN: AtomicUsize = AtomicUsize::new(0);
            extern "C" fn hook(file: *const c_char, line: c_int, op: *mut c_void, ra: usize) {
                record(ra, $kind);
                // The interpreter reports the error and aborts in the real
                // function: the finding goes out first.
                overrelease::negative_refcount(op as usize, ra);
                type Negative = extern "C" fn(*const c_char, c_int, *mut c_void);
                // SAFETY: INTERPRETER_FN holds `_Py_NegativeRefcount`, whose C signature
                // is `void f(const char *, int, PyObject *)`.
                let f: Negative = unsafe { std::mem::transmute(resolved(&INTERPRETER_FN)) };
                f(file, line, op)
            }
            arch::trampoline!(entry, ra_after_3_args, hook);
        }
    };
}

// docs/design.md §2: what an extension's Py_INCREF/Py_DECREF compile to, per build.
hooks! {
    Py_IncRef(object) => Kind::Incref,
    Py_DecRef(object) => Kind::Decref,
    // Limited API (3.12+ release, 3.10+ debug).
    _Py_IncRef(object) => Kind::Incref,
    _Py_DecRef(object) => Kind::Decref,
    // Any build: a Py_DECREF that reached zero.
    _Py_Dealloc(dealloc) => Kind::Dealloc,
    // Debug builds.
    _Py_NegativeRefcount(negative) => Kind::Negative,
    // Debug 3.12+, normal API: one call per Py_INCREF/Py_DECREF site.
    _Py_INCREF_IncRefTotal(total) => Kind::Incref,
    _Py_DECREF_DecRefTotal(total) => Kind::Decref,
    // Debug 3.12, limited API.
    _Py_IncRefTotal_DO_NOT_USE_THIS(total) => Kind::Incref,
    _Py_DecRefTotal_DO_NOT_USE_THIS(total) => Kind::Decref,
}

/// Looks up the interpreter's function for every hook. Hooks whose function
/// this interpreter lacks stay unresolved and are never patched in.
pub fn resolve() {
    for hook in HOOKS {
        // refwatch exports none of these names, so it cannot find itself.
        hook.interpreter_fn.store(crate::python::api::address_of(hook.name), Ordering::Relaxed);
    }
}

/// Where a GOT slot naming `name` should point: a refcount hook, or a
/// provenance trampoline; `None` when the name is not hooked (or this
/// interpreter lacks the function).
pub fn entry_for(name: &[u8]) -> Option<usize> {
    HOOKS
        .iter()
        .find(|h| h.name.as_bytes() == name && h.interpreter_fn.load(Ordering::Relaxed) != 0)
        .map(|h| h.entry as usize)
        .or_else(|| crate::follow::provenance::entry_for(name))
        .or_else(|| crate::follow::methods::entry_for(name))
}
