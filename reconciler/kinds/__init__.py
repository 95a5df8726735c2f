"""The kinds of resource fleet manages, one module each, and the registry that finds them.

Everything that depends on the kind of a resource (its provider, diff, applied and converged
fields, ordering, description, and where its drifted fields live in its spec) is asked of its
`Kind` here; nothing else tests model types or matches address prefixes. A new kind is one
module and one line in `KINDS`.
"""

from __future__ import annotations

from collections.abc import Iterable

from reconciler.kinds import cluster, fleet, machine, sparkpool, virtualmachine
from reconciler.kinds.base import DiffInputs, Kind
from reconciler.plan.graph import Edge
from reconciler.spec import models
from reconciler.spec.diagnostics import closest
from reconciler.spec.loader import Index, LoadedRevision

KINDS: dict[str, Kind] = {
    kind.name: kind for kind in (fleet.KIND, machine.KIND, virtualmachine.KIND, cluster.KIND, sparkpool.KIND)
}
"""Every kind, in the order listings show them."""

_BY_PREFIX = {kind.name.lower(): kind for kind in KINDS.values()}


def kind_of(document: models.Document) -> Kind:
    return KINDS[document.kind_name]


def kind_names(kind: Kind) -> tuple[str, ...]:
    """What a kind may be called on the command line: `machine`, `machines`, its short names
    (`vm`) and their plurals (`vms`)."""
    names = (kind.name.lower(), *kind.short_names)
    return (*names, *(name + "s" for name in names))


def references(document: models.Document) -> Iterable[str]:
    """The addresses `document` refers to (none for the Fleet)."""
    return () if document.kind_name == "Fleet" else kind_of(document).references(document)


def referrers(revision: LoadedRevision) -> Index:
    """An address -> the documents of `revision` that refer to it: kept with the revision, and
    updated, not remade, by a one-file commit (`LoadedRevision.index`)."""
    return revision.index("kinds.referrers", references)


def kind_named(name: str) -> Kind | None:
    """The kind called `name` (Machine, machine, machines or a short name such as vm), or None."""
    wanted = name.lower()
    return next((k for k in KINDS.values() if wanted in kind_names(k)), None)


def unknown_kind_hint(name: str) -> str:
    """`did you mean 'Machine'?`, or the kinds there are."""
    spelled = {alias: kind.name for kind in KINDS.values() for alias in kind_names(kind)}
    close = closest(name.lower(), spelled)
    if close is not None:
        return f"did you mean {spelled[close]!r}?"
    shorts = ", ".join(
        f"{k.name} ({'/'.join(k.short_names)})" if k.short_names else k.name for k in KINDS.values()
    )
    return f"use one of {shorts}"


def kind_at(address: str) -> Kind | None:
    """The kind an address names (`machine/x` -> Machine), or None."""
    return _BY_PREFIX.get(address.partition("/")[0])


def managed_kinds() -> list[Kind]:
    """The kinds a provider observes and changes (every kind but the Fleet), in listing order."""
    return [kind for kind in KINDS.values() if kind.provider]


__all__ = [
    "KINDS",
    "DiffInputs",
    "Edge",
    "Kind",
    "kind_at",
    "kind_named",
    "kind_of",
    "managed_kinds",
    "references",
    "referrers",
]
