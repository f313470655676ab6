"""Bare vs. refwatch, side by side in one run: wall time (alternating runs,
median and spread) and, with --callgrind, instruction counts. Prints ratios
from the same run. Interpreters come from scripts/matrix.tsv."""
import argparse
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("REFWATCH_CACHE", os.path.expanduser("~/.cache/refwatch"))
LIB = os.path.join(ROOT, "target", "release", "librefwatch.so")
WORKLOADS = os.path.join(ROOT, "benches", "workloads.py")


def matrix():
    out = {}
    with open(os.path.join(ROOT, "scripts", "matrix.tsv")) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            label, status, python, version, build, libpython, source = line.rstrip("\n").split("\t")
            out[label] = python.replace("$CACHE", CACHE)
    return out


def probe(python, expr):
    return subprocess.check_output([python, "-c", f"import sysconfig, platform; print({expr})"], text=True).strip()


def build_extension(python, outdir):
    include = probe(python, 'sysconfig.get_paths()["include"]')
    suffix = probe(python, 'sysconfig.get_config_var("EXT_SUFFIX")')
    target = os.path.join(outdir, "benchloop" + suffix)
    subprocess.check_call(["gcc", "-shared", "-fPIC", "-O2", "-g", f"-I{include}",
                           f"-I{os.path.dirname(include)}", os.path.join(ROOT, "benches", "loop.c"), "-o", target])


def env_for(mode, extdir):
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFWATCH_") and k != "LD_PRELOAD"}
    env["PYTHONPATH"] = extdir
    if mode != "bare":
        env["LD_PRELOAD"] = LIB
        env["REFWATCH_OUTPUT"] = os.devnull
        if mode == "sample100":
            env["REFWATCH_SAMPLE"] = "100"
    return env


def timed(python, workload, mode, extdir):
    out = subprocess.check_output([python, WORKLOADS, workload], env=env_for(mode, extdir), text=True)
    return float(out.strip().splitlines()[-1])


def instructions(python, workload, mode, extdir):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", python, WORKLOADS, workload],
                       env=env_for(mode, extdir), check=True, capture_output=True)
        with open(out) as f:
            for line in f:
                if line.startswith("summary:") or line.startswith("totals:"):
                    return int(line.split()[1])
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pythons", default="3.12,deb-3.11", help="matrix labels (default: 3.12,deb-3.11)")
    ap.add_argument("--runs", type=int, default=5, help="alternating runs per mode (default 5)")
    ap.add_argument("--workloads", default="pure,loop,calls")
    ap.add_argument("--callgrind", action="store_true", help="also count instructions (slow)")
    args = ap.parse_args()
    if not os.path.exists(LIB):
        sys.exit(f"{LIB} missing: run cargo build --release")
    pythons = matrix()
    modes = ["bare", "refwatch", "sample100"]
    print(f"{'python':<10} {'workload':<8} {'mode':<10} {'median s':>9} {'spread':>7} {'ratio':>6} {'instr ratio':>11}")
    for label in args.pythons.split(","):
        python = pythons[label]
        version = probe(python, "platform.python_version()")
        with tempfile.TemporaryDirectory() as extdir:
            build_extension(python, extdir)
            for workload in args.workloads.split(","):
                times = {m: [] for m in modes}
                for _ in range(args.runs):  # alternate, so drift hits every mode alike
                    for m in modes:
                        times[m].append(timed(python, workload, m, extdir))
                base = statistics.median(times["bare"])
                base_instr = instructions(python, workload, "bare", extdir) if args.callgrind else None
                for m in modes:
                    med = statistics.median(times[m])
                    spread = (max(times[m]) - min(times[m])) / med if med else 0
                    instr = ""
                    if base_instr:
                        n = base_instr if m == "bare" else instructions(python, workload, m, extdir)
                        instr = f"{n / base_instr:.4f}"
                    print(f"{label + ' ' + version:<10} {workload:<8} {m:<10} {med:9.4f} {spread:7.1%} "
                          f"{med / base:6.3f} {instr:>11}")
                if workload == "calls":
                    added = (statistics.median(times["refwatch"]) - base) / 40_000_000 * 1e9
                    print(f"{'':<10} {'':<8} ns added per hooked call (Py_IncRef/Py_DecRef): {added:.2f}")


if __name__ == "__main__":
    main()
