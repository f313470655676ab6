//! Every interpreter of the matrix that is present builds and runs a C
//! extension, and is the build the matrix says it is.

mod common;

use common::run::{run, Agent};
use common::{fixture, on_every_python};

#[test]
fn every_interpreter_builds_and_runs_an_extension_and_matches_its_entry() {
    on_every_python("matrix", |py| {
        let hello = fixture::build(py, "hello.c", "hello", &[]);
        let code = "import hello, sys\n\
                    print(hello.greet('refwatch'))\n\
                    print(hello.compiled_debug(), hasattr(sys, 'gettotalrefcount'))";
        let r = run(py, &[&hello], code, Agent::Off);
        ensure!(r.status.success(), "driver failed: {}", r.describe());
        let debug = py.build.starts_with("debug");
        let expected = format!("hello, refwatch\n{} {}\n", py_bool(debug), py_bool(debug));
        ensure!(r.stdout == expected, "stdout {:?}, expected {expected:?}", r.stdout);
        ensure!(py.probe.version.starts_with(&py.expected_version), "version {}", py.probe.version);
        ensure!(py.probe.debug == debug, "debug build: {} (matrix: {})", py.probe.debug, py.build);
        ensure!(
            py.probe.trace_refs == (py.build == "debug+trace"),
            "sys.getobjects present: {} (matrix: {})",
            py.probe.trace_refs,
            py.build
        );
        ensure!(
            py.probe.static_libpython == (py.libpython == "static"),
            "static libpython: {} (matrix: {})",
            py.probe.static_libpython,
            py.libpython
        );
        Ok(())
    });
}

fn py_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

#[test]
fn the_agent_detects_each_interpreters_build() {
    on_every_python("flavour", |py| {
        let hello = fixture::build(py, "hello.c", "hello", &[]);
        let r = run(py, &[&hello], "import hello", Agent::Json(&[]));
        let Some(refwatch_model::Event::Start { flavour, python, .. }) = r.events.first() else {
            return Err(format!("no start event: {}", r.describe()));
        };
        ensure!(*python == py.probe.version, "python {python} vs {}", py.probe.version);
        ensure!(flavour.debug == py.probe.debug, "debug: {flavour:?}");
        ensure!(flavour.trace_refs == py.probe.trace_refs, "trace_refs: {flavour:?}");
        ensure!(flavour.shared_libpython != py.probe.static_libpython, "shared libpython: {flavour:?}");
        ensure!(flavour.gil, "gil: {flavour:?}");
        Ok(())
    });
}
