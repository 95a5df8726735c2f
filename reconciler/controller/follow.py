"""What the controller follows: a branch of a Git repository (fetched and resolved to a commit,
then read at that commit) or a working tree (read as it is, named by a digest of its files). What
a new revision changed is `reconciler.engine.changes`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from reconciler.source import SourceRef
from reconciler.source.snapshot import Snapshot
from reconciler.spec.loader import revision_key


@dataclasses.dataclass(frozen=True)
class Followed:
    """A working tree (`path`), or `branch` of the Git repository `repo` (a path or URL), with the
    fleet repo in `directory` of it (a monorepo)."""

    path: Path | None = None
    repo: str | None = None
    branch: str = "main"
    directory: str | None = None

    def describe(self) -> str:
        if self.repo is None:
            return f"working tree {self.path or Path('.')}"
        inside = f" ({self.directory})" if self.directory else ""
        return f"{self.repo} branch {self.branch}{inside}"

    def at(self, commit: str | None) -> SourceRef:
        """The source a run reads: the repo pinned at `commit`, or the working tree."""
        if self.repo is None:
            return SourceRef(self.path)
        return SourceRef(None, self.repo, commit, self.directory)


def revision_id(snapshot: Snapshot) -> str:
    """The commit, or for a working tree a digest of its files (what changes when a file does)."""
    return snapshot.commit or f"worktree-{revision_key(snapshot)[:16]}"
