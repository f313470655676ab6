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
//! compares. A static type's slots are wrapped when the extension readies
//! it (`PyType_Ready`), a heap type's in its spec before the interpreter
//! copies them (`PyType_From*Spec*`); a slot table two types share is
//! wrapped once. `tp_dealloc` is left to the death stubs, which already
//! stand there for the types whose objects are followed.

use super::{wrap_function, METH_NOARGS, METH_O, METH_VARARGS};
use crate::python::layout;
use std::ffi::c_int;

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
    if crate::interpose::watched().iter().any(|w| w.contains(function)) {
        wrap_function(slot, function, flags);
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
