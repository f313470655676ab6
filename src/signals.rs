//! How `refwatch run` stays out of the way of signals.
//!
//! The program must start with exactly the signal dispositions and mask the
//! launcher was started with (a shell that runs a background job with SIGINT
//! ignored must still be obeyed), and a signal meant for the program must
//! reach it whether it was sent to the program or to the launcher.
//!
//! So the launcher blocks every signal it relays before it starts the
//! program, restores the inherited dispositions and mask in the child
//! between fork and exec, and then waits with `sigwaitinfo`: SIGCHLD says
//! the program changed state, anything else is forwarded to it. Which
//! signals are forwarded:
//! - Only signals a process sent (`kill`, `sigqueue`, `tgkill`). The
//!   terminal sends ^C, ^\, ^Z and window resizes to the whole foreground
//!   process group, the program included: forwarding those too would
//!   deliver them twice (a second KeyboardInterrupt inside the first one's
//!   `except` clause).
//! - Not when the sender is in the launcher's process group (the program,
//!   its children, a `kill(0, ...)` from inside the job): the program got it
//!   already. The launcher's parent is the exception: a supervisor or a
//!   test that started the launcher usually shares its group and signals the
//!   launcher's pid. A signal sent to the whole group from outside it
//!   (`kill %1` in a shell), or by the parent, does reach the program twice.
//! - Not signals the launcher was started with ignored: they stay ignored,
//!   as they would for the program run bare.
//! - Not the fault signals (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP,
//!   SIGSYS): they report the launcher's own faults.
//!
//! When the program stops (^Z, SIGTSTP, SIGSTOP) the launcher stops too, so
//! its shell sees the job stopped; the SIGCONT that resumes the launcher is
//! forwarded like any other signal.

use std::io;
use std::mem::MaybeUninit;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The signals ignored when the process started, bit `n - 1` for signal
/// `n` (Linux numbers signals 1 to 64).
static IGNORED_AT_START: AtomicU64 = AtomicU64::new(0);
static CAPTURED: AtomicBool = AtomicBool::new(false);

/// Rust's runtime sets SIGPIPE to SIG_IGN before `main`, so what our
/// parent gave us is only visible before it runs: an `.init_array` entry
/// runs before `main` (glibc passes it argc, argv and envp, which it
/// does not read).
#[used]
#[link_section = ".init_array"]
static CAPTURE_AT_LOAD: extern "C" fn() = capture_ignored;

extern "C" fn capture_ignored() {
    IGNORED_AT_START.store(ignored_now(), Ordering::Relaxed);
    CAPTURED.store(true, Ordering::Relaxed);
}

fn bit(signal: libc::c_int) -> u64 {
    1 << (signal - 1)
}

fn last_signal() -> libc::c_int {
    libc::SIGRTMAX().min(64)
}

fn ignored_now() -> u64 {
    (1..=last_signal()).filter(|&s| disposition(s) == Some(libc::SIG_IGN)).fold(0, |set, s| set | bit(s))
}

/// The handler of `signal`, or None for a signal glibc keeps to itself.
fn disposition(signal: libc::c_int) -> Option<libc::sighandler_t> {
    let mut action = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a null new action only reads the current one into `action`,
    // which is valid for writes.
    let ok = unsafe { libc::sigaction(signal, std::ptr::null(), action.as_mut_ptr()) } == 0;
    // SAFETY: read only when sigaction succeeded and so filled it in.
    ok.then(|| unsafe { action.assume_init() }.sa_sigaction)
}

fn empty_set() -> libc::sigset_t {
    let mut set = MaybeUninit::<libc::sigset_t>::zeroed();
    // SAFETY: sigemptyset initialises the set it is given.
    unsafe { libc::sigemptyset(set.as_mut_ptr()) };
    // SAFETY: initialised just above.
    unsafe { set.assume_init() }
}

fn set_of(signals: impl IntoIterator<Item = libc::c_int>) -> libc::sigset_t {
    let mut set = empty_set();
    for signal in signals {
        // SAFETY: `set` is an initialised set; glibc refuses (EINVAL) the
        // signals it reserves, which are then simply not in the set.
        unsafe { libc::sigaddset(&mut set, signal) };
    }
    set
}

fn contains(set: &libc::sigset_t, signal: libc::c_int) -> bool {
    // SAFETY: reads an initialised set.
    unsafe { libc::sigismember(set, signal) == 1 }
}

fn relayable(signal: libc::c_int) -> bool {
    let own_faults = [libc::SIGSEGV, libc::SIGBUS, libc::SIGFPE, libc::SIGILL, libc::SIGTRAP, libc::SIGSYS];
    let not_relayable = [libc::SIGKILL, libc::SIGSTOP, libc::SIGCHLD];
    !not_relayable.contains(&signal) && !own_faults.contains(&signal)
}

/// Signal handling for the lifetime of one program run.
pub struct Relay {
    ignored_at_start: u64,
    /// The mask the launcher had before `start`, the program's mask.
    mask_at_start: libc::sigset_t,
    /// Signals the launcher waits for: the relayed ones and SIGCHLD.
    waited: libc::sigset_t,
}

impl Relay {
    /// Blocks the signals to relay, before the program exists, so none
    /// sent meanwhile is lost (it stays pending until the wait).
    pub fn start() -> Relay {
        let ignored_at_start = if CAPTURED.load(Ordering::Relaxed) {
            IGNORED_AT_START.load(Ordering::Relaxed)
        } else {
            ignored_now()
        };
        let relayed = (1..=last_signal()).filter(|&s| relayable(s) && ignored_at_start & bit(s) == 0);
        let waited = set_of(relayed.chain([libc::SIGCHLD]));
        let mut mask_at_start = empty_set();
        // SAFETY: both sets are initialised; the launcher has one thread, so
        // its mask is the process's.
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &waited, &mut mask_at_start) };
        if ignored_at_start & bit(libc::SIGCHLD) != 0 {
            // An ignored SIGCHLD reaps children unasked: wait() could not see
            // the program's status.
            // SAFETY: SIG_DFL has no preconditions; the child gets SIG_IGN
            // back from `child_setup`.
            unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
        }
        Relay { ignored_at_start, mask_at_start, waited }
    }

    /// For `CommandExt::pre_exec`: between fork and exec, gives the child
    /// the dispositions and mask the launcher started with. Handlers are
    /// reset by exec anyway; what matters is which signals are ignored
    /// (std's SIGPIPE included). It calls only sigaction and sigprocmask,
    /// which are async-signal-safe.
    pub fn child_setup(&self) -> impl FnMut() -> io::Result<()> + Send + Sync + 'static {
        let (ignored, mask, last) = (self.ignored_at_start, self.mask_at_start, last_signal());
        let action = |handler| {
            // SAFETY: all-zero is a valid sigaction (empty mask, no flags).
            let mut action: libc::sigaction = unsafe { MaybeUninit::zeroed().assume_init() };
            action.sa_sigaction = handler;
            action
        };
        let (default, ignore) = (action(libc::SIG_DFL), action(libc::SIG_IGN));
        move || {
            for signal in (1..=last).filter(|&s| s != libc::SIGKILL && s != libc::SIGSTOP) {
                let action = if ignored & bit(signal) != 0 { &ignore } else { &default };
                // SAFETY: a valid action; glibc refuses its reserved signals,
                // which keep what the launcher had, as they would bare.
                unsafe { libc::sigaction(signal, action, std::ptr::null_mut()) };
            }
            // SAFETY: `mask` is an initialised set.
            if unsafe { libc::sigprocmask(libc::SIG_SETMASK, &mask, std::ptr::null_mut()) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        }
    }

    /// Back to the mask the launcher started with (the program did not
    /// start): a signal that came meanwhile acts on the launcher itself.
    pub fn release(self) {
        // SAFETY: `mask_at_start` is an initialised set.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.mask_at_start, std::ptr::null_mut()) };
    }

    /// Forwards signals to the program until it ends, and returns how it
    /// ended. The signals stay blocked afterwards: one arriving after the
    /// program ended must not change the status the launcher passes on.
    pub fn wait(&self, program: &Child) -> io::Result<ExitStatus> {
        let pid = program.id() as libc::pid_t;
        loop {
            let info = self.next_signal()?;
            if self.sent_for_the_program(&info, pid) {
                forward(&info, pid);
            }
            if info.si_signo == libc::SIGCHLD {
                if let Some(status) = self.reap(pid)? {
                    return Ok(status);
                }
            }
        }
    }

    fn next_signal(&self) -> io::Result<libc::siginfo_t> {
        let mut info = MaybeUninit::<libc::siginfo_t>::zeroed();
        loop {
            // SAFETY: `waited` is an initialised set and `info` is valid for
            // writes.
            if unsafe { libc::sigwaitinfo(&self.waited, info.as_mut_ptr()) } > 0 {
                // SAFETY: sigwaitinfo filled it in.
                return Ok(unsafe { info.assume_init() });
            }
            // EINTR: the launcher was stopped and continued.
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }

    fn sent_for_the_program(&self, info: &libc::siginfo_t, pid: libc::pid_t) -> bool {
        if !matches!(info.si_code, libc::SI_USER | libc::SI_QUEUE | libc::SI_TKILL) {
            return false; // the kernel: the terminal (to the whole group) or our own doing
        }
        // SAFETY: for these codes the kernel fills in the sender's pid.
        let sender = unsafe { info.si_pid() };
        if sender == std::process::id() as libc::pid_t {
            return false;
        }
        // SAFETY: getppid, getpgrp and getpgid have no preconditions;
        // getpgid answers -1 for a sender that is gone.
        let (parent, our_group, its_group) =
            unsafe { (libc::getppid(), libc::getpgrp(), libc::getpgid(sender)) };
        sender == parent || (sender != pid && its_group != our_group)
    }

    /// The program's new state after a SIGCHLD: its status when it ended;
    /// when it stopped, the launcher stops too until it is continued.
    fn reap(&self, pid: libc::pid_t) -> io::Result<Option<ExitStatus>> {
        let mut status = 0;
        // SAFETY: `status` is valid for writes; `pid` is our child.
        let reaped = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG | libc::WUNTRACED) };
        if reaped == -1 {
            return Err(io::Error::last_os_error());
        }
        if reaped == 0 {
            return Ok(None); // continued, or a SIGCHLD someone sent
        }
        if libc::WIFSTOPPED(status) {
            self.stop_like(libc::WSTOPSIG(status));
            return Ok(None);
        }
        Ok(Some(ExitStatus::from_raw(status)))
    }

    /// Stops the launcher with the program's stop signal when it can (the
    /// shell then reports the same), or with SIGSTOP.
    fn stop_like(&self, signal: libc::c_int) {
        let job_control = [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU];
        if !job_control.contains(&signal) || !contains(&self.waited, signal) {
            // SAFETY: SIGSTOP cannot be caught or blocked: this just stops
            // the launcher until SIGCONT.
            unsafe { libc::raise(libc::SIGSTOP) };
            return;
        }
        let set = set_of([signal]);
        // SAFETY: raised while blocked, it joins any copy already pending
        // (one delivery, one stop); unblocking delivers it with its default
        // action, stopping here until SIGCONT; then it is blocked again.
        unsafe {
            libc::raise(signal);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
    }
}

/// Sends the program the signal the launcher got (with its value, when it
/// was queued). The program may have just ended: errors are nothing to act on.
fn forward(info: &libc::siginfo_t, pid: libc::pid_t) {
    // SAFETY: kill and sigqueue only send a signal; si_value is filled in
    // for SI_QUEUE.
    unsafe {
        if info.si_code == libc::SI_QUEUE {
            libc::sigqueue(pid, info.si_signo, info.si_value());
        } else {
            libc::kill(pid, info.si_signo);
        }
    }
}

/// Dies of the same signal as the child, so our parent sees what it would
/// have seen without refwatch.
pub fn reraise(signal: i32) -> ! {
    // SAFETY: restoring the default disposition and raising a signal on
    // ourselves; if the signal does not end the process we exit below.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        let set = set_of([signal]);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(signal);
    }
    std::process::exit(128 + signal)
}
