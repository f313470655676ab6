//! Per-build facts about the running interpreter, in one place: the rest of
//! refwatch asks questions (`flavour.debug`) and never compares versions.

use super::api::lookup;
use crate::interpose::elf;
use refwatch_model::Flavour;

/// Detects the build from what the interpreter exports (no GIL needed).
pub fn flavour() -> Flavour {
    Flavour {
        // Defined under Py_REF_DEBUG only, in every version of the matrix.
        debug: lookup(c"_Py_NegativeRefcount").is_some(),
        // Defined under Py_TRACE_REFS only.
        trace_refs: lookup(c"_Py_PrintReferences").is_some(),
        shared_libpython: elf::loaded_objects().iter().any(|o| o.basename().starts_with("libpython")),
        // Free-threaded builds (Py_GIL_DISABLED) merge per-thread refcounts.
        gil: lookup(c"_Py_MergeZeroLocalRefcount").is_none(),
    }
}
