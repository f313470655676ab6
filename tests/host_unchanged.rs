//! Never hurt the host: the program's stdout and exit status are the same
//! with and without refwatch; processes that never load a watched extension
//! are left alone; every way of ending still yields a summary; forks behave.

mod common;

use common::fixture::{self, marker_line};
use common::matrix::Python;
use common::on_every_python;
use common::run::{run, run_args, Agent, Run};
use refwatch_model::{Event, Site};

fn dealloc_at(sites: &[Site], marker: &str) -> u64 {
    let line = marker_line("counts.c", marker);
    sites.iter().filter(|s| s.line == Some(line)).map(|s| s.dealloc).sum()
}

fn summary_sites_of(r: &Run, pid: u32) -> Result<&[Site], String> {
    match r.summary(Some(pid)) {
        Some(Event::Summary { sites, .. }) => Ok(sites),
        _ => Err(format!("no summary from pid {pid}: {:?}", r.events)),
    }
}

#[test]
fn stdout_and_exit_status_are_unchanged() {
    on_every_python("stdout", |py| {
        let built = fixture::build(py, "counts.c", "counts", &[]);
        let code = "import counts, sys\n\
                    o = []\n\
                    counts.explicit_incref(o, 10); counts.explicit_decref(o, 10)\n\
                    print('first line'); sys.stdout.write('x' * 100000 + '\\n')\n\
                    print(counts.free_fresh(3)); sys.stdout.flush()\n\
                    sys.exit(3)";
        let bare = run(py, &[&built], code, Agent::Off);
        let watched = run(py, &[&built], code, Agent::Raw(&[("REFWATCH_INTERVAL", "0.01")]));
        ensure!(bare.status.code() == Some(3), "bare run: {}", bare.describe());
        ensure!(
            watched.status.code() == bare.status.code(),
            "status {:?} vs {:?}",
            watched.status,
            bare.status
        );
        ensure!(watched.stdout == bare.stdout, "stdout differs under refwatch");
        ensure!(watched.stderr.contains("summary at exit"), "no text summary on stderr: {}", watched.stderr);
        Ok(())
    });
}

#[test]
fn each_invalid_setting_gets_one_line_and_the_program_runs_unwatched() {
    let bad = [
        ("REFWATCH_INTERVAL", "5s"),
        ("REFWATCH_SAMPLE", "0"),
        ("REFWATCH_OUTPUT", "/tmp/%x"),
        ("REFWATCH_FORMAT", "yaml"),
        ("REFWATCH_MODULES", ","),
        ("REFWATCH_CENSUS", "-3"),
        ("REFWATCH_ON_OVERRELEASE", "ignore"),
    ];
    on_every_python("settings", |py| {
        let built = fixture::build(py, "counts.c", "counts", &[]);
        let code = "import counts; print(counts.free_fresh(2))";
        let bare = run(py, &[&built], code, Agent::Off);
        for (var, value) in bad {
            let r = run(py, &[&built], code, Agent::Raw(&[(var, value)]));
            ensure!(
                r.status.success() && r.stdout == bare.stdout,
                "{var}={value}: program changed: {}",
                r.describe()
            );
            let lines: Vec<&str> = r.stderr.lines().filter(|l| l.contains(var)).collect();
            ensure!(lines.len() == 1, "{var}={value}: expected one line naming it, got {:?}", r.stderr);
            ensure!(
                lines[0].contains(&format!("{value:?}")) && lines[0].contains("expected"),
                "{var}: the line must show the value and what is accepted: {}",
                lines[0]
            );
            ensure!(!r.stderr.contains("summary"), "{var}={value}: refwatch still ran: {}", r.stderr);
        }
        Ok(())
    });
}

/// Variadic calls refwatch follows (`Py_BuildValue`, `PyArg_ParseTuple*`,
/// `PyUnicode_FromFormat`, `PyBytes_FromFormat`, through the shadow-stack
/// trampoline) with arguments on the stack and in vector registers give
/// exactly what they give without refwatch.
#[test]
fn variadic_calls_give_the_same_results() {
    on_every_python("variadic", |py| {
        let built = fixture::build(py, "varargs.c", "varargs", &[]);
        let code = "import varargs\n\
                    for n in (0, 7, -3, 10**6):\n\
                    \x20   print(varargs.build(n))\n\
                    \x20   print(varargs.parse(n, n / 4, n * 2, 1.5, -n, 2.25, 'g%d' % n, 0.125, [n]))\n\
                    \x20   print(varargs.keywords(n / 8, z=2.5), varargs.keywords(1.0, 2, 3.5))\n\
                    try:\n\
                    \x20   varargs.parse(1, 2)\n\
                    except TypeError as e:\n\
                    \x20   print('TypeError', e)\n";
        let bare = run(py, &[&built], code, Agent::Off);
        ensure!(bare.status.success() && bare.stdout.lines().count() == 13, "bare run: {}", bare.describe());
        let watched = run(py, &[&built], code, Agent::Json(&[]));
        ensure!(
            watched.status.success() && watched.stdout == bare.stdout,
            "under refwatch: {}\nwithout: {}",
            watched.describe(),
            bare.stdout
        );
        Ok(())
    });
}

/// refwatch sees lists, tuples, dicts and an extension's own type die
/// through their `tp_dealloc` once the extension made one (before 3.14);
/// releasing a structure nested far deeper than the C stack allows must
/// still work as without it (the interpreter's trashcan, which refwatch
/// keeps for those deaths).
#[test]
fn deeply_nested_containers_are_released_as_without_refwatch() {
    on_every_python("deep nesting", |py| {
        let leaks = fixture::build(py, "leaks.c", "leaks", &[]);
        let counts = fixture::build(py, "counts.c", "counts", &[]);
        let instances = fixture::build(py, "instances.c", "instances", &[]);
        let code = "import leaks, counts, instances\n\
                    leaks.checked_ok(1); leaks.pair(1); counts.free_via_helper(1)\n\
                    instances.make(instances.Cons)\n\
                    finalized = 0\n\
                    class Node:\n\
                    \x20   def __del__(self):\n\
                    \x20       global finalized; finalized += 1\n\
                    shapes = [('list', lambda x, i: [x, Node()] if i % 1000 == 0 else [x]),\n\
                    \x20         ('tuple', lambda x, i: (x, i)),\n\
                    \x20         ('dict', lambda x, i: {'next': x, 'node': Node()} if i % 1000 == 0 else {'next': x}),\n\
                    \x20         ('Cons', lambda x, i: instances.Cons(x))]\n\
                    for name, make in shapes:\n\
                    \x20   x = None\n\
                    \x20   for i in range(300000):\n\
                    \x20       x = make(x, i)\n\
                    \x20   del x\n\
                    \x20   print(name, 'released', finalized)\n";
        let built = [&leaks, &counts, &instances];
        let bare = run(py, &built, code, Agent::Off);
        ensure!(bare.status.success(), "bare run: {}", bare.describe());
        let watched = run(py, &built, code, Agent::Json(&[]));
        ensure!(
            watched.status.code() == bare.status.code() && watched.stdout == bare.stdout,
            "under refwatch: {}\nwithout: {}",
            watched.describe(),
            bare.stdout
        );
        ensure!(watched.summary(None).is_some(), "refwatch did not watch: {}", watched.describe());
        Ok(())
    });
}

#[test]
fn processes_without_watched_extensions_stay_silent_and_start_nothing() {
    on_every_python("silent", |py| {
        // A stdlib extension module (json's C accelerator, where it is a
        // separate file) is not watched by default; the bad setting would be
        // reported if refwatch woke up.
        let code = "import json, os, sys\n\
                    json.dumps({'a': [1, 2]})\n\
                    print(len(os.listdir('/proc/self/task')))";
        let r = run(py, &[], code, Agent::Raw(&[("REFWATCH_INTERVAL", "bad")]));
        ensure!(r.status.success() && r.stdout == "1\n", "thread count / status: {}", r.describe());
        ensure!(r.stderr.is_empty(), "refwatch wrote to a process it does not watch: {:?}", r.stderr);
        Ok(())
    });
    // Programs that are not Python at all inherit LD_PRELOAD (shells, ls).
    let py = &common::matrix::pythons()[0];
    let r = run_args(
        py,
        &[],
        &["-c", "import subprocess; subprocess.run(['sh', '-c', 'ls / >/dev/null; echo child'])"],
        Agent::Raw(&[("REFWATCH_SAMPLE", "zero")]),
    );
    assert_eq!(r.stdout, "child\n", "{}", r.describe());
    assert!(r.stderr.is_empty(), "non-Python child not silent: {:?}", r.stderr);
}

#[test]
fn os_exit_still_writes_the_summary() {
    on_every_python("os._exit", |py| {
        let built = fixture::build(py, "counts.c", "counts", &[]);
        let code = "import counts, os\ncounts.free_fresh(5)\nos._exit(4)";
        let r = run(py, &[&built], code, Agent::Json(&[]));
        ensure!(r.status.code() == Some(4), "status: {}", r.describe());
        let sites = r.summary_sites()?;
        ensure!(dealloc_at(sites, "free-fresh") == 5, "summary after os._exit: {sites:?}");
        Ok(())
    });
}

#[test]
fn a_forked_child_keeps_watching_with_fresh_counts_and_its_own_summary() {
    on_every_python("fork", |py| {
        let built = fixture::build(py, "counts.c", "counts", &[]);
        let code = "import counts, os, sys\n\
                    counts.free_fresh(1)\n\
                    pid = os.fork()\n\
                    if pid == 0:\n\
                    \x20   counts.free_fresh(7)\n\
                    \x20   sys.exit(0)\n\
                    os.waitpid(pid, 0)\n\
                    counts.free_fresh(3)\n\
                    print('parent done')";
        let r = run(py, &[&built], code, Agent::Json(&[("REFWATCH_INTERVAL", "0.05")]));
        ensure!(r.status.success() && r.stdout == "parent done\n", "driver: {}", r.describe());
        let parent = r.events.first().map(Event::pid).ok_or("no events")?;
        let child =
            r.events.iter().map(Event::pid).find(|&p| p != parent).ok_or("no event from the child")?;
        ensure!(
            r.events.iter().any(|e| e.pid() == child && matches!(e, Event::Start { .. })),
            "the child did not write its own start line"
        );
        ensure!(dealloc_at(summary_sites_of(&r, child)?, "free-fresh") == 7, "child counts not fresh");
        ensure!(dealloc_at(summary_sites_of(&r, parent)?, "free-fresh") == 4, "parent counts");
        Ok(())
    });
}

/// Python 3.12+ warns when a process with several threads forks; refwatch's
/// reporter thread must not cause that warning.
#[test]
fn forking_does_not_warn_about_refwatchs_thread() {
    let driver = |extra_thread: bool| {
        format!(
            "import counts, os, threading, time\n\
             counts.free_fresh(1)\n\
             {}\n\
             time.sleep(0.3)\n\
             pid = os.fork()\n\
             if pid == 0:\n\
             \x20   os._exit(0)\n\
             os.waitpid(pid, 0)\n\
             print('forked')",
            if extra_thread { "threading.Thread(target=time.sleep, args=(1,)).start()" } else { "" }
        )
    };
    on_every_python("fork warning", |py: &Python| {
        if !py.at_least(3, 12) {
            return Ok(()); // no such warning before 3.12
        }
        let built = fixture::build(py, "counts.c", "counts", &[]);
        let agent = &[("REFWATCH_INTERVAL", "0.05")];
        for warn_args in [&[][..], &["-W", "always::DeprecationWarning"][..]] {
            let mut args: Vec<&str> = warn_args.to_vec();
            let code = driver(false);
            args.extend(["-c", &code]);
            let r = run_args(py, &[&built], &args, Agent::Json(agent));
            ensure!(r.stdout.contains("forked"), "driver: {}", r.describe());
            let parent = r.events.first().map(Event::pid).unwrap_or_default();
            let reports =
                r.events.iter().filter(|e| e.pid() == parent && matches!(e, Event::Report { .. })).count();
            ensure!(reports >= 1, "the reporter thread never ran before the fork: {:?}", r.events);
            ensure!(!r.stderr.contains("DeprecationWarning"), "{warn_args:?}: refwatch caused {}", r.stderr);
            // The same driver with a real extra thread does warn: the check
            // above can see the warning when there is one.
            let code = driver(true);
            let mut args: Vec<&str> = warn_args.to_vec();
            args.extend(["-c", &code]);
            let control = run_args(py, &[&built], &args, Agent::Json(agent));
            ensure!(
                control.stderr.contains("DeprecationWarning"),
                "{warn_args:?}: control did not warn: {}",
                control.describe()
            );
        }
        Ok(())
    });
}

#[test]
fn totals_follow_the_build() {
    on_every_python("totals", |py| {
        let built = fixture::build(py, "counts.c", "counts", &[]);
        // Python before 3.13 only notices a pending call from another thread
        // when the main thread next takes the GIL (here: after each sleep).
        let code = "import counts, time\n\
                    keep = [[] for _ in range(20000)]\n\
                    end = time.time() + 1.0\n\
                    while time.time() < end:\n\
                    \x20   keep.append([]); counts.free_fresh(1); time.sleep(0.001)\n\
                    print(len(keep) > 0)";
        let agent = [("REFWATCH_INTERVAL", "0.1"), ("REFWATCH_CENSUS", "0.2")];
        let r = run(py, &[&built], code, Agent::Json(&agent));
        ensure!(r.status.success(), "driver: {}", r.describe());
        let Some(Event::Summary { totals, .. }) = r.summary(None) else { return Err("no summary".into()) };
        let reports: Vec<&refwatch_model::Totals> = r
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Report { totals, .. } => Some(totals),
                _ => None,
            })
            .collect();
        ensure!(reports.len() >= 2, "expected periodic reports: {:?}", r.events);
        if py.probe.debug {
            ensure!(totals.refs.is_some(), "debug build without total refcount: {totals:?}");
            ensure!(reports.iter().any(|t| t.refs_delta.is_some()), "no refs_delta in reports: {reports:?}");
        } else {
            ensure!(totals.refs.is_none(), "release build cannot know the total refcount: {totals:?}");
            ensure!(
                reports.iter().any(|t| t.objects_from.as_deref() == Some("census")),
                "no periodic census with REFWATCH_CENSUS=0.2: {reports:?}"
            );
        }
        let expected_source = if py.probe.trace_refs {
            "refchain"
        } else if py.probe.debug {
            ""
        } else {
            "census"
        };
        if expected_source.is_empty() {
            ensure!(totals.objects.is_none(), "plain debug build has no object count: {totals:?}");
        } else {
            ensure!(totals.objects_from.as_deref() == Some(expected_source), "objects from: {totals:?}");
            ensure!(totals.objects.unwrap_or_default() > 1000, "object count: {totals:?}");
            let lists = totals.by_type.iter().find(|t| t.type_name == "list").map_or(0, |t| t.count);
            ensure!(lists >= 20_000, "the 20000 live lists are not in the by-type counts: {totals:?}");
        }
        Ok(())
    });
}

/// refwatch's crash handler must leave every signal's outcome as it was:
/// a fault, an abort, and a SIGSEGV sent by kill all still end the process.
#[test]
fn signals_end_the_process_as_they_would_without_refwatch() {
    on_every_python("signals", |py| {
        let built = fixture::build(py, "counts.c", "counts", &[]);
        for (what, code) in [
            (
                "kill SIGSEGV",
                "import counts, os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\nprint('survived')",
            ),
            ("abort", "import counts, os\nos.abort()\nprint('survived')"),
            ("fault", "import counts, ctypes\nctypes.string_at(0)\nprint('survived')"),
        ] {
            let bare = run(py, &[&built], code, Agent::Off);
            let watched = run(py, &[&built], code, Agent::Json(&[]));
            ensure!(
                std::os::unix::process::ExitStatusExt::signal(&bare.status).is_some()
                    && bare.status == watched.status
                    && watched.stdout == bare.stdout,
                "{what}: bare {:?}, watched {}",
                bare.status,
                watched.describe()
            );
        }
        Ok(())
    });
}

#[test]
fn objects_a_module_holds_die_cleanly_when_it_is_cleared_at_shutdown() {
    on_every_python("module cleared at shutdown", |py| {
        let built = fixture::build(py, "module_attr.c", "module_attr", &[]);
        // The module's function refers back to it: a cycle the collector
        // clears at shutdown, the module's dict gone before its values die.
        let code = "import module_attr\nmodule_attr.ping()\nprint(len(module_attr.items0))\n";
        let r = run(py, &[&built], code, Agent::Json(&[]));
        ensure!(r.status.success() && r.stdout == "1\n", "{}", r.describe());
        let (findings, _) = r.summary_findings()?;
        ensure!(findings.is_empty(), "{findings:#?}");
        Ok(())
    });
}

#[test]
fn frequent_reports_never_upset_the_pending_calls_made_at_shutdown() {
    // 3.13+ debug builds assert, while making the last pending calls at
    // shutdown (before the at-exit callbacks), that each round leaves
    // fewer: refwatch's thread must not queue one while another runs.
    on_every_python("pending calls at shutdown", |py| {
        let built = fixture::build(py, "counts.c", "counts", &[]);
        let code = "import counts, sys\n\
                    o = []\n\
                    counts.explicit_incref(o, 10); counts.explicit_decref(o, 10)\n\
                    print(counts.free_fresh(3))\n\
                    sys.exit(3)";
        for attempt in 0..8 {
            let r = run(py, &[&built], code, Agent::Raw(&[("REFWATCH_INTERVAL", "0.01")]));
            ensure!(r.status.code() == Some(3), "attempt {attempt}: {}", r.describe());
        }
        Ok(())
    });
}

/// refwatch starts no thread of its own unless periodic reports are asked
/// for: with the default settings the program's `/proc/self/task` holds the
/// same threads, by name, as without refwatch (programs count their
/// threads); with `REFWATCH_INTERVAL=1` the reporter thread runs and reports.
#[test]
fn the_program_sees_no_thread_of_refwatchs_unless_periodic_reports_are_asked_for() {
    on_every_python("threads", |py| {
        let built = fixture::build(py, "counts.c", "counts", &[]);
        let code = "import counts, os, time\n\
                    counts.free_fresh(2)\n\
                    time.sleep(1.3)\n\
                    names = [open('/proc/self/task/%s/comm' % t).read().strip() for t in os.listdir('/proc/self/task')]\n\
                    print(sorted(names))\n";
        let bare = run(py, &[&built], code, Agent::Off);
        ensure!(bare.status.success(), "bare: {}", bare.describe());
        let watched = run(py, &[&built], code, Agent::Json(&[]));
        ensure!(
            watched.status.success() && watched.stdout == bare.stdout,
            "default settings: threads {} (bare: {})",
            watched.stdout.trim(),
            bare.stdout.trim()
        );
        ensure!(watched.summary(None).is_some(), "refwatch did not watch: {}", watched.describe());
        ensure!(
            !watched.events.iter().any(|e| matches!(e, Event::Report { .. })),
            "periodic reports by default: {:?}",
            watched.events
        );
        let reporting = run(py, &[&built], code, Agent::Json(&[("REFWATCH_INTERVAL", "1")]));
        ensure!(
            reporting.status.success() && reporting.stdout.contains("'refwatch'"),
            "REFWATCH_INTERVAL=1: no reporter thread: {}",
            reporting.describe()
        );
        ensure!(
            reporting.events.iter().any(|e| matches!(e, Event::Report { .. })),
            "REFWATCH_INTERVAL=1: no periodic report: {:?}",
            reporting.events
        );
        Ok(())
    });
}
