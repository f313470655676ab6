//! The `REFWATCH_*` settings: one table, read by the agent from its
//! environment and by `refwatch run` to build its flags.
//!
//! Each setting is validated the same way on both sides; a bad value gives
//! one [`SettingError`] line naming the variable, the value and what is
//! accepted.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::time::Duration;

/// Where reports go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Stderr,
    /// A file path, as the environment gave it (any bytes but NUL: a path
    /// need not be UTF-8); `%p` stands for the process id, `%%` for `%`.
    Path(OsString),
}

impl Output {
    /// The path for process `pid`, or `None` for stderr.
    pub fn path_for(&self, pid: u32) -> Option<OsString> {
        let Output::Path(template) = self else {
            return None;
        };
        let mut out = Vec::with_capacity(template.len() + 8);
        let mut bytes = template.as_bytes().iter();
        while let Some(&b) = bytes.next() {
            if b != b'%' {
                out.push(b);
            } else if bytes.next() == Some(&b'p') {
                out.extend_from_slice(pid.to_string().as_bytes());
            } else {
                out.push(b'%'); // validated: only `%%` is left
            }
        }
        Some(OsString::from_vec(out))
    }

    /// True when each process writes its own file (a `%p`, not a `%%p`).
    pub fn per_process(&self) -> bool {
        let Some(path) = self.path_for(0) else { return false };
        self.path_for(1).is_some_and(|other| other != path)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Which shared objects are watched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModuleFilter {
    /// Extension modules and the libraries they pull in, not the interpreter's
    /// own standard-library modules.
    Default,
    /// Everything that imports the C-API, standard-library modules included.
    All,
    /// Only objects whose basename matches one of these globs.
    Globs(Vec<String>),
}

impl ModuleFilter {
    /// Whether an object that imports the C-API is watched. `stdlib` says the
    /// object is one of the interpreter's own modules.
    pub fn watches(&self, basename: &str, stdlib: bool) -> bool {
        match self {
            ModuleFilter::Default => !stdlib,
            ModuleFilter::All => true,
            ModuleFilter::Globs(globs) => globs.iter().any(|g| crate::glob::matches(g, basename)),
        }
    }
}

/// What happens after an over-release is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnOverrelease {
    /// Nothing about the program changes.
    Report,
    /// Where the extension's own release frees an object it did not own,
    /// the object is kept (made immortal) instead, so the program runs on.
    Quarantine,
    /// Stop at the first, after the report.
    Abort,
}

/// The agent's effective settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Period of the reports; zero (the default) means only at exit, and no
    /// thread of refwatch's own.
    pub interval: Duration,
    /// Record one event in `sample` per thread (1 = every event).
    pub sample: u32,
    pub output: Output,
    pub format: Format,
    pub modules: ModuleFilter,
    /// Period of the costly checks (the leak check; the object census on
    /// release builds); zero means only at exit.
    pub census: Duration,
    pub on_overrelease: OnOverrelease,
    /// Pin inline increments and releases to their line with hardware
    /// watchpoints where the kernel allows them.
    pub watchpoints: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            // Off: periodic reports need a thread of refwatch's own, which
            // the program would see (docs/design.md §3.9).
            interval: Duration::ZERO,
            sample: 1,
            output: Output::Stderr,
            format: Format::Text,
            modules: ModuleFilter::Default,
            census: Duration::from_secs(60),
            on_overrelease: OnOverrelease::Report,
            watchpoints: true,
        }
    }
}

/// A setting that was given a value it does not accept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingError {
    pub env: &'static str,
    pub flag: &'static str,
    pub value: String,
    pub accepted: &'static str,
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refwatch: {}={:?} is not valid (--{}): expected {}",
            self.env, self.value, self.flag, self.accepted
        )
    }
}

/// One setting: its variable, its `refwatch run` flag, what it accepts, and
/// how a valid value is stored.
pub struct Setting {
    pub env: &'static str,
    pub flag: &'static str,
    pub value_name: &'static str,
    pub accepted: &'static str,
    pub help: &'static str,
    /// Stores a valid value (trimmed); `None` when it is not valid. Only the
    /// output path may be other than UTF-8.
    apply: fn(&mut Settings, &OsStr) -> Option<()>,
    show: fn(&Settings) -> String,
}

/// Every setting. Adding one is one entry here (and a field in [`Settings`]).
pub const SETTINGS: &[Setting] = &[
    Setting {
        env: "REFWATCH_INTERVAL",
        flag: "interval",
        value_name: "SECONDS",
        accepted: "a number of seconds >= 0, e.g. 5 or 0.5 (0: report only at exit)",
        help: "Seconds between periodic reports, by a thread of refwatch's own (default 0: only at exit)",
        apply: |s, v| put(&mut s.interval, seconds(v.to_str()?)),
        show: |s| fmt_seconds(s.interval),
    },
    Setting {
        env: "REFWATCH_SAMPLE",
        flag: "sample",
        value_name: "N",
        accepted: "a whole number >= 1 (1: record every event)",
        help: "Record one refcount event in N per thread; counts become estimates (default 1)",
        apply: |s, v| put(&mut s.sample, v.to_str()?.parse().ok().filter(|&n: &u32| n >= 1)),
        show: |s| s.sample.to_string(),
    },
    Setting {
        env: "REFWATCH_OUTPUT",
        flag: "output",
        value_name: "PATH",
        accepted: "\"stderr\" or a file path, where %p stands for the process id and %% for %",
        help: "Where reports go (default stderr); %p in the path = process id",
        apply: |s, v| put(&mut s.output, output(v)),
        show: |s| match &s.output {
            Output::Stderr => "stderr".into(),
            Output::Path(p) => p.to_string_lossy().into_owned(),
        },
    },
    Setting {
        env: "REFWATCH_FORMAT",
        flag: "format",
        value_name: "text|json",
        accepted: "text or json",
        help: "Report format: text for people, json for JSON Lines (default text)",
        apply: |s, v| {
            s.format = match v.to_str()? {
                "text" => Format::Text,
                "json" => Format::Json,
                _ => return None,
            };
            Some(())
        },
        show: |s| match s.format {
            Format::Text => "text".into(),
            Format::Json => "json".into(),
        },
    },
    Setting {
        env: "REFWATCH_MODULES",
        flag: "modules",
        value_name: "GLOB[,GLOB]",
        accepted: "\"default\", \"all\", or comma-separated globs (*, ?) on a shared object's file name",
        help: "Which shared objects to watch: default (extensions, not the stdlib's), all, or globs",
        apply: |s, v| put(&mut s.modules, modules(v.to_str()?)),
        show: |s| match &s.modules {
            ModuleFilter::Default => "default".into(),
            ModuleFilter::All => "all".into(),
            ModuleFilter::Globs(g) => g.join(","),
        },
    },
    Setting {
        env: "REFWATCH_CENSUS",
        flag: "census",
        value_name: "SECONDS",
        accepted: "a number of seconds >= 0, e.g. 60 (0: leak check and census only at exit)",
        help: "Seconds between leak checks and (release builds) object censuses (default 60; 0: only at exit)",
        apply: |s, v| put(&mut s.census, seconds(v.to_str()?)),
        show: |s| fmt_seconds(s.census),
    },
    Setting {
        env: "REFWATCH_ON_OVERRELEASE",
        flag: "on-overrelease",
        value_name: "report|quarantine|abort",
        accepted: "report, quarantine or abort",
        help: "After an over-release: report only (default), keep the object alive and run on (quarantine), or abort",
        apply: |s, v| {
            s.on_overrelease = match v.to_str()? {
                "report" => OnOverrelease::Report,
                "quarantine" => OnOverrelease::Quarantine,
                "abort" => OnOverrelease::Abort,
                _ => return None,
            };
            Some(())
        },
        show: |s| {
            match s.on_overrelease {
                OnOverrelease::Report => "report",
                OnOverrelease::Quarantine => "quarantine",
                OnOverrelease::Abort => "abort",
            }
            .into()
        },
    },
    Setting {
        env: "REFWATCH_WATCHPOINTS",
        flag: "watchpoints",
        value_name: "on|off",
        accepted: "on or off",
        help: "Pin inline Py_INCREF/Py_DECREF of suspect objects to their line with hardware watchpoints (default on)",
        apply: |s, v| {
            s.watchpoints = match v.to_str()? {
                "on" => true,
                "off" => false,
                _ => return None,
            };
            Some(())
        },
        show: |s| if s.watchpoints { "on" } else { "off" }.into(),
    },
];

impl Settings {
    /// Reads every setting through `lookup` (an environment). Unset and
    /// invalid settings keep their defaults; every invalid one is returned
    /// with the settings.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> (Settings, Vec<SettingError>) {
        let mut settings = Settings::default();
        let mut errors = Vec::new();
        for setting in SETTINGS {
            if let Some(value) = lookup(setting.env) {
                if let Err(e) = setting.set(&mut settings, &value) {
                    errors.push(e);
                }
            }
        }
        (settings, errors)
    }

    /// Every setting's effective value, by variable name.
    pub fn effective(&self) -> Vec<(&'static str, String)> {
        SETTINGS.iter().map(|s| (s.env, (s.show)(self))).collect()
    }
}

impl Setting {
    /// Validates `value` and stores it into `settings`.
    pub fn set(&self, settings: &mut Settings, value: impl AsRef<OsStr>) -> Result<(), SettingError> {
        let value = value.as_ref();
        (self.apply)(settings, trim(value)).ok_or_else(|| SettingError {
            env: self.env,
            flag: self.flag,
            value: value.to_string_lossy().into_owned(),
            accepted: self.accepted,
        })
    }
}

/// `value` without leading and trailing whitespace (as `str::trim` for
/// UTF-8; ASCII whitespace otherwise).
fn trim(value: &OsStr) -> &OsStr {
    match value.to_str() {
        Some(text) => OsStr::new(text.trim()),
        None => {
            let bytes = value.as_bytes();
            let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
            let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |i| i + 1);
            OsStr::from_bytes(&bytes[start..end])
        }
    }
}

/// Stores a parsed value; `None` (invalid) leaves the default.
fn put<T>(slot: &mut T, value: Option<T>) -> Option<()> {
    *slot = value?;
    Some(())
}

fn seconds(v: &str) -> Option<Duration> {
    let secs: f64 = v.parse().ok()?;
    // `parse` accepts "inf" and "nan"; a period needs a finite, sane number.
    (secs.is_finite() && (0.0..=1e9).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

fn fmt_seconds(d: Duration) -> String {
    format!("{}", d.as_secs_f64())
}

fn output(v: &OsStr) -> Option<Output> {
    if v == "stderr" {
        return Some(Output::Stderr);
    }
    let bytes = v.as_bytes();
    if bytes.is_empty() || bytes.contains(&0) {
        return None;
    }
    let mut iter = bytes.iter();
    while let Some(&b) = iter.next() {
        if b == b'%' && !matches!(iter.next(), Some(b'p' | b'%')) {
            return None;
        }
    }
    Some(Output::Path(v.to_os_string()))
}

fn modules(v: &str) -> Option<ModuleFilter> {
    match v {
        "default" => Some(ModuleFilter::Default),
        "all" => Some(ModuleFilter::All),
        _ => {
            let globs: Vec<String> = v.split(',').map(|g| g.trim().to_string()).collect();
            let valid = globs.iter().all(|g| !g.is_empty() && !g.contains('/'));
            valid.then_some(ModuleFilter::Globs(globs))
        }
    }
}

#[cfg(test)]
mod tests;
