//! Leak findings: on every interpreter of the matrix, each class of leak is
//! named at the exact line that created the leaked reference, and nothing
//! else is; the correct twins of the same code give no finding.

mod common;

use common::agent::{launcher, library};
use common::fixture::{self, marker_line, Built};
use common::matrix::Python;
use common::on_every_python;
use common::run::{run, scratch, Agent};
use refwatch_model::event::{FindingKind, Precision};
use refwatch_model::{Event, Finding};
use std::collections::BTreeSet;

fn leaks_fixture(py: &Python) -> Built {
    fixture::build(py, "leaks.c", "leaks", &[])
}

/// (kind, file name, line, precision) of each finding in the summary.
fn finding_set(findings: &[Finding]) -> BTreeSet<(String, String, u32, String)> {
    findings
        .iter()
        .map(|f| {
            let file = f.file.as_deref().unwrap_or("?").rsplit('/').next().unwrap_or("?").to_string();
            (format!("{:?}", f.kind), file, f.line.unwrap_or(0), format!("{:?}", f.precision))
        })
        .collect()
}

fn exact_leaks(markers: &[&str]) -> BTreeSet<(String, String, u32, String)> {
    markers
        .iter()
        .map(|m| {
            let kind = format!("{:?}", FindingKind::Leak);
            (kind, "leaks.c".to_string(), marker_line("leaks.c", m), format!("{:?}", Precision::Exact))
        })
        .collect()
}

/// The leaky calls, one line of Python each, with the marker of the line
/// that must be named; and the same work done correctly.
const LEAKY: &[(&str, &str)] = &[
    ("leaks.pair_sum(i, i + 1)", "leak-buildvalue"),
    ("leaks.packed(i)", "leak-pack"),
    ("leaks.call_and_forget(make_list, i)", "leak-callfunction"),
    ("leaks.label_length(i)", "leak-format"),
    ("leaks.fill(kept_list, 2)", "leak-append"),
    ("leaks.tag(kept_dict, 'k%d-%d' % (t, i))", "leak-setitem"),
    ("swallow(leaks.checked, -1)", "leak-error-path"),
    ("leaks.Holder(i)", "leak-member"),
    ("leaks.grown(i)", "leak-resized"),
];

const CORRECT: &[&str] = &[
    "leaks.pair_sum_ok(i, i + 1)",
    "leaks.packed_ok(i)",
    "leaks.call_ok(make_list, i)",
    "leaks.label_length_ok(i)",
    "leaks.fill_ok(kept_list, 2)",
    "leaks.tag_ok(kept_dict, 'k%d-%d' % (t, i))",
    "swallow(leaks.checked_ok, -1)",
    "swallow(leaks.checked_ok, 5)",
    "leaks.HolderOk(i)",
    "leaks.grown_ok(i)",
    "leaks.constant()",
    "leaks.square(i % 7)",
];

/// How many objects the summary lists as held at `file:line`.
fn held_at(r: &common::run::Run, file: Option<&str>, line: Option<u32>) -> u64 {
    match r.summary(None) {
        Some(Event::Summary { held, .. }) => {
            held.iter().filter(|h| h.file.as_deref() == file && h.line == line).map(|h| h.count).sum()
        }
        _ => 0,
    }
}

/// A driver that runs `calls` 40 times on each of `threads` threads.
fn driver(calls: &[&str], threads: usize) -> String {
    let body: String = calls.iter().map(|c| format!("        {c}\n")).collect();
    format!(
        "import leaks, threading\n\
         kept_list, kept_dict = [], {{}}\n\
         def make_list(n):\n    return [n]\n\
         def swallow(f, arg):\n    try:\n        f(arg)\n    except ValueError:\n        pass\n\
         def work(t):\n    for i in range(40):\n{body}\
         threads = [threading.Thread(target=work, args=(t,)) for t in range({threads})]\n\
         [t.start() for t in threads]\n\
         [t.join() for t in threads]\n\
         print(len(kept_list), len(kept_dict))\n"
    )
}

#[test]
fn each_class_of_leak_is_named_at_its_creating_line_and_nothing_else() {
    on_every_python("leaks", |py| {
        let built = leaks_fixture(py);
        for (call, marker) in LEAKY {
            let r = run(py, &[&built], &driver(&[call], 1), Agent::Json(&[]));
            ensure!(r.status.success(), "{call}: {}", r.describe());
            let (findings, streamed) = r.summary_findings()?;
            let want = exact_leaks(&[marker]);
            ensure!(finding_set(&findings) == want, "{call}: findings {findings:#?}\nwant {want:?}");
            ensure!(streamed == 1, "{call}: {streamed} finding events streamed, expected 1");
            let f = &findings[0];
            // Every object leaked is counted, or listed as held: the heap
            // walk lets a word that looks like a pointer to an object (a
            // stale one in a block the allocator reused) explain it, rather
            // than risk a false finding.
            let held = held_at(&r, f.file.as_deref(), f.line);
            ensure!(
                f.count + held >= 40 && f.evidence.contains("created here by"),
                "{call}: evidence/count: {f:?}, {held} held at its line"
            );
        }
        Ok(())
    });
}

#[test]
fn correct_twins_caches_and_memo_dicts_are_not_leaks() {
    on_every_python("clean", |py| {
        let built = leaks_fixture(py);
        let r = run(py, &[&built], &driver(CORRECT, 2), Agent::Json(&[]));
        ensure!(r.status.success(), "{}", r.describe());
        let (findings, streamed) = r.summary_findings()?;
        ensure!(findings.is_empty() && streamed == 0, "false findings: {findings:#?}");
        Ok(())
    });
}

/// An object the extension made is forgotten when it dies, whichever way
/// it dies (an int or a str freed to the allocator, a tuple kept on its
/// free list): the object Python makes next at its address, leaked by code
/// refwatch does not watch, is not blamed on the extension's line.
#[test]
fn an_address_reused_after_a_death_is_not_blamed_on_the_extension() {
    reuse_is_not_blamed("reused", "", "", &[]);
}

/// tracemalloc started after refwatch puts itself in front of refwatch's
/// allocator hook (and calls it on), and from 3.14 replaces refwatch's
/// reference tracer (without calling it on); stopped, it takes its own
/// out. Deaths are seen, or what was followed is forgotten, and a leak
/// made after refwatch's tracer is back in front (the periodic check puts
/// it back) is found.
#[test]
fn a_reused_address_is_not_blamed_with_tracemalloc_started_and_stopped_after_refwatch() {
    reuse_is_not_blamed(
        "reused-tracemalloc",
        "\
import sys, time, tracemalloc
def tracer_back():
    # 3.14+: stopping took refwatch's reference tracer out; a periodic
    # check puts it back (seen here as a tracer installed again).
    if sys.version_info < (3, 14):
        return
    get = ctypes.pythonapi.PyRefTracer_GetTracer
    get.restype = ctypes.c_void_p
    for _ in range(400):
        if get(ctypes.byref(ctypes.c_void_p())):
            return
        time.sleep(0.025)
tracemalloc.start()
",
        "    if i == 20:\n        assert tracemalloc.get_traced_memory()[0] > 0, 'tracemalloc traced nothing'\n        \
         tracemalloc.stop()\n        tracer_back()\n",
        &[("REFWATCH_INTERVAL", "0.1")],
    );
}

/// Objects the extension made die in Python, and the object Python makes
/// next at the same address is leaked (by ctypes): no finding; then a real
/// leak, found at its line. `prelude` runs after the imports, `each` at the
/// start of each round (`i`).
fn reuse_is_not_blamed(label: &str, prelude: &str, each: &str, settings: &[(&str, &str)]) {
    let driver = format!(
        "\
import ctypes, leaks
{prelude}incref = ctypes.pythonapi.Py_IncRef
incref.argtypes = [ctypes.py_object]
reused = {{'int': 0, 'str': 0, 'tuple': 0}}
def after_death(kind, produce, make):
    made = produce()
    address = id(made)
    del made
    other = make()
    reused[kind] += id(other) == address
    incref(other)
for i in range(40):
{each}    digits = str(10**6 + i + 1)  # made first: no int is made between the death and int()
    after_death('int', lambda: leaks.pair_sum_ok(10**6 + i, 1), lambda: int(digits))
    after_death('str', lambda: leaks.label(i), lambda: 'label-%d' % i)
    after_death('tuple', lambda: leaks.pair(i), lambda: tuple([i, -i]))
for i in range(40):
    leaks.pair_sum(i, i + 1)
print(*(f'{{k}}={{v}}' for k, v in reused.items()))
"
    );
    on_every_python(label, |py| {
        let built = leaks_fixture(py);
        let r = run(py, &[&built], &driver, Agent::Json(settings));
        ensure!(r.status.success(), "{}", r.describe());
        // The scenario must happen for the test to mean anything: some
        // objects Python made took the address the extension's left.
        for kind in ["int", "str", "tuple"] {
            let reused = r.stdout.split_whitespace().find_map(|w| w.strip_prefix(&format!("{kind}=")));
            let reused: u32 = reused.and_then(|n| n.parse().ok()).unwrap_or(0);
            ensure!(reused > 0, "no {kind} reused an address: {}", r.stdout);
        }
        let (findings, _) = r.summary_findings()?;
        let want = exact_leaks(&["leak-buildvalue"]);
        ensure!(
            finding_set(&findings) == want,
            "a reused address was blamed on the extension, or the real leak missed: {findings:#?}\nwant {want:?}"
        );
        Ok(())
    });
}

#[test]
fn leaks_made_by_four_threads_at_once_are_all_found() {
    on_every_python("threads", |py| {
        let built = leaks_fixture(py);
        let calls: Vec<&str> = LEAKY.iter().map(|(c, _)| *c).chain(CORRECT.iter().copied()).collect();
        let r = run(py, &[&built], &driver(&calls, 4), Agent::Json(&[]));
        ensure!(r.status.success(), "{}", r.describe());
        let (findings, _) = r.summary_findings()?;
        let markers: Vec<&str> = LEAKY.iter().map(|(_, m)| *m).collect();
        let want = exact_leaks(&markers);
        ensure!(finding_set(&findings) == want, "findings {:#?}\nwant {want:?}", finding_set(&findings));
        let buildvalue = findings.iter().find(|f| f.line == Some(marker_line("leaks.c", "leak-buildvalue")));
        ensure!(buildvalue.is_some_and(|f| f.count == 160), "4 threads x 40 calls: {buildvalue:?}");
        Ok(())
    });
}

#[test]
fn fail_on_findings_and_check_see_a_real_leak() {
    let py = &common::matrix::pythons()[0];
    let built = leaks_fixture(py);
    library();
    let file = scratch("leaks.jsonl");
    let code = driver(&["leaks.pair_sum(i, 1)"], 1);
    let out = std::process::Command::new(launcher())
        .args(["run", "--fail-on-findings", "--format", "json", "--output"])
        .arg(&file)
        .arg("--")
        .arg(&py.path)
        .args(["-c", &code])
        .env("PYTHONPATH", &built.dir)
        .output()
        .expect("run refwatch");
    assert_eq!(out.status.code(), Some(1), "--fail-on-findings with a leak: {out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0 0\n", "the program's own output is unchanged");
    let check =
        std::process::Command::new(launcher()).arg("check").arg(&file).output().expect("refwatch check");
    assert_eq!(check.status.code(), Some(1), "{check:?}");
    let text = String::from_utf8_lossy(&check.stdout);
    let line = marker_line("leaks.c", "leak-buildvalue");
    assert!(text.contains("LEAK") && text.contains(&format!("leaks.c:{line} in pair_sum")), "{text}");
}

#[test]
fn an_extra_increment_on_an_owned_object_is_named_where_a_hook_sees_it_else_at_function_level() {
    on_every_python("extra incref", |py| {
        let normal = fixture::build(py, "extra_ref.c", "extra_ref", &[]);
        let limited_version = if py.at_least(3, 12) { "0x030c0000" } else { "0x030a0000" };
        let define = format!("-DPy_LIMITED_API={limited_version}");
        let limited = fixture::build(py, "extra_ref.c", "extra_ref", &[&define]);
        let driver = |call: &str| {
            format!("import extra_ref\nowned = [[] for _ in range(40)]\nfor o in owned:\n    extra_ref.{call}(o)\n")
        };
        let line = |m| marker_line("extra_ref.c", m);
        let exact = |m| -> BTreeSet<(String, String, u32, String)> {
            [("Leak".to_string(), "extra_ref.c".to_string(), line(m), "Exact".to_string())].into()
        };
        // Py_IncRef is a call on every build: exact everywhere.
        let r = run(py, &[&normal], &driver("keep_explicit"), Agent::Json(&[]));
        let (findings, _) = r.summary_findings()?;
        ensure!(finding_set(&findings) == exact("extra-incref-call"), "Py_IncRef: {findings:#?}");
        ensure!(
            findings[0].count == 40 && findings[0].function.as_deref() == Some("keep_explicit"),
            "{findings:?}"
        );
        // Py_INCREF of the normal API is inline on every build: the calls of
        // `keep` left the references, named at function level with the lines
        // DWARF places Py_INCREF at as candidates (before 3.12 that includes
        // Py_RETURN_NONE's increment of None). Watchpoints off: pinning the
        // line is tests/watchpoints.rs's subject.
        let unpinned = || Agent::Json(&[("REFWATCH_WATCHPOINTS", "off")]);
        let function = |m| -> BTreeSet<(String, String, u32, String)> {
            [("Leak".to_string(), "extra_ref.c".to_string(), line(m), "Function".to_string())].into()
        };
        let r = run(py, &[&normal], &driver("keep"), unpinned());
        let (findings, _) = r.summary_findings()?;
        ensure!(finding_set(&findings) == function("extra-incref"), "inline Py_INCREF: {findings:#?}");
        ensure!(
            findings[0].count == 40
                && findings[0].function.as_deref() == Some("keep")
                && findings[0].candidates.first() == Some(&line("extra-incref")),
            "{findings:?}"
        );
        // Limited API: Py_INCREF is a call on 3.12+ and on debug builds.
        let r = run(py, &[&limited], &driver("keep"), unpinned());
        let (findings, _) = r.summary_findings()?;
        let visible = py.at_least(3, 12) || py.is_debug();
        let want = if visible { exact("extra-incref") } else { function("extra-incref") };
        ensure!(finding_set(&findings) == want, "limited Py_INCREF (visible: {visible}): {findings:#?}");
        // Correct twins: nothing.
        for built in [&normal, &limited] {
            let r = run(py, &[built], &driver("borrow"), Agent::Json(&[]));
            let (findings, _) = r.summary_findings()?;
            ensure!(findings.is_empty(), "balanced increments: {findings:#?}");
        }
        Ok(())
    });
}

#[test]
fn sampling_still_finds_a_growing_leak_with_an_estimated_count() {
    on_every_python("sampled leaks", |py| {
        let built = leaks_fixture(py);
        let code =
            driver(&["leaks.pair_sum(i, i + 1)", "leaks.pair_sum(i, i + 2)", "leaks.pair_sum_ok(i, 1)"], 4);
        let r = run(py, &[&built], &code, Agent::Json(&[("REFWATCH_SAMPLE", "10")]));
        ensure!(r.status.success(), "{}", r.describe());
        let (findings, _) = r.summary_findings()?;
        ensure!(finding_set(&findings) == exact_leaks(&["leak-buildvalue"]), "{findings:#?}");
        // 320 tuples leaked; one fresh object in ten is followed.
        let f = &findings[0];
        ensure!((100..=900).contains(&f.count) && f.evidence.contains("about"), "estimate: {f:?}");
        Ok(())
    });
}

#[test]
fn a_growing_leak_is_streamed_during_the_run_before_any_exit() {
    on_every_python("periodic", |py| {
        let built = leaks_fixture(py);
        // Leaks for a while (sleeping, so the main thread takes the GIL back
        // and runs refwatch's pending checks on every interpreter), then dies
        // of SIGKILL: no exit handler runs, so only a finding streamed during
        // the run can be there.
        let code = "import leaks, os, signal, time\n\
                    end = time.time() + 2.5\n\
                    i = 0\n\
                    while time.time() < end:\n\
                    \x20   leaks.pair_sum(i, 1); i += 1; time.sleep(0.002)\n\
                    os.kill(os.getpid(), signal.SIGKILL)\n";
        // With periodic reports (the reporter thread asks for the checks),
        // and without (the extension's own calls into refwatch do).
        for agent in
            [&[("REFWATCH_INTERVAL", "0.1"), ("REFWATCH_CENSUS", "0.3")][..], &[("REFWATCH_CENSUS", "0.3")]]
        {
            let r = run(py, &[&built], code, Agent::Json(agent));
            ensure!(r.summary(None).is_none(), "SIGKILL leaves no summary: {}", r.describe());
            let streamed = r.streamed();
            let want = exact_leaks(&["leak-buildvalue"]);
            let got = finding_set(&streamed.iter().map(|f| (*f).clone()).collect::<Vec<_>>());
            ensure!(got == want, "{agent:?}: streamed during the run: {streamed:#?}");
        }
        Ok(())
    });
}

#[test]
fn instances_of_python_classes_made_by_the_extension_die_once_and_their_leak_is_named() {
    on_every_python("instances", |py| {
        let built = fixture::build(py, "instances.c", "instances", &[]);
        let code = "import instances, gc, collections\n\
                    revived = []\n\
                    class A: pass\n\
                    class B(dict): pass\n\
                    class C(A): pass\n\
                    class D(B):\n    def __del__(self):\n        if len(revived) < 3: revived.append(self)\n\
                    class E(Exception): pass\n\
                    class F(collections.OrderedDict): pass\n\
                    class G(list): __slots__ = ('x',)\n\
                    for i in range(500):\n    for cls in (A, B, C, D, E, F, G, dict, list):\n        instances.make(cls)\n    \
                    if i % 100 == 0: gc.collect()\n\
                    for cls in (A, C, C):\n    instances.make_and_lose(cls)\n\
                    print('ok', len(revived))\n";
        let r = run(py, &[&built], code, Agent::Json(&[]));
        ensure!(r.status.success() && r.stdout == "ok 3\n", "{}", r.describe());
        let (findings, _) = r.summary_findings()?;
        let line = marker_line("instances.c", "lost-instance");
        let expected: BTreeSet<_> = [(
            format!("{:?}", FindingKind::Leak),
            "instances.c".to_string(),
            line,
            format!("{:?}", Precision::Exact),
        )]
        .into();
        ensure!(
            finding_set(&findings) == expected,
            "expected one exact leak at instances.c:{line}: {findings:#?}"
        );
        ensure!(findings[0].count == 3, "three instances lost: {findings:#?}");
        Ok(())
    });
}

#[test]
fn references_held_where_traversals_do_not_report_them_are_not_leaks() {
    on_every_python("holders", |py| {
        let built = fixture::build(py, "holders.c", "holders", &[]);
        let code = "import holders, collections\n\
                    kept = [holders.hold() for _ in range(5)]\n\
                    kept += [holders.named(i) for i in range(5)]\n\
                    kept += [holders.table(4), holders.table(3), holders.table(100)]\n\
                    def f(): pass\n\
                    for _ in range(3): holders.keep_code(f.__code__)\n\
                    holders.cache(6)\n\
                    ordered, plain = collections.OrderedDict(), {}\n\
                    holders.fill(ordered, 5); holders.fill(plain, 5)\n\
                    kept += [holders.fold('Listed%d' % i) for i in range(5)]\n\
                    keyed = {holders.fold('Key%d' % i): i for i in range(5)}\n\
                    print(len(kept), len(ordered), len(plain), len(keyed), holders.WIDTH)\n";
        let r = run(py, &[&built], code, Agent::Json(&[]));
        ensure!(r.status.success() && r.stdout == "18 5 5 5 100002\n", "{}", r.describe());
        let (findings, _) = r.summary_findings()?;
        ensure!(findings.is_empty(), "{findings:#?}");
        Ok(())
    });
}

/// A module's state without `m_traverse` (as ijson 3.6.0's) holds what it
/// points at.
#[test]
fn objects_in_a_module_state_without_traverse_are_held() {
    on_every_python("module state", |py| {
        let built = fixture::build(py, "state.c", "state", &[]);
        let r = run(py, &[&built], "import state\nprint(state.name(1))\n", Agent::Json(&[]));
        ensure!(r.status.success() && r.stdout == "kept in the state 1\n", "{}", r.describe());
        let (findings, _) = r.summary_findings()?;
        ensure!(findings.is_empty(), "{findings:#?}");
        Ok(())
    });
}

#[test]
fn the_standard_library_watched_whole_gives_no_finding() {
    // Any finding here is a false one: the interpreter's own extensions are
    // correct. Its output and status are unchanged too.
    let code = include_str!("drivers/stdlib_mix.py");
    on_every_python("stdlib watched whole", |py| {
        let bare = run(py, &[], code, Agent::Off);
        ensure!(bare.status.success(), "bare run: {}", bare.describe());
        let r = run(py, &[], code, Agent::Json(&[("REFWATCH_MODULES", "all")]));
        ensure!(r.status.success() && r.stdout == bare.stdout, "{}", r.describe());
        let (findings, _) = r.summary_findings()?;
        ensure!(findings.is_empty(), "{findings:#?}");
        Ok(())
    });
}
