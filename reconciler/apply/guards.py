"""The guards a plan passes before anything is applied: blast radius, change windows, and a
saved plan that no longer holds.

Each guard raises a PermanentError naming the rule and what to do, before a lease is taken or
an action recorded; none of them changes anything.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from providers.base import Action
from reconciler.errors import PermanentError
from reconciler.kinds import kind_of
from reconciler.plan.model import Plan
from reconciler.spec import models
from reconciler.spec.loader import LoadedRevision


class BlastRadiusExceeded(PermanentError):
    """A plan changes more than the blast-radius policy allows in one run."""


class OutsideChangeWindow(PermanentError):
    """No change window of the fleet policy is open now."""


class StalePlan(PermanentError):
    """A saved plan no longer matches the revision or the live state it was made from."""


_DISRUPTIVE = frozenset({Action.POWER_OFF, Action.POWER_CYCLE, Action.DELETE, Action.REPLACE})


def _rack(document: models.Document) -> Iterable[str]:
    if isinstance(document, models.Machine):
        return (f"{document.spec.site}/{document.spec.rack}",)
    return ()


def _nodes(document: models.Document) -> Iterable[str]:
    return (m.ref for m in document.spec.members) if isinstance(document, models.Cluster) else ()


@dataclasses.dataclass(frozen=True)
class BlastIndex:
    """What the blast radius weighs a plan against: every rack's Machines and every Cluster's
    nodes. Indexes kept with the revision (a plan of one Machine looks at its rack and its
    clusters, not at the whole fleet, and a one-file commit updates them, not remakes them)."""

    racks: Mapping[str, set[str]]  # "site/rack" -> its Machines' addresses
    clusters: Mapping[str, set[str]]  # a node's address -> the Clusters it is a member of
    documents: Mapping[str, models.Document]  # every document but the Fleet, by address

    @classmethod
    def of(cls, revision: LoadedRevision) -> BlastIndex:
        return cls(
            revision.index("guards.racks", _rack),
            revision.index("guards.cluster-nodes", _nodes),
            revision.resources,
        )


def check_blast_radius(plan: Plan, index: BlastIndex, policy: models.BlastRadius) -> None:
    """Refuse plans over the policy, naming the rule; `--allow-destructive` skips this check."""
    changes = [e for e in plan.changes() if e.action in _DISRUPTIVE or e.reason == "restart"]
    power_offs = [e for e in changes if e.action is Action.POWER_OFF]
    if len(power_offs) > policy.maxPowerOffsPerRun:
        raise BlastRadiusExceeded(
            f"the plan powers off {len(power_offs)} machines and VMs; blastRadius.maxPowerOffsPerRun is "
            f"{policy.maxPowerOffsPerRun}",
            hint="narrow it with --target/-l, or pass --allow-destructive if this is intended",
        )
    hit_addresses = {e.address for e in changes}
    if not hit_addresses:
        return
    hit_racks = {key for a in hit_addresses if a in index.documents for key in _rack(index.documents[a])}
    for key in sorted(hit_racks, key=lambda k: k.split("/", 1)):
        site, rack = key.split("/", 1)
        members = index.racks[key]
        hit = [a for a in members if a in hit_addresses]
        if len(hit) * 100 > policy.maxRackPercent * len(members):
            raise BlastRadiusExceeded(
                f"the plan disrupts {len(hit)} of {len(members)} machines in rack {site}/{rack}; "
                f"blastRadius.maxRackPercent is {policy.maxRackPercent}%",
                hint="apply the rack in smaller steps, or pass --allow-destructive if this is intended",
            )
    clusters = {c for a in hit_addresses for c in index.clusters.get(a, ())}
    for address in sorted(clusters):
        cluster = index.documents[address]
        assert isinstance(cluster, models.Cluster)
        nodes = [m.ref for m in cluster.spec.members]
        hit = [n for n in nodes if n in hit_addresses]
        if len(hit) * 100 > policy.maxClusterNodePercent * len(nodes):
            raise BlastRadiusExceeded(
                f"the plan disrupts {len(hit)} of {len(nodes)} nodes of cluster "
                f"{cluster.metadata.name}; "
                f"blastRadius.maxClusterNodePercent is {policy.maxClusterNodePercent}%",
                hint="apply in smaller steps, or pass --allow-destructive if this is intended",
            )


def check_change_windows(
    fleet: models.Fleet,
    documents: Sequence[models.Document],
    machines: Mapping[str, models.Machine],
    now: datetime,
) -> None:
    """Refuse when a site the documents live at (a VM's is its host's) has change windows and
    none is open `now` (UTC)."""
    windows = fleet.spec.policies.changeWindows
    if not windows:
        return
    sites = {kind_of(d).site(d, machines) for d in documents} - {""}
    day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[now.weekday()]
    clock = now.strftime("%H:%M")
    for site in sorted(sites):
        applicable = [w for w in windows if not w.sites or site in w.sites]
        if applicable and not any(day in w.days and w.start <= clock < w.end for w in applicable):
            names = ", ".join(w.name for w in applicable)
            raise OutsideChangeWindow(
                f"site {site} is outside its change windows ({names}) at {day} {clock} UTC",
                hint="wait for the window, or use `fleet reconcile --now --emergency` for an emergency",
            )


def check_saved_plan(saved: Plan, fresh: Plan) -> None:
    """A saved plan is applied only while its revision and the observations it rests on hold."""
    if saved.revision != fresh.revision:
        raise StalePlan(
            f"the plan was made at revision {saved.revision}, the repo is now at {fresh.revision}",
            hint="run `fleet plan` again and review the new plan",
        )
    fresh_observed = {o.address: o for o in fresh.observed}
    moved = sorted(o.address for o in saved.observed if fresh_observed.get(o.address) != o)
    if moved:
        raise StalePlan(
            f"live state changed since the plan was made: {', '.join(moved[:5])}"
            + (f" and {len(moved) - 5} more" if len(moved) > 5 else ""),
            hint="run `fleet plan` again and review the new plan",
        )
