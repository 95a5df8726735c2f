"""Make a Plan for a fleet repo: observe the selected resources, read what fleet last applied
from the state store, diff, and order the changes.

Building a plan reads live state and the store; it never changes either. Only Machines
have a provider so far; other kinds take part in ordering only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from providers.base import ProviderContext
from reconciler.plan.diff import diff_machines
from reconciler.plan.graph import order_entries
from reconciler.plan.model import Plan
from reconciler.plan.observe import observe_documents
from reconciler.spec import models
from reconciler.state import ObservationRecord, StateStore


def build_plan(
    documents: Sequence[models.Document],
    selected: Sequence[models.Document],
    context: ProviderContext,
    store: StateStore,
    revision: str,
    *,
    whole_fleet: bool,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Plan:
    """`selected` are the resources to plan; `whole_fleet` says nothing was filtered out,
    so resources fleet applied before whose specs are gone are reported as orphaned."""
    machines = [d for d in selected if isinstance(d, models.Machine)]
    observations = observe_documents(machines, context)
    # The store keeps the last observation of every resource (what the controller and PR
    # comments show between passes); unknown ones are kept too, with their reason.
    store.save_observations(
        [
            ObservationRecord(
                o.address,
                o.state.value,
                {k: v for k, v in o.fields.items() if k != "inventory"},
                o.reason.value if o.reason else None,
                o.observed_at,
            )
            for o in observations
        ]
    )
    addresses = [m.address for m in machines]
    applied = store.get_applied(None if whole_fleet else addresses)
    last_applied = {
        address: record.fields
        for address, record in applied.items()
        if address.startswith("machine/") and (whole_fleet or address in addresses)
    }
    first_seen = {(d.address, d.field): d.first_seen for d in store.open_drift(addresses)}
    diff = diff_machines(
        machines, observations, last_applied, context.fleet.spec.policies, drift_first_seen=first_seen
    )
    entries, waves = order_entries(documents, diff.entries)
    return Plan(revision, clock(), entries, diff.observed, waves)
