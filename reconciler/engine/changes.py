"""What a new revision changed: the resources to reconcile (or to plan, for a pull request)
because of the paths that changed between two revisions.

Those are the resources whose documents changed, those whose Ansible configuration reads a changed
file, and everything that depends on them; a change to `fleet.yaml` or a removed document means
every resource instead. The controller reconciles them when a revision comes into force; a pull
request's plan covers them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from reconciler.kinds import referrers
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


# Indexes of a revision kept with it (`LoadedRevision.index`): key -> the addresses of the
# documents that have it.
_READERS = "changes.config-readers"  # a directory -> the documents whose configuration reads it


def affected(before: LoadedRevision, after: LoadedRevision, changed: set[str]) -> set[str] | None:
    """The addresses of `after` to reconcile because of `changed` paths; None: every pass (the
    Fleet document changed, or a document is gone and may be an orphan now). Of a changed file,
    only the documents that are new or differ from their previous version count: editing one
    Machine of a rack's file reconciles that Machine, not the rack.

    Only the documents of changed files differ between the two (valid) revisions, so the
    indexes this needs are `before`'s, moved over to `after` and updated with those documents:
    a one-file commit costs what the file holds, not what the fleet holds."""
    if FLEET_FILE in changed:
        return None
    edit = after.edit.of(before) if after.edit is not None else None
    if edit is not None:  # `after` was loaded from `before`: the load knows what changed
        if {d.address for d in edit.before} - {d.address for d in edit.after}:
            return None
        touched_after: Iterable[models.Document] = edit.after
    else:
        if before.by_address.keys() - after.by_address.keys():
            return None
        touched_after = [d.document for d in after.documents if d.path in changed]
    old = before.by_address
    wanted = set()
    for document in touched_after:
        previous = old.get(document.address)
        if previous is None or previous.document != document:
            wanted.add(document.address)
    for directory, addresses in after.index(_READERS, _config_directories).items():
        if any(under(path, [directory]) for path in changed):
            wanted |= addresses
    return dependents(after, wanted)


def dependents(revision: LoadedRevision, addresses: set[str]) -> set[str]:
    """`addresses` and every document that refers to one of them, transitively."""
    refers = referrers(revision)
    found = set(addresses)
    todo = list(addresses)
    while todo:
        for other in refers.get(todo.pop(), ()):
            if other not in found:
                found.add(other)
                todo.append(other)
    return found


def _config_directories(document: models.Document) -> Iterable[str]:
    config = getattr(getattr(document, "spec", None), "config", None)
    return config_directories(config) if isinstance(config, models.AnsibleConfig) else ()
