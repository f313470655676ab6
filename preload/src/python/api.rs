//! The handful of C-API functions refwatch itself calls, looked up in the
//! running interpreter (executable or libpython) once.
//!
//! refwatch is not linked against any libpython: one library serves every
//! interpreter, so every function is found by name at run time.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

pub type PyObject = c_void;

/// `PyMethodDef`, stable across every version in the matrix.
#[repr(C)]
pub struct MethodDef {
    pub name: *const c_char,
    pub meth: unsafe extern "C" fn(*mut PyObject, *mut PyObject) -> *mut PyObject,
    pub flags: c_int,
    pub doc: *const c_char,
}

pub const METH_NOARGS: c_int = 0x0004;
pub const PY_FILE_INPUT: c_int = 257;
pub const PY_EVAL_INPUT: c_int = 258;

macro_rules! api {
    ($( $field:ident : $sym:literal => fn($($arg:ty),*) $(-> $ret:ty)? ),* $(,)?) => {
        /// Resolved C-API functions.
        pub struct Api {
            $( pub $field: unsafe extern "C" fn($($arg),*) $(-> $ret)?, )*
            /// `Py_IsFinalizing` (3.13+) or `_Py_IsFinalizing` (before).
            pub is_finalizing: unsafe extern "C" fn() -> c_int,
            /// `&_Py_NoneStruct`.
            pub none: *mut PyObject,
        }

        fn resolve() -> Option<Api> {
            Some(Api {
                // SAFETY: each symbol, when present, is the C-API function of
                // that name, whose signature is the one declared here.
                $( $field: unsafe {
                    std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($arg),*) $(-> $ret)?>(lookup($sym)?)
                }, )*
                // SAFETY: as above; both names share one signature.
                is_finalizing: unsafe {
                    std::mem::transmute::<*mut c_void, unsafe extern "C" fn() -> c_int>(
                        lookup(c"Py_IsFinalizing").or_else(|| lookup(c"_Py_IsFinalizing"))?,
                    )
                },
                none: lookup(c"_Py_NoneStruct")?,
            })
        }
    };
}

api! {
    get_version: c"Py_GetVersion" => fn() -> *const c_char,
    is_initialized: c"Py_IsInitialized" => fn() -> c_int,
    gil_check: c"PyGILState_Check" => fn() -> c_int,
    add_pending_call: c"Py_AddPendingCall" =>
        fn(unsafe extern "C" fn(*mut c_void) -> c_int, *mut c_void) -> c_int,
    dict_new: c"PyDict_New" => fn() -> *mut PyObject,
    err_clear: c"PyErr_Clear" => fn(),
    dict_set_item_string: c"PyDict_SetItemString" =>
        fn(*mut PyObject, *const c_char, *mut PyObject) -> c_int,
    eval_get_builtins: c"PyEval_GetBuiltins" => fn() -> *mut PyObject,
    cfunction_new_ex: c"PyCFunction_NewEx" =>
        fn(*const MethodDef, *mut PyObject, *mut PyObject) -> *mut PyObject,
    run_string_flags: c"PyRun_StringFlags" =>
        fn(*const c_char, c_int, *mut PyObject, *mut PyObject, *mut c_void) -> *mut PyObject,
    err_occurred: c"PyErr_Occurred" => fn() -> *mut PyObject,
    err_fetch: c"PyErr_Fetch" => fn(*mut *mut PyObject, *mut *mut PyObject, *mut *mut PyObject),
    err_restore: c"PyErr_Restore" => fn(*mut PyObject, *mut PyObject, *mut PyObject),
    unicode_as_utf8: c"PyUnicode_AsUTF8" => fn(*mut PyObject) -> *const c_char,
    sys_get_object: c"PySys_GetObject" => fn(*const c_char) -> *mut PyObject,
    dict_next: c"PyDict_Next" =>
        fn(*mut PyObject, *mut isize, *mut *mut PyObject, *mut *mut PyObject) -> c_int,
    eval_get_frame: c"PyEval_GetFrame" => fn() -> *mut PyObject,
    frame_get_line_number: c"PyFrame_GetLineNumber" => fn(*mut PyObject) -> c_int,
    frame_get_code: c"PyFrame_GetCode" => fn(*mut PyObject) -> *mut PyObject,
    object_get_attr_string: c"PyObject_GetAttrString" => fn(*mut PyObject, *const c_char) -> *mut PyObject,
    is_gc: c"PyObject_IS_GC" => fn(*mut PyObject) -> c_int,
    type_clear_cache: c"PyType_ClearCache" => fn() -> u32,
    gc_is_tracked: c"PyObject_GC_IsTracked" => fn(*mut PyObject) -> c_int,
    gc_track: c"PyObject_GC_Track" => fn(*mut PyObject),
    gc_untrack: c"PyObject_GC_UnTrack" => fn(*mut PyObject),
    incref: c"Py_IncRef" => fn(*mut PyObject),
    decref: c"Py_DecRef" => fn(*mut PyObject),
}

// SAFETY: the pointers are addresses of the interpreter's functions and of
// its `None` singleton: immutable for the life of the process.
unsafe impl Send for Api {}
// SAFETY: as above.
unsafe impl Sync for Api {}

/// Looks `name` up in the global scope (the interpreter's exports).
pub fn lookup(name: &CStr) -> Option<*mut c_void> {
    // SAFETY: `name` is a valid C string; dlsym has no other precondition.
    let address = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!address.is_null()).then_some(address)
}

/// The address of the interpreter's export `name`, or 0 when it has none
/// (a function or type of another version).
pub fn export(name: &CStr) -> usize {
    lookup(name).map_or(0, |a| a as usize)
}

/// `export` for a name in a Rust string (the tables resolved at start).
pub fn address_of(name: &str) -> usize {
    export(&std::ffi::CString::new(name).expect("C-API names have no NUL"))
}

/// The C-API, or `None` when this process has no (recognisable) interpreter.
pub fn api() -> Option<&'static Api> {
    static API: OnceLock<Option<Api>> = OnceLock::new();
    API.get_or_init(resolve).as_ref()
}

impl Api {
    /// True when the calling thread may run Python code right now: the
    /// interpreter is initialized, not finalizing, and this thread holds the
    /// GIL.
    pub fn can_run_python(&self) -> bool {
        // SAFETY: these three functions take no arguments and may be called
        // from any thread at any time after the interpreter is loaded.
        unsafe { (self.is_initialized)() != 0 && (self.is_finalizing)() == 0 && (self.gil_check)() != 0 }
    }

    /// The interpreter's version, e.g. `3.12.1`.
    pub fn version(&self) -> String {
        // SAFETY: Py_GetVersion returns a static NUL-terminated string.
        let full = unsafe { CStr::from_ptr((self.get_version)()) }.to_string_lossy();
        full.split_whitespace().next().unwrap_or_default().to_string()
    }
}
