//! The loader's search for a bare library name, redone for the caller of
//! `dlopen` (refwatch's own `dlopen` is the one the loader sees calling).

use super::objects;
use std::ffi::{c_char, CStr, CString};

/// Calling dlopen from refwatch makes the loader search refwatch's RUNPATH
/// instead of the caller's. For a bare name, redo the caller's DT_RPATH /
/// LD_LIBRARY_PATH / DT_RUNPATH part of the search, in the loader's order;
/// `None` leaves the rest (cache, default dirs) to the real dlopen.
pub fn caller_search(filename: *const c_char, caller: usize) -> Option<CString> {
    if filename.is_null() {
        return None;
    }
    // SAFETY: dlopen's contract: a non-null filename is a C string.
    let name = unsafe { CStr::from_ptr(filename) }.to_str().ok()?;
    if name.contains('/') || name.is_empty() {
        return None;
    }
    let object = objects::object_at(caller)?;
    // SAFETY: the caller is executing in this object, so it is loaded.
    let (dirs, is_runpath) = unsafe { object.dynamic()?.search_path()? };
    let origin = match object.path.as_str() {
        "" => std::fs::read_link("/proc/self/exe").ok()?.to_string_lossy().into_owned(),
        p => p.to_string(),
    };
    let origin = origin.rsplit_once('/').map_or(".", |(d, _)| d).to_string();
    let expand = |d: &str| d.replace("${ORIGIN}", &origin).replace("$ORIGIN", &origin);
    let env_dirs = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    let own: Vec<String> = dirs.split(':').map(expand).collect();
    let ordered: Vec<String> = if is_runpath {
        env_dirs.split(':').map(str::to_string).chain(own).collect()
    } else {
        own.into_iter().chain(env_dirs.split(':').map(str::to_string)).collect()
    };
    ordered
        .iter()
        .filter(|d| !d.is_empty())
        .map(|d| format!("{d}/{name}"))
        .find(|p| std::path::Path::new(p).exists())
        .and_then(|p| CString::new(p).ok())
}
