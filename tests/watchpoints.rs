//! Exact lines for inline `Py_INCREF`s, by hardware watchpoints: the extra
//! increment of a method whose calls leave references on its arguments is
//! pinned to its line (single- and multi-threaded, when a thread the
//! method starts makes it, and when a worker thread running before the
//! call does); with
//! `REFWATCH_WATCHPOINTS=off` the same leak is named at function level with
//! its candidate lines, and says why; balanced increments give nothing; a
//! program that takes SIGTRAP over after import never sees their traps.

mod common;

use common::fixture::{self, marker_line, Built};
use common::matrix::{loud, Python};
use common::on_every_python;
use common::run::{run, Agent};
use refwatch_model::event::{Finding, FindingKind, Precision};

fn fixture_for(py: &Python) -> Built {
    fixture::build(py, "extra_ref.c", "extra_ref", &[])
}

/// Calls `extra_ref.<call>(o)` once for each of 40 lists, spread over
/// `threads` threads.
fn driver(call: &str, threads: usize) -> String {
    driver_n(call, threads, 40)
}

/// `driver` on `lists` lists.
fn driver_n(call: &str, threads: usize, lists: usize) -> String {
    format!(
        "import extra_ref, threading\n\
         owned = [[] for _ in range({lists})]\n\
         def work(part):\n    for o in part:\n        extra_ref.{call}(o)\n\
         parts = [owned[t::{threads}] for t in range({threads})]\n\
         ts = [threading.Thread(target=work, args=(p,)) for p in parts]\n\
         [t.start() for t in ts]\n[t.join() for t in ts]\nprint('ok')\n"
    )
}

fn only_leak(findings: &[Finding]) -> Result<&Finding, String> {
    match findings {
        [f] if f.kind == FindingKind::Leak => Ok(f),
        _ => Err(format!("expected one leak: {findings:#?}")),
    }
}

/// Whether the kernel refused watchpoints here (then only the fallback can
/// be checked: told loudly).
fn refused(f: &Finding) -> bool {
    f.evidence.contains("refused a hardware watchpoint")
}

/// Checks that `f` is the exact finding `pinned` describes, unless the
/// kernel refused watchpoints here (said loudly).
fn pinned_unless_refused(py: &Python, f: &Finding, pinned: bool, what: String) -> Result<(), String> {
    if refused(f) {
        loud(&format!("SKIP exact line on {}: {}", py.label, f.evidence));
        return Ok(());
    }
    ensure!(pinned, "{what}: {f:#?}");
    Ok(())
}

#[test]
fn an_inline_extra_increment_is_pinned_to_its_line_and_falls_back_to_function_level_when_off() {
    on_every_python("watchpoints", |py| {
        let built = fixture_for(py);
        let cases = [
            ("keep", "extra-incref", "keep"),
            ("keep_after_use", "extra-incref-late", "keep_after_use"),
            ("keep_elsewhere", "extra-incref-thread", "keep_in_thread"),
            ("keep_by_worker", "extra-incref-worker", "keep_in_worker"),
        ];
        for (call, marker, function) in cases {
            let line = marker_line("extra_ref.c", marker);
            for threads in [1, 4] {
                let r = run(py, &[&built], &driver(call, threads), Agent::Json(&[]));
                ensure!(r.stdout == "ok\n", "{call}: {}", r.describe());
                let (findings, _) = r.summary_findings()?;
                let f = only_leak(&findings)?;
                let pinned = f.precision == Precision::Exact
                    && f.line == Some(line)
                    && f.function.as_deref() == Some(function)
                    && f.count == 40
                    && f.evidence.contains("pinned by a hardware watchpoint");
                let what = format!("{call} on {threads} thread(s): expected exact at extra_ref.c:{line}");
                pinned_unless_refused(py, f, pinned, what)?;
            }
            let r = run(py, &[&built], &driver(call, 1), Agent::Json(&[("REFWATCH_WATCHPOINTS", "off")]));
            let (findings, _) = r.summary_findings()?;
            let f = only_leak(&findings)?;
            // The candidates are the method's own increments: none when
            // the increment is made in the thread it starts.
            ensure!(
                f.precision == Precision::Function
                    && (f.candidates.contains(&line) || function != call)
                    && f.function.as_deref() == Some(call)
                    && f.evidence.contains("not pinned: watchpoints are off (REFWATCH_WATCHPOINTS=off)"),
                "{call} with watchpoints off: expected function level: {f:#?}"
            );
        }
        Ok(())
    });
}

/// Under `REFWATCH_SAMPLE`, one method call in N is followed: the method
/// that leaves references is still found, at function level with an
/// estimated count when watchpoints are off; once it is a suspect its calls
/// are all followed, so that a watchpoint still pins the line.
#[test]
fn sampled_method_calls_still_find_and_pin_an_inline_extra_increment() {
    on_every_python("sampled methods", |py| {
        let built = fixture_for(py);
        let line = marker_line("extra_ref.c", "extra-incref");
        let code = driver_n("keep", 1, 400);
        let r = run(py, &[&built], &code, Agent::Json(&[("REFWATCH_SAMPLE", "10")]));
        ensure!(r.stdout == "ok\n", "{}", r.describe());
        let (findings, _) = r.summary_findings()?;
        let f = only_leak(&findings)?;
        let pinned =
            f.precision == Precision::Exact && f.line == Some(line) && f.function.as_deref() == Some("keep");
        pinned_unless_refused(
            py,
            f,
            pinned,
            format!("sampled, watched: expected exact at extra_ref.c:{line}"),
        )?;
        let off = Agent::Json(&[("REFWATCH_SAMPLE", "10"), ("REFWATCH_WATCHPOINTS", "off")]);
        let r = run(py, &[&built], &code, off);
        let (findings, _) = r.summary_findings()?;
        let f = only_leak(&findings)?;
        ensure!(
            f.precision == Precision::Function
                && f.function.as_deref() == Some("keep")
                && (100..=1600).contains(&f.count)
                && f.evidence.contains("about"),
            "sampled, unwatched: expected function level with an estimate of 400: {f:#?}"
        );
        Ok(())
    });
}

#[test]
fn balanced_increments_under_watch_give_nothing() {
    on_every_python("watched look-alike", |py| {
        let built = fixture_for(py);
        let r = run(py, &[&built], &driver("borrow", 2), Agent::Json(&[]));
        ensure!(r.stdout == "ok\n", "{}", r.describe());
        let (findings, _) = r.summary_findings()?;
        ensure!(findings.is_empty(), "{findings:#?}");
        Ok(())
    });
}

/// A program that takes SIGTRAP over after its first extension import (a
/// handler of its own, or the default action back) never gets a trap from
/// refwatch's watchpoints: the handler is never called and the process does
/// not die of SIGTRAP, while the suspect's calls would be armed.
#[test]
fn a_sigtrap_disposition_set_after_import_never_gets_the_watchpoints_traps() {
    on_every_python("SIGTRAP taken over", |py| {
        let built = fixture_for(py);
        for disposition in ["handler", "signal.SIG_DFL"] {
            let code = format!(
                "import extra_ref, signal\n\
                 calls = 0\n\
                 def handler(signum, frame):\n    global calls; calls += 1\n\
                 signal.signal(signal.SIGTRAP, {disposition})\n\
                 owned = [[] for _ in range(40)]\n\
                 for o in owned:\n    extra_ref.keep(o)\n\
                 print('handler calls', calls)\n"
            );
            let bare = run(py, &[&built], &code, Agent::Off);
            ensure!(bare.status.success() && bare.stdout == "handler calls 0\n", "bare: {}", bare.describe());
            let r = run(py, &[&built], &code, Agent::Json(&[]));
            ensure!(
                r.status.code() == Some(0) && r.stdout == bare.stdout && r.stderr == bare.stderr,
                "{disposition}: the program saw refwatch's traps: {}",
                r.describe()
            );
            // The leak is still found, at function level, saying why.
            let (findings, _) = r.summary_findings()?;
            let f = only_leak(&findings)?;
            ensure!(
                f.function.as_deref() == Some("keep") && f.evidence.contains("SIGTRAP"),
                "{disposition}: expected the leak in keep, unpinned because of SIGTRAP: {f:#?}"
            );
        }
        Ok(())
    });
}
