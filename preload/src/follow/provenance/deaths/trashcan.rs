//! The interpreter's trashcan, kept for the deaths that run through
//! refwatch's `tp_dealloc` stubs (`type_deaths`).
//!
//! A container's deallocator releases what it holds, so dropping a list
//! nested a million deep recurses a million deallocators deep. The
//! interpreter bounds that with its trashcan (`Py_TRASHCAN_BEGIN`, in the
//! deallocators of list, tuple, dict, set and many extension types, every
//! mypyc class among them): past a depth, a dying object waits on a chain
//! and is deallocated once the stack has unwound. It only does so when the
//! object's type's `tp_dealloc` *is* that deallocator (a subclass's
//! deallocation must not be cut in half), and with a stub in `tp_dealloc`
//! that test fails: without this module, dropping a deeply nested list
//! overflows the C stack (3.9 to 3.13; 3.14 moved the trashcan into
//! `_Py_Dealloc`, and refwatch hooks no type there).
//!
//! So the stubs count how deep they are nested on each thread; past the
//! interpreter's own limit, an object dying as an instance of the very
//! type hooked (the case the interpreter's test accepts) waits on a chain
//! of refwatch's, and the outermost stub deallocates the chain as it
//! returns, as the interpreter does. Waiting objects are untracked by the
//! garbage collector first and chained through their gc header, as in the
//! interpreter; each is tracked again just before its deallocator runs if
//! it was tracked, so every deallocator finds its object as it would have.
//! Types without a gc header cannot wait (nor, without one, hold the
//! cycles of containers that nest deep).

use crate::python::{api::api, layout};
use std::cell::UnsafeCell;

/// Deaths nested through the stubs before an object waits: the
/// interpreter's own depth (`PyTrash_UNWIND_LEVEL`, `Py_TRASHCAN_HEADROOM`).
const LIMIT: usize = 50;

#[repr(C)]
struct Nesting {
    depth: usize,
}

crate::sys::static_thread_block!(fn nesting() -> Nesting, "refwatch_death_nesting");

/// The first object waiting to die (0: none), GIL-serialized: objects only
/// die with the GIL held. The next one is in its gc header (`wait`).
struct Chain(UnsafeCell<usize>);

// SAFETY: only touched with the GIL held (deallocation runs with it).
unsafe impl Sync for Chain {}

static WAITING: Chain = Chain(UnsafeCell::new(0));

/// In a waiting object's gc link: it was tracked by the garbage collector.
const TRACKED: usize = 1;

/// Runs `dealloc(object)`, or, this deep in nested deaths, chains `object`
/// to be deallocated once the outermost stub returns when `may_wait` says
/// it can (an instance of the hooked type itself, with a gc header).
///
/// # Safety
/// `object` is dying (no references left) with the GIL held; `dealloc` is
/// the deallocator its hooked type had.
#[inline(always)]
pub unsafe fn run(object: usize, dealloc: usize, may_wait: impl FnOnce() -> bool) {
    let depth = nesting();
    // SAFETY: this thread's own block; `dealloc` is a deallocator (caller's
    // contract), which may re-enter `run` before returning: the depth is
    // read again after it.
    unsafe {
        if (*depth).depth >= LIMIT && may_wait() && wait(object) {
            return;
        }
        (*depth).depth += 1;
        let dealloc: extern "C" fn(usize) = std::mem::transmute(dealloc);
        dealloc(object);
        (*depth).depth -= 1;
        if (*depth).depth == 0 && *WAITING.0.get() != 0 {
            drain();
        }
    }
}

/// Chains `object` to wait; false (nothing done) when the C-API needed is
/// missing.
///
/// # Safety
/// As for `run`; `object` has a gc header.
#[cold]
unsafe fn wait(object: usize) -> bool {
    let Some(api) = api() else { return false };
    // SAFETY: a gc object with the GIL held (caller's contract); once
    // untracked, its gc link is free until it is tracked again, and no one
    // else holds the object to look at it.
    unsafe {
        let tracked = (api.gc_is_tracked)(object as *mut _) != 0;
        if tracked {
            (api.gc_untrack)(object as *mut _);
        }
        let waiting = WAITING.0.get();
        *layout::gc_link(object) = *waiting | if tracked { TRACKED } else { 0 };
        *waiting = object;
    }
    true
}

/// Deallocates the waiting objects, and those their deallocations chain,
/// through their types' `tp_dealloc` (the stub): nested deeper than the
/// outermost, so that those calls do not drain themselves.
///
/// # Safety
/// Called by the outermost `run` with the GIL held.
#[cold]
unsafe fn drain() {
    let depth = nesting();
    let Some(api) = api() else { return };
    // SAFETY: every chained object waits to die, untracked, its link in its
    // gc header (`wait`); the GIL is held.
    unsafe {
        (*depth).depth = 1;
        let waiting = WAITING.0.get();
        while *waiting != 0 {
            let object = *waiting;
            let link = layout::gc_link(object);
            *waiting = *link & !TRACKED;
            let tracked = *link & TRACKED != 0;
            *link = 0; // untracked, as it was after `gc_untrack`
            if tracked {
                (api.gc_track)(object as *mut _);
            }
            let dealloc: extern "C" fn(usize) =
                std::mem::transmute(layout::dealloc_of(layout::type_of(object)));
            dealloc(object);
        }
        (*depth).depth = 0;
    }
}
