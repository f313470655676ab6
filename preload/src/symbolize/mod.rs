//! Naming the source line of a call site: DWARF through `addr2line`, the
//! innermost frame outside CPython's headers (docs/design.md §5), else
//! `symbol+0xoff`. Runs on the reporter (never on the hot path); every
//! answer is cached by address.

mod cache;
mod debuginfo;

pub use cache::{
    function_and_increments, function_place, lines_of, name_tail_calls_with, place_of, places_of,
};

use crate::interpose::Watched;
use std::collections::HashMap;
use std::path::Path;

/// Where a return address is, as far as refwatch can tell.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Place {
    /// The watched object's file name; `None` when the address is outside
    /// every watched object (a tail call: the interpreter's return address).
    pub module: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub function: Option<String>,
}

#[derive(Default)]
pub struct Symbolizer {
    /// DWARF and symbols per object path; `None` when the file can't be read.
    loaders: HashMap<String, Option<addr2line::Loader>>,
    places: HashMap<usize, Place>,
    /// `increment_lines` per function entry: a walk of every byte of the
    /// function, asked again for each object its calls left references on.
    increments: HashMap<usize, Vec<u32>>,
}

impl Symbolizer {
    /// The place of `ra` if it was named before.
    pub fn cached(&self, ra: usize) -> Option<Place> {
        self.places.get(&ra).cloned()
    }

    /// The place of the call that returns to `ra`.
    pub fn place(&mut self, ra: usize, watched: &[Watched]) -> Place {
        if let Some(place) = self.places.get(&ra) {
            return place.clone();
        }
        let place = match watched.iter().find(|w| w.contains(ra)) {
            Some(object) => self.locate(object, ra),
            None => Place::default(),
        };
        self.places.insert(ra, place.clone());
        place
    }

    fn locate(&mut self, object: &Watched, ra: usize) -> Place {
        let mut place = Place { module: Some(object.basename().to_string()), ..Place::default() };
        let Some(loader) = self.loader(object) else { return place };
        // The call instruction ends at `ra`; `ra - 1` is inside it.
        let probe = (ra - 1 - object.bias) as u64;
        // The outermost function, for when every frame with a line is in a
        // CPython header.
        let mut outermost = None;
        if let Ok(mut frames) = loader.find_frames(probe) {
            while let Ok(Some(frame)) = frames.next() {
                let function =
                    frame.function.as_ref().and_then(|f| f.demangle().ok()).map(|f| f.into_owned());
                outermost = function.clone().or(outermost);
                let Some(location) = frame.location.as_ref() else { continue };
                let Some(file) = location.file else { continue };
                if is_cpython_header(file) {
                    continue;
                }
                place.file = Some(file.to_string());
                place.line = location.line;
                place.function = function;
                return place;
            }
        }
        let symbol = loader.find_symbol_info(probe).map(|s| (s.name().to_string(), s.address()));
        // Optimized code sometimes keeps no inline chain for a CPython
        // `static inline` helper: the call site is then the extension's
        // last line before it in the same function.
        if let (Some(function), Some((_, start))) = (outermost, &symbol) {
            if let Some((file, line)) = last_own_line(loader, *start, probe) {
                place.file = Some(file);
                place.line = Some(line);
                place.function = Some(function);
                return place;
            }
        }
        if let Some((name, start)) = symbol {
            place.function = Some(format!("{name}+{:#x}", probe + 1 - start));
        }
        place
    }
}

/// CPython's inline functions that take a reference.
const INCREMENTS: &[&str] = &[
    "Py_INCREF",
    "_Py_INCREF",
    "Py_XINCREF",
    "_Py_XINCREF",
    "Py_NewRef",
    "_Py_NewRef",
    "Py_XNewRef",
    "_Py_XNewRef",
];

/// Bytes of code read per function at most when looking for its increments.
const MAX_FUNCTION: u64 = 1 << 16;

impl Symbolizer {
    /// The lines of the function at `function` (its entry address, in a
    /// watched object) where DWARF places an inlined `Py_INCREF` (or
    /// `Py_XINCREF`, `Py_NewRef`): where a reference it takes may be.
    pub fn increment_lines(&mut self, function: usize, watched: &[Watched]) -> Vec<u32> {
        if let Some(lines) = self.increments.get(&function) {
            return lines.clone();
        }
        let lines = self.walk_increment_lines(function, watched);
        self.increments.insert(function, lines.clone());
        lines
    }

    fn walk_increment_lines(&mut self, function: usize, watched: &[Watched]) -> Vec<u32> {
        let Some(object) = watched.iter().find(|w| w.contains(function)) else { return Vec::new() };
        let Some(loader) = self.loader(object) else { return Vec::new() };
        let start = (function - object.bias) as u64;
        // The function whose lines are read: the outermost one at its entry.
        let mut name: Option<String> = None;
        let mut lines = std::collections::BTreeSet::new();
        // Every byte: an inlined increment's range need not start at a
        // line-table row (gcc schedules its instruction among others).
        for address in start..start + MAX_FUNCTION {
            let Ok(mut frames) = loader.find_frames(address) else { break };
            let (mut increment, mut own_line, mut outermost) = (false, None, None);
            while let Ok(Some(frame)) = frames.next() {
                let function = frame.function.as_ref().and_then(|f| f.raw_name().ok());
                increment |= function.as_ref().is_some_and(|f| INCREMENTS.contains(&f.as_ref()));
                outermost = function.map(|f| f.into_owned()).or(outermost);
                let location = frame.location.as_ref();
                if own_line.is_none() && location.and_then(|l| l.file).is_some_and(|f| !is_cpython_header(f))
                {
                    own_line = location.and_then(|l| l.line);
                }
            }
            if outermost.is_none() || (name.is_some() && outermost != name) {
                break; // no function here, or past the end of this one
            }
            name = outermost;
            if let (true, Some(line)) = (increment, own_line) {
                lines.insert(line);
            }
        }
        lines.into_iter().collect()
    }

    fn loader(&mut self, object: &Watched) -> Option<&addr2line::Loader> {
        self.loaders
            .entry(object.path.clone())
            .or_insert_with(|| addr2line::Loader::new(debuginfo::dwarf_file(Path::new(&object.path))).ok())
            .as_ref()
    }
}

/// The last line outside CPython's headers that the line table gives for
/// an address in `start..=probe` (one function's code up to the call).
fn last_own_line(loader: &addr2line::Loader, start: u64, probe: u64) -> Option<(String, u32)> {
    let mut last = None;
    for (address, _, location) in loader.find_location_range(start, probe + 1).ok()? {
        if address > probe {
            break;
        }
        if let (Some(file), Some(line)) = (location.file, location.line) {
            if !is_cpython_header(file) {
                last = Some((file.to_string(), line));
            }
        }
    }
    last
}

/// True for CPython's own headers (`.../include/python3.12/object.h`,
/// `.../include/python3.13d/cpython/...`, or a source tree's `Include/`):
/// the inlined `Py_DECREF` lives there, its caller is the line to name.
pub fn is_cpython_header(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    parts.windows(2).any(|w| w[0] == "include" && w[1].starts_with("python")) || parts.contains(&"Include")
}

#[cfg(test)]
mod tests {
    use super::is_cpython_header;

    #[test]
    fn headers() {
        assert!(is_cpython_header("/usr/include/python3.11/object.h"));
        assert!(is_cpython_header("/root/.pyenv/versions/3.12.1/include/python3.12/cpython/object.h"));
        assert!(is_cpython_header("/x/cpython-3.13-trace/include/python3.13d/refcount.h"));
        assert!(is_cpython_header("/src/cpython/Include/object.h"));
        assert!(!is_cpython_header("/work/ext/fixture.c"));
        assert!(!is_cpython_header("/usr/include/stdio.h"));
    }
}
