//! librefwatch.so: preloaded into a Python process, it counts the reference
//! operations that unmodified extension modules make through calls, per
//! call site, and reports them per source line.
//!
//! The data path, one module each: `interpose` (get loaded, patch the GOT of
//! watched objects) → `hooks` (count, call the original) and `provenance`
//! (follow fresh objects from new-reference calls) → `count` (per-thread
//! tables) → `python` (the interpreter's facts, object layout and
//! Python-side work) → `symbolize` (DWARF) → `findings` (leaks) → `report`
//! (text or JSON Lines). `lifecycle` ties them together: start, fork, exit.
//!
//! The only symbols it exports are those it interposes on: `dlopen`,
//! `dlclose`, `_exit`, `_Exit`.

mod count;
mod findings;
mod hooks;
mod interpose;
mod isolate;
mod lifecycle;
mod methods;
mod provenance;
mod python;
mod report;
mod symbolize;
mod sys;
mod watch;

pub use interpose::dlopen::{_Exit, _exit, dlclose, dlopen};
