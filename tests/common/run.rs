//! Running an interpreter on a driver, with or without the agent, and
//! collecting what it printed and what refwatch wrote.

use super::agent;
use super::fixture::Built;
use super::matrix::Python;
use refwatch_model::{Event, Finding, Site};
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicU32, Ordering};

pub enum Agent<'a> {
    /// No LD_PRELOAD at all: the baseline.
    Off,
    /// LD_PRELOAD=librefwatch.so, JSON Lines to a file the run reads back,
    /// plus these variables.
    Json(&'a [(&'a str, &'a str)]),
    /// LD_PRELOAD=librefwatch.so with only these variables (output where
    /// they say, text by default).
    Raw(&'a [(&'a str, &'a str)]),
}

#[derive(Debug)]
pub struct Run {
    pub stdout: String,
    pub stderr: String,
    pub status: ExitStatus,
    /// Events refwatch wrote (with `Agent::Json`).
    pub events: Vec<Event>,
}

impl Run {
    /// The last summary of process `pid` (or of the first process).
    pub fn summary(&self, pid: Option<u32>) -> Option<&Event> {
        self.events
            .iter()
            .filter(|e| matches!(e, Event::Summary { .. }))
            .rfind(|e| pid.is_none_or(|p| e.pid() == p))
    }

    /// The summary's sites of the first process to write one.
    pub fn summary_sites(&self) -> Result<&[Site], String> {
        let first_pid = self.events.first().map(Event::pid);
        match self.summary(first_pid) {
            Some(Event::Summary { sites, .. }) => Ok(sites),
            _ => Err(format!("no summary; stderr:\n{}\nevents: {:?}", self.stderr, self.events)),
        }
    }

    /// Findings written as `finding` events, as they were established.
    pub fn streamed(&self) -> Vec<&Finding> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Finding { finding, .. } => Some(finding),
                _ => None,
            })
            .collect()
    }

    /// The summary's findings (final counts), and how many were streamed.
    pub fn summary_findings(&self) -> Result<(Vec<Finding>, usize), String> {
        match self.summary(None) {
            Some(Event::Summary { findings, .. }) => Ok((findings.clone(), self.streamed().len())),
            _ => Err(format!("no summary: {}", self.describe())),
        }
    }

    pub fn describe(&self) -> String {
        format!("status {:?}\nstdout:\n{}\nstderr:\n{}", self.status, self.stdout, self.stderr)
    }
}

static RUNS: AtomicU32 = AtomicU32::new(0);

/// A fresh scratch path for this test process.
pub fn scratch(name: &str) -> PathBuf {
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    let dir = agent::profile_dir().join("refwatch-runs");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir.join(format!("{}-{n}-{name}", std::process::id()))
}

/// Runs `py -c code` with the fixtures' directories on `sys.path`.
pub fn run(py: &Python, modules: &[&Built], code: &str, agent: Agent<'_>) -> Run {
    run_args(py, modules, &["-c", code], agent)
}

/// `py ARGS` with the fixtures' directories on `sys.path`, no agent and no
/// `REFWATCH_*` variable of the test's own environment: for a test that sets
/// the rest itself (`finish` runs it).
pub fn command(py: &Python, modules: &[&Built], args: &[&str]) -> Command {
    let mut command = Command::new(&py.path);
    command.args(args);
    let path: Vec<String> = modules.iter().map(|b| b.dir.display().to_string()).collect();
    command.env("PYTHONPATH", path.join(":"));
    command.env_remove("LD_PRELOAD");
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("REFWATCH_") && k != "REFWATCH_CACHE") {
        command.env_remove(k);
    }
    command
}

/// Runs a `command` to its end.
pub fn finish(mut command: Command) -> Run {
    let out = command.output().unwrap_or_else(|e| panic!("run {:?}: {e}", command.get_program()));
    Run {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        status: out.status,
        events: Vec::new(),
    }
}

/// `run_args` that gives up after `limit`: the process is killed and the
/// error says what it printed so far.
pub fn run_within(
    py: &Python,
    modules: &[&Built],
    code: &str,
    agent: Agent<'_>,
    limit: std::time::Duration,
) -> Result<Run, String> {
    let started = std::time::Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    let mut c = command(py, modules, &["-c", code]);
    let output_file = scratch("events.jsonl");
    if let Agent::Json(vars) = agent {
        c.env("LD_PRELOAD", agent::library())
            .env("REFWATCH_FORMAT", "json")
            .env("REFWATCH_OUTPUT", &output_file);
        c.envs(vars.iter().copied());
    } else if let Agent::Raw(vars) = agent {
        c.env("LD_PRELOAD", agent::library()).envs(vars.iter().copied());
    }
    let child = c
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(limit) {
        Ok(out) => out.map_err(|e| format!("wait: {e}"))?,
        Err(_) => {
            // SAFETY: kill(2) of the child this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            return Err(format!("still running after {:?}: killed", started.elapsed()));
        }
    };
    let events = read_events(&output_file);
    let _ = std::fs::remove_file(&output_file);
    Ok(Run {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        status: out.status,
        events,
    })
}

pub fn run_args(py: &Python, modules: &[&Built], args: &[&str], agent: Agent<'_>) -> Run {
    let mut command = command(py, modules, args);
    let output_file = scratch("events.jsonl");
    match agent {
        Agent::Off => {}
        Agent::Json(vars) => {
            command.env("LD_PRELOAD", agent::library());
            command.env("REFWATCH_FORMAT", "json");
            command.env("REFWATCH_OUTPUT", &output_file);
            command.envs(vars.iter().copied());
        }
        Agent::Raw(vars) => {
            command.env("LD_PRELOAD", agent::library());
            command.envs(vars.iter().copied());
        }
    }
    let out = command.output().unwrap_or_else(|e| panic!("run {}: {e}", py.path.display()));
    let events = read_events(&output_file);
    let _ = std::fs::remove_file(&output_file);
    Run {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        status: out.status,
        events,
    }
}

/// Parses a JSON Lines file refwatch wrote; every line must be an event.
pub fn read_events(path: &std::path::Path) -> Vec<Event> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad event line {l:?}: {e}")))
        .collect()
}
