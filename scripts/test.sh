#!/usr/bin/env bash
# All of refwatch's checks, as CI runs them: provision the interpreter matrix
# (cached under ${REFWATCH_CACHE:-~/.cache/refwatch}), then formatting, lints
# and every test on every interpreter present.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/provision.sh --quiet
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test
