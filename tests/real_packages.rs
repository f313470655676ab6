//! Tried as a real user would: released extension packages from PyPI with a
//! refcount leak fixed in a later release, pinned to the buggy release and
//! built from sdist with `-g`. refwatch names the buggy lines; the fixed
//! release gives no finding in the package's files.
//!
//! ujson 5.12.0 (fixed in 5.12.1) and cbor2 5.8.0 (fixed in 5.9.0).

mod common;

use common::fixture::Built;
use common::matrix::{loud, pythons, Python};
use common::pypi;
use common::run::{run, Agent};
use refwatch_model::Event;
use std::collections::BTreeSet;

/// Interpreters the packages are built for: one of each kind (shared and
/// static libpython, release and debug, with and without the reference
/// tracer) keeps the cold build time reasonable. (ujson 5.12 needs 3.10+.)
const LABELS: &[&str] = &["3.10", "3.12", "3.13", "deb-3.11", "3.13d-trace"];

/// ujson 5.12.0 leaks (fixed in 5.12.1): the text a `default=` function
/// returns when it is not ASCII (objToJSON.c:550, the call of the default
/// function in Object_beginTypeContext), and the encoded JSON when `dump()`'s
/// `write()` fails (objToJSON.c:863, where objToJSON creates the text).
const UJSON_DRIVER: &str = r#"
import ujson

class Opaque:
    pass

class FullDisk:
    def write(self, s):
        raise OSError("disk full")

for i in range(30):
    ujson.dumps([Opaque()], default=lambda o: "caf\u00e9 %d" % i)
    try:
        ujson.dump({"n": i}, FullDisk())
    except OSError:
        pass
print("ok")
"#;

fn leak_lines(r: &common::run::Run, file_suffix: &str) -> Result<BTreeSet<(String, u32)>, String> {
    let Some(Event::Summary { findings, .. }) = r.summary(None) else {
        return Err(format!("no summary: {}", r.describe()));
    };
    Ok(findings
        .iter()
        .filter(|f| f.file.as_deref().is_some_and(|p| p.ends_with(file_suffix)))
        .map(|f| (f.function.clone().unwrap_or_default(), f.line.unwrap_or(0)))
        .collect())
}

fn ujson(py: &Python, version: &str) -> Result<Built, String> {
    let dir = pypi::build(py, "ujson", version, &[("UJSON_BUILD_NO_STRIP", "1")])?;
    Ok(Built { dir, module: "ujson".into(), source: Default::default() })
}

fn selected(labels: &[&str]) -> Vec<&'static Python> {
    let selected: Vec<&Python> = pythons().iter().filter(|p| labels.contains(&p.label.as_str())).collect();
    assert!(!selected.is_empty(), "none of {labels:?} is present");
    selected
}

#[test]
fn ujson_5_12_0_leaks_are_named_and_5_12_1_is_clean() {
    let mut failures = Vec::new();
    for py in selected(LABELS) {
        let check = || -> Result<(), String> {
            let buggy = ujson(py, "5.12.0")?;
            let fixed = ujson(py, "5.12.1")?;
            let r = run(py, &[&buggy], UJSON_DRIVER, Agent::Json(&[]));
            ensure!(r.stdout == "ok\n", "driver: {}", r.describe());
            let want: BTreeSet<(String, u32)> =
                [("Object_beginTypeContext".to_string(), 550), ("objToJSON".to_string(), 863)].into();
            let got = leak_lines(&r, "/objToJSON.c")?;
            ensure!(got == want, "ujson 5.12.0: leaks named {got:?}, want {want:?}");
            let r = run(py, &[&fixed], UJSON_DRIVER, Agent::Json(&[]));
            ensure!(r.stdout == "ok\n", "driver: {}", r.describe());
            let got = leak_lines(&r, ".c")?;
            ensure!(got.is_empty(), "ujson 5.12.1 is fixed, yet: {got:?}");
            Ok(())
        };
        match check() {
            Ok(()) => loud(&format!("ujson leak check passed on {}", py.label)),
            Err(e) => failures.push(format!("[{}] {e}", py.label)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// cbor2 5.8.0 leaks (fixed in 5.9.0: "Fixed two reference/memory leaks in
/// the C extension's long string decoder"): decode_definite_long_string
/// decodes a text string longer than 65536 bytes in chunks and joins them
/// with PyUnicode_Concat (decoder.c:904), then replaces the previous result
/// with the joined one without releasing it. A string of four chunks leaves
/// two joined strings behind per decode, named at the line that created
/// them. (The first chunk's string, from PyUnicode_DecodeUTF8Stateful, leaks
/// too; that function is not followed.) `_cbor2.loads` is the C decoder
/// itself: it fails loudly should the extension be missing.
const CBOR2_DRIVER: &str = r#"
import cbor2, _cbor2

text = "caf\u00e9 " * 40000
data = cbor2.dumps(text)
for i in range(30):
    assert _cbor2.loads(data) == text
print("ok")
"#;

/// Shared and static libpython, release and debug with the reference tracer
/// (it passes on all of LABELS; three keep the cold build time down).
const CBOR2_LABELS: &[&str] = &["3.12", "deb-3.11", "3.13d-trace"];

fn cbor2(py: &Python, version: &str) -> Result<Built, String> {
    let dir = pypi::build(py, "cbor2", version, &[("CBOR2_BUILD_C_EXTENSION", "1")])?;
    Ok(Built { dir, module: "_cbor2".into(), source: Default::default() })
}

#[test]
fn cbor2_5_8_0_leak_is_named_and_5_9_0_is_clean() {
    let mut failures = Vec::new();
    for py in selected(CBOR2_LABELS) {
        let check = || -> Result<(), String> {
            let buggy = cbor2(py, "5.8.0")?;
            let fixed = cbor2(py, "5.9.0")?;
            let r = run(py, &[&buggy], CBOR2_DRIVER, Agent::Json(&[]));
            ensure!(r.stdout == "ok\n", "driver: {}", r.describe());
            let want: BTreeSet<(String, u32)> = [("decode_definite_long_string".to_string(), 904)].into();
            let got = leak_lines(&r, "/source/decoder.c")?;
            ensure!(got == want, "cbor2 5.8.0: leaks named {got:?}, want {want:?}");
            let r = run(py, &[&fixed], CBOR2_DRIVER, Agent::Json(&[]));
            ensure!(r.stdout == "ok\n", "driver: {}", r.describe());
            let got = leak_lines(&r, ".c")?;
            ensure!(got.is_empty(), "cbor2 5.9.0 is fixed, yet: {got:?}");
            Ok(())
        };
        match check() {
            Ok(()) => loud(&format!("cbor2 leak check passed on {}", py.label)),
            Err(e) => failures.push(format!("[{}] {e}", py.label)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
