"""What fleet knows about one kind of resource, in one place.

A `Kind` says which provider observes and changes its resources, how its desired documents
compare with what was observed and with what fleet last applied (its diff), which fields an
action applied and which observed fields count as converged, which other resources it waits
for in a plan's waves, how it is described to people, and which drifted fields a spec edit can
adopt (the live value written back into the spec, for drift pull requests). The engine, the executor and the
renderers ask the registry (`reconciler.kinds`) instead of testing types; adding a kind means
writing one module and registering it there. Everything here is pure: no I/O, no clock.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar

from providers.base import Action, Observed
from reconciler.plan.findings import KindDiff
from reconciler.plan.graph import Edge
from reconciler.plan.model import PlanEntry
from reconciler.spec import models
from reconciler.spec.diagnostics import YamlPath
from reconciler.state import Applied


@dataclasses.dataclass(frozen=True, slots=True)
class SpecChange:
    """Write `value` at `path` of a document (from its root: `("spec", "power")`) to adopt a live
    value; `reconciler.spec.edit.REMOVE` deletes the key. `quantity` marks a Kubernetes quantity
    (written in the spec's own unit). `what` names the part of a plan field it adopts when the
    field stands for several values (`label zone`), else ""."""

    path: YamlPath
    value: Any
    quantity: bool = False
    what: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Inexpressible:
    """A drifted value no spec edit can adopt, with the one-line reason a drift PR shows."""

    reason: str
    what: str = ""


Adoption = SpecChange | Inexpressible


@dataclasses.dataclass(frozen=True)
class DiffInputs:
    """What a kind's diff needs besides its documents and their observations."""

    fleet: models.Fleet
    documents: Mapping[str, models.Document]  # every document of the revision, by address
    applied: Mapping[str, Applied]  # what fleet last applied, by address
    first_seen: Mapping[tuple[str, str], datetime]  # open drift: when each (address, field) was first seen
    whole_fleet: bool  # nothing was filtered out: resources fleet applied whose specs are gone are orphans
    # Every Machine of `documents` by name, when the caller already holds that map (the revision
    # keeps it): a plan of one Machine need not walk 100,000 documents for it.
    known_machines: Mapping[str, models.Machine] | None = None
    # Every address of `documents` -> the documents that refer to it, when the caller holds that
    # index (kinds.referrers): the plan is then ordered among the documents linked to it only.
    referrers: Mapping[str, set[str]] | None = None

    @property
    def policies(self) -> models.Policies:
        return self.fleet.spec.policies

    @functools.cached_property
    def machines(self) -> Mapping[str, models.Machine]:
        """Every Machine of the revision, by name."""
        if self.known_machines is not None:
            return self.known_machines
        return {d.metadata.name: d for d in self.documents.values() if isinstance(d, models.Machine)}

    @functools.cached_property
    def _applied_by_kind(self) -> Mapping[str, Mapping[str, Applied]]:
        grouped: dict[str, dict[str, Applied]] = {}
        for address, record in self.applied.items():
            grouped.setdefault(address.partition("/")[0], {})[address] = record
        return grouped

    def applied_of(self, kind: str) -> Mapping[str, Applied]:
        """What fleet last applied to resources of `kind`."""
        return self._applied_by_kind.get(kind.lower(), {})


class Kind:
    """One kind of resource. Subclasses override what applies to them; the defaults do nothing."""

    name: ClassVar[str]
    # What people may type for it besides the name and its plural (`vm` for VirtualMachine).
    short_names: ClassVar[tuple[str, ...]] = ()
    model: ClassVar[type[models.Document]]
    # The provider registry key of the provider that observes and changes it; "" when none does.
    provider: ClassVar[str] = ""
    # The fields of `policies.enforcement` that govern it (enforced, or only observed).
    policy_fields: ClassVar[tuple[str, ...]] = ()

    @property
    def prefix(self) -> str:
        """How its addresses start: `machine/`."""
        return f"{self.name.lower()}/"

    def diff(self, documents: Sequence[models.Document], observed: Observed, inputs: DiffInputs) -> KindDiff:
        """Entries for every desired document (and for what fleet applied whose spec is gone)."""
        return KindDiff((), ())

    def site(self, document: models.Document, machines: Mapping[str, models.Machine]) -> str:
        """The site a resource lives at ("" when it has none), given the fleet's Machines by name."""
        return ""

    def rack(self, document: models.Document, machines: Mapping[str, models.Machine]) -> str:
        """The rack a resource lives in ("" when it has none), given the fleet's Machines by name."""
        return ""

    def nested_under(self, document: models.Document) -> str | None:
        """The address of the resource it runs on (a VM's host, a SparkPool's Cluster), or None."""
        return None

    def references(self, document: models.Document) -> Iterable[str]:
        """The addresses of the documents this one names (a VM's host, a Cluster's members)."""
        return ()

    def precheck(
        self, everything: Mapping[str, models.Document], selected: Sequence[models.Document]
    ) -> None:
        """Refuse a plan of `selected` before anything is observed (PermanentError)."""

    def applied_fields(self, document: models.Document, entry: PlanEntry | None) -> dict[str, Any]:
        """The managed fields an entry's action applied (all of them when `entry` is None), as
        JSON values. Only what fleet actually set counts as applied, so that it can never be
        reported as drift."""
        return {}

    def converged_fields(
        self, document: models.Document, live: Mapping[str, Any], inputs: DiffInputs
    ) -> dict[str, Any]:
        """The enforced fields that were observed as the spec says (recorded as applied)."""
        return {}

    def edges(
        self,
        documents: Sequence[models.Document],
        entries: Sequence[PlanEntry],
        planned: Mapping[str, frozenset[Action]],
    ) -> Iterable[Edge]:
        """What waits for what among this kind's resources and those they reference (by default,
        each waits for what it references). Raises PermanentError for a plan that cannot be
        ordered safely."""
        return ((d.address, ref) for d in documents for ref in self.references(d))

    def where(self, document: models.Document) -> str:
        """Where it is, for a listing (`nyc1/r01`, `host nyc1-r01-01`)."""
        return ""

    def what(self, document: models.Document) -> str:
        """What it is, for a listing (`hypervisor, power on`)."""
        return ""

    def observed_detail(self, fields: Mapping[str, Any]) -> str:
        """The few live fields worth a column in an observation listing."""
        return ""

    def adopt(self, document: models.Document, field: str, live: Any) -> list[Adoption]:
        """The spec changes that make the plan field `field` of `document` take its `live` value
        (the value a drift entry reports), or why that cannot be expressed in the spec. One plan
        field may stand for several values (a Node's labels): one entry each."""
        return [Inexpressible(f"fleet reports no drift of {self.name} fields")]
