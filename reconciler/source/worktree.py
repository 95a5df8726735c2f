"""Read the YAML files of a working tree, uncommitted edits included.

Symlinks are followed only while they stay inside the repo; one that leaves it is
reported and never read. Blob ids are Git's, so the same content caches the same
way whether it comes from a working tree or from a commit.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path

from reconciler.errors import SourceError
from reconciler.source.snapshot import (
    Snapshot,
    SourceFile,
    SourceProblem,
    is_yaml_path,
    stat_named,
    under,
)


def git_blob_id(data: bytes) -> str:
    digest = hashlib.sha1(b"blob %d\x00" % len(data), usedforsecurity=False)
    digest.update(data)
    return digest.hexdigest()


def read_worktree(root: Path) -> Snapshot:
    mode = stat_named(root, f"no such directory: {root}", "pass the path of a fleet repo").st_mode
    if not stat.S_ISDIR(mode):
        raise SourceError(f"{root} is not a directory", hint="pass the directory that holds fleet.yaml")
    real_root = root.resolve()
    files: list[SourceFile] = []
    problems: list[SourceProblem] = []
    contents: dict[str, bytes] = {}
    for directory, dirnames, filenames in os.walk(real_root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in sorted(filenames):
            absolute = Path(directory, filename)
            relative = absolute.relative_to(real_root).as_posix()
            if not is_yaml_path(relative):
                continue
            if absolute.is_symlink():
                try:
                    target = absolute.resolve(strict=True)
                except (OSError, RuntimeError):
                    problems.append(
                        SourceProblem(
                            relative,
                            "symlink-broken",
                            "symlink points to nothing or loops",
                            "fix or remove the symlink",
                        )
                    )
                    continue
                if not target.is_relative_to(real_root):
                    problems.append(
                        SourceProblem(
                            relative,
                            "symlink-escape",
                            f"symlink points outside the repo (to {os.readlink(absolute)})",
                            "replace the symlink with the file itself, inside the repo",
                        )
                    )
                    continue
                if not target.is_file():
                    problems.append(
                        SourceProblem(
                            relative,
                            "symlink-broken",
                            "symlink points to nothing",
                            "fix or remove the symlink",
                        )
                    )
                    continue
            if not stat.S_ISREG(absolute.stat().st_mode):
                problems.append(
                    SourceProblem(
                        relative,
                        "file-unreadable",
                        "not a regular file (a pipe, socket or device)",
                        "remove it; specs are plain files",
                    )
                )
                continue
            try:
                data = absolute.read_bytes()
            except OSError as exc:
                problems.append(
                    SourceProblem(
                        relative,
                        "file-unreadable",
                        f"cannot read file: {exc.strerror}",
                        "fix its permissions",
                    )
                )
                continue
            contents[relative] = data
            files.append(SourceFile(relative, git_blob_id(data), len(data)))

    def read(entry: SourceFile) -> bytes:
        return contents[entry.path]

    def export(destination: Path, prefixes: Sequence[str]) -> None:
        _export(real_root, destination, prefixes)

    return Snapshot(
        f"working tree {root}", tuple(files), tuple(problems), read, root=str(real_root), export=export
    )


def _export(root: Path, destination: Path, prefixes: Sequence[str]) -> None:
    """Copy the working tree's files under `prefixes` (hidden directories left out), as they
    are now, so a run sees one consistent copy even while someone edits the tree."""
    for directory, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in filenames:
            source = Path(directory, filename)
            relative = source.relative_to(root).as_posix()
            if not under(relative, prefixes):
                continue
            try:
                if source.is_symlink() and not source.resolve().is_relative_to(root):
                    continue
                if not source.is_file():
                    continue
                target = destination / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
            except OSError as exc:
                raise SourceError(f"cannot copy {relative}: {exc.strerror}") from None
