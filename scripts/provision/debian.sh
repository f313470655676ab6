# shellcheck shell=bash
# Recipes for sources "debian" and "debian-dbg": the system's own Debian
# interpreters (/usr/bin/pythonX.Y, /usr/bin/pythonX.Yd) and their -dev/-venv
# packages, installed with the system's apt-get.

debian_pkgs() { # debian_pkgs LABEL: the Debian packages an entry needs
    local mm
    mm=$(label_mm "$1")
    case ${M_SRC[$1]} in
    debian) echo "python$mm python$mm-dev python$mm-venv" ;;
    debian-dbg) echo "python$mm-dbg python$mm-dev" ;;
    esac
}

complete_debian() {
    local pkgs
    read -ra pkgs <<<"$(debian_pkgs "$1")"
    [[ -x ${M_PY[$1]} ]] && deb_installed "${pkgs[@]}"
}
complete_debian_dbg() { complete_debian "$@"; }

recipe_debian() {
    local label pkgs
    for label in "$@"; do
        read -ra pkgs <<<"$(debian_pkgs "$label")"
        if ! ensure_debs "$label" "${pkgs[@]}"; then
            note_fail "$label" "apt-get install ${pkgs[*]} failed (log: $CACHE/logs/$label.log)"
            continue
        fi
        if [[ ! -x ${M_PY[$label]} ]]; then
            note_fail "$label" "${pkgs[*]} installed but ${M_PY[$label]} does not exist"
            continue
        fi
        # Debian's include dir has a pyconfig.h that includes the multiarch
        # one from /usr/include/<multiarch>/: the compiler finds it by default.
        check_c_extension "$label" "${M_PY[$label]}" ||
            note_fail "$label" "a trivial C extension does not build/import (log: $CACHE/logs/$label-cext.log)"
    done
}
recipe_debian_dbg() { recipe_debian "$@"; }

pkgver_debian() {
    local pkgs
    read -ra pkgs <<<"$(debian_pkgs "$1")"
    dpkg-query -W -f='${Version}' "${pkgs[0]}" 2>/dev/null || echo -
}
pkgver_debian_dbg() { pkgver_debian "$@"; }
