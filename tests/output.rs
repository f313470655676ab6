//! Where refwatch's events go when the output is not what it should be: a
//! file that cannot be opened or written gets one line on stderr naming
//! `REFWATCH_OUTPUT`, its path and the error, and nothing more from
//! refwatch (never a report on stderr instead); a path that is not UTF-8 is
//! used byte for byte; a `REFWATCH_MODULES` glob that matched nothing by
//! the end of the run is named in one line.

mod common;

use common::agent;
use common::fixture::{self, Built};
use common::matrix::Python;
use common::on_every_python;
use common::run::{command, finish, read_events, run, scratch, Agent, Run};
use refwatch_model::Event;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

const CODE: &str = "import counts\n\
                    o = []\n\
                    counts.explicit_incref(o, 3); counts.explicit_decref(o, 3)\n\
                    print(counts.free_fresh(4))\n";

fn counts(py: &Python) -> Built {
    fixture::build(py, "counts.c", "counts", &[])
}

/// The lines refwatch wrote to stderr (the driver writes none).
fn refwatch_lines(r: &Run) -> Vec<&str> {
    r.stderr.lines().collect()
}

/// A run with `REFWATCH_OUTPUT` set to `path` (JSON Lines).
fn with_output(py: &Python, built: &Built, path: impl Into<OsString>) -> Run {
    let mut c = command(py, &[built], &["-c", CODE]);
    c.env("LD_PRELOAD", agent::library()).env("REFWATCH_FORMAT", "json").env("REFWATCH_OUTPUT", path.into());
    finish(c)
}

/// One line, naming the setting, the path and the error; the program as bare.
fn one_line_about(r: &Run, bare: &Run, path: &str, error: &str) -> Result<(), String> {
    ensure!(
        r.status.code() == bare.status.code() && r.stdout == bare.stdout,
        "program changed: {}",
        r.describe()
    );
    let lines = refwatch_lines(r);
    ensure!(
        lines.len() == 1
            && lines[0].starts_with("refwatch: ")
            && lines[0].contains("REFWATCH_OUTPUT")
            && lines[0].contains(path)
            && lines[0].contains(error),
        "expected one line naming REFWATCH_OUTPUT, {path} and {error:?}: {}",
        r.describe()
    );
    Ok(())
}

#[test]
fn an_output_that_cannot_be_written_gets_one_line_and_nothing_more() {
    on_every_python("output full", |py| {
        let built = counts(py);
        let bare = run(py, &[&built], CODE, Agent::Off);
        let r = with_output(py, &built, "/dev/full");
        one_line_about(&r, &bare, "/dev/full", "No space left on device")
    });
}

#[test]
fn an_output_that_cannot_be_opened_gets_one_line_and_no_report_on_stderr() {
    on_every_python("output unopenable", |py| {
        let built = counts(py);
        let bare = run(py, &[&built], CODE, Agent::Off);
        let path = scratch("no-such-dir").join("events.jsonl");
        let r = with_output(py, &built, &path);
        one_line_about(&r, &bare, &path.display().to_string(), "No such file or directory")
    });
}

#[test]
fn a_path_that_is_not_utf8_is_written_as_given() {
    on_every_python("output not UTF-8", |py| {
        let built = counts(py);
        let mut bytes = scratch("events-").into_os_string().into_vec();
        bytes.extend_from_slice(b"\xff.jsonl");
        let path = std::path::PathBuf::from(OsString::from_vec(bytes));
        let r = with_output(py, &built, path.clone());
        ensure!(r.status.success() && r.stderr.is_empty(), "{}", r.describe());
        let events = read_events(&path);
        let _ = std::fs::remove_file(&path);
        ensure!(
            matches!(events.first(), Some(Event::Start { .. }))
                && matches!(events.last(), Some(Event::Summary { .. })),
            "{} does not hold the run's events: {events:?}",
            path.display()
        );
        Ok(())
    });
}

#[test]
fn a_modules_glob_that_matches_nothing_is_named_in_one_line_at_exit() {
    on_every_python("modules unmatched", |py| {
        let built = counts(py);
        let bare = run(py, &[&built], CODE, Agent::Off);
        // One glob watches counts, the other matches nothing; then none
        // matches at all (refwatch never starts, and still says so).
        for (modules, unmatched, watched) in
            [("counts*,nomatch*", "nomatch*", true), ("nomatch*", "nomatch*", false)]
        {
            let r = run(py, &[&built], CODE, Agent::Json(&[("REFWATCH_MODULES", modules)]));
            ensure!(r.status.success() && r.stdout == bare.stdout, "{modules}: {}", r.describe());
            ensure!(r.summary(None).is_some() == watched, "{modules}: watched {watched}? {}", r.describe());
            let lines = refwatch_lines(&r);
            ensure!(
                lines.len() == 1
                    && lines[0].starts_with("refwatch: ")
                    && lines[0].contains("REFWATCH_MODULES")
                    && lines[0].contains(&format!("{unmatched:?}"))
                    && !lines[0].contains("counts*"),
                "{modules}: expected one line naming {unmatched:?} only: {}",
                r.describe()
            );
        }
        // Every glob matched: nothing to say.
        let r = run(py, &[&built], CODE, Agent::Json(&[("REFWATCH_MODULES", "counts*")]));
        ensure!(r.stderr.is_empty(), "all globs matched: {}", r.describe());
        Ok(())
    });
}
