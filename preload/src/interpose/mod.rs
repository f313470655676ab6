//! Getting between extensions and the interpreter: LD_PRELOAD only gets
//! refwatch loaded; it then patches the GOT of each watched object, found
//! after every `dlopen` (docs/design.md §3.1: symbol interposition alone sees
//! nothing under a static interpreter).

pub mod elf;
pub mod got;
pub mod objects;
pub mod policy;
pub mod search;

pub use got::write_word;
pub use objects::{forget_unloaded, scan, watched, Watched};

/// What the agent hands interposition at each scan, so that this floor asks
/// nothing of the floors above it.
pub struct Wiring {
    /// Whether an object that uses the C-API is watched, given its file
    /// name and whether it is part of the standard library. Deciding may
    /// start the agent (at the first watched object).
    pub should_watch: fn(basename: &str, stdlib: bool) -> bool,
    /// The address a watched object's imports of `name` are pointed at, if
    /// refwatch hooks that function.
    pub entry_for: fn(name: &[u8]) -> Option<usize>,
}
