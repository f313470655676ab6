//! The agent's doors, the top floor: every way control enters refwatch
//! other than a hooked C-API call. The symbols it exports (`exports`), its
//! life in the process (start, fork, exit: `lifecycle`), the callbacks it
//! registers with the interpreter (in `lifecycle`), and its reporter thread
//! (`reporter`). Settings are read here, once, and each floor below is handed
//! what it needs of them.

pub mod exports;
pub mod lifecycle;
mod modules;
pub mod reporter;
