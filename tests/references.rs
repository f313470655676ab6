//! References to objects the extension did not create (arguments, items,
//! attributes, callback results), kept or dropped wrongly: on every
//! interpreter of the matrix each is named at the line that took the
//! reference, and the twin that does the same work right gives nothing.

mod common;

use common::fixture::{self, marker_line, Built};
use common::matrix::{loud, Python};
use common::on_every_python;
use common::run::{run, Agent};
use refwatch_model::event::{Finding, FindingKind, Precision};

const SOURCE: &str = "references.c";

fn fixture_for(py: &Python) -> Built {
    fixture::build(py, SOURCE, "references", &[])
}

/// Runs `setup`, then `call` 40 times, then `after`, on one object made in
/// Python (a str no one interns: the interpreter shares interned strings
/// from places no walk sees).
fn driver(call: &str, after: &str) -> String {
    format!(
        "import references\n\
         obj = 'made in Python %d' % len(__name__)\n\
         lst, st = [], set()\n\
         class Owner:\n    name = obj\n\
         def callback():\n    return obj\n\
         items = [obj]\n\
         data = b'made in Python %d' % len(__name__)\n\
         made = []\n\
         mapping = {{'key': obj}}\n\
         references.fill_fresh(made, 3)\n\
         for i in range(40):\n    {call}\n\
         {after}\n\
         print('ok')\n"
    )
}

/// The one leak of `findings`, named at `marker`'s line with `count`
/// references: exact, or at function level with the line among its
/// candidates where the kernel refused watchpoints (said loudly).
fn one_leak_at(py: &Python, findings: &[Finding], marker: &str, count: u64) -> Result<(), String> {
    let line = marker_line(SOURCE, marker);
    let [f] = findings else { return Err(format!("expected one finding at {marker}: {findings:#?}")) };
    ensure!(f.kind == FindingKind::Leak, "{marker}: not a leak: {f:#?}");
    ensure!(f.file.as_deref().is_some_and(|p| p.ends_with(SOURCE)), "{marker}: file: {f:#?}");
    // The heap walk lets a word that looks like a pointer to the object (a
    // stale one in a reused block) explain a reference rather than risk a
    // false finding: a count may fall short by that, never exceed.
    ensure!(
        f.count <= count && f.count + 2 >= count,
        "{marker}: {} references, want {count} (or 2 fewer): {f:#?}",
        f.count
    );
    if f.evidence.contains("refused a hardware watchpoint") {
        loud(&format!("SKIP exact line on {}: {}", py.label, f.evidence));
        ensure!(f.candidates.contains(&line), "{marker}: line {line} not among the candidates: {f:#?}");
        return Ok(());
    }
    ensure!(
        f.precision == Precision::Exact && f.line == Some(line),
        "{marker}: want exact line {line}: {f:#?}"
    );
    Ok(())
}

/// One buggy shape and its correct twin: the bug is the one leak at
/// `marker` (its evidence containing `says`), the twin gives nothing.
struct Shape<'a> {
    call: &'a str,
    after: &'a str,
    marker: &'a str,
    twin: &'a str,
    says: &'a str,
}

fn check_shape(py: &Python, built: &Built, shape: Shape<'_>) -> Result<(), String> {
    let Shape { call, after, marker, twin, says } = shape;
    let r = run(py, &[built], &driver(call, after), Agent::Json(&[]));
    ensure!(r.stdout == "ok\n", "{call}: {}", r.describe());
    let (findings, _) = r.summary_findings()?;
    one_leak_at(py, &findings, marker, 40)?;
    ensure!(findings[0].evidence.contains(says), "{call}: evidence: {:#?}", findings[0]);
    let r = run(py, &[built], &driver(twin, after), Agent::Json(&[]));
    ensure!(r.stdout == "ok\n", "{twin}: {}", r.describe());
    let (findings, _) = r.summary_findings()?;
    ensure!(findings.is_empty(), "{twin}: false findings: {findings:#?}");
    Ok(())
}

/// Runs `code` under refwatch: it prints "ok", exits 0, and nothing is found.
fn runs_clean(py: &Python, built: &Built, code: &str) -> Result<(), String> {
    let r = run(py, &[built], code, Agent::Json(&[]));
    ensure!(r.stdout == "ok\n" && r.status.success(), "{}", r.describe());
    let (findings, _) = r.summary_findings()?;
    ensure!(findings.is_empty(), "false findings: {findings:#?}");
    Ok(())
}

/// (buggy call, what empties the container after, marker, correct twin).
const KEPT_ARGUMENTS: &[(&str, &str, &str, &str)] = &[
    (
        "references.append_extra(lst, obj)",
        "lst.clear()",
        "ref-append-extra",
        "references.append_extra_ok(lst, obj)",
    ),
    (
        "references.stash_newref(obj)",
        "references.kept.clear()",
        "ref-stash-newref",
        "references.stash_newref_ok(obj)",
    ),
    (
        "references.add_xincref(st, obj)",
        "st.clear()",
        "ref-add-xincref",
        "references.add_xincref_ok(st, obj)",
    ),
];

/// An argument given an extra `Py_INCREF`/`Py_XINCREF`/`Py_NewRef` while a
/// call that does not steal stores it (`PyList_Append`, `PySet_Add`), the
/// container emptied from Python afterwards: 40 references nothing holds,
/// named at the increment.
#[test]
fn an_argument_kept_with_an_extra_reference_is_named_at_the_increment() {
    on_every_python("kept arguments", |py| {
        let built = fixture_for(py);
        for &(call, after, marker, twin) in KEPT_ARGUMENTS {
            check_shape(py, &built, Shape { call, after, marker, twin, says: "passed to" })?;
        }
        Ok(())
    });
}

/// A method that keeps one reference to its latest argument, releasing the
/// one before, holds it from a C static: never a finding.
#[test]
fn a_method_caching_its_latest_argument_is_not_a_leak() {
    on_every_python("cache", |py| {
        let built = fixture_for(py);
        runs_clean(py, &built, &driver("references.remember_latest('latest %d' % i)", ""))
    });
}

/// (buggy call, marker, correct twin): a new reference to `obj`, which the
/// program holds, returned by a C-API call and never released.
const RECEIVED: &[(&str, &str, &str)] = &[
    ("references.attribute_kept(Owner)", "ref-getattr", "references.attribute_kept_ok(Owner)"),
    ("references.callback_kept(callback)", "ref-callback", "references.callback_kept_ok(callback)"),
    ("references.first_kept(items)", "ref-iternext", "references.first_kept_ok(items)"),
    ("references.item_kept(items)", "ref-getitem", "references.item_kept_ok(items)"),
    ("references.mapped_kept(mapping)", "ref-getitem-mapping", "references.mapped_kept_ok(mapping)"),
    // The extension made the item (right, at another line): the line that
    // took the leaked references is still the one named.
    ("references.item_kept(made)", "ref-getitem", "references.item_kept_ok(made)"),
];

/// A new reference to an object that already had others (an attribute's
/// value, a callback's result, an iterator's or a sequence's item), from
/// `PyObject_GetAttrString`, `PyObject_CallObject`, `PyIter_Next`,
/// `PySequence_GetItem`, never released: named at the call, exactly, also
/// when the extension made the object itself elsewhere.
#[test]
fn a_new_reference_to_an_object_made_elsewhere_never_released_is_named_at_the_call() {
    on_every_python("received", |py| {
        let built = fixture_for(py);
        for &(call, marker, twin) in RECEIVED {
            check_shape(py, &built, Shape { call, after: "", marker, twin, says: "never released" })?;
        }
        Ok(())
    });
}

/// (call made 40 times on a fresh instance `k` of `Keeper`, marker; the
/// same on `Holder`, its correct twin made from a spec).
const SLOTS: &[(&str, &str)] = &[
    ("type(k)(obj)", "slot-init"),
    ("k.value = obj", "slot-setter"),
    ("k['key'] = obj", "slot-ass-subscript"),
    ("k(obj)", "slot-call"),
    ("k == obj", "slot-richcompare"),
];

/// An extra reference taken in a type slot rather than a method (`tp_init`,
/// a getset setter, `mp_ass_subscript`, `tp_call`, `tp_richcompare`) on
/// what the slot was called with: one leak at the increment's line; the
/// same slots of a type made from a spec, done right, give nothing.
#[test]
fn an_extra_reference_taken_in_a_type_slot_is_named_at_the_increment() {
    on_every_python("slots", |py| {
        let built = fixture_for(py);
        for &(call, marker) in SLOTS {
            let leaky = format!("k = references.Keeper(None); {call}");
            let twin = format!("k = references.Holder(None); {call}");
            check_shape(
                py,
                &built,
                Shape { call: &leaky, after: "del k", marker, twin: &twin, says: "passed to" },
            )?;
        }
        Ok(())
    });
}

/// (buggy call, marker, correct twin): a `Py_buffer` filled for the
/// extension and never released.
const BUFFERS: &[(&str, &str, &str)] = &[
    ("references.buffer_parsed(data)", "ref-parse-buffer", "references.buffer_parsed_ok(data)"),
    ("references.buffer_taken(data)", "ref-get-buffer", "references.buffer_taken_ok(data)"),
];

/// A `Py_buffer` from `PyArg_ParseTuple("y*")` or `PyObject_GetBuffer`
/// never released keeps a reference to its exporter: named at the line
/// that took the buffer, saying `PyBuffer_Release` is missing.
#[test]
fn a_buffer_never_released_is_named_where_it_was_taken() {
    on_every_python("buffers", |py| {
        let built = fixture_for(py);
        for &(call, marker, twin) in BUFFERS {
            let says = "PyBuffer_Release is missing";
            check_shape(py, &built, Shape { call, after: "", marker, twin, says })?;
        }
        Ok(())
    });
}

/// A slot function whose address the extension's own code takes (a
/// `tp_new` that checks `type->tp_init == my_init`, as multidict's proxies
/// do) keeps its identity: the program runs as without refwatch.
#[test]
fn a_slot_the_extension_compares_by_address_keeps_its_identity() {
    on_every_python("compared", |py| {
        let built = fixture_for(py);
        runs_clean(py, &built, &driver("references.Compared()", ""))
    });
}

/// A method called with `None` that lets go of a cache holding `None` and
/// returns `None` (`Py_RETURN_NONE`) is correct: on 3.11 and older `None`'s
/// refcount is the same before and after, and still no finding.
#[test]
fn returning_none_after_releasing_a_cache_of_none_is_not_an_over_release() {
    on_every_python("none", |py| {
        let built = fixture_for(py);
        runs_clean(py, &built, &driver("references.cache_none(); references.drop_cache(None)", ""))
    });
}

/// Objects held only by the locals of a daemon thread still blocked at exit
/// are held: no finding.
#[test]
fn locals_of_a_thread_blocked_at_exit_hold_their_objects() {
    on_every_python("blocked thread", |py| {
        let built = fixture_for(py);
        let code = "import threading, references\n\
                    ready, never = threading.Event(), threading.Event()\n\
                    def worker():\n    \
                        a, b, c = references.fresh(1), references.fresh(2), references.fresh(3)\n    \
                        ready.set()\n    \
                        never.wait()\n    \
                        print(a, b, c)\n\
                    threading.Thread(target=worker, daemon=True).start()\n\
                    ready.wait()\n\
                    print('ok')\n";
        runs_clean(py, &built, code)
    });
}

/// A parsed argument (`PyArg_ParseTuple` "O") given an extra reference
/// before `PyDict_SetItem`, by a `METH_VARARGS` function that releases the
/// GIL inside the call, called from four threads at once: one leak at the
/// increment, with every thread's references; the twin gives nothing.
#[test]
fn an_extra_reference_from_four_threads_with_the_gil_released_is_named_at_the_increment() {
    on_every_python("threads", |py| {
        let built = fixture_for(py);
        let threaded = |call: &str| {
            format!(
                "import threading, references\n\
                 obj = 'made in Python %d' % len(__name__)\n\
                 def work(t):\n    d = {{}}\n    for i in range(10):\n        {call}\n\
                 ts = [threading.Thread(target=work, args=(t,)) for t in range(4)]\n\
                 [t.start() for t in ts]\n[t.join() for t in ts]\n\
                 print('ok')\n"
            )
        };
        let r = run(py, &[&built], &threaded("references.tag_extra(d, (t, i), obj)"), Agent::Json(&[]));
        ensure!(r.stdout == "ok\n", "{}", r.describe());
        let (findings, _) = r.summary_findings()?;
        // Other threads' calls touch the same refcount while the GIL is
        // released: the watchpoints may not pin one line, and the finding
        // is then at function level, at that line, the first of its
        // candidates (before 3.12 `Py_RETURN_NONE`'s increment is another).
        let line = marker_line(SOURCE, "ref-setitem-extra");
        match &findings[..] {
            [f] if f.precision == Precision::Function
                && f.line == Some(line)
                && f.candidates.first() == Some(&line)
                && f.count == 40 =>
            {
                loud(&format!("NOT PINNED on {}: {}", py.label, f.evidence))
            }
            _ => one_leak_at(py, &findings, "ref-setitem-extra", 40)?,
        }
        runs_clean(py, &built, &threaded("references.tag_extra_ok(d, (t, i), obj)"))
    });
}

/// A member set from Python in `tp_init` that `tp_dealloc` forgets to
/// release: named at the deallocator, with the member's offset; the twin
/// that releases it gives nothing.
#[test]
fn a_member_the_deallocator_forgets_is_named_at_the_deallocator() {
    on_every_python("dealloc", |py| {
        let built = fixture_for(py);
        let r = run(py, &[&built], &driver("references.Forgetful(obj)", ""), Agent::Json(&[]));
        ensure!(r.stdout == "ok\n", "{}", r.describe());
        let (findings, _) = r.summary_findings()?;
        // The deallocator's first line; the member follows the object
        // header (two more words with the reference tracer's links before
        // 3.13, which keeps them elsewhere).
        let line = marker_line(SOURCE, "ref-dealloc-forgets");
        let offset = if py.probe.trace_refs && !py.at_least(3, 13) { 32 } else { 16 };
        let [f] = &findings[..] else { return Err(format!("expected one finding: {findings:#?}")) };
        ensure!(
            f.kind == FindingKind::Leak
                && f.function.as_deref() == Some("forgetful_dealloc")
                && f.line == Some(line)
                && f.precision == Precision::Function
                && f.count + 2 >= 40
                && f.count <= 40
                && f.evidence.contains(&format!("offset {offset} of their struct")),
            "{f:#?}"
        );
        runs_clean(py, &built, &driver("references.Remembering(obj)", ""))
    });
}
