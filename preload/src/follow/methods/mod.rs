//! A watched extension's functions as Python calls them: the methods it
//! registers (`PyMethodDef` tables of its modules and types) are wrapped, so
//! each call's arguments are seen before and after. An argument whose
//! refcount grew across a call that did not return it was given a reference
//! the call kept: `provenance::growth` remembers it, and if at a check those
//! references are ones nothing holds, the method is the function that left
//! them (an inline `Py_INCREF` on a release build, which no hook sees).
//!
//! The tables are reached through the calls that register them, made from
//! the extension's own GOT: `PyModule_Create2`, `PyModuleDef_Init`,
//! `PyModule_FromDefAndSpec2`, `PyModule_AddFunctions`, `PyType_Ready` and
//! the `PyType_From*Spec*` family. Each entry's `ml_meth` is pointed at a
//! stub (`stubs`) before the interpreter makes function objects of it; the
//! interpreter reads `ml_meth` at every call. What a `PyArg_Parse*` call
//! lends from the call's own argument tuple is kept in its frame too
//! (`parsed`).

mod parsed;
mod slots;
mod stubs;

pub use parsed::{lent_block_freed, lent_in_this_call, note_parse, take_lent};

use crate::python::layout;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// `ml_flags` of the method behind stub `k`.
static FLAGS: [AtomicU32; stubs::METHOD_STUBS] = [const { AtomicU32::new(0) }; stubs::METHOD_STUBS];
/// Stubs handed out.
static USED: AtomicUsize = AtomicUsize::new(0);

const METH_VARARGS: u32 = 0x1;
const METH_NOARGS: u32 = 0x4;
const METH_O: u32 = 0x8;
const METH_FASTCALL: u32 = 0x80;
const METH_METHOD: u32 = 0x200;

/// `PyMethodDef`: name, function, flags, doc (32 bytes in every version).
#[repr(C)]
struct MethodDef {
    name: usize,
    meth: usize,
    flags: c_int,
    doc: usize,
}

/// Entries read from one table at most (tables end with a NULL name).
const MAX_TABLE: usize = 4096;

/// Wraps every entry of the `PyMethodDef` table at `defs`.
///
/// # Safety
/// `defs` is NULL or a NULL-terminated `PyMethodDef` table.
unsafe fn wrap_table(defs: usize) {
    if defs == 0 {
        return;
    }
    for i in 0..MAX_TABLE {
        let entry = (defs + i * size_of::<MethodDef>()) as *const MethodDef;
        // SAFETY: within the table (caller's contract): it ends at a NULL name.
        let (name, meth, flags) = unsafe { ((*entry).name, (*entry).meth, (*entry).flags) };
        if name == 0 {
            return;
        }
        if meth == 0 || stubs::index_of(meth).is_some() {
            continue; // nothing to call, or wrapped already
        }
        // SAFETY: `ml_meth` of a table entry: an aligned pointer-sized field
        // of the extension's data.
        let slot = unsafe { std::ptr::addr_of!((*entry).meth) } as usize;
        if !wrap_function(slot, meth, flags as u32) {
            return;
        }
    }
}

/// Points the function pointer at `slot` (which holds `function`) at a new
/// stub that calls `function` with the calling convention `flags`. False
/// when no stub is left.
fn wrap_function(slot: usize, function: usize, flags: u32) -> bool {
    let k = USED.fetch_add(1, Ordering::Relaxed);
    if k >= stubs::METHOD_STUBS {
        static TOLD: std::sync::Once = std::sync::Once::new();
        TOLD.call_once(|| {
            crate::sys::warn(format_args!(
                "more than {} extension methods and slots: the rest are not followed call by call",
                stubs::METHOD_STUBS
            ))
        });
        return false;
    }
    stubs::METHOD_FN[k].store(function, Ordering::Relaxed);
    FLAGS[k].store(flags, Ordering::Relaxed);
    // The write lifts RELRO protection when the (const) table lies there.
    crate::interpose::write_word(slot, stubs::stub(k));
    true
}

/// The module definitions the watched extensions registered.
static MODULE_DEFS: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());

/// Wraps the methods of a `PyModuleDef`, and remembers it.
///
/// # Safety
/// `def` is NULL or a module definition.
unsafe fn wrap_module_def(def: usize) {
    if def != 0 {
        // SAFETY: caller's contract.
        unsafe { wrap_table(layout::module_def_methods(def)) };
        let mut defs = MODULE_DEFS.lock().unwrap_or_else(|e| e.into_inner());
        if !defs.contains(&def) {
            defs.push(def);
        }
    }
}

/// The module definitions the watched extensions registered (for the
/// references their modules' saved copies hold).
pub fn module_defs() -> Vec<usize> {
    MODULE_DEFS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Wraps the `Py_tp_methods` table of a `PyType_Spec`.
///
/// # Safety
/// `spec` is NULL or a type spec.
unsafe fn wrap_spec(spec: usize) {
    const PY_TP_METHODS: c_int = 64;
    if spec == 0 {
        return;
    }
    // SAFETY: `PyType_Spec::slots` (after name, two ints and the flags) is
    // an array of `{int slot; void *pfunc}` ended by slot 0.
    unsafe {
        let slots = *((spec + 24) as *const usize);
        for i in 0..MAX_TABLE {
            let slot = (slots + 16 * i) as *const (c_int, usize);
            match (*slot).0 {
                0 => return,
                PY_TP_METHODS => wrap_table((*slot).1),
                id => slots::wrap_spec_slot(id, std::ptr::addr_of!((*slot).1) as usize),
            }
        }
    }
}

/// The registration functions, each forwarding to the interpreter's after
/// wrapping what it is given: `name(arguments) -> result => wrapper(argument)`.
macro_rules! registrations {
    ($( $name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty => $wrap:ident ( $warg:ident ) ; )*) => {
        $(
            #[allow(non_snake_case)]
            mod $name {
                use super::*;
                pub static INTERPRETER_FN: AtomicUsize = AtomicUsize::new(0);
                pub extern "C" fn entry($($arg: $ty),*) -> $ret {
                    // SAFETY: the argument is what the extension passes to the
                    // interpreter's function of this name, which reads it the
                    // same way (a definition, a table, a type or a spec).
                    unsafe { $wrap($warg as usize) };
                    let real: extern "C" fn($($ty),*) -> $ret =
                        // SAFETY: INTERPRETER_FN holds the interpreter's function of
                        // this name (set before any slot was patched), of
                        // this C signature.
                        unsafe { std::mem::transmute(INTERPRETER_FN.load(Ordering::Relaxed)) };
                    real($($arg),*)
                }
            }
        )*
        /// (name, the interpreter's function, the entry) of every
        /// registration function.
        fn registrations() -> [(&'static str, &'static AtomicUsize, usize); REGISTRATION_COUNT] {
            [ $( (stringify!($name), &$name::INTERPRETER_FN, $name::entry as *const () as usize) ),* ]
        }
    };
}

type P = *mut c_void;
const REGISTRATION_COUNT: usize = 9;

/// `PyType_Ready`'s argument: its methods table.
///
/// # Safety
/// `type_object` is a type object being readied.
unsafe fn wrap_type(type_object: usize) {
    if type_object != 0 {
        // SAFETY: caller's contract.
        unsafe {
            wrap_table(layout::type_methods(type_object));
            slots::wrap_type(type_object);
        }
    }
}

registrations! {
    PyModule_Create2(def: P, version: c_int) -> P => wrap_module_def(def);
    PyModuleDef_Init(def: P) -> P => wrap_module_def(def);
    PyModule_FromDefAndSpec2(def: P, spec: P, version: c_int) -> P => wrap_module_def(def);
    PyModule_AddFunctions(module: P, defs: P) -> c_int => wrap_table(defs);
    PyType_Ready(type_object: P) -> c_int => wrap_type(type_object);
    PyType_FromSpec(spec: P) -> P => wrap_spec(spec);
    PyType_FromSpecWithBases(spec: P, bases: P) -> P => wrap_spec(spec);
    PyType_FromModuleAndSpec(module: P, spec: P, bases: P) -> P => wrap_spec(spec);
    PyType_FromMetaclass(meta: P, module: P, spec: P, bases: P) -> P => wrap_spec(spec);
}

/// Looks up the interpreter's registration functions, and turns the stubs'
/// sampling gate on under `REFWATCH_SAMPLE=sample` > 1 (at start, before any
/// method is wrapped). The gate is a byte the stubs' assembly reads: the
/// setting's one value, set here once.
pub fn resolve(sample: u32) {
    for (name, real, _) in registrations() {
        real.store(crate::python::api::address_of(name), Ordering::Relaxed);
    }
    stubs::SAMPLING_ON.store(u8::from(sample > 1), Ordering::Relaxed);
}

/// Where a GOT slot naming `name` should point, if it is a registration
/// function this interpreter has.
pub fn entry_for(name: &[u8]) -> Option<usize> {
    let (_, real, entry) = registrations().into_iter().find(|(n, _, _)| n.as_bytes() == name)?;
    (real.load(Ordering::Relaxed) != 0).then_some(entry)
}

/// A deallocator is called with `instance`: its struct's words that are
/// objects calls left references on (`growth`), and their refcounts.
///
/// # Safety
/// `instance` is the object being deallocated (intact until the real
/// deallocator runs); the GIL is held.
unsafe fn dealloc_enter(frame: &mut Frame, instance: usize) {
    frame.count = 0;
    // SAFETY: caller's contract: the instance and its type are alive; its
    // struct is `basicsize` bytes; a word is read as an object only once
    // `is_grown` says it is a live one.
    unsafe {
        let size = layout::basicsize(layout::type_of(instance));
        let header = layout::refcount_offset() + 16;
        let mut offset = header;
        while offset + 8 <= size && frame.count < ARGUMENTS {
            let word = ((instance + offset) as *const usize).read();
            if super::provenance::growth::is_grown(word) {
                frame.objects[frame.count] = word;
                frame.before[frame.count] = layout::refcount(word);
                frame.offsets[frame.count] = offset as u32;
                frame.count += 1;
            }
            offset += 8;
        }
    }
}

/// After deallocator `k`: a member still alive whose refcount did not go
/// down was not released.
///
/// # Safety
/// The GIL is held.
unsafe fn dealloc_exit(k: u32, frame: &Frame) {
    for i in 0..frame.count.min(ARGUMENTS) {
        let object = frame.objects[i];
        // SAFETY: `is_grown` again: a member the deallocator freed is gone
        // from the map, so the refcount is read only of a live object.
        unsafe {
            if super::provenance::growth::is_grown(object) && layout::refcount(object) == frame.before[i] {
                super::provenance::growth::note_dealloc_left(object, k, frame.offsets[i]);
            }
        }
    }
}

/// The function behind method stub address `address`, if it is one (a
/// wrapped slot's function, for those who compare or name it).
pub fn function_behind(address: usize) -> Option<usize> {
    stubs::index_of(address).map(|k| function_of(k as u32)).filter(|&f| f != 0)
}

/// The function behind method stub `k` (for naming it).
pub fn function_of(k: u32) -> usize {
    stubs::METHOD_FN.get(k as usize).map_or(0, |r| r.load(Ordering::Relaxed))
}

/// The call site to count a C-API call returning to `ra` at. A method that
/// ends in a tail call (`return PyList_GetItem(list, 0);` at -O2 is a
/// jump) leaves its own return address to the function it jumps to: in a
/// followed call, the stub's. Such calls are counted at the method's stub
/// (plus one, a return address in it), which `tail_call_function` names.
#[inline(always)]
pub fn call_site(ra: usize) -> usize {
    if ra == stubs::returned() {
        return tail_call_site(ra);
    }
    ra
}

#[cold]
fn tail_call_site(ra: usize) -> usize {
    current().map_or(ra, |k| stubs::stub(k as usize) + 1)
}

/// The method function a call site from `call_site` stands for, when it
/// is a tail call's.
pub fn tail_call_function(site: usize) -> Option<usize> {
    let k = stubs::index_of(site.wrapping_sub(1))?;
    Some(function_of(k as u32)).filter(|&f| f != 0)
}

/// Arguments looked at per call.
const ARGUMENTS: usize = 6;
/// Nested method calls followed per thread.
const DEPTH: usize = 32;

#[derive(Clone, Copy)]
#[repr(C)]
struct Frame {
    objects: [usize; ARGUMENTS],
    before: [u64; ARGUMENTS],
    count: usize,
    /// Watchpoints armed for this call (`watch`).
    armed: super::watch::Armed,
    /// The method's stub.
    method: u32,
    /// Whether sampling chose this call (every call without sampling);
    /// not when it is followed only because the method is a suspect. Only
    /// these calls' growth is noted: its counts are scaled by N.
    sampled: bool,
    /// The argument tuple of a `METH_VARARGS` call (0 otherwise).
    args: usize,
    /// What a parse of `args` lent in this call (`parsed`).
    parse: parsed::Parse,
    /// For a deallocator: where in the instance's struct each object was.
    offsets: [u32; ARGUMENTS],
}

#[repr(C)]
struct Calls {
    depth: usize,
    /// Under sampling: calls left until the next followed one (0 or 1:
    /// follow). Read by the stubs' gate.
    countdown: u64,
    frames: [Frame; DEPTH],
}

crate::sys::static_thread_block!(fn calls_block() -> Calls, "refwatch_method_calls");

/// The calling thread's method frames.
fn calls() -> &'static mut Calls {
    // SAFETY: this thread's own zero-initialized block (all zeros is an
    // empty stack); only this thread's stubs touch it, one call at a time.
    unsafe { &mut *calls_block() }
}

/// The method whose call this thread is in (the innermost followed one).
pub fn current() -> Option<u32> {
    let calls = calls();
    (1..=DEPTH).contains(&calls.depth).then(|| calls.frames[calls.depth - 1].method)
}

/// Arms watches for the rest of the current method call: `arm(method)`
/// returns the slots it armed, disarmed when the call returns.
pub fn watch_in_current_call(arm: impl FnOnce(u32) -> super::watch::Armed) {
    let calls = calls();
    if !(1..=DEPTH).contains(&calls.depth) {
        return;
    }
    let frame = &mut calls.frames[calls.depth - 1];
    frame.armed |= arm(frame.method);
}

/// The objects a call of a method with `flags` receives (`registers`: the
/// argument registers), `self` included.
///
/// # Safety
/// `registers` are the arguments of a call of such a method.
unsafe fn arguments(flags: u32, registers: &stubs::Registers, out: &mut [usize; ARGUMENTS]) -> usize {
    let mut n = 0;
    let mut push = |object: usize| {
        if object != 0 && n < ARGUMENTS {
            out[n] = object;
            n += 1;
        }
    };
    if flags & slots::NO_SELF == 0 {
        push(registers[0]);
    }
    // SAFETY: the layout of each calling convention (caller's contract).
    unsafe {
        if flags & slots::TWO_OBJECTS != 0 {
            push(registers[1]);
            push(registers[2]);
        } else if flags & slots::INDEX_AND_OBJECT != 0 {
            push(registers[2]);
        } else if flags & METH_O != 0 {
            push(registers[1]);
        } else if flags & METH_FASTCALL != 0 {
            let (args, nargs) = if flags & METH_METHOD != 0 {
                (registers[2], registers[3])
            } else {
                (registers[1], registers[2])
            };
            for i in 0..nargs.min(ARGUMENTS) {
                push(*(args as *const usize).add(i));
            }
        } else if flags & METH_VARARGS != 0 && registers[1] != 0 {
            let tuple = registers[1];
            for i in 0..layout::size(tuple).min(ARGUMENTS) {
                push(layout::tuple_item(tuple, i));
            }
        }
        // METH_NOARGS, or a convention not known here: self only.
    }
    n
}

/// Called by stub `k` before the method: notes its arguments' refcounts.
extern "C" fn on_enter(k: usize, registers: *const stubs::Registers) {
    crate::python::checks::tick();
    let calls = calls();
    // Under sampling, the gate let the call through when its countdown ran
    // out (0, or wrapped from 0), or else for a suspect, or for a method
    // that parses its arguments (`stubs::PARSES`).
    let sampling = stubs::SAMPLING_ON.load(Ordering::Relaxed) != 0;
    let sampled = !sampling || calls.countdown.wrapping_add(1) <= 1;
    if sampling && sampled {
        calls.countdown = crate::count::next_gap();
    }
    let depth = calls.depth;
    calls.depth += 1;
    if depth >= DEPTH {
        return;
    }
    let frame = &mut calls.frames[depth];
    frame.method = k as u32;
    frame.sampled = sampled;
    // SAFETY: the stub passes its saved argument registers; the method's
    // flags say how to read them; the arguments are alive for the call.
    unsafe {
        let flags = FLAGS[k].load(Ordering::Relaxed);
        if flags & slots::DEALLOC != 0 {
            frame.args = 0;
            frame.parse.clear();
            frame.armed = 0;
            dealloc_enter(frame, (*registers)[0]);
            return;
        }
        // As `arguments` reads them: the tuple of a METH_VARARGS call.
        let varargs = flags & (METH_O | METH_FASTCALL) == 0 && flags & METH_VARARGS != 0;
        frame.args = if varargs { (*registers)[1] } else { 0 };
        frame.parse.clear();
        frame.armed = 0;
        let suspect = super::watch::suspected(k as u32);
        if !sampled && !suspect {
            // Here only for what its parse lends: no references noted.
            frame.count = 0;
            return;
        }
        frame.count = arguments(flags, &*registers, &mut frame.objects);
        for i in 0..frame.count {
            frame.before[i] = layout::refcount(frame.objects[i]);
        }
        if suspect {
            frame.armed = arm_arguments(k as u32, frame);
        }
    }
}

/// A suspect method's arguments (self last) are watched for a few calls:
/// the slow path of `watch`.
///
/// # Safety
/// The frame's objects are the arguments of the call being entered.
#[cold]
unsafe fn arm_arguments(k: u32, frame: &Frame) -> super::watch::Armed {
    let (self_, arguments) = frame.objects[..frame.count].split_first().unwrap_or((&0, &[]));
    let mut watched = [0usize; ARGUMENTS];
    let n = arguments.len();
    watched[..n].copy_from_slice(arguments);
    watched[n] = *self_;
    // SAFETY: forwarded (alive for the call; the GIL is held).
    unsafe { super::watch::arm_for(k, &watched[..frame.count]) }
}

/// Called by stub `k` after the method returned `result`: an argument
/// with more references than before, beyond the one in `result`, was given
/// them by the call.
extern "C" fn on_exit(k: usize, _registers: *const stubs::Registers, result: usize) {
    // SAFETY: the GIL is held (the method was called with it); the frame is
    // this call's, still current.
    unsafe { parsed::hand_over() };
    let calls = calls();
    calls.depth = calls.depth.saturating_sub(1);
    let depth = calls.depth;
    if depth >= DEPTH {
        return;
    }
    let frame = &calls.frames[depth];
    if FLAGS[k].load(Ordering::Relaxed) & slots::DEALLOC != 0 {
        // SAFETY: the GIL is held (deallocation runs with it).
        unsafe { dealloc_exit(k as u32, frame) };
        return;
    }
    // A slot that returns an int returns no object (and leaves the upper
    // half of `rax` undefined).
    let result = if FLAGS[k].load(Ordering::Relaxed) & slots::RETURNS_INT != 0 { 0 } else { result };
    // Usually no argument has more references than before, none is the
    // result and no watch is armed: a load and two compares per argument.
    let count = frame.count.min(ARGUMENTS);
    let noted = (0..count).any(|i| {
        let object = frame.objects[i];
        // SAFETY: arguments are held by the caller for the whole call.
        object == result || unsafe { layout::refcount(object) } > frame.before[i]
    });
    if noted || frame.armed != 0 {
        exit_noting(k, frame, result);
    }
}

/// `on_exit` when an argument has more references than before the call, is
/// the result, or a watch is armed for it.
#[cold]
fn exit_noting(k: usize, frame: &Frame, result: usize) {
    let objects = &frame.objects[..frame.count.min(ARGUMENTS)];
    // Argument `i`'s refcounts before and after the call. A refcount that
    // reads as immortal or more was not reached by this call: the argument
    // was freed during it (the extension released it without owning it),
    // its memory poisoned (debug builds) or reused. Nothing more of it is
    // read.
    let refcounts = |i: usize| -> Option<(u64, u64)> {
        // SAFETY: arguments are held by the caller for the whole call.
        let after = unsafe { layout::refcount(objects[i]) };
        let before = frame.before[i];
        (before < layout::IMMORTAL && after < layout::IMMORTAL).then_some((before, after))
    };
    // The caller takes the result as a reference of its own: returning an
    // argument (or self) needs one more than it had.
    if let Some(i) = objects.iter().position(|&o| o == result) {
        if let Some((before, after)) =
            refcounts(i).filter(|&(before, after)| after <= before && frame.sampled)
        {
            // SAFETY: the GIL is held (the method was called with it); the
            // result is alive (its caller holds it).
            if let Some(verdicts) = super::verdicts() {
                // SAFETY: as above.
                unsafe { (verdicts.returned_unowned)(k as u32, result, before, after) };
            }
        }
    }
    // How many references the call left on argument `i`.
    let left_on = |i: usize| -> u64 {
        let returned = u64::from(objects[i] == result);
        refcounts(i).map_or(0, |(before, after)| after.saturating_sub(before + returned))
    };
    for (i, &object) in objects.iter().enumerate() {
        let left = left_on(i);
        if left > 0 {
            if frame.sampled {
                // SAFETY: the GIL is held (the method was called with it).
                unsafe { super::provenance::growth::note(object, k as u32, left) };
            }
            super::watch::suspect(k as u32);
        }
    }
    if frame.armed != 0 {
        let grew = |object: usize| objects.iter().position(|&o| o == object).is_some_and(|i| left_on(i) > 0);
        // SAFETY: armed by this thread for this call, which has returned.
        unsafe { super::watch::disarm(k as u32, frame.armed, grew) };
    }
}
