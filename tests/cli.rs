//! The `refwatch` launcher: it preloads the agent, passes the program's exit
//! status (or the signal that killed it) through, validates its flags, and
//! reads back what the agent wrote. It starts the program with its own
//! signal dispositions and mask, and forwards the signals sent to it.

mod common;

use common::agent::{launcher, library};
use common::fixture::{self, Built};
use common::matrix::{pythons, Python};
use common::run::{read_events, scratch};
use libc::{SIGCONT, SIGHUP, SIGINT, SIGPIPE, SIGTERM, SIGTSTP, SIGUSR2};
use refwatch_model::Event;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

fn refwatch(args: &[&str], pythonpath: &std::path::Path) -> Output {
    launcher_command().args(args).env("PYTHONPATH", pythonpath).output().expect("run refwatch")
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

/// Signal dispositions and mask a process is started with, as a parent
/// (a shell running a background job, a supervisor) would leave them.
#[derive(Clone, Copy, Debug)]
struct Start {
    ignored: &'static [i32],
    blocked: &'static [i32],
}

/// Nothing changed: std spawns the command its usual way (posix_spawn).
const PLAIN: Start = Start { ignored: &[], blocked: &[] };

fn started_with(command: &mut Command, start: Start) -> &mut Command {
    if start.ignored.is_empty() && start.blocked.is_empty() {
        return command;
    }
    // SAFETY: the closure calls only signal, sigemptyset, sigaddset and
    // sigprocmask, which are async-signal-safe, on a set on its own stack.
    unsafe {
        command.pre_exec(move || {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for &signal in start.ignored {
                libc::signal(signal, libc::SIG_IGN);
            }
            for &signal in start.blocked {
                libc::sigaddset(&mut set, signal);
            }
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Ok(())
        })
    }
}

fn launcher_command() -> Command {
    library(); // the launcher finds librefwatch.so beside itself: build it
    let mut command = Command::new(launcher());
    command.env_remove("LD_PRELOAD").stdin(Stdio::null());
    command
}

/// Prints the `SigIgn` and `SigBlk` lines of the program's /proc status.
const SIGNAL_STATE: &str = "import sys; sys.stdout.write(''.join(l for l in open('/proc/self/status') \
                            if l.startswith(('SigIgn', 'SigBlk'))))";

/// Whether `signal` is in the mask on the `field` line of `state`.
fn has(state: &str, field: &str, signal: i32) -> bool {
    let line = state.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field}: {state}"));
    let mask = u64::from_str_radix(line[field.len() + 1..].trim(), 16).expect("hex mask");
    mask & (1 << (signal - 1)) != 0
}

#[test]
fn run_starts_the_program_with_the_launchers_signal_state() {
    let python = pythons()[0].path.to_str().unwrap();
    let starts = [
        PLAIN,
        Start { ignored: &[SIGINT], blocked: &[] }, // a shell's background job
        Start { ignored: &[SIGINT, SIGPIPE], blocked: &[SIGUSR2] },
    ];
    // Python ignores SIGPIPE itself; grep shows what it was given.
    let programs: [&[&str]; 2] =
        [&[python, "-c", SIGNAL_STATE], &["grep", "-E", "^Sig(Ign|Blk):", "/proc/self/status"]];
    for start in starts {
        for program in programs {
            let mut bare = Command::new(program[0]);
            let bare = started_with(&mut bare, start).args(&program[1..]).output().expect("run bare");
            let mut watched = launcher_command();
            let watched =
                started_with(&mut watched, start).arg("run").arg("--").args(program).output().expect("run");
            assert!(bare.status.success() && watched.status.success(), "{bare:?}\n{watched:?}");
            let state = String::from_utf8_lossy(&bare.stdout);
            assert!(start.ignored.iter().all(|&s| has(&state, "SigIgn", s)), "{start:?}: {state}");
            assert!(start.blocked.iter().all(|&s| has(&state, "SigBlk", s)), "{start:?}: {state}");
            assert_eq!(
                String::from_utf8_lossy(&watched.stdout),
                state,
                "started with {start:?}, {program:?} under refwatch must get what it gets bare"
            );
        }
    }
}

/// The signal tests' program: once its handlers are in place (with
/// `handlers`: SIGTERM and SIGHUP print and exit 100 + the signal) it writes
/// its pid to the file argv[1] names, then sleeps. KeyboardInterrupt prints
/// and exits 42; no signal at all exits 99.
const WAITS_FOR_A_SIGNAL: &str = r#"
import os, signal, sys, time
ready, mode = sys.argv[1], sys.argv[2]
def caught(signum, frame):
    print('caught', signal.Signals(signum).name, flush=True)
    sys.exit(100 + signum)
if mode == 'handlers':
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, caught)
with open(ready + '.tmp', 'w') as f:
    f.write(str(os.getpid()))
os.rename(ready + '.tmp', ready)
try:
    time.sleep(60)
except KeyboardInterrupt:
    print('KeyboardInterrupt', flush=True)
    sys.exit(42)
sys.exit(99)
"#;

/// Bound on every wait of the signal tests: a signal's effect takes
/// milliseconds, an interpreter's start under the agent a few seconds.
const PATIENCE: Duration = Duration::from_secs(30);

/// `refwatch run -- python WAITS_FOR_A_SIGNAL`, once the program is ready.
struct Watched {
    launcher: Child,
    program: libc::pid_t,
}

struct Ended {
    status: ExitStatus,
    stdout: String,
    /// The program's pid was still in /proc when the launcher had ended.
    program_left: bool,
}

fn proc_dir(pid: libc::pid_t) -> std::path::PathBuf {
    Path::new("/proc").join(pid.to_string())
}

fn send(pid: u32, signal: i32) {
    // SAFETY: kill only sends a signal, to a process this test started.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, signal) }, 0, "kill {pid} {signal}");
}

/// Polls `done` every 10 ms for at most PATIENCE.
fn within_patience<T>(mut done: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if let Some(value) = done() {
            return Some(value);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

impl Watched {
    /// With `own_group`, the launcher leads a new process group, as a
    /// shell's job does (stop signals act there).
    fn start(mode: &str, start: Start, own_group: bool) -> Watched {
        let ready = scratch("ready");
        let mut command = launcher_command();
        started_with(&mut command, start).args(["run", "--", pythons()[0].path.to_str().unwrap(), "-c"]);
        if own_group {
            command.process_group(0);
        }
        command.args([WAITS_FOR_A_SIGNAL, ready.to_str().unwrap(), mode]);
        let launcher = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start refwatch");
        let mut watched = Watched { launcher, program: 0 };
        let pid = within_patience(|| {
            if let Ok(Some(status)) = watched.launcher.try_wait() {
                panic!("refwatch ended ({status:?}) before its program was ready");
            }
            std::fs::read_to_string(&ready).ok()
        });
        let _ = std::fs::remove_file(&ready);
        watched.program = pid.expect("the program is not ready").parse().expect("a pid");
        watched
    }

    fn signal(&self, signal: i32) {
        send(self.launcher.id(), signal);
    }

    fn program_state(&self) -> Option<char> {
        let stat = std::fs::read_to_string(proc_dir(self.program).join("stat")).ok()?;
        stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next())
    }

    fn end(mut self) -> Ended {
        let status = within_patience(|| self.launcher.try_wait().expect("wait for refwatch"))
            .unwrap_or_else(|| panic!("refwatch still runs {PATIENCE:?} after the signal"));
        let program_left = proc_dir(self.program).exists();
        self.kill_program(); // a leftover holds the output pipes open
        let mut stdout = String::new();
        std::io::Read::read_to_string(self.launcher.stdout.as_mut().unwrap(), &mut stdout).unwrap();
        Ended { status, stdout, program_left }
    }

    fn kill_program(&self) {
        if self.program > 0 && proc_dir(self.program).exists() {
            // SAFETY: kill only sends a signal, to the program this test
            // started (its pid is still in /proc).
            unsafe { libc::kill(self.program, libc::SIGKILL) };
        }
    }
}

impl Drop for Watched {
    /// A failed test leaves nothing running behind it.
    fn drop(&mut self) {
        let _ = self.launcher.kill();
        let _ = self.launcher.wait();
        self.kill_program();
    }
}

#[test]
fn sigint_sent_to_the_launcher_is_the_programs_keyboard_interrupt() {
    let watched = Watched::start("default", PLAIN, false);
    watched.signal(SIGINT);
    let ended = watched.end();
    assert_eq!(ended.stdout, "KeyboardInterrupt\n");
    assert_eq!(ended.status.code(), Some(42), "{:?}", ended.status);
    assert!(!ended.program_left);

    // Started with SIGINT ignored, as a shell's background job: SIGINT is
    // nothing, to the launcher as to the program.
    let watched = Watched::start("handlers", Start { ignored: &[SIGINT], blocked: &[] }, false);
    watched.signal(SIGINT);
    watched.signal(SIGTERM);
    let ended = watched.end();
    assert_eq!(ended.stdout, "caught SIGTERM\n");
    assert_eq!(ended.status.code(), Some(100 + SIGTERM), "{:?}", ended.status);
}

#[test]
fn sigterm_and_sighup_sent_to_the_launcher_reach_the_program() {
    for (signal, name) in [(SIGTERM, "SIGTERM"), (SIGHUP, "SIGHUP")] {
        let watched = Watched::start("handlers", PLAIN, false);
        watched.signal(signal);
        let ended = watched.end();
        assert_eq!(ended.stdout, format!("caught {name}\n"));
        assert_eq!(ended.status.code(), Some(100 + signal), "{name}: {:?}", ended.status);
        assert!(!ended.program_left, "{name}: the program outlived refwatch");

        let watched = Watched::start("default", PLAIN, false);
        watched.signal(signal);
        let ended = watched.end();
        assert_eq!(
            ended.status.signal(),
            Some(signal),
            "{name}: refwatch must die of it: {:?}",
            ended.status
        );
        assert!(!ended.program_left, "{name}: the program outlived refwatch");
    }
}

#[test]
fn a_stopped_program_stops_the_launcher_and_sigcont_resumes_both() {
    let watched = Watched::start("handlers", PLAIN, true);
    watched.signal(SIGTSTP);
    let pid = watched.launcher.id() as libc::pid_t;
    let stopped = within_patience(|| {
        let mut status = 0;
        // SAFETY: waits for a child of this test without reaping a running
        // one (WNOHANG) and reports stops (WUNTRACED).
        match unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG | libc::WUNTRACED) } {
            0 => None,
            _ if libc::WIFSTOPPED(status) => Some(libc::WSTOPSIG(status)),
            _ => panic!("refwatch ended (wait status {status:#x}) instead of stopping"),
        }
    });
    assert_eq!(stopped, Some(SIGTSTP), "refwatch must stop as a job does on SIGTSTP");
    assert_eq!(watched.program_state(), Some('T'), "the program must be stopped too");
    watched.signal(SIGCONT);
    let resumed = within_patience(|| (watched.program_state() != Some('T')).then_some(()));
    assert!(resumed.is_some(), "SIGCONT to refwatch must resume the program");
    watched.signal(SIGTERM);
    let ended = watched.end();
    assert_eq!(ended.stdout, "caught SIGTERM\n");
    assert_eq!(ended.status.code(), Some(100 + SIGTERM), "{:?}", ended.status);
}
