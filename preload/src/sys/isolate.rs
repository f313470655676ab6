//! Runs refwatch's heap analysis (the leak check's walk, the census) in a
//! copy of the process. A program with an over-release can leave objects
//! pointing at freed memory and still end cleanly, as long as nothing
//! touches them; a walk of every object does touch them. In a copy, such a
//! walk crashes the copy, not the program: refwatch never turns a clean
//! exit into a crash.
//!
//! The copy shares nothing writable with the program (copy-on-write pages),
//! runs with default fault handlers (a crash there is silent), sends its
//! answer as JSON through a pipe and leaves with `exit_group`, so no at-exit
//! work of the program or of refwatch runs in it.
//!
//! **Invisible to the program.** The copy is made with `clone` and *no exit
//! signal* (not `fork`, whose child sends SIGCHLD): the program gets no
//! SIGCHLD it did not cause, and its own `wait`, `waitpid(-1)` or `waitid`
//! never reap the copy (the kernel leaves such a "clone" child to waits
//! with `__WCLONE` or `__WALL`, which Python never makes); refwatch reaps it
//! with `__WCLONE`. No at-fork handler runs either (the program's, Python's
//! or refwatch's), which is right: the copy is not a child of the program's.
//! The price of not going through glibc's `fork`: glibc does not take its
//! malloc locks around this copy, so a lock another thread held at that
//! instant stays held in the copy, and the copy's first allocation from
//! that arena would wait for ever. The walk's thread uses its own arena and
//! the other threads theirs, so that is rare, and bounded by the next rule.
//!
//! **Bounded.** The answer is read with `poll`, never a plain blocking
//! read: when the copy makes no progress (its CPU time, from
//! `/proc/PID/stat`, stands still) for [`STALL`], or runs past [`LIMIT`]
//! in all, it is killed and reaped, and the check is skipped (one line, by
//! the caller). A walk never sleeps or waits, so a copy that uses no CPU is
//! stuck: a deadlock, or a traversal function that blocks.

use crate::sys;
use serde::{de::DeserializeOwned, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A copy whose CPU time has not moved for this long is stuck.
const STALL: Duration = Duration::from_secs(3);
/// A copy still running after this long is stopped whatever it does.
const LIMIT: Duration = Duration::from_secs(120);
/// How often the copy's progress is looked at while waiting.
const SLICE_MS: i32 = 250;

/// Set in the copy.
static IN_COPY: AtomicBool = AtomicBool::new(false);

/// Whether this process is a copy made by `in_copy` (which ends after its
/// work: its memory may be given back as the work reads it).
pub fn in_the_copy() -> bool {
    IN_COPY.load(Ordering::Relaxed)
}

/// How the copy ended when it gave no answer.
pub enum Failure {
    /// Killed by this signal (a crash in the walk: a corrupt heap).
    Signal(i32),
    /// It made no progress, or ran too long: it was killed (why, in words).
    Stopped(String),
    /// No copy could be made, or it answered nothing readable.
    Other(String),
}

/// `work()` as computed by a copy of this process.
pub fn in_copy<T: Serialize + DeserializeOwned>(work: impl FnOnce() -> T) -> Result<T, Failure> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Failure::Other(format!("pipe: {}", std::io::Error::last_os_error())));
    }
    let [read_end, write_end] = fds;
    // SAFETY: clone with no flags and no stack is fork without the exit
    // signal (flags' low byte, 0 here): the child continues on a copy of
    // this stack. It only runs `work` (code that runs in this process too,
    // with the GIL this thread holds), writes to the pipe and leaves with
    // exit_group.
    let pid = unsafe { libc::syscall(libc::SYS_clone, 0 as libc::c_ulong, 0usize, 0usize, 0usize, 0usize) }
        as libc::pid_t;
    if pid == 0 {
        child(write_end, work);
    }
    // SAFETY: our own descriptor, not used again here.
    unsafe { libc::close(write_end) };
    if pid < 0 {
        // SAFETY: as above.
        unsafe { libc::close(read_end) };
        return Err(Failure::Other(format!("clone: {}", std::io::Error::last_os_error())));
    }
    let answer = read_answer(read_end, pid);
    // SAFETY: as above.
    unsafe { libc::close(read_end) };
    if answer.is_err() {
        // SAFETY: kill(2) of our own copy, not yet reaped (its pid is ours
        // to signal until `wait` below).
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let status = wait(pid);
    let answer = answer.map_err(Failure::Stopped)?;
    if libc::WIFSIGNALED(status) {
        return Err(Failure::Signal(libc::WTERMSIG(status)));
    }
    serde_json::from_slice(&answer).map_err(|e| Failure::Other(format!("the copy's answer: {e}")))
}

fn child<T: Serialize>(write_end: i32, work: impl FnOnce() -> T) -> ! {
    IN_COPY.store(true, Ordering::Relaxed);
    // The copy must not outlive the thread waiting for it (a program killed
    // meanwhile).
    // SAFETY: prctl with these arguments only sets this process's
    // parent-death signal.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) };
    for signal in [libc::SIGSEGV, libc::SIGBUS, libc::SIGABRT, libc::SIGFPE, libc::SIGILL] {
        // SAFETY: restoring the default disposition has no preconditions.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
    }
    let answer = serde_json::to_vec(&work()).unwrap_or_default();
    let _ = sys::write_all(write_end, &answer);
    // SAFETY: leaves the copy at once: no at-exit handlers, no interposed
    // `_exit` (which would write a summary), no stdio flush.
    unsafe { libc::syscall(libc::SYS_exit_group, 0) };
    unreachable!("exit_group returned")
}

/// Everything the copy writes until it closes the pipe; `Err` (why) when it
/// stalls or runs too long.
fn read_answer(fd: i32, pid: libc::pid_t) -> Result<Vec<u8>, String> {
    let started = Instant::now();
    let mut progress = (cpu_time(pid), Instant::now());
    let mut out = Vec::new();
    let mut buffer = [0u8; 16384];
    loop {
        let mut poll = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut poll, 1, SLICE_MS) };
        if ready > 0 {
            // SAFETY: reads into a buffer of the given length.
            let n = unsafe { libc::read(fd, buffer.as_mut_ptr().cast(), buffer.len()) };
            match n {
                0 => return Ok(out),
                n if n > 0 => {
                    out.extend_from_slice(&buffer[..n as usize]);
                    progress.1 = Instant::now();
                }
                _ if interrupted() => {}
                _ => return Ok(out),
            }
        } else if ready < 0 && !interrupted() {
            return Ok(out);
        }
        let cpu = cpu_time(pid);
        // Where /proc cannot tell, only the limit applies.
        if cpu.is_none() || cpu != progress.0 {
            progress = (cpu, Instant::now());
        }
        if progress.1.elapsed() >= STALL {
            return Err(format!("made no progress for {} s", STALL.as_secs()));
        }
        if started.elapsed() >= LIMIT {
            return Err(format!("ran for more than {} s", LIMIT.as_secs()));
        }
    }
}

fn interrupted() -> bool {
    std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
}

/// The copy's CPU time so far (user and system, in clock ticks), or `None`
/// where /proc cannot tell.
fn cpu_time(pid: libc::pid_t) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (in parentheses, which may hold anything):
    // state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Reaps the copy: a clone child with no exit signal, which only a wait
/// with `__WCLONE` (or `__WALL`) sees.
fn wait(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: waits for our own copy; `status` is a valid out-pointer.
    while unsafe { libc::waitpid(pid, &mut status, libc::__WCLONE) } < 0 {
        if !interrupted() {
            break;
        }
    }
    status
}
