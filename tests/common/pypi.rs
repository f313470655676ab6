//! Real extension packages from PyPI, built from their sdist with `-g` for
//! one interpreter (the way a user would build them), cached under
//! `$REFWATCH_CACHE/pypi/<label>/<name>-<version>/`.

use super::matrix::{cache_dir, Python};
use std::path::PathBuf;
use std::process::Command;

/// An interpreter with pip: the interpreter itself, or a venv made from it
/// (Debian's python3.11 has no pip of its own). `None` where neither works.
fn pip_python(py: &Python) -> Option<PathBuf> {
    let has_pip = |python: &PathBuf| {
        Command::new(python).args(["-m", "pip", "--version"]).output().is_ok_and(|o| o.status.success())
    };
    if has_pip(&py.path) {
        return Some(py.path.clone());
    }
    let venv = cache_dir().join("venvs").join(&py.label);
    let python = venv.join("bin/python");
    if !has_pip(&python) {
        let made = Command::new(&py.path).arg("-m").arg("venv").arg("--clear").arg(&venv).status();
        if !made.is_ok_and(|s| s.success()) {
            return None;
        }
    }
    has_pip(&python).then_some(python)
}

/// Builds `name==version` from its sdist for `py` (`-O2 -g`, unstripped) and
/// returns the directory to put on `sys.path`, or why it could not.
pub fn build(py: &Python, name: &str, version: &str, env: &[(&str, &str)]) -> Result<PathBuf, String> {
    let dir = cache_dir().join("pypi").join(&py.label).join(format!("{name}-{version}"));
    if dir.join(".complete").is_file() {
        return Ok(dir);
    }
    let python = pip_python(py).ok_or_else(|| format!("{}: no pip and no venv", py.label))?;
    let partial = dir.with_extension(format!("partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    let out = Command::new(python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps"])
        .args(["--no-binary", ":all:", "--target"])
        .arg(&partial)
        .arg(format!("{name}=={version}"))
        .env("CFLAGS", "-O2 -g")
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
