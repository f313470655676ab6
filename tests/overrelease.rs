//! Over-release findings: a borrowed or stolen reference released by the
//! extension, named at the releasing line when the release frees the object
//! while its container still points at it; a debug build's negative
//! refcount named at its line; correct look-alikes silent; quarantine keeps
//! the program running.

mod common;

use common::fixture::{self, marker_line, Built};
use common::matrix::Python;
use common::on_every_python;
use common::run::{run, Agent, Run};
use refwatch_model::event::{Finding, FindingKind, Precision};

fn fixture_for(py: &Python) -> Built {
    fixture::build(py, "overrelease.c", "overrelease", &[])
}

/// The line of `driver`'s code that makes the call.
const DRIVER_CALL_LINE: u32 = 7;

/// Runs `call` three times, keeping what it touched, then leaves with
/// `os._exit` (the containers point at freed objects: finalizing them
/// could crash, which is the bug, not the test).
fn driver(call: &str) -> String {
    format!(
        "import overrelease as m, os, sys\nkeep = []\ndef k(c):\n    keep.append(c)\n    return c\n\
         for i in range(3):\n    {call}\n\
         print('done'); sys.stdout.flush()\nos._exit(0)\n"
    )
}

/// Each call passes a container the driver keeps (`k(...)` appends it to
/// `keep` and returns it), so it is never freed with a dangling item.
const BAD: &[(&str, &str)] = &[
    ("m.drop_list_item(k([[i]]))", "over-list"),
    ("m.drop_tuple_item(k(([i],)))", "over-tuple"),
    ("m.drop_dict_value(k({'key': [i]}))", "over-dict"),
    ("k(m.give_then_drop())", "over-stolen"),
    ("m.give_to_list_then_drop(k([None]))", "over-stolen-list"),
    ("m.add_then_drop('attr%d' % i)", "over-module"),
    ("k(m.build_then_drop())", "over-build"),
    // Called with a tuple the driver keeps: CPython passes an exact tuple on
    // to a METH_VARARGS function as it is.
    ("m.drop_parsed(*k((i, [i])))", "over-parsed"),
    ("k(m.drop_raised_key_twice())", "over-raised"),
];

#[test]
fn a_release_that_frees_what_a_container_still_holds_is_named_at_its_line() {
    on_every_python("over-release", |py| {
        let built = fixture_for(py);
        for (call, marker) in BAD {
            let r = run(py, &[&built], &driver(call), Agent::Json(&[]));
            ensure!(r.stdout == "done\n", "{call}: {}", r.describe());
            let (findings, streamed) = r.summary_findings()?;
            ensure!(findings.len() == 1 && streamed == 1, "{call}: {findings:#?}");
            let f = &findings[0];
            let line = marker_line("overrelease.c", marker);
            ensure!(
                f.kind == FindingKind::Overrelease
                    && f.precision == Precision::Exact
                    && f.line == Some(line)
                    && f.file.as_deref().is_some_and(|p| p.ends_with("/overrelease.c"))
                    && f.count == 3
                    && f.evidence.contains("still points at it"),
                "{call}: expected overrelease.c:{line}: {f:#?}"
            );
            // The Python line that drove it: the call in the driver's loop.
            ensure!(
                f.py_file.as_deref() == Some("<string>") && f.py_line == Some(DRIVER_CALL_LINE),
                "{call}: the driving Python line: {:?}:{:?}",
                f.py_file,
                f.py_line
            );
        }
        Ok(())
    });
}

/// The run printed "done", and its one finding is an exact over-release at
/// `marker`, `count` times.
fn one_exact_over_release(r: &Run, marker: &str, count: u64, what: &str) -> Result<(), String> {
    one_over_release(r, marker, Precision::Exact, count, what).map(drop)
}

/// The run printed "done", and its one finding is an over-release of
/// `precision` at `marker`, `count` times: that finding.
fn one_over_release(
    r: &Run,
    marker: &str,
    precision: Precision,
    count: u64,
    what: &str,
) -> Result<Finding, String> {
    ensure!(r.stdout == "done\n", "{what}: {}", r.describe());
    let (findings, _) = r.summary_findings()?;
    let line = marker_line("overrelease.c", marker);
    match &findings[..] {
        [f] if f.kind == FindingKind::Overrelease
            && f.precision == precision
            && f.line == Some(line)
            && f.count == count =>
        {
            Ok(f.clone())
        }
        _ => {
            Err(format!("{what}: expected overrelease.c:{line} ({precision:?}) {count} times: {findings:#?}"))
        }
    }
}

/// Sampling thins fresh objects and method calls, never the references
/// lent or given away (a `Py_BuildValue` whose format has an `N` is always
/// followed): each over-release is still named at its line.
#[test]
fn sampling_still_names_every_over_release() {
    on_every_python("sampled over-release", |py| {
        let built = fixture_for(py);
        for (call, marker) in BAD {
            let r = run(py, &[&built], &driver(call), Agent::Json(&[("REFWATCH_SAMPLE", "100")]));
            one_exact_over_release(&r, marker, 3, &format!("{call} sampled"))?;
        }
        Ok(())
    });
}

/// Under sampling, a method seen parsing its arguments gets a frame in the
/// calls that are not sampled too: every over-release of a parsed argument
/// is still named, in each of many calls.
#[test]
fn sampling_names_every_over_release_of_a_parsed_argument_in_many_calls() {
    on_every_python("sampled parses", |py| {
        let built = fixture_for(py);
        let code = "import overrelease as m, os, sys\nkeep = []\nfor i in range(2000):\n    \
                    args = (i, [i])\n    keep.append(args)\n    m.drop_parsed(*args)\n\
                    print('done'); sys.stdout.flush()\nos._exit(0)\n";
        // Quarantined: the freed lists stay alive, so that 2000 of them
        // leave the heap sound (a debug build's checks trip otherwise).
        let agent = [("REFWATCH_SAMPLE", "100"), ("REFWATCH_ON_OVERRELEASE", "quarantine")];
        let r = run(py, &[&built], code, Agent::Json(&agent));
        one_exact_over_release(&r, "over-parsed", 2000, "2000 sampled calls")
    });
}

/// A method that returns an object it was called with (an argument, or
/// self) without a reference of its own hands its caller one that nobody
/// took: named at the method (the return makes no call), the function's
/// line, with the refcounts before and after the call as evidence.
#[test]
fn an_argument_returned_without_a_reference_is_named_at_its_function() {
    on_every_python("returned unowned", |py| {
        let built = fixture_for(py);
        let cases = [
            ("k(m.return_argument(k([i])))", "returned-arg", "return_argument"),
            ("k(m.return_parsed(*k((i, [i]))))", "returned-parsed", "return_parsed"),
            ("k(m.return_self())", "returned-self", "return_self"),
        ];
        for (call, marker, function) in cases {
            let r = run(py, &[&built], &driver(call), Agent::Json(&[]));
            let f = one_over_release(&r, marker, Precision::Function, 3, call)?;
            ensure!(
                f.function.as_deref() == Some(function) && f.evidence.contains("without taking a reference"),
                "{call}: expected in {function}: {f:#?}"
            );
        }
        Ok(())
    });
}

/// A method ending in a tail call to a lending function (a jump at -O2:
/// the function returns straight to the method's caller) is still named:
/// at the method, where the reference came from.
#[test]
fn a_borrowed_reference_returned_by_a_tail_call_is_named_at_its_method() {
    on_every_python("tail call", |py| {
        let built = fixture_for(py);
        let call = "m.first_item(k([[i]]))";
        let r = run(py, &[&built], &driver(call), Agent::Json(&[("REFWATCH_WATCHPOINTS", "off")]));
        let f = one_over_release(&r, "tail-borrow", Precision::Origin, 3, call)?;
        ensure!(
            f.function.as_deref() == Some("first_item") && f.evidence.contains("by PyList_GetItem"),
            "{call}: expected in first_item: {f:#?}"
        );
        Ok(())
    });
}

#[test]
fn correct_look_alikes_give_nothing() {
    on_every_python("look-alikes", |py| {
        let built = fixture_for(py);
        let calls = "m.use_list_item(k([[i]])); m.take_and_remove(k([[i]])); k(m.give_after_own_ref()); \
                     m.add_own_ref_then_drop('ok%d' % i); k(m.build_o_then_drop()); \
                     m.own_parsed(*k((i, [i]))); k(m.drop_raised_key_once()); \
                     k(m.return_argument_owned(k([i]))); k(m.return_parsed_owned(*k((i, [i])))); \
                     k(m.return_self_owned())";
        let r = run(py, &[&built], &driver(calls), Agent::Json(&[]));
        ensure!(r.stdout == "done\n", "{}", r.describe());
        let (findings, _) = r.summary_findings()?;
        ensure!(findings.is_empty(), "{findings:#?}");
        Ok(())
    });
}

#[test]
fn quarantine_keeps_freed_objects_alive_so_the_program_runs_to_a_clean_end() {
    on_every_python("quarantine", |py| {
        let built = fixture_for(py);
        let calls: Vec<&str> = BAD.iter().map(|(c, _)| *c).collect();
        // Touches every container afterwards and finalizes normally.
        let code = format!(
            "import overrelease as m\nkeep = []\ndef k(c):\n    keep.append(c)\n    return c\n\
             for i in range(3):\n    {}\n\
             print(len(repr(keep)) > 0)\n",
            calls.join("; ")
        );
        let r = run(py, &[&built], &code, Agent::Json(&[("REFWATCH_ON_OVERRELEASE", "quarantine")]));
        ensure!(r.status.success() && r.stdout == "True\n", "quarantine: {}", r.describe());
        let (findings, _) = r.summary_findings()?;
        ensure!(findings.len() == BAD.len(), "all found in one run: {findings:#?}");
        Ok(())
    });
}

#[test]
fn a_debug_build_names_the_release_that_drives_a_refcount_below_zero() {
    on_every_python("negative refcount", |py| {
        if !py.is_debug() {
            return Ok(()); // a release build has no negative-refcount check
        }
        let built = fixture_for(py);
        let code = "import overrelease as m\nm.drop_twice(1)\n";
        let bare = run(py, &[&built], code, Agent::Off);
        if std::os::unix::process::ExitStatusExt::signal(&bare.status) != Some(libc::SIGABRT) {
            // This build's Py_DECREF did not see the count go below zero
            // (3.15's int free list keeps a freed int's count): nothing to name.
            common::matrix::loud(&format!(
                "SKIP negative refcount on {}: the interpreter does not detect it",
                py.label
            ));
            return Ok(());
        }
        let r = run(py, &[&built], code, Agent::Json(&[]));
        ensure!(!r.status.success(), "the interpreter's fatal error must still happen: {}", r.describe());
        let streamed = r.streamed();
        let line = marker_line("overrelease.c", "over-twice");
        ensure!(
            streamed.len() == 1
                && streamed[0].kind == FindingKind::Overrelease
                && streamed[0].line == Some(line)
                && streamed[0].evidence.contains("below zero"),
            "expected a finding at overrelease.c:{line} before the abort: {streamed:#?}\n{}",
            r.describe()
        );
        Ok(())
    });
}

#[test]
fn the_crash_handler_names_the_release_behind_a_fault_on_the_freed_object() {
    on_every_python("crash", |py| {
        let built = fixture_for(py);
        // The debug allocator poisons freed memory, so using the freed text
        // faults at once, on every build.
        let code = "import overrelease as m, sys\n\
                    c = ['x' * 40 + str(len(sys.argv))]\n\
                    print(hex(id(c[0]))); sys.stdout.flush()\n\
                    m.drop_and_use(c)\n\
                    print('not reached')";
        let r = run(py, &[&built], code, Agent::Json(&[("PYTHONMALLOC", "debug")]));
        let signal = std::os::unix::process::ExitStatusExt::signal(&r.status);
        ensure!(
            signal == Some(libc::SIGSEGV) || signal == Some(libc::SIGBUS),
            "expected a fault: {}",
            r.describe()
        );
        let address = r.stdout.lines().next().unwrap_or_default().to_string();
        let line = marker_line("overrelease.c", "over-use");
        let note = r.stderr.lines().find(|l| l.starts_with("refwatch: this crash touches"));
        ensure!(
            note.is_some_and(
                |n| n.contains(&format!("str at {address} ")) && n.contains(&format!("overrelease.c:{line}"))
            ),
            "the crash note must name the str at {address} released at overrelease.c:{line}: {}",
            r.describe()
        );
        Ok(())
    });
}

/// A release that does not free (the object has another owner), then the
/// object dies while the container it was borrowed from still points at
/// it: named where the extension got the reference, and once watched, at
/// the release itself (`release`; `None`: the object dies inside the call
/// that released it, which drops the watch before the call's end reads it,
/// so the finding stays where the reference came from).
fn a_release_that_does_not_free_is_named(label: &str, code: &str, borrow: &str, release: Option<&str>) {
    on_every_python(label, |py| {
        let built = fixture_for(py);
        let borrow = marker_line("overrelease.c", borrow);
        let release = release.map(|marker| marker_line("overrelease.c", marker));
        for watchpoints in ["on", "off"] {
            let r = run(py, &[&built], code, Agent::Json(&[("REFWATCH_WATCHPOINTS", watchpoints)]));
            let streamed = r.streamed();
            ensure!(streamed.len() == 1, "{streamed:#?}\n{}", r.describe());
            let f = streamed[0];
            ensure!(
                f.kind == FindingKind::Overrelease
                    && f.precision == Precision::Origin
                    && f.line == Some(borrow)
                    && f.evidence.contains("still points"),
                "expected an origin finding at overrelease.c:{borrow}: {f:#?}"
            );
            // The next calls watch the borrowed references' releases: the
            // summary names the release itself, unless watchpoints are off.
            let (findings, _) = r.summary_findings()?;
            let f = &findings[0];
            let (precision, line) = match release {
                Some(release) if watchpoints == "on" => (Precision::Exact, release),
                _ => (Precision::Origin, borrow),
            };
            ensure!(
                findings.len() == 1 && f.precision == precision && f.line == Some(line),
                "watchpoints {watchpoints}: expected {precision:?} at overrelease.c:{line}: {findings:#?}"
            );
            ensure!(
                precision == Precision::Origin || f.evidence.contains("pinned by a hardware watchpoint"),
                "{}",
                f.evidence
            );
        }
        Ok(())
    });
}

#[test]
fn a_release_that_does_not_free_is_found_when_the_object_dies_in_its_container() {
    // The item has a second owner (`v`), so the extension's bad release
    // does not free it; freeing it later (`del v`) leaves the list pointing
    // at a dead object. (An instance of a class: before 3.13 refwatch sees
    // frees through the object allocator, which types with a free list of
    // their own, like list, bypass.)
    let code = "import overrelease as m, os, sys\nclass Box:\n    pass\nkeep = []\nfor i in range(3):\n    \
                v = Box()\n    c = [v]\n    keep.append(c)\n    m.drop_list_item(c)\n    del v\n\
                print('done'); sys.stdout.flush()\nos._exit(0)\n";
    a_release_that_does_not_free_is_named("non-freeing", code, "over-list-borrow", Some("over-list"));
}

#[test]
fn a_parsed_argument_released_and_freed_after_the_call_is_found() {
    // As above, but the box is emptied after the call: its frame hands the
    // argument, whose refcount the call lowered, to provenance as it
    // returns.
    let code = "import overrelease as m, os, sys\nclass Box:\n    pass\nkeep = []\nfor i in range(3):\n    \
                box = [Box()]\n    args = (i, box[0])\n    keep.append(args)\n    m.drop_parsed(*args)\n    \
                box.clear()\n\
                print('done'); sys.stdout.flush()\nos._exit(0)\n";
    a_release_that_does_not_free_is_named("parsed freed after", code, "parsed", Some("over-parsed"));
}

#[test]
fn a_parsed_argument_released_and_then_freed_during_the_call_is_found() {
    // The argument has a second owner (the box), so the bad release does
    // not free it; the same call then empties the box, which frees it while
    // the argument tuple (kept by the driver, passed on as it is) still
    // points at it.
    let code = "import overrelease as m, os, sys\nclass Box:\n    pass\nkeep = []\nfor i in range(3):\n    \
                box = [Box()]\n    args = (box[0], box)\n    keep.append(args)\n    \
                m.drop_parsed_then_clear(*args)\n\
                print('done'); sys.stdout.flush()\nos._exit(0)\n";
    a_release_that_does_not_free_is_named("parsed non-freeing", code, "over-parsed-unseen", None);
}

#[test]
fn a_walk_of_a_corrupt_heap_crashes_a_copy_not_the_program() {
    on_every_python("corrupt heap", |py| {
        let built = fixture_for(py);
        let code = "import overrelease as m, os, sys\n\
                    keep = [bytes(1 << 22), m.build_o_then_drop()]\n\
                    m.drop_item_unseen(keep)\n\
                    print('done'); sys.stdout.flush()\n\
                    os._exit(3)\n";
        let bare = run(py, &[&built], code, Agent::Off);
        ensure!(bare.stdout == "done\n" && bare.status.code() == Some(3), "bare: {}", bare.describe());
        let r = run(py, &[&built], code, Agent::Json(&[]));
        ensure!(r.stdout == "done\n" && r.status.code() == Some(3), "under refwatch: {}", r.describe());
        ensure!(
            r.stderr.contains("crashed (signal 11) in a copy of the process"),
            "the crash of the copy is told: {}",
            r.describe()
        );
        ensure!(r.summary(None).is_some(), "the summary is still written: {}", r.describe());
        Ok(())
    });
}

/// A second release of an object the first release freed, on every build:
/// debug builds that see the count go below zero name it through
/// `_Py_NegativeRefcount` (and abort, as they would); otherwise a
/// watchpoint on the freed object's refcount sees the second release touch
/// it (a write before 3.12; a read on 3.12+, whose Py_DECREF finds freed
/// memory "immortal" and writes nothing). With watchpoints off, release
/// builds have nothing to see.
#[test]
fn a_second_release_of_a_freed_object_is_named_at_its_line() {
    on_every_python("released twice", |py| {
        let built = fixture_for(py);
        let code = "import overrelease as m, os, sys\nfor i in range(3):\n    m.drop_twice(i)\n\
                    print('done'); sys.stdout.flush()\nos._exit(0)\n";
        let line = marker_line("overrelease.c", "over-twice");
        let r = run(py, &[&built], code, Agent::Json(&[]));
        let streamed = r.streamed();
        ensure!(
            !streamed.is_empty()
                && streamed.iter().all(|f| f.kind == FindingKind::Overrelease
                    && f.precision == Precision::Exact
                    && f.line == Some(line)),
            "expected findings at overrelease.c:{line} only: {streamed:#?}\n{}",
            r.describe()
        );
        let aborted = std::os::unix::process::ExitStatusExt::signal(&r.status) == Some(libc::SIGABRT);
        ensure!(
            aborted || streamed[0].evidence.contains("hardware watchpoint"),
            "a build that runs on names it by watchpoint: {:#?}",
            streamed[0]
        );
        if !aborted {
            let r = run(py, &[&built], code, Agent::Json(&[("REFWATCH_WATCHPOINTS", "off")]));
            ensure!(r.streamed().is_empty(), "watchpoints off: nothing to see: {:#?}", r.streamed());
        }
        Ok(())
    });
}

/// Under quarantine a pinned object stays in a debug build's reference
/// total: before 3.12 its pinned count (2^30) is added to the total, which
/// the releases still to come take back; on 3.12+ it is immortal, and like
/// every immortal object outside the total.
#[test]
fn quarantine_keeps_a_debug_builds_total_the_sum_of_counts() {
    on_every_python("quarantine totals", |py| {
        if !py.is_debug() {
            return Ok(());
        }
        let built = fixture_for(py);
        let code = |call: &str| {
            format!(
                "import overrelease as m, sys\nkeep = []\nt0 = sys.gettotalrefcount()\n\
                 for i in range(3):\n    keep.append(m.{call}())\nprint(sys.gettotalrefcount() - t0)\n"
            )
        };
        let settings: &[(&str, &str)] = &[("REFWATCH_ON_OVERRELEASE", "quarantine")];
        let total = |call: &str| -> Result<i64, String> {
            let r = run(py, &[&built], &code(call), Agent::Json(settings));
            r.stdout.trim().parse::<i64>().map_err(|_| format!("{call}: {}", r.describe()))
        };
        let (bad, good) = (total("give_then_drop")?, total("give_after_own_ref")?);
        // Three pinned lists; the rest of the runs differ by a few references.
        let pinned = if py.at_least(3, 12) { 0 } else { 3 << 30 };
        ensure!(
            (bad - good - pinned).abs() < 16,
            "total grew by {bad} (correct twin: {good}), pinned {pinned}"
        );
        Ok(())
    });
}
