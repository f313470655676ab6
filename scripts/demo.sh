#!/usr/bin/env bash
# The refwatch demo: builds refwatch, compiles demo/shapes.c for the Python
# on this machine (PYTHON, else python3), and runs demo/demo.py under
# `refwatch run`, which prints per-line reports to stderr every second and a
# summary at exit.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
cd "$root"
cargo build --release --quiet
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
read -r include suffix < <("$python" -c 'import sysconfig as s; print(s.get_paths()["include"], s.get_config_var("EXT_SUFFIX"))')
gcc -shared -fPIC -O2 -g -I"$include" -I"$(dirname "$include")" demo/shapes.c -o "$build/shapes$suffix"
PYTHONPATH="$build" target/release/refwatch run --interval 1 -- "$python" demo/demo.py
