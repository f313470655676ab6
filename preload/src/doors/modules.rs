//! `REFWATCH_MODULES` globs that never matched: a mistyped glob watches
//! nothing and would otherwise look like a clean run. Which globs matched
//! is noted as each object that uses the C-API is classified (a cold path,
//! once per object); at exit, the process that read the settings names
//! those that matched nothing, in one line on stderr, whether or not
//! refwatch started. Processes that never load an object using the C-API
//! (shells, `ls`) never classify one and stay silent, as do forked copies
//! (the parent speaks for them).

use crate::sys;
use refwatch_model::{glob, ModuleFilter};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, Once};

/// Per glob of the filter: whether some object matched it.
static MATCHED: Mutex<Vec<bool>> = Mutex::new(Vec::new());
/// The process that classified objects (0: none yet).
static PID: AtomicU32 = AtomicU32::new(0);
static TOLD: Once = Once::new();

/// Notes which globs `basename` matches.
pub fn classified(filter: &ModuleFilter, basename: &str) {
    let ModuleFilter::Globs(globs) = filter else { return };
    let _ = PID.compare_exchange(0, sys::getpid(), Ordering::Relaxed, Ordering::Relaxed);
    let mut matched = MATCHED.lock().unwrap_or_else(|e| e.into_inner());
    matched.resize(globs.len(), false);
    for (seen, g) in matched.iter_mut().zip(globs) {
        *seen |= glob::matches(g, basename);
    }
}

/// At exit: one line naming the globs that matched nothing, once.
pub fn tell_unmatched(filter: &ModuleFilter) {
    let ModuleFilter::Globs(globs) = filter else { return };
    if PID.load(Ordering::Relaxed) != sys::getpid() {
        return;
    }
    TOLD.call_once(|| {
        let matched = MATCHED.lock().unwrap_or_else(|e| e.into_inner());
        let unmatched: Vec<String> =
            globs.iter().zip(matched.iter()).filter(|(_, &m)| !m).map(|(g, _)| format!("{g:?}")).collect();
        if !unmatched.is_empty() {
            sys::warn(format_args!(
                "REFWATCH_MODULES: {} matched no loaded object that uses the Python C-API",
                unmatched.join(", ")
            ));
        }
    });
}
