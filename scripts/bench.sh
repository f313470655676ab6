#!/usr/bin/env bash
# Bare vs. refwatch benchmarks (benches/bench.py --help for options), e.g.
#   scripts/bench.sh --pythons 3.12,deb-3.11 --runs 5 --callgrind
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
exec python3 benches/bench.py "$@"
