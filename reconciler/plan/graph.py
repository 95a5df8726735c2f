"""The order a plan's changes apply in: waves of addresses, dependencies first.

A hypervisor Machine comes before its VirtualMachines, member nodes before their
Cluster, a Cluster before its SparkPools; a host is powered off only after its VMs
are stopped, and a plan that would start a VM on a host it powers off is refused.
Only addresses with an action are ordered; everything else only carries dependencies.
"""

from __future__ import annotations

import dataclasses
import graphlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from providers.base import Action
from reconciler.errors import PermanentError
from reconciler.plan.model import PlanEntry, action_name
from reconciler.plan.vms import host_moves
from reconciler.spec import models

_STOPS = frozenset({Action.POWER_OFF, Action.DELETE})
_STARTS = frozenset({Action.POWER_ON, Action.POWER_CYCLE, Action.CREATE, Action.REPLACE})


def dependencies(
    documents: Sequence[models.Document], entries: Iterable[PlanEntry]
) -> dict[str, frozenset[str]]:
    """For every planned address, the planned addresses that must be done before it.

    Dependencies through resources with nothing planned still count: a SparkPool waits
    for a member node being powered on even when its Cluster has no change itself.
    """
    entries = tuple(entries)
    planned: dict[str, set[Action]] = defaultdict(set)
    for entry in entries:
        if entry.action is not None:
            planned[entry.address].add(entry.action)
    waits_for = _document_edges(documents, planned)
    for entry in entries:
        waits_for[entry.address].update(entry.depends_on)
    for address, old_host in host_moves(entries).items():
        host = f"machine/{old_host}"
        if planned.get(host, set()) & _STOPS:
            waits_for[host].add(address)  # a guest leaves (or stops on) its old host before the host stops
    return {address: _planned_predecessors(address, waits_for, planned) for address in sorted(planned)}


def waves(documents: Sequence[models.Document], entries: Iterable[PlanEntry]) -> list[tuple[str, ...]]:
    """Planned addresses in waves: everything in a wave may run at once, after the waves before it."""
    return waves_of(dependencies(documents, entries))


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
    documents: Sequence[models.Document], entries: Iterable[PlanEntry]
) -> tuple[tuple[PlanEntry, ...], tuple[tuple[str, ...], ...]]:
    """The entries with `depends_on` filled in for planned ones, and the waves they run in."""
    entries = tuple(entries)
    graph = dependencies(documents, entries)
    ordered = tuple(waves_of(graph))
    with_dependencies = tuple(
        dataclasses.replace(e, depends_on=tuple(graph[e.address])) if e.action is not None else e
        for e in entries
    )
    return with_dependencies, ordered


def _document_edges(
    documents: Sequence[models.Document], planned: Mapping[str, set[Action]]
) -> dict[str, set[str]]:
    """address -> addresses it waits for, from the references between documents."""
    waits_for: dict[str, set[str]] = defaultdict(set)
    for document in documents:
        if isinstance(document, models.VirtualMachine):
            host = f"machine/{document.spec.host}"
            host_actions = planned.get(host, set())
            vm_actions = planned.get(document.address, set())
            if host_actions & _STOPS:
                if vm_actions & _STARTS:
                    starts = ", ".join(sorted(action_name(a) for a in vm_actions & _STARTS))
                    raise PermanentError(
                        f"the plan would {starts} {document.address} on {host}, which it also powers off",
                        hint=f"set {document.address} to power off or keep {host} on",
                    )
                waits_for[host].add(document.address)  # stop the guests before their host
            else:
                waits_for[document.address].add(host)
        elif isinstance(document, models.Cluster):
            waits_for[document.address].update(member.ref for member in document.spec.members)
        elif isinstance(document, models.SparkPool):
            waits_for[document.address].add(f"cluster/{document.spec.cluster}")
    return waits_for


def _planned_predecessors(
    address: str, waits_for: Mapping[str, set[str]], planned: Mapping[str, set[Action]]
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
