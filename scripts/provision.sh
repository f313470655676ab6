#!/usr/bin/env bash
# Provision the interpreters of scripts/matrix.tsv (see its header,
# docs/design.md §6 and docs/testing.md).  Every entry whose interpreter is
# missing is installed or built with the recipe of its `source` column (scripts/provision/SOURCE.sh);
# everything is cached in ${REFWATCH_CACHE:-$HOME/.cache/refwatch}, so a second
# run with everything present does no network work.
#
# usage: scripts/provision.sh [--only LABEL[,LABEL...]] [--quiet] [--verbose]
#   --only     provision these labels only (the table still shows every entry)
#   --quiet    print only the final table and errors (logs: $CACHE/logs/)
#   --verbose  also stream the commands' output (it always goes to the logs)
#
# Prints a table (label, status, exact version, package, path, result) on
# stdout and writes it to $CACHE/provisioned.txt; $CACHE/status/LABEL gets
# "ok VERSION", "unavailable: WHY" (obtainable entries no suite has any more),
# "skip: WHY" or "fail: WHY".
# Then fetches the PyPI files the tests build from (scripts/pypi/lock.tsv)
# into $CACHE/pypi/files.
# Exit status: 0, or 1 when a required entry (or an obtainable one that a
# suite still has) or a pinned PyPI file could not be provisioned; 2 for a
# usage error.
#
# Adding an interpreter = one line in matrix.tsv; a new `source` also needs
# scripts/provision/SOURCE.sh defining recipe_SOURCE LABEL... (- becomes _ in
# the name) and optionally complete_SOURCE LABEL (default: the binary exists)
# and pkgver_SOURCE LABEL (the package column of the table).

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MATRIX=$HERE/matrix.tsv
CACHE=${REFWATCH_CACHE:-$HOME/.cache/refwatch}
QUIET=0
VERBOSE=0
ONLY=''

usage() { sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

while (($#)); do
    case $1 in
    --only)
        [[ $# -ge 2 ]] || { echo "provision.sh: --only needs LABEL[,LABEL]" >&2; exit 2; }
        ONLY=$2
        shift 2
        ;;
    --only=*) ONLY=${1#--only=}; shift ;;
    --quiet | -q) QUIET=1; shift ;;
    --verbose | -v) VERBOSE=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "provision.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done

# shellcheck source=provision/lib.sh
. "$HERE/provision/lib.sh"
for recipe in "$HERE"/provision/*.sh; do
    [[ $recipe == */lib.sh ]] && continue
    # shellcheck source=/dev/null
    . "$recipe"
done

# ------------------------------------------------------------- the matrix
LABELS=()
declare -A M_STATUS=() M_PY=() M_VER=() M_BUILD=() M_LIB=() M_SRC=()
lineno=0
while IFS=$'\t' read -r label status python version build libpython source extra || [[ -n $label ]]; do
    lineno=$((lineno + 1))
    [[ -z $label || $label == \#* ]] && continue
    if [[ -z $source || -n ${extra:-} ]]; then
        echo "provision.sh: $MATRIX:$lineno: expected 7 tab-separated columns" >&2
        exit 2
    fi
    case $status in
    required | image | obtainable | best-effort) ;;
    *) echo "provision.sh: $MATRIX:$lineno: unknown status '$status'" >&2; exit 2 ;;
    esac
    [[ -z ${M_SRC[$label]:-} ]] || { echo "provision.sh: $MATRIX:$lineno: label '$label' twice" >&2; exit 2; }
    LABELS+=("$label")
    M_STATUS[$label]=$status
    M_PY[$label]=${python//\$CACHE/$CACHE}
    M_VER[$label]=$version
    M_BUILD[$label]=$build
    # shellcheck disable=SC2034 # read by the recipes (trixie-src.sh)
    M_LIB[$label]=$libpython
    M_SRC[$label]=$source
done <"$MATRIX"

declare -A SELECTED=()
if [[ -n $ONLY ]]; then
    IFS=, read -ra only <<<"$ONLY"
    for label in "${only[@]}"; do
        if [[ -z ${M_SRC[$label]:-} ]]; then
            echo "provision.sh: --only: no label '$label' in $MATRIX (labels: ${LABELS[*]})" >&2
            exit 2
        fi
        SELECTED[$label]=1
    done
else
    for label in "${LABELS[@]}"; do SELECTED[$label]=1; done
fi

# ------------------------------------------------------ lock, scratch dirs
mkdir -p "$CACHE/logs" "$CACHE/status" "$CACHE/build"
exec 9>"$CACHE/provision.lock"
if ! flock -n 9; then
    warn "another provision.sh holds $CACHE/provision.lock: waiting for it"
    flock 9
fi
# we hold the lock: whatever is in build/ is left from an interrupted run
rm -rf "${CACHE:?}/build/"*
RUNDIR=$(mktemp -d "${TMPDIR:-/tmp}/refwatch-provision.XXXXXX")
trap 'rm -rf "$RUNDIR"' EXIT
trap 'warn "interrupted"; exit 130' INT TERM HUP
T_START=$SECONDS

fn_of() { echo "${1//-/_}"; } # source name -> function suffix

is_complete() { # is_complete LABEL
    local fn
    fn=complete_$(fn_of "${M_SRC[$1]}")
    if declare -F "$fn" >/dev/null; then "$fn" "$1"; else [[ -x ${M_PY[$1]} ]]; fi
}

# ------------------------------------------------- provision what is missing
SOURCES=()
declare -A TODO=()
for label in "${LABELS[@]}"; do
    [[ -n ${SELECTED[$label]:-} ]] || continue
    is_complete "$label" && continue
    src=${M_SRC[$label]}
    [[ -n ${TODO[$src]:-} ]] || SOURCES+=("$src")
    TODO[$src]+=" $label"
done

STEP_TIMES=()
for src in "${SOURCES[@]}"; do
    read -ra todo <<<"${TODO[$src]}"
    fn=recipe_$(fn_of "$src")
    if ! declare -F "$fn" >/dev/null; then
        for label in "${todo[@]}"; do note_fail "$label" "no recipe for source '$src' (scripts/provision/$src.sh)"; done
        continue
    fi
    say "provisioning ${todo[*]} (source $src)"
    t0=$SECONDS
    isolated "$RUNDIR/err.source.$src" "$fn" "${todo[@]}"
    STEP_TIMES+=("$src:$((SECONDS - t0))s")
    say "source $src done in $((SECONDS - t0))s"
done
rm -rf "${CACHE:?}/build/"*

# ------------------------------------------- what the tests take from PyPI
# Pinned sdists and build-dependency wheels (scripts/pypi/lock.tsv), fetched
# once and verified; the tests install from there with no index.
PYPI_OK=1
say "fetching the pinned PyPI files of scripts/pypi/lock.tsv"
run_logged pypi python3 "$HERE/pypi/fetch.py" "$CACHE/pypi/files" || PYPI_OK=0

# ----------------------------------------------------------------- results
ROWS=()
RC=0
if ((!PYPI_OK)); then
    warn "FAIL pypi: the files of scripts/pypi/lock.tsv could not all be fetched (log: $CACHE/logs/pypi.log)"
    RC=1
fi
row() { ROWS+=("$(printf '%s\t' "$@")"); }

for label in "${LABELS[@]}"; do
    status=${M_STATUS[$label]}
    src=${M_SRC[$label]}
    py=${M_PY[$label]}
    want=${M_VER[$label]}
    ver='' pkg='-' result='' note='' unavailable=''
    fn=pkgver_$(fn_of "$src")
    if is_complete "$label"; then
        ver=$(python_version "$py")
        declare -F "$fn" >/dev/null && pkg=$("$fn" "$label")
        if [[ -z $ver ]]; then
            note="$py is installed but does not run"
        elif [[ $ver != "$want" && $ver != "$want".* ]]; then
            note="version $ver, matrix.tsv expects $want"
        else
            result=OK
        fi
    elif [[ -z ${SELECTED[$label]:-} ]]; then
        result=-
        note="not in --only"
    fi
    if [[ -z $result ]]; then
        if [[ -z $note ]]; then
            for f in "reason.$label" "unavailable.$label" "err.$label" "err.source.$src"; do
                if [[ -s $RUNDIR/$f ]]; then
                    note=$(head -n 1 "$RUNDIR/$f")
                    if [[ $f == unavailable.* ]]; then
                        unavailable=1
                        note="unavailable: $note"
                    fi
                    break
                fi
            done
            [[ -n $note ]] || note="recipe '$src' did not provision it"
        fi
        case $status in
        obtainable)
            if [[ -n $unavailable ]]; then result=SKIP; else result=FAIL; fi
            ;;
        required) result=FAIL ;;
        *) result=SKIP ;;
        esac
    fi
    if [[ -n ${SELECTED[$label]:-} ]]; then
        case $result in
        OK) echo "ok $ver" ;;
        SKIP) if [[ -n $unavailable ]]; then echo "$note"; else echo "skip: $note"; fi ;;
        FAIL) echo "fail: $note" ;;
        esac >"$CACHE/status/$label"
    fi
    case $result in
    SKIP) warn "SKIP $label: $note" ;;
    FAIL)
        warn "FAIL $label ($status): $note"
        RC=1
        ;;
    esac
    row "$label" "$status" "${ver:--}" "$pkg" "$py" "$result${note:+ ($note)}"
done

# ------------------------------------------------------------------- table
{
    printf '# refwatch interpreters, provisioned %s on %s in %ss%s\n' "$(date '+%F %T %Z')" \
        "${HOSTNAME:-?}" "$((SECONDS - T_START))" "${STEP_TIMES[*]:+ (${STEP_TIMES[*]})}"
    { printf 'LABEL\tSTATUS\tVERSION\tPACKAGE\tPATH\tRESULT\t\n'; printf '%s\n' "${ROWS[@]}"; } |
        awk -F'\t' '
            { for (i = 1; i < NF; i++) { cell[NR, i] = $i; if (length($i) > w[i]) w[i] = length($i) } n = NF - 1 }
            END {
                for (r = 1; r <= NR; r++) {
                    line = ""
                    for (i = 1; i <= n; i++) line = line (i < n ? sprintf("%-" w[i] "s  ", cell[r, i]) : cell[r, i])
                    print line
                }
            }'
} >"$RUNDIR/table"
cp "$RUNDIR/table" "$CACHE/provisioned.txt.tmp"
mv "$CACHE/provisioned.txt.tmp" "$CACHE/provisioned.txt"
cat "$RUNDIR/table"
exit "$RC"
