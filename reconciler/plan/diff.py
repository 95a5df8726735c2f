"""Machine plan entries: desired Machines against their observations and what fleet last applied.

Pure functions over values, with no I/O and no clock: the same inputs always give the
same entries. An unknown observation is never a change and never drift, and nothing
here ever plans an action for a resource it could not observe.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from providers.base import Action, Observation, ObservationState
from reconciler.plan.model import FieldDiff, Finding, ObservedState, PlanEntry, kind_of
from reconciler.spec import models

MACHINE_FIELDS: tuple[str, ...] = ("power", "bootDevice", "bootPersistent")
"""The live fields of a Machine that fleet manages (and compares for drift)."""

_ORPHAN_ACTIONS: Mapping[str, Action] = {"powerOff": Action.POWER_OFF, "delete": Action.DELETE}

Mode = Literal["enforce", "observe"]


@dataclasses.dataclass(frozen=True, slots=True)
class MachineDiff:
    """The entries found, and the observed state they rest on (for the plan's fingerprint)."""

    entries: tuple[PlanEntry, ...]
    observed: tuple[ObservedState, ...]


def enforcement_mode(policies: models.Policies, field: str, site: str) -> Mode:
    """Whether `field` is enforced or only observed at `site`.

    A rule naming the site beats a rule for all sites; when rules equally specific
    disagree, observe wins, because observing can never do harm. No rule: enforce.
    """
    matching = [r for r in policies.enforcement if r.field == field and (not r.sites or site in r.sites)]
    chosen = [r for r in matching if r.sites] or matching
    if not chosen:
        return "enforce"
    return "observe" if any(r.mode == "observe" for r in chosen) else "enforce"


def diff_machines(
    machines: Sequence[models.Machine],
    observations: Iterable[Observation],
    last_applied: Mapping[str, Mapping[str, Any]],
    policies: models.Policies,
    *,
    drift_first_seen: Mapping[tuple[str, str], datetime] | None = None,
) -> MachineDiff:
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
            entries.append(unknown_entry(machine.address, observation))
            continue
        entries.extend(_spec_entries(machine, observation, policies))
        entries.extend(
            drift_entries(machine.address, observation, last_applied.get(machine.address, {}), first_seen)
        )
    desired = {m.address for m in machines}
    for address in sorted(last_applied):
        if address.startswith("machine/") and address not in desired:
            observation = by_address.get(address)
            if observation is not None:
                observed.append(ObservedState.of(observation, MACHINE_FIELDS))
            entries.append(orphan_entry(address, observation, policies.orphans))
    return MachineDiff(tuple(entries), tuple(observed))


def unknown_entry(address: str, observation: Observation | None) -> PlanEntry:
    """Nothing is planned for what could not be observed; the entry says why."""
    if observation is None:
        reason, detail = "not-attempted", "no observation was made"
    elif observation.state is ObservationState.ABSENT:
        reason, detail = "absent", "the provider found no such resource; fleet never creates hardware"
    else:
        reason = observation.reason.value if observation.reason is not None else "unknown"
        detail = observation.detail
    return PlanEntry(address, kind_of(address), Finding.UNKNOWN, reason=reason, detail=detail)


def drift_entries(
    address: str,
    observation: Observation,
    applied: Mapping[str, Any],
    first_seen: Mapping[tuple[str, str], datetime],
    managed: Sequence[str] = MACHINE_FIELDS,
) -> list[PlanEntry]:
    """One entry per managed field whose live value is no longer what fleet last applied."""
    if observation.state is not ObservationState.OBSERVED:
        return []  # unknown is never drift
    found = []
    for name in managed:
        if name in applied and name in observation.fields and observation.fields[name] != applied[name]:
            found.append(
                PlanEntry(
                    address,
                    kind_of(address),
                    Finding.DRIFT,
                    fields=(FieldDiff(name, applied[name], observation.fields[name]),),
                    reason="out-of-band",
                    detail="changed outside fleet since fleet last applied it",
                    first_seen=first_seen.get((address, name), observation.observed_at),
                )
            )
    return found


def orphan_entry(address: str, observation: Observation | None, policy: str) -> PlanEntry:
    """A resource fleet applied before whose spec is gone: acted on only as the policy says,
    and only when it was observed, since an unobserved machine is never powered off blind."""
    action = _ORPHAN_ACTIONS.get(policy)
    fields: tuple[FieldDiff, ...] = ()
    detail = f"its spec was removed; the orphans policy is {policy}"
    if action is not None:
        if observation is None or observation.state is ObservationState.UNKNOWN:
            action, detail = None, detail + ", but it was not observed, so nothing is done"
        elif observation.state is ObservationState.ABSENT:
            action, detail = None, detail + ", and it is already gone"
        elif action is Action.POWER_OFF:
            live = observation.fields.get("power")
            if live == "off":
                action, detail = None, detail + ", and it is already off"
            else:
                fields = (FieldDiff("power", live, "off"),)
    return PlanEntry(
        address, kind_of(address), Finding.ORPHANED, action, fields, reason=f"orphans={policy}", detail=detail
    )


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


def index_observations(observations: Iterable[Observation]) -> dict[str, Observation]:
    by_address: dict[str, Observation] = {}
    for observation in observations:
        if observation.address in by_address:
            # Two answers for one resource would make the plan depend on their order.
            raise ValueError(f"two observations of {observation.address}")
        by_address[observation.address] = observation
    return by_address
