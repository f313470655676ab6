//! Exact per-site counts at the right `file:line`, on every interpreter of
//! the matrix, for each way an extension's refcount operation reaches a call.

mod common;

use common::fixture::{self, marker_line, Built};
use common::matrix::Python;
use common::on_every_python;
use common::run::{run, Agent};
use refwatch_model::Site;
use std::collections::BTreeMap;

/// (incref, decref, dealloc) per line of `source`, from the summary.
type Counts = BTreeMap<u32, (u64, u64, u64)>;

fn counts_in(sites: &[Site], source: &str) -> Result<Counts, String> {
    let mut out = Counts::new();
    for s in sites {
        if s.is_unknown() {
            return Err(format!("unexpected site of unknown place: {s:?}"));
        }
        let file = s.file.as_deref().unwrap_or_default();
        if !file.ends_with(&format!("/{source}")) {
            return Err(format!("site outside {source}: {s:?}"));
        }
        let line = s.line.ok_or_else(|| format!("site without a line: {s:?}"))?;
        let entry = out.entry(line).or_default();
        *entry = (entry.0 + s.incref, entry.1 + s.decref, entry.2 + s.dealloc);
    }
    Ok(out)
}

/// Debug 3.12+ builds call `_Py_INCREF_IncRefTotal`/`_Py_DECREF_DecRefTotal`
/// from every inline Py_INCREF/Py_DECREF site.
fn per_site_totals(py: &Python) -> bool {
    py.is_debug() && py.at_least(3, 12)
}

fn counts_fixture(py: &Python) -> Built {
    fixture::build(py, "counts.c", "counts", &[])
}

#[test]
fn each_call_site_is_counted_exactly_at_its_line() {
    on_every_python("counts", |py| {
        let built = counts_fixture(py);
        let code = "import counts\n\
                    o = []\n\
                    counts.explicit_incref(o, 1000)\n\
                    counts.explicit_decref(o, 600)\n\
                    counts.explicit_decref(o, 400)\n\
                    assert counts.free_fresh(300) == 300\n\
                    counts.free_via_helper(200)\n\
                    counts.inline_pair(o, 50)\n\
                    print('ok')";
        let r = run(py, &[&built], code, Agent::Json(&[("REFWATCH_INTERVAL", "0")]));
        ensure!(r.status.success() && r.stdout == "ok\n", "driver: {}", r.describe());
        let got = counts_in(r.summary_sites()?, "counts.c")?;
        let line = |m| marker_line("counts.c", m);
        let mut want = Counts::new();
        want.insert(line("explicit-incref"), (1000, 0, 0));
        want.insert(line("explicit-decref"), (0, 1000, 0));
        let decref_calls = if per_site_totals(py) { 300 } else { 0 };
        want.insert(line("free-fresh"), (0, decref_calls, 300));
        want.insert(line("helper-release"), (0, decref_calls * 200 / 300, 200));
        if per_site_totals(py) {
            want.insert(line("inline-incref"), (50, 0, 0));
            want.insert(line("inline-decref"), (0, 50, 0));
        }
        ensure!(got == want, "per-line counts (incref, decref, dealloc):\n got {got:?}\nwant {want:?}");
        Ok(())
    });
}

#[test]
fn helper_lines_are_named_with_the_helper_function() {
    on_every_python("helper", |py| {
        let built = counts_fixture(py);
        let r = run(py, &[&built], "import counts; counts.free_via_helper(5)", Agent::Json(&[]));
        let sites = r.summary_sites()?;
        let helper = marker_line("counts.c", "helper-release");
        let site = sites.iter().find(|s| s.line == Some(helper));
        ensure!(
            site.is_some_and(|s| s.function.as_deref() == Some("release_item") && s.dealloc == 5),
            "expected 5 deallocs in release_item at counts.c:{helper}, got {sites:?}"
        );
        ensure!(
            !sites.iter().any(|s| s.line == Some(marker_line("counts.c", "helper-caller"))),
            "the helper's caller was named instead of the helper: {sites:?}"
        );
        Ok(())
    });
}

#[test]
fn limited_api_refcounts_are_calls_with_the_object() {
    on_every_python("limited", |py| {
        // 3.12+ compiles Py_INCREF as _Py_IncRef under the 3.12 limited API;
        // debug 3.10/3.11 do it for limited API 3.10 and up.
        let version = if py.at_least(3, 12) { "0x030c0000" } else { "0x030a0000" };
        let define = format!("-DPy_LIMITED_API={version}");
        let built = fixture::build(py, "limited.c", "limited", &[&define]);
        let code = "import limited\nlimited.pair([], 70)\nlimited.free_fresh(30)";
        let r = run(py, &[&built], code, Agent::Json(&[]));
        ensure!(r.status.success(), "driver: {}", r.describe());
        let got = counts_in(r.summary_sites()?, "limited.c")?;
        let line = |m| marker_line("limited.c", m);
        let mut want = Counts::new();
        if py.at_least(3, 12) || py.is_debug() {
            want.insert(line("limited-incref"), (70, 0, 0));
            want.insert(line("limited-decref"), (0, 70, 0));
            // The free happens inside _Py_DecRef, in the interpreter.
            want.insert(line("limited-free"), (0, 30, 0));
            if !py.at_least(3, 12) {
                // Before 3.12 the limited API's Py_RETURN_NONE takes a
                // reference to None (immortal since).
                want.insert(line("limited-return-none"), (1, 0, 0));
            }
        } else {
            // Inline Py_DECREF: only the frees are calls.
            want.insert(line("limited-free"), (0, 0, 30));
        }
        ensure!(got == want, "limited API counts:\n got {got:?}\nwant {want:?}");
        Ok(())
    });
}

#[test]
fn threads_count_into_their_own_tables_and_sum_exactly() {
    on_every_python("threads", |py| {
        let built = counts_fixture(py);
        let code = "import counts, threading\n\
                    objs = [[] for _ in range(4)]\n\
                    def work(o):\n\
                    \x20   for _ in range(50):\n\
                    \x20       counts.explicit_incref(o, 100)\n\
                    \x20       counts.explicit_decref(o, 100)\n\
                    ts = [threading.Thread(target=work, args=(o,)) for o in objs]\n\
                    [t.start() for t in ts]\n\
                    [t.join() for t in ts]";
        let r = run(py, &[&built], code, Agent::Json(&[("REFWATCH_INTERVAL", "0.05")]));
        ensure!(r.status.success(), "driver: {}", r.describe());
        let got = counts_in(r.summary_sites()?, "counts.c")?;
        let incref = got.get(&marker_line("counts.c", "explicit-incref")).copied();
        let decref = got.get(&marker_line("counts.c", "explicit-decref")).copied();
        ensure!(incref == Some((20_000, 0, 0)) && decref == Some((0, 20_000, 0)), "got {got:?}");
        Ok(())
    });
}

#[test]
fn sampling_records_one_event_in_n_and_marks_estimates() {
    on_every_python("sample", |py| {
        let built = counts_fixture(py);
        let code = "import counts\no = []\ncounts.explicit_incref(o, 1000)\ncounts.explicit_decref(o, 1000)";
        let r = run(py, &[&built], code, Agent::Json(&[("REFWATCH_SAMPLE", "10")]));
        ensure!(r.status.success(), "driver: {}", r.describe());
        let Some(refwatch_model::Event::Summary { sample, .. }) = r.summary(None) else {
            return Err(format!("no summary: {}", r.describe()));
        };
        ensure!(*sample == Some(10), "summary sample field: {sample:?}");
        let got = counts_in(r.summary_sites()?, "counts.c")?;
        let (incref, _, _) =
            got.get(&marker_line("counts.c", "explicit-incref")).copied().unwrap_or_default();
        let (_, decref, _) =
            got.get(&marker_line("counts.c", "explicit-decref")).copied().unwrap_or_default();
        // One event in ten per thread on average (random gaps), scaled back
        // up: an estimate of the 1000 each.
        ensure!(incref.abs_diff(1000) <= 300 && decref.abs_diff(1000) <= 300, "estimates {incref}, {decref}");
        ensure!(incref % 10 == 0 && decref % 10 == 0, "estimates are multiples of N: {incref}, {decref}");
        Ok(())
    });
}

#[test]
fn a_tail_called_release_is_a_site_unknown_never_an_interpreter_line() {
    on_every_python("tail call", |py| {
        let built = counts_fixture(py);
        let code = "import counts\no = []\nc = counts.hold_in_capsule(o)\ndel c";
        let r = run(py, &[&built], code, Agent::Json(&[]));
        ensure!(r.status.success(), "driver: {}", r.describe());
        let sites = r.summary_sites()?;
        let unknown: Vec<&Site> = sites.iter().filter(|s| s.is_unknown()).collect();
        ensure!(
            unknown.len() == 1 && unknown[0].decref == 1 && unknown[0].file.is_none(),
            "expected one unplaced decref: {sites:?}"
        );
        let placed =
            counts_in(&sites.iter().filter(|s| !s.is_unknown()).cloned().collect::<Vec<_>>(), "counts.c")?;
        let want: Counts = [(marker_line("counts.c", "capsule-incref"), (1, 0, 0))].into();
        ensure!(placed == want, "placed sites {placed:?}, want {want:?}");
        Ok(())
    });
}

#[test]
fn without_dwarf_a_site_is_named_by_symbol_and_offset() {
    on_every_python("no dwarf", |py| {
        let built = fixture::build(py, "counts.c", "counts", &["-g0"]);
        let r = run(py, &[&built], "import counts; counts.free_fresh(3)", Agent::Json(&[]));
        let sites = r.summary_sites()?;
        // Debug 3.12+ builds add the Py_DECREF's own total call as a site.
        let expected_sites = if per_site_totals(py) { 2 } else { 1 };
        ensure!(
            sites.len() == expected_sites
                && sites.iter().map(|s| s.dealloc).sum::<u64>() == 3
                && sites.iter().all(|s| s.file.is_none()
                    && s.function.as_deref().is_some_and(|f| f.starts_with("free_fresh+0x"))),
            "expected free_fresh+0x..: {sites:?}"
        );
        Ok(())
    });
}

#[test]
fn separate_debug_info_is_found_through_gnu_debuglink() {
    on_every_python("debuglink", |py| {
        let built = fixture::build(py, "counts.c", "counts", &[]);
        // Split the DWARF into counts.debug beside a stripped module, as
        // distributions ship it.
        let dir = common::run::scratch("debuglink");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let module = std::fs::read_dir(&built.dir)
            .map_err(|e| e.to_string())?
            .filter_map(|e| e.ok())
            .find(|e| e.file_name().to_string_lossy().ends_with(".so"))
            .ok_or("no module built")?;
        let stripped = dir.join(module.file_name());
        let debug = dir.join("counts.debug");
        let objcopy = |args: &[&std::ffi::OsStr]| {
            std::process::Command::new("objcopy").args(args).status().is_ok_and(|s| s.success())
        };
        ensure!(
            objcopy(&["--only-keep-debug".as_ref(), module.path().as_os_str(), debug.as_os_str()]),
            "objcopy"
        );
        let link = format!("--add-gnu-debuglink={}", debug.display());
        ensure!(
            objcopy(&[
                "--strip-debug".as_ref(),
                link.as_ref(),
                module.path().as_os_str(),
                stripped.as_os_str()
            ]),
            "objcopy strip"
        );
        let split = fixture::Built { dir: dir.clone(), ..built.clone() };
        let r = run(py, &[&split], "import counts; counts.free_fresh(3)", Agent::Json(&[]));
        let got = counts_in(r.summary_sites()?, "counts.c")?;
        let want: Counts =
            [(marker_line("counts.c", "free-fresh"), (0, if per_site_totals(py) { 3 } else { 0 }, 3))].into();
        ensure!(got == want, "with DWARF in counts.debug: got {got:?}, want {want:?}");
        Ok(())
    });
}
