#!/usr/bin/env bash
# Bare vs. refwatch vs. memray benchmarks (benches/bench.py --help for options), e.g.
#   scripts/bench.sh --pythons 3.12,deb-3.11 --runs 5 --callgrind
#   scripts/bench.sh --commit HEAD ...   # librefwatch.so from a clean export of HEAD
#   scripts/bench.sh --quick             # smoke run
set -euo pipefail
cd "$(dirname "$0")/.."
case " $* " in
*" --commit "*) ;; # bench.py builds it from the export
*) cargo build --release --quiet ;;
esac
exec python3 benches/bench.py "$@"
