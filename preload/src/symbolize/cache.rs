//! The process's one symbolizer, shared by the reports and the findings:
//! every address is named once and the answer kept.

use super::{Place, Symbolizer};
use crate::interpose::{self, Watched};
use std::sync::{Mutex, OnceLock};

static SYMBOLIZER: Mutex<Option<Symbolizer>> = Mutex::new(None);

/// Answers whether a return address is a method's tail call, and then the
/// method's entry (handed in at start by the agent's doors: which calls are
/// tail calls is known where methods are followed, above this floor).
static TAIL_CALLS: OnceLock<fn(usize) -> Option<usize>> = OnceLock::new();

/// Names a method's tail calls at the method: `function_of(ra)` is the
/// method's entry when `ra` is the return address of one of its tail calls.
pub fn name_tail_calls_with(function_of: fn(usize) -> Option<usize>) {
    let _ = TAIL_CALLS.set(function_of);
}

/// `f` with the symbolizer (made on first use) locked.
fn with<T>(f: impl FnOnce(&mut Symbolizer) -> T) -> T {
    let mut symbolizer = SYMBOLIZER.lock().unwrap_or_else(|e| e.into_inner());
    f(symbolizer.get_or_insert_with(Symbolizer::default))
}

/// The place of a return address (symbolized once, cached).
pub fn place_of(ra: usize) -> Place {
    // The leak check asks once per object: most sites are named already,
    // and only a miss needs the list of watched objects.
    with(|symbolizer| symbolizer.cached(ra).unwrap_or_else(|| locate(symbolizer, ra, &interpose::watched())))
}

/// The places of many return addresses, under one lock.
pub fn places_of(ras: impl IntoIterator<Item = usize>) -> Vec<Place> {
    let watched = interpose::watched();
    with(|symbolizer| ras.into_iter().map(|ra| locate(symbolizer, ra, &watched)).collect())
}

/// The place of `ra`; a method's tail call is named at the method's
/// function.
fn locate(symbolizer: &mut Symbolizer, ra: usize, watched: &[Watched]) -> Place {
    match TAIL_CALLS.get().and_then(|function_of| function_of(ra)) {
        Some(function) => place_of_entry(symbolizer, function, watched),
        None => symbolizer.place(ra, watched),
    }
}

/// The place of the function at `function` (an entry address).
fn place_of_entry(symbolizer: &mut Symbolizer, function: usize, watched: &[Watched]) -> Place {
    // The entry address is the "return address" of nothing: name the
    // instruction at it (a return address names the one before).
    symbolizer.place(function + 1, watched)
}

/// The place of the function at `function` (an entry address; cached).
pub fn function_place(function: usize) -> Place {
    with(|symbolizer| place_of_entry(symbolizer, function, &interpose::watched()))
}

/// The function at `function` (an entry address) and the lines in it
/// where DWARF places an inlined `Py_INCREF`.
pub fn function_and_increments(function: usize) -> (Place, Vec<u32>) {
    let watched = interpose::watched();
    with(|symbolizer| {
        (place_of_entry(symbolizer, function, &watched), symbolizer.increment_lines(function, &watched))
    })
}

/// The distinct source lines, in watched objects, of the instructions
/// before `ips` (each the instruction after an access a watchpoint saw).
pub fn lines_of(ips: impl IntoIterator<Item = usize>) -> Vec<Place> {
    let mut places: Vec<Place> =
        ips.into_iter().map(place_of).filter(|p| p.module.is_some() && p.line.is_some()).collect();
    places.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    places.dedup_by(|a, b| (&a.file, a.line) == (&b.file, b.line));
    places
}
