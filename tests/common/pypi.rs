//! Real extension packages from PyPI, built from their sdist with `-g` for
//! one interpreter (the way a user would build them), cached under
//! `$REFWATCH_CACHE/pypi/<label>/<name>-<version>/`.
//!
//! Nothing is fetched here: provisioning put the pinned sdists and the
//! wheels of their build dependencies in `$REFWATCH_CACHE/pypi/files`
//! (`scripts/pypi/lock.tsv`). pip installs from there with no index and no
//! cache of its own, and one build at a time (a lock file across the test
//! threads and processes), so concurrent tests never share anything mutable.

use super::matrix::{cache_dir, Python};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Holds an exclusive `flock` on a file under the cache while alive.
struct Lock(File);

impl Lock {
    fn take(path: &Path) -> Result<Lock, String> {
        let file = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        // SAFETY: flock on a descriptor this File owns for the call's duration;
        // the lock is released when the File is closed (dropped).
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(format!("flock {}: {}", path.display(), std::io::Error::last_os_error()));
        }
        Ok(Lock(file))
    }
}

fn pip_works(python: &Path) -> bool {
    Command::new(python).args(["-m", "pip", "--version"]).output().is_ok_and(|o| o.status.success())
}

/// An interpreter with pip: the interpreter itself, or a venv made from it
/// (Debian's python3.11 has no pip of its own), made once (the caller holds
/// the build lock). `None` where neither works.
fn pip_python(py: &Python) -> Option<PathBuf> {
    if pip_works(&py.path) {
        return Some(py.path.clone());
    }
    let venv = cache_dir().join("venvs").join(&py.label);
    let python = venv.join("bin/python");
    if !pip_works(&python) {
        let made = Command::new(&py.path).arg("-m").arg("venv").arg("--clear").arg(&venv).status();
        if !made.is_ok_and(|s| s.success()) {
            return None;
        }
    }
    pip_works(&python).then_some(python)
}

/// Builds `name==version` from its sdist for `py` (`-O2 -g`, unstripped) and
/// returns the directory to put on `sys.path`, or why it could not.
pub fn build(py: &Python, name: &str, version: &str, env: &[(&str, &str)]) -> Result<PathBuf, String> {
    let root = cache_dir().join("pypi");
    let dir = root.join(&py.label).join(format!("{name}-{version}"));
    if dir.join(".complete").is_file() {
        return Ok(dir);
    }
    let files = root.join("files");
    if !files.is_dir() {
        return Err(format!("{} is missing: run scripts/provision.sh", files.display()));
    }
    let pinned = ["tar.gz", "zip"].iter().any(|ext| files.join(format!("{name}-{version}.{ext}")).is_file());
    if !pinned {
        return Err(format!("{name}=={version}: its sdist is not pinned in scripts/pypi/lock.tsv"));
    }
    std::fs::create_dir_all(dir.parent().unwrap()).map_err(|e| e.to_string())?;
    let _lock = Lock::take(&root.join("build.lock"))?;
    if dir.join(".complete").is_file() {
        return Ok(dir); // built by whoever held the lock before us
    }
    let python = pip_python(py).ok_or_else(|| format!("{}: no pip and no venv", py.label))?;
    let partial = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    let out = Command::new(python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps"])
        .args(["--no-index", "--no-cache-dir", "--find-links"])
        .arg(&files)
        .args(["--no-binary", name, "--target"])
        .arg(&partial)
        .arg(format!("{name}=={version}"))
        .env("CFLAGS", "-O2 -g")
        // The same for the pip that setuptools runs for `setup_requires`.
        .env("PIP_NO_INDEX", "1")
        .env("PIP_FIND_LINKS", &files)
        .env("PIP_NO_CACHE_DIR", "1")
        .envs(env.iter().copied())
        .env_remove("LD_PRELOAD")
        .output()
        .map_err(|e| format!("pip: {e}"))?;
    if !out.status.success() {
        return Err(format!("pip install {name}=={version}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    std::fs::write(partial.join(".complete"), "").map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&partial, &dir).map_err(|e| e.to_string())?;
    Ok(dir)
}
