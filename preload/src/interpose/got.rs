//! Writing hook addresses into GOT slots.

use super::elf::{Dynamic, Loaded};
use std::sync::atomic::{AtomicUsize, Ordering};

const PAGE: usize = 4096;

/// Points every GOT slot of `object` that refers to a hooked function at
/// its hook (`entry_for` of the import's name). Returns how many slots now go through refwatch.
///
/// `GLOB_DAT` slots are patched too (`-fno-plt` builds call through them):
/// that is safe only because no hooked function is one extensions store as
/// a type slot, whose identity CPython compares (docs/design.md §3.6; the
/// provenance table leaves those out).
///
/// # Safety
/// `object` must be loaded, and `dynamic` must be its tables.
pub unsafe fn patch(object: &Loaded, dynamic: &Dynamic, entry_for: fn(&[u8]) -> Option<usize>) -> usize {
    let relro = object.relro();
    let mut patched = 0;
    // SAFETY: the caller guarantees the object is loaded.
    unsafe {
        dynamic.for_each_import(|import| {
            let Some(entry) = entry_for(import.name) else { return };
            if !import.undefined {
                return; // the object's own definition, not the interpreter's
            }
            let slot = import.slot as usize;
            let in_relro = relro.as_ref().is_some_and(|r| r.contains(&slot));
            if write_slot(slot, entry, in_relro) {
                patched += 1;
            }
        });
    }
    patched
}

/// Stores `value` in the pointer-sized word at `address` inside a loaded
/// object's data (a GOT slot, a method table), lifting RELRO protection for
/// the moment of the write when the word lies there. False when `address`
/// is in no loaded object or cannot be written.
pub fn write_word(address: usize, value: usize) -> bool {
    let Some(object) = super::objects::object_at(address) else { return false };
    let in_relro = object.relro().is_some_and(|r| r.contains(&address));
    let writable = object.writable_ranges().iter().any(|r| r.contains(&address));
    (in_relro || writable) && write_slot(address, value, in_relro)
}

/// Stores `value` at `slot`, lifting RELRO protection for the moment of the
/// write. Pages outside `PT_GNU_RELRO` are left as they are: a lazily bound
/// `.got.plt` must stay writable.
fn write_slot(slot: usize, value: usize, in_relro: bool) -> bool {
    let page = slot & !(PAGE - 1);
    let protect = |prot| {
        // SAFETY: `page` is the page-aligned start of a mapped GOT page of a
        // loaded object; changing its protection affects no Rust memory.
        unsafe { libc::mprotect(page as *mut libc::c_void, PAGE, prot) == 0 }
    };
    if in_relro && !protect(libc::PROT_READ | libc::PROT_WRITE) {
        return false;
    }
    // SAFETY: `slot` is an aligned, mapped, writable GOT entry of a loaded
    // object (made writable above when in RELRO). Other threads may call
    // through it meanwhile: the 8-byte atomic store makes them see either
    // the old or the new target, never a torn one.
    unsafe { AtomicUsize::from_ptr(slot as *mut usize) }.store(value, Ordering::Release);
    if in_relro {
        protect(libc::PROT_READ);
    }
    true
}
