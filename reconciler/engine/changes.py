"""What a new revision changed: the resources to reconcile (or to plan, for a pull request)
because of the paths that changed between two revisions.

Those are the resources whose documents changed, those whose Ansible configuration reads a changed
file, and everything that depends on them; a change to `fleet.yaml` or a removed document means
every resource instead. The controller reconciles them when a revision comes into force; a pull
request's plan covers them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from reconciler.kinds import kind_of
from reconciler.kinds.config import config_directories
from reconciler.source.snapshot import Snapshot, under
from reconciler.spec import models
from reconciler.spec.loader import LoadedRevision
from reconciler.spec.results import FLEET_FILE


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
