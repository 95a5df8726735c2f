"""The order a plan's changes apply in: waves of addresses, dependencies first.

The kinds say what waits for what (a hypervisor's VMs wait for its power-on, a Cluster for its
member nodes, a SparkPool for its Cluster; a host powers off only after its guests); this module
turns those edges into waves. Only addresses with an action are ordered; a dependency through a
resource with nothing planned still counts. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import graphlib
from collections import defaultdict
from collections.abc import Iterable, Mapping

from providers.base import Action
from reconciler.errors import PermanentError
from reconciler.plan.model import PlanEntry

Edge = tuple[str, str]
"""(waiter, waited for)."""


def planned_actions(entries: Iterable[PlanEntry]) -> dict[str, frozenset[Action]]:
    """Every planned address with the actions planned for it."""
    planned: dict[str, set[Action]] = defaultdict(set)
    for entry in entries:
        if entry.action is not None:
            planned[entry.address].add(entry.action)
    return {address: frozenset(actions) for address, actions in planned.items()}


def dependencies(edges: Iterable[Edge], entries: Iterable[PlanEntry]) -> dict[str, frozenset[str]]:
    """For every planned address, the planned addresses that must be done before it.

    Dependencies through resources with nothing planned still count: a SparkPool waits
    for a member node being powered on even when its Cluster has no change itself.
    """
    entries = tuple(entries)
    planned = planned_actions(entries)
    waits_for: dict[str, set[str]] = defaultdict(set)
    for waiter, waited in edges:
        waits_for[waiter].add(waited)
    for entry in entries:
        waits_for[entry.address].update(entry.depends_on)
    return {address: _planned_predecessors(address, waits_for, planned) for address in sorted(planned)}


def waves_of(graph: Mapping[str, Iterable[str]]) -> list[tuple[str, ...]]:
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for address in sorted(graph):
        sorter.add(address, *sorted(graph[address]))
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        cycle: list[str] = exc.args[1]
        raise PermanentError(
            f"the plan's dependencies form a cycle: {' -> '.join(reversed(cycle))}",
            hint="each address waits for the next; break the loop in the specs that link them",
        ) from None
    ordered: list[tuple[str, ...]] = []
    while sorter.is_active():
        ready = tuple(sorted(sorter.get_ready()))
        ordered.append(ready)
        sorter.done(*ready)
    return ordered


def order_entries(
    edges: Iterable[Edge], entries: Iterable[PlanEntry]
) -> tuple[tuple[PlanEntry, ...], tuple[tuple[str, ...], ...]]:
    """The entries with `depends_on` filled in for planned ones, and the waves they run in."""
    entries = tuple(entries)
    graph = dependencies(edges, entries)
    ordered = tuple(waves_of(graph))
    with_dependencies = tuple(
        dataclasses.replace(e, depends_on=tuple(graph[e.address])) if e.action is not None else e
        for e in entries
    )
    return with_dependencies, ordered


def _planned_predecessors(
    address: str, waits_for: Mapping[str, set[str]], planned: Mapping[str, frozenset[Action]]
) -> frozenset[str]:
    """Walk back through unplanned resources to the planned ones `address` waits for."""
    found: set[str] = set()
    seen: set[str] = set()
    stack = sorted(waits_for.get(address, ()))
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        if current in planned:
            found.add(current)
        else:
            stack.extend(sorted(waits_for.get(current, ())))
    return frozenset(found)
