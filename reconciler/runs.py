"""The main job behind `fleet apply`, `fleet drift` and `fleet reconcile --now`.

Each run plans, guards (blast radius, change windows, stale saved plans), takes the
per-resource leases, applies through the executor and leaves a complete audit record in
the state store, whether it succeeds, fails or is interrupted. Printing belongs to the
CLI; this module reports through callbacks and return values.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from providers.base import Provider, ProviderContext
from providers.registry import config_provider, provider_for
from reconciler.apply.executor import (
    CONFIG_PROVIDER,
    ApplyReport,
    Outcome,
    check_blast_radius,
    documents_by_address,
    execute,
    provider_key,
    summarise,
)
from reconciler.errors import PermanentError, UsageError
from reconciler.plan.diff import MACHINE_FIELDS, enforcement_mode
from reconciler.plan.kube import converged_kube_fields
from reconciler.plan.model import Finding, ObservedState, Plan, spec_hash
from reconciler.plan.vms import converged_vm_fields
from reconciler.spec import models
from reconciler.state import LockHolder, StateStore, current_operator

LEASE_SECONDS = 3600.0


class StalePlan(PermanentError):
    """A saved plan no longer matches the revision or the live state it was made from."""


class OutsideChangeWindow(PermanentError):
    """No change window of the fleet policy is open now."""


@dataclasses.dataclass(frozen=True)
class RunOptions:
    kind: str = "apply"  # apply / reconcile
    reason: str | None = None
    incident: str | None = None
    emergency: bool = False
    allow_destructive: bool = False
    break_lock: bool = False
    lock_wait_seconds: float = 0.0
    parallel: int = 16


def owner_name() -> str:
    return f"{current_operator()}@{socket.gethostname()}:{os.getpid()}"


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


def check_change_windows(fleet: models.Fleet, documents: Sequence[models.Document], now: datetime) -> None:
    windows = fleet.spec.policies.changeWindows
    if not windows:
        return
    sites = {d.spec.site for d in documents if isinstance(d, models.Machine)}
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


@contextmanager
def stop_on_interrupt() -> Iterator[threading.Event]:
    """Ctrl-C sets the event (new changes stop starting); a second Ctrl-C is ignored while
    running changes finish, so the audit record stays complete."""
    stop = threading.Event()
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, previous)


@dataclasses.dataclass(frozen=True)
class RunResult:
    run_id: int
    plan: Plan
    report: ApplyReport | None
    broken_locks: tuple[LockHolder, ...] = ()


def apply_plan(
    plan: Plan,
    documents: Sequence[models.Document],
    context: ProviderContext,
    store: StateStore,
    options: RunOptions,
    *,
    on_outcome: Callable[[Outcome], None] | None = None,
    on_wait: Callable[[float, Sequence[LockHolder]], None] | None = None,
    now: datetime | None = None,
) -> RunResult:
    """Guard, lease, apply and record one plan. Raises before anything changes when a guard refuses."""
    changes = plan.changes()
    by_address = documents_by_address(documents)
    if not options.emergency:
        if not options.allow_destructive:
            check_blast_radius(plan, by_address, context.fleet.spec.policies.blastRadius)
        if changes and options.kind == "reconcile":
            # Change windows bind the emergency path and (later) the controller; a person's
            # `fleet apply` is the reviewed, deliberate change the windows exist to schedule.
            check_change_windows(
                context.fleet,
                [by_address[e.address] for e in changes if e.address in by_address],
                now or datetime.now(UTC),
            )
    run_id = store.start_run(
        options.kind,
        current_operator(),
        reason=options.reason,
        incident=options.incident,
        revision=plan.revision,
        emergency=options.emergency,
    )
    status = "failed"
    try:
        if not changes:
            record_converged(plan, documents, context.fleet, store, run_id)
            status = "succeeded"
            return RunResult(run_id, plan, None)
        addresses = sorted({e.address for e in changes})
        with store.acquire_locks(
            addresses,
            owner_name(),
            run_id,
            LEASE_SECONDS,
            wait_seconds=options.lock_wait_seconds,
            break_lock=options.break_lock,
            on_wait=on_wait,
        ) as leases:
            providers: dict[str, Provider] = {}
            try:
                for key in sorted({provider_key(e) for e in changes}):
                    providers[key] = (
                        config_provider(context)
                        if key == CONFIG_PROVIDER
                        else provider_for(_kind_name(key), context)
                    )
                with stop_on_interrupt() as stop:
                    report = execute(
                        plan,
                        by_address,
                        providers,
                        store,
                        run_id,
                        parallel=options.parallel,
                        stop=stop,
                        report=on_outcome,
                    )
            finally:
                for provider in providers.values():
                    provider.close()
            status = "interrupted" if report.interrupted else ("succeeded" if report.ok else "failed")
            if not report.interrupted:
                record_converged(plan, documents, context.fleet, store, run_id)
            return RunResult(run_id, plan, report, tuple(leases.broken))
    finally:
        summary: dict[str, Any] = {"plan": plan.summary(), "fingerprint": plan.fingerprint()}
        store.finish_run(run_id, status, summary)


def record_converged(
    plan: Plan, documents: Sequence[models.Document], fleet: models.Fleet, store: StateStore, run_id: int
) -> int:
    """Resources already as specified count as applied, so a later out-of-band change to them
    is drift. Only enforced fields that were observed equal to the spec are recorded."""
    busy = {
        e.address
        for e in plan.entries
        if e.action is not None or e.finding in (Finding.UNKNOWN, Finding.UNMANAGED)
    }
    by_address = documents_by_address(documents)
    applied = store.get_applied([o.address for o in plan.observed])
    recorded = 0
    for observed in plan.observed:
        document = by_address.get(observed.address)
        if observed.address in busy or observed.state.value != "observed" or document is None:
            continue
        fields = _converged_fields(document, dict(observed.fields), fleet, by_address)
        previous = applied.get(observed.address)
        merged = {**(previous.fields if previous is not None else {}), **fields}
        if fields and (previous is None or previous.fields != merged):
            store.set_applied(observed.address, plan.revision, spec_hash(document), merged, run_id)
            recorded += 1
    return recorded


def _converged_fields(
    document: models.Document,
    live: dict[str, Any],
    fleet: models.Fleet,
    by_address: Mapping[str, models.Document],
) -> dict[str, Any]:
    """The enforced fields of a resource that were observed as its spec says."""
    policies = fleet.spec.policies
    if "config" in live:
        # A configuration check mode fully verified as in sync counts as applied at its version.
        config = live["config"]
        if config.get("inSync") and not config.get("notVerifiable") and config.get("version"):
            return {"config": config["version"]}
        return {}
    if isinstance(document, models.Machine):
        desired = document.spec.model_dump(mode="json")
        return {
            name: desired[name]
            for name in MACHINE_FIELDS
            if live.get(name) == desired[name]
            and enforcement_mode(
                policies, "bootDevice" if name == "bootPersistent" else name, document.spec.site
            )
            == "enforce"
        }
    if isinstance(document, models.VirtualMachine):
        host = by_address.get(f"machine/{document.spec.host}")
        site = host.spec.site if isinstance(host, models.Machine) else ""
        return converged_vm_fields(document, live, policies, site)
    if isinstance(document, models.Cluster | models.SparkPool):
        return converged_kube_fields(live)
    return {}


def _kind_name(kind: str) -> str:
    for name in models.KINDS:
        if name.lower() == kind.lower():
            return name
    raise UsageError(f"unknown kind {kind!r}")


def _is_config(observed: ObservedState) -> bool:
    return any(name == "config" for name, _ in observed.fields)


def record_drift(plan: Plan, store: StateStore, at: datetime) -> None:
    """Open or refresh a finding per drifted field; resolve the ones that no longer drift."""
    drifted: set[tuple[str, str]] = set()
    for entry in plan.with_finding(Finding.DRIFT):
        for field in entry.fields:
            store.record_drift(entry.address, field.field, field.before, field.after, at)
            drifted.add((entry.address, field.field))
    # A finding is resolved only by an observation of its own kind: a host's configuration
    # (Ansible) and its other fields (BMC, hypervisor, API server) are observed separately.
    observed = {o.address for o in plan.observed if o.state.value == "observed" and not _is_config(o)}
    configs = {o.address for o in plan.observed if o.state.value == "observed" and _is_config(o)}
    for finding in store.open_drift(sorted(observed | configs)):
        seen = configs if finding.field.startswith("config/") else observed
        if finding.address in seen and (finding.address, finding.field) not in drifted:
            store.resolve_drift(finding.address, finding.field, at)


def summary_of(result: RunResult) -> dict[str, int]:
    return summarise(result.report) if result.report is not None else {}


__all__ = [
    "LEASE_SECONDS",
    "OutsideChangeWindow",
    "RunOptions",
    "RunResult",
    "StalePlan",
    "apply_plan",
    "check_change_windows",
    "check_saved_plan",
    "record_drift",
    "summary_of",
]
