# shellcheck shell=bash
# Recipe for source "forky": CPython X.Y (release and debug executables) from
# Debian forky's BINARY packages, unpacked (dpkg -x) into one ROOT (the matrix
# path minus /usr/bin/NAME, e.g. $CACHE/forky) and made to run on this older
# system by pointing each executable at ROOT's own loader and libraries:
#   patchelf --set-interpreter ROOT/usr/lib/<multiarch>/ld-linux-x86-64.so.2 \
#            --force-rpath --set-rpath ROOT/usr/lib/<multiarch>
# (DT_RPATH, not RUNPATH: it also applies to the extension modules' own
# dependencies, e.g. _ssl -> forky's libssl).
#
# Packages, per X.Y: FORKY_PY_PKGS below; once: FORKY_COMMON_PKGS (pip and
# setuptools wheels in ROOT/usr/share/python-wheels, for venvs); plus every
# library package (lib*, not -dev) they depend on, recursively, so that the
# interpreters never mix forky's glibc with bookworm's libraries.
# For each X.Y the first of FORKY_SUITES that has all of its packages is used
# (forky moves: 3.14 may leave it); none = the labels are "unavailable".
#
# The whole ROOT is rebuilt when any forky label is missing (every X.Y asked
# for now or installed before), in a staging dir, then swapped in.
# ROOT/.refwatch-packages lists "package version suite" of every .deb in it;
# ROOT/.refwatch-complete lists "ok NAME" for each executable that passed the
# checks (runs; imports sys, ssl, sysconfig; debug ones have
# sys.gettotalrefcount; a trivial C extension builds with
# -I<sysconfig include> -I ROOT/usr/include and imports).  No line = redone.

FORKY_SUITES=(forky sid)
FORKY_COMMON_PKGS=(python3-pip-whl python3-setuptools-whl)
# tkinter's Tcl/Tk (and X11 behind them) are not needed
FORKY_LIB_EXCLUDE='^lib(tcl|tk)[0-9]'
FORKY_MULTIARCH=x86_64-linux-gnu
FORKY_LOADER=ld-linux-x86-64.so.2

forky_py_pkgs() { # forky_py_pkgs X.Y
    local v=$1
    echo "python$v-minimal libpython$v-minimal libpython$v-stdlib python$v-dbg libpython$v-dbg" \
        "python$v-dev libpython$v-dev python$v-venv"
}

forky_root() { local py=${M_PY[$1]}; echo "${py%/usr/bin/*}"; }

complete_forky() {
    local root
    root=$(forky_root "$1")
    [[ -x ${M_PY[$1]} ]] && grep -qx "ok $(basename "${M_PY[$1]}")" "$root/.refwatch-complete" 2>/dev/null
}

pkgver_forky() {
    local root mm pkg
    root=$(forky_root "$1")
    mm=$(label_mm "$1")
    if is_debug_build "$1"; then pkg=python$mm-dbg; else pkg=python$mm-minimal; fi
    awk -v p="$pkg" '$1 == p { printf "%s %s (%s)\n", $1, $2, $3; found = 1 } END { if (!found) print "-" }' \
        "$root/.refwatch-packages" 2>/dev/null || echo -
}

forky_papt() { # forky_papt SUITE: private apt setup for SUITE, updated once per run
    papt_setup "$1" "deb [signed-by=@KEY@] @URI@ $1 main"
    papt_update forky
}

forky_show() { # forky_show SUITE PKG... -> "pkg version arch size" for each PKG the suite has
    local suite=$1
    shift
    forky_papt "$suite" || return 1
    { apt-cache "${PAPT[@]}" show --no-all-versions "$@" 2>/dev/null || true; } | awk '
        /^Package:/ { p = $2 } /^Version:/ { v = $2 } /^Architecture:/ { a = $2 } /^Size:/ { z = $2 }
        /^$/ { if (p != "") print p, v, a, z; p = "" }
        END { if (p != "") print p, v, a, z }'
}

forky_lib_closure() { # forky_lib_closure SUITE PKG... -> the library packages they need, recursively
    local suite=$1 p kind name _
    shift
    forky_papt "$suite" || return 1
    local -A seen=()
    local queue=("$@") next
    for p in "$@"; do seen[$p]=1; done
    while ((${#queue[@]})); do
        next=()
        while read -r kind name _; do
            case $kind in
            Depends: | PreDepends: | '|Depends:' | '|PreDepends:') ;;
            *) continue ;;
            esac
            name=${name%%:*}
            [[ $name == lib* && $name != *-dev && $name != libpython* ]] || continue
            if [[ $name =~ $FORKY_LIB_EXCLUDE || -n ${seen[$name]:-} ]]; then continue; fi
            seen[$name]=1
            next+=("$name")
            echo "$name"
        done < <(apt-cache "${PAPT[@]}" depends --no-recommends --no-suggests --no-conflicts \
            --no-breaks --no-replaces --no-enhances "${queue[@]}" 2>/dev/null || true)
        queue=("${next[@]}")
    done
}

recipe_forky() {
    local label root v suite s p missing ver arch size t0=$SECONDS
    local -A want_v=() v_suite=() labels_of=() pkg_suite=() pkg_ver=() pkg_arch=() pkg_size=() suites_used=() have=()
    local need=() why=() vlabels=() unreachable reason
    if [[ $(dpkg --print-architecture) != amd64 ]]; then
        for label in "$@"; do note_fail "$label" "the forky recipe knows amd64 only"; done
        return 1
    fi
    root=$(forky_root "$1")
    for label in "$@"; do
        if [[ $(forky_root "$label") != "$root" ]]; then
            note_fail "$label" "all forky entries must share one ROOT ($root), matrix says ${M_PY[$label]}"
            continue
        fi
        v=$(label_mm "$label")
        want_v[$v]=1
        labels_of[$v]+=" $label"
    done
    # versions installed before stay installed
    if [[ -f $root/.refwatch-packages ]]; then
        while read -r p _; do
            [[ $p =~ ^python([0-9]+[.][0-9]+)-minimal$ ]] && want_v[${BASH_REMATCH[1]}]=1
        done <"$root/.refwatch-packages"
    fi
    if ! ensure_debs forky patchelf; then
        for label in "$@"; do note_fail "$label" "cannot install patchelf (log: $CACHE/logs/forky.log)"; done
        return 1
    fi

    # pick a suite per version
    for v in $(printf '%s\n' "${!want_v[@]}" | sort -V); do
        why=()
        unreachable=''
        read -ra need <<<"$(forky_py_pkgs "$v")"
        for suite in "${FORKY_SUITES[@]}"; do
            if ! forky_papt "$suite"; then
                why+=("apt-get update of $suite failed")
                unreachable=1
                continue
            fi
            have=()
            while read -r p _; do have[$p]=1; done < <(forky_show "$suite" "${need[@]}")
            missing=()
            for p in "${need[@]}"; do [[ -n ${have[$p]:-} ]] || missing+=("$p"); done
            if ((${#missing[@]} == 0)); then
                v_suite[$v]=$suite
                break
            fi
            if ((${#missing[@]} == ${#need[@]})); then
                why+=("$suite has no python$v packages")
            else
                why+=("$suite lacks ${missing[*]}")
            fi
        done
        if [[ -z ${v_suite[$v]:-} ]]; then
            reason="python$v: $(printf '%s; ' "${why[@]}")"
            reason=${reason%; }
            read -ra vlabels <<<"${labels_of[$v]:-}"
            for label in "${vlabels[@]}"; do
                # unreachable is a failure; "no suite has it" is a (loud) skip
                if [[ -n $unreachable ]]; then
                    note_fail "$label" "$reason"
                else
                    note_unavailable "$label" "$reason"
                fi
            done
            [[ -n ${labels_of[$v]:-} ]] || warn "forky: python$v (installed before) is not obtainable now: $reason"
            unset "want_v[$v]"
            continue
        fi
        suites_used[${v_suite[$v]}]=1
        say "forky: python$v from ${v_suite[$v]}"
    done
    # nothing asked for can be had: leave ROOT as it is
    local any=''
    for label in "$@"; do
        [[ -n ${v_suite[$(label_mm "$label")]:-} ]] && any=1
    done
    [[ -n $any ]] || return 0

    # every package: python ones from their version's suite; libraries and
    # wheels from the newest suite in use (the last of FORKY_SUITES: sid,
    # when any version needed it)
    local libsuite=''
    for s in "${FORKY_SUITES[@]}"; do
        if [[ -n ${suites_used[$s]:-} ]]; then libsuite=$s; fi
    done
    for v in "${!want_v[@]}"; do
        for p in $(forky_py_pkgs "$v"); do pkg_suite[$p]=${v_suite[$v]}; done
    done
    for p in "${FORKY_COMMON_PKGS[@]}"; do pkg_suite[$p]=$libsuite; done
    for s in "${!suites_used[@]}"; do
        local roots=()
        for p in "${!pkg_suite[@]}"; do [[ ${pkg_suite[$p]} == "$s" ]] && roots+=("$p"); done
        ((${#roots[@]})) || continue
        while read -r p; do
            [[ -n ${pkg_suite[$p]:-} ]] || pkg_suite[$p]=$libsuite
        done < <(forky_lib_closure "$s" "${roots[@]}")
    done
    for s in "${FORKY_SUITES[@]}"; do
        local these=()
        for p in "${!pkg_suite[@]}"; do [[ ${pkg_suite[$p]} == "$s" ]] && these+=("$p"); done
        ((${#these[@]})) || continue
        while read -r p ver arch size; do
            pkg_ver[$p]=$ver
            pkg_arch[$p]=$arch
            pkg_size[$p]=$size
        done < <(forky_show "$s" "${these[@]}")
    done
    missing=()
    for p in "${!pkg_suite[@]}"; do [[ -n ${pkg_ver[$p]:-} ]] || missing+=("$p"); done
    if ((${#missing[@]})); then
        # a library only the other suite has: take it from there
        for p in "${missing[@]}"; do
            for s in "${FORKY_SUITES[@]}"; do
                [[ $s == "${pkg_suite[$p]}" ]] && continue
                read -r _ ver arch size < <(forky_show "$s" "$p") || continue
                pkg_suite[$p]=$s
                pkg_ver[$p]=$ver
                pkg_arch[$p]=$arch
                pkg_size[$p]=$size
                break
            done
            if [[ -z ${pkg_ver[$p]:-} ]]; then
                for label in "$@"; do note_fail "$label" "package $p is in none of ${FORKY_SUITES[*]}"; done
                return 1
            fi
        done
    fi

    # download what the cache lacks (apt-get download checks the hashes; a
    # cached file of the wrong size, e.g. from an interrupted run, is fetched again)
    local debdir=$CACHE/debs/forky file files=() get
    mkdir -p "$debdir"
    for s in "${FORKY_SUITES[@]}"; do
        get=()
        for p in "${!pkg_suite[@]}"; do
            [[ ${pkg_suite[$p]} == "$s" ]] || continue
            file=${p}_${pkg_ver[$p]//:/%3a}_${pkg_arch[$p]}.deb
            files+=("$file")
            if [[ -f $debdir/$file && $(stat -c %s "$debdir/$file") == "${pkg_size[$p]}" ]]; then continue; fi
            rm -f "$debdir/$file"
            get+=("$p=${pkg_ver[$p]}")
        done
        ((${#get[@]})) || continue
        say "forky: downloading ${#get[@]} packages from $s"
        forky_papt "$s"
        if ! (cd "$debdir" && run_logged forky apt-get "${PAPT[@]}" download "${get[@]}"); then
            for label in "$@"; do note_fail "$label" "apt-get download from $s failed (log: $CACHE/logs/forky.log)"; done
            return 1
        fi
    done

    # unpack into a staging ROOT, patch the executables for the final ROOT
    mkdir -p "$CACHE/build"
    local stage libdir=$root/usr/lib/$FORKY_MULTIARCH exe
    stage=$(mktemp -d "$CACHE/build/forky.XXXXXX")
    mkdir "$stage/root"
    say "forky: unpacking ${#files[@]} packages"
    for file in "${files[@]}"; do
        dpkg -x "$debdir/$file" "$stage/root"
        p=${file%%_*}
        printf '%s %s %s\n' "$p" "${pkg_ver[$p]}" "${pkg_suite[$p]}"
    done | sort >"$stage/root/.refwatch-packages"
    if [[ ! -e $stage/root/usr/lib/$FORKY_MULTIARCH/$FORKY_LOADER ]]; then
        for label in "$@"; do note_fail "$label" "the unpacked packages have no usr/lib/$FORKY_MULTIARCH/$FORKY_LOADER"; done
        rm -rf "$stage"
        return 1
    fi
    for exe in "$stage/root/usr/bin"/*; do
        [[ -f $exe && ! -L $exe && $(head -c 4 "$exe" | od -An -c | tr -d ' ') == '177ELF' ]] || continue
        run_logged forky patchelf --set-interpreter "$libdir/$FORKY_LOADER" \
            --force-rpath --set-rpath "$libdir" "$exe"
    done
    rm -rf "$root.old"
    if [[ -e $root ]]; then mv "$root" "$root.old"; fi
    mkdir -p "$(dirname "$root")"
    mv "$stage/root" "$root"
    rm -rf "$root.old" "$stage"

    # check each interpreter executable; stamp the good ones
    local name stamp=$root/.refwatch-complete ok=0
    : >"$stamp.new"
    for v in $(printf '%s\n' "${!want_v[@]}" | sort -V); do
        # Debian's postinst (py3compile) is not run by dpkg -x: byte-compile
        # the stdlib now, or every first import writes into ROOT (and is slow)
        if [[ -x $root/usr/bin/python$v ]]; then
            run_logged forky "$root/usr/bin/python$v" -m compileall -q -j0 "$root/usr/lib/python$v" ||
                warn "forky: compileall of $root/usr/lib/python$v reported errors (log: $CACHE/logs/forky.log)"
        fi
        for name in "python$v" "python${v}d"; do
            exe=$root/usr/bin/$name
            label=$name
            for p in "$@"; do [[ $(basename "${M_PY[$p]}") == "$name" ]] && label=$p; done
            if forky_check "$label" "$exe" "$root"; then
                echo "ok $name" >>"$stamp.new"
                ok=$((ok + 1))
            fi
        done
    done
    mv "$stamp.new" "$stamp"
    # the cache keeps only the .debs now in ROOT
    for file in "$debdir"/*.deb; do
        [[ -e $file ]] || continue
        grep -qxF "$(basename "$file")" < <(printf '%s\n' "${files[@]}") || rm -f "$file"
    done
    say "forky: $ok interpreters ready in $root ($((SECONDS - t0))s)"
}

forky_check() { # forky_check LABEL EXE ROOT
    local label=$1 exe=$2 root=$3 out
    if [[ ! -x $exe ]]; then
        note_fail "$label" "$exe is not in the packages"
        return 1
    fi
    if ! out=$("$exe" -c 'import sys, ssl, sysconfig; print(sys.version.split()[0])' 2>&1); then
        note_fail "$label" "$exe does not run: ${out//$'\n'/ }"
        return 1
    fi
    if [[ $exe == *d ]] && ! "$exe" -c 'import sys; sys.gettotalrefcount' 2>/dev/null; then
        note_fail "$label" "$exe has no sys.gettotalrefcount"
        return 1
    fi
    # Debian's include/pythonX.Y/pyconfig.h includes <MULTIARCH/pythonX.Y/pyconfig.h>,
    # which is under ROOT/usr/include, not the system's /usr/include
    if ! check_c_extension "$label" "$exe" "$root/usr/include"; then
        note_fail "$label" "a trivial C extension does not build/import with -I $root/usr/include (log: $CACHE/logs/$label-cext.log)"
        return 1
    fi
}
