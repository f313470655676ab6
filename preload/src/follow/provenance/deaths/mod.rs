//! Seeing objects die, so provenance forgets them: the interpreter's
//! reference tracer (3.14+) reports every object's destruction, release
//! builds included. Before, the `tp_dealloc` of each type whose objects
//! are followed is hooked (`types`: every death through the type,
//! free-listed objects included), and the object allocator's `free` (the
//! way tracemalloc hooks the allocator) sees the memory of objects freed
//! without their `tp_dealloc` (the specialized instructions of 3.11 to 3.13
//! free an exact int, float or str directly). 3.13 has the tracer, but its
//! eval loop and its specialized instructions release without telling it
//! (`layout::tracer_sees_every_death`). On every version the allocator's
//! `realloc` sees the objects that move when resized.

mod trashcan;
mod types;

pub use types::final_dealloc;

use crate::follow::provenance;
use crate::python::api::{api, lookup};
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};

type Tracer = unsafe extern "C" fn(*mut c_void, c_int, *mut c_void) -> c_int;
type SetTracer = unsafe extern "C" fn(Option<Tracer>, *mut c_void) -> c_int;
type GetTracer = unsafe extern "C" fn(*mut *mut c_void) -> Option<Tracer>;

const DESTROY: c_int = 1;

/// A tracer installed before refwatch's, which refwatch's calls on.
static PREVIOUS: AtomicUsize = AtomicUsize::new(0);
static PREVIOUS_DATA: AtomicUsize = AtomicUsize::new(0);
/// `PyRefTracer_SetTracer` and `PyRefTracer_GetTracer` while refwatch's
/// tracer sees deaths (0 otherwise).
static SET: AtomicUsize = AtomicUsize::new(0);
static GET: AtomicUsize = AtomicUsize::new(0);

/// Installs the tracer where the interpreter has one and this thread holds
/// the GIL (as it does while Python imports an extension).
pub fn install() {
    if !api().is_some_and(|a| a.can_run_python()) {
        return;
    }
    let tracer = (lookup(c"PyRefTracer_SetTracer"), lookup(c"PyRefTracer_GetTracer"));
    let (Some(set), Some(get), true) = (tracer.0, tracer.1, crate::python::layout::tracer_sees_every_death())
    else {
        let freed_seen = allocator::install(true);
        types::install(true, freed_seen);
        return;
    };
    types::install(false, false);
    // An object the allocator moves when it grows is told to the tracer as
    // a creation at its new address only: `realloc` sees the move.
    allocator::install(false);
    SET.store(set as usize, Ordering::Relaxed);
    GET.store(get as usize, Ordering::Relaxed);
    // SAFETY: the GIL is held (checked above).
    unsafe { put_tracer_in() };
}

/// The tracer installed now and its data.
///
/// # Safety
/// The caller holds the GIL; `GET` is the interpreter's (`install`).
unsafe fn installed_tracer() -> (Option<Tracer>, *mut c_void) {
    let mut data: *mut c_void = std::ptr::null_mut();
    // SAFETY: `PyRefTracer_GetTracer`, 3.13+, of this signature (`install`);
    // the GIL is held, as it requires.
    let tracer = unsafe {
        let get: GetTracer = std::mem::transmute(GET.load(Ordering::Relaxed));
        get(&mut data)
    };
    (tracer, data)
}

/// Puts refwatch's tracer in front of the one installed now, if any.
///
/// # Safety
/// The caller holds the GIL; `SET` and `GET` are the interpreter's.
unsafe fn put_tracer_in() {
    // SAFETY: forwarded; `PyRefTracer_SetTracer`, 3.13+, of this signature
    // (`install`), with the GIL held.
    unsafe {
        let (previous, data) = installed_tracer();
        PREVIOUS.store(previous.map_or(0, |p| p as usize), Ordering::Relaxed);
        PREVIOUS_DATA.store(data as usize, Ordering::Relaxed);
        let set: SetTracer = std::mem::transmute(SET.load(Ordering::Relaxed));
        set(Some(on_event), std::ptr::null_mut());
    }
}

/// Keeps deaths seen: a tool can put its own reference tracer in place of
/// refwatch's without calling it on (tracemalloc does, from 3.14, when
/// started, and takes it out when stopped). Deaths went unseen meanwhile,
/// so what provenance follows is forgotten (an object followed may have
/// died and its address gone to another) and refwatch's tracer goes back
/// in front. Called with the GIL held at each periodic report and before
/// the check at exit.
pub fn keep_seeing_deaths() {
    if GET.load(Ordering::Relaxed) == 0 {
        return;
    }
    // SAFETY: the GIL is held (caller); GET is set.
    let (current, _) = unsafe { installed_tracer() };
    if current.is_some_and(|t| t as usize == on_event as *const () as usize) {
        return;
    }
    crate::sys::warn(format_args!(
        "the interpreter's reference tracer was replaced (tracemalloc does this when started or stopped): \
         objects followed until now are forgotten, and refwatch's tracer is put back in front"
    ));
    // SAFETY: the GIL is held (caller).
    unsafe {
        provenance::forget_all();
        put_tracer_in();
    }
}

/// Called for every object created or destroyed: one table probe.
unsafe extern "C" fn on_event(object: *mut c_void, event: c_int, _: *mut c_void) -> c_int {
    // SAFETY: the interpreter calls tracers with the GIL held.
    unsafe {
        if event == DESTROY {
            provenance::forget_reported(object as usize);
        } else {
            provenance::creation_reported();
        }
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

/// Whether the deaths of `type_object`'s instances are seen: false only
/// when refwatch cannot see them (then they are not followed).
///
/// # Safety
/// `type_object` is a live type object; the caller holds the GIL.
#[inline(always)]
pub unsafe fn seen_dying(type_object: usize) -> bool {
    // SAFETY: forwarded.
    unsafe { types::see_deaths_of(type_object) }
}

/// `seen_dying` when nothing has to be set up for it (the fast path of
/// following a fresh object).
///
/// # Safety
/// `type_object` is a live type object.
#[inline(always)]
pub unsafe fn seen_dying_already(type_object: usize) -> bool {
    // SAFETY: forwarded.
    unsafe { types::seen_already(type_object) }
}

/// The object allocator hook (before 3.14).
mod allocator {
    use super::lookup;
    use crate::follow::provenance;
    use std::cell::UnsafeCell;
    use std::ffi::{c_int, c_void};

    /// `PyMemAllocatorEx`, the same in every version of the matrix.
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Allocator {
        ctx: *mut c_void,
        malloc: Option<unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void>,
        calloc: Option<unsafe extern "C" fn(*mut c_void, usize, usize) -> *mut c_void>,
        realloc: Option<unsafe extern "C" fn(*mut c_void, *mut c_void, usize) -> *mut c_void>,
        free: Option<unsafe extern "C" fn(*mut c_void, *mut c_void)>,
    }

    const PYMEM_DOMAIN_OBJ: c_int = 2;

    struct Original(UnsafeCell<Allocator>);
    // SAFETY: written once at install (GIL held, before the hook is in
    // place), read-only afterwards.
    unsafe impl Sync for Original {}

    static ORIGINAL: Original = Original(UnsafeCell::new(Allocator {
        ctx: std::ptr::null_mut(),
        malloc: None,
        calloc: None,
        realloc: None,
        free: None,
    }));

    fn original() -> Allocator {
        // SAFETY: read-only after install (see `Original`).
        unsafe { *ORIGINAL.0.get() }
    }

    type GetAllocator = unsafe extern "C" fn(c_int, *mut Allocator);

    /// Hooks `realloc`, and `free` when `free` is set; `malloc` and
    /// `calloc` stay the original functions with the original context (an
    /// interpreter built with LTO keeps its inlined fast path for them).
    /// Returns whether the hook is in place.
    pub fn install(free: bool) -> bool {
        let (Some(get), Some(set)) = (lookup(c"PyMem_GetAllocator"), lookup(c"PyMem_SetAllocator")) else {
            return false;
        };
        // SAFETY: the C-API functions of these signatures; called with the
        // GIL held (caller), as tracemalloc does at run time. ORIGINAL is
        // filled before the hook that reads it is installed.
        unsafe {
            let get: GetAllocator = std::mem::transmute(get);
            let set: GetAllocator = std::mem::transmute(set);
            get(PYMEM_DOMAIN_OBJ, ORIGINAL.0.get());
            if original().free.is_none() || original().realloc.is_none() {
                return false;
            }
            let free = if free { Some(self::free as _) } else { original().free };
            let mut hook = Allocator { realloc: Some(realloc), free, ..original() };
            set(PYMEM_DOMAIN_OBJ, &mut hook);
        }
        true
    }

    /// Every resize of an object's memory: one filter load, then straight
    /// on to the original unless the block holds a followed object.
    /// `ctx` is the original's, as in `free`.
    unsafe extern "C" fn realloc(ctx: *mut c_void, block: *mut c_void, size: usize) -> *mut c_void {
        let b = block as usize;
        // SAFETY: the object allocator runs with the GIL held.
        if b != 0 && unsafe { provenance::maybe_followed_block(b) || provenance::died_just_now(b) } {
            // SAFETY: forwarded.
            return unsafe { realloc_followed(ctx, block, size) };
        }
        // SAFETY: the original realloc with its own context (`install`
        // checked there is one).
        unsafe { original().realloc.unwrap_unchecked()(ctx, block, size) }
    }

    #[inline(never)]
    unsafe extern "C" fn realloc_followed(ctx: *mut c_void, block: *mut c_void, size: usize) -> *mut c_void {
        // SAFETY: as in `realloc`; an object that moves is no longer where
        // it was.
        unsafe {
            let moved = original().realloc.unwrap_unchecked()(ctx, block, size);
            if !moved.is_null() {
                provenance::block_reallocated(block as usize, moved as usize);
            }
            moved
        }
    }

    /// Every free of an object's memory in the process: one filter load,
    /// then straight on to the original (no frame of its own). `ctx` is the
    /// original's: the hook was installed with it.
    unsafe extern "C" fn free(ctx: *mut c_void, block: *mut c_void) {
        let b = block as usize;
        // SAFETY: the object allocator runs with the GIL held.
        if unsafe { provenance::maybe_followed_block(b) && !provenance::block_freed_quickly(b) } {
            // SAFETY: forwarded.
            return unsafe { free_followed(ctx, block) };
        }
        // SAFETY: the original free, with its own context; `install` puts
        // this hook in place only when there is one.
        unsafe { original().free.unwrap_unchecked()(ctx, block) }
    }

    #[inline(never)]
    unsafe extern "C" fn free_followed(ctx: *mut c_void, block: *mut c_void) {
        // SAFETY: as in `free`: GIL held, then the original free.
        unsafe {
            provenance::block_freed(block as usize);
            original().free.unwrap_unchecked()(ctx, block)
        }
    }
}
