//! Which loaded objects refwatch may watch (docs/design.md §3.4): those that import
//! the C-API — extension modules and the libraries they pull in — but never
//! the interpreter itself, the loader, the vdso, or refwatch.

use super::elf::{Dynamic, Loaded};

/// What an object is, as far as watching goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Never watched: the interpreter, the loader, refwatch, or an object
    /// that does not use the C-API.
    Never,
    /// Imports the C-API. `stdlib`: one of the interpreter's own modules.
    Candidate { stdlib: bool },
}

/// Classifies `object`.
///
/// # Safety
/// `object` must be loaded and `dynamic` be its tables.
pub unsafe fn classify(object: &Loaded, dynamic: &Dynamic) -> Verdict {
    let name = object.basename();
    let interpreter_or_loader = object.path.is_empty() // the executable
        || name.starts_with("libpython")
        || name.starts_with("ld-linux")
        || name.starts_with("linux-vdso")
        || name.starts_with("linux-gate");
    if interpreter_or_loader || object.contains(self_address()) {
        return Verdict::Never;
    }
    let mut uses_c_api = false;
    // SAFETY: forwarded from the caller.
    unsafe {
        dynamic.for_each_import(|i| {
            uses_c_api |= i.undefined && (i.name.starts_with(b"Py") || i.name.starts_with(b"_Py"));
        });
    }
    if !uses_c_api {
        return Verdict::Never;
    }
    // Every layout in the matrix keeps the stdlib's extension modules in a
    // `lib-dynload` directory (pyenv, Debian, the source build).
    Verdict::Candidate { stdlib: object.path.contains("/lib-dynload/") }
}

/// An address inside librefwatch.so.
fn self_address() -> usize {
    self_address as fn() -> usize as usize
}
