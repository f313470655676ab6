//! The `REFWATCH_*` settings: one table, read by the agent from its
//! environment and by `refwatch run` to build its flags.
//!
//! Each setting is validated the same way on both sides; a bad value gives
//! one [`SettingError`] line naming the variable, the value and what is
//! accepted.

use std::fmt;
use std::time::Duration;

/// Where reports go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Stderr,
    /// A file path; `%p` stands for the process id, `%%` for `%`.
    Path(String),
}

impl Output {
    /// The path for process `pid`, or `None` for stderr.
    pub fn path_for(&self, pid: u32) -> Option<String> {
        let Output::Path(template) = self else {
            return None;
        };
        let mut out = String::with_capacity(template.len() + 8);
        let mut chars = template.chars();
        while let Some(c) = chars.next() {
            match (c, c == '%') {
                (_, true) => match chars.next() {
                    Some('p') => out.push_str(&pid.to_string()),
                    _ => out.push('%'), // validated: only `%%` is left
                },
                (c, false) => out.push(c),
            }
        }
        Some(out)
    }

    /// True when each process writes its own file.
    pub fn per_process(&self) -> bool {
        matches!(self, Output::Path(t) if t.contains("%p"))
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
    /// Period of the reports; zero means only at exit.
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
            interval: Duration::from_secs(5),
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
    apply: fn(&mut Settings, &str) -> Option<()>,
    show: fn(&Settings) -> String,
}

/// Every setting. Adding one is one entry here (and a field in [`Settings`]).
pub const SETTINGS: &[Setting] = &[
    Setting {
        env: "REFWATCH_INTERVAL",
        flag: "interval",
        value_name: "SECONDS",
        accepted: "a number of seconds >= 0, e.g. 5 or 0.5 (0: report only at exit)",
        help: "Seconds between periodic reports (default 5; 0: only at exit)",
        apply: |s, v| put(&mut s.interval, seconds(v)),
        show: |s| fmt_seconds(s.interval),
    },
    Setting {
        env: "REFWATCH_SAMPLE",
        flag: "sample",
        value_name: "N",
        accepted: "a whole number >= 1 (1: record every event)",
        help: "Record one refcount event in N per thread; counts become estimates (default 1)",
        apply: |s, v| put(&mut s.sample, v.parse().ok().filter(|&n: &u32| n >= 1)),
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
            Output::Path(p) => p.clone(),
        },
    },
    Setting {
        env: "REFWATCH_FORMAT",
        flag: "format",
        value_name: "text|json",
        accepted: "text or json",
        help: "Report format: text for people, json for JSON Lines (default text)",
        apply: |s, v| {
            s.format = match v {
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
        apply: |s, v| put(&mut s.modules, modules(v)),
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
        apply: |s, v| put(&mut s.census, seconds(v)),
        show: |s| fmt_seconds(s.census),
    },
    Setting {
        env: "REFWATCH_ON_OVERRELEASE",
        flag: "on-overrelease",
        value_name: "report|quarantine|abort",
        accepted: "report, quarantine or abort",
        help: "After an over-release: report only (default), keep the object alive and run on (quarantine), or abort",
        apply: |s, v| {
            s.on_overrelease = match v {
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
            s.watchpoints = match v {
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
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> (Settings, Vec<SettingError>) {
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
    pub fn set(&self, settings: &mut Settings, value: &str) -> Result<(), SettingError> {
        (self.apply)(settings, value.trim()).ok_or_else(|| SettingError {
            env: self.env,
            flag: self.flag,
            value: value.to_string(),
            accepted: self.accepted,
        })
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

fn output(v: &str) -> Option<Output> {
    if v == "stderr" {
        return Some(Output::Stderr);
    }
    if v.is_empty() {
        return None;
    }
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '%' && !matches!(chars.next(), Some('p' | '%')) {
            return None;
        }
    }
    Some(Output::Path(v.to_string()))
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
