//! The crash handler: when a fault (SIGSEGV, SIGBUS) or an abort touches an
//! object refwatch saw over-released, say which release it was, then let
//! the crash go on exactly as it would have.
//!
//! A fault after an over-release usually reads out of the freed object
//! (pymalloc keeps the memory mapped): its address is in the fault address
//! or in a register of the signal's context. The handler only reads atomics,
//! compares addresses and calls `write(2)` and `sigaction`: all
//! async-signal-safe. Messages are formatted when the over-release is found,
//! into fixed slots.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

const SIGNALS: [libc::c_int; 3] = [libc::SIGSEGV, libc::SIGBUS, libc::SIGABRT];
/// Over-releases remembered (the most recent ones).
const SLOTS: usize = 32;
const MESSAGE: usize = 512;
/// Alternate signal stack per thread (a fault may come from a stack
/// overflow).
const ALT_STACK: usize = 64 * 1024;

struct Released {
    start: AtomicUsize,
    end: AtomicUsize,
    len: AtomicUsize,
    message: UnsafeCell<[u8; MESSAGE]>,
}

// SAFETY: a slot's message is written only while its `len` is 0 (by the one
// thread holding the GIL that found the over-release) and read by the handler
// only after `len` was published with Release ordering.
unsafe impl Sync for Released {}

static RELEASED: [Released; SLOTS] = [const {
    Released {
        start: AtomicUsize::new(0),
        end: AtomicUsize::new(0),
        len: AtomicUsize::new(0),
        message: UnsafeCell::new([0; MESSAGE]),
    }
}; SLOTS];
static NEXT: AtomicUsize = AtomicUsize::new(0);

struct Previous(UnsafeCell<[libc::sigaction; 3]>);
// SAFETY: written once in `install` before the handlers are in place; read
// only afterwards.
unsafe impl Sync for Previous {}
// SAFETY: sigaction is plain data; all-zero is a valid (SIG_DFL) value.
static PREVIOUS: Previous = Previous(UnsafeCell::new(unsafe { std::mem::zeroed() }));
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Installs the handlers (chained to whatever was there) and an alternate
/// stack for the calling thread.
pub fn install() {
    if INSTALLED.swap(true, Ordering::AcqRel) {
        return;
    }
    give_thread_an_alternate_stack();
    for (i, &signal) in SIGNALS.iter().enumerate() {
        // SAFETY: `action` is fully initialized before use; PREVIOUS is only
        // written here, before our handler can run for this signal.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, &mut (*PREVIOUS.0.get())[i]);
        }
    }
}

/// Gives the calling thread an alternate signal stack if it has none.
pub fn give_thread_an_alternate_stack() {
    // SAFETY: querying and setting this thread's alternate stack; the
    // mapping is checked and never freed (a thread may fault at any time).
    unsafe {
        let mut current: libc::stack_t = std::mem::zeroed();
        if libc::sigaltstack(std::ptr::null(), &mut current) != 0 || current.ss_flags & libc::SS_DISABLE == 0
        {
            return;
        }
        let stack = libc::mmap(
            std::ptr::null_mut(),
            ALT_STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if stack == libc::MAP_FAILED {
            return;
        }
        let new = libc::stack_t { ss_sp: stack, ss_flags: 0, ss_size: ALT_STACK };
        libc::sigaltstack(&new, std::ptr::null_mut());
    }
}

/// Removes the calling thread's alternate stack (it is exiting).
pub fn drop_thread_alternate_stack() {
    // SAFETY: disabling this thread's alternate stack, then unmapping the
    // stack refwatch mapped for it (only if its size says it is ours).
    unsafe {
        let mut current: libc::stack_t = std::mem::zeroed();
        if libc::sigaltstack(std::ptr::null(), &mut current) != 0
            || current.ss_flags != 0
            || current.ss_size != ALT_STACK
        {
            return;
        }
        let disable = libc::stack_t { ss_sp: std::ptr::null_mut(), ss_flags: libc::SS_DISABLE, ss_size: 0 };
        if libc::sigaltstack(&disable, std::ptr::null_mut()) == 0 {
            libc::munmap(current.ss_sp, ALT_STACK);
        }
    }
}

/// Remembers an over-released object `[start, end)` and what to say if a
/// crash touches it. Called with the GIL held when the over-release is found.
pub fn remember(start: usize, end: usize, message: &str) {
    let slot = &RELEASED[NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS];
    slot.len.store(0, Ordering::Release);
    let bytes = message.as_bytes();
    let len = bytes.len().min(MESSAGE);
    // SAFETY: `len` is 0, so the handler does not read this message now; the
    // GIL makes this thread its only writer.
    unsafe { (&mut *slot.message.get())[..len].copy_from_slice(&bytes[..len]) };
    slot.start.store(start, Ordering::Relaxed);
    slot.end.store(end, Ordering::Relaxed);
    slot.len.store(len, Ordering::Release);
}

extern "C" fn on_signal(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // The fault address, then the general registers (x86_64 has 23 in
    // `mcontext_t.gregs`).
    let mut addresses = [0usize; 24];
    if !info.is_null() && signal != libc::SIGABRT {
        // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
        addresses[0] = unsafe { (*info).si_addr() } as usize;
    }
    if !context.is_null() {
        // SAFETY: for SA_SIGINFO handlers the third argument is a ucontext_t.
        let registers = unsafe { (*(context as *const libc::ucontext_t)).uc_mcontext.gregs };
        for (slot, register) in addresses[1..].iter_mut().zip(registers) {
            *slot = register as usize;
        }
    }
    for released in &RELEASED {
        let len = released.len.load(Ordering::Acquire);
        let (start, end) = (released.start.load(Ordering::Relaxed), released.end.load(Ordering::Relaxed));
        if len > 0 && addresses.iter().any(|&a| a >= start && a < end) {
            // SAFETY: `len` bytes of the message were published (Acquire).
            let message = unsafe { &(&*released.message.get())[..len] };
            let _ = super::write_all(2, message);
        }
    }
    chain(signal, info, context);
}

/// Hands the signal to the handler that was there before, or restores the
/// default action so that returning re-runs the fault (or `abort` raises
/// again) and the process dies as it would have.
fn chain(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let Some(i) = SIGNALS.iter().position(|&s| s == signal) else { return };
    // SAFETY: PREVIOUS is read-only once installed; calling the previous
    // handler with the arguments we got is what it expects.
    unsafe {
        let previous = &(*PREVIOUS.0.get())[i];
        let handler = previous.sa_sigaction;
        if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
            libc::sigaction(signal, previous, std::ptr::null_mut());
            // A fault re-runs when the handler returns; a signal sent with
            // kill or raise (si_code <= 0) must be sent again to take effect.
            if handler == libc::SIG_DFL && (info.is_null() || (*info).si_code <= 0) {
                libc::raise(signal);
            }
        } else if previous.sa_flags & libc::SA_SIGINFO != 0 {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                std::mem::transmute(handler);
            f(signal, info, context);
        } else {
            let f: extern "C" fn(libc::c_int) = std::mem::transmute(handler);
            f(signal);
        }
    }
}
