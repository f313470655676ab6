//! Getting between extensions and the interpreter: LD_PRELOAD only gets
//! refwatch loaded; it then patches the GOT of each watched object, found
//! after every `dlopen` (DESIGN.md §3: symbol interposition alone sees
//! nothing under a static interpreter).

pub mod dlopen;
pub mod elf;
pub mod got;
pub mod objects;
pub mod policy;

pub use got::write_word;
pub use objects::{watched, Watched};
