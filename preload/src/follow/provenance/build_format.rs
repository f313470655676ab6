//! Where `Py_BuildValue` put the references its `N` units stole: walks the
//! format string alongside the object it built (the grammar of
//! `Python/modsupport.c`: one value per unit, `(...)` a tuple, `[...]` a
//! list, `{...}` a dict, `,` `:` and blanks ignored, `#` and `&` modifiers
//! belonging to the unit before them). Allocation-free; run only when the
//! format has an `N`.

use super::apis::Slot;
use crate::python::layout;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Longest format read (formats are short literals in the extension).
const MAX_FORMAT: usize = 256;

/// Formats seen without an `N`, by address (direct-mapped, slot
/// `slot_of`): a format is nearly always a string literal, so it is read
/// once rather than on every call. A format rebuilt in place with an `N` at
/// a remembered address would have its steals unfollowed, nothing worse.
/// The sampling gate of the trampolines reads it too (8-byte slots).
pub static FORMATS_WITHOUT_STEALS: [AtomicUsize; FORMAT_SLOTS] =
    [const { AtomicUsize::new(0) }; FORMAT_SLOTS];

/// Multiplier and shift of `slot_of` (the trampolines' gate computes it).
pub const HASH: u64 = 0x9E37_79B9_7F4A_7C15;
pub const SHIFT: u32 = 58;
/// Every value `slot_of` can give, in the trampolines' gate too.
const FORMAT_SLOTS: usize = 1 << (u64::BITS - SHIFT);

const _: () = assert!(crate::sys::element_bytes(&FORMATS_WITHOUT_STEALS) == 8);

fn slot_of(format: usize) -> usize {
    ((format as u64).wrapping_mul(HASH) >> SHIFT) as usize
}

/// Whether `format` is known to have no `N` unit.
pub fn known_without_steals(format: usize) -> bool {
    FORMATS_WITHOUT_STEALS[slot_of(format)].load(Ordering::Relaxed) == format
}

/// Calls `stolen(object, container, index, slot)` for every value an `N`
/// unit of `format` placed in a tuple or list of `built`, the successful
/// result of `Py_BuildValue(format, ...)`.
///
/// # Safety
/// `format` is the NUL-terminated format the call used and `built` its
/// live result; the caller holds the GIL.
pub unsafe fn for_each_stolen(
    format: usize,
    built: usize,
    stolen: &mut dyn FnMut(usize, usize, usize, Slot),
) {
    let seen = &FORMATS_WITHOUT_STEALS[slot_of(format)];
    if seen.load(Ordering::Relaxed) == format {
        return;
    }
    // SAFETY: the call just read this string (caller's contract).
    let bytes = unsafe { std::ffi::CStr::from_ptr(format as *const libc::c_char) }.to_bytes();
    let text = &bytes[..bytes.len().min(MAX_FORMAT)];
    if !text.contains(&b'N') {
        seen.store(format, Ordering::Relaxed);
        return;
    }
    let mut walk = Walk { format: text, at: 0, stolen };
    // One unit builds that value itself; more build a tuple of them.
    let units = walk.count_top_level();
    // SAFETY: forwarded.
    unsafe {
        if units == 1 {
            walk.unit(built, None);
        } else {
            walk.items(built, Some(Slot::TupleIndex), 0);
        }
    }
}

struct Walk<'a> {
    format: &'a [u8],
    at: usize,
    stolen: &'a mut dyn FnMut(usize, usize, usize, Slot),
}

impl Walk<'_> {
    fn peek(&self) -> Option<u8> {
        self.format.get(self.at).copied()
    }

    fn skip_separators(&mut self) {
        while matches!(self.peek(), Some(b',' | b':' | b' ' | b'\t')) {
            self.at += 1;
        }
    }

    /// Units at the top level of the format (a group counts as one).
    fn count_top_level(&mut self) -> usize {
        let mut count = 0;
        loop {
            self.skip_separators();
            if self.peek().is_none() {
                break;
            }
            // SAFETY: a null object is never read.
            unsafe { self.unit(0, None) };
            count += 1;
        }
        self.at = 0;
        count
    }

    /// One unit, which produced `object` (0: not followed), at `place`
    /// (container, index, slot) when it is an item of a tuple or list.
    ///
    /// # Safety
    /// A non-zero `object` is live and of the kind its unit builds.
    unsafe fn unit(&mut self, object: usize, place: Option<(usize, usize, Slot)>) {
        let Some(c) = self.peek() else { return };
        self.at += 1;
        // SAFETY: forwarded: a group's object is the container it built.
        unsafe {
            match c {
                b'(' => self.items(object, Some(Slot::TupleIndex), b')'),
                b'[' => self.items(object, Some(Slot::ListIndex), b']'),
                // A dict's values are not followed by position.
                b'{' => self.items(0, None, b'}'),
                b'N' => {
                    if let (Some((container, index, slot)), true) = (place, object != 0) {
                        (self.stolen)(object, container, index, slot);
                    }
                }
                b's' | b'y' | b'z' | b'u' | b'U' if self.peek() == Some(b'#') => self.at += 1,
                b'O' if self.peek() == Some(b'&') => self.at += 1,
                _ => {}
            }
        }
    }

    /// The units of a group up to `close` (0: the end of the format), the
    /// items of `container` (0: not followed).
    ///
    /// # Safety
    /// A non-zero `container` is a live tuple (`TupleIndex`) or list.
    unsafe fn items(&mut self, container: usize, slot: Option<Slot>, close: u8) {
        let mut index = 0;
        loop {
            self.skip_separators();
            match self.peek() {
                None => return,
                Some(c) if c == close && close != 0 => {
                    self.at += 1;
                    return;
                }
                _ => {}
            }
            // SAFETY: a non-zero container is a live tuple or list (caller's
            // contract), and the index is checked against its size.
            let item = unsafe { item_of(container, slot, index) };
            let place = slot.filter(|_| item != 0).map(|s| (container, index, s));
            // SAFETY: an item of a live container is live.
            unsafe { self.unit(item, place) };
            index += 1;
        }
    }
}

/// Item `index` of `container` (a tuple for `TupleIndex`, else a list), or
/// 0 when there is none to follow.
///
/// # Safety
/// A non-zero `container` is a live tuple or list, as `slot` says.
unsafe fn item_of(container: usize, slot: Option<Slot>, index: usize) -> usize {
    let Some(slot) = slot else { return 0 };
    // SAFETY: caller's contract; the index is below the size.
    unsafe {
        if container == 0 || index >= layout::size(container) {
            0
        } else if slot == Slot::TupleIndex {
            layout::tuple_item(container, index)
        } else {
            layout::list_item(container, index)
        }
    }
}

#[cfg(test)]
mod tests;
