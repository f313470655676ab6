//! Per-build facts about the running interpreter, in one place: the rest of
//! refwatch asks questions (`flavour.debug`) and never compares versions.

use super::api::{api, lookup};
use crate::interpose::elf;
use refwatch_model::Flavour;

/// Detects the build from what the interpreter exports, and records its
/// object layout for `layout`.
pub fn flavour() -> Flavour {
    // Free-threaded builds (Py_GIL_DISABLED) merge per-thread refcounts.
    let gil = lookup(c"_Py_MergeZeroLocalRefcount").is_none();
    let header = object_header_size();
    if gil {
        let minor = api().map(|a| a.version()).and_then(|v| v.split('.').nth(1)?.parse().ok()).unwrap_or(0);
        super::layout::set_header_extra(header.map_or(0, |h| h - PLAIN_HEADER), minor);
    }
    Flavour {
        // Defined under Py_REF_DEBUG only, in every version of the matrix.
        debug: lookup(c"_Py_NegativeRefcount").is_some(),
        trace_refs: gil && (header == Some(TRACE_REFS_HEADER) || sys_has(c"getobjects")),
        shared_libpython: elf::loaded_objects().iter().any(|o| o.basename().starts_with("libpython")),
        gil,
    }
}

/// `sizeof(PyObject)`: refcount and type, plus the refchain's two links
/// under Py_TRACE_REFS up to 3.12. (No trace-refs-only function is exported,
/// so the layout tells there; 3.13+ keeps the refchain in a hash table, and
/// only `sys.getobjects` tells.)
const PLAIN_HEADER: usize = 16;
const TRACE_REFS_HEADER: usize = 32;

/// Reads `PyBaseObject_Type.tp_basicsize`, which is `sizeof(PyObject)`.
/// `PyTypeObject` starts with a `PyVarObject` (the object header and
/// `ob_size`), then `tp_name`, then `tp_basicsize`; where that field is
/// depends on the header size being found, so each candidate is checked at
/// its own offset.
fn object_header_size() -> Option<usize> {
    let object_type = lookup(c"PyBaseObject_Type")? as *const usize;
    [PLAIN_HEADER, TRACE_REFS_HEADER].into_iter().find(|&header| {
        let basicsize_offset = header + 8 + 8; // ob_size, tp_name
                                               // SAFETY: PyBaseObject_Type is a static PyTypeObject (hundreds of
                                               // bytes) exported by every interpreter; both offsets lie well inside
                                               // it and are 8-byte aligned.
        let value = unsafe { object_type.byte_add(basicsize_offset).read() };
        value == header
    })
}

/// Whether the `sys` module has `name`, when this thread may ask (it holds
/// the GIL while Python imports an extension, which is when refwatch starts).
fn sys_has(name: &std::ffi::CStr) -> bool {
    // SAFETY: PySys_GetObject only reads the sys dict; can_run_python
    // guarantees this thread holds the GIL of a running interpreter. It
    // returns a borrowed reference (or NULL, without raising) that is only
    // compared with NULL.
    api()
        .filter(|a| a.can_run_python())
        .is_some_and(|a| unsafe { !(a.sys_get_object)(name.as_ptr()).is_null() })
}
