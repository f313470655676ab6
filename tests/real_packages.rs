//! Tried as a real user would: released extension packages from PyPI with a
//! refcount bug fixed in a later release, pinned to the buggy release and
//! built from sdist with `-g`. refwatch names the buggy lines; the fixed
//! release gives no finding in the package's files.
//!
//! Leaks: ujson 5.12.0 (fixed in 5.12.1), cbor2 5.8.0 (fixed in 5.9.0),
//! multidict 6.7.0 (fixed in 6.7.1). Over-releases: simplejson 3.20.2 (fixed
//! in 4.0.0), ujson 1.35 (fixed in 2.0.0).

mod common;

use common::fixture::Built;
use common::matrix::{loud, pythons, Python};
use common::pypi;
use common::run::{run, Agent};
use refwatch_model::event::FindingKind;
use refwatch_model::Event;
use std::collections::BTreeSet;

/// One package: its buggy and fixed releases, how to build and drive them,
/// and the leaks (function, line) refwatch must name in `file`.
struct Case {
    name: &'static str,
    /// The module the driver imports (checked to be the C extension).
    module: &'static str,
    build_env: &'static [(&'static str, &'static str)],
    buggy: &'static str,
    fixed: &'static str,
    driver: &'static str,
    /// The end of the path of the file the findings are in.
    file: &'static str,
    kind: FindingKind,
    /// The findings (function, line) of `kind` in `file`.
    findings: &'static [(&'static str, u32)],
    /// Settings for the runs.
    settings: &'static [(&'static str, &'static str)],
    /// Interpreters it is built for: each build adds cold CI time.
    labels: &'static [&'static str],
}

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

/// The (function, line) of the summary's findings of `kind` (any kind:
/// `None`) in files whose path ends with `file_suffix`.
fn finding_lines(
    r: &common::run::Run,
    kind: Option<&FindingKind>,
    file_suffix: &str,
) -> Result<BTreeSet<(String, u32)>, String> {
    let Some(Event::Summary { findings, .. }) = r.summary(None) else {
        return Err(format!("no summary: {}", r.describe()));
    };
    Ok(findings
        .iter()
        .filter(|f| kind.is_none_or(|k| *k == f.kind))
        .filter(|f| f.file.as_deref().is_some_and(|p| p.ends_with(file_suffix)))
        .map(|f| (f.function.clone().unwrap_or_default(), f.line.unwrap_or(0)))
        .collect())
}

fn built(py: &Python, case: &Case, version: &str) -> Result<Built, String> {
    let dir = pypi::build(py, case.name, version, case.build_env)?;
    Ok(Built { dir, module: case.module.into(), source: Default::default() })
}

/// The buggy release's findings are named exactly; the fixed one is clean.
fn check(case: &Case) {
    let mut failures = Vec::new();
    let selected: Vec<&Python> =
        pythons().iter().filter(|p| case.labels.contains(&p.label.as_str())).collect();
    assert!(!selected.is_empty(), "none of {:?} is present", case.labels);
    for py in selected {
        let attempt = || -> Result<(), String> {
            let buggy = built(py, case, case.buggy)?;
            let fixed = built(py, case, case.fixed)?;
            let r = run(py, &[&buggy], case.driver, Agent::Json(case.settings));
            ensure!(r.stdout.ends_with("ok\n") && r.status.success(), "driver: {}", r.describe());
            let want: BTreeSet<(String, u32)> =
                case.findings.iter().map(|(f, l)| (f.to_string(), *l)).collect();
            let got = finding_lines(&r, Some(&case.kind), case.file)?;
            ensure!(
                got == want,
                "{} {}: {:?} named {got:?}, want {want:?}",
                case.name,
                case.buggy,
                case.kind
            );
            let r = run(py, &[&fixed], case.driver, Agent::Json(case.settings));
            ensure!(r.stdout.ends_with("ok\n") && r.status.success(), "driver: {}", r.describe());
            // No finding in any of the package's files.
            let got = finding_lines(&r, None, "")?;
            ensure!(got.is_empty(), "{} {} is fixed, yet: {got:?}", case.name, case.fixed);
            Ok(())
        };
        match attempt() {
            Ok(()) => loud(&format!("{} check passed on {}", case.name, py.label)),
            Err(e) => failures.push(format!("[{}] {e}", py.label)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn ujson_5_12_0_leaks_are_named_and_5_12_1_is_clean() {
    check(&Case {
        name: "ujson",
        module: "ujson",
        build_env: &[("UJSON_BUILD_NO_STRIP", "1")],
        buggy: "5.12.0",
        fixed: "5.12.1",
        driver: UJSON_DRIVER,
        file: "/objToJSON.c",
        kind: FindingKind::Leak,
        settings: &[],
        findings: &[("Object_beginTypeContext", 550), ("objToJSON", 863)],
        // One of each kind (shared and static libpython, release and debug,
        // with and without the reference tracer); ujson 5.12 needs 3.10+.
        labels: &["3.10", "3.12", "3.13", "deb-3.11", "3.13d-trace"],
    });
}

/// cbor2 5.8.0 leaks (fixed in 5.9.0: "Fixed two reference/memory leaks in
/// the C extension's long string decoder"): decode_definite_long_string
/// decodes a text string longer than 65536 bytes in chunks and joins them
/// with PyUnicode_Concat (decoder.c:904), then replaces the previous result
/// with the joined one without releasing it. A string of four chunks leaves
/// two joined strings behind per decode, named at the line that created
/// them, and the first chunk's string (decoder.c:898). `_cbor2.loads` is the
/// C decoder itself: it fails loudly should the extension be missing.
const CBOR2_DRIVER: &str = r#"
import cbor2, _cbor2

text = "caf\u00e9 " * 40000
data = cbor2.dumps(text)
for i in range(30):
    assert _cbor2.loads(data) == text
print("ok")
"#;

#[test]
fn cbor2_5_8_0_leaks_are_named_and_5_9_0_is_clean() {
    check(&Case {
        name: "cbor2",
        module: "_cbor2",
        build_env: &[("CBOR2_BUILD_C_EXTENSION", "1")],
        buggy: "5.8.0",
        fixed: "5.9.0",
        driver: CBOR2_DRIVER,
        file: "/source/decoder.c",
        kind: FindingKind::Leak,
        settings: &[],
        findings: &[("decode_definite_long_string", 898), ("decode_definite_long_string", 904)],
        labels: &["3.12", "deb-3.11", "3.13d-trace"],
    });
}

/// multidict 6.7.0 leaks (fixed in 6.7.1, #1284): `pop()` of a missing key
/// returns the default without releasing the key's lower-cased identity,
/// which `md_calc_identity` creates (hashtable.h:140). multidict builds with
/// `-O3`, where gcc keeps no inline chain for the `static inline`
/// `PyObject_CallMethodNoArgs`: the line is the function's own last line
/// before the call.
const MULTIDICT_DRIVER: &str = r#"
from multidict import CIMultiDict
import multidict
assert multidict.CIMultiDict.__module__ == "multidict._multidict"
d = CIMultiDict({"Content-Type": "text/plain"})
for i in range(30):
    d.pop("X-Missing-Header", None)
# Live keys' lower-cased identities sit in multidict's own hash table,
# which its traversal leaves out: held, not leaked.
live = [CIMultiDict([("Accept", "*/*"), ("Host", "x"), ("X-Id", str(i))]) for i in range(3)]
print("ok")
"#;

#[test]
fn multidict_6_7_0_leak_is_named_and_6_7_1_is_clean() {
    check(&Case {
        name: "multidict",
        module: "multidict",
        build_env: &[],
        buggy: "6.7.0",
        fixed: "6.7.1",
        driver: MULTIDICT_DRIVER,
        file: "/_multilib/hashtable.h",
        kind: FindingKind::Leak,
        settings: &[],
        findings: &[("md_calc_identity", 140)],
        labels: &["3.12", "deb-3.11", "3.13d-trace"],
    });
}

/// simplejson 3.20.2 over-releases (fixed in 4.0.0, commit aa9182d): when
/// `PyDict_DelItem(s->markers, ident)` fails in `encoder_listencode_obj`,
/// the error path releases `ident` twice (_speedups.c:2957 and :2960). The
/// first release is the extension's own; the second frees the int while
/// the `KeyError` being raised still holds it in its arguments, and is named
/// at its line. The driver empties the markers dict from a `default=`
/// function, which makes the deletion fail. Under quarantine the freed int
/// stays alive, so every interpreter runs to the end (debug builds crash on
/// the dangling int otherwise, as they do without refwatch).
const SIMPLEJSON_DRIVER: &str = r#"
import simplejson, simplejson.encoder as enc
assert enc.c_make_encoder is not None, "simplejson's C speedups were not built"
captured = []
real = enc.c_make_encoder
def capture(markers, *args):
    captured.append(markers)
    return real(markers, *args)
enc.c_make_encoder = capture

class Opaque:
    pass

def default(o):
    captured[-1].clear()
    return "opaque"

for i in range(3):
    try:
        simplejson.dumps([Opaque()], default=default)
    except KeyError as e:
        pass
print("ok")
"#;

#[test]
fn simplejson_3_20_2_over_release_is_named_and_4_0_1_is_clean() {
    check(&Case {
        name: "simplejson",
        module: "simplejson",
        build_env: &[],
        buggy: "3.20.2",
        fixed: "4.0.1",
        driver: SIMPLEJSON_DRIVER,
        file: "/simplejson/_speedups.c",
        kind: FindingKind::Overrelease,
        findings: &[("encoder_listencode_obj", 2960)],
        settings: &[("REFWATCH_ON_OVERRELEASE", "quarantine")],
        labels: &["3.12", "deb-3.11", "3.13d-trace"],
    });
}

/// ujson 1.35 over-releases (fixed in 2.0.0, commit 870ee48, issue #243):
/// `dumps(..., sort_keys=True)` builds the sorted (key, value) list of a dict
/// in the type context's `newObj`; `SortedDict_iterEnd` releases it
/// (objToJSON.c:610) without clearing it, and `Object_endTypeContext`
/// releases it again (objToJSON.c:934). The first release frees the list;
/// the second touches the freed list's refcount and is named at its line,
/// with the first as the one that freed it. Release builds run on (the freed
/// list waits on the list free list); debug builds stop at the negative
/// refcount, so they are not in the labels.
const UJSON_SORT_KEYS_DRIVER: &str = r#"
import ujson

for i in range(3):
    assert ujson.dumps({"b": i, "a": [i]}, sort_keys=True) == '{"a":[%d],"b":%d}' % (i, i)
print("ok")
"#;

#[test]
fn ujson_1_35_over_release_is_named_and_2_0_0_is_clean() {
    check(&Case {
        name: "ujson",
        module: "ujson",
        build_env: &[],
        buggy: "1.35",
        fixed: "2.0.0",
        driver: UJSON_SORT_KEYS_DRIVER,
        file: "/python/objToJSON.c",
        kind: FindingKind::Overrelease,
        findings: &[("Object_endTypeContext", 934)],
        settings: &[],
        labels: &["3.10", "3.12", "deb-3.11"],
    });
}
