//! Where events go: stderr or the `REFWATCH_OUTPUT` file, one `write(2)` per
//! event. A forked child writes to its own file when the path has `%p`, and
//! always starts with its own `start` line.
//!
//! An output that cannot be opened or written gets one line on stderr
//! naming the setting, the path and the error, and then nothing more from
//! this process: never the report on stderr instead (mixed into the
//! program's own), never more lines after a failed one (a file left with a
//! truncated line stays that way). The program runs on.

use crate::sys;
use refwatch_model::{text, Event, Format, Output};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::sync::Mutex;

struct Sink {
    /// The process this sink was opened for.
    pid: u32,
    /// -1 once the output failed: nothing more is written.
    fd: i32,
    /// The file's path, or `None` for stderr.
    path: Option<OsString>,
}

impl Sink {
    fn owned(&self) -> bool {
        self.path.is_some() && self.fd >= 0
    }

    /// Gives the output up after `error`: one line, then silence.
    fn fail(&mut self, doing: &str, error: std::io::Error) {
        if self.owned() {
            // SAFETY: refwatch's own descriptor, not used again.
            unsafe { libc::close(self.fd) };
        }
        self.fd = -1;
        let path = self.path.as_deref().unwrap_or(OsStr::new("stderr"));
        sys::warn(format_args!(
            "REFWATCH_OUTPUT={}: cannot {doing}: {error}; refwatch writes nothing more from this process",
            std::path::Path::new(path).display()
        ));
    }
}

static SINK: Mutex<Option<Sink>> = Mutex::new(None);

pub struct Target<'a> {
    pub output: &'a Output,
    pub format: Format,
}

/// Writes `event`, first opening (or, in a forked child, re-opening) the
/// output and writing `start()` there when this process has not yet.
pub fn write(target: &Target<'_>, event: &Event, start: impl FnOnce() -> Event) {
    let mut sink = SINK.lock().unwrap_or_else(|e| e.into_inner());
    ensure_open(&mut sink, target, start);
    emit(sink.as_mut(), target.format, event);
}

/// Opens the output for this process and writes its `start` line, once.
pub fn open_for_this_process(target: &Target<'_>, start: impl FnOnce() -> Event) {
    ensure_open(&mut SINK.lock().unwrap_or_else(|e| e.into_inner()), target, start);
}

fn ensure_open(sink: &mut Option<Sink>, target: &Target<'_>, start: impl FnOnce() -> Event) {
    let pid = sys::getpid();
    if sink.as_ref().is_some_and(|s| s.pid == pid) {
        return;
    }
    if let Some(old) = sink.take().filter(|s| s.owned() && target.output.per_process()) {
        // SAFETY: the inherited descriptor is refwatch's own file of the
        // parent; the child writes to a file of its own instead.
        unsafe { libc::close(old.fd) };
    }
    let opened = sink.insert(open(target.output, pid));
    emit(Some(opened), target.format, &start());
}

fn open(output: &Output, pid: u32) -> Sink {
    let Some(path) = output.path_for(pid) else {
        return Sink { pid, fd: libc::STDERR_FILENO, path: None };
    };
    // Validated: the path holds no NUL byte.
    let c_path = std::ffi::CString::new(path.as_bytes()).unwrap_or_default();
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC;
    // SAFETY: `c_path` is a valid C string; the mode is passed as the
    // variadic third argument open(2) expects with O_CREAT.
    let fd = unsafe { libc::open(c_path.as_ptr(), flags, 0o644 as libc::c_uint) };
    let mut sink = Sink { pid, fd, path: Some(path) };
    if fd < 0 {
        sink.fail("open it", std::io::Error::last_os_error());
    }
    sink
}

fn emit(sink: Option<&mut Sink>, format: Format, event: &Event) {
    let Some(sink) = sink.filter(|s| s.fd >= 0) else { return };
    let bytes = match format {
        Format::Json => event.to_line(),
        Format::Text => text::render(event),
    };
    if let Err(error) = sys::write_all(sink.fd, bytes.as_bytes()) {
        sink.fail("write to it", error);
    }
}

/// Set by `refwatch run --fail-on-findings`: a file each finding is
/// appended to, whatever the output, so the launcher can tell.
const FINDINGS_FILE: &str = "REFWATCH_FINDINGS_FILE";

pub fn note_finding(event: &Event) {
    let Some(path) = sys::env(FINDINGS_FILE).filter(|p| !p.is_empty()) else { return };
    let Ok(c_path) = std::ffi::CString::new(path.into_encoded_bytes()) else { return };
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC;
    // SAFETY: a valid C string; mode passed as open(2) expects with O_CREAT.
    let fd = unsafe { libc::open(c_path.as_ptr(), flags, 0o600 as libc::c_uint) };
    if fd >= 0 {
        let _ = sys::write_all(fd, event.to_line().as_bytes());
        // SAFETY: closing the descriptor opened just above.
        unsafe { libc::close(fd) };
    }
}
