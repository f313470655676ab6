//! Over-releases: a watched extension's own release frees (or, on a debug
//! build, drives below zero) an object it did not own.
//!
//! Certain evidence only. When the extension's `Py_DECREF` frees an object
//! (`_Py_Dealloc` called from its line; a limited-API `Py_DECREF` of the
//! last reference) that it got borrowed from a container (`PyList_GetItem`,
//! `PyTuple_GetItem`, `PyDict_GetItem*`) or gave away to one
//! (`PyTuple_SetItem`, `PyList_SetItem`), and that container is alive and
//! still points at it, the container's own reference was the one released:
//! an extension that took a reference of its own (an inline `Py_INCREF` no
//! hook sees) would not free it. A debug build's `_Py_NegativeRefcount`
//! is certain by itself.
//!
//! Reported at once by the thread that sees it (one `write(2)`, before the
//! crash that often follows), not at exit.

use crate::follow::provenance::apis::{self, Slot};
use crate::follow::provenance::assoc::{Association, ASSOC};
use crate::python::{api, layout, runtime};
use crate::report;
use crate::symbolize;
use crate::sys;
use refwatch_model::event::{Finding, FindingKind, Precision};
use refwatch_model::{Event, OnOverrelease};
use std::sync::{Mutex, OnceLock};

/// What to do with an over-released object (`REFWATCH_ON_OVERRELEASE`),
/// handed down when the agent starts.
static ON_OVERRELEASE: OnceLock<OnOverrelease> = OnceLock::new();

/// Sets what an over-release does (once, at start).
pub fn configure(on_overrelease: OnOverrelease) {
    let _ = ON_OVERRELEASE.set(on_overrelease);
}

/// What the hook does with the release it was about to forward.
pub enum Verdict {
    /// Let the interpreter free the object.
    Proceed,
    /// The object was pinned (quarantine): do not free it.
    Keep,
}

/// The extension's release at `site` is about to free `object`.
///
/// # Safety
/// The caller holds the GIL and `object` is the live object being released.
#[inline(always)]
pub unsafe fn before_free(object: usize, site: usize) -> Verdict {
    // Most releases free an object no container lent or took while no
    // exception is being raised: a filter load (a map probe for objects
    // provenance follows) and one call, without this check's frame.
    // SAFETY: caller's contract.
    if unsafe { !lent_or_taken(object) } && !exception_pending() {
        return Verdict::Proceed;
    }
    // SAFETY: caller's contract.
    unsafe { check_release(object, site) }
}

/// Whether a container lent or took `object` (an association is known, or
/// the current call's parse lent it).
///
/// # Safety
/// The caller holds the GIL and `object` is alive.
#[inline(always)]
unsafe fn lent_or_taken(object: usize) -> bool {
    // SAFETY: caller's contract.
    unsafe {
        crate::follow::provenance::may_be_followed(object)
            && (crate::follow::methods::lent_in_this_call(object)
                || ASSOC.get(crate::follow::provenance::key_of(object)).is_some())
    }
}

/// Whether this thread is raising an exception.
#[inline(always)]
fn exception_pending() -> bool {
    // SAFETY: `PyErr_Occurred` only reads the thread's state; the GIL is
    // held (as for every release).
    api::api().is_none_or(|api| unsafe { !(api.err_occurred)().is_null() })
}

/// `before_free` when the object may have been lent or taken, or an
/// exception is being raised.
///
/// # Safety
/// As for `before_free`.
#[inline(never)]
unsafe fn check_release(object: usize, site: usize) -> Verdict {
    // SAFETY: `object` is alive until the release goes on; its type too.
    let type_name = || unsafe { layout::type_name(layout::type_of(object)) };
    // SAFETY: GIL held and `object` alive (caller's contract).
    let evidence = match unsafe { borrowed_or_given(object) } {
        Some(evidence) => evidence(&type_name()),
        // SAFETY: as above.
        None => match unsafe { raised_exception_holding(object) } {
            Some(exception) => format!(
                "the {} released here is held by the {exception} being raised (in its arguments), which \
                 still points at it: this release freed an object the extension did not own",
                type_name()
            ),
            None => return Verdict::Proceed,
        },
    };
    let finding = report_at(site, Precision::Exact, evidence);
    // SAFETY: the object is alive until the release goes on.
    let end = object + unsafe { layout::allocated_size(object) };
    remember_for_crash(object, end, &type_name(), &finding);
    match ON_OVERRELEASE.get() {
        Some(OnOverrelease::Quarantine) => {
            // SAFETY: the object is alive (its refcount just reached zero and
            // it has not been freed); pinning keeps it so.
            unsafe { layout::pin(object) };
            Verdict::Keep
        }
        Some(OnOverrelease::Abort) => abort(),
        _ => Verdict::Proceed,
    }
}

/// If `object` was borrowed from or given to a container that still points
/// at it, the evidence (given the object's type name). Forgets the
/// association: the release is reported here, not again when it is freed.
///
/// # Safety
/// The caller holds the GIL and `object` is alive.
unsafe fn borrowed_or_given(object: usize) -> Option<impl FnOnce(&str) -> String> {
    // SAFETY: caller's contract.
    let key = unsafe { crate::follow::provenance::key_of(object) };
    // SAFETY: GIL held (caller's contract); the argument tuple a parse in
    // the current call lent from is held by the caller for the call.
    let association = unsafe {
        match ASSOC.get(key) {
            Some(association) if still_holds(&association, object) => {
                ASSOC.remove(key);
                association
            }
            Some(_) => return None,
            None => crate::follow::methods::take_lent(object).filter(|a| holds(a, object))?,
        }
    };
    // SAFETY: the container is alive (checked by still_holds).
    let container_type = unsafe { layout::type_name(association.container_type) };
    let origin = symbolize::place_of(association.site);
    Some(move |type_name: &str| {
        let how = if association.stolen { "was given to" } else { "was borrowed from" };
        format!(
            "the {type_name} released here {how} a {container_type} by {} at {}, and that {container_type}{} \
             still points at it: this release freed an object the extension did not own",
            apis::name(association.api as usize),
            refwatch_model::text::location(origin.file.as_deref(), origin.line),
            slot_text(&association),
        )
    })
}

/// The type name of the exception being raised on this thread, if its value
/// still points at `object` (the value itself, an item of a value tuple, or
/// an item of an exception's `args`): its references count in `object`'s
/// refcount, so a release that frees `object` was one too many. (A failed
/// `PyDict_DelItem` raises a `KeyError` holding the key, for one.)
///
/// # Safety
/// The caller holds the GIL.
unsafe fn raised_exception_holding(object: usize) -> Option<String> {
    let api = api::api()?;
    // SAFETY: GIL held (caller's contract); these calls run no Python code
    // and the exception is put back exactly as it was.
    unsafe {
        if (api.err_occurred)().is_null() {
            return None;
        }
        let (mut kind, mut value, mut traceback) =
            (std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut());
        (api.err_fetch)(&mut kind, &mut value, &mut traceback);
        let held = !value.is_null() && value_points_at(value as usize, object);
        let name = (held && !kind.is_null()).then(|| layout::type_name(kind as usize));
        (api.err_restore)(kind, value, traceback);
        name
    }
}

/// # Safety
/// `value` is a live object (an exception's value).
unsafe fn value_points_at(value: usize, object: usize) -> bool {
    if value == object {
        return true;
    }
    // SAFETY: caller's contract: a live object has a live type.
    let flags = unsafe { layout::type_flags(layout::type_of(value)) };
    let tuple = if flags & layout::BASE_EXC_SUBCLASS != 0 {
        // SAFETY: an exception instance (its type says so).
        unsafe { layout::exception_args(value) }
    } else {
        value
    };
    // SAFETY: `args` is a tuple (or NULL) for every exception; a tuple's
    // items are live.
    unsafe {
        tuple != 0
            && layout::type_flags(layout::type_of(tuple)) & layout::TUPLE_SUBCLASS != 0
            && (0..layout::size(tuple).min(16)).any(|i| layout::tuple_item(tuple, i) == object)
    }
}

/// An object the extension borrowed or gave away is being freed by someone
/// else (the interpreter: the extension's own freeing release is
/// `before_free`). If the container it came from still points at it, a
/// reference was released that was not owned, and the release that did not
/// free it (inline on a release build, invisible) is the likely one: the
/// finding names where the extension got the reference (`origin`).
/// `lent_in_call`: the association is one a method call's frame kept
/// (`methods::parsed`), whose container, the call's argument tuple, the
/// caller holds (readable without asking provenance's containers).
///
/// # Safety
/// The caller holds the GIL; `object` is being freed (its memory is still
/// intact).
pub unsafe fn freed(object: usize, association: &Association, lent_in_call: bool) {
    // SAFETY: forwarded; the argument tuple a parse in the current call
    // lent from is held by the caller for the call.
    let holds = unsafe {
        if lent_in_call {
            holds(association, object)
        } else {
            still_holds(association, object)
        }
    };
    if !holds {
        return;
    }
    // SAFETY: the object's memory is intact until the free completes.
    let type_name = unsafe { layout::type_name(layout::type_of(object)) };
    // SAFETY: the container is alive (checked by still_holds).
    let container_type = unsafe { layout::type_name(association.container_type) };
    let how = if association.stolen { "given to" } else { "borrowed from" };
    let evidence = format!(
        "the {type_name} {how} a {container_type} here by {} was freed while that {container_type}{} still points \
         at it: a reference to it was released that was not owned (a release that did not free, so no call showed it)",
        apis::name(association.api as usize),
        slot_text(association),
    );
    let finding = report_at(association.site, Precision::Origin, evidence);
    // SAFETY: as above.
    let end = object + unsafe { layout::allocated_size(object) };
    remember_for_crash(object, end, &type_name, &finding);
    // The release itself made no call: watch the next references this call
    // site lends or gives away, to pin it (`watch`).
    crate::follow::watch::suspect_release(association.method, association.site);
    let mut origins = ORIGINS.lock().unwrap_or_else(|e| e.into_inner());
    if !origins.contains(&(finding.id, association.method)) {
        origins.push((finding.id, association.method));
    }
}

/// Method `method` returned `object`, one of the objects it was called
/// with (an argument, or self), with no more references than it had before
/// the call (`before`, `after`): the caller now owns a reference nobody
/// took for it, and will release it (a missing `Py_INCREF` before the
/// return). Named at the method, whose return made no call to see.
///
/// # Safety
/// The caller holds the GIL; `object` is alive (its caller holds it).
pub unsafe fn returned_unowned(method: u32, object: usize, before: u64, after: u64) {
    // A static object of the interpreter's (None, True, an empty tuple's
    // singleton in its data) is shared by everything: a call that let go of
    // cached references to it and returned it with a reference of its own
    // (`Py_RETURN_NONE`) leaves it where it was. Before 3.12 made such
    // objects immortal, their refcounts cannot tell this call's part.
    if crate::interpose::objects::object_at(object).is_some() {
        return;
    }
    // SAFETY: caller's contract.
    let type_name = unsafe { layout::type_name(layout::type_of(object)) };
    let place = symbolize::function_place(crate::follow::methods::function_of(method));
    let function = place.function.clone().unwrap_or_else(|| "this method".to_string());
    let evidence = format!(
        "{function} returned the {type_name} it was called with (an argument, or self) without taking a \
         reference for it: its refcount was {before} before the call and {after} after, so the caller now owns \
         a reference nobody took (a Py_INCREF missing before the return), and its release will free the object \
         while it is still in use"
    );
    let finding = report_place(place, Precision::Function, evidence);
    // SAFETY: as above.
    let end = object + unsafe { layout::allocated_size(object) };
    remember_for_crash(object, end, &type_name, &finding);
    if let Some(OnOverrelease::Quarantine) = ON_OVERRELEASE.get() {
        // SAFETY: alive, GIL held (caller's contract): pinned, the release
        // to come cannot free it.
        unsafe { layout::pin(object) };
    }
}

/// A watch saw the extension access, at the instruction before `ip`, the
/// refcount of an object its release at `freed_at` (a return address) had
/// freed: a second release (on 3.12+ one that reads the freed memory, finds
/// it "immortal" and writes nothing) or a use.
pub fn after_free(ip: usize, freed_at: usize) {
    let freed = symbolize::place_of(freed_at);
    let at = refwatch_model::text::location(freed.file.as_deref(), freed.line);
    let what = "released again or used";
    let evidence = format!(
        "an object the release at {at} freed is {what} here, after the free (seen by a hardware watchpoint on \
         the freed object's refcount): it was released more times than it was owned, or used after its last \
         reference was released"
    );
    report_at(ip, Precision::Exact, evidence);
}

/// `origin` findings and the method (stub plus one) whose call made the
/// reference they name.
static ORIGINS: Mutex<Vec<(u32, u32)>> = Mutex::new(Vec::new());

/// `findings` with each `origin` over-release made `exact` where watched
/// calls pinned the release to one line.
pub fn refined(mut findings: Vec<Finding>) -> Vec<Finding> {
    let origins = ORIGINS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for (id, method) in origins {
        let Some(finding) = findings.iter_mut().find(|f| f.id == id && f.precision == Precision::Origin)
        else {
            continue;
        };
        let lines = symbolize::lines_of(crate::follow::watch::releases(method).into_iter().map(|(ip, _)| ip));
        let [release] = &lines[..] else { continue };
        let borrowed_at = refwatch_model::text::location(finding.file.as_deref(), finding.line);
        finding.evidence = format!(
            "released here without being owned, pinned by a hardware watchpoint on the references lent at \
             {borrowed_at} over {} call(s): {}",
            crate::follow::watch::release_calls(method),
            finding.evidence.replacen(" here ", &format!(" at {borrowed_at} "), 1)
        );
        finding.file = release.file.clone();
        finding.line = release.line;
        finding.function = release.function.clone();
        finding.precision = Precision::Exact;
    }
    findings
}

fn slot_text(association: &Association) -> String {
    match association.slot() {
        Slot::TupleIndex | Slot::ListIndex => format!("[{}]", association.index),
        Slot::DictValue => " (as a value)".to_string(),
        Slot::ModuleAttr => " (as an attribute)".to_string(),
    }
}

/// What the crash handler says if a crash touches this object.
fn remember_for_crash(object: usize, end: usize, type_name: &str, finding: &Finding) {
    let note = format!(
        "refwatch: this crash touches the {type_name} at {object:#x} that was released without being owned \
         (finding {} at {} in {}): {}\n",
        finding.id,
        refwatch_model::text::location(finding.file.as_deref(), finding.line),
        finding.function.as_deref().unwrap_or("?"),
        finding.evidence
    );
    crate::sys::crash::remember(object, end, &note);
}

/// A debug build caught a refcount below zero at `site` (the interpreter
/// aborts right after).
pub fn negative_refcount(object: usize, site: usize) {
    let evidence = format!(
        "a release here drove an object's refcount below zero (object at {object:#x}): it was released more \
         times than it was owned"
    );
    report_at(site, Precision::Exact, evidence);
}

fn report_at(site: usize, precision: Precision, evidence: String) -> Finding {
    report_place(symbolize::place_of(site), precision, evidence)
}

fn report_place(place: crate::symbolize::Place, precision: Precision, evidence: String) -> Finding {
    let finding = Finding {
        id: 0,
        kind: FindingKind::Overrelease,
        module: place.module.clone(),
        file: place.file.clone(),
        line: place.line,
        precision,
        candidates: Vec::new(),
        function: place.function.clone(),
        count: 1,
        evidence,
        py_file: None,
        py_line: None,
    };
    let (py_file, py_line) = runtime::current_line().unzip();
    let finding = Finding { py_file, py_line, ..finding };
    // Streamed once, when first seen; the summary has the final count.
    let (finding, new) = super::establish_counted(finding);
    if new {
        report::emit(&Event::Finding { pid: sys::getpid(), finding: finding.clone() });
    }
    finding
}

fn abort() -> ! {
    let _ =
        sys::write_all(2, b"refwatch: REFWATCH_ON_OVERRELEASE=abort: stopping at the first over-release\n");
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}

/// Whether the container the association names is a live object of the
/// same type that still points at `object` where it did.
///
/// # Safety
/// The caller holds the GIL.
unsafe fn still_holds(a: &Association, object: usize) -> bool {
    // SAFETY: GIL held (caller's contract); `holds` reads the container
    // once it is known readable.
    unsafe { a.container_readable() && holds(a, object) }
}

/// `still_holds` for a container known to be readable.
///
/// # Safety
/// The caller holds the GIL; the container's memory is readable.
unsafe fn holds(a: &Association, object: usize) -> bool {
    let c = a.container;
    // SAFETY: the header is readable (caller's contract); a container on a
    // free list or reused shows another type or an impossible refcount.
    let (type_object, refcount) = unsafe { (layout::type_of(c), layout::refcount(c)) };
    if type_object != a.container_type || !(1..layout::IMMORTAL).contains(&refcount) {
        return false;
    }
    match a.slot() {
        // SAFETY: a live tuple/list of at least index + 1 items.
        Slot::TupleIndex => unsafe { a.index < layout::size(c) && layout::tuple_item(c, a.index) == object },
        // SAFETY: as above.
        Slot::ListIndex => unsafe { a.index < layout::size(c) && layout::list_item(c, a.index) == object },
        // SAFETY: a live dict; the GIL is held.
        Slot::DictValue => unsafe { dict_has_value(c, object) },
        // SAFETY: a live module (its dict is borrowed); the GIL is held.
        Slot::ModuleAttr => unsafe { module_has_value(c, object) },
    }
}

/// # Safety
/// `module` is a live module and the caller holds the GIL.
unsafe fn module_has_value(module: usize, object: usize) -> bool {
    // Read in place: a module being cleared at shutdown has no dict any
    // more, which `PyModule_GetDict` asserts against on debug builds.
    // SAFETY: caller's contract.
    let dict = unsafe { layout::module_dict(module) };
    // SAFETY: a module's dict lives as long as the module holds it.
    dict != 0 && unsafe { dict_has_value(dict, object) }
}

/// # Safety
/// `dict` is a live dict and the caller holds the GIL.
unsafe fn dict_has_value(dict: usize, object: usize) -> bool {
    let Some(api) = api::api() else { return false };
    let mut position: isize = 0;
    let (mut key, mut value) = (std::ptr::null_mut(), std::ptr::null_mut());
    // SAFETY: PyDict_Next on a live dict with the GIL held; it hands out
    // borrowed pointers, only compared here.
    while unsafe { (api.dict_next)(dict as *mut _, &mut position, &mut key, &mut value) } != 0 {
        if value as usize == object {
            return true;
        }
    }
    false
}
