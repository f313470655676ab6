//! The periodic leak check when refwatch runs no thread of its own
//! (`REFWATCH_INTERVAL` unset or 0, the default: docs/design.md §3.8).
//!
//! The check must run on a Python thread with the GIL, at a safe point of
//! the interpreter: it is queued with `Py_AddPendingCall`, like the
//! reporter's. Without the reporter, what queues it is the extension's own
//! traffic: every call of one of its methods (the method stubs, a slow path
//! of some 130 instructions already) bumps a counter here, and one in
//! [`LOOK_EVERY`] reads the coarse monotonic clock (the vDSO: no system
//! call) and, once the census interval has passed, queues the check. A
//! leak grows with the calls that make it, so the calls are what to watch;
//! a program that stops calling the extension stops leaking through it, and
//! its last leaks are found at exit.
//!
//! Cost per call: a load and a store of one counter (the GIL serializes
//! method calls; a count lost to a race only delays a look). Per look: one
//! clock read.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Method calls between looks at the clock.
const LOOK_EVERY: u32 = 64;

static CALLS: AtomicU32 = AtomicU32::new(0);
/// The census interval in nanoseconds; 0: the calls queue nothing.
static EVERY: AtomicU64 = AtomicU64::new(0);
/// When the next check is due (the coarse monotonic clock, nanoseconds).
static DUE: AtomicU64 = AtomicU64::new(0);

/// Has the calls queue a check every `every` (zero: never, when the
/// reporter does it or checks are only at exit). Also restarts the clock
/// (at start, and in a forked child).
pub fn configure(every: Duration) {
    let every = u64::try_from(every.as_nanos()).unwrap_or(u64::MAX);
    EVERY.store(every, Ordering::Relaxed);
    DUE.store(now().saturating_add(every), Ordering::Relaxed);
}

/// In a forked child: the interval starts over.
pub fn restart() {
    let every = EVERY.load(Ordering::Relaxed);
    DUE.store(now().saturating_add(every), Ordering::Relaxed);
}

/// One call of a watched method (on a Python thread, with the GIL).
#[inline(always)]
pub fn tick() {
    let n = CALLS.load(Ordering::Relaxed).wrapping_add(1);
    CALLS.store(n, Ordering::Relaxed);
    if n.is_multiple_of(LOOK_EVERY) {
        look();
    }
}

#[cold]
fn look() {
    let every = EVERY.load(Ordering::Relaxed);
    if every == 0 {
        return;
    }
    let now = now();
    if now < DUE.load(Ordering::Relaxed) {
        return;
    }
    DUE.store(now.saturating_add(every), Ordering::Relaxed);
    super::runtime::request_check();
}

/// The coarse monotonic clock (a few milliseconds' resolution, read from
/// the vDSO without a system call), in nanoseconds.
fn now() -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a valid out-pointer; CLOCK_MONOTONIC_COARSE exists on
    // every Linux refwatch runs on.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut t) };
    (t.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec as u64)
}
