"""The findings every kind's diff shares: unknown, drift and orphaned entries, and the
enforcement policy that decides between a change and an observe-only finding.

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
from reconciler.plan.model import FieldDiff, Finding, ObservedState, PlanEntry
from reconciler.spec import models

_ORPHAN_ACTIONS: Mapping[str, Action] = {"powerOff": Action.POWER_OFF, "delete": Action.DELETE}

Mode = Literal["enforce", "observe"]


@dataclasses.dataclass(frozen=True, slots=True)
class KindDiff:
    """The entries a kind's diff found, and the observed state they rest on (for the plan's fingerprint)."""

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


def unknown_entry(address: str, kind: str, observation: Observation | None) -> PlanEntry:
    """Nothing is planned for what could not be observed; the entry says why."""
    if observation is None:
        reason, detail = "not-attempted", "no observation was made"
    elif observation.state is ObservationState.ABSENT:
        reason, detail = "absent", "the provider found no such resource; fleet never creates hardware"
    else:
        reason = observation.reason.value if observation.reason is not None else "unknown"
        detail = observation.detail
    return PlanEntry(address, kind, Finding.UNKNOWN, reason=reason, detail=detail)


def drift_entries(
    address: str,
    kind: str,
    observation: Observation,
    applied: Mapping[str, Any],
    first_seen: Mapping[tuple[str, str], datetime],
    managed: Sequence[str],
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
                    kind,
                    Finding.DRIFT,
                    fields=(FieldDiff(name, applied[name], observation.fields[name]),),
                    reason="out-of-band",
                    detail="changed outside fleet since fleet last applied it",
                    first_seen=first_seen.get((address, name), observation.observed_at),
                )
            )
    return found


def orphan_entry(address: str, kind: str, observation: Observation | None, policy: str) -> PlanEntry:
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
        address, kind, Finding.ORPHANED, action, fields, reason=f"orphans={policy}", detail=detail
    )


def index_observations(observations: Iterable[Observation]) -> dict[str, Observation]:
    by_address: dict[str, Observation] = {}
    for observation in observations:
        if observation.address in by_address:
            # Two answers for one resource would make the plan depend on their order.
            raise ValueError(f"two observations of {observation.address}")
        by_address[observation.address] = observation
    return by_address
