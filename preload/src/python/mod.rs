//! The running interpreter: its C-API (found at run time), its build and
//! object layout, seeing objects die, walking its heap, and the Python-side
//! work done with the GIL held.

pub mod api;
mod blocks;
mod chosen;
pub mod facts;
pub mod heap;
pub mod layout;
pub mod liveness;
pub mod runtime;
mod trashcan;
mod type_deaths;
