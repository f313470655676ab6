//! Python-side work: registering the at-exit and at-fork callbacks, and
//! computing totals (refcount total, refchain walk, census).
//!
//! All of it runs on a Python thread with the GIL held, never on refwatch's
//! own thread (docs/design.md §3.8: a foreign thread racing finalization can be
//! killed or hang): right away when the caller holds the GIL, otherwise
//! through `Py_AddPendingCall`, and never once the at-exit callback has run.

use super::api::{api, Api, MethodDef, PyObject, METH_NOARGS, PY_EVAL_INPUT, PY_FILE_INPUT};
use refwatch_model::event::TypeCount;
use refwatch_model::Totals;
use std::ffi::{c_int, c_void, CStr};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::{Mutex, OnceLock};

/// What refwatch does when the interpreter calls it back, handed in by the
/// agent's doors before anything is registered. Each runs on a Python
/// thread with the GIL held.
pub struct Callbacks {
    /// Python's at-exit callback.
    pub at_exit: fn(),
    /// `os.register_at_fork`'s three hooks.
    pub before_fork: fn(),
    pub after_fork_parent: fn(),
    pub after_fork_child: fn(),
    /// The main thread's safe point after a fork (see `start_reporter_later`).
    pub start_reporter: fn(),
    /// The main thread's safe point the reporter asked for; `deep` at the
    /// census interval.
    pub safe_point: fn(deep: bool),
}

static CALLBACKS: OnceLock<&'static Callbacks> = OnceLock::new();

/// Sets what the callbacks do (once, before the first registration).
pub fn set_callbacks(callbacks: &'static Callbacks) {
    let _ = CALLBACKS.set(callbacks);
}

/// Calls one of the handed-in callbacks, if they were handed in.
fn call_back(which: impl FnOnce(&Callbacks)) {
    if let Some(callbacks) = CALLBACKS.get() {
        which(callbacks);
    }
}

/// Module-free globals dict holding refwatch's Python helpers.
static GLOBALS: AtomicPtr<PyObject> = AtomicPtr::new(null_mut());
static REGISTERED: AtomicBool = AtomicBool::new(false);
/// Set by the at-exit callback, under the lock, so that no pending call is
/// added once finalization may begin.
static CLOSING: Mutex<bool> = Mutex::new(false);
/// The latest totals the main thread handed over.
static LATEST: Mutex<Option<Totals>> = Mutex::new(None);
/// A pending call for totals is queued and has not run yet.
static PENDING: AtomicBool = AtomicBool::new(false);

const SETUP: &CStr = c"
import atexit as _atexit, gc as _gc, os as _os, sys as _sys
_atexit.register(_rw_atexit)
if hasattr(_os, 'register_at_fork'):
    _os.register_at_fork(before=_rw_before_fork, after_in_parent=_rw_after_fork_parent,
                         after_in_child=_rw_after_fork_child)

def _rw_gc_pause():
    # Pauses the collector (for a walk that reads objects it does not hold);
    # '1' when it was enabled.
    was = _gc.isenabled()
    _gc.disable()
    return '1' if was else '0'

def _rw_totals(census):
    out = []
    total = getattr(_sys, 'gettotalrefcount', None)
    if total is not None:
        out.append('refs %d' % total())
    objs = None
    if hasattr(_sys, 'getobjects'):
        objs, how = _sys.getobjects(0), 'refchain'
    elif census:
        objs, how = _gc.get_objects(), 'census'
    if objs is not None:
        counts = {}
        refsum = 0
        for o in objs:
            name = type(o).__name__
            counts[name] = counts.get(name, 0) + 1
            if how == 'census':
                n = _sys.getrefcount(o) - 2   # the list's and the argument's
                if n < (1 << 30):             # immortal objects (3.12+) excluded
                    refsum += n
        out.append('objects %d %s' % (len(objs), how))
        if how == 'census':
            out.append('refsum %d' % refsum)
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        out.extend('type %d %s' % (n, t.replace(chr(10), ' ')) for t, n in top)
        del objs
    return chr(10).join(out)
";

/// Registers refwatch's callbacks with the interpreter, if the calling thread
/// may run Python code. Returns whether they are registered (now or before).
pub fn register_if_possible() -> bool {
    if REGISTERED.load(Ordering::Acquire) {
        return true;
    }
    let Some(api) = api().filter(|a| a.can_run_python()) else { return false };
    // SAFETY: this thread holds the GIL and the interpreter is running.
    let ok = unsafe { register(api) };
    REGISTERED.store(ok, Ordering::Release);
    ok
}

struct Methods([MethodDef; 4]);
// SAFETY: the definitions are immutable and point at static strings and
// functions only.
unsafe impl Sync for Methods {}

static METHODS: Methods = Methods([
    MethodDef { name: c"_rw_atexit".as_ptr(), meth: at_exit, flags: METH_NOARGS, doc: std::ptr::null() },
    MethodDef {
        name: c"_rw_before_fork".as_ptr(),
        meth: before_fork,
        flags: METH_NOARGS,
        doc: std::ptr::null(),
    },
    MethodDef {
        name: c"_rw_after_fork_parent".as_ptr(),
        meth: after_fork_parent,
        flags: METH_NOARGS,
        doc: std::ptr::null(),
    },
    MethodDef {
        name: c"_rw_after_fork_child".as_ptr(),
        meth: after_fork_child,
        flags: METH_NOARGS,
        doc: std::ptr::null(),
    },
]);

/// A new dict of globals with the builtins, for code refwatch runs.
///
/// # Safety
/// The caller holds the GIL of a running interpreter.
unsafe fn new_globals(api: &Api) -> Option<*mut PyObject> {
    // SAFETY: GIL held (caller's contract); the dict is checked for NULL.
    unsafe {
        let globals = (api.dict_new)();
        if globals.is_null() {
            return None;
        }
        (api.dict_set_item_string)(globals, c"__builtins__".as_ptr(), (api.eval_get_builtins)());
        Some(globals)
    }
}

/// The `tp_dealloc` of classes made by a class statement (the interpreter's
/// `subtype_dealloc`, which it does not export), read off a class made for
/// the purpose. `None` when Python cannot run now.
pub fn class_dealloc() -> Option<usize> {
    let api = api().filter(|a| a.can_run_python())?;
    // SAFETY: can_run_python: the GIL is held; the globals and the class are
    // new references, released here.
    unsafe {
        let globals = new_globals(api)?;
        let class = keeping_error_state(api, || {
            (api.run_string_flags)(
                c"type('refwatch_probe', (), {})".as_ptr(),
                PY_EVAL_INPUT,
                globals,
                globals,
                null_mut(),
            )
        });
        (api.decref)(globals);
        if class.is_null() {
            return None;
        }
        let dealloc = super::layout::dealloc_of(class as usize);
        (api.decref)(class);
        Some(dealloc)
    }
}

/// # Safety
/// The caller holds the GIL of a running interpreter.
unsafe fn register(api: &Api) -> bool {
    // SAFETY: GIL held (caller's contract); every object created here is
    // checked for NULL and kept for the life of the process.
    unsafe {
        let Some(globals) = new_globals(api) else { return false };
        for def in &METHODS.0 {
            let function = (api.cfunction_new_ex)(def, null_mut(), null_mut());
            if function.is_null() {
                return false;
            }
            (api.dict_set_item_string)(globals, def.name, function);
            (api.decref)(function);
        }
        GLOBALS.store(globals, Ordering::Release);
        match run(api, SETUP, PY_FILE_INPUT) {
            Some(result) => {
                (api.decref)(result);
                true
            }
            None => false,
        }
    }
}

/// Runs `code` in refwatch's globals; `None` if it raised (the exception is
/// dropped, and any exception already pending is kept as it was).
///
/// # Safety
/// The caller holds the GIL; `GLOBALS` is set.
unsafe fn run(api: &Api, code: &CStr, start: c_int) -> Option<*mut PyObject> {
    let globals = GLOBALS.load(Ordering::Acquire);
    // SAFETY: GIL held (caller's contract).
    let result = unsafe {
        keeping_error_state(api, || {
            (api.run_string_flags)(code.as_ptr(), start, globals, globals, null_mut())
        })
    };
    (!result.is_null()).then_some(result)
}

/// Runs `f`, dropping any exception it raises and leaving the exception
/// that was pending before (if any) as it was.
///
/// # Safety
/// The caller holds the GIL; `f` only makes C-API calls allowed with it.
unsafe fn keeping_error_state<T>(api: &Api, f: impl FnOnce() -> T) -> T {
    let mut saved: [*mut PyObject; 3] = [null_mut(); 3];
    let mut raised: [*mut PyObject; 3] = [null_mut(); 3];
    // SAFETY: GIL held (caller's contract); the out-pointers are valid; the
    // fetched references are restored or released exactly once.
    unsafe {
        (api.err_fetch)(&mut saved[0], &mut saved[1], &mut saved[2]);
        let value = f();
        (api.err_fetch)(&mut raised[0], &mut raised[1], &mut raised[2]);
        for object in raised.into_iter().filter(|o| !o.is_null()) {
            (api.decref)(object);
        }
        (api.err_restore)(saved[0], saved[1], saved[2]);
        value
    }
}

/// The text of a str object, which this releases (a new reference).
///
/// # Safety
/// The caller holds the GIL; `text` is NULL or a new reference to a str.
unsafe fn take_text(api: &Api, text: *mut PyObject) -> Option<String> {
    if text.is_null() {
        return None;
    }
    // SAFETY: caller's contract; the UTF-8 buffer lives as long as the
    // object, which is released only after it is copied.
    unsafe {
        let utf8 = (api.unicode_as_utf8)(text);
        let owned = (!utf8.is_null()).then(|| CStr::from_ptr(utf8).to_string_lossy().into_owned());
        (api.decref)(text);
        owned
    }
}

/// The C-API, when the calling thread may run Python code now and
/// refwatch's helpers are registered.
fn registered_api() -> Option<&'static Api> {
    api().filter(|a| a.can_run_python() && REGISTERED.load(Ordering::Acquire))
}

/// Computes totals now. `census`: walk the gc's objects on release builds.
pub fn totals_now(census: bool) -> Option<Totals> {
    let api = registered_api()?;
    let code = if census { c"_rw_totals(True)" } else { c"_rw_totals(False)" };
    // SAFETY: can_run_python: this thread holds the GIL of a running
    // interpreter; registration set GLOBALS.
    let text = unsafe { take_text(api, run(api, code, PY_EVAL_INPUT)?)? };
    let totals = parse_totals(&text);
    *LATEST.lock().unwrap_or_else(|e| e.into_inner()) = Some(totals.clone());
    Some(totals)
}

fn parse_totals(text: &str) -> Totals {
    let mut totals = Totals::default();
    for line in text.lines() {
        let mut parts = line.splitn(3, ' ');
        let (key, n) = (parts.next(), parts.next().and_then(|n| n.parse::<i64>().ok()));
        match (key, n) {
            (Some("refs"), Some(n)) => totals.refs = Some(n),
            (Some("objects"), Some(n)) => {
                totals.objects = Some(n as u64);
                totals.objects_from = parts.next().map(str::to_string);
            }
            (Some("refsum"), Some(n)) => totals.refcount_sum = Some(n as u64),
            (Some("type"), Some(n)) => totals
                .by_type
                .push(TypeCount { type_name: parts.next().unwrap_or("?").to_string(), count: n as u64 }),
            _ => {}
        }
    }
    totals
}

const PENDING_TOTALS: usize = 1;
const PENDING_CENSUS: usize = 2;
const PENDING_START_REPORTER: usize = 3;

/// Starts the reporter from the main thread's next safe point, which comes
/// after `os.fork()` returned: Python 3.13 counts the process's threads
/// after running the after-fork hooks, so the reporter must not be back yet.
pub fn start_reporter_later() {
    let closing = CLOSING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(api) = api().filter(|_| !*closing) {
        // SAFETY: called with the GIL held from an after-fork hook; the
        // interpreter is running and not closing.
        unsafe { (api.add_pending_call)(pending, PENDING_START_REPORTER as *mut c_void) };
    }
}

/// From refwatch's thread: asks the main thread for fresh totals at its next
/// safe point (unless such a request is still pending), and returns the
/// latest totals it handed over, which may be an interval old, or older if
/// the main thread is busy outside bytecode. Never waits. `census`: also
/// the costly checks (a gc census on release builds, the leak check).
pub fn request_totals(census: bool) -> Option<Totals> {
    queue(if census { PENDING_CENSUS } else { PENDING_TOTALS });
    LATEST.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Asks the main thread for the costly checks (the periodic leak check) at
/// its next safe point, unless a request is still pending: what `checks`
/// does without the reporter. Never runs them here (the caller may be in
/// the middle of an extension's call).
pub fn request_check() {
    queue(PENDING_CENSUS);
}

/// Queues the pending call `arg`, one at a time, never once closing.
fn queue(arg: usize) {
    let closing = CLOSING.lock().unwrap_or_else(|e| e.into_inner());
    let already = PENDING.swap(true, Ordering::AcqRel);
    match api() {
        // SAFETY: Py_IsInitialized may be called from any thread;
        // Py_AddPendingCall is documented as callable from any thread and is
        // not called once the at-exit callback set CLOSING.
        Some(api) if !*closing && !already && unsafe { (api.is_initialized)() } != 0 => unsafe {
            let rc = (api.add_pending_call)(pending, arg as *mut c_void);
            if rc != 0 {
                PENDING.store(false, Ordering::Release);
            }
        },
        _ if !already => PENDING.store(false, Ordering::Release),
        _ => {}
    }
}

/// Runs on the main thread with the GIL held.
unsafe extern "C" fn pending(arg: *mut c_void) -> c_int {
    if *CLOSING.lock().unwrap_or_else(|e| e.into_inner()) {
        return 0;
    }
    if arg as usize == PENDING_START_REPORTER {
        call_back(|c| (c.start_reporter)());
        return 0;
    }
    if register_if_possible() {
        let deep = arg as usize == PENDING_CENSUS;
        call_back(|c| (c.safe_point)(deep));
    }
    // Only now may refwatch's thread queue the next one: a call queued
    // while this one runs would keep the count of pending calls from going
    // down, and the interpreter making the last pending calls at shutdown
    // (before the at-exit callbacks) asserts that it does (3.13+ debug).
    PENDING.store(false, Ordering::Release);
    0
}

/// Stops further pending calls: called first thing at exit.
pub fn close() {
    *CLOSING.lock().unwrap_or_else(|e| e.into_inner()) = true;
}

/// Returns a new reference to `None` (what a METH_NOARGS function returns).
fn none() -> *mut PyObject {
    match api() {
        Some(api) => {
            // SAFETY: called from a Python callback, GIL held; `none` is the
            // None singleton.
            unsafe { (api.incref)(api.none) };
            api.none
        }
        None => null_mut(),
    }
}

unsafe extern "C" fn at_exit(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    call_back(|c| (c.at_exit)());
    none()
}

unsafe extern "C" fn before_fork(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    call_back(|c| (c.before_fork)());
    none()
}

unsafe extern "C" fn after_fork_parent(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    call_back(|c| (c.after_fork_parent)());
    none()
}

unsafe extern "C" fn after_fork_child(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    *CLOSING.lock().unwrap_or_else(|e| e.into_inner()) = false;
    call_back(|c| (c.after_fork_child)());
    none()
}

/// The child of a fork starts with no totals of its own.
pub fn forget_totals() {
    *LATEST.lock().unwrap_or_else(|e| e.into_inner()) = None;
    PENDING.store(false, Ordering::Release);
}

/// Runs `f` with the garbage collector paused (and then as it was), so that
/// no collection frees objects `f` reads without holding references to
/// them. `None` if Python could not be asked.
pub fn with_gc_paused<T>(f: impl FnOnce() -> T) -> Option<T> {
    let api = registered_api()?;
    // SAFETY: can_run_python: the GIL is held; results are new references,
    // released by take_text.
    unsafe {
        let was_enabled = take_text(api, run(api, c"_rw_gc_pause()", PY_EVAL_INPUT)?)? == "1";
        // The types' method cache holds references to the attribute names
        // looked up last, where no walk sees them: let them go first.
        (api.type_clear_cache)();
        let value = f();
        if was_enabled {
            if let Some(none) = run(api, c"_gc.enable()", PY_EVAL_INPUT) {
                (api.decref)(none);
            }
        }
        Some(value)
    }
}

/// Calls `f` with a list of every object the garbage collector tracks
/// (`gc.get_objects()`), which holds them meanwhile. `None` if Python could
/// not be asked.
pub fn with_gc_objects<T>(f: impl FnOnce(usize) -> T) -> Option<T> {
    let api = registered_api()?;
    // SAFETY: can_run_python: the GIL is held; the list is a new reference,
    // released after `f`.
    unsafe {
        let list = run(api, c"_gc.get_objects()", PY_EVAL_INPUT)?;
        let value = f(list as usize);
        (api.decref)(list);
        Some(value)
    }
}

/// The Python line running now (file, line), when this thread holds the
/// GIL and runs Python code: the line that drove what the extension did.
pub fn current_line() -> Option<(String, u32)> {
    let api = api().filter(|a| a.can_run_python())?;
    // SAFETY: the GIL is held (can_run_python). The frame is borrowed; the
    // code object and file name are new references, released here.
    unsafe {
        let frame = (api.eval_get_frame)();
        if frame.is_null() {
            return None;
        }
        keeping_error_state(api, || {
            let line = (api.frame_get_line_number)(frame);
            let code = (api.frame_get_code)(frame);
            if code.is_null() {
                return None;
            }
            let file = take_text(api, (api.object_get_attr_string)(code, c"co_filename".as_ptr()));
            (api.decref)(code);
            Some((file?, u32::try_from(line).ok()?))
        })
    }
}
