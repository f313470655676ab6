//! The objects refwatch has looked at, and those it watches.

use super::elf::{self, Loaded};
use super::{got, policy, Wiring};
use std::cell::Cell;
use std::ops::Range;
use std::sync::Mutex;

/// A shared object whose GOT goes through refwatch.
#[derive(Clone, Debug)]
pub struct Watched {
    pub path: String,
    pub bias: usize,
    pub ranges: Vec<Range<usize>>,
    /// Its static data: where C statics hold references.
    pub writable: Vec<Range<usize>>,
}

impl Watched {
    pub fn basename(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }

    pub fn contains(&self, address: usize) -> bool {
        self.ranges.iter().any(|r| r.contains(&address))
    }
}

/// Objects already classified, by `Loaded::key`.
static SEEN: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());
static WATCHED: Mutex<Vec<Watched>> = Mutex::new(Vec::new());

thread_local! {
    /// Set while this thread scans: a `dlopen` made meanwhile (by Python code
    /// refwatch runs at start) is picked up by the outer scan's next round.
    static SCANNING: Cell<bool> = const { Cell::new(false) };
}

/// Looks at every object loaded since the last scan and patches those to be
/// watched. Called after each `dlopen`.
pub fn scan(wiring: &Wiring) {
    if SCANNING.with(|s| s.replace(true)) {
        return;
    }
    loop {
        let fresh: Vec<Loaded> = {
            let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
            elf::loaded_objects()
                .into_iter()
                .filter(|o| {
                    let new = !seen.contains(&o.key());
                    if new {
                        seen.push(o.key());
                    }
                    new
                })
                .collect()
        };
        if fresh.is_empty() {
            break;
        }
        fresh.iter().for_each(|object| consider(object, wiring));
    }
    SCANNING.with(|s| s.set(false));
}

fn consider(object: &Loaded, wiring: &Wiring) {
    // SAFETY: the object was listed by the loader a moment ago and we are
    // inside (or right after) the dlopen that loaded it; objects are only
    // unloaded by dlclose, which refwatch sees, and Python never unloads
    // extension modules.
    let Some(dynamic) = (unsafe { object.dynamic() }) else { return };
    // SAFETY: as above.
    let policy::Verdict::Candidate { stdlib } = (unsafe { policy::classify(object, &dynamic) }) else {
        return;
    };
    if !(wiring.should_watch)(object.basename(), stdlib) {
        return;
    }
    // SAFETY: as above; `dynamic` belongs to `object`.
    unsafe { got::patch(object, &dynamic, wiring.entry_for) };
    let watched = Watched {
        path: object.path.clone(),
        bias: object.bias,
        ranges: object.load_ranges(),
        writable: object.writable_ranges(),
    };
    WATCHED.lock().unwrap_or_else(|e| e.into_inner()).push(watched);
}

/// Forgets objects that are no longer loaded (after `dlclose`).
pub fn forget_unloaded() {
    let loaded: Vec<Loaded> = elf::loaded_objects();
    let keys: Vec<(usize, usize)> = loaded.iter().map(Loaded::key).collect();
    SEEN.lock().unwrap_or_else(|e| e.into_inner()).retain(|k| keys.contains(k));
    WATCHED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|w| loaded.iter().any(|o| o.bias == w.bias && o.path == w.path));
}

/// A copy of the watched list (for the reporter).
pub fn watched() -> Vec<Watched> {
    WATCHED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The loaded object that contains `address`, if any.
pub fn object_at(address: usize) -> Option<Loaded> {
    elf::loaded_objects().into_iter().find(|o| o.contains(address))
}
