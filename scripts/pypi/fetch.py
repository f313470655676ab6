#!/usr/bin/env python3
"""Fetch the files pinned in lock.tsv (beside this script) into a directory.

usage: fetch.py DEST

Each file is looked up in PyPI's simple index (the JSON form of PEP 691),
downloaded to DEST/.partial/, checked against its pinned sha256 and only then
moved into DEST: DEST holds complete, verified files only, so a reader never
sees half a file and an interrupted run resumes where it stopped. A file
already in DEST with the right hash is not fetched again. Exit status 1 names
every file that could not be fetched or verified.

Standard library only: it runs before any venv exists (the system python3).
"""

import hashlib
import json
import os
import sys
import urllib.request

INDEX = "https://pypi.org/simple"
HERE = os.path.dirname(os.path.abspath(__file__))


def pins():
    with open(os.path.join(HERE, "lock.tsv"), encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            cols = line.split("\t")
            if len(cols) != 3:
                sys.exit(f"fetch.py: lock.tsv:{n}: expected 3 tab-separated columns")
            yield cols


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def url_of(project, filename, listings):
    if project not in listings:
        req = urllib.request.Request(
            f"{INDEX}/{project}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
        )
        with urllib.request.urlopen(req, timeout=120) as r:
            listings[project] = {f["filename"]: f["url"] for f in json.load(r)["files"]}
    url = listings[project].get(filename)
    if url is None:
        raise LookupError(f"{filename} is not in the index of {project}")
    return url


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__.split("\n\n")[1])
    dest = sys.argv[1]
    partial = os.path.join(dest, ".partial")
    os.makedirs(partial, exist_ok=True)
    listings, failed, fetched = {}, [], 0
    for project, filename, digest in pins():
        path = os.path.join(dest, filename)
        if os.path.isfile(path) and sha256(path) == digest:
            continue
        tmp = os.path.join(partial, filename)
        try:
            with urllib.request.urlopen(url_of(project, filename, listings), timeout=300) as r, open(tmp, "wb") as out:
                while block := r.read(1 << 20):
                    out.write(block)
            got = sha256(tmp)
            if got != digest:
                raise ValueError(f"sha256 {got}, lock.tsv pins {digest}")
            os.replace(tmp, path)
            fetched += 1
        except Exception as e:  # noqa: BLE001 - every failure is reported the same way
            failed.append(f"{filename}: {e}")
            if os.path.exists(tmp):
                os.unlink(tmp)
    for line in failed:
        print(f"fetch.py: {line}", file=sys.stderr)
    print(f"fetch.py: {fetched} fetched, {len(failed)} failed, into {dest}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
