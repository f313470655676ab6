//! The `refwatch` launcher: it preloads the agent, passes the program's exit
//! status (or the signal that killed it) through, validates its flags, and
//! reads back what the agent wrote.

mod common;

use common::agent::{launcher, library};
use common::fixture::{self, Built};
use common::matrix::{pythons, Python};
use common::run::{read_events, scratch};
use refwatch_model::Event;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};

fn refwatch(args: &[&str], pythonpath: &std::path::Path) -> Output {
    library(); // the launcher finds librefwatch.so beside itself: build it
    Command::new(launcher())
        .args(args)
        .env("PYTHONPATH", pythonpath)
        .env_remove("LD_PRELOAD")
        .output()
        .expect("run refwatch")
}

/// The launcher tests need one interpreter: the first of the matrix.
fn first_python_with_counts() -> (&'static Python, Built) {
    let py = &pythons()[0];
    (py, fixture::build(py, "counts.c", "counts", &[]))
}

#[test]
fn run_passes_exit_status_and_signals_through() {
    let (py, built) = first_python_with_counts();
    let python = py.path.to_str().unwrap();
    let out = refwatch(
        &["run", "--", python, "-c", "import counts, sys; counts.free_fresh(2); sys.exit(7)"],
        &built.dir,
    );
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("summary at exit"), "{out:?}");

    let out =
        refwatch(&["run", "--", python, "-c", "import counts, os; os.kill(os.getpid(), 9)"], &built.dir);
    assert_eq!(out.status.signal(), Some(9), "refwatch must die of the child's signal: {out:?}");

    let out = refwatch(&["run", "--", "/nonexistent/program"], &built.dir);
    assert_eq!(out.status.code(), Some(127), "{out:?}");
}

#[test]
fn run_flags_become_settings_and_json_goes_to_the_output_file() {
    let (py, built) = first_python_with_counts();
    let file = scratch("cli.jsonl");
    let code = "import counts; print(counts.free_fresh(4))";
    let out = refwatch(
        &[
            "run",
            "--format",
            "json",
            "--output",
            file.to_str().unwrap(),
            "--interval",
            "0",
            "--sample",
            "1",
            "--census",
            "0",
            "--modules",
            "counts*",
            "--",
            py.path.to_str().unwrap(),
            "-c",
            code,
        ],
        &built.dir,
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "4\n");
    assert!(out.stderr.is_empty(), "nothing on stderr with --output: {out:?}");
    let events = read_events(&file);
    let Some(Event::Start { settings, .. }) = events.first() else { panic!("no start event: {events:?}") };
    assert_eq!(settings["REFWATCH_MODULES"], "counts*");
    assert_eq!(settings["REFWATCH_INTERVAL"], "0");
    assert!(matches!(events.last(), Some(Event::Summary { .. })), "{events:?}");
}

#[test]
fn a_bad_flag_value_is_one_line_and_the_program_still_runs() {
    let (py, built) = first_python_with_counts();
    let out = refwatch(
        &["run", "--interval", "soon", "--", py.path.to_str().unwrap(), "-c", "import counts; print('ran')"],
        &built.dir,
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ran\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("REFWATCH_INTERVAL")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("\"soon\"") && lines[0].contains("--interval") && lines[0].contains("expected"),
        "{stderr}"
    );
    assert!(!stderr.contains("summary"), "the run must not be watched: {stderr}");
}

#[test]
fn fail_on_findings_keeps_a_clean_runs_status() {
    let (py, built) = first_python_with_counts();
    let out = refwatch(
        &["run", "--fail-on-findings", "--", py.path.to_str().unwrap(), "-c", "import counts"],
        &built.dir,
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = refwatch(
        &["run", "--fail-on-findings", "--", py.path.to_str().unwrap(), "-c", "import sys; sys.exit(5)"],
        &built.dir,
    );
    assert_eq!(out.status.code(), Some(5), "{out:?}");
}

#[test]
fn check_reads_a_run_without_findings_and_rejects_garbage() {
    let (py, built) = first_python_with_counts();
    let file = scratch("check.jsonl");
    let out = refwatch(
        &[
            "run",
            "--format",
            "json",
            "--output",
            file.to_str().unwrap(),
            "--",
            py.path.to_str().unwrap(),
            "-c",
            "import counts",
        ],
        &built.dir,
    );
    assert!(out.status.success(), "{out:?}");
    let out = refwatch(&["check", file.to_str().unwrap()], &built.dir);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("no findings"), "{out:?}");

    let bad = scratch("garbage.jsonl");
    std::fs::write(&bad, "{\"event\": \"nonsense\"}\n").unwrap();
    let out = refwatch(&["check", bad.to_str().unwrap()], &built.dir);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = refwatch(&["check", "/nonexistent.jsonl"], &built.dir);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
