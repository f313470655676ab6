//! librefwatch.so: preloaded into a Python process, it counts the reference
//! operations that unmodified extension modules make through calls, per
//! call site, and reports them per source line.
//!
//! One floor per folder, each importing only from the floors below it:
//!
//! - `doors`: how control enters the agent other than through a hooked call:
//!   the symbols it exports, its life in the process (start, fork, exit),
//!   the interpreter's callbacks, the reporter thread. Settings are read
//!   here once and handed down.
//! - `hooks`: the C-API functions refwatch puts in watched objects' GOTs:
//!   count the call, follow what it hands over, call the original.
//! - `findings`: leaks (decided on a walk of the heap, `findings::heap`) and
//!   over-releases (decided where they happen), with their evidence.
//! - `follow`: following objects and references: provenance (the calls
//!   that hand an extension references, the deaths it must see), the
//!   extension's own functions as Python calls them (`methods`), and the
//!   hardware watchpoints (`watch`). It hands what it sees up to the
//!   findings through `follow::Verdicts`, set by the doors.
//! - `report`: events written as text or JSON Lines; per-line sites.
//! - `python`: interpreter facts: the C-API found at run time, the build,
//!   the object layout, and the Python-side work done with the GIL held.
//! - `symbolize`: naming lines from DWARF, with the process's one cache.
//! - `count`: per-thread tables of counts per call site.
//! - `interpose`: ELF, the loaded objects, GOT patching and the policy of
//!   which objects are watched; handed its wiring (`interpose::Wiring`).
//! - `sys`: system calls, the crash handler, readable memory, and work in a
//!   copy of the process.
//!
//! The only symbols it exports are those it interposes on: `dlopen`,
//! `dlclose`, `_exit`, `_Exit`.

mod count;
mod doors;
mod findings;
mod follow;
mod hooks;
mod interpose;
mod python;
mod report;
mod symbolize;
mod sys;

pub use doors::exports::{_Exit, _exit, dlclose, dlopen};
