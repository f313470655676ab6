//! Interpreter facts: the running interpreter's C-API (found at run time),
//! its build and object layout, and the Python-side work refwatch does with
//! the GIL held (totals, pausing the collector, the current Python line),
//! and the periodic check queued without a thread (`checks`).

pub mod api;
pub mod checks;
pub mod facts;
pub mod layout;
pub mod runtime;
