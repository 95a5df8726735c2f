"""What the controller follows, and what a new revision changed.

A followed source is a branch of a Git repository (fetched and resolved to a commit, then read at
that commit) or a working tree (read as it is, named by a digest of its files). Between two
revisions, the resources to reconcile at once are those whose documents changed, those whose
Ansible configuration reads a changed file, and everything that depends on them; a change to
`fleet.yaml` or a removed document asks for every pass instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path

from reconciler.kinds import kind_of
from reconciler.kinds.config import config_directories
from reconciler.source import SourceRef
from reconciler.source.snapshot import Snapshot, under
from reconciler.spec import models
from reconciler.spec.loader import LoadedRevision, revision_key
from reconciler.spec.results import FLEET_FILE


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


def file_digests(snapshot: Snapshot) -> dict[str, str]:
    return {f.path: f.blob_id for f in snapshot.files}


def changed_files(before: Mapping[str, str], after: Mapping[str, str]) -> set[str]:
    """Paths added, removed or modified between two file listings."""
    return {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}


def without_directory(paths: Iterable[str], directory: str | None) -> set[str]:
    """Repository paths as the fleet repo inside `directory` names them (others dropped)."""
    if not directory:
        return set(paths)
    prefix = directory.strip("/") + "/"
    return {p[len(prefix) :] for p in paths if p.startswith(prefix)}


def affected(before: LoadedRevision, after: LoadedRevision, changed: set[str]) -> set[str] | None:
    """The addresses of `after` to reconcile because of `changed` paths; None: every pass (the
    Fleet document changed, or a document is gone and may be an orphan now). Of a changed file,
    only the documents that are new or differ from their previous version count: editing one
    Machine of a rack's file reconciles that Machine, not the rack."""
    if FLEET_FILE in changed:
        return None
    old = {d.document.address: d.document for d in before.documents}
    new = {d.document.address: d for d in after.documents}
    if old.keys() - new.keys():
        return None
    wanted = {
        address
        for address, loaded in new.items()
        if loaded.path in changed and old.get(address) != loaded.document
    }
    for address, loaded in new.items():
        document = loaded.document
        config = getattr(getattr(document, "spec", None), "config", None)
        if isinstance(config, models.AnsibleConfig):
            directories = config_directories(config)
            if any(under(path, directories) for path in changed):
                wanted.add(address)
    return dependents(after, wanted)


def dependents(revision: LoadedRevision, addresses: set[str]) -> set[str]:
    """`addresses` and every document that refers to one of them, transitively."""
    refers: dict[str, set[str]] = {}
    for loaded in revision.documents:
        document = loaded.document
        if document.kind_name == "Fleet":
            continue
        for reference in kind_of(document).references(document):
            refers.setdefault(reference, set()).add(document.address)
    found = set(addresses)
    todo = list(addresses)
    while todo:
        for other in refers.get(todo.pop(), ()):
            if other not in found:
                found.add(other)
                todo.append(other)
    return found
