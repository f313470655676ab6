"""A bare interpreter, refwatch (default settings), refwatch with
REFWATCH_SAMPLE=100 and memray (`memray run --native`), side by side in one
run, on the workloads of benches/workloads.py: wall time (alternating runs,
so drift hits every mode alike: median, spread, ratio to bare from the same
run), peak RSS (during the run, and of the whole process including what runs
at exit), with --callgrind instruction ratios (start-up subtracted), and the
project's targets with whether each is met. Interpreters come from
scripts/matrix.tsv; memray (in a venv) and ujson (built from its sdist with
-O2 -g) are installed from PyPI into $REFWATCH_CACHE/bench/ per interpreter
on first use."""
from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import workloads as wl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("REFWATCH_CACHE", os.path.expanduser("~/.cache/refwatch"))
BENCH_CACHE = os.path.join(CACHE, "bench")
LIB = os.path.join(ROOT, "target", "release", "librefwatch.so")  # --commit: built from a clean export
WORKLOADS_PY = os.path.join(ROOT, "benches", "workloads.py")
EXTENSIONS = {"benchloop": "loop.c", "benchcodec": "codec.c"}
UJSON = ("ujson", "5.12.1")

DESCRIPTIONS = {
    "pure": "pure Python, stdlib extensions loaded, none watched",
    "mixed": f"Python dict/list work, a C JSON round trip (benches/codec.c) every {wl.CODEC_EVERY} operations",
    "loop": "refcount-heavy extension loop (benches/loop.c work, -O2 -g)",
    "ujson": f"ujson {UJSON[1]} (sdist, -O2 -g) dumps+loads of a 3.5 KB document",
    "threads": f"{wl.THREADS} threads on the loop",
    "methods": "a small METH_VARARGS method parsing two arguments with PyArg_ParseTuple (benches/loop.c parse_args), "
    "called from a Python loop",
    "stores": "objects made by Python stored by the extension: a METH_O method appending its argument to a module-level "
    f"list (cleared from Python every {wl.STORE_CLEAR_EVERY} calls), a static type's tp_init and getset setter "
    "setting its member (benches/loop.c keep, Holder), called from a Python loop",
    "calls": "explicit Py_IncRef/Py_DecRef calls (ns added a call)",
    "live1m": "1M fresh ints created by the extension, kept alive (RSS)",
    "leaky": "loop with an inline Py_INCREF leak on each call's argument (watchpoints pin it; nowatch: off)",
}
MODES = ("bare", "refwatch", "sample100", "memray", "nowatch")
NOWATCH_ON = ("leaky",)  # refwatch with REFWATCH_WATCHPOINTS=off: what pinning costs
MEMRAY_ON = ("mixed", "loop", "ujson", "threads", "live1m")
CALLGRIND_ON = ("pure", "mixed", "loop", "ujson", "threads", "methods", "stores", "calls", "leaky")
# workload: (iterations of its timed part at scale 1, what one is), for the
# instructions per iteration under --callgrind
ITERATIONS = {"methods": (wl.PARSE_CALLS, "parse_args call"),
              "stores": (wl.STORE_CALLS, "iteration: keep, Holder(), setter"),
              "calls": (2 * wl.CALL_PAIRS, "Py_IncRef/Py_DecRef call")}
CALLGRIND_MODES = ("bare", "refwatch", "sample100")  # memray under valgrind: not measured
# (workload, mode, highest wall ratio)
RATIO_TARGETS = [("pure", "refwatch", 1.02), ("mixed", "refwatch", 1.05), ("loop", "refwatch", 1.15),
                 ("loop", "sample100", 1.03)]
MEMRAY_FRACTION = 5  # refwatch's overhead at most 1/5 of memray's
RSS_TARGET_MIB = 64  # with 1M tracked live objects


START = time.monotonic()


def log(msg):
    print(f"[{time.monotonic() - START:5.0f}s] {msg}", file=sys.stderr, flush=True)


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("REFWATCH_") and k not in ("LD_PRELOAD", "PYTHONPATH", "PYTHONHOME")}
    env.update(extra)
    return env


def run(cmd, env=None):
    """(ok, output) of a helper command."""
    try:
        p = subprocess.run(cmd, env=env or clean_env(), capture_output=True, text=True)
    except OSError as e:
        return False, str(e)
    return p.returncode == 0, (p.stdout + p.stderr).strip()


def last_line(text):
    """The line of a failed command's output that says why."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("note:")]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["(no output)"])[-1]


@dataclass
class Interp:
    label: str
    path: str
    kind: str
    version: str = ""
    paths: list = field(default_factory=list)  # PYTHONPATH
    memray: str | None = None  # the venv python that has memray
    notes: list = field(default_factory=list)
    missing: dict = field(default_factory=dict)  # workload: why it cannot run


def matrix():
    out = {}
    with open(os.path.join(ROOT, "scripts", "matrix.tsv")) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            label, _status, python, _version, build, libpython, _source = line.rstrip("\n").split("\t")
            out[label] = Interp(label, python.replace("$CACHE", CACHE), f"{build}, {libpython} libpython")
    return out


def probe(python, expr):
    return subprocess.check_output([python, "-c", f"import sysconfig, platform; print({expr})"],
                                   text=True, env=clean_env()).strip()


def build_extensions(interp, outdir):
    include = probe(interp.path, 'sysconfig.get_paths()["include"]')
    suffix = probe(interp.path, 'sysconfig.get_config_var("EXT_SUFFIX")')
    for name, source in EXTENSIONS.items():
        subprocess.check_call(["gcc", "-shared", "-fPIC", "-O2", "-g", f"-I{include}", f"-I{os.path.dirname(include)}",
                               os.path.join(ROOT, "benches", source), "-o", os.path.join(outdir, name + suffix)])
    interp.paths.append(outdir)


def venv_python(interp):
    """A venv of this interpreter (pip for Debian's python3.11 too), or why not."""
    venv = os.path.join(BENCH_CACHE, f"venv-{interp.label}")
    python = os.path.join(venv, "bin", "python")
    if run([python, "-m", "pip", "--version"])[0]:
        return python, None
    ok, out = run([interp.path, "-m", "venv", "--clear", venv])
    return (python, None) if ok else (None, f"no venv for memray and ujson: {last_line(out)}")


def setup_memray(interp, python):
    ok, _ = run([python, "-m", "memray", "--version"])
    if not ok:
        ok, out = run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "memray"])
        if not ok:
            return f"memray: not installable for {interp.label}: {last_line(out)}"
    interp.memray = python
    return "memray " + run([python, "-m", "memray", "--version"])[1]


def setup_ujson(interp, python):
    name, version = UJSON
    dest = os.path.join(BENCH_CACHE, interp.label, f"{name}-{version}")
    if not os.path.exists(os.path.join(dest, ".complete")):
        partial = f"{dest}.partial-{os.getpid()}"
        pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
               "--no-binary", ":all:", "--target", partial, f"{name}=={version}"]
        env = clean_env(CFLAGS="-O2 -g", UJSON_BUILD_NO_STRIP="1")
        ok, out = run(pip, env)
        if not ok:  # once more: a download can fail
            ok, out = run(pip + ["--upgrade"], env)
        if not ok:
            shutil.rmtree(partial, ignore_errors=True)
            interp.missing[name] = f"ujson {version}: build failed: {last_line(out)}"
            return interp.missing[name]
        open(os.path.join(partial, ".complete"), "w").close()
        shutil.rmtree(dest, ignore_errors=True)
        os.rename(partial, dest)
    interp.paths.append(dest)
    return f"ujson {version} from sdist (-O2 -g, unstripped)"


def prepare(interp, extdir):
    """Extensions, the venv, memray, ujson; a note each on what is missing."""
    interp.version = probe(interp.path, "platform.python_version()")
    build_extensions(interp, extdir)
    python, why = venv_python(interp)
    interp.notes = [setup(interp, python) if python else why for setup in (setup_memray, setup_ujson)]
    if interp.memray is None:
        log(f"{interp.label}: {interp.notes[0]}: going on without memray")
    if python is None:
        interp.missing["ujson"] = why


def git(*args):
    return subprocess.run(["git", "-C", ROOT] + list(args), capture_output=True, text=True, check=True).stdout.strip()


def library_at(rev, patch=None):
    """librefwatch.so built from a clean export of commit rev (the working
    tree may hold other people's unfinished changes), with patch applied
    (benches/floors/: builds that do less, to measure floors), cached per
    commit and patch."""
    commit = git("rev-parse", "--short", rev)
    tag = commit
    if patch:
        with open(patch, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:12]
        tag += f"-{os.path.splitext(os.path.basename(patch))[0]}-{digest}"
    src = os.path.join(BENCH_CACHE, f"src-{tag}")
    lib = os.path.join(src, "target", "release", "librefwatch.so")
    if not os.path.exists(lib):
        log(f"building librefwatch.so at {tag} in {src}")
        shutil.rmtree(src, ignore_errors=True)
        os.makedirs(src)
        archive = subprocess.Popen(["git", "-C", ROOT, "archive", commit], stdout=subprocess.PIPE)
        subprocess.check_call(["tar", "-x", "-C", src], stdin=archive.stdout)
        if archive.wait():
            sys.exit(f"git archive {commit} failed")
        if patch and subprocess.call(["patch", "-s", "-p1", "-d", src, "-i", os.path.abspath(patch)]):
            sys.exit(f"{patch} does not apply to {commit}")
        # the export's own target directory, whatever CARGO_TARGET_DIR says
        subprocess.check_call(["cargo", "build", "--release", "--quiet", "-p", "refwatch-preload"], cwd=src,
                              env=dict(os.environ, CARGO_TARGET_DIR=os.path.join(src, "target")))
    return lib, tag


def command(interp, mode, workload, tmp):
    if mode == "memray":
        out = os.path.join(tmp, "memray.bin")
        return [interp.memray, "-m", "memray", "run", "--native", "-q", "-f", "-o", out, WORKLOADS_PY, workload]
    return [interp.path, WORKLOADS_PY, workload]


def env_for(interp, mode, scale):
    env = clean_env(PYTHONPATH=os.pathsep.join(interp.paths), REFWATCH_BENCH_SCALE=str(scale))
    if mode in ("refwatch", "sample100", "nowatch"):
        env.update(LD_PRELOAD=LIB, REFWATCH_OUTPUT=os.devnull)  # main() sets LIB
    if mode == "sample100":
        env["REFWATCH_SAMPLE"] = "100"
    if mode == "nowatch":
        env["REFWATCH_WATCHPOINTS"] = "off"
    return env


@dataclass
class Sample:
    seconds: float
    run_kib: int  # VmHWM when the timed part ended
    peak_kib: int  # ru_maxrss of the whole process, exit included
    remarks: list  # lines refwatch wrote although its output is /dev/null


def run_once(interp, mode, workload, scale, tmp):
    # /usr/bin/time's %M: ru_maxrss of the workload from a small parent (a
    # child forked from this script would start at this script's RSS)
    cmd = ["/usr/bin/time", "-f", "BENCH_MAXRSS_KIB=%M"] + command(interp, mode, workload, tmp)
    p = subprocess.run(cmd, env=env_for(interp, mode, scale), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, errors="replace")
    values = dict(line.split("=", 1) for line in p.stdout.splitlines() if line.startswith("BENCH_"))
    if p.returncode or "BENCH_SECONDS" not in values:
        raise RuntimeError(f"{' '.join(cmd)} ({mode}) exited with {p.returncode}:\n{p.stdout}")
    remarks = [line for line in p.stdout.splitlines() if line.startswith("refwatch")]
    return Sample(float(values["BENCH_SECONDS"]), int(values["BENCH_HWM_KIB"]), int(values["BENCH_MAXRSS_KIB"]),
                  remarks)


def instructions(interp, mode, workload, scale, keep):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] + command(interp, mode, workload, tmp)
        env = env_for(interp, mode, scale)
        env["PYTHONHASHSEED"] = "0"
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        if keep:
            shutil.copy(out, os.path.join(keep, f"callgrind.{interp.label}.{workload}.{mode}.{scale}.out"))
        with open(out) as f:
            return next(int(line.split()[1]) for line in f if line.startswith(("summary:", "totals:")))


def work_instructions(interp, workload, scale, keep):
    """Instructions of the workload itself (the same run at scale 0, start-up
    and exit, subtracted) under each mode."""
    return {m: instructions(interp, m, workload, scale, keep) - instructions(interp, m, workload, 0, keep)
            for m in CALLGRIND_MODES}


@dataclass
class Stat:
    median: float
    spread: float
    ratio: float
    run_mib: float
    peak_mib: float
    instr: float | None = None
    instr_work: int | None = None  # instructions of the timed part at the callgrind scale


def summarize(samples, base):
    times = [s.seconds for s in samples]
    med = statistics.median(times)
    return Stat(med, (max(times) - min(times)) / med if med else 0, med / base if base else 0,
                statistics.median(s.run_kib for s in samples) / 1024,
                statistics.median(s.peak_kib for s in samples) / 1024)


def measure(interp, workload, args, tmp, remarks):
    """{mode: Stat} for one workload: alternating runs, then instructions."""
    modes = [m for m in MODES
             if (m != "memray" or (interp.memray and workload in MEMRAY_ON)) and (m != "nowatch" or workload in NOWATCH_ON)]
    samples = {m: [] for m in modes}
    for i in range(args.runs):  # alternate, so drift hits every mode alike
        log(f"{interp.label} {workload}: run {i + 1}/{args.runs}")
        for m in modes:
            s = run_once(interp, m, workload, args.scale, tmp)
            samples[m].append(s)
            remarks.update((interp.label, workload, m, r) for r in s.remarks)
    base = statistics.median(s.seconds for s in samples["bare"])
    stats = {m: summarize(samples[m], base) for m in modes}
    if args.callgrind and workload in CALLGRIND_ON:
        log(f"{interp.label} {workload}: callgrind")
        work = work_instructions(interp, workload, args.callgrind_scale, args.keep_callgrind)
        for m, n in work.items():
            stats[m].instr, stats[m].instr_work = n / work["bare"], n
    return stats


def verdict(ok):
    return "met" if ok else "NOT met"


def ratio_targets(stats):
    rows = []
    for workload, mode, limit in RATIO_TARGETS:
        s = stats.get(workload, {}).get(mode)
        if s is None:
            continue
        figure = f"{s.ratio:.3f}x wall" + (f", {s.instr:.3f}x instr" if s.instr else "")
        instr = verdict(s.instr <= limit) if s.instr else ""
        rows.append([f"{workload} {mode} <= {limit}x", figure, verdict(s.ratio <= limit), instr])
    return rows


def memray_targets(stats):
    rows = []
    for workload, by_mode in stats.items():
        if "memray" not in by_mode or workload == "live1m":
            continue
        ours, theirs = by_mode["refwatch"].ratio - 1, by_mode["memray"].ratio - 1
        rows.append([f"{workload} refwatch overhead <= memray's / {MEMRAY_FRACTION}",
                     f"{ours:+.1%} vs memray {theirs:+.1%}", verdict(ours <= theirs / MEMRAY_FRACTION), ""])
    return rows


def rss_targets(stats):
    live = stats.get("live1m")
    if not live:
        return []
    run_delta = live["refwatch"].run_mib - live["bare"].run_mib
    peak_delta = live["refwatch"].peak_mib - live["bare"].peak_mib
    return [[f"1M tracked live objects: RSS <= +{RSS_TARGET_MIB} MiB (process peak, exit included)",
             f"{peak_delta:+.0f} MiB", verdict(peak_delta <= RSS_TARGET_MIB), ""],
            [f"1M tracked live objects: RSS <= +{RSS_TARGET_MIB} MiB (while running)",
             f"{run_delta:+.0f} MiB", verdict(run_delta <= RSS_TARGET_MIB), ""]]


def render(headers, rows, markdown):
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [headers] + rows)


def figure_rows(interp, stats):
    rows = []
    for workload, by_mode in stats.items():
        for mode, s in by_mode.items():
            rows.append([interp.label, workload, mode, f"{s.median:.3f}", f"{s.spread:.0%}", f"{s.ratio:.3f}x",
                         f"{s.instr:.3f}x" if s.instr else "", f"{s.run_mib:.0f}", f"{s.peak_mib:.0f}"])
    return rows


def calls_line(interp, stats, scale):
    calls = stats.get("calls")
    if not calls:
        return None
    n = 2 * wl.CALL_PAIRS * scale
    added = {m: (calls[m].median - calls["bare"].median) / n * 1e9 for m in ("refwatch", "sample100")}
    return (f"{interp.label}: ns added per hooked Py_IncRef/Py_DecRef call: {added['refwatch']:+.1f} "
            f"(sample100: {added['sample100']:+.1f})")


def iteration_lines(interp, stats, scale):
    """Instructions per iteration, bare and added, where the count is known."""
    lines = []
    for workload, (n, what) in ITERATIONS.items():
        by_mode = stats.get(workload, {})
        if by_mode.get("bare") is None or by_mode["bare"].instr_work is None:
            continue
        per = {m: s.instr_work / (n * scale) for m, s in by_mode.items() if s.instr_work is not None}
        lines.append(f"{interp.label}: {workload}: instructions per {what}: bare {per['bare']:.0f}, "
                     + ", ".join(f"{m} {per[m] - per['bare']:+.0f}" for m in per if m != "bare"))
    return lines


def header(args, interps, built):
    lines = [f"librefwatch.so {built}, {datetime.date.today()}, {os.cpu_count()} cores; "
             f"{args.runs} alternating runs a mode, iterations x{args.scale}"
             + (f", callgrind at x{args.callgrind_scale} (start-up subtracted)" if args.callgrind else "")]
    for i in interps:
        lines.append(f"{i.label}: Python {i.version} ({i.kind}, {i.path}); " + "; ".join(i.notes))
    return lines


def library(args):
    """Sets LIB; says what it was built from."""
    global LIB
    if args.commit:
        LIB, tag = library_at(args.commit, args.patch)
        return f"at {tag} (clean export" + (f", {args.patch} applied)" if args.patch else ")")
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "preload", "model", "Cargo.lock")
    return f"at {git('rev-parse', '--short', 'HEAD')}" + (" plus uncommitted agent changes" if dirty else "")


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pythons", default="3.12,deb-3.11", help="matrix labels (default: 3.12,deb-3.11)")
    ap.add_argument("--runs", type=int, help="alternating runs per mode (default 5; --quick: 2)")
    ap.add_argument("--workloads", default=",".join(DESCRIPTIONS), help=f"default: {','.join(DESCRIPTIONS)}")
    ap.add_argument("--quick", action="store_true", help="smoke run: fewer runs and iterations")
    ap.add_argument("--callgrind", action="store_true", help="also count instructions with callgrind (slow)")
    ap.add_argument("--keep-callgrind", metavar="DIR", help="keep the callgrind output files in DIR")
    ap.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    ap.add_argument("--commit", metavar="REV", help="measure librefwatch.so built from a clean export of REV")
    ap.add_argument("--patch", metavar="FILE",
                    help="with --commit: apply FILE to the export first (benches/floors/*.patch: floors)")
    args = ap.parse_args()
    if args.patch and not args.commit:
        ap.error(f"--patch {args.patch}: needs --commit REV (the commit the patch applies to)")
    if args.patch and not os.path.isfile(args.patch):
        ap.error(f"--patch {args.patch}: no such file")
    args.runs = args.runs or (2 if args.quick else 5)
    args.scale = 0.2 if args.quick else 1
    args.callgrind_scale = 0.005 if args.quick else 0.02
    if args.keep_callgrind:
        os.makedirs(args.keep_callgrind, exist_ok=True)
    return args


def main():
    args = parse_args()
    built = library(args)
    if not os.path.exists(LIB):
        sys.exit(f"{LIB} missing: run cargo build --release")
    known = matrix()
    interps = [known[label] for label in args.pythons.split(",")]
    figures, targets, extra, remarks = [], [], [], set()
    for interp in interps:
        with tempfile.TemporaryDirectory() as tmp:
            prepare(interp, tmp)
            stats = {}
            for workload in args.workloads.split(","):
                if workload in interp.missing:
                    log(f"{interp.label} {workload}: skipped: {interp.missing[workload]}")
                    continue
                stats[workload] = measure(interp, workload, args, tmp, remarks)
        figures += figure_rows(interp, stats)
        targets += [[interp.label] + row for row in ratio_targets(stats) + memray_targets(stats) + rss_targets(stats)]
        extra += [line for line in [calls_line(interp, stats, args.scale)] if line]
        if args.callgrind:
            extra += iteration_lines(interp, stats, args.callgrind_scale)
    print("\n".join(header(args, interps, built)))
    print()
    print("\n".join(f"{w}: {d}" for w, d in DESCRIPTIONS.items() if w in args.workloads.split(",")))
    print()
    print(render(["python", "workload", "mode", "median s", "spread", "wall ratio", "instr ratio",
                  "RSS MiB (run)", "RSS MiB (peak)"], figures, args.markdown))
    print()
    print("\n".join(extra))
    print()
    print(render(["python", "target", "measured", "wall", "instr"], targets, args.markdown))
    for label, workload, mode, line in sorted(remarks):
        print(f"note: {label} {workload} {mode}: {line}")


if __name__ == "__main__":
    main()
