//! How many references the heap's holders make to chosen objects: every
//! object the garbage collector tracks, and everything reachable from them
//! or from the chosen objects that is a gc object it does not track (dicts
//! of atomic values, tuples of them), each traversed with its type's own
//! `tp_traverse`, as `gc.get_referents` does.
//!
//! Written against `tp_traverse` rather than in Python: the walk needs a
//! map from each chosen object to its count, and with a million followed
//! objects Python's dict of ids alone took 180 MB; here the map is a
//! compact table of addresses, and no object is created or changed while
//! walking (no reference count is touched but the list's, so the forked
//! copy the check runs in shares the heap's pages instead of copying them).
//!
//! Nothing is freed during the walk: it runs no Python code. Every object
//! is traversed at most once, so the walk ends.

use super::api::{api, Api, PyObject};
use super::{layout, runtime};
use rustc_hash::{FxHashMap, FxHashSet};
use std::ffi::{c_int, c_void};

type Visit = unsafe extern "C" fn(*mut PyObject, *mut c_void) -> c_int;
type Traverse = unsafe extern "C" fn(*mut PyObject, Visit, *mut c_void) -> c_int;

/// The objects counted, each with its index in `counts`.
pub type Chosen = FxHashMap<usize, u32>;

struct Walk<'a> {
    api: &'static Api,
    chosen: &'a Chosen,
    counts: &'a mut [u32],
    /// Untracked gc objects met, walked once each.
    seen: FxHashSet<usize>,
    todo: Vec<usize>,
    /// References the current object's traversal visited.
    visited: usize,
}

/// Adds to `counts[i]` the references holders make to each chosen object
/// (`chosen[object] == i`). `None` if the interpreter could not be asked
/// for its gc objects.
///
/// # Safety
/// The caller holds the GIL; every chosen object is alive.
pub unsafe fn count_holders(chosen: &Chosen, counts: &mut [u32]) -> Option<()> {
    let api = api()?;
    let mut walk = Walk { api, chosen, counts, seen: FxHashSet::default(), todo: Vec::new(), visited: 0 };
    // What a chosen object holds is held (only the root of a leaked
    // structure is a leak): untracked chosen containers are walked too.
    for &object in chosen.keys() {
        // SAFETY: chosen objects are alive (caller's contract).
        unsafe { walk.meet(object) };
    }
    runtime::with_gc_objects(|list| {
        // SAFETY: the list holds every tracked object while it is read
        // (`gc.get_objects` leaves the list itself out).
        unsafe {
            for i in 0..layout::size(list) {
                walk.traverse(layout::list_item(list, i));
            }
            while let Some(object) = walk.todo.pop() {
                walk.traverse(object);
            }
        }
    })
}

impl Walk<'_> {
    /// Queues `object` if it is a gc object the collector does not track
    /// and has not been met (a tracked one is in the list already).
    ///
    /// # Safety
    /// `object` is alive; the GIL is held.
    unsafe fn meet(&mut self, object: usize) {
        // SAFETY: caller's contract. A gc object is one of a gc type for
        // which the type's `tp_is_gc` (if any) agrees: a static type object
        // is not one, and its `tp_traverse` must not be called.
        let untracked = unsafe {
            let object = object as *mut PyObject;
            (self.api.is_gc)(object) != 0 && (self.api.gc_is_tracked)(object) == 0
        };
        if untracked && self.seen.insert(object) {
            self.todo.push(object);
        }
    }

    /// Counts what `object` refers to.
    ///
    /// # Safety
    /// `object` is alive; the GIL is held.
    unsafe fn traverse(&mut self, object: usize) {
        // SAFETY: a live object's type is alive; its tp_traverse, when set,
        // has this signature and only calls `visit`.
        unsafe {
            let type_object = layout::type_of(object);
            let traverse = layout::traverse_of(type_object);
            if traverse == 0 {
                return;
            }
            let traverse: Traverse = std::mem::transmute(traverse);
            self.visited = 0;
            traverse(object as *mut PyObject, visit, self as *mut Walk as *mut c_void);
            // A dict's traversal leaves out its keys when they are all str
            // (or the table is shared): visit them here, through the C-API
            // (no code of a subclass runs).
            if layout::type_flags(type_object) & layout::DICT_SUBCLASS != 0
                && self.visited as isize == (self.api.dict_size)(object as *mut PyObject)
            {
                let (mut at, mut key, mut value) = (0isize, std::ptr::null_mut(), std::ptr::null_mut());
                while (self.api.dict_next)(object as *mut PyObject, &mut at, &mut key, &mut value) != 0 {
                    self.reference(key as usize);
                }
            }
        }
    }

    /// One reference a holder makes to `object`.
    ///
    /// # Safety
    /// `object` is alive (a holder refers to it); the GIL is held.
    unsafe fn reference(&mut self, object: usize) {
        if object == 0 {
            return;
        }
        if let Some(&i) = self.chosen.get(&object) {
            self.counts[i as usize] += 1;
        }
        // SAFETY: forwarded.
        unsafe { self.meet(object) };
    }
}

/// The `visitproc` handed to `tp_traverse`.
unsafe extern "C" fn visit(object: *mut PyObject, walk: *mut c_void) -> c_int {
    // SAFETY: `walk` is the `Walk` that `traverse` passed for this call; a
    // visited object is alive (its holder refers to it).
    unsafe {
        let walk = &mut *(walk as *mut Walk);
        walk.visited += 1;
        walk.reference(object as usize);
    }
    0
}
