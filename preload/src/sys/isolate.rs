//! Runs refwatch's heap analysis (the leak check's walk, the census) in a
//! forked copy of the process. A program with an over-release can leave
//! objects pointing at freed memory and still end cleanly, as long as
//! nothing touches them; a walk of every object does touch them. In a copy,
//! such a walk crashes the copy, not the program: refwatch never turns a
//! clean exit into a crash.
//!
//! The copy shares nothing writable with the program (copy-on-write pages),
//! runs with default fault handlers (a crash there is silent), sends its
//! answer as JSON through a pipe and leaves with `exit_group`, so no at-exit
//! work of the program or of refwatch runs in it.

use crate::sys;
use serde::{de::DeserializeOwned, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set in the parent around its own fork, so that refwatch's fork handlers
/// (made for the program's forks) leave this one alone.
static FORKING: AtomicBool = AtomicBool::new(false);

/// Set in the copy.
static IN_COPY: AtomicBool = AtomicBool::new(false);

/// Whether this process is a copy made by `in_copy` (which ends after its
/// work: its memory may be given back as the work reads it).
pub fn in_the_copy() -> bool {
    IN_COPY.load(Ordering::Relaxed)
}

/// Whether the fork in progress is refwatch's own.
pub fn forking() -> bool {
    FORKING.load(Ordering::Acquire)
}

/// How the copy ended when it gave no answer.
pub enum Failure {
    /// Killed by this signal (a crash in the walk: a corrupt heap).
    Signal(i32),
    /// No copy could be made, or it answered nothing readable.
    Other(String),
}

/// `work()` as computed by a forked copy of this process.
pub fn in_copy<T: Serialize + DeserializeOwned>(work: impl FnOnce() -> T) -> Result<T, Failure> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Failure::Other(format!("pipe: {}", std::io::Error::last_os_error())));
    }
    let [read_end, write_end] = fds;
    FORKING.store(true, Ordering::Release);
    // SAFETY: fork has no preconditions; the child only runs `work` (code
    // that runs in this process too, with the GIL this thread holds), writes
    // to the pipe and leaves with exit_group.
    let pid = unsafe { libc::fork() };
    FORKING.store(false, Ordering::Release);
    if pid == 0 {
        child(write_end, work);
    }
    // SAFETY: our own descriptor, not used again here.
    unsafe { libc::close(write_end) };
    if pid < 0 {
        // SAFETY: as above.
        unsafe { libc::close(read_end) };
        return Err(Failure::Other(format!("fork: {}", std::io::Error::last_os_error())));
    }
    let answer = read_all(read_end);
    // SAFETY: as above.
    unsafe { libc::close(read_end) };
    let status = wait(pid);
    if libc::WIFSIGNALED(status) {
        return Err(Failure::Signal(libc::WTERMSIG(status)));
    }
    serde_json::from_slice(&answer).map_err(|e| Failure::Other(format!("the copy's answer: {e}")))
}

fn child<T: Serialize>(write_end: i32, work: impl FnOnce() -> T) -> ! {
    IN_COPY.store(true, Ordering::Relaxed);
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

fn read_all(fd: i32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buffer = [0u8; 16384];
    loop {
        // SAFETY: reads into a buffer of the given length.
        let n = unsafe { libc::read(fd, buffer.as_mut_ptr().cast(), buffer.len()) };
        match n {
            0 => return out,
            n if n > 0 => out.extend_from_slice(&buffer[..n as usize]),
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            _ => return out,
        }
    }
}

fn wait(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a valid out-pointer.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break;
        }
    }
    status
}
