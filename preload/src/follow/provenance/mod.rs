//! Provenance: which line of a watched extension received each fresh object
//! from a new-reference C-API call, and whether that object is still alive.
//! Shared by the findings (docs/design.md §8): leaks are objects followed here
//! that outlive every holder.
//!
//! The calls are seen through the generic trampolines (`trampolines`), which
//! work for any signature, variadic ones included; an object is followed
//! when it is fresh (refcount 1 on return: a new object the extension now
//! owns alone). A new reference to an object that had others already (a
//! cached, shared or long-lived one) is counted on that object instead
//! (`received`): the extension owns that one reference all the same. It stops being followed
//! when it is freed: by the interpreter's reference tracer (3.14+, every
//! object), by the extension's own `_Py_Dealloc`, and, at a check, when the
//! address holds an object of another type.

mod address_map;
pub mod apis;
pub mod assoc;
mod build_format;
pub mod deaths;
pub mod growth;
pub mod ledger;
pub mod received;
pub mod tracked;
mod trampolines;

use crate::python::layout;
use crate::sys;
use apis::Effect;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tracked::Origin;

/// Set once following is on (a GIL build whose layout refwatch knows).
static ENABLED: AtomicBool = AtomicBool::new(false);

const _: () = assert!(trampolines::ENTRIES >= apis::APIS.len());

/// Starts following, under `REFWATCH_SAMPLE=sample`. Called at start, with
/// the GIL held, before any GOT is patched.
pub fn enable(gil: bool, sample: u32) {
    if !gil || !tracked::init() || !ledger::init() || !assoc::init() || !growth::init() || !received::init() {
        return;
    }
    let sampling = sample > 1;
    for (k, api) in apis::APIS.iter().enumerate() {
        trampolines::API_FN[k].store(crate::python::api::address_of(api.name), Ordering::Relaxed);
        // Sampling thins the following of fresh objects; borrowed and stolen
        // references are always followed (one over-release is one too many).
        let sampling_mode = match api.effect {
            _ if !sampling => trampolines::FOLLOW_EVERY_CALL,
            Effect::New => trampolines::SAMPLE_CALLS,
            Effect::Builds => trampolines::SAMPLE_CALLS_WITHOUT_STEALS,
            _ => trampolines::FOLLOW_EVERY_CALL,
        };
        trampolines::ENTRY_SAMPLING[k].store(sampling_mode, Ordering::Relaxed);
        let handler: Handler = match api.effect {
            Effect::New if sampling => on_new_sampled,
            Effect::New => on_new,
            _ => on_call,
        };
        trampolines::HANDLER[k].store(handler as usize, Ordering::Relaxed);
    }
    deaths::install();
    ENABLED.store(true, Ordering::Release);
}

/// Whether following is on.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The trampoline for a C-API function a GOT slot names, if it is followed
/// here and this interpreter has it.
pub fn entry_for(name: &[u8]) -> Option<usize> {
    if !ENABLED.load(Ordering::Acquire) {
        return None;
    }
    let k = apis::index_of(name)?;
    (trampolines::API_FN[k].load(Ordering::Relaxed) != 0)
        .then(|| trampolines::entry(k, apis::APIS[k].variadic))
}

/// A followed call: which function, where from, its first three arguments.
struct Call {
    api: usize,
    site: usize,
    args: [usize; 3],
}

/// What a call-through entry calls after the real function returned
/// `result` (`trampolines::HANDLER`): `frame` holds the first three
/// arguments, then the caller's return address; `api` is the entry.
type Handler = extern "C" fn(result: usize, frame: *const [usize; 4], api: usize);

/// The handler of every effect but a new reference.
extern "C" fn on_call(result: usize, frame: *const [usize; 4], api: usize) {
    // SAFETY: the entry passes its own stack slots, written just before.
    let [a, b, c, ra] = unsafe { *frame };
    record(&Call { api, site: super::methods::call_site(ra), args: [a, b, c] }, result);
}

/// The handler of a function that returns a new reference: the most
/// frequent followed call, so it reads only the return address.
extern "C" fn on_new(result: usize, frame: *const [usize; 4], api: usize) {
    // SAFETY: as in `on_call`.
    record_fresh(super::methods::call_site(unsafe { (*frame)[3] }), api, result);
}

/// `on_new` under sampling: the entry's gate let this call through (one in
/// N on average is followed; leaks that grow are still found, their counts
/// are estimates), and the gap to the next one is drawn here.
extern "C" fn on_new_sampled(result: usize, frame: *const [usize; 4], api: usize) {
    draw_next_gap();
    on_new(result, frame, api);
}

/// A call the sampling gate let through sets when the next one passes.
fn draw_next_gap() {
    // SAFETY: the shadow block is this thread's own TLS.
    unsafe { (*trampolines::shadow()).countdown = crate::count::next_gap() };
}

/// Called by `refwatch_prov_return` when hooked function returns `result`
/// to the frame whose return address was at `stack_pointer`. Pops that
/// frame from the thread's shadow stack and returns the caller's address.
pub extern "C" fn on_return(result: usize, stack_pointer: usize) -> usize {
    // SAFETY: the shadow stack is this thread's own TLS block; only this
    // thread's trampolines and this function touch it.
    let shadow = unsafe { &mut *trampolines::shadow() };
    let depth = shadow.depth.min(trampolines::DEPTH);
    let top = depth.wrapping_sub(1);
    let frame = if depth > 0 && shadow.frames[top].stack_pointer == stack_pointer {
        shadow.frames[top]
    } else {
        // Greenlets that switch stacks inside a call can leave other frames
        // above this one.
        let Some(i) = (0..depth).rev().find(|&i| shadow.frames[i].stack_pointer == stack_pointer) else {
            lost_return_address();
        };
        let frame = shadow.frames[i];
        shadow.frames.copy_within(i + 1..depth, i);
        frame
    };
    shadow.depth = top;
    let site = super::methods::call_site(frame.return_address);
    record(&Call { api: frame.entry, site, args: frame.args }, result);
    frame.return_address
}

#[cold]
fn lost_return_address() -> ! {
    let _ = sys::write_all(2, b"refwatch: internal error: a followed call returned to an unknown frame\n");
    // SAFETY: abort has no preconditions; there is no caller to return to.
    unsafe { libc::abort() }
}

/// A followed call returned `result` to the extension.
#[inline(always)]
fn record(call: &Call, result: usize) {
    // Functions returning `int` leave the upper half of `rax` undefined.
    let status = result as u32 as i32;
    match apis::APIS[call.api].effect {
        Effect::New => {
            // Only variadic functions come here (the others have `on_new`).
            if trampolines::ENTRY_SAMPLING[call.api].load(Ordering::Relaxed) == trampolines::SAMPLE_CALLS {
                draw_next_gap();
            }
            record_fresh(call.site, call.api, result)
        }
        // A NULL result is an error: nothing was lent.
        Effect::Borrowed(slot) if result != 0 => {
            associate(result, Holder::of(call, slot, call.args[1]), call, false)
        }
        // The reference is stolen whatever the outcome (a failing call
        // releases it); only a success leaves it in the container.
        Effect::Steals(slot) if status == 0 => {
            associate(call.args[2], Holder::of(call, slot, call.args[1]), call, true)
        }
        Effect::Builds if result != 0 => record_build(call, result),
        Effect::ParsesArguments if status != 0 => record_parse(call),
        Effect::FillsBuffer if status == 0 => record_buffer(call.args[1], call),
        _ => {}
    }
}

/// `Py_BuildValue` succeeded: its result is new, and the values of its `N`
/// units now belong to the containers it built.
#[cold]
fn record_build(call: &Call, result: usize) {
    let format = call.args[0];
    if result < LOWEST_OBJECT || format < LOWEST_OBJECT {
        return;
    }
    // Under sampling, a format known to steal nothing passed the entry's
    // gate (one call in N); another's steals are always followed, and its
    // fresh result one time in N.
    let gated = trampolines::ENTRY_SAMPLING[call.api].load(Ordering::Relaxed)
        == trampolines::SAMPLE_CALLS_WITHOUT_STEALS
        && build_format::known_without_steals(format);
    // SAFETY: the format is the one the call just read; the result is live;
    // the GIL is held (as for every followed call).
    unsafe {
        build_format::for_each_stolen(format, result, &mut |object, container, index, slot| {
            associate(object, Holder { container, index, slot }, call, true)
        })
    };
    let follow = if gated {
        draw_next_gap();
        true
    } else {
        crate::count::chosen()
    };
    if follow {
        record_fresh(call.site, call.api, result);
    }
}

/// Arguments beyond this are not followed (parsing is per call).
const MAX_PARSED: usize = 16;

/// A `PyArg_Parse*` call succeeded: every object it handed out from the
/// argument tuple is borrowed from it. The items the frame of the method
/// call parsing its own arguments covers are noted there (`methods`);
/// the others are followed here. (Keyword values are not followed: the
/// dict the interpreter builds for a call never outlives it while the
/// caller's own references remain.)
#[cold]
fn record_parse(call: &Call) {
    let arguments = call.args[0];
    if arguments < LOWEST_OBJECT {
        return;
    }
    let (name, format) = (apis::name(call.api), call.args[1]);
    let tuple_format = name == "PyArg_ParseTuple" || name == "_PyArg_ParseTuple_SizeT";
    // SAFETY: the format the call just parsed with, a C string.
    if tuple_format && format >= LOWEST_OBJECT && unsafe { first_unit_fills_buffer(format) } {
        record_buffer(call.args[2], call);
    }
    // SAFETY: the call just parsed this tuple successfully, so it is a live
    // tuple; the GIL is held.
    let noted = unsafe { super::methods::note_parse(arguments, call.site, call.api) };
    // SAFETY: the call just parsed this tuple successfully, so it is a live
    // tuple; the GIL is held.
    let count = unsafe { layout::size(arguments) }.min(MAX_PARSED);
    for index in noted..count {
        // SAFETY: as above; index < size.
        let item = unsafe { layout::tuple_item(arguments, index) };
        let holder = Holder { container: arguments, index, slot: apis::Slot::TupleIndex };
        associate(item, holder, call, false);
    }
}

/// `Py_buffer::obj`, the exporter's reference a filled buffer holds (after
/// `buf`).
const BUFFER_OBJ: usize = 8;

/// A `Py_buffer` at `view` was filled for the extension: it holds a new
/// reference to its exporter, which `PyBuffer_Release` gives back.
#[cold]
fn record_buffer(view: usize, call: &Call) {
    if view < LOWEST_OBJECT {
        return;
    }
    // SAFETY: the call just filled the extension's Py_buffer at `view`; its
    // `obj` is NULL or the exporter, a live object (the buffer holds it).
    unsafe {
        let exporter = *((view + BUFFER_OBJ) as *const usize);
        if exporter >= LOWEST_OBJECT && layout::refcount(exporter) < layout::IMMORTAL {
            received::note(exporter, call.site, call.api);
        }
    }
}

/// Whether a `PyArg_ParseTuple` format's first unit fills a `Py_buffer`
/// (`y*`, `s*`, `z*`, `w*`): its first variadic argument is then that
/// buffer. Later units' arguments are not among the registers a
/// trampoline keeps.
///
/// # Safety
/// `format` is a C string.
unsafe fn first_unit_fills_buffer(format: usize) -> bool {
    // SAFETY: caller's contract: at least the terminating NUL is readable,
    // and a second byte is read only after a non-NUL first one.
    unsafe {
        let first = *(format as *const u8);
        matches!(first, b'y' | b's' | b'z' | b'w') && *((format + 1) as *const u8) == b'*'
    }
}

/// A method call's parse lent `object` (item `index` of its argument tuple
/// `tuple`) at `site`, and the call released more references to it than it
/// took: follow it as `record_parse` does, so that its free while the tuple
/// still points at it is named. Called as the call returns, still current.
///
/// # Safety
/// The caller holds the GIL; `tuple` and `object` are alive.
pub unsafe fn lent_from_arguments(object: usize, tuple: usize, index: usize, site: usize, api: u32) {
    let call = Call { api: api as usize, site, args: [tuple, 0, 0] };
    associate(object, Holder { container: tuple, index, slot: apis::Slot::TupleIndex }, &call, false);
}

/// Counts the memory `block` of an object (`delta` 1) in the filter in
/// front of provenance's maps while a method call's frame holds what a
/// parse lent of it, or stops (`delta` -1): its free then takes the slow
/// path, which asks the frame.
///
/// # Safety
/// The caller holds the GIL.
pub unsafe fn count_lent(block: usize, delta: i8) {
    if ENABLED.load(Ordering::Relaxed) {
        // SAFETY: forwarded.
        unsafe { address_map::count_key(block, delta) };
    }
}

/// Objects live above the first pages; anything below is not an object
/// pointer, whatever a caller passed.
const LOWEST_OBJECT: usize = 0x10000;

/// Follows `result`, which the call to `api` at `site` returned, if it is
/// fresh: a new object the extension now owns alone.
#[inline(always)]
fn record_fresh(site: usize, api: usize, result: usize) {
    if result < LOWEST_OBJECT {
        return;
    }
    // SAFETY: a non-NULL result of a new-reference API is a live object the
    // caller now owns; reading its header is what every C extension does.
    let (refcount, type_object) = unsafe { (layout::refcount(result), layout::type_of(result)) };
    if refcount != 1 {
        // Cached, interned or shared: not created for this caller, who now
        // owns one of its references all the same.
        if refcount < layout::IMMORTAL {
            // SAFETY: a live object; new-reference APIs run with the GIL held.
            unsafe { received::note(result, site, api) };
        }
        return;
    }
    // The usual case without a call (so without a frame to save registers
    // in): the site's counter in its home slot, a type whose deaths are
    // seen already (the one this function returned last, most often), a
    // free nursery slot.
    let counter = crate::count::home_counter(site, crate::count::Kind::New);
    let known = KNOWN_TYPE[api].load(Ordering::Relaxed);
    // SAFETY: the object's type is alive while the object is; new-reference
    // APIs are called with the GIL held, which is the tables' invariant.
    unsafe {
        if let Some(counter) = counter {
            let pre_header = if known & !KNOWN_PRE_HEADER == type_object {
                (known & KNOWN_PRE_HEADER) << 4
            } else if deaths::seen_dying_already(type_object) {
                let pre_header = layout::pre_header(type_object);
                if layout::is_static_type(type_object) {
                    KNOWN_TYPE[api].store(type_object | pre_header >> 4, Ordering::Relaxed);
                }
                pre_header
            } else {
                return follow_fresh(site, api, result, type_object);
            };
            if tracked::insert_young(result - pre_header, Origin::new(site, type_object, api, pre_header)) {
                return crate::count::table::bump_single(counter);
            }
        }
        follow_fresh(site, api, result, type_object);
    }
}

/// Per new-reference function, the type of the fresh object it returned
/// last when that is a static type (never freed) whose deaths are seen,
/// with the object's pre-header in 16 bytes in the low bits (type objects
/// are 8-byte aligned; a pre-header is 0, 16 or 32 bytes): most functions
/// return one type (`PyLong_FromLong`, `PyList_New`), so following reads
/// one word instead of the type's flags and deallocator. Stays right: a
/// static type stays alive, and once its deaths are seen they stay seen.
static KNOWN_TYPE: [AtomicUsize; trampolines::ENTRIES] =
    [const { AtomicUsize::new(0) }; trampolines::ENTRIES];
const KNOWN_PRE_HEADER: usize = 3;

/// `record_fresh` in general.
///
/// # Safety
/// `result` is a fresh object of `type_object`; the caller holds the GIL.
#[inline(never)]
unsafe fn follow_fresh(site: usize, api: usize, result: usize, type_object: usize) {
    crate::count::bump(site, crate::count::Kind::New);
    // SAFETY: caller's contract.
    unsafe {
        if !seen_dying(type_object) {
            return;
        }
        let pre_header = layout::pre_header(type_object);
        tracked::insert(result - pre_header, Origin::new(site, type_object, api, pre_header));
    }
}

/// Where in a container a reference lives.
struct Holder {
    container: usize,
    /// Index in a tuple or list (unused for a dict or module).
    index: usize,
    slot: apis::Slot,
}

impl Holder {
    /// The container a lending or stealing call names: its first argument.
    fn of(call: &Call, slot: apis::Slot, index: usize) -> Holder {
        Holder { container: call.args[0], index, slot }
    }
}

/// Remembers that `object`, which `call` lent or took, sits in `holder`.
fn associate(object: usize, holder: Holder, call: &Call, stolen: bool) {
    if object < LOWEST_OBJECT || holder.container < LOWEST_OBJECT {
        return;
    }
    // SAFETY: the call just succeeded on this container, so it is a live
    // object, as is the object it lent or took; calls that lend or steal run
    // with the GIL held.
    unsafe {
        // Immortal objects cannot be freed by any release.
        if layout::refcount(object) >= layout::IMMORTAL {
            return;
        }
        let object_type = layout::type_of(object);
        let container_type = layout::type_of(holder.container);
        if !seen_dying(object_type) || !seen_dying(container_type) {
            return;
        }
        let pre_header = layout::pre_header(object_type) as u32;
        let container_pre_header = layout::pre_header(container_type);
        if !assoc::CONTAINERS.update(holder.container - container_pre_header, |_| {}) {
            return; // no room to know when the container goes
        }
        let association = assoc::Association {
            container: holder.container,
            container_type,
            container_pre_header: container_pre_header as u8,
            method: super::methods::current().map_or(0, |k| k + 1),
            index: holder.index,
            site: call.site,
            api: call.api as u32,
            slot: assoc::Association::slot_number(holder.slot),
            stolen,
            pre_header,
        };
        assoc::ASSOC.update(object - pre_header as usize, |a| *a = association);
        // A reference from this site was released once without being owned:
        // watch what this call does with this one (`watch`).
        if super::watch::wants_release(association.method, call.site) {
            // SAFETY: the object is alive; a watch on it is dropped before
            // it is freed (`forget_block`).
            super::methods::watch_in_current_call(|method| super::watch::arm_release(method, object));
        }
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

/// Whether the deaths of objects of `type_object` are seen, so that they
/// can be followed (every map entry must go when its object dies).
///
/// # Safety
/// `type_object` is a live type object; the caller holds the GIL.
#[inline(always)]
unsafe fn seen_dying(type_object: usize) -> bool {
    // SAFETY: forwarded.
    unsafe { deaths::seen_dying(type_object) }
}

/// The key of a live object in provenance's maps: the start of its memory
/// block, which is what the allocator frees.
///
/// # Safety
/// `object` is a live object.
#[inline(always)]
pub unsafe fn key_of(object: usize) -> usize {
    // SAFETY: caller's contract; a live object's type is alive.
    object - unsafe { layout::pre_header(layout::type_of(object)) }
}

/// An object is being freed: stop following it.
///
/// # Safety
/// The caller holds the GIL (deallocation runs with it) and `object` is
/// still readable.
#[inline(always)]
pub unsafe fn forget(object: usize) {
    // SAFETY: forwarded (GIL held); a live object's type is alive.
    unsafe {
        if may_be_followed(object) && !block_freed_quickly(key_of(object)) {
            forget_object(object);
        }
    }
}

/// False when `object` is surely in none of provenance's maps (most
/// objects): one load, before its type is read.
///
/// # Safety
/// The caller holds the GIL.
#[inline(always)]
pub unsafe fn may_be_followed(object: usize) -> bool {
    // The block starts 0, 16 or 32 bytes before the object: one filter load
    // answers for all three.
    // SAFETY: forwarded (GIL held).
    ENABLED.load(Ordering::Relaxed) && unsafe { address_map::maybe_present_any3(object - 32) }
}

/// The usual free of a followed object, without a call (so without a
/// frame): an object of the nursery, in no other map, no watch armed.
/// False when `block_freed` (or `forget_object`) must do the rest.
///
/// # Safety
/// The caller holds the GIL.
#[inline(always)]
pub unsafe fn block_freed_quickly(block: usize) -> bool {
    // SAFETY: forwarded (GIL held).
    unsafe {
        ENABLED.load(Ordering::Relaxed)
            && block != 0
            && !super::watch::armed_now()
            && tracked::remove_young(block)
            && !address_map::maybe_present(block)
    }
}

/// `forget` for an object that may be followed (out of line, so that the
/// far more frequent deaths of others take no frame).
///
/// # Safety
/// As for `forget`.
#[inline(never)]
unsafe fn forget_object(object: usize) {
    // SAFETY: forwarded.
    unsafe { forget_block(key_of(object)) };
}

/// False when the memory block at `block` surely holds no object followed
/// here (most freed blocks): one load.
///
/// # Safety
/// The caller holds the GIL.
#[inline(always)]
pub unsafe fn maybe_followed_block(block: usize) -> bool {
    // SAFETY: forwarded. The filter only has entries once following is on.
    unsafe { address_map::maybe_present(block) }
}

/// The memory block at `block` was freed: forget the object it held.
///
/// # Safety
/// The caller holds the GIL.
pub unsafe fn block_freed(block: usize) {
    if ENABLED.load(Ordering::Relaxed) && block != 0 {
        // SAFETY: forwarded.
        unsafe { forget_block(block) };
    }
}

/// The last followed object the reference tracer reported dead, with its
/// origin, until the tracer reports a creation: 3.14+ reports a resize as
/// a death before the `realloc` and a creation after it, so the object is
/// followed again where `realloc` left it (`block_reallocated`).
struct LastDeath(std::cell::UnsafeCell<(usize, Origin)>);

// SAFETY: touched only with the GIL held (tracer events and the object
// allocator run with it).
unsafe impl Sync for LastDeath {}

static LAST_DEATH: LastDeath = LastDeath(std::cell::UnsafeCell::new((0, Origin::NONE)));

/// The reference tracer reports `object`'s death: `forget`, remembering
/// its origin for a `realloc` that follows.
///
/// # Safety
/// As for `forget`.
#[inline(always)]
pub unsafe fn forget_reported(object: usize) {
    // SAFETY: forwarded (GIL held).
    unsafe {
        if may_be_followed(object) {
            forget_remembering(object);
        }
    }
}

/// # Safety
/// As for `forget`.
#[inline(never)]
unsafe fn forget_remembering(object: usize) {
    // SAFETY: forwarded; LAST_DEATH is GIL-serialized.
    unsafe {
        let block = key_of(object);
        if let Some(origin) = take_block(block) {
            *LAST_DEATH.0.get() = (block, origin);
        }
    }
}

/// The reference tracer reports a creation: the last death was no resize.
///
/// # Safety
/// The caller holds the GIL.
#[inline(always)]
pub unsafe fn creation_reported() {
    // SAFETY: GIL-serialized.
    let last = unsafe { &mut *LAST_DEATH.0.get() };
    if last.0 != 0 {
        last.0 = 0;
    }
}

/// Whether `block` held the followed object whose death the tracer just
/// reported (a `realloc` of it is a resize).
///
/// # Safety
/// The caller holds the GIL.
#[inline(always)]
pub unsafe fn died_just_now(block: usize) -> bool {
    // SAFETY: GIL-serialized.
    block != 0 && unsafe { (*LAST_DEATH.0.get()).0 } == block
}

/// `realloc` resized the memory block at `from`, now at `to` (a tuple,
/// bytes or str that grew or shrank): follow its object there.
///
/// # Safety
/// The caller holds the GIL; `to` holds the resized object.
pub unsafe fn block_reallocated(from: usize, to: usize) {
    // SAFETY: GIL-serialized; the object at `to` is the one resized.
    unsafe {
        let last = &mut *LAST_DEATH.0.get();
        if from != 0 && last.0 == from {
            last.0 = 0;
            let origin = last.1;
            if origin.is_type(layout::type_of(to + origin.pre_header as usize)) {
                tracked::insert(to, origin);
            }
        } else if from != to {
            block_moved(from, to);
        }
    }
}

/// The memory block at `from` was moved to `to` by `realloc` (a resized
/// tuple, bytes or str): follow its object at the new address.
///
/// # Safety
/// The caller holds the GIL.
unsafe fn block_moved(from: usize, to: usize) {
    // SAFETY: the caller holds the GIL.
    if !ENABLED.load(Ordering::Relaxed) || !unsafe { address_map::maybe_present(from) } {
        return;
    }
    // SAFETY: forwarded.
    if let Some(origin) = unsafe { take_block(from) } {
        // SAFETY: forwarded.
        unsafe { tracked::insert(to, origin) };
    }
}

/// Stops following the object in the memory block at `block`.
///
/// # Safety
/// The caller holds the GIL.
#[inline(always)]
unsafe fn forget_block(block: usize) {
    // SAFETY: forwarded.
    unsafe { take_block(block) };
}

/// `forget_block` that returns the object's origin if it was followed.
///
/// # Safety
/// The caller holds the GIL.
#[inline(always)]
unsafe fn take_block(block: usize) -> Option<Origin> {
    // SAFETY: forwarded (the maps are GIL-serialized).
    unsafe {
        super::watch::forget_block(block);
        let origin = tracked::remove(block);
        // Most followed objects are in no other map: the filter, which
        // counts the entries of all of them, says so with one load.
        if address_map::maybe_present(block) {
            forget_in_other_maps(block);
        }
        origin
    }
}

/// `forget_block` for the maps other than `tracked`.
///
/// # Safety
/// The caller holds the GIL.
#[cold]
unsafe fn forget_in_other_maps(block: usize) {
    // SAFETY: forwarded (the maps are GIL-serialized).
    unsafe {
        ledger::LEDGER.remove(block);
        growth::GROWTH.remove(block);
        received::RECEIVED.remove(block);
        assoc::CONTAINERS.remove(block);
        let Some(verdicts) = super::verdicts() else { return };
        if let Some(association) = assoc::ASSOC.remove(block) {
            (verdicts.freed)(block + association.pre_header as usize, &association, false);
        } else if let Some((object, association)) = super::methods::lent_block_freed(block) {
            (verdicts.freed)(object, &association, true);
        }
    }
}

/// In a forked child: follow only what the child creates.
pub fn reset_after_fork() {
    // SAFETY: the child has one thread, the one that forked; Python forks
    // with the GIL held.
    unsafe { forget_all() };
}

/// Forgets every object followed and every other map's entry (deaths may
/// have gone unseen).
///
/// # Safety
/// The caller holds the GIL.
pub unsafe fn forget_all() {
    if ENABLED.load(Ordering::Acquire) {
        // SAFETY: GIL held (caller's contract).
        unsafe {
            tracked::clear();
            ledger::LEDGER.clear();
            assoc::ASSOC.clear();
            assoc::CONTAINERS.clear();
            growth::GROWTH.clear();
            received::RECEIVED.clear();
            (*LAST_DEATH.0.get()).0 = 0;
        }
    }
}
