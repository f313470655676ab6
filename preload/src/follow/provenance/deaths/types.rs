//! Seeing objects die by their type, before 3.14: the `tp_dealloc` of each
//! type whose objects provenance follows is pointed at a stub of refwatch's
//! own that tells provenance, then jumps to the type's real `tp_dealloc`.
//! Every death through the type passes there, whoever releases the last
//! reference, objects kept on a type's free list included (the allocator
//! never sees those), and objects of other types cost nothing.
//!
//! The types whose instances always give their memory back to the object
//! allocator when they die (`int`, `str`, `bytes`: no free list keeps
//! them) are left alone: the allocator hook sees those deaths, and the
//! most frequent fresh objects then pay one hook per death, not two.
//!
//! Classes made by a class statement share the interpreter's
//! `subtype_dealloc`, which ends in the `tp_dealloc` of the first base that
//! has another one: that base is the type hooked (hooking a class itself
//! would make `subtype_dealloc` run twice). The stubs are 16 bytes apart in
//! one block, so whether a type is hooked is one range check. A stub in
//! `tp_dealloc` turns the interpreter's trashcan off for the type's own
//! instances, so the stubs run the deallocators under one of their own
//! (`trashcan`).

use crate::python::{layout, runtime};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Stubs: how many types can have their deaths seen this way.
const DEATH_STUBS: usize = 256;

/// The type's own `tp_dealloc` behind stub `k`.
static OWN_DEALLOC: [AtomicUsize; DEATH_STUBS] = [const { AtomicUsize::new(0) }; DEATH_STUBS];
/// Stubs handed out.
static USED: AtomicUsize = AtomicUsize::new(0);
/// `subtype_dealloc`; 0 until found.
static CLASS_DEALLOC: AtomicUsize = AtomicUsize::new(0);
/// Whether deaths are seen this way (before 3.14).
static HOOKING: AtomicBool = AtomicBool::new(false);
/// `int`, `str` and `bytes` when the allocator hook sees their deaths;
/// else zeros.
static FREED_WHOLE: [AtomicUsize; 3] = [const { AtomicUsize::new(0) }; 3];

/// Bytes from one stub to the next: stub `k` is at `stubs() + k *
/// DEATH_STUB_BYTES`, which the assembly checks.
const DEATH_STUB_BYTES: usize = 16;

core::arch::global_asm!(
    // Stub `index`: dying(object, index), the object being the first
    // argument already. `.org` fails to assemble if the stub before did not
    // fit in its DEATH_STUB_BYTES.
    ".macro refwatch_death_stub index",
    ".balign {stub_bytes}",
    ".org refwatch_death_stubs + \\index * {stub_bytes}",
    ".hidden refwatch_death_\\index",
    ".type refwatch_death_\\index,@function",
    "refwatch_death_\\index:",
    ".cfi_startproc",
    "mov esi, \\index",
    "jmp {dying}",
    ".cfi_endproc",
    ".size refwatch_death_\\index, . - refwatch_death_\\index",
    ".endm",
    ".pushsection .text.refwatch_death_stubs,\"ax\",@progbits",
    ".balign {stub_bytes}",
    ".globl refwatch_death_stubs",
    ".hidden refwatch_death_stubs",
    "refwatch_death_stubs:",
    crate::sys::asm_for_each_index!("refwatch_death_stub", "{stubs}"),
    ".popsection",
    stubs = const DEATH_STUBS,
    stub_bytes = const DEATH_STUB_BYTES,
    dying = sym dying,
);

unsafe extern "C" {
    static refwatch_death_stubs: u8;
}

fn stubs() -> usize {
    // Only the address of the block defined above is taken.
    &raw const refwatch_death_stubs as usize
}

/// Whether `dealloc` is one of the stubs.
#[inline(always)]
fn is_stub(dealloc: usize) -> bool {
    dealloc.wrapping_sub(stubs()) < DEATH_STUB_BYTES * DEATH_STUBS
}

/// The type's own deallocator, when `dealloc` is one of the stubs.
fn real_dealloc(dealloc: usize) -> usize {
    let own = if is_stub(dealloc) {
        OWN_DEALLOC[(dealloc - stubs()) / DEATH_STUB_BYTES].load(Ordering::Acquire)
    } else {
        dealloc
    };
    // A deallocator wrapped like a method (`methods::slots`) is its function.
    crate::follow::methods::function_behind(own).unwrap_or(own)
}

/// Stub `k` is called with the object to deallocate: provenance forgets
/// it, and the type's own deallocator runs (in the trashcan's order).
extern "C" fn dying(object: usize, k: usize) {
    let stub = stubs() + DEATH_STUB_BYTES * k;
    // SAFETY: deallocation runs with the GIL held and the object is intact
    // until its real `tp_dealloc` runs, after this; stub `k` (k < DEATH_STUBS)
    // is installed only once its deallocator is in OWN_DEALLOC[k]. An object whose own
    // type's `tp_dealloc` is this stub dies as an instance of the hooked
    // type itself (not from a subclass's `subtype_dealloc`): the case in
    // which the interpreter's trashcan would let it wait.
    unsafe {
        crate::follow::provenance::forget(object);
        super::trashcan::run(object, OWN_DEALLOC.get_unchecked(k).load(Ordering::Acquire), || {
            let type_object = layout::type_of(object);
            layout::dealloc_of(type_object) == stub && layout::has_gc(type_object)
        });
    }
}

/// Learns which function the interpreter's classes deallocate with (Python
/// must be able to run), and with `hook` turns this way of seeing deaths on
/// (else the allocator hook alone sees the frees). `freed_seen`: the
/// allocator hook is in place.
pub fn install(hook: bool, freed_seen: bool) {
    if freed_seen {
        for (slot, name) in FREED_WHOLE.iter().zip([c"PyLong_Type", c"PyUnicode_Type", c"PyBytes_Type"]) {
            slot.store(crate::python::api::export(name), Ordering::Relaxed);
        }
    }
    if let Some(dealloc) = runtime::class_dealloc().filter(|&d| d != 0) {
        CLASS_DEALLOC.store(dealloc, Ordering::Release);
        HOOKING.store(hook, Ordering::Release);
    }
}

/// Whether the deaths of `type_object`'s instances are all frees the
/// allocator hook sees.
#[inline(always)]
fn freed_whole(type_object: usize) -> bool {
    FREED_WHOLE.iter().any(|t| t.load(Ordering::Relaxed) == type_object)
}

/// The deallocator that frees the instances of `type_object` in the end:
/// a class's `subtype_dealloc` ends in its first base with another one;
/// the type's own, not refwatch's stub.
///
/// # Safety
/// `type_object` is a live type object.
pub unsafe fn final_dealloc(type_object: usize) -> usize {
    // SAFETY: forwarded.
    unsafe {
        deallocating_type(type_object, CLASS_DEALLOC.load(Ordering::Relaxed))
            .map_or(0, |t| real_dealloc(layout::dealloc_of(t)))
    }
}

/// The type whose `tp_dealloc` frees the instances of `type_object`:
/// itself, or for a class (its `tp_dealloc` is `class`, the interpreter's
/// `subtype_dealloc`) its first base with another; `None` if none has.
///
/// # Safety
/// `type_object` is a live type object.
unsafe fn deallocating_type(mut type_object: usize, class: usize) -> Option<usize> {
    // SAFETY: a live type's bases are alive.
    unsafe {
        while class != 0 && layout::dealloc_of(type_object) == class {
            type_object = layout::base_of(type_object);
            if type_object == 0 {
                return None;
            }
        }
    }
    Some(type_object)
}

/// Whether the deaths of `type_object`'s instances are seen (hooking the
/// type that deallocates them, if it is not yet): false only when no stub
/// is left. True when deaths are seen another way.
///
/// # Safety
/// `type_object` is a live type object; the caller holds the GIL.
#[inline(always)]
pub unsafe fn see_deaths_of(type_object: usize) -> bool {
    // SAFETY: forwarded (a live type, the GIL held).
    unsafe { seen_already(type_object) || hook(type_object, CLASS_DEALLOC.load(Ordering::Relaxed)) }
}

/// `see_deaths_of` without hooking: whether the deaths of `type_object`'s
/// instances are seen already.
///
/// # Safety
/// `type_object` is a live type object.
#[inline(always)]
pub unsafe fn seen_already(type_object: usize) -> bool {
    // SAFETY: forwarded.
    !HOOKING.load(Ordering::Relaxed)
        || is_stub(unsafe { layout::dealloc_of(type_object) })
        || freed_whole(type_object)
}

/// The slow path of `see_deaths_of`.
///
/// # Safety
/// As for `see_deaths_of`.
#[cold]
unsafe fn hook(type_object: usize, class: usize) -> bool {
    // SAFETY: a live type's bases are alive; the GIL serializes hooking.
    unsafe {
        let Some(type_object) = deallocating_type(type_object, class) else { return false };
        let dealloc = layout::dealloc_of(type_object);
        if is_stub(dealloc) || freed_whole(type_object) {
            return true;
        }
        let k = USED.load(Ordering::Relaxed);
        if k == DEATH_STUBS {
            return false;
        }
        USED.store(k + 1, Ordering::Relaxed);
        OWN_DEALLOC[k].store(dealloc, Ordering::Release);
        layout::set_dealloc(type_object, stubs() + DEATH_STUB_BYTES * k);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stub_is_one_range_check_away() {
        let first = stubs();
        assert_eq!(first % DEATH_STUB_BYTES, 0);
        for k in 0..DEATH_STUBS {
            assert!(is_stub(first + DEATH_STUB_BYTES * k), "stub {k}");
        }
        assert!(!is_stub(first + DEATH_STUB_BYTES * DEATH_STUBS));
        assert!(!is_stub(first - 1));
        // A deallocator that is not a stub is its own.
        let elsewhere = dying as extern "C" fn(usize, usize) as usize;
        assert!(!is_stub(elsewhere));
        assert_eq!(real_dealloc(elsewhere), elsewhere);
    }
}
