//! The functions an extension's types hand the interpreter in their slots,
//! wrapped like the methods of its tables: `tp_init`, `tp_new`, `tp_call`,
//! `tp_iternext`, `tp_richcompare`, `tp_setattro`, a mapping's
//! `mp_ass_subscript`, a sequence's `sq_ass_item` and the setters of its
//! `tp_getset`. A reference one of them keeps on what it was called with is
//! then noted as a method's is (`provenance::growth`).
//!
//! Only functions of the watched extensions themselves are wrapped: a slot
//! that names one of the interpreter's own (`PyType_GenericNew`,
//! `PyObject_GenericSetAttr`) keeps its identity, which the interpreter
//! compares. So does a function whose address the extension's code takes
//! (`if (type->tp_init == my_init)`, a function passed as a pointer): its
//! code is scanned once for RIP-relative `lea`s, which is how position-
//! independent code takes a function's address (a byte pattern read as one
//! by chance only keeps a function unwrapped). A static type's slots are wrapped when the extension readies
//! it (`PyType_Ready`), a heap type's in its spec before the interpreter
//! copies them (`PyType_From*Spec*`); a slot table two types share is
//! wrapped once. `tp_dealloc` is wrapped too, to see which members an
//! instance's deallocator leaves unreleased; a deallocator that uses the
//! trashcan names itself (`Py_TRASHCAN_BEGIN(self, my_dealloc)`), so its
//! address is taken in code and it keeps its identity (see below).

use super::{wrap_function, METH_NOARGS, METH_O, METH_VARARGS};
use crate::python::layout;
use std::collections::{HashMap, HashSet};
use std::ffi::c_int;
use std::sync::Mutex;

/// Calling conventions of slots, beyond the `METH_*` flags (bits no
/// `PyMethodDef` uses).
/// `(self, a, b)`, three objects (b may be NULL: a deletion).
pub const TWO_OBJECTS: u32 = 1 << 24;
/// `(self, Py_ssize_t index, value)`.
pub const INDEX_AND_OBJECT: u32 = 1 << 25;
/// The first argument is not an object the call may keep (`tp_new`'s type:
/// every instance of a heap type holds one, from a place no walk sees).
pub const NO_SELF: u32 = 1 << 26;
/// Returns an int, not an object.
pub const RETURNS_INT: u32 = 1 << 27;
/// `tp_dealloc(self)`: the members of `self` a call left references on are
/// looked at before and after (`methods::dealloc_enter`), not `self`.
pub const DEALLOC: u32 = 1 << 28;

/// A slot of `PyTypeObject`: its word (after the object header), its
/// `Py_*` id in a `PyType_Spec`, and how its function is called.
struct TypeSlot {
    word: usize,
    spec_id: c_int,
    flags: u32,
}

const TYPE_SLOTS: &[TypeSlot] = &[
    TypeSlot { word: 34, spec_id: 60, flags: METH_VARARGS | RETURNS_INT }, // tp_init
    TypeSlot { word: 36, spec_id: 65, flags: METH_VARARGS | NO_SELF },     // tp_new
    TypeSlot { word: 13, spec_id: 50, flags: METH_VARARGS },               // tp_call
    TypeSlot { word: 25, spec_id: 63, flags: METH_NOARGS },                // tp_iternext
    TypeSlot { word: 22, spec_id: 67, flags: METH_O },                     // tp_richcompare
    TypeSlot { word: 16, spec_id: 69, flags: TWO_OBJECTS | RETURNS_INT },  // tp_setattro
    TypeSlot { word: 3, spec_id: 52, flags: DEALLOC | RETURNS_INT },       // tp_dealloc
];

/// A slot of a table a type points at: the type's word pointing at the
/// table, the slot's word in it, its `Py_*` id, how it is called.
const TABLE_SLOTS: &[(usize, usize, c_int, u32)] = &[
    (11, 2, 3, TWO_OBJECTS | RETURNS_INT), // tp_as_mapping->mp_ass_subscript
    (10, 5, 39, INDEX_AND_OBJECT | RETURNS_INT), // tp_as_sequence->sq_ass_item
];

/// `tp_getset`: its word, its `Py_*` id; a setter is `set(self, value,
/// closure)`, the third word of each 40-byte `PyGetSetDef`.
const GETSET_WORD: usize = 28;
const GETSET_SPEC_ID: c_int = 73;
const SETTER: u32 = METH_O | RETURNS_INT;

/// Entries read from one getset table at most (tables end with a NULL name).
const MAX_GETSETS: usize = 1024;

/// Wraps the function at `slot` if it is one of a watched extension's own.
///
/// # Safety
/// `slot` is a readable, aligned function-pointer field of a type, a slot
/// table or a spec.
unsafe fn wrap(slot: usize, flags: u32) {
    // SAFETY: caller's contract.
    let function = unsafe { (slot as *const usize).read() };
    if function == 0 || super::stubs::index_of(function).is_some() {
        return;
    }
    if crate::interpose::watched().iter().any(|w| w.contains(function)) && !address_taken_in_code(function) {
        wrap_function(slot, function, flags);
    }
}

/// Per loaded object (by load bias), the addresses its code takes with a
/// RIP-relative `lea`.
static TAKEN: Mutex<Option<HashMap<usize, HashSet<usize>>>> = Mutex::new(None);

/// Whether the code of the object `function` lies in takes its address.
fn address_taken_in_code(function: usize) -> bool {
    let Some(object) = crate::interpose::objects::object_at(function) else { return true };
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    let by_object = taken.get_or_insert_with(HashMap::new);
    let addresses = by_object.entry(object.bias).or_insert_with(|| {
        let mut addresses = HashSet::new();
        for range in object.executable_ranges() {
            // SAFETY: the executable segment of a loaded object is mapped
            // and readable for its whole length.
            let code = unsafe { std::slice::from_raw_parts(range.start as *const u8, range.len()) };
            lea_targets(code, range.start, &mut addresses);
        }
        addresses
    });
    addresses.contains(&function)
}

/// Adds to `out` the target of every `lea r64, [rip + disp32]` in `code`
/// (at `address`): a REX.W prefix (0x48 to 0x4f), 0x8d, a ModRM byte with
/// mod 00 and r/m 101, then the displacement from the next instruction.
fn lea_targets(code: &[u8], address: usize, out: &mut HashSet<usize>) {
    for (i, window) in code.windows(7).enumerate() {
        if window[0] & 0xf8 == 0x48 && window[1] == 0x8d && window[2] & 0xc7 == 0x05 {
            let displacement = i32::from_le_bytes([window[3], window[4], window[5], window[6]]);
            let next = address + i + 7;
            out.insert(next.wrapping_add_signed(displacement as isize));
        }
    }
}

/// Wraps the setters of a `PyGetSetDef` table.
///
/// # Safety
/// `table` is NULL or a NULL-terminated `PyGetSetDef` table.
unsafe fn wrap_setters(table: usize) {
    if table == 0 {
        return;
    }
    for i in 0..MAX_GETSETS {
        let entry = table + 40 * i;
        // SAFETY: within the table (caller's contract): it ends at a NULL
        // name; `set` is its third word.
        unsafe {
            if (entry as *const usize).read() == 0 {
                return;
            }
            wrap(entry + 16, SETTER);
        }
    }
}

/// Wraps the slots of a static type being readied.
///
/// # Safety
/// `type_object` is a type object being readied by `PyType_Ready`.
pub unsafe fn wrap_type(type_object: usize) {
    // SAFETY: the words read are fields of the type object or of the slot
    // tables it points at (caller's contract).
    unsafe {
        for slot in TYPE_SLOTS {
            wrap(layout::type_field(type_object, slot.word), slot.flags);
        }
        for &(table_word, word, _, flags) in TABLE_SLOTS {
            let table = (layout::type_field(type_object, table_word) as *const usize).read();
            if table != 0 {
                wrap(table + 8 * word, flags);
            }
        }
        wrap_setters((layout::type_field(type_object, GETSET_WORD) as *const usize).read());
    }
}

/// Wraps the function of one slot of a `PyType_Spec`, `pfunc` the address
/// of its function pointer, if it is a slot wrapped here.
///
/// # Safety
/// `pfunc` is the `pfunc` field of a `PyType_Slot` with id `id`.
pub unsafe fn wrap_spec_slot(id: c_int, pfunc: usize) {
    // SAFETY: caller's contract; the getset table is the slot's value.
    unsafe {
        if let Some(slot) = TYPE_SLOTS.iter().find(|s| s.spec_id == id) {
            wrap(pfunc, slot.flags);
        } else if let Some(&(_, _, _, flags)) = TABLE_SLOTS.iter().find(|s| s.2 == id) {
            wrap(pfunc, flags);
        } else if id == GETSET_SPEC_ID {
            wrap_setters((pfunc as *const usize).read());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::lea_targets;
    use std::collections::HashSet;

    #[test]
    fn a_rip_relative_lea_gives_its_target_and_other_bytes_do_not() {
        // lea rax, [rip + 0x10]; lea r8, [rip - 4]; mov rax, [rip + 0x10];
        // lea rax, [rax + 0x10] (not RIP-relative).
        let code = [
            0x48, 0x8d, 0x05, 0x10, 0x00, 0x00, 0x00, //
            0x4c, 0x8d, 0x05, 0xfc, 0xff, 0xff, 0xff, //
            0x48, 0x8b, 0x05, 0x10, 0x00, 0x00, 0x00, //
            0x48, 0x8d, 0x40, 0x10, 0x90, 0x90, 0x90,
        ];
        let mut targets = HashSet::new();
        lea_targets(&code, 0x1000, &mut targets);
        assert_eq!(targets, HashSet::from([0x1000 + 7 + 0x10, 0x1000 + 14 - 4]));
    }
}
