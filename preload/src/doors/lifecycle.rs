//! The agent's life in a process: dormant until the first watched object is
//! seen (so `sh`, `ls` and pyenv shims that inherit LD_PRELOAD are left
//! alone), then started once; stopped for forks; the summary written once at
//! exit, whichever way the process ends.

use super::reporter as thread;
use crate::follow::{methods, provenance};
use crate::interpose::Wiring;
use crate::python::{api, facts, runtime};
use crate::{count, findings, hooks, report, symbolize, sys};
use refwatch_model::{event::SCHEMA, Event, Flavour, SettingError, Settings};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, Once, OnceLock};
use std::time::Instant;

/// The settings as read (invalid values left at their defaults) and the
/// invalid values, read once when the first object using the C-API is seen.
static PARSED: OnceLock<(Settings, Vec<SettingError>)> = OnceLock::new();
/// Set once the agent started with valid settings.
static SETTINGS: OnceLock<&'static Settings> = OnceLock::new();
static INVALID_REPORTED: Once = Once::new();
static START: Once = Once::new();
static ACTIVE: AtomicBool = AtomicBool::new(false);
static STARTED_AT: Mutex<Option<Instant>> = Mutex::new(None);
static FLAVOUR: OnceLock<Flavour> = OnceLock::new();
static SEQ: AtomicU64 = AtomicU64::new(0);
static SUMMARY_WRITTEN: AtomicBool = AtomicBool::new(false);
/// The C-level fork handler stopped the reporter (a fork Python did not
/// announce), so the parent handler restarts it.
static STOPPED_FOR_C_FORK: AtomicBool = AtomicBool::new(false);

/// The settings once the agent started.
fn settings() -> Option<&'static Settings> {
    SETTINGS.get().copied()
}

/// What interposition is handed at each scan of the loaded objects.
pub static WIRING: Wiring = Wiring { should_watch, entry_for: hooks::entry_for };

/// What following hands up to the findings.
static VERDICTS: crate::follow::Verdicts = crate::follow::Verdicts {
    freed: findings::overrelease::freed,
    after_free: findings::overrelease::after_free,
    returned_unowned: findings::overrelease::returned_unowned,
};

/// What the interpreter's callbacks do.
static CALLBACKS: runtime::Callbacks = runtime::Callbacks {
    at_exit: on_python_exit,
    before_fork: before_python_fork,
    after_fork_parent: after_python_fork_parent,
    after_fork_child: after_python_fork_child,
    start_reporter,
    safe_point,
};

/// Decides whether an object that uses the C-API is watched, starting the
/// agent for the first one. Settings are validated here, so a process that
/// never loads a watched object stays silent even with a bad value; one that
/// does gets one line per invalid value and runs unwatched.
pub fn should_watch(basename: &str, stdlib: bool) -> bool {
    let (settings, errors) = PARSED.get_or_init(|| Settings::from_lookup(sys::env));
    super::modules::classified(&settings.modules, basename);
    if !settings.modules.watches(basename, stdlib) {
        return false;
    }
    if !errors.is_empty() {
        INVALID_REPORTED.call_once(|| {
            for e in errors {
                sys::warn(format_args!("{}", e.to_string().trim_start_matches("refwatch: ")));
            }
            sys::warn(format_args!("not watching this process; the program runs unchanged"));
        });
        return false;
    }
    START.call_once(|| start(settings));
    ACTIVE.load(Ordering::Acquire)
}

fn start(settings: &'static Settings) {
    if api::api().is_none() || !count::registry::init() {
        sys::warn(format_args!("this process has no usable Python C-API; not watching it"));
        return;
    }
    SETTINGS.get_or_init(|| settings);
    hand_down(settings);
    count::set_sample(settings.sample);
    hooks::resolve();
    methods::resolve(settings.sample);
    crate::follow::watch::configure(settings.watchpoints);
    let flavour = FLAVOUR.get_or_init(facts::flavour);
    provenance::enable(flavour.gil, settings.sample);
    *STARTED_AT.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    // SAFETY: the three handlers are `extern "C" fn()` that stay valid for
    // the life of the process (this library is never unloaded).
    unsafe { libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child)) };
    sys::crash::install();
    ACTIVE.store(true, Ordering::Release);
    report::emit_start();
    // Usually possible right away: Python holds the GIL while it imports an
    // extension. Otherwise the reporter's first pending call does it.
    runtime::register_if_possible();
    thread::start();
}

/// Hands each floor below what it needs of the settings, and what it must
/// ask of the floors above it.
fn hand_down(settings: &'static Settings) {
    report::configure(report::Config { output: &settings.output, format: settings.format, start_event });
    thread::configure(settings.interval, settings.census);
    // Without the reporter, the extension's calls queue the periodic check.
    let every = if settings.interval.is_zero() { settings.census } else { std::time::Duration::ZERO };
    crate::python::checks::configure(every);
    findings::overrelease::configure(settings.on_overrelease);
    symbolize::name_tail_calls_with(methods::tail_call_function);
    crate::follow::hand_verdicts_to(&VERDICTS);
    runtime::set_callbacks(&CALLBACKS);
}

/// The `start` event for this process.
pub fn start_event() -> Event {
    let python = api::api().map(|a| a.version()).unwrap_or_default();
    let executable =
        std::fs::read_link("/proc/self/exe").map(|p| p.display().to_string()).unwrap_or_default();
    let settings = settings()
        .map(|s| s.effective().into_iter().map(|(k, v)| (k.to_string(), v.into())).collect())
        .unwrap_or_default();
    Event::Start {
        pid: sys::getpid(),
        schema: SCHEMA,
        refwatch: env!("CARGO_PKG_VERSION").to_string(),
        python,
        flavour: FLAVOUR.get().cloned().unwrap_or_default(),
        executable,
        settings,
    }
}

/// Release builds have no refcount total: a gc census is the nearest thing.
fn census_applies() -> bool {
    FLAVOUR.get().is_some_and(|f| !f.debug)
}

pub fn next_seq() -> u64 {
    SEQ.fetch_add(1, Ordering::Relaxed) + 1
}

/// Seconds since the agent started in this process.
pub fn elapsed() -> f64 {
    let started = *STARTED_AT.lock().unwrap_or_else(|e| e.into_inner());
    started.map_or(0.0, |t| t.elapsed().as_secs_f64())
}

/// Python's at-exit callback: the interpreter still runs and this thread
/// holds the GIL, so the summary gets fresh totals.
pub fn on_python_exit() {
    runtime::close();
    thread::stop();
    write_summary(analyze(true));
    tell_unmatched_modules();
}

/// Names the `REFWATCH_MODULES` globs that matched nothing (once, at exit,
/// started or not).
fn tell_unmatched_modules() {
    if let Some((settings, _)) = PARSED.get() {
        super::modules::tell_unmatched(&settings.modules);
    }
}

/// `_exit`/`_Exit`, or the library's destructor at `exit`: write the summary
/// if Python's at-exit callback did not.
pub fn on_process_exit() {
    finish(true);
}

/// Stops the reporter and writes the summary unless it was written.
/// `with_python`: the interpreter may still be asked for totals (`os._exit`
/// is called with the GIL held; `totals_now` checks that it is).
fn finish(with_python: bool) {
    tell_unmatched_modules();
    if !ACTIVE.load(Ordering::Acquire) || SUMMARY_WRITTEN.load(Ordering::Acquire) {
        return;
    }
    thread::stop();
    let analysis = analyze(with_python);
    runtime::close();
    write_summary(analysis);
}

/// What the walks of the heap found: leaks (with what is still held) and
/// totals.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Analysis {
    leaks: Option<(Vec<refwatch_model::Finding>, Vec<refwatch_model::Held>)>,
    totals: Option<refwatch_model::Totals>,
}

/// Walks the heap for the summary, in a copy of the process (`isolate`):
/// a heap the program corrupted crashes the copy, not the program.
/// `with_python`: the interpreter may still be asked for totals.
fn analyze(with_python: bool) -> Analysis {
    if !with_python || !crate::python::api::api().is_some_and(|a| a.can_run_python()) {
        return Analysis { leaks: findings::leaks::check(), totals: None };
    }
    crate::follow::provenance::deaths::keep_seeing_deaths();
    let work = || Analysis { leaks: findings::leaks::check(), totals: runtime::totals_now(census_applies()) };
    isolated("at exit", work).unwrap_or_default()
}

/// `work` in a copy of the process; `None` (after one line saying why) when
/// the copy crashed or was stopped (stuck). Where no copy can be made,
/// `work` runs here. The copy is not made by `fork`, so none of the fork
/// handlers below runs for it (`sys::isolate`).
fn isolated<T: serde::Serialize + serde::de::DeserializeOwned>(
    when: &str,
    work: impl Fn() -> T,
) -> Option<T> {
    // The reporter is stopped around the copy: a lock it held at that moment
    // (the symbolizer's, the output's) would never be released in the copy.
    let reporter = thread::stop();
    let answer = crate::sys::isolate::in_copy(&work);
    if reporter {
        thread::start();
    }
    match answer {
        Ok(answer) => Some(answer),
        Err(crate::sys::isolate::Failure::Signal(signal)) => {
            sys::warn(format_args!(
                "the walk of the heap {when} crashed (signal {signal}) in a copy of the process, which \
                 leaves the program unharmed: the heap holds a pointer to a freed object (an over-release); \
                 leak findings and totals are left out"
            ));
            None
        }
        Err(crate::sys::isolate::Failure::Stopped(why)) => {
            sys::warn(format_args!(
                "the walk of the heap {when} {why} in a copy of the process, which was stopped; \
                 the check was skipped (leak findings and totals are left out)"
            ));
            None
        }
        Err(crate::sys::isolate::Failure::Other(why)) => {
            sys::warn(format_args!("walking the heap {when} in the process itself: {why}"));
            Some(work())
        }
    }
}

/// A source line: file and line number.
type Line = (Option<String>, Option<u32>);

/// Leak sizes per line at the previous periodic check.
static PREVIOUS_CHECK: Mutex<Vec<(Line, u64)>> = Mutex::new(Vec::new());

/// A periodic leak check (GIL held, at the census interval): a line whose
/// unheld references grew since the previous check, and are at least the
/// rule's minimum, is established now and streamed, without waiting for the
/// exit.
pub fn periodic_check() {
    let Some((leaks, _)) = isolated("for a periodic check", findings::leaks::check).flatten() else { return };
    let mut previous = PREVIOUS_CHECK.lock().unwrap_or_else(|e| e.into_inner());
    let now: Vec<(Line, u64)> = leaks.iter().map(|f| ((f.file.clone(), f.line), f.count)).collect();
    for leak in leaks {
        let key = (leak.file.clone(), leak.line);
        let grew = previous.iter().any(|(k, count)| *k == key && leak.count > *count);
        if grew {
            let (finding, new) = findings::establish(leak);
            if new {
                report::emit(&Event::Finding { pid: sys::getpid(), finding });
            }
        }
    }
    *previous = now;
}

/// The final check and the summary. With the GIL (Python's at-exit
/// callback, `os._exit`), leaks are checked first and each new one written
/// as a finding; without it, the summary repeats what was found before.
fn write_summary(analysis: Analysis) {
    if !ACTIVE.load(Ordering::Acquire) || SUMMARY_WRITTEN.swap(true, Ordering::AcqRel) {
        return;
    }
    let mut held = Vec::new();
    if let Some((leaks, still_held)) = analysis.leaks {
        held = still_held;
        for leak in leaks {
            let (finding, new) = findings::establish(leak);
            if new {
                report::emit(&Event::Finding { pid: sys::getpid(), finding });
            }
        }
    }
    report::emit(&Event::Summary {
        pid: sys::getpid(),
        elapsed: elapsed(),
        sites: report::sites(),
        totals: analysis.totals.unwrap_or_default(),
        findings: findings::overrelease::refined(findings::all()),
        held,
        sample: report::sample_field(),
    });
}

pub fn before_python_fork() {
    thread::stop();
}

pub fn after_python_fork_parent() {
    runtime::start_reporter_later();
}

pub fn after_python_fork_child() {
    runtime::start_reporter_later();
}

pub fn start_reporter() {
    thread::start();
}

/// The main thread's safe point the reporter (or, without it, the
/// extension's calls: `python::checks`) asked for: fresh totals for the
/// reports, and at the census interval (`deep`) a census and the periodic
/// leak check.
fn safe_point(deep: bool) {
    crate::follow::provenance::deaths::keep_seeing_deaths();
    if thread::reports() {
        runtime::totals_now(deep && census_applies());
    }
    if deep {
        periodic_check();
    }
}

extern "C" fn fork_prepare() {
    if ACTIVE.load(Ordering::Acquire) {
        STOPPED_FOR_C_FORK.store(thread::stop(), Ordering::Relaxed);
    }
}

extern "C" fn fork_parent() {
    if STOPPED_FOR_C_FORK.swap(false, Ordering::Relaxed) {
        thread::start();
    }
}

/// In the child: only this thread survived. Fresh counts, a fresh clock, and
/// a summary of its own; the reporter is restarted by Python's after-fork
/// hook (a child that only execs never writes anything).
extern "C" fn fork_child() {
    if !ACTIVE.load(Ordering::Acquire) {
        return;
    }
    STOPPED_FOR_C_FORK.store(false, Ordering::Relaxed);
    thread::forget_after_fork();
    count::registry::reset_after_fork();
    provenance::reset_after_fork();
    findings::reset_after_fork();
    PREVIOUS_CHECK.lock().unwrap_or_else(|e| e.into_inner()).clear();
    runtime::forget_totals();
    SEQ.store(0, Ordering::Relaxed);
    crate::python::checks::restart();
    SUMMARY_WRITTEN.store(false, Ordering::Release);
    *STARTED_AT.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
}

/// Runs when the process exits through `exit()` (after Python's at-exit
/// callbacks, if any), for programs that leave without finalizing Python.
extern "C" fn at_unload() {
    finish(false);
}

#[used]
#[link_section = ".fini_array"]
static AT_UNLOAD: extern "C" fn() = at_unload;
