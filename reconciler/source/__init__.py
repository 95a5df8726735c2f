"""Where fleet repo files come from: a working tree, or a Git revision read without checkout.

A `Snapshot` lists the YAML files of a repo at one point in time with their Git
blob ids, so callers can cache by content. Only `git.py` talks to pygit2.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from reconciler.errors import UsageError
from reconciler.source.snapshot import Snapshot


@dataclasses.dataclass(frozen=True)
class SourceRef:
    """Which revision of which fleet repo: a working tree `path` (uncommitted edits included), or
    a Git `repo` (a path or URL) at `rev` (a branch, tag, commit or expression; default HEAD)."""

    path: Path | None = None
    repo: str | None = None
    rev: str | None = None
    # The fleet repo's directory inside `repo` (a monorepo), as Flux's and Argo CD's `path`.
    directory: str | None = None

    def describe(self) -> str:
        if self.repo is not None:
            where = f":{self.directory}" if self.directory else ""
            return f"{self.repo}@{self.rev or 'HEAD'}{where}"
        return str(self.path or Path("."))


def open_snapshot(ref: SourceRef, cache_dir: Path) -> Snapshot:
    """The repo at the revision `ref` names. URLs are cloned once into `cache_dir/repos`."""
    if ref.repo is not None and ref.path is not None:
        raise UsageError("give either PATH or --repo, not both")
    if ref.rev is not None and ref.repo is None:
        raise UsageError("--rev needs --repo", hint="e.g. --repo . --rev main")
    if ref.directory is not None and ref.repo is None:
        raise UsageError("--path needs --repo", hint="for a working tree, give its directory as PATH")
    if ref.repo is not None:
        from reconciler.source.git import read_revision

        return read_revision(ref.repo, ref.rev or "HEAD", cache_dir, ref.directory or "")
    from reconciler.source.worktree import read_worktree

    return read_worktree(ref.path or Path("."))
