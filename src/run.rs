//! `refwatch run`: preload the agent, run the command with the signal state
//! the launcher was given, forward signals to it, pass its exit status
//! through (re-raising the signal that killed it).

use crate::cli::RunOptions;
use crate::signals::{reraise, Relay};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitCode};

/// Set by the launcher only: the agent appends every finding there, so
/// `--fail-on-findings` sees findings whatever the output format or target.
pub const FINDINGS_FILE_VAR: &str = "REFWATCH_FINDINGS_FILE";

/// librefwatch.so beside this executable (how `cargo build` and an install
/// lay them out).
fn agent_library() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [dir.join("librefwatch.so"), dir.join("../lib/librefwatch.so")].into_iter().find(|p| p.is_file())
}

pub fn run(options: RunOptions) -> ExitCode {
    let Some((program, args)) = options.command.split_first() else {
        eprintln!("refwatch: run: no command given");
        return ExitCode::from(2);
    };
    let mut command = Command::new(program);
    command.args(args);
    let findings_file = std::env::temp_dir().join(format!("refwatch-findings-{}", std::process::id()));
    for e in &options.invalid {
        eprintln!("{e}");
    }
    if options.invalid.is_empty() {
        match agent_library() {
            Some(library) => {
                let mut preload = library.into_os_string();
                if let Some(existing) = std::env::var_os("LD_PRELOAD").filter(|p| !p.is_empty()) {
                    preload.push(" ");
                    preload.push(existing);
                }
                command.env("LD_PRELOAD", preload);
                command.envs(options.env.iter().map(|(k, v)| (k, v)));
                if options.fail_on_findings {
                    let _ = std::fs::remove_file(&findings_file);
                    command.env(FINDINGS_FILE_VAR, &findings_file);
                }
            }
            None => eprintln!(
                "refwatch: librefwatch.so not found beside the refwatch executable; running unwatched"
            ),
        }
    } else {
        eprintln!("refwatch: not watching this run; the command runs unchanged");
    }
    let relay = Relay::start();
    // SAFETY: the closure only calls sigaction and sigprocmask, which are
    // async-signal-safe, on data prepared before the fork.
    unsafe { command.pre_exec(relay.child_setup()) };
    let status = match command.spawn() {
        Ok(program) => relay.wait(&program),
        Err(e) => {
            relay.release();
            eprintln!("refwatch: run: cannot start {}: {e}", program.to_string_lossy());
            return ExitCode::from(127);
        }
    };
    let status = match status {
        Ok(status) => status,
        Err(e) => {
            eprintln!("refwatch: run: waiting for {}: {e}", program.to_string_lossy());
            return ExitCode::from(1);
        }
    };
    let found = options.fail_on_findings && std::fs::metadata(&findings_file).is_ok_and(|m| m.len() > 0);
    let _ = std::fs::remove_file(&findings_file);
    if let Some(signal) = status.signal() {
        reraise(signal);
    }
    let code = status.code().unwrap_or(1);
    if code == 0 && found {
        eprintln!("refwatch: findings were reported (--fail-on-findings): exiting 1");
        return ExitCode::from(1);
    }
    ExitCode::from(code as u8)
}
