"""What a new revision changed: the resources to reconcile (or to plan, for a pull request)
because of the paths that changed between two revisions.

Those are the resources whose documents changed, those whose Ansible configuration reads a changed
file, and everything that depends on them; a change to `fleet.yaml` or a removed document means
every resource instead. The controller reconciles them when a revision comes into force; a pull
request's plan covers them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

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


# Indexes of a revision kept with it (`LoadedRevision.derived`): key -> the addresses of the
# documents that have it.
_REFERS = "changes.refers"  # an address -> the documents that refer to it
_READERS = "changes.config-readers"  # a directory -> the documents whose configuration reads it

Index = dict[str, set[str]]


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
    old, new = before.by_address, after.by_address
    if old.keys() - new.keys():
        return None
    touched_before = [d.document for d in before.documents if d.path in changed]
    touched_after = [d.document for d in after.documents if d.path in changed]
    wanted = set()
    for document in touched_after:
        previous = old.get(document.address)
        if previous is None or previous.document != document:
            wanted.add(document.address)
    readers = _moved(before, after, _READERS, touched_before, touched_after, _config_directories)
    for directory, addresses in readers.items():
        if any(under(path, [directory]) for path in changed):
            wanted |= addresses
    _moved(before, after, _REFERS, touched_before, touched_after, _references)
    return dependents(after, wanted)


def dependents(revision: LoadedRevision, addresses: set[str]) -> set[str]:
    """`addresses` and every document that refers to one of them, transitively."""
    refers = revision.derived(_REFERS, lambda: _whole(revision, _references))
    found = set(addresses)
    todo = list(addresses)
    while todo:
        for other in refers.get(todo.pop(), ()):
            if other not in found:
                found.add(other)
                todo.append(other)
    return found


def _references(document: models.Document) -> Iterable[str]:
    if document.kind_name == "Fleet":
        return ()
    return kind_of(document).references(document)


def _config_directories(document: models.Document) -> Iterable[str]:
    config = getattr(getattr(document, "spec", None), "config", None)
    return config_directories(config) if isinstance(config, models.AnsibleConfig) else ()


def _whole(revision: LoadedRevision, keys: Callable[[models.Document], Iterable[str]]) -> Index:
    index: Index = {}
    for loaded in revision.documents:
        for key in keys(loaded.document):
            index.setdefault(key, set()).add(loaded.document.address)
    return index


def _moved(
    before: LoadedRevision,
    after: LoadedRevision,
    name: str,
    touched_before: Sequence[models.Document],
    touched_after: Sequence[models.Document],
    keys: Callable[[models.Document], Iterable[str]],
) -> Index:
    """`after`'s index `name`: `before`'s, taken from it (asked again, `before` makes its own
    anew) and updated with the documents of the changed files; made whole when `before` has none."""
    if name in after.memo:
        index: Index = after.memo[name]
        return index
    taken: Index | None = before.memo.pop(name, None)
    if taken is None:
        return after.derived(name, lambda: _whole(after, keys))
    for document in touched_before:
        for key in keys(document):
            holders = taken.get(key)
            if holders is not None:
                holders.discard(document.address)
                if not holders:
                    del taken[key]
    for document in touched_after:
        for key in keys(document):
            taken.setdefault(key, set()).add(document.address)
    return after.derived(name, lambda: taken)
