"""The repo's own files at a revision (playbooks and roles) for one run: exported into a private
temporary directory that lives exactly as long as the run, whether it succeeds or fails.

An export is taken from the revision the run plans (Git's objects for a commit, a copy for a
working tree), never from a checkout that may differ or change while the run goes on.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from reconciler.errors import SourceError
from reconciler.source.snapshot import Snapshot


@contextlib.contextmanager
def exported(snapshot: Snapshot, directories: Sequence[str]) -> Iterator[Path | None]:
    """The files of `directories` ("" is the whole repo) in a fresh directory, removed on exit;
    None when there is nothing to export or the source cannot export."""
    if not directories or snapshot.export is None:
        yield None
        return
    try:
        root = Path(tempfile.mkdtemp(prefix="fleet-playbooks-"))
    except OSError as exc:
        raise SourceError(f"cannot create a directory for the playbooks: {exc.strerror}") from None
    try:
        snapshot.export(root, sorted(set(directories)))
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def directory_digest(root: Path, directory: str) -> str:
    """A hash of every file (path and content) under `root/directory`, or of that one file."""
    top = root / directory
    files = (
        sorted(p for p in top.rglob("*") if p.is_file()) if top.is_dir() else [top] if top.is_file() else []
    )
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def file_digests(root: Path, directories: Sequence[str]) -> dict[str, str]:
    """A hash of every file under `root/directory` (or that one file), for each of `directories`,
    by its path in the repo."""
    digests: dict[str, str] = {}
    for directory in directories:
        top = root / directory
        files = top.rglob("*") if top.is_dir() else [top] if top.is_file() else []
        for path in files:
            if path.is_file():
                digests[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def changed_files(before: Path, after: Path, directories: Sequence[str]) -> list[str]:
    """The files under `directories` that differ between two exports: added, removed or changed."""
    old, new = file_digests(before, directories), file_digests(after, directories)
    return sorted(path for path in old.keys() | new.keys() if old.get(path) != new.get(path))
