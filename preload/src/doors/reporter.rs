//! The reporter: refwatch's one thread, started only when periodic reports
//! are asked for (`REFWATCH_INTERVAL` above 0; off by default, so that the
//! program sees no thread it did not start). Every interval it asks the
//! interpreter for totals (through a pending call: it never runs Python code
//! itself), names new sites, and writes a report; at the census interval,
//! the periodic leak check too (without it, `python::checks` queues that).
//!
//! It is stopped and joined before every fork (Python 3.12+ warns when a
//! process with several threads forks) and restarted afterwards.

use super::lifecycle;
use crate::python::runtime;
use refwatch_model::{Event, Totals};
use std::sync::{Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

struct Control {
    stop: bool,
    handle: Option<JoinHandle<()>>,
}

static CONTROL: Mutex<Control> = Mutex::new(Control { stop: false, handle: None });
static WAKE: Condvar = Condvar::new();

/// Starts the reporter unless it runs already or reports are exit-only.
/// `REFWATCH_INTERVAL` and `REFWATCH_CENSUS`, handed down at start.
static EVERY: OnceLock<(Duration, Duration)> = OnceLock::new();

/// Sets how often the reporter reports and takes a census (once, at start).
pub fn configure(interval: Duration, census: Duration) {
    let _ = EVERY.set((interval, census));
}

/// Whether periodic reports are on (the reporter runs between forks).
pub fn reports() -> bool {
    EVERY.get().is_some_and(|(interval, _)| !interval.is_zero())
}

pub fn start() {
    let Some(&(interval, census_every)) = EVERY.get() else { return };
    if interval.is_zero() {
        return;
    }
    let mut control = CONTROL.lock().unwrap_or_else(|e| e.into_inner());
    if control.handle.is_some() {
        return;
    }
    control.stop = false;
    let spawned = std::thread::Builder::new().name("refwatch".into()).spawn(move || {
        // A panic here must not take the host down: the reporter just ends.
        let _ = std::panic::catch_unwind(|| run(interval, census_every));
    });
    control.handle = spawned.ok();
}

/// Stops the reporter and waits for it. Returns whether it was running.
pub fn stop() -> bool {
    let handle = {
        let mut control = CONTROL.lock().unwrap_or_else(|e| e.into_inner());
        control.stop = true;
        WAKE.notify_all();
        control.handle.take()
    };
    match handle {
        Some(handle) => {
            let _ = handle.join();
            true
        }
        None => false,
    }
}

/// In a forked child: the reporter thread did not survive the fork.
pub fn forget_after_fork() {
    let mut control = CONTROL.lock().unwrap_or_else(|e| e.into_inner());
    control.handle = None;
    control.stop = false;
}

/// Sleeps `timeout` unless asked to stop; returns true when asked.
fn sleep(timeout: Duration) -> bool {
    let control = CONTROL.lock().unwrap_or_else(|e| e.into_inner());
    let (control, _) =
        WAKE.wait_timeout_while(control, timeout, |c| !c.stop).unwrap_or_else(|e| e.into_inner());
    control.stop
}

fn run(interval: Duration, census_every: Duration) {
    let mut last_census = Instant::now();
    let mut previous: Option<Totals> = None;
    while !sleep(interval) {
        // Every REFWATCH_CENSUS seconds: the costly checks (census, leaks).
        let census = !census_every.is_zero() && last_census.elapsed() >= census_every;
        if census {
            last_census = Instant::now();
        }
        let totals = runtime::request_totals(census).unwrap_or_default();
        let totals = crate::report::with_delta(totals, previous.as_ref());
        previous = Some(totals.clone());
        crate::report::emit(&Event::Report {
            pid: crate::sys::getpid(),
            seq: lifecycle::next_seq(),
            elapsed: lifecycle::elapsed(),
            sites: crate::report::sites(),
            totals,
            sample: crate::report::sample_field(),
        });
    }
}
