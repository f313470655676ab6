//! Seeing objects die, so provenance forgets them: the interpreter's
//! reference tracer (3.13+) reports every object's destruction, release
//! builds included. Older interpreters only show frees made by a watched
//! extension's own `Py_DECREF` (the `_Py_Dealloc` hook).

use super::api::{api, lookup};
use crate::provenance;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};

type Tracer = unsafe extern "C" fn(*mut c_void, c_int, *mut c_void) -> c_int;
type SetTracer = unsafe extern "C" fn(Option<Tracer>, *mut c_void) -> c_int;
type GetTracer = unsafe extern "C" fn(*mut *mut c_void) -> Option<Tracer>;

const DESTROY: c_int = 1;

/// A tracer installed before refwatch's, which refwatch's calls on.
static PREVIOUS: AtomicUsize = AtomicUsize::new(0);
static PREVIOUS_DATA: AtomicUsize = AtomicUsize::new(0);

/// Installs the tracer where the interpreter has one and this thread holds
/// the GIL (as it does while Python imports an extension).
pub fn install() {
    let (Some(set), Some(get)) = (lookup(c"PyRefTracer_SetTracer"), lookup(c"PyRefTracer_GetTracer")) else {
        return;
    };
    if !api().is_some_and(|a| a.can_run_python()) {
        return;
    }
    // SAFETY: both symbols are the 3.13+ functions of these signatures; the
    // GIL is held, as they require.
    unsafe {
        let set: SetTracer = std::mem::transmute(set);
        let get: GetTracer = std::mem::transmute(get);
        let mut data: *mut c_void = std::ptr::null_mut();
        if let Some(previous) = get(&mut data) {
            PREVIOUS.store(previous as usize, Ordering::Relaxed);
            PREVIOUS_DATA.store(data as usize, Ordering::Relaxed);
        }
        set(Some(on_event), std::ptr::null_mut());
    }
}

/// Called for every object created or destroyed: one table probe.
unsafe extern "C" fn on_event(object: *mut c_void, event: c_int, _: *mut c_void) -> c_int {
    if event == DESTROY {
        // SAFETY: the interpreter calls tracers with the GIL held.
        unsafe { provenance::forget(object as usize) };
    }
    let previous = PREVIOUS.load(Ordering::Relaxed);
    if previous != 0 {
        // SAFETY: the tracer that was installed before, with its own data.
        unsafe {
            let previous: Tracer = std::mem::transmute(previous);
            return previous(object, event, PREVIOUS_DATA.load(Ordering::Relaxed) as *mut c_void);
        }
    }
    0
}
