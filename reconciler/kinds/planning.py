"""A Plan from what was observed: every kind's diff, the configuration's, and the waves.

Pure: the engine observes, reads what fleet last applied and the open drift from the state
store, and hands the values in; the same values always give the same Plan.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from providers.base import Observation, Observed
from reconciler.kinds import KINDS, DiffInputs, references
from reconciler.kinds.config import configured, diff_config
from reconciler.memory import collector_paused
from reconciler.plan.graph import Edge, order_entries, planned_actions
from reconciler.plan.model import ObservedState, Plan, PlanEntry
from reconciler.spec import models


@dataclasses.dataclass(frozen=True)
class Observations:
    """What one pass observed: per kind, and the configuration of the hosts it checked."""

    by_kind: Mapping[str, Observed]
    config: tuple[Observation, ...] = ()
    config_versions: Mapping[str, str] = dataclasses.field(default_factory=dict)  # by address

    def all_observations(self) -> list[Observation]:
        """One observation per resource observed (not the configuration's, nor what no spec names)."""
        return [o for observed in self.by_kind.values() for o in observed.observations]


@collector_paused()
def make_plan(
    revision: str,
    created_at: datetime,
    selected: Sequence[models.Document],
    observations: Observations,
    inputs: DiffInputs,
) -> Plan:
    """The plan of `selected` (documents of the revision) against what was observed."""
    entries: list[PlanEntry] = []
    observed: list[ObservedState] = []
    by_kind = by_kind_name(selected)
    for kind in KINDS.values():
        if not kind.provider:
            continue
        diff = kind.diff(by_kind.get(kind.name, []), observations.by_kind.get(kind.name, Observed()), inputs)
        entries.extend(diff.entries)
        observed.extend(diff.observed)
    checked = [d for d in configured(selected) if d.address in observations.config_versions]
    if checked:
        diff = diff_config(
            checked,
            observations.config,
            observations.config_versions,
            {address: record.fields for address, record in inputs.applied.items()},
            inputs.policies,
            inputs.machines,
            drift_first_seen=inputs.first_seen,
        )
        entries.extend(diff.entries)
        observed.extend(diff.observed)
    linked = (
        inputs.documents
        if inputs.referrers is None
        else linked_to(entries, inputs.documents, inputs.referrers)
    )
    ordered, waves = order(linked, entries)
    return Plan(revision, created_at, ordered, tuple(observed), waves)


def order(
    documents: Mapping[str, models.Document], entries: Sequence[PlanEntry]
) -> tuple[tuple[PlanEntry, ...], tuple[tuple[str, ...], ...]]:
    """The entries with their dependencies filled in, and the waves they apply in."""
    return order_entries(ordering_edges(documents, entries), entries)


def linked_to(
    entries: Sequence[PlanEntry], documents: Mapping[str, models.Document], referrers: Mapping[str, set[str]]
) -> dict[str, models.Document]:
    """The documents linked to the planned ones by references, either way, transitively (by
    address). A kind's edges join only documents that refer to one another, so these are the
    only documents that can order a plan: a plan of one Machine is not ordered among 100,000."""
    seen: set[str] = set()
    todo = [e.address for e in entries]
    while todo:
        address = todo.pop()
        if address in seen:
            continue
        seen.add(address)
        document = documents.get(address)
        if document is not None:
            todo.extend(references(document))
        todo.extend(referrers.get(address, ()))
    return {a: documents[a] for a in sorted(seen) if a in documents}


def ordering_edges(documents: Mapping[str, models.Document], entries: Sequence[PlanEntry]) -> list[Edge]:
    """What waits for what, as every kind says, for a plan's entries."""
    planned = planned_actions(entries)
    edges: list[Edge] = []
    by_kind = by_kind_name(documents.values())
    for kind in KINDS.values():
        edges.extend(kind.edges(by_kind.get(kind.name, []), entries, planned))
    return edges


def by_kind_name(documents: Iterable[models.Document]) -> dict[str, list[models.Document]]:
    """Documents grouped by kind, in their order."""
    grouped: dict[str, list[models.Document]] = {}
    for document in documents:
        grouped.setdefault(document.kind_name, []).append(document)
    return grouped
