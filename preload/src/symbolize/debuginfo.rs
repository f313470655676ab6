//! Finding the file that holds an object's DWARF: the object itself, or a
//! separate debug file found by build-id or `.gnu_debuglink` (what Debian's
//! `-dbgsym` packages install). `addr2line` does not follow either.

use object::{Object, ObjectSection};
use std::path::{Path, PathBuf};

const DEBUG_ROOT: &str = "/usr/lib/debug";

/// The file to read DWARF (and the full symbol table) from for `path`.
pub fn dwarf_file(path: &Path) -> PathBuf {
    separate_debug_file(path).unwrap_or_else(|| path.to_path_buf())
}

fn separate_debug_file(path: &Path) -> Option<PathBuf> {
    let data = std::fs::read(path).ok()?;
    let file = object::File::parse(&*data).ok()?;
    if file.section_by_name(".debug_info").is_some_and(|s| s.size() > 0) {
        return None;
    }
    if let Ok(Some(id)) = file.build_id() {
        if let Some((first, rest)) = id.split_first() {
            let hex: String = rest.iter().map(|b| format!("{b:02x}")).collect();
            let candidate = PathBuf::from(format!("{DEBUG_ROOT}/.build-id/{first:02x}/{hex}.debug"));
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    // The debuglink CRC is not checked: a stale file would at worst name
    // wrong lines, and build-id (checked first) is what distributions use.
    let (name, _crc) = file.gnu_debuglink().ok()??;
    let name = std::str::from_utf8(name).ok()?;
    let dir = path.parent()?;
    let relative_dir = dir.strip_prefix("/").unwrap_or(dir);
    [dir.join(name), dir.join(".debug").join(name), Path::new(DEBUG_ROOT).join(relative_dir).join(name)]
        .into_iter()
        .find(|candidate| candidate.is_file() && candidate != path)
}
