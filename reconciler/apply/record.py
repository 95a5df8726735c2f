"""What a run leaves in the state store: every action before and after it runs, what was applied,
what was found converged, and the drift findings.

The audit trail is written as things happen: an action is on disk (and its lease checked, in the
same transaction) before its provider is called, and its end is written as soon as it ends.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from providers.base import Action
from reconciler.kinds import DiffInputs, kind_of
from reconciler.kinds.config import applied_config, converged_config
from reconciler.plan.model import Finding, ObservedState, Plan, PlanEntry, action_name, spec_hash
from reconciler.spec import models
from reconciler.state import StateStore


def applied_fields(document: models.Document, entry: PlanEntry | None = None) -> dict[str, Any]:
    """The managed fields an entry's action applied (all of them when `entry` is None)."""
    if entry is not None and entry.action is Action.CONFIGURE:
        return applied_config(entry)
    return kind_of(document).applied_fields(document, entry)


@dataclasses.dataclass(frozen=True)
class Recorder:
    """The audit of one run: `fence` is its lease token (None when it acts on nothing)."""

    store: StateStore
    run_id: int
    revision: str
    fence: str | None = None

    def start(self, entry: PlanEntry) -> int:
        """Record the action as pending, under the run's lease; raises LockLost when it is gone."""
        return self.store.start_action(
            self.run_id, entry.address, _name(entry), _before(entry), fence=self.fence
        )

    def finish(self, action_id: int, result: str, message: str, after: Any = None) -> None:
        self.store.finish_action(action_id, result, after, message)

    def never_started(self, entry: PlanEntry, result: str, message: str) -> None:
        """An action that was skipped or not started (the audit shows the whole plan)."""
        action_id = self.store.start_action(self.run_id, entry.address, _name(entry), _before(entry))
        self.store.finish_action(action_id, result, None, message)

    def applied(self, entry: PlanEntry, document: models.Document | None) -> Any:
        """Record what a succeeded action applied; returns the `after` of its audit record."""
        if document is None:
            # An orphan fleet acted on: a deleted one is forgotten; a stopped one stays known as off.
            if entry.action is Action.DELETE:
                self.store.forget_applied(entry.address)
            return {"power": "off"} if entry.action is Action.POWER_OFF else {}
        after = applied_fields(document, entry)
        previous = self.store.get_applied([entry.address]).get(entry.address)
        merged = {**(previous.fields if previous is not None else {}), **after}
        self.store.set_applied(entry.address, self.revision, spec_hash(document), merged, self.run_id)
        return after

    def interrupt_pending(self, message: str) -> None:
        self.store.interrupt_pending(self.run_id, message)


def _name(entry: PlanEntry) -> str:
    assert entry.action is not None
    return action_name(entry.action)


def _before(entry: PlanEntry) -> dict[str, Any]:
    return {f.field: f.before for f in entry.fields}


def record_converged(plan: Plan, inputs: DiffInputs, store: StateStore, run_id: int) -> int:
    """Resources already as specified count as applied, so a later out-of-band change to them
    is drift. Only enforced fields that were observed equal to the spec are recorded."""
    busy = {
        e.address
        for e in plan.entries
        if e.action is not None or e.finding in (Finding.UNKNOWN, Finding.UNMANAGED)
    }
    applied = store.get_applied([o.address for o in plan.observed])
    recorded = 0
    for observed in plan.observed:
        document = inputs.documents.get(observed.address)
        if observed.address in busy or observed.state.value != "observed" or document is None:
            continue
        live = dict(observed.fields)
        fields = (
            converged_config(live)
            if _is_config(observed)
            else kind_of(document).converged_fields(document, live, inputs)
        )
        previous = applied.get(observed.address)
        merged = {**(previous.fields if previous is not None else {}), **fields}
        if fields and (previous is None or previous.fields != merged):
            store.set_applied(observed.address, plan.revision, spec_hash(document), merged, run_id)
            recorded += 1
    return recorded


def _is_config(observed: ObservedState) -> bool:
    return any(name == "config" for name, _ in observed.fields)


def record_drift(plan: Plan, store: StateStore, at: datetime) -> None:
    """Open or refresh a finding per drifted field; resolve the ones that no longer drift. The
    observe-only fields that differ from their spec are kept apart (not drift: fleet never
    applied them), with when each was first seen, for drift reports."""
    drifted: set[tuple[str, str]] = set()
    for entry in plan.with_finding(Finding.DRIFT):
        for field in entry.fields:
            store.record_drift(entry.address, field.field, field.before, field.after, at)
            drifted.add((entry.address, field.field))
    differing = {(e.address, f.field) for e in plan.with_finding(Finding.OBSERVE_ONLY) for f in e.fields}
    looked_at = {o.address for o in plan.observed if o.state.value == "observed" and not _is_config(o)}
    store.note_differences(differing, looked_at, at)
    # A finding is resolved only by an observation of its own kind: a host's configuration
    # (Ansible) and its other fields (BMC, hypervisor, API server) are observed separately.
    observed = {o.address for o in plan.observed if o.state.value == "observed" and not _is_config(o)}
    configs = {o.address for o in plan.observed if o.state.value == "observed" and _is_config(o)}
    for finding in store.open_drift(sorted(observed | configs)):
        seen = configs if finding.field.startswith("config/") else observed
        if finding.address in seen and (finding.address, finding.field) not in drifted:
            store.resolve_drift(finding.address, finding.field, at)
