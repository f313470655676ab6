//! Reading an object's header, the one layout fact refwatch relies on:
//! `PyObject` is `{ob_refcnt, ob_type}`, preceded by the refchain's two
//! links on trace-refs builds up to 3.12 (`facts::header_extra`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

static EXTRA: AtomicUsize = AtomicUsize::new(0);
/// The interpreter's minor version (3.x).
static MINOR: AtomicUsize = AtomicUsize::new(0);
/// The `tp_flags` that put two words of pre-header before an object on
/// this version (see `pre_header`): one mask, so that the hot paths do not
/// test the version.
static MANAGED: AtomicU64 = AtomicU64::new(0);

/// Records the header layout and version of this interpreter (at start).
pub fn set_header_extra(bytes: usize, minor: usize) {
    EXTRA.store(bytes, Ordering::Relaxed);
    MINOR.store(minor, Ordering::Relaxed);
    let managed = match minor {
        ..=10 => 0,
        11 => MANAGED_DICT,
        _ => MANAGED_DICT | MANAGED_WEAKREF,
    };
    MANAGED.store(managed, Ordering::Relaxed);
}

/// Word `n` after a type object's `PyVarObject` header: `PyTypeObject`'s
/// slots are in the same order in every version of the matrix.
///
/// # Safety
/// `type_object` is a live type object.
#[inline(always)]
unsafe fn type_word(type_object: usize, n: usize) -> *mut usize {
    (type_object + EXTRA.load(Ordering::Relaxed) + 24 + 8 * n) as *mut usize
}

/// `tp_basicsize`, `tp_dealloc`, `tp_flags`, `tp_traverse`, `tp_methods`,
/// `tp_base`, `tp_dict`.
/// The address of word `n` of a type object (after its object header):
/// where a slot's function pointer is.
///
/// # Safety
/// `type_object` is a type object.
pub unsafe fn type_field(type_object: usize, n: usize) -> usize {
    // SAFETY: forwarded.
    unsafe { type_word(type_object, n) as usize }
}

const TP_BASICSIZE: usize = 1;
const TP_DEALLOC: usize = 3;
const TP_FLAGS: usize = 18;
const TP_TRAVERSE: usize = 20;
const TP_METHODS: usize = 26;
const TP_BASE: usize = 29;
const TP_DICT: usize = 30;
const HAVE_GC: u64 = 1 << 14;
/// Py_TPFLAGS_MANAGED_WEAKREF (3.12+) and Py_TPFLAGS_MANAGED_DICT (3.11+).
const MANAGED_WEAKREF: u64 = 1 << 3;
const MANAGED_DICT: u64 = 1 << 4;

/// How far into its memory block an object of `type_object` starts: the
/// gc header (two words) for gc types, plus two words of "pre-header" for
/// types with a managed dict (3.11+) or managed weakref list (3.12+).
///
/// # Safety
/// `type_object` is a live type object.
#[inline(always)]
pub unsafe fn pre_header(type_object: usize) -> usize {
    // SAFETY: forwarded.
    let flags = unsafe { type_flags(type_object) };
    let managed = flags & MANAGED.load(Ordering::Relaxed) != 0;
    16 * usize::from(flags & HAVE_GC != 0) + 16 * usize::from(managed)
}

/// Whether `type_object` is a static type (not `Py_TPFLAGS_HEAPTYPE`): a
/// type object that is never freed.
///
/// # Safety
/// `type_object` is a live type object.
#[inline(always)]
pub unsafe fn is_static_type(type_object: usize) -> bool {
    const HEAPTYPE: u64 = 1 << 9;
    // SAFETY: forwarded.
    unsafe { type_flags(type_object) & HEAPTYPE == 0 }
}

/// Whether objects of `type_object` have a gc header.
///
/// # Safety
/// `type_object` is a live type object.
#[inline(always)]
pub unsafe fn has_gc(type_object: usize) -> bool {
    // SAFETY: forwarded.
    unsafe { type_flags(type_object) & HAVE_GC != 0 }
}

/// The first word of a gc object's gc header (`PyGC_Head._gc_next`, just
/// before the object in every version): 0 while the garbage collector
/// does not track the object.
pub fn gc_link(object: usize) -> *mut usize {
    (object - 16) as *mut usize
}

/// `tp_flags` of a type object.
///
/// # Safety
/// `type_object` is a live type object.
#[inline(always)]
pub unsafe fn type_flags(type_object: usize) -> u64 {
    // SAFETY: tp_flags is a field of every type object.
    unsafe { type_word(type_object, TP_FLAGS).cast::<u64>().read() }
}

pub const LONG_SUBCLASS: u64 = 1 << 24;
pub const TUPLE_SUBCLASS: u64 = 1 << 26;
pub const BYTES_SUBCLASS: u64 = 1 << 27;
pub const UNICODE_SUBCLASS: u64 = 1 << 28;
pub const DICT_SUBCLASS: u64 = 1 << 29;
pub const TYPE_SUBCLASS: u64 = 1 << 31;

/// A type's `tp_traverse` (0 when it has none).
///
/// # Safety
/// `type_object` is a live type object.
pub unsafe fn traverse_of(type_object: usize) -> usize {
    // SAFETY: tp_traverse is a field of every type object.
    unsafe { type_word(type_object, TP_TRAVERSE).read() }
}

/// A type's `tp_dealloc`.
///
/// # Safety
/// `type_object` is a live type object.
#[inline(always)]
pub unsafe fn dealloc_of(type_object: usize) -> usize {
    // SAFETY: tp_dealloc is a field of every type object.
    unsafe { type_word(type_object, TP_DEALLOC).read() }
}

/// Sets a type's `tp_dealloc` (one aligned word: a concurrent reader sees
/// the old or the new function).
///
/// # Safety
/// `type_object` is a live type object; `dealloc` deallocates its instances
/// as the one it replaces did.
pub unsafe fn set_dealloc(type_object: usize, dealloc: usize) {
    // SAFETY: caller's contract; type objects are writable memory, and the
    // slot is an aligned word.
    unsafe { (*type_word(type_object, TP_DEALLOC).cast::<AtomicUsize>()).store(dealloc, Ordering::Relaxed) };
}

/// A type's `tp_basicsize`: the bytes of its instances (their fixed part).
///
/// # Safety
/// `type_object` is a live type object.
pub unsafe fn basicsize(type_object: usize) -> usize {
    // SAFETY: tp_basicsize is a field of every type object.
    unsafe { type_word(type_object, TP_BASICSIZE).read() }
}

/// A type's `tp_dict` (0 for a static builtin type of 3.12+, whose dict
/// the interpreter keeps elsewhere).
///
/// # Safety
/// `type_object` is a live type object.
pub unsafe fn type_dict(type_object: usize) -> usize {
    // SAFETY: tp_dict is a field of every type object.
    unsafe { type_word(type_object, TP_DICT).read() }
}

/// A type's `tp_base` (0 for `object`).
///
/// # Safety
/// `type_object` is a live type object.
pub unsafe fn base_of(type_object: usize) -> usize {
    // SAFETY: tp_base is a field of every type object.
    unsafe { type_word(type_object, TP_BASE).read() }
}
pub const BASE_EXC_SUBCLASS: u64 = 1 << 30;

/// `args` of an exception instance: `PyBaseExceptionObject` is the object
/// header, `dict`, then `args`, in every version.
///
/// # Safety
/// `exception` is a live exception instance.
pub unsafe fn exception_args(exception: usize) -> usize {
    // SAFETY: caller's contract.
    unsafe { ((exception + EXTRA.load(Ordering::Relaxed) + 16 + 8) as *const usize).read() }
}

/// `md_dict` of a module (0 once a module being cleared let it go): the
/// first field after the object header, in every version.
///
/// # Safety
/// `module` is a live module.
pub unsafe fn module_dict(module: usize) -> usize {
    // SAFETY: caller's contract.
    unsafe { ((module + EXTRA.load(Ordering::Relaxed) + 16) as *const usize).read() }
}

/// `m_base.m_copy` of a `PyModuleDef` (after the object header, `m_init`
/// and `m_index`): the copy of a single-phase module's dict the
/// interpreter keeps to re-create the module, 0 if none.
///
/// # Safety
/// `def` is a module definition.
pub unsafe fn module_def_copy(def: usize) -> usize {
    // SAFETY: caller's contract.
    unsafe { ((def + EXTRA.load(Ordering::Relaxed) + 16 + 2 * 8) as *const usize).read() }
}

/// `m_size` and `m_traverse` of a `PyModuleDef` (words 5 and 8 after its
/// object header, as for `module_def_methods`).
///
/// # Safety
/// `def` is a module definition.
pub unsafe fn module_def_size_and_traverse(def: usize) -> (isize, usize) {
    let at = def + EXTRA.load(Ordering::Relaxed) + 16;
    // SAFETY: caller's contract.
    unsafe { (((at + 5 * 8) as *const isize).read(), ((at + 8 * 8) as *const usize).read()) }
}

/// `m_methods` of a `PyModuleDef`: after its `PyModuleDef_Base` (an object
/// header, `m_init`, `m_index`, `m_copy`), `m_name`, `m_doc` and `m_size`.
///
/// # Safety
/// `def` is a module definition.
pub unsafe fn module_def_methods(def: usize) -> usize {
    // SAFETY: caller's contract.
    unsafe { ((def + EXTRA.load(Ordering::Relaxed) + 16 + 6 * 8) as *const usize).read() }
}

/// `tp_methods` of a type object.
///
/// # Safety
/// `type_object` is a type object.
pub unsafe fn type_methods(type_object: usize) -> usize {
    // SAFETY: caller's contract.
    unsafe { type_word(type_object, TP_METHODS).read() }
}

/// Whether an exact int is one of the interpreter's cached small ints
/// (-5..=256) on a version where they are not immortal (before 3.12):
/// `ob_size` is the signed digit count, then 30-bit digits.
///
/// # Safety
/// `int` is a live exact int.
pub unsafe fn is_small_int(int: usize) -> bool {
    if MINOR.load(Ordering::Relaxed) >= 12 {
        return false;
    }
    let at = int + EXTRA.load(Ordering::Relaxed) + 16;
    // SAFETY: caller's contract: ob_size, then at least one digit when
    // ob_size is non-zero.
    unsafe {
        let size = (at as *const isize).read();
        let digit = || ((at + 8) as *const u32).read();
        size == 0 || (size == 1 && digit() <= 256) || (size == -1 && digit() <= 5)
    }
}

/// Whether an exact str is interned, before 3.12 (the low two bits of
/// `PyASCIIObject::state`, after the header, length and hash).
///
/// # Safety
/// `str` is a live exact str.
pub unsafe fn is_interned(str: usize) -> bool {
    if MINOR.load(Ordering::Relaxed) >= 12 {
        return false;
    }
    // SAFETY: caller's contract.
    unsafe { ((str + EXTRA.load(Ordering::Relaxed) + 32) as *const u32).read() & 3 != 0 }
}

/// Whether a str, bytes or tuple is one of the interpreter's cached
/// singletons on a version where they are not immortal (before 3.12): the
/// empty tuple, the empty and one-character strs and bytes. Held from the
/// interpreter's own state, which no walk reads (its free lists there keep
/// stale pointers that would explain references no one holds).
///
/// # Safety
/// `object` is a live exact str, bytes or tuple (`ob_size`, or a str's
/// length, follows the header in each).
pub unsafe fn is_cached_singleton(object: usize) -> bool {
    if MINOR.load(Ordering::Relaxed) >= 12 {
        return false;
    }
    // SAFETY: caller's contract.
    unsafe { size(object) <= 1 }
}

/// Whether a running function's frame object leaves its locals out of its
/// traversal (3.11+: the thread's stack holds them, the collector's roots).
pub fn locals_left_out_of_frames() -> bool {
    MINOR.load(Ordering::Relaxed) >= 11
}

/// Whether the reference tracer (`PyRefTracer_SetTracer`, 3.13+) is told
/// of every death. Not on 3.13: its eval loop deallocates with its own
/// `Py_DECREF` that skips the tracer (CPython gh-130382, fixed in 3.13.3),
/// and its specialized instructions free ints and strs without it
/// (gh-127705, fixed in 3.14).
pub fn tracer_sees_every_death() -> bool {
    MINOR.load(Ordering::Relaxed) >= 14
}

/// The size of pymalloc's pools: 16 KiB from 3.10 on 64-bit builds (with
/// the radix tree), 4 KiB before.
pub fn pymalloc_pool_size() -> usize {
    if MINOR.load(Ordering::Relaxed) >= 10 {
        16 << 10
    } else {
        4 << 10
    }
}

/// Refcounts at or above this are immortal objects (3.12+), not counts.
pub const IMMORTAL: u64 = 1 << 30;

/// Where `ob_refcnt` is in an object.
pub fn refcount_offset() -> usize {
    EXTRA.load(Ordering::Relaxed)
}

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

/// `ob_size` of a variable-size object (tuple, list).
///
/// # Safety
/// `object` is a live variable-size object.
pub unsafe fn size(object: usize) -> usize {
    // SAFETY: ob_size follows the object header in every PyVarObject.
    unsafe { ((object + EXTRA.load(Ordering::Relaxed) + 16) as *const usize).read() }
}

/// Item `index` of a tuple (`ob_item` is inline after the header, and
/// after the cached hash 3.14 added).
///
/// # Safety
/// `tuple` is a live tuple and `index < size(tuple)`.
pub unsafe fn tuple_item(tuple: usize, index: usize) -> usize {
    let hash = if MINOR.load(Ordering::Relaxed) >= 14 { 8 } else { 0 };
    // SAFETY: caller's contract.
    unsafe { ((tuple + EXTRA.load(Ordering::Relaxed) + 24 + hash + 8 * index) as *const usize).read() }
}

/// Item `index` of a list (`ob_item` points to the items).
///
/// # Safety
/// `list` is a live list and `index < size(list)`.
pub unsafe fn list_item(list: usize, index: usize) -> usize {
    // SAFETY: caller's contract; ob_item follows ob_size.
    unsafe {
        let items = ((list + EXTRA.load(Ordering::Relaxed) + 24) as *const *const usize).read();
        items.add(index).read()
    }
}

/// Makes an object immortal in every version's eyes: bit 31 set (3.12+
/// check the low 32 bits as a signed number) and far from zero, positive as
/// a 64-bit count (debug builds check for negative counts).
pub const PINNED: u64 = (1 << 62) | 0xC000_0000;

/// Before 3.12 (no immortal objects): a count no run releases to zero, and
/// small enough to add to a debug build's total.
const PINNED_BEFORE_3_12: u64 = 1 << 30;

/// Pins `object`'s refcount so that it is never freed, keeping a debug
/// build's reference total the sum of all counts: on 3.12+ the object is
/// immortal, and like every immortal object outside the total (its last
/// release already took its references out); before 3.12 its pinned count
/// is added to `_Py_RefTotal`, which the releases still to come take back.
///
/// # Safety
/// `object` is a live object and the caller holds the GIL.
pub unsafe fn pin(object: usize) {
    let count = if MINOR.load(Ordering::Relaxed) >= 12 { PINNED } else { PINNED_BEFORE_3_12 };
    // SAFETY: caller's contract.
    unsafe { ((object + EXTRA.load(Ordering::Relaxed)) as *mut u64).write(count) };
    if count == PINNED_BEFORE_3_12 {
        if let Some(total) = super::api::lookup(c"_Py_RefTotal") {
            // SAFETY: `_Py_RefTotal` is the debug build's `Py_ssize_t` total
            // (before 3.12), updated only with the GIL held, as here.
            unsafe { *(total as *mut isize) += count as isize };
        }
    }
}

/// The bytes an object occupies: `tp_basicsize`, plus `tp_itemsize` per
/// item for variable-size objects.
///
/// # Safety
/// `object` is a live object.
pub unsafe fn allocated_size(object: usize) -> usize {
    // SAFETY: caller's contract; tp_basicsize and tp_itemsize follow tp_name.
    unsafe {
        let type_object = type_of(object) + EXTRA.load(Ordering::Relaxed) + 16 + 8;
        let basic = ((type_object + 8) as *const usize).read();
        let item = ((type_object + 16) as *const usize).read();
        basic + if item != 0 { item * size(object) } else { 0 }
    }
}
