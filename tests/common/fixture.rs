//! C fixture extensions (`tests/fixtures/*.c`), compiled per interpreter the
//! way pip does (its headers, its EXT_SUFFIX, `-O2 -g`, `-fPIC -shared`),
//! cached by a hash of everything that goes into the build.

use super::agent::profile_dir;
use super::matrix::{repo_root, Python};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A built extension module: put `dir` on `sys.path` and import `module`.
#[derive(Clone, Debug)]
pub struct Built {
    pub dir: PathBuf,
    pub module: String,
    pub source: PathBuf,
}

pub fn fixture_path(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(name)
}

/// Builds `tests/fixtures/<source>` as module `module` for `py`, with extra
/// compiler flags (e.g. `-DPy_LIMITED_API=0x030c0000`). The module's init
/// function must be `PyInit_<module>`.
pub fn build(py: &Python, source: &str, module: &str, flags: &[&str]) -> Built {
    let source_path = fixture_path(source);
    let code = std::fs::read(&source_path).unwrap_or_else(|e| panic!("{}: {e}", source_path.display()));
    let mut args: Vec<String> =
        vec!["-shared".into(), "-fPIC".into(), "-O2".into(), "-g".into(), "-Wall".into()];
    args.extend(py.probe.include_dirs.iter().map(|d| format!("-I{d}")));
    args.extend(flags.iter().map(|f| f.to_string()));
    let mut hasher = DefaultHasher::new();
    (&code, &args, &py.path, &py.probe.version, module).hash(&mut hasher);
    let dir =
        profile_dir().join("refwatch-fixtures").join(&py.label).join(format!("{:016x}", hasher.finish()));
    let target = dir.join(format!("{module}{}", py.probe.ext_suffix));
    if !target.is_file() {
        std::fs::create_dir_all(&dir).expect("fixture dir");
        // Build under a unique name and rename: tests run in parallel.
        static BUILDS: AtomicU32 = AtomicU32::new(0);
        let n = BUILDS.fetch_add(1, Ordering::Relaxed);
        let partial = dir.join(format!(".{module}.{}.{n}.partial", std::process::id()));
        let out = Command::new("gcc")
            .args(&args)
            .arg(&source_path)
            .arg("-o")
            .arg(&partial)
            .output()
            .expect("run gcc");
        assert!(
            out.status.success(),
            "building {source} for {}: {}",
            py.label,
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::rename(&partial, &target).expect("move fixture into place");
    }
    Built { dir, module: module.to_string(), source: source_path }
}

/// The line of `tests/fixtures/<source>` that carries `/* @marker */`.
pub fn marker_line(source: &str, marker: &str) -> u32 {
    let text = std::fs::read_to_string(fixture_path(source)).expect("fixture source");
    let tag = format!("/* @{marker} */");
    let lines: Vec<usize> =
        text.lines().enumerate().filter(|(_, l)| l.contains(&tag)).map(|(i, _)| i + 1).collect();
    assert_eq!(lines.len(), 1, "marker {tag} must appear exactly once in {source}");
    lines[0] as u32
}
