# shellcheck shell=bash
# Recipe for source "pyenv": the pyenv builds that come with the machine image
# (/root/.pyenv/versions/...).  python.org is unreachable, so nothing can be
# built: a missing one is reported, and (status "image") skipped loudly.

recipe_pyenv() {
    local label
    for label in "$@"; do
        note_fail "$label" "not on this image"
    done
}
