# shellcheck shell=bash
# Helpers shared by scripts/provision.sh and its recipes (scripts/provision/*.sh).
# Sourced, never run.  Globals set by provision.sh before sourcing recipes:
#   CACHE      ${REFWATCH_CACHE:-$HOME/.cache/refwatch}
#   RUNDIR     per-run scratch dir (reasons reported by recipes live here)
#   QUIET      1 = print only the final table and errors
#   VERBOSE    1 = stream command output too (it always goes to $CACHE/logs/)
#   M_STATUS M_PY M_VER M_BUILD M_LIB M_SRC   associative arrays: matrix columns by label

# ---------------------------------------------------------------- messages

say() { # progress line (not in --quiet); on stderr: stdout is for the table
    [[ ${QUIET:-0} == 1 ]] || printf '[provision] %s\n' "$*" >&2
}

warn() { # always shown, on stderr
    printf '[provision] %s\n' "$*" >&2
}

# run_logged LOG CMD...: run CMD with stdout+stderr appended to LOG ($CACHE/logs/LOG.log).
# On failure print the last lines of the log to stderr and return CMD's status.
run_logged() {
    local log="$CACHE/logs/$1.log" rc=0
    shift
    mkdir -p "$CACHE/logs"
    printf '\n### %s: %s\n' "$(date '+%F %T')" "$*" >>"$log"
    if [[ ${VERBOSE:-0} == 1 ]]; then
        "$@" 2>&1 | tee -a "$log" >&2 || rc=${PIPESTATUS[0]}
    else
        "$@" >>"$log" 2>&1 || rc=$?
    fi
    if ((rc != 0)); then
        warn "command failed (exit $rc): $*"
        warn "last lines of $log:"
        tail -n 25 "$log" | sed 's/^/    | /' >&2
    fi
    return "$rc"
}

# ------------------------------------------------------ recipe -> main reporting
# A recipe runs in a subshell (set -e); it tells provision.sh why a label
# could not be provisioned through files in $RUNDIR.

# isolated ERRFILE CMD...: run CMD in a subshell with errexit in force; the
# first unexpected failing command is described in ERRFILE.  Returns 0 (CMD
# reports through note_fail/note_unavailable).  Call it as a plain statement: inside
# if/while conditions or &&/|| lists bash turns errexit off for everything
# below, subshells included.
isolated() {
    local rw_errfile=$1
    shift
    set +e
    (
        set -eE
        # shellcheck disable=SC2154 # rw_rc is assigned inside the trap string
        trap 'rw_rc=$?; [[ -e $rw_errfile ]] || printf "unexpected failure (exit %s): %s [%s:%s]\n" "$rw_rc" "$BASH_COMMAND" "${BASH_SOURCE[0]##*/}" "$LINENO" >"$rw_errfile"' ERR
        "$@"
    )
    set -e
    return 0
}

# for_each_label FN LABEL...: FN LABEL for each, isolated from each other
for_each_label() {
    local fn=$1 label
    shift
    for label in "$@"; do
        isolated "$RUNDIR/err.$label" "$fn" "$label"
    done
}

note_fail() { # note_fail LABEL REASON...
    local label=$1
    shift
    printf '%s\n' "$*" >"$RUNDIR/reason.$label"
}

note_unavailable() { # note_unavailable LABEL REASON...  (no suite has it: a skip, not a failure)
    local label=$1
    shift
    printf '%s\n' "$*" >"$RUNDIR/unavailable.$label"
}

# ------------------------------------------------------------ matrix helpers

# major.minor of a label's version column ("3.9.18" -> "3.9")
label_mm() {
    local major minor _
    IFS=. read -r major minor _ <<<"${M_VER[$1]}"
    printf '%s.%s\n' "$major" "$minor"
}

is_debug_build() { [[ ${M_BUILD[$1]} == debug* ]]; }

# python_version PY: platform.python_version() of an interpreter, or nothing
python_version() {
    timeout 120 "$1" -c 'import platform; print(platform.python_version())' 2>/dev/null || true
}

# -------------------------------------------------------------- system apt

# deb_installed PKG...: true when every PKG is installed on the system
deb_installed() {
    local p st
    for p in "$@"; do
        st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
        [[ $st == installed ]] || return 1
    done
}

# ensure_debs LOG PKG...: apt-get install the missing ones (apt-get update first, once per run)
ensure_debs() {
    local log=$1 p missing=()
    shift
    for p in "$@"; do
        deb_installed "$p" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    say "installing Debian packages: ${missing[*]}"
    if [[ ! -f $RUNDIR/system-apt-updated ]]; then
        run_logged "$log" apt-get update || return 1
        : >"$RUNDIR/system-apt-updated"
    fi
    DEBIAN_FRONTEND=noninteractive run_logged "$log" apt-get install -y --no-install-recommends "${missing[@]}"
}

# -------------------------------------------------------------- private apt
# Index files of other suites (trixie, forky, sid) live under $CACHE/apt/NAME;
# the system's apt configuration, lists and caches are never touched.

# The archive URI and keyring of the system's own Debian suite
# (/etc/apt/sources.list.d/debian.sources, else /etc/apt/sources.list).
debian_mirror() {
    local f=/etc/apt/sources.list.d/debian.sources uri='' key=''
    if [[ -r $f ]]; then
        # first stanza whose URIs line is not a security/ports archive
        read -r uri key < <(awk '
            BEGIN { RS = ""; FS = "\n" }
            {
                u = ""; k = ""; s = ""
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^URIs:/)      { u = $i; sub(/^URIs:[ \t]*/, "", u); sub(/[ \t].*/, "", u) }
                    if ($i ~ /^Signed-By:/) { k = $i; sub(/^Signed-By:[ \t]*/, "", k) }
                    if ($i ~ /^Suites:/)    { s = $i }
                }
                if (u != "" && u !~ /security/ && s !~ /-security/) { print u, k; exit }
            }' "$f") || true
    fi
    if [[ -z $uri && -r /etc/apt/sources.list ]]; then
        uri=$(awk '$1 == "deb" && $2 !~ /^\[/ && $2 !~ /security/ { print $2; exit }' /etc/apt/sources.list || true)
    fi
    [[ -n $uri ]] || uri=http://deb.debian.org/debian
    [[ -n $key && -r $key ]] || key=/usr/share/keyrings/debian-archive-keyring.gpg
    printf '%s %s\n' "$uri" "$key"
}

# papt_setup NAME LINE...: write $CACHE/apt/NAME/sources.list (LINEs may say
# @URI@ and @KEY@) and set the global array PAPT (apt options for it).
papt_setup() {
    local name=$1 dir="$CACHE/apt/$1" uri key line
    shift
    read -r uri key < <(debian_mirror)
    mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
    : >"$dir/sources.list.new"
    for line in "$@"; do
        line=${line//@URI@/$uri}
        line=${line//@KEY@/$key}
        printf '%s\n' "$line" >>"$dir/sources.list.new"
    done
    if cmp -s "$dir/sources.list.new" "$dir/sources.list"; then
        rm -f "$dir/sources.list.new"
    else
        mv "$dir/sources.list.new" "$dir/sources.list"
        rm -f "$dir/updated"
    fi
    PAPT=(
        -o "Dir::Etc::SourceList=$dir/sources.list"
        -o "Dir::Etc::SourceParts=/dev/null"
        -o "Dir::Etc::Preferences=/dev/null"
        -o "Dir::Etc::PreferencesParts=/dev/null"
        -o "Dir::State::Lists=$dir/lists"
        -o "Dir::Cache=$dir/cache"
        -o "Dir::Cache::pkgcache=pkgcache.bin"
        -o "Dir::Cache::srcpkgcache=srcpkgcache.bin"
        -o "APT::Sandbox::User=root"
        -o "Acquire::Languages=none"
        -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
        -o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
        -o "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false"
        -o "Acquire::IndexTargets::deb::CNF::DefaultEnabled=false"
        -o "APT::Update::Error-Mode=any"
    )
    PAPT_NAME=$name
}

# papt_update LOG: apt-get update for the private setup, once per run
# (a list fetched during this run is not fetched again).
papt_update() {
    local dir="$CACHE/apt/$PAPT_NAME"
    [[ -f $RUNDIR/papt-updated.$PAPT_NAME ]] && return 0
    [[ -f $RUNDIR/papt-failed.$PAPT_NAME ]] && return 1
    say "apt-get update (private lists: $PAPT_NAME)"
    if ! run_logged "$1" apt-get "${PAPT[@]}" update; then
        : >"$RUNDIR/papt-failed.$PAPT_NAME"
        return 1
    fi
    date '+%F %T' >"$dir/updated"
    : >"$RUNDIR/papt-updated.$PAPT_NAME"
}

# ------------------------------------------------------------------ checks

# check_c_extension LABEL PY [INCLUDE_DIR...]: compile a trivial C extension
# the way pip does (sysconfig include dir, EXT_SUFFIX, -O2 -g) plus the extra
# include dirs, import it, call it.
check_c_extension() {
    local label=$1 py=$2 d inc suffix log="$CACHE/logs/$1-cext.log"
    shift 2
    d=$(mktemp -d "$RUNDIR/cext.XXXXXX")
    inc=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])') || return 1
    suffix=$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))') || return 1
    cat >"$d/rwprobe.c" <<'EOF'
#define PY_SSIZE_T_CLEAN
#include <Python.h>
static PyObject *pair(PyObject *self, PyObject *args) {
    PyObject *a, *b;
    if (!PyArg_ParseTuple(args, "OO", &a, &b)) return NULL;
    PyObject *t = PyTuple_New(2);
    if (!t) return NULL;
    Py_INCREF(a); PyTuple_SET_ITEM(t, 0, a);
    Py_INCREF(b); PyTuple_SET_ITEM(t, 1, b);
    return t;
}
static PyMethodDef methods[] = {{"pair", pair, METH_VARARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "rwprobe", NULL, -1, methods};
PyMODINIT_FUNC PyInit_rwprobe(void) { return PyModule_Create(&mod); }
EOF
    local args=(-shared -fPIC -O2 -g -I"$inc")
    for i in "$@"; do args+=(-I"$i"); done
    run_logged "$label-cext" gcc "${args[@]}" -o "$d/rwprobe$suffix" "$d/rwprobe.c" || {
        warn "$label: trivial C extension does not compile against $inc (log: $log)"
        return 1
    }
    run_logged "$label-cext" "$py" -c 'import sys; sys.path.insert(0, sys.argv[1]); import rwprobe; assert rwprobe.pair(1, "x") == (1, "x"); print("C extension OK")' "$d" || {
        warn "$label: trivial C extension does not import (log: $log)"
        return 1
    }
    rm -rf "$d"
}
