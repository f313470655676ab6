# shellcheck shell=bash
# Recipe for source "trixie-src": CPython built from Debian trixie's SOURCE
# package pythonX.Y (its upstream tarball; Debian's patches are not applied),
# with configure flags from the matrix's build/libpython columns:
#   build      words joined by "+": debug -> --with-pydebug,
#              trace -> --with-trace-refs, ft -> --disable-gil, release -> none
#   libpython  shared -> --enable-shared + rpath to PREFIX/lib
# PREFIX is the matrix path minus /bin/NAME.  Built in $CACHE/build, installed
# with DESTDIR into a staging tree, then moved into place; PREFIX/.refwatch-complete
# is written last (no stamp = not provisioned: redone on the next run).
# Also keeps the source's Doc/data/refcounts.dat as $CACHE/refcounts-X.Y.dat.

TRIXIE_BUILD_DEPS=(build-essential libssl-dev zlib1g-dev libffi-dev libbz2-dev
    liblzma-dev libsqlite3-dev libreadline-dev uuid-dev)

trixie_prefix() { dirname "$(dirname "${M_PY[$1]}")"; }

complete_trixie_src() {
    local prefix
    prefix=$(trixie_prefix "$1")
    [[ -x ${M_PY[$1]} && -f $prefix/.refwatch-complete && -f $CACHE/refcounts-$(label_mm "$1").dat ]]
}

pkgver_trixie_src() {
    local prefix
    prefix=$(trixie_prefix "$1")
    awk '$1 == "source" { printf "src:%s %s (%s)\n", $2, $3, $4; found = 1 } END { if (!found) print "-" }' \
        "$prefix/.refwatch-complete" 2>/dev/null || echo -
}

# trixie_configure_flags LABEL PREFIX
trixie_configure_flags() {
    local label=$1 prefix=$2 word words
    IFS=+ read -ra words <<<"${M_BUILD[$label]}"
    for word in "${words[@]}"; do
        case $word in
        release) ;;
        debug) echo --with-pydebug ;;
        trace) echo --with-trace-refs ;;
        ft) echo --disable-gil ;;
        *)
            warn "$label: unknown build word '$word' in matrix.tsv"
            return 1
            ;;
        esac
    done
    if [[ ${M_LIB[$label]} == shared ]]; then
        echo --enable-shared
        echo "LDFLAGS=-Wl,-rpath,$prefix/lib"
    fi
}

# trixie_fetch_source LABEL SRCPKG SRCDIR: prints the .dsc path to use
trixie_fetch_source() {
    local label=$1 pkg=$2 srcdir=$3 ver dsc
    papt_setup trixie-src "deb-src [signed-by=@KEY@] @URI@ trixie main"
    if papt_update "$label" &&
        ver=$(apt-cache "${PAPT[@]}" showsrc --only-source "$pkg" 2>/dev/null | awk '/^Version:/ { print $2; exit }') &&
        [[ -n $ver ]]; then
        dsc="$srcdir/${pkg}_${ver#*:}.dsc"
        # apt-get source keeps files already there whose hashes match
        say "downloading source package $pkg $ver (trixie)"
        if (cd "$srcdir" && run_logged "$label" apt-get "${PAPT[@]}" source --download-only "$pkg=$ver") && [[ -f $dsc ]]; then
            echo "$dsc"
            return 0
        fi
    fi
    # offline: fall back on a source downloaded by an earlier run
    dsc=$(find "$srcdir" -maxdepth 1 -name "${pkg}_*.dsc" -printf '%T@ %p\n' | sort -rn | awk 'NR == 1 { print $2 }')
    [[ -n $dsc ]] || return 1
    warn "$label: could not reach trixie's source index; using the cached $dsc"
    echo "$dsc"
}

recipe_trixie_src() { for_each_label trixie_build_one "$@"; }

trixie_build_one() {
    local label=$1 mm pkg prefix srcdir dsc orig ver build top stage flags=() t0
    mm=$(label_mm "$label")
    pkg=python$mm
    prefix=$(trixie_prefix "$label")
    srcdir=$CACHE/src/trixie
    mkdir -p "$srcdir" "$CACHE/build"
    t0=$SECONDS

    mapfile -t flags < <(trixie_configure_flags "$label" "$prefix") || true
    if ! dsc=$(trixie_fetch_source "$label" "$pkg" "$srcdir"); then
        note_fail "$label" "cannot download trixie's source package $pkg (log: $CACHE/logs/$label.log)"
        return 1
    fi
    ver=$(awk '/^Version:/ { print $2; exit }' "$dsc")
    orig=$(awk '/^Files:/ { f = 1; next } /^[^ ]/ { f = 0 } f && $3 ~ /[.]orig[.]tar[.]/ { print $3; exit }' "$dsc")
    if [[ -z $orig || ! -f $srcdir/$orig ]]; then
        note_fail "$label" "$dsc names no upstream tarball that was downloaded ($orig)"
        return 1
    fi
    if ! ensure_debs "$label" "${TRIXIE_BUILD_DEPS[@]}"; then
        note_fail "$label" "cannot install the build dependencies (log: $CACHE/logs/$label.log)"
        return 1
    fi

    build=$(mktemp -d "$CACHE/build/$label.XXXXXX")
    say "$label: unpacking $orig"
    tar -xf "$srcdir/$orig" -C "$build"
    top=$(find "$build" -mindepth 1 -maxdepth 1 -type d | head -n 1)
    if [[ ! -f $top/configure || ! -f $top/Doc/data/refcounts.dat ]]; then
        note_fail "$label" "$orig has no configure or no Doc/data/refcounts.dat"
        rm -rf "$build"
        return 1
    fi
    # the bundled pip wheel (Lib/ensurepip/_bundled) makes ensurepip work offline
    if ! compgen -G "$top/Lib/ensurepip/_bundled/pip-*.whl" >/dev/null; then
        flags+=(--with-ensurepip=no)
    fi
    stage=$build/stage
    say "$label: building $pkg $ver (configure ${flags[*]}; log: $CACHE/logs/$label-build.log)"
    if ! (cd "$top" &&
        run_logged "$label-build" ./configure --prefix="$prefix" "${flags[@]}" &&
        run_logged "$label-build" make -j"$(nproc)" &&
        run_logged "$label-build" make install DESTDIR="$stage"); then
        note_fail "$label" "build of $pkg $ver failed (log: $CACHE/logs/$label-build.log)"
        rm -rf "$build"
        return 1
    fi
    if [[ ! -x $stage$prefix/bin/$(basename "${M_PY[$label]}") ]]; then
        note_fail "$label" "make install produced no $stage$prefix/bin/$(basename "${M_PY[$label]}")"
        rm -rf "$build"
        return 1
    fi

    # move into place: the previous (incomplete) install goes away first
    rm -rf "$prefix.old"
    if [[ -e $prefix ]]; then mv "$prefix" "$prefix.old"; fi
    mkdir -p "$(dirname "$prefix")"
    mv "$stage$prefix" "$prefix"
    rm -rf "$prefix.old"
    cp "$top/Doc/data/refcounts.dat" "$CACHE/refcounts-$mm.dat.tmp"
    mv "$CACHE/refcounts-$mm.dat.tmp" "$CACHE/refcounts-$mm.dat"
    rm -rf "$build"

    # checks before the stamp
    if ! "${M_PY[$label]}" -c 'import sys, ssl, sysconfig; print(sys.version)' >/dev/null 2>&1; then
        note_fail "$label" "${M_PY[$label]} does not run or lacks ssl"
        return 1
    fi
    if is_debug_build "$label" && ! "${M_PY[$label]}" -c 'import sys; sys.gettotalrefcount' 2>/dev/null; then
        note_fail "$label" "${M_PY[$label]} has no sys.gettotalrefcount (not a debug build)"
        return 1
    fi
    if [[ ${M_BUILD[$label]} == *trace* ]] && ! "${M_PY[$label]}" -c 'import sys; sys.getobjects(0)' 2>/dev/null; then
        note_fail "$label" "${M_PY[$label]} has no sys.getobjects (not a trace-refs build)"
        return 1
    fi
    if ! check_c_extension "$label" "${M_PY[$label]}"; then
        note_fail "$label" "a trivial C extension does not build/import (log: $CACHE/logs/$label-cext.log)"
        return 1
    fi
    printf 'source %s %s trixie\nconfigure %s\nbuilt %s in %ss\n' \
        "$pkg" "$ver" "${flags[*]}" "$(date '+%F %T')" "$((SECONDS - t0))" >"$prefix/.refwatch-complete"
    say "$label: installed in $((SECONDS - t0))s"
}
