//! The C-API functions provenance follows, listed once: the GOT patcher,
//! the trampolines and the findings all index this table.
//!
//! New references from CPython's `Doc/data/refcounts.dat` ("+1" returns)
//! and the C-API reference; `_SizeT` variants are what `PY_SSIZE_T_CLEAN`
//! selects before 3.13. Borrowed and stolen references from the C-API
//! reference (refcounts.dat marks steals poorly); `PyList_GetItemRef`,
//! `PyImport_AddModuleRef` (3.13+) return strong references and are plain new
//! ones. Functions an interpreter lacks are simply never patched. Functions
//! that extensions store as type slots (`PyType_GenericNew`,
//! `PyType_GenericAlloc`) are left out: patching the `GLOB_DAT` slot that
//! holds their address would change their identity (docs/design.md §3.6).

/// Where, in a container, a reference lives: the container is the call's
/// first argument; for an index, the second argument is the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    TupleIndex,
    ListIndex,
    /// Any value of the dict (the key may be gone by the time it matters).
    DictValue,
    /// Any attribute of the module (a value of its dict).
    ModuleAttr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Returns a new (strong) reference.
    New,
    /// Returns a reference borrowed from a container.
    Borrowed(Slot),
    /// Takes the reference to its third argument into a container.
    Steals(Slot),
    /// `Py_BuildValue` and kin: a new reference, built from the format in
    /// the first argument, whose `N` units steal references into it.
    Builds,
    /// `PyArg_Parse*`: on success, lends the items of the argument tuple
    /// (first argument) to the extension.
    ParsesArguments,
    /// `PyObject_GetBuffer`: on success, the `Py_buffer` (second argument)
    /// holds a new reference to the exporter until `PyBuffer_Release`.
    FillsBuffer,
}

pub struct Api {
    pub name: &'static str,
    pub effect: Effect,
    /// Takes `...` (its arguments may be on the stack, and `al` counts the
    /// vector registers): only the shadow-stack trampoline can follow it.
    pub variadic: bool,
}

const fn new(name: &'static str) -> Api {
    Api { name, effect: Effect::New, variadic: false }
}

/// A variadic function returning a new reference.
const fn new_va(name: &'static str) -> Api {
    Api { name, effect: Effect::New, variadic: true }
}

const fn builds(name: &'static str, variadic: bool) -> Api {
    Api { name, effect: Effect::Builds, variadic }
}

const fn parses(name: &'static str, variadic: bool) -> Api {
    Api { name, effect: Effect::ParsesArguments, variadic }
}

const fn borrowed(name: &'static str, slot: Slot) -> Api {
    Api { name, effect: Effect::Borrowed(slot), variadic: false }
}

const fn steals(name: &'static str, slot: Slot) -> Api {
    Api { name, effect: Effect::Steals(slot), variadic: false }
}

/// Every followed function.
pub static APIS: &[Api] = &[
    // Numbers.
    new("PyLong_FromLong"),
    new("PyLong_FromUnsignedLong"),
    new("PyLong_FromLongLong"),
    new("PyLong_FromUnsignedLongLong"),
    new("PyLong_FromSsize_t"),
    new("PyLong_FromSize_t"),
    new("PyLong_FromDouble"),
    new("PyLong_FromVoidPtr"),
    new("PyLong_FromUnicodeObject"),
    new("PyLong_FromString"),
    new("PyFloat_FromDouble"),
    new("PyFloat_FromString"),
    new("PyComplex_FromDoubles"),
    new("PyNumber_Add"),
    new("PyNumber_Subtract"),
    new("PyNumber_Multiply"),
    new("PyNumber_TrueDivide"),
    new("PyNumber_FloorDivide"),
    new("PyNumber_Remainder"),
    new("PyNumber_Negative"),
    new("PyNumber_Long"),
    new("PyNumber_Float"),
    new("PyNumber_Index"),
    new("PyNumber_Power"),
    new("PyNumber_Absolute"),
    new("PyNumber_And"),
    new("PyNumber_Or"),
    new("PyNumber_Xor"),
    new("PyNumber_Lshift"),
    new("PyNumber_Rshift"),
    // Text and bytes.
    new("PyUnicode_FromString"),
    new("PyUnicode_FromStringAndSize"),
    new_va("PyUnicode_FromFormat"),
    new("PyUnicode_FromFormatV"),
    new("PyUnicode_FromWideChar"),
    new("PyUnicode_FromKindAndData"),
    new("PyUnicode_FromOrdinal"),
    new("PyUnicode_FromObject"),
    new("PyUnicode_New"),
    new("PyUnicode_DecodeUTF8"),
    new("PyUnicode_DecodeUTF8Stateful"),
    new("PyUnicode_DecodeUTF16"),
    new("PyUnicode_DecodeFSDefault"),
    new("PyUnicode_DecodeFSDefaultAndSize"),
    new("PyUnicode_FromEncodedObject"),
    new("PyUnicode_InternFromString"),
    new("PyUnicode_AsASCIIString"),
    new("PyUnicode_AsLatin1String"),
    new("PyUnicode_DecodeLatin1"),
    new("PyUnicode_DecodeASCII"),
    new("PyUnicode_AsUTF8String"),
    new("PyUnicode_AsEncodedString"),
    new("PyUnicode_Concat"),
    new("PyUnicode_Join"),
    new("PyUnicode_Split"),
    new("PyUnicode_Substring"),
    new("PyUnicode_Replace"),
    new("PyUnicode_Format"),
    new("PyBytes_FromString"),
    new("PyBytes_FromStringAndSize"),
    new_va("PyBytes_FromFormat"),
    new("PyBytes_FromObject"),
    new("PyByteArray_FromStringAndSize"),
    // Containers.
    new("PyTuple_New"),
    new_va("PyTuple_Pack"),
    new("PyTuple_GetSlice"),
    new("PyList_New"),
    new("PyList_GetSlice"),
    new("PyList_AsTuple"),
    new("PyDict_New"),
    new("PyDict_Copy"),
    new("PyDict_Keys"),
    new("PyDict_Values"),
    new("PyDict_Items"),
    new("PySet_New"),
    new("PyFrozenSet_New"),
    new("PySequence_List"),
    new("PySequence_Tuple"),
    new("PySequence_GetItem"),
    new("PySequence_GetSlice"),
    new("PySequence_Concat"),
    new("PySequence_Fast"),
    new("PyMapping_Keys"),
    new("PyMapping_Values"),
    new("PyMapping_Items"),
    new("PyObject_GetItem"),
    new("PyObject_GetIter"),
    new("PyIter_Next"),
    builds("Py_BuildValue", true),
    builds("_Py_BuildValue_SizeT", true),
    builds("Py_VaBuildValue", false),
    builds("_Py_VaBuildValue_SizeT", false),
    // Calls, attributes, conversions.
    new("PyObject_Call"),
    new("PyObject_CallObject"),
    new("PyObject_CallNoArgs"),
    new("PyObject_CallOneArg"),
    new_va("PyObject_CallFunction"),
    new_va("_PyObject_CallFunction_SizeT"),
    new_va("PyObject_CallMethod"),
    new_va("_PyObject_CallMethod_SizeT"),
    new_va("PyObject_CallFunctionObjArgs"),
    new_va("PyObject_CallMethodObjArgs"),
    new("PyObject_CallMethodNoArgs"),
    new("PyObject_CallMethodOneArg"),
    new("PyObject_Vectorcall"),
    new("PyObject_VectorcallMethod"),
    new("PyObject_VectorcallDict"),
    new("PyEval_CallObjectWithKeywords"),
    new("PyObject_GetAttr"),
    new("PyObject_GetAttrString"),
    new("PyObject_Repr"),
    new("PyObject_Str"),
    new("PyObject_ASCII"),
    new("PyObject_Bytes"),
    new("PyObject_Dir"),
    new("PyObject_RichCompare"),
    new("PyObject_Format"),
    new("PyObject_Type"),
    // Objects and modules.
    new("_PyObject_New"),
    new("_PyObject_NewVar"),
    new("_PyObject_GC_New"),
    new("_PyObject_GC_NewVar"),
    new("PyCapsule_New"),
    new("PyErr_NewException"),
    new("PyErr_NewExceptionWithDoc"),
    new("PyImport_ImportModule"),
    new("PyImport_Import"),
    new("PyImport_GetModule"),
    new("PyWeakref_NewRef"),
    new("PyMemoryView_FromObject"),
    new("PyMemoryView_FromMemory"),
    new("PySlice_New"),
    new("PyCell_New"),
    new("PyMethod_New"),
    new("PyInstanceMethod_New"),
    new("PyDictProxy_New"),
    // 3.13+: strong references where the older calls lend.
    new("PyList_GetItemRef"),
    new("PyImport_AddModuleRef"),
    // Borrowed references.
    borrowed("PyTuple_GetItem", Slot::TupleIndex),
    borrowed("PyList_GetItem", Slot::ListIndex),
    borrowed("PyDict_GetItem", Slot::DictValue),
    borrowed("PyDict_GetItemWithError", Slot::DictValue),
    borrowed("PyDict_GetItemString", Slot::DictValue),
    // Arguments lent by parsing ("O", "O!", "S", "U" and every other
    // object unit point into the argument tuple).
    parses("PyArg_ParseTuple", true),
    parses("_PyArg_ParseTuple_SizeT", true),
    parses("PyArg_VaParse", false),
    parses("_PyArg_VaParse_SizeT", false),
    parses("PyArg_ParseTupleAndKeywords", true),
    parses("_PyArg_ParseTupleAndKeywords_SizeT", true),
    parses("PyArg_VaParseTupleAndKeywords", false),
    parses("_PyArg_VaParseTupleAndKeywords_SizeT", false),
    parses("PyArg_UnpackTuple", true),
    // A Py_buffer's reference to its exporter, held until PyBuffer_Release.
    Api { name: "PyObject_GetBuffer", effect: Effect::FillsBuffer, variadic: false },
    // Stolen references.
    steals("PyTuple_SetItem", Slot::TupleIndex),
    steals("PyList_SetItem", Slot::ListIndex),
    // On success only (a failing call leaves the reference to the caller):
    // a non-zero result is not recorded.
    steals("PyModule_AddObject", Slot::ModuleAttr),
    // 3.13+: always steals; on success the value is in the module.
    steals("PyModule_Add", Slot::ModuleAttr),
];

/// Whether the followed function named `name` can hand the extension a
/// `Py_buffer` (`PyObject_GetBuffer`, or a parse whose format takes one):
/// a reference it returned is then a buffer's.
pub fn fills_buffers(name: &str) -> bool {
    APIS.iter().any(|a| a.name == name && matches!(a.effect, Effect::FillsBuffer | Effect::ParsesArguments))
}

/// The name of followed function `index`.
pub fn name(index: usize) -> &'static str {
    APIS.get(index).map_or("?", |a| a.name)
}

/// The index of `name` in the table.
pub fn index_of(name: &[u8]) -> Option<usize> {
    APIS.iter().position(|a| a.name.as_bytes() == name)
}
