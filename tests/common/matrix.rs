//! The interpreter matrix (`scripts/matrix.tsv`), shared with the
//! provisioning and benchmark scripts, and what each interpreter really is.

use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Required,
    /// Required when the machine image has it.
    Image,
    /// Required unless provisioning recorded that no suite has it.
    Obtainable,
    BestEffort,
}

/// What an interpreter turned out to be when asked.
#[derive(Clone, Debug)]
pub struct Probe {
    pub version: String,
    pub hexversion: u32,
    pub include_dirs: Vec<String>,
    pub ext_suffix: String,
    pub debug: bool,
    pub trace_refs: bool,
    pub static_libpython: bool,
}

#[derive(Clone, Debug)]
pub struct Python {
    pub label: String,
    pub status: Status,
    pub path: PathBuf,
    pub expected_version: String,
    /// `release`, `debug` or `debug+trace`.
    pub build: String,
    /// `shared` or `static`.
    pub libpython: String,
    pub probe: Probe,
}

impl Python {
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        self.probe.hexversion >= (major << 24) | (minor << 16)
    }

    pub fn is_debug(&self) -> bool {
        self.probe.debug
    }
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn cache_dir() -> PathBuf {
    match std::env::var_os("REFWATCH_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache/refwatch")
        }
    }
}

/// A line the test runner does not capture: a skip must be seen.
pub fn loud(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

const PROBE: &str = r#"
import json, platform, sys, sysconfig
paths = sysconfig.get_paths()
maps = open('/proc/self/maps').read()
print(json.dumps({
    'version': platform.python_version(),
    'hexversion': sys.hexversion,
    'include': paths['include'],
    'platinclude': paths['platinclude'],
    'ext_suffix': sysconfig.get_config_var('EXT_SUFFIX'),
    'debug': hasattr(sys, 'gettotalrefcount'),
    'trace_refs': hasattr(sys, 'getobjects'),
    'static_libpython': 'libpython' not in maps,
}))
"#;

fn probe(path: &Path) -> Result<Probe, String> {
    let out = Command::new(path)
        .args(["-c", PROBE])
        .env_remove("LD_PRELOAD")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    if !out.status.success() {
        return Err(format!("{} failed: {}", path.display(), String::from_utf8_lossy(&out.stderr)));
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("probe output: {e}"))?;
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    let include = s("include");
    // Debian's multiarch pyconfig.h is included as <x86_64-linux-gnu/...>
    // from the `include` directory's parent (/usr/include, ROOT/usr/include).
    let parent = Path::new(&include).parent().map(|p| p.display().to_string()).unwrap_or_default();
    let mut include_dirs = vec![include.clone(), s("platinclude"), parent];
    include_dirs.dedup();
    Ok(Probe {
        version: s("version"),
        hexversion: v["hexversion"].as_u64().unwrap_or_default() as u32,
        include_dirs,
        ext_suffix: s("ext_suffix"),
        debug: v["debug"].as_bool().unwrap_or_default(),
        trace_refs: v["trace_refs"].as_bool().unwrap_or_default(),
        static_libpython: v["static_libpython"].as_bool().unwrap_or_default(),
    })
}

/// Every interpreter of the matrix that is present, probed. Missing ones
/// that may be missing get one loud skip line; a missing required one (or
/// one that provisioning should have produced) fails the run.
pub fn pythons() -> &'static [Python] {
    static PYTHONS: OnceLock<Vec<Python>> = OnceLock::new();
    PYTHONS.get_or_init(|| {
        let table =
            std::fs::read_to_string(repo_root().join("scripts/matrix.tsv")).expect("scripts/matrix.tsv");
        let cache = cache_dir().display().to_string();
        // A developer's shortcut: REFWATCH_TEST_ONLY=3.12,deb-3.11 tests those only.
        let only = std::env::var("REFWATCH_TEST_ONLY").ok();
        let mut found = Vec::new();
        for line in table.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(f.len(), 7, "scripts/matrix.tsv: 7 tab-separated columns expected: {line}");
            if only.as_ref().is_some_and(|o| !o.split(',').any(|l| l == f[0])) {
                loud(&format!("SKIP {}: not in REFWATCH_TEST_ONLY", f[0]));
                continue;
            }
            let status = match f[1] {
                "required" => Status::Required,
                "image" => Status::Image,
                "obtainable" => Status::Obtainable,
                "best-effort" => Status::BestEffort,
                other => panic!("scripts/matrix.tsv: unknown status {other}"),
            };
            let path = PathBuf::from(f[2].replace("$CACHE", &cache));
            if !path.exists() {
                match missing(f[0], &status) {
                    Some(reason) => {
                        loud(&format!("SKIP {}: {} ({reason})", f[0], path.display()));
                        continue;
                    }
                    None => panic!(
                        "required interpreter {} is missing at {}: run scripts/provision.sh",
                        f[0],
                        path.display()
                    ),
                }
            }
            let probe = probe(&path).unwrap_or_else(|e| panic!("interpreter {}: {e}", f[0]));
            found.push(Python {
                label: f[0].to_string(),
                status,
                path,
                expected_version: f[3].to_string(),
                build: f[4].to_string(),
                libpython: f[5].to_string(),
                probe,
            });
        }
        let list: Vec<String> = found.iter().map(|p| format!("{}={}", p.label, p.probe.version)).collect();
        loud(&format!("refwatch test matrix: {}", list.join(" ")));
        found
    })
}

/// Why a missing interpreter may be skipped, or `None` if it may not.
fn missing(label: &str, status: &Status) -> Option<String> {
    match status {
        Status::Required => None,
        Status::Image => Some("not on this machine image".into()),
        Status::BestEffort => Some("best effort, not provisioned".into()),
        Status::Obtainable => {
            let note = std::fs::read_to_string(cache_dir().join("status").join(label)).unwrap_or_default();
            note.starts_with("unavailable").then(|| note.trim().to_string())
        }
    }
}
