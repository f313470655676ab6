//! The copy of the process that walks the heap (docs/design.md §8.5) is
//! invisible to the program: no SIGCHLD from it, and the program's own
//! `os.wait()` never reaps it; a copy that hangs is stopped and the check
//! skipped in one line, and the program ends as it would without refwatch.

mod common;

use common::fixture;
use common::on_every_python;
use common::run::{run, run_within, Agent};
use std::time::Duration;

#[test]
fn the_heap_walks_copy_sends_no_sigchld_and_is_not_reaped_by_the_program() {
    on_every_python("invisible copy", |py| {
        let built = fixture::build(py, "leaks.c", "leaks", &[]);
        // Leaks while periodic checks make copies (REFWATCH_CENSUS=0.2),
        // counting SIGCHLDs, with a thread reaping any child it can.
        let code = "import leaks, os, signal, threading, time\n\
                    chld = 0\n\
                    def on_chld(signum, frame):\n    global chld; chld += 1\n\
                    signal.signal(signal.SIGCHLD, on_chld)\n\
                    waited, errors, stop = [], set(), False\n\
                    def reaper():\n    \
                        while not stop:\n        \
                            try:\n            waited.append(os.wait())\n        \
                            except ChildProcessError as e:\n            errors.add(type(e).__name__); time.sleep(0.002)\n\
                    t = threading.Thread(target=reaper); t.start()\n\
                    end = time.time() + 2.0\n\
                    i = 0\n\
                    while time.time() < end:\n    leaks.pair_sum(i, 1); i += 1; time.sleep(0.002)\n\
                    stop = True; t.join()\n\
                    print('sigchld', chld, 'waited', waited, sorted(errors))\n";
        let bare = run(py, &[&built], code, Agent::Off);
        ensure!(
            bare.status.success() && bare.stdout == "sigchld 0 waited [] ['ChildProcessError']\n",
            "bare: {}",
            bare.describe()
        );
        let r = run(py, &[&built], code, Agent::Json(&[("REFWATCH_CENSUS", "0.2")]));
        ensure!(
            r.status.success() && r.stdout == bare.stdout && r.stderr == bare.stderr,
            "the program saw refwatch's copies: {}",
            r.describe()
        );
        // The copies did run: the periodic checks streamed the leak.
        ensure!(!r.streamed().is_empty(), "no periodic check ran: {:?}", r.events);
        Ok(())
    });
}

#[test]
fn a_copy_whose_walk_hangs_is_stopped_and_the_program_ends_as_bare() {
    on_every_python("stuck copy", |py| {
        let built = fixture::build(py, "stuck.c", "stuck", &[]);
        let code = "import stuck\ns = stuck.Stuck()\nfor _ in range(3): stuck.leak()\nprint('done')\n";
        let bare = run(py, &[&built], code, Agent::Off);
        ensure!(bare.status.success() && bare.stdout == "done\n", "bare: {}", bare.describe());
        let r = run_within(py, &[&built], code, Agent::Json(&[]), Duration::from_secs(60))?;
        ensure!(r.status.success() && r.stdout == bare.stdout, "{}", r.describe());
        let lines: Vec<&str> = r.stderr.lines().collect();
        ensure!(
            lines.len() == 1 && lines[0].starts_with("refwatch: ") && lines[0].contains("skipped"),
            "expected one line saying the check was skipped: {}",
            r.describe()
        );
        ensure!(r.summary(None).is_some(), "no summary: {}", r.describe());
        Ok(())
    });
}
