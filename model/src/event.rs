//! JSON Lines events, schema 1 (documented in the README).
//!
//! One object per line, each with `"event"` and `"pid"`; the agent writes
//! each line with a single `write(2)`.

use serde::{Deserialize, Serialize};

pub const SCHEMA: u32 = 1;

/// The interpreter's build, as the agent detected it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flavour {
    pub debug: bool,
    pub trace_refs: bool,
    pub shared_libpython: bool,
    pub gil: bool,
}

/// Counts at one source line of one extension (or, with every field of the
/// location absent, at sites refwatch could not place: calls the compiler
/// turned into tail jumps, whose return address is the interpreter's).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Site {
    pub module: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub function: Option<String>,
    pub incref: u64,
    pub decref: u64,
    /// `_Py_Dealloc` calls the extension made (a `Py_DECREF` that freed);
    /// not counted in `decref`.
    pub dealloc: u64,
}

impl Site {
    pub fn is_unknown(&self) -> bool {
        self.module.is_none()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeCount {
    #[serde(rename = "type")]
    pub type_name: String,
    pub count: u64,
}

/// The interpreter's totals; a key is absent where the build cannot tell.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Total reference count (debug builds).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub refs: Option<i64>,
    /// Change of `refs` since the previous report.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub refs_delta: Option<i64>,
    /// Live objects: the refchain (trace-refs builds) or a gc census.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub objects: Option<u64>,
    /// Sum of the refcounts of the census's objects (release builds).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub refcount_sum: Option<u64>,
    /// `"refchain"` or `"census"`: where `objects` came from.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub objects_from: Option<String>,
    /// The most common types among those objects.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub by_type: Vec<TypeCount>,
}

impl Totals {
    pub fn is_empty(&self) -> bool {
        self.refs.is_none() && self.objects.is_none()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FindingKind {
    Leak,
    Overrelease,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// The line of the operation itself.
    Exact,
    /// The function is certain; the line is one of `candidates`.
    Function,
    /// Only where the reference was obtained is known.
    Origin,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub id: u32,
    pub kind: FindingKind,
    pub module: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub precision: Precision,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub candidates: Vec<u32>,
    pub function: Option<String>,
    pub count: u64,
    pub evidence: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub py_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub py_line: Option<u32>,
}

/// References still held at exit by a site that did not grow: not a finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub file: Option<String>,
    pub line: Option<u32>,
    pub function: Option<String>,
    pub count: u64,
    #[serde(rename = "type")]
    pub type_name: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Event {
    Start {
        pid: u32,
        schema: u32,
        refwatch: String,
        python: String,
        flavour: Flavour,
        executable: String,
        /// Effective settings, by variable name.
        settings: serde_json::Map<String, serde_json::Value>,
    },
    Report {
        pid: u32,
        seq: u64,
        /// Seconds since the agent started in this process.
        elapsed: f64,
        sites: Vec<Site>,
        totals: Totals,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        sample: Option<u32>,
    },
    Finding {
        pid: u32,
        #[serde(flatten)]
        finding: Finding,
    },
    Summary {
        pid: u32,
        elapsed: f64,
        sites: Vec<Site>,
        totals: Totals,
        findings: Vec<Finding>,
        held: Vec<Held>,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        sample: Option<u32>,
    },
}

impl Event {
    pub fn pid(&self) -> u32 {
        match self {
            Event::Start { pid, .. }
            | Event::Report { pid, .. }
            | Event::Finding { pid, .. }
            | Event::Summary { pid, .. } => *pid,
        }
    }

    /// The event as one JSON line, newline included.
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).expect("events always serialize");
        line.push('\n');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_round_trips_with_event_tag() {
        let e = Event::Report {
            pid: 7,
            seq: 1,
            elapsed: 0.5,
            sites: vec![Site {
                module: Some("m.so".into()),
                file: Some("m.c".into()),
                line: Some(3),
                function: Some("f".into()),
                incref: 1,
                decref: 2,
                dealloc: 0,
            }],
            totals: Totals { refs: Some(10), ..Default::default() },
            sample: None,
        };
        let line = e.to_line();
        assert!(line.starts_with("{\"event\":\"report\",\"pid\":7"), "{line}");
        assert!(line.ends_with('\n'));
        assert!(!line.contains("sample"));
        let back: Event = serde_json::from_str(&line).unwrap();
        assert_eq!(back, e);
    }
}
