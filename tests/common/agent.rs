//! The agent under test: librefwatch.so of this test run's own profile,
//! built fresh (a plain `cargo test` does not build a cdylib for its tests).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// `target/<profile>/`, from where cargo put this test executable
/// (`target/<profile>/deps/<test>-<hash>`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps").to_path_buf()
}

/// Path of librefwatch.so, rebuilt once per test process so it is never
/// stale.
pub fn library() -> PathBuf {
    static LIBRARY: OnceLock<PathBuf> = OnceLock::new();
    LIBRARY
        .get_or_init(|| {
            let profile_dir = profile_dir();
            let target_dir = profile_dir.parent().expect("target dir");
            let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") => "dev".to_string(),
                Some(other) => other.to_string(),
                None => panic!("unexpected target layout: {}", profile_dir.display()),
            };
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "--quiet", "-p", "refwatch-preload", "--profile", &profile, "--target-dir"])
                .arg(target_dir)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("run cargo build for librefwatch.so");
            assert!(status.success(), "building librefwatch.so failed");
            let library = profile_dir.join("librefwatch.so");
            assert!(library.is_file(), "{} missing after build", library.display());
            library
        })
        .clone()
}

/// The `refwatch` launcher cargo built for these tests.
pub fn launcher() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_refwatch"))
}
