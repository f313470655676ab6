//! Provenance: which line of a watched extension received each fresh object
//! from a new-reference C-API call, and whether that object is still alive.
//! Shared by the findings (DESIGN.md §8): leaks are objects followed here
//! that outlive every holder.
//!
//! The calls are seen through the generic trampolines (`trampolines`), which
//! work for any signature, variadic ones included; an object is followed
//! only when it is fresh (refcount 1 on return: a new object the extension
//! now owns alone, not a cached or shared one). It stops being followed
//! when it is freed: by the interpreter's reference tracer (3.13+, every
//! object), by the extension's own `_Py_Dealloc`, and, at a check, when the
//! address holds an object of another type.

mod address_map;
pub mod apis;
pub mod assoc;
pub mod ledger;
pub mod tracked;
mod trampolines;

use crate::python::layout;
use crate::sys;
use apis::Effect;
use std::sync::atomic::{AtomicBool, Ordering};
use tracked::{Origin, TRACKED};

/// Set once following is on (a GIL build whose layout refwatch knows).
static ENABLED: AtomicBool = AtomicBool::new(false);

const _: () = assert!(trampolines::ENTRIES >= apis::APIS.len());

/// Starts following. Called at start, with the GIL held, before any GOT is
/// patched.
pub fn enable(gil: bool) {
    if !gil || !tracked::init() || !ledger::init() || !assoc::init() {
        return;
    }
    for (k, api) in apis::APIS.iter().enumerate() {
        let c_name = std::ffi::CString::new(api.name).expect("API names have no NUL");
        // SAFETY: a valid C string; RTLD_DEFAULT finds the interpreter's
        // export (refwatch exports none of these names).
        let address = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c_name.as_ptr()) };
        trampolines::REAL[k].store(address as usize, Ordering::Relaxed);
    }
    crate::python::liveness::install();
    ENABLED.store(true, Ordering::Release);
}

/// The trampoline for a C-API function a GOT slot names, if it is followed
/// here and this interpreter has it.
pub fn entry_for(name: &[u8]) -> Option<usize> {
    if !ENABLED.load(Ordering::Acquire) {
        return None;
    }
    let k = apis::index_of(name)?;
    (trampolines::REAL[k].load(Ordering::Relaxed) != 0).then(|| trampolines::entry(k))
}

/// Called by `refwatch_prov_return` when hooked function returns `result`
/// to the frame whose return address was at `stack_pointer`. Pops that
/// frame from the thread's shadow stack and returns the caller's address.
pub extern "C" fn on_return(result: usize, stack_pointer: usize) -> usize {
    // SAFETY: the shadow stack is this thread's own TLS block; only this
    // thread's trampolines and this function touch it.
    let shadow = unsafe { &mut *trampolines::shadow() };
    let depth = shadow.depth.min(trampolines::DEPTH);
    // Usually the top frame; greenlets that switch stacks inside a call can
    // leave other frames above it.
    let Some(i) = (0..depth).rev().find(|&i| shadow.frames[i].stack_pointer == stack_pointer) else {
        lost_return_address();
    };
    let frame = shadow.frames[i];
    shadow.frames.copy_within(i + 1..depth, i);
    shadow.depth = depth - 1;
    record(&frame, result);
    frame.return_address
}

#[cold]
fn lost_return_address() -> ! {
    let _ = sys::write_all(2, b"refwatch: internal error: a followed call returned to an unknown frame\n");
    // SAFETY: abort has no preconditions; there is no caller to return to.
    unsafe { libc::abort() }
}

/// A followed call returned `result` to the extension.
#[inline]
fn record(frame: &trampolines::Frame, result: usize) {
    let site = frame.return_address;
    match apis::APIS[frame.entry].effect {
        Effect::New => record_new(frame.entry, result, site),
        // A NULL result is an error: nothing was lent.
        Effect::Borrowed(slot) if result != 0 => associate(result, frame, slot, false),
        // The reference is stolen whatever the outcome (a failing call
        // releases it); only a success leaves it in the container.
        Effect::Steals(slot) if result == 0 => associate(frame.args[2], frame, slot, true),
        _ => {}
    }
}

/// Objects live above the first pages; anything below is not an object
/// pointer, whatever a caller passed.
const LOWEST_OBJECT: usize = 0x10000;

fn record_new(api: usize, result: usize, site: usize) {
    if result < LOWEST_OBJECT {
        return;
    }
    // SAFETY: a non-NULL result of a new-reference API is a live object the
    // caller now owns; reading its header is what every C extension does.
    let (refcount, type_object) = unsafe { (layout::refcount(result), layout::type_of(result)) };
    if refcount != 1 {
        return; // cached, interned or shared: not created for this caller
    }
    // With sampling, one fresh object in N is followed (leaks that grow are
    // still found; their counts are estimates).
    if !crate::count::record(site, crate::count::Kind::New) {
        return;
    }
    // SAFETY: the object's type is alive while the object is.
    let pre_header = unsafe { layout::pre_header(type_object) } as u32;
    let origin = Origin { site, type_object, api: api as u32, pre_header };
    // SAFETY: new-reference APIs are called with the GIL held, which is the
    // table's invariant.
    unsafe { TRACKED.update(result, |o| *o = origin) };
}

/// Remembers that `object` sits in the container of `frame`'s call.
fn associate(object: usize, frame: &trampolines::Frame, slot: apis::Slot, stolen: bool) {
    let container = frame.args[0];
    if object < LOWEST_OBJECT || container < LOWEST_OBJECT {
        return;
    }
    // SAFETY: the call just succeeded on this container, so it is a live
    // object; calls that lend or steal run with the GIL held.
    unsafe {
        let association = assoc::Association {
            container,
            container_type: layout::type_of(container),
            index: frame.args[1],
            site: frame.return_address,
            api: frame.entry as u32,
            slot: assoc::Association::slot_number(slot),
            stolen,
            pre_header: layout::pre_header(layout::type_of(object)) as u32,
        };
        assoc::ASSOC.update(object, |a| *a = association);
    }
}

/// A watched extension called `Py_IncRef`/`Py_DecRef` (or their limited-API
/// forms) on `object` at `site`. Called before the real function, while the
/// object is surely alive.
///
/// # Safety
/// The caller holds the GIL.
#[inline]
pub unsafe fn visible_refcount(object: usize, site: usize, delta: i64) {
    if ENABLED.load(Ordering::Relaxed) && object != 0 {
        // SAFETY: forwarded.
        unsafe { ledger::note(object, site, delta) };
    }
}

/// An object is being freed: stop following it.
///
/// # Safety
/// The caller holds the GIL (deallocation runs with it).
#[inline]
pub unsafe fn forget(object: usize) {
    if ENABLED.load(Ordering::Relaxed) {
        // SAFETY: forwarded.
        unsafe {
            TRACKED.remove(object);
            ledger::LEDGER.remove(object);
            if let Some(association) = assoc::ASSOC.remove(object) {
                crate::findings::overrelease::freed(object, &association);
            }
        }
    }
}

/// The memory block at `block` was freed: forget the object it held.
///
/// # Safety
/// The caller holds the GIL.
pub unsafe fn block_freed(block: usize) {
    // SAFETY: forwarded.
    unsafe { block_object(block) };
}

/// The memory block at `from` was moved to `to` by `realloc` (a resized
/// tuple, bytes or str): follow its object at the new address.
///
/// # Safety
/// The caller holds the GIL.
pub unsafe fn block_moved(from: usize, to: usize) {
    // SAFETY: forwarded.
    if let Some(origin) = unsafe { block_object(from) } {
        // SAFETY: forwarded.
        unsafe { TRACKED.update(to + origin.pre_header as usize, |o| *o = origin) };
    }
}

/// Stops following the object that starts its block at `block`: the one
/// whose pre-header puts it there (an object at another offset belongs to
/// a neighbouring block). Returns its origin if it was followed.
///
/// # Safety
/// The caller holds the GIL.
unsafe fn block_object(block: usize) -> Option<Origin> {
    if !ENABLED.load(Ordering::Relaxed) {
        return None;
    }
    let mut origin = None;
    for offset in PRE_HEADERS {
        let object = block + offset;
        let here = offset as u32;
        // SAFETY: forwarded (the maps are GIL-serialized).
        unsafe {
            if let Some(o) = TRACKED.remove_if(object, |o| o.pre_header == here) {
                origin = Some(o);
            }
            ledger::LEDGER.remove_if(object, |e| e.pre_header == here);
            if let Some(association) = assoc::ASSOC.remove_if(object, |a| a.pre_header == here) {
                crate::findings::overrelease::freed(object, &association);
            }
        }
    }
    origin
}

/// The pre-header sizes an object can have (`layout::pre_header`).
const PRE_HEADERS: [usize; 3] = [0, 16, 32];

/// In a forked child: follow only what the child creates.
pub fn reset_after_fork() {
    if ENABLED.load(Ordering::Acquire) {
        // SAFETY: the child has one thread, the one that forked; Python forks
        // with the GIL held.
        unsafe {
            TRACKED.clear();
            ledger::LEDGER.clear();
            assoc::ASSOC.clear();
        }
    }
}
