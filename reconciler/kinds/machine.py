"""Machines: physical servers, observed and changed through their BMCs (IPMI).

fleet manages a Machine's power and boot device; its hardware is observed, never enforced.
Desired Machines are compared with their observations and with what fleet last applied:
an unknown observation is never a change and never drift, and a Machine whose spec is gone
is acted on only as the orphans policy says, and only when it was observed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from providers.base import Action, Observation, ObservationState, Observed
from reconciler.kinds.base import Adoption, DiffInputs, Inexpressible, Kind, SpecChange
from reconciler.plan.findings import (
    KindDiff,
    drift_entries,
    enforcement_mode,
    index_observations,
    orphan_entry,
    unknown_entry,
)
from reconciler.plan.model import FieldDiff, Finding, ObservedState, PlanEntry
from reconciler.spec import models
from reconciler.spec.diagnostics import YamlPath

MACHINE_FIELDS: tuple[str, ...] = ("power", "bootDevice", "bootPersistent")
"""The live fields of a Machine that fleet manages (and compares for drift)."""

ADOPTABLE_FIELDS: Mapping[str, YamlPath] = {
    "power": ("spec", "power"),
    "bootDevice": ("spec", "bootDevice"),
    "bootPersistent": ("spec", "bootPersistent"),
}
"""Where each drift-reportable Machine field lives in the spec: a drift PR writes the live value
there. The BMC reports them in the spec's own terms (on/off, disk/network/cdrom/bios)."""

_FIELDS_OF_ACTION = {
    Action.POWER_ON: ("power",),
    Action.POWER_OFF: ("power",),
    Action.POWER_CYCLE: ("power",),
    Action.BOOT_DEVICE: ("bootDevice", "bootPersistent"),
}


def diff_machines(
    machines: Sequence[models.Machine],
    observations: Iterable[Observation],
    last_applied: Mapping[str, Mapping[str, Any]],
    policies: models.Policies,
    *,
    drift_first_seen: Mapping[tuple[str, str], datetime] | None = None,
) -> KindDiff:
    """Entries for every Machine spec, and for every Machine fleet applied whose spec is gone.

    `last_applied` maps an address to the field values fleet last applied to it (empty
    for a fresh fleet). `drift_first_seen` maps (address, field) to when a drift was
    first reported, from the state store; a new drift is first seen when observed.
    """
    by_address = index_observations(observations)
    first_seen = drift_first_seen or {}
    entries: list[PlanEntry] = []
    observed: list[ObservedState] = []
    for machine in machines:
        observation = by_address.get(machine.address)
        if observation is not None:
            observed.append(ObservedState.of(observation, MACHINE_FIELDS))
        if observation is None or observation.state is not ObservationState.OBSERVED:
            entries.append(unknown_entry(machine.address, "Machine", observation))
            continue
        entries.extend(_spec_entries(machine, observation, policies))
        entries.extend(
            drift_entries(
                machine.address,
                "Machine",
                observation,
                last_applied.get(machine.address, {}),
                first_seen,
                MACHINE_FIELDS,
            )
        )
    desired = {m.address for m in machines}
    for address in sorted(last_applied):
        if address.startswith("machine/") and address not in desired:
            observation = by_address.get(address)
            if observation is not None:
                observed.append(ObservedState.of(observation, MACHINE_FIELDS))
            entries.append(orphan_entry(address, "Machine", observation, policies.orphans))
    return KindDiff(tuple(entries), tuple(observed))


def _spec_entries(
    machine: models.Machine, observation: Observation, policies: models.Policies
) -> list[PlanEntry]:
    spec = machine.spec
    groups: tuple[tuple[Literal["power", "bootDevice"], Action, dict[str, Any]], ...] = (
        ("power", Action.POWER_ON if spec.power == "on" else Action.POWER_OFF, {"power": spec.power}),
        (
            "bootDevice",
            Action.BOOT_DEVICE,
            {"bootDevice": spec.bootDevice, "bootPersistent": spec.bootPersistent},
        ),
    )
    entries = []
    # One policy field governs the boot device and whether it persists: the BMC sets both at once.
    for policy_field, action, desired in groups:
        live = observation.fields
        # A field the provider did not report cannot be compared; it is not guessed.
        diffs = tuple(
            FieldDiff(name, live[name], value)
            for name, value in desired.items()
            if name in live and live[name] != value
        )
        if not diffs:
            continue
        if enforcement_mode(policies, policy_field, spec.site) == "enforce":
            entries.append(PlanEntry(machine.address, machine.kind_name, Finding.CHANGE, action, diffs))
        else:
            entries.append(
                PlanEntry(
                    machine.address,
                    machine.kind_name,
                    Finding.OBSERVE_ONLY,
                    fields=diffs,
                    reason="policy=observe",
                    detail=f"the enforcement policy only observes {policy_field} at site {spec.site}",
                )
            )
    return entries


class MachineKind(Kind):
    name = "Machine"
    short_names = ("m",)
    model = models.Machine
    provider = "Machine"
    policy_fields = ("power", "bootDevice", "config")

    def diff(self, documents: Sequence[models.Document], observed: Observed, inputs: DiffInputs) -> KindDiff:
        machines = [d for d in documents if isinstance(d, models.Machine)]
        applied = {address: dict(record.fields) for address, record in inputs.applied_of(self.name).items()}
        return diff_machines(
            machines, observed.observations, applied, inputs.policies, drift_first_seen=inputs.first_seen
        )

    def applied_fields(self, document: models.Document, entry: PlanEntry | None) -> dict[str, Any]:
        assert isinstance(document, models.Machine)
        values = document.spec.model_dump(mode="json")
        action = entry.action if entry is not None else None
        names = _FIELDS_OF_ACTION.get(action, MACHINE_FIELDS) if action is not None else MACHINE_FIELDS
        return {name: values[name] for name in names}

    def converged_fields(
        self, document: models.Document, live: Mapping[str, Any], inputs: DiffInputs
    ) -> dict[str, Any]:
        assert isinstance(document, models.Machine)
        desired = document.spec.model_dump(mode="json")
        return {
            name: desired[name]
            for name in MACHINE_FIELDS
            if live.get(name) == desired[name]
            and enforcement_mode(
                inputs.policies, "bootDevice" if name == "bootPersistent" else name, document.spec.site
            )
            == "enforce"
        }

    def site(self, document: models.Document, machines: Mapping[str, models.Machine]) -> str:
        assert isinstance(document, models.Machine)
        return document.spec.site

    def rack(self, document: models.Document, machines: Mapping[str, models.Machine]) -> str:
        assert isinstance(document, models.Machine)
        return document.spec.rack

    def where(self, document: models.Document) -> str:
        assert isinstance(document, models.Machine)
        return f"{document.spec.site}/{document.spec.rack}"

    def what(self, document: models.Document) -> str:
        assert isinstance(document, models.Machine)
        return f"{document.spec.role}, power {document.spec.power}"

    def adopt(self, document: models.Document, field: str, live: Any) -> list[Adoption]:
        path = ADOPTABLE_FIELDS.get(field)
        if path is None:
            return [
                Inexpressible(
                    f"{field!r} is not a Machine field fleet manages ({', '.join(ADOPTABLE_FIELDS)});"
                    " hardware is observed, never enforced"
                )
            ]
        return [SpecChange(path, live)]

    def observed_detail(self, fields: Mapping[str, Any]) -> str:
        if "bootDevice" not in fields:
            return ""
        return f"boot {fields['bootDevice']}{'' if fields.get('bootPersistent') else ' (once)'}"


KIND = MachineKind()
