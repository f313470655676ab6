//! Following objects and references: the C-API calls that hand an extension
//! references (`provenance`, with its trampolines and the deaths it must
//! see), the extension's own functions as Python calls them (`methods`:
//! each call's frame, its arguments and what it parses), and the hardware
//! watchpoints on the refcounts of suspects (`watch`).
//!
//! Nothing here decides a finding. Where following sees an over-release
//! happen, it hands the moment up through `Verdicts`, which the agent's doors
//! set at start from the findings floor above.

pub mod methods;
pub mod provenance;
pub mod watch;

use provenance::assoc::Association;
use std::sync::OnceLock;

/// The findings' judgements, called where following sees their moment.
pub struct Verdicts {
    /// A followed object's memory was freed (`object`, what lent or took it,
    /// whether the current method call lent it).
    ///
    /// # Safety
    /// As `findings::overrelease::freed`.
    pub freed: unsafe fn(object: usize, association: &Association, lent_in_call: bool),
    /// A watchpoint saw a freed object's refcount accessed at `ip`; `freed_at`
    /// is the site of the release that freed it.
    pub after_free: fn(ip: usize, freed_at: usize),
    /// A method returned `object`, which it was called with, without a new
    /// reference (its refcount `before` and `after` the call).
    ///
    /// # Safety
    /// As `findings::overrelease::returned_unowned`.
    pub returned_unowned: unsafe fn(method: u32, object: usize, before: u64, after: u64),
}

static VERDICTS: OnceLock<&'static Verdicts> = OnceLock::new();

/// Sets the judgements (once, when the agent starts).
pub fn hand_verdicts_to(verdicts: &'static Verdicts) {
    let _ = VERDICTS.set(verdicts);
}

/// The judgements, once handed in.
fn verdicts() -> Option<&'static Verdicts> {
    VERDICTS.get().copied()
}
