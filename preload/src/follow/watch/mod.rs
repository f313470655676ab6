//! Exact lines for inline `Py_INCREF`s on release builds, by hardware
//! watchpoints (docs/design.md §8.2). No call happens at an inline increment, so
//! no hook sees it; a write watchpoint on the object's refcount does: the
//! signal it sends carries the instruction after the write.
//!
//! A method whose calls left references on an argument (`methods`,
//! `provenance::growth`) becomes a suspect. Its next few calls (at most
//! [`CALLS_PER_METHOD`], [`CALLS_IN_ALL`] in all) watch up to
//! [`PER_CALL`] of their arguments' refcounts on the calling thread, from
//! the method's entry to its return: a rate-limited slow path of a few
//! system calls, never on the per-operation hot path. Each write is noted
//! by the signal handler (instruction pointer and the change of the count);
//! for a call that leaves an argument with more references than it had,
//! the extension's increments and releases are paired like brackets and
//! the increments left unmatched are kept. At the check, when they are all
//! on one line of the method, that line left the references: the finding
//! becomes `exact`.
//!
//! Watchpoints are armed on the calling thread, on the process's other
//! threads (up to [`OTHER_THREADS`]: a worker the method hands the object
//! to) and on threads started during the call (inherited), only inside a
//! call, so nothing is left armed at thread exit, fork or exit. Each access
//! raises a synchronous SIGTRAP in the thread that made it (`perf::arm`),
//! handled with `SA_RESTART` when the program has no SIGTRAP handler of its
//! own (else watchpoints are off); other SIGTRAPs keep their default
//! action. Where `perf_event_open` is refused (paranoid level, seccomp) or
//! `REFWATCH_WATCHPOINTS=off`, the finding stays at function level and says
//! why.
//!
//! SIGTRAP stays the program's: it may install a handler of its own, or put
//! the default action back, after refwatch installed its handler. A trap
//! would then reach the program (a Python handler called for nothing, or
//! death by SIGTRAP), so every arming first reads SIGTRAP's disposition
//! (`sigaction` with no new action: one system call on a slow path that
//! already makes several) and, when it is no longer refwatch's handler,
//! arms nothing, then or ever again (`STATE` goes to `REFUSED`, and the
//! findings say why). Nothing is armed between calls, so the only window
//! left is a disposition changed by code that runs *inside* an armed call
//! (a method calling back into Python that installs a SIGTRAP handler):
//! that call's traps may reach it, the next call arms nothing.
//!
//! Rather than delivering through another signal (`F_SETSIG` to a
//! real-time signal with `F_SETOWN_EX` to the thread): that route is
//! asynchronous (an irq_work after the debug exception, so the instruction
//! pointer the handler sees is not guaranteed to be the one after the
//! write, which is the whole point), carries the descriptor rather than
//! `sig_data` (a lookup per trap across threads), and leaves a signal the
//! program can take over just the same, needing this very check.

mod perf;

use crate::python::layout;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Arguments watched per call (x86_64 has 4 debug registers per thread;
/// nested calls may need some).
const PER_CALL: usize = 2;
/// Armed calls per suspect method, and in all.
const CALLS_PER_METHOD: u32 = 8;
const CALLS_IN_ALL: u32 = 256;
/// Writes noted per watched object and call.
const EVENTS: usize = 32;
/// Threads other than the caller watched per object (the caller and the
/// threads started during the call are always watched).
const OTHER_THREADS: usize = 32;
/// Methods that can be suspects (the stubs of `methods`).
pub(crate) const METHODS: usize = 512;

/// Whether arming is possible: on until refused or turned off.
static STATE: AtomicU8 = AtomicU8::new(UNSET);
const UNSET: u8 = 0;
const ON: u8 = 1;
const OFF: u8 = 2;
const REFUSED: u8 = 3;
/// `errno` of the refusal; [`SIGTRAP_TAKEN`] when the program handles
/// SIGTRAP itself.
static REFUSAL: AtomicI32 = AtomicI32::new(0);
const SIGTRAP_TAKEN: i32 = -1;
const UNDER_VALGRIND: i32 = -2;
/// The program set SIGTRAP's disposition after refwatch installed its
/// handler.
const SIGTRAP_CHANGED: i32 = -3;
/// `si_code` of a SIGTRAP raised by a perf event.
const TRAP_PERF: i32 = 6;
/// The watches armed anywhere, for the handler (which may run on another
/// thread than the one that armed them): `sig_data` is the index plus one.
static REGISTRY: [AtomicPtr<Watch>; 64] = [const { AtomicPtr::new(std::ptr::null_mut()) }; 64];
static ARMED_IN_ALL: AtomicU32 = AtomicU32::new(0);
/// Watches armed right now, on any thread (frees check it first).
static ARMED_NOW: AtomicU32 = AtomicU32::new(0);
/// Per method: calls that left references (suspicion), calls armed.
pub(crate) static SUSPECT: [AtomicU32; METHODS] = [const { AtomicU32::new(0) }; METHODS];
static ARMED: [AtomicU32; METHODS] = [const { AtomicU32::new(0) }; METHODS];
/// Per method: the call site whose borrowed or given-away reference was
/// released without being owned (an `origin` over-release), and calls
/// armed to watch the next ones.
static RELEASE_SITE: [AtomicUsize; METHODS] = [const { AtomicUsize::new(0) }; METHODS];
static RELEASE_ARMED: [AtomicU32; METHODS] = [const { AtomicU32::new(0) }; METHODS];
/// Per method and kind of watch: the increments (or releases) its watched
/// calls left unmatched, by instruction pointer.
static PINS: Mutex<Option<HashMap<(u32, Kind), Counts>>> = Mutex::new(None);

/// How many times each instruction pointer was seen.
type Counts = HashMap<usize, u64>;

/// What a watch looks for.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
enum Kind {
    /// An argument's increments that a call does not give back.
    Increments = 0,
    /// Releases of a borrowed or given-away object that the call never
    /// owned a reference for.
    Releases = 1,
    /// Accesses by the extension to an object its release just freed (a
    /// second release, a use after the free).
    Freed = 2,
}

/// Decides at start whether watchpoints may be used.
pub fn configure(enabled: bool) {
    if !enabled {
        STATE.store(OFF, Ordering::Relaxed);
        return;
    }
    // Under valgrind the watched writes are made by its translated code:
    // the trap would only repeat.
    if under_valgrind() {
        REFUSAL.store(UNDER_VALGRIND, Ordering::Relaxed);
        STATE.store(REFUSED, Ordering::Relaxed);
        return;
    }
    if install_handler() {
        STATE.store(ON, Ordering::Relaxed);
    } else {
        REFUSAL.store(SIGTRAP_TAKEN, Ordering::Relaxed);
        STATE.store(REFUSED, Ordering::Relaxed);
    }
}

/// Whether this process runs under valgrind (its preload is mapped).
fn under_valgrind() -> bool {
    std::fs::read_to_string("/proc/self/maps").is_ok_and(|maps| maps.contains("/vgpreload_"))
}

/// Installs the SIGTRAP handler, unless the program has one of its own.
fn install_handler() -> bool {
    // SAFETY: an all-zero sigaction is a valid value to be overwritten.
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: with a null new action, sigaction only reads the current one.
    if unsafe { libc::sigaction(libc::SIGTRAP, std::ptr::null(), &mut current) } != 0
        || current.sa_sigaction != libc::SIG_DFL
    {
        return false;
    }
    // SAFETY: a handler that only touches registered watches and the
    // watched object's refcount (async-signal-safe), with SA_RESTART so the
    // host's system calls go on.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGTRAP, &action, std::ptr::null_mut()) == 0
    }
}

/// Whether SIGTRAP is still handled by `on_signal`: the program may have
/// installed a handler of its own, or the default action, since.
fn handler_still_ours() -> bool {
    // SAFETY: an all-zero sigaction is a valid value to be overwritten.
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: with a null new action, sigaction only reads the current one.
    let read = unsafe { libc::sigaction(libc::SIGTRAP, std::ptr::null(), &mut current) } == 0;
    read && current.sa_sigaction == on_signal as *const () as usize
}

/// SIGTRAP is the program's again: arm nothing from now on. No line on
/// stderr (the program's output stays its own); the findings say why.
#[cold]
fn give_up_sigtrap() {
    if STATE.load(Ordering::Relaxed) == ON {
        REFUSAL.store(SIGTRAP_CHANGED, Ordering::Relaxed);
        STATE.store(REFUSED, Ordering::Relaxed);
    }
}

/// Why findings are not pinned, for their evidence; `None` when they can be.
pub fn unavailable() -> Option<String> {
    match STATE.load(Ordering::Relaxed) {
        OFF => Some("watchpoints are off (REFWATCH_WATCHPOINTS=off)".into()),
        REFUSED => Some(match REFUSAL.load(Ordering::Relaxed) {
            SIGTRAP_TAKEN => "the program handles SIGTRAP itself, which watchpoints report with".into(),
            SIGTRAP_CHANGED => {
                "the program set SIGTRAP's handling itself, which watchpoints report with".into()
            }
            UNDER_VALGRIND => "watchpoints are off under valgrind".into(),
            errno => format!(
                "the kernel refused a hardware watchpoint ({}; perf_event_paranoid {})",
                std::io::Error::from_raw_os_error(errno),
                std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
                    .map_or("?".into(), |s| s.trim().to_string())
            ),
        }),
        ON => None,
        _ => Some("watchpoints were not set up".into()),
    }
}

/// A call of `method` left references on an argument.
pub fn suspect(method: u32) {
    // Only when watches may be armed: a suspect's calls are followed even
    // under sampling (`methods::stubs`), for nothing otherwise.
    if STATE.load(Ordering::Relaxed) != ON {
        return;
    }
    if let Some(s) = SUSPECT.get(method as usize) {
        s.fetch_add(1, Ordering::Relaxed);
    }
}

/// One write: the instruction after it, and how it changed the count.
#[derive(Clone, Copy)]
#[repr(C)]
struct Write {
    ip: usize,
    delta: i64,
}

/// One watched object of the current call.
#[derive(Clone, Copy)]
#[repr(C)]
struct Watch {
    fd: i32,
    /// Its index in `REGISTRY`.
    id: usize,
    kind: Kind,
    object: usize,
    /// For `Freed`: the return address of the release that freed it.
    site: usize,
    /// The refcount after the last write seen.
    last: u64,
    count: usize,
    events: [Write; EVENTS],
    /// The same watchpoint on other threads (`others` of them).
    others: usize,
    other_fds: [i32; OTHER_THREADS],
}

/// This thread's watches (all zeros: none).
#[repr(C)]
struct Watches {
    slots: [Watch; 4],
}

crate::sys::static_thread_block!(fn watches_block() -> Watches, "refwatch_watches");

/// The slots armed for one call (a bit per slot).
pub type Armed = u8;

/// Whether `method` is a suspect whose calls may be watched (`arm_for`
/// would arm something): the check every method call makes.
#[inline(always)]
pub fn suspected(method: u32) -> bool {
    let m = method as usize;
    STATE.load(Ordering::Relaxed) == ON && m < METHODS && SUSPECT[m].load(Ordering::Relaxed) != 0
}

/// Arms watchpoints on some of `objects` (the arguments of a call of
/// `method`) if the method is a suspect and the limits allow.
///
/// # Safety
/// The objects are alive for the call; the caller holds the GIL.
pub unsafe fn arm_for(method: u32, objects: &[usize]) -> Armed {
    let m = method as usize;
    if !suspected(method) || !another_call(&ARMED[m]) {
        return 0;
    }
    let mut armed: Armed = 0;
    for &object in objects.iter().take(PER_CALL) {
        // SAFETY: forwarded.
        match unsafe { arm_one(object, Kind::Increments, 0) } {
            Some(bit) => armed |= bit,
            None => break,
        }
    }
    armed
}

/// Whether a release of what the call at `site` of method `method` (its
/// stub plus one, as `Association::method`) lends or gives away should be
/// watched.
pub fn wants_release(method: u32, site: usize) -> bool {
    let Some(m) = stub_of(method) else { return false };
    STATE.load(Ordering::Relaxed) == ON && RELEASE_SITE[m].load(Ordering::Relaxed) == site
}

/// The stub index of a method given as stub plus one (0: none), as
/// `Association::method` keeps it.
fn stub_of(method: u32) -> Option<usize> {
    (method as usize).checked_sub(1).filter(|&m| m < METHODS)
}

/// Whether one more call may be armed: within `per_method`'s limit and the
/// process's (both counted).
fn another_call(per_method: &AtomicU32) -> bool {
    per_method.fetch_add(1, Ordering::Relaxed) < CALLS_PER_METHOD && another_arm()
}

/// Whether one more watch may be armed in this process (counted).
fn another_arm() -> bool {
    ARMED_IN_ALL.fetch_add(1, Ordering::Relaxed) < CALLS_IN_ALL
}

/// A reference lent or given away at `site` in a call of `method` (stub
/// plus one) was released without being owned: watch the next ones.
pub fn suspect_release(method: u32, site: usize) {
    if let Some(m) = stub_of(method) {
        RELEASE_SITE[m].store(site, Ordering::Relaxed);
    }
}

/// Arms a watch on the releases of `object` in the current call of
/// `method` (its stub), within the limits.
///
/// # Safety
/// `object` is alive until disarmed (`forget_block` disarms it before a free);
/// the caller holds the GIL.
pub unsafe fn arm_release(method: u32, object: usize) -> Armed {
    let m = method as usize;
    if m >= METHODS || !another_call(&RELEASE_ARMED[m]) {
        return 0;
    }
    // SAFETY: forwarded.
    unsafe { arm_one(object, Kind::Releases, 0) }.unwrap_or(0)
}

/// Frees watched per releasing line (the first ones it makes).
const FREES_PER_SITE: u32 = 4;
const SITES: usize = 1024;
static FREE_SITES: [AtomicUsize; SITES] = [const { AtomicUsize::new(0) }; SITES];
static FREE_COUNTS: [AtomicU32; SITES] = [const { AtomicU32::new(0) }; SITES];

/// Whether one more free by the release at `site` may be watched: a small
/// lock-free table of sites, each watched for its first few frees.
fn free_budget(site: usize) -> bool {
    let home = (site.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) % SITES;
    for i in 0..8 {
        let slot = (home + i) % SITES;
        let key = FREE_SITES[slot].load(Ordering::Relaxed);
        if key == 0 {
            if FREE_SITES[slot].compare_exchange(0, site, Ordering::Relaxed, Ordering::Relaxed).is_err()
                && FREE_SITES[slot].load(Ordering::Relaxed) != site
            {
                continue;
            }
        } else if key != site {
            continue;
        }
        // A plain load first: a site past its budget costs no atomic write.
        return FREE_COUNTS[slot].load(Ordering::Relaxed) < FREES_PER_SITE
            && FREE_COUNTS[slot].fetch_add(1, Ordering::Relaxed) < FREES_PER_SITE;
    }
    false
}

/// The extension's release at `site` just freed `object` inside a call of
/// one of its methods: watch the freed memory's refcount for the rest of
/// the call, for the first few frees of each releasing line. A write by
/// the extension before the memory is used again is a release (or use)
/// after the free: reported when the call returns.
///
/// # Safety
/// The caller holds the GIL; `object` was an object until just now.
pub unsafe fn after_free(object: usize, site: usize) {
    if STATE.load(Ordering::Relaxed) != ON || super::methods::current().is_none() || !free_budget(site) {
        return;
    }
    if !another_arm() {
        return;
    }
    // SAFETY: the watch only reads the refcount word when it is written,
    // which takes the memory to be mapped.
    super::methods::watch_in_current_call(|_| unsafe { arm_one(object, Kind::Freed, site) }.unwrap_or(0));
}

/// Arms one watch in a free slot of this thread; its bit, or `None` when
/// no slot is free or the kernel refused.
///
/// # Safety
/// `object` is alive while watched, unless `kind` is `Freed` (then it is
/// never read).
unsafe fn arm_one(object: usize, kind: Kind, site: usize) -> Option<Armed> {
    if !handler_still_ours() {
        give_up_sigtrap();
        return None;
    }
    // SAFETY: this thread's own block; the handler only touches slots with
    // an object, and this one gets its object before its watchpoint exists.
    let watches = unsafe { &mut *watches_block() };
    let slot = (0..watches.slots.len()).find(|&i| watches.slots[i].object == 0)?;
    // Freed memory may be unmapped already: never read (its accesses carry
    // no change).
    let last = if kind == Kind::Freed {
        0
    } else {
        // SAFETY: the object is alive (caller's contract).
        unsafe { layout::refcount(object) }
    };
    let id = REGISTRY.iter().position(|r| {
        r.compare_exchange(
            std::ptr::null_mut(),
            &mut watches.slots[slot],
            Ordering::AcqRel,
            Ordering::Relaxed,
        )
        .is_ok()
    })?;
    watches.slots[slot] = Watch {
        fd: -1,
        id,
        kind,
        object,
        site,
        last,
        count: 0,
        events: [Write { ip: 0, delta: 0 }; EVENTS],
        others: 0,
        other_fds: [-1; OTHER_THREADS],
    };
    // Freed memory is watched for reads too: 3.12+ read a freed object's
    // refcount word and, finding it "immortal", write nothing.
    let reads = kind == Kind::Freed;
    let address = object + layout::refcount_offset();
    match perf::arm(address, reads, id as u64 + 1, 0) {
        Ok(fd) => {
            watches.slots[slot].fd = fd;
            ARMED_NOW.fetch_add(1, Ordering::Relaxed);
            if kind != Kind::Freed {
                arm_other_threads(&mut watches.slots[slot], address);
            }
            Some(1 << slot)
        }
        Err(error) => {
            release(&mut watches.slots[slot]);
            refuse(error);
            None
        }
    }
}

/// Arms `watch` on the process's threads other than this one, which
/// existed before the call: the ones a method hands its object to (a
/// worker pool) touch it there. Freed memory is not watched there: the
/// extension's own thread is the one that goes on using what it freed.
fn arm_other_threads(watch: &mut Watch, address: usize) {
    // SAFETY: gettid has no preconditions.
    let me = unsafe { libc::gettid() };
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return };
    let tids = tasks.filter_map(|t| t.ok()?.file_name().to_str()?.parse::<libc::pid_t>().ok());
    for tid in tids.filter(|&t| t != me) {
        if watch.others == OTHER_THREADS {
            break;
        }
        // A thread that ended meanwhile, or one the kernel refuses, is
        // left unwatched: the call's own thread is what matters most.
        if let Ok(fd) = perf::arm(address, false, watch.id as u64 + 1, tid) {
            watch.other_fds[watch.others] = fd;
            watch.others += 1;
        }
    }
}

/// Stops a watch: its watchpoints, its registration, its slot.
fn release(watch: &mut Watch) {
    for fd in watch.other_fds[..watch.others].iter_mut() {
        perf::disarm(*fd);
        *fd = -1;
    }
    watch.others = 0;
    if watch.fd >= 0 {
        perf::disarm(watch.fd);
        watch.fd = -1;
        ARMED_NOW.fetch_sub(1, Ordering::Relaxed);
    }
    REGISTRY[watch.id].store(std::ptr::null_mut(), Ordering::Release);
    watch.object = 0;
}

/// Whether any watch is armed right now (then a free must disarm those on
/// its memory: `forget_block`).
#[inline(always)]
pub fn armed_now() -> bool {
    ARMED_NOW.load(Ordering::Relaxed) != 0
}

/// The memory block at `block` is about to be freed: stop watching the
/// object in it (0, 16 or 32 bytes in) on this thread.
///
/// # Safety
/// The caller holds the GIL.
#[inline(always)]
pub unsafe fn forget_block(block: usize) {
    if armed_now() {
        // SAFETY: forwarded.
        unsafe { disarm_block(block) };
    }
}

/// `forget_block` while some watch is armed.
///
/// # Safety
/// The caller holds the GIL.
#[cold]
unsafe fn disarm_block(block: usize) {
    // SAFETY: this thread's own block.
    let watches = unsafe { &mut *watches_block() };
    for watch in
        watches.slots.iter_mut().filter(|w| w.object != 0 && (block..=block + 32).contains(&w.object))
    {
        release(watch);
    }
}

#[cold]
fn refuse(error: std::io::Error) {
    REFUSAL.store(error.raw_os_error().unwrap_or(0), Ordering::Relaxed);
    if STATE.swap(REFUSED, Ordering::Relaxed) == ON {
        crate::sys::warn(format_args!(
            "{}: leaks by an inline Py_INCREF stay at function level",
            unavailable().unwrap_or_default()
        ));
    }
}

/// Disarms the watches of one call and keeps, for `method`, the increments
/// the watched extensions' code made and did not give back, on each
/// argument the call left with more references (`grew` says which).
/// Increments and releases pair up like brackets (a release matches the
/// latest increment not yet matched); writes made by the interpreter (a
/// container storing the object) are left out.
///
/// # Safety
/// Called on the thread that armed them, after the call returned.
pub unsafe fn disarm(method: u32, armed: Armed, grew: impl Fn(usize) -> bool) {
    // SAFETY: this thread's own block.
    let watches = unsafe { &mut *watches_block() };
    let extensions = crate::interpose::watched();
    let in_extension = |ip: usize| extensions.iter().any(|w| w.contains(ip));
    let mut unmatched: Vec<(Kind, usize)> = Vec::new();
    for slot in 0..watches.slots.len() {
        if armed & (1 << slot) == 0 || watches.slots[slot].object == 0 {
            continue; // not armed for this call, or forgotten (freed)
        }
        let watch = watches.slots[slot];
        release(&mut watches.slots[slot]);
        if watch.kind == Kind::Freed {
            after_free_writes(&watch, &in_extension);
            continue;
        }
        // Every write must have been noted for the pairing to hold.
        if watch.count > EVENTS || (watch.kind == Kind::Increments && !grew(watch.object)) {
            continue;
        }
        let mut open: Vec<usize> = Vec::new();
        for write in watch.events[..watch.count].iter().filter(|w| in_extension(w.ip)) {
            if write.delta > 0 {
                open.extend(std::iter::repeat_n(write.ip, write.delta as usize));
            } else {
                for _ in 0..write.delta.unsigned_abs() {
                    if open.pop().is_none() && watch.kind == Kind::Releases {
                        unmatched.push((Kind::Releases, write.ip));
                    }
                }
            }
        }
        if watch.kind == Kind::Increments {
            unmatched.extend(open.into_iter().map(|ip| (Kind::Increments, ip)));
        }
    }
    if unmatched.is_empty() {
        return;
    }
    let mut pins = PINS.lock().unwrap_or_else(|e| e.into_inner());
    let pins = pins.get_or_insert_with(HashMap::new);
    for (kind, ip) in unmatched {
        *pins.entry((method, kind)).or_default().entry(ip).or_default() += 1;
    }
}

/// The extension's accesses to freed memory, before anything else touched
/// it (the interpreter reusing the memory), are reported, once per line.
fn after_free_writes(watch: &Watch, in_extension: &dyn Fn(usize) -> bool) {
    let accesses = &watch.events[..watch.count.min(EVENTS)];
    let mut seen = Vec::new();
    for access in accesses.iter().take_while(|w| in_extension(w.ip)) {
        if !seen.contains(&access.ip) {
            seen.push(access.ip);
            if let Some(verdicts) = super::verdicts() {
                (verdicts.after_free)(access.ip, watch.site);
            }
        }
    }
}

/// The instructions (each the one after an increment) whose increments
/// were left unmatched by watched calls of `method`, with how many.
pub fn increments(method: u32) -> Vec<(usize, u64)> {
    pinned(method, Kind::Increments)
}

/// The instructions (each the one after a release) whose releases of a
/// borrowed or given-away object watched calls of `method` (stub plus one,
/// as `Association::method`) made without owning a reference, with how
/// many.
pub fn releases(method: u32) -> Vec<(usize, u64)> {
    stub_of(method).map_or(Vec::new(), |m| pinned(m as u32, Kind::Releases))
}

/// Calls of `method` (stub plus one) armed to watch releases.
pub fn release_calls(method: u32) -> u32 {
    stub_of(method).map_or(0, |m| RELEASE_ARMED[m].load(Ordering::Relaxed).min(CALLS_PER_METHOD))
}

fn pinned(method: u32, kind: Kind) -> Vec<(usize, u64)> {
    let pins = PINS.lock().unwrap_or_else(|e| e.into_inner());
    let Some(by_ip) = pins.as_ref().and_then(|p| p.get(&(method, kind))) else { return Vec::new() };
    by_ip.iter().map(|(&ip, &n)| (ip, n)).collect()
}

/// How many calls of `method` were watched.
pub fn armed_calls(method: u32) -> u32 {
    ARMED.get(method as usize).map_or(0, |a| a.load(Ordering::Relaxed).min(CALLS_PER_METHOD))
}

/// An access to a watched refcount (a `TRAP_PERF` SIGTRAP, on the thread
/// that made it): note where and by how much. Any other SIGTRAP gets the
/// default action, as it would without refwatch.
extern "C" fn on_signal(signal: i32, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo and ucontext; for TRAP_PERF,
    // `si_perf_data` follows si_signo, si_errno, si_code, the padding and
    // si_addr.
    let (code, data, ip) = unsafe {
        let context = &*(context as *const libc::ucontext_t);
        (
            (*info).si_code,
            *((info as *const u8).add(24) as *const u64),
            context.uc_mcontext.gregs[libc::REG_RIP as usize] as usize,
        )
    };
    let watch = (code == TRAP_PERF)
        .then(|| REGISTRY.get((data as usize).wrapping_sub(1)))
        .flatten()
        .map(|r| r.load(Ordering::Acquire))
        .filter(|w| !w.is_null());
    let Some(watch) = watch else {
        // SAFETY: restoring the default action and raising again is what
        // the signal would have done had refwatch not been there.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
        return;
    };
    // SAFETY: a registered watch lives in its owner's TLS block until it is
    // released, which the owner does only after disabling the watchpoint,
    // holding the GIL; the access that raised this signal was made with the
    // GIL held by this thread, so the owner is not releasing it now.
    let watch = unsafe { &mut *watch };
    // Freed memory is watched for reads as well: reading it here would
    // trigger the watch again, so its accesses carry no change.
    let delta = if watch.kind == Kind::Freed {
        0
    } else {
        // SAFETY: the watched object is alive for the call it is armed in.
        let now = unsafe { layout::refcount(watch.object) };
        let delta = now as i64 - watch.last as i64;
        watch.last = now;
        delta
    };
    if watch.count < EVENTS {
        watch.events[watch.count] = Write { ip, delta };
    }
    watch.count += 1;
}
