//! The test harness: the interpreter matrix, fixture extensions built per
//! interpreter the way pip builds them, and runs of real interpreters with
//! the real librefwatch.so preloaded.
#![allow(dead_code)] // each test file uses its own part of the harness

pub mod agent;
pub mod fixture;
pub mod matrix;
pub mod pypi;
pub mod run;

use matrix::{pythons, Python};

/// Runs `check` on every present interpreter of the matrix, and fails once
/// at the end with every interpreter's failure (so one bad interpreter does
/// not hide the others).
pub fn on_every_python(test: &str, check: impl Fn(&Python) -> Result<(), String>) {
    let mut failures = Vec::new();
    let pythons = pythons();
    assert!(!pythons.is_empty(), "no interpreter of the matrix is present");
    for py in pythons {
        if let Err(e) = check(py) {
            failures.push(format!("[{} {}] {e}", py.label, py.probe.version));
        }
    }
    assert!(
        failures.is_empty(),
        "{test} failed on {} interpreter(s):\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// Fails with `what` when `cond` is false (for use inside `on_every_python`).
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($what:tt)+) => {
        if !$cond {
            return Err(format!($($what)+));
        }
    };
}
