//! What librefwatch.so writes and the `refwatch` launcher reads.
//!
//! The agent and the launcher share three things, kept here so they cannot
//! drift: the `REFWATCH_*` settings and their validation (`settings`), the
//! JSON Lines events (`event`, schema 1, documented in the README), and the
//! text rendering of those events (`text`).

pub mod event;
pub mod glob;
pub mod settings;
pub mod text;

pub use event::{Event, Finding, Flavour, Held, Site, Totals};
pub use settings::{Format, ModuleFilter, OnOverrelease, Output, SettingError, Settings};
