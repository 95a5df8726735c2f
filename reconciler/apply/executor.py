"""Apply a Plan: its changes in waves, under budgets, each recorded before and after it runs.

A wave starts only when the one before it has ended; inside a wave at most `parallel`
changes run at once (providers add their own per-rack and per-power-domain budgets).
A failed change fails alone: the rest go on, and what depends on it is skipped. When
asked to stop (Ctrl-C), no new change starts, running ones finish or time out, and the
unfinished ones are recorded as interrupted. Nothing here decides *what* to change.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

from providers.base import Action, ApplyResult, BatchProvider, Provider
from reconciler.errors import FleetError, PermanentError, TemporaryError
from reconciler.plan.config import VERSION_FIELD
from reconciler.plan.diff import MACHINE_FIELDS
from reconciler.plan.kube import applied_kube_fields
from reconciler.plan.model import Finding, Plan, PlanEntry, action_name, spec_hash
from reconciler.plan.vms import desired_fields, restart_fields
from reconciler.spec import models
from reconciler.state import StateStore


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    address: str
    action: str
    result: str  # succeeded / failed / skipped / interrupted
    message: str
    seconds: float = 0.0
    changed: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class ApplyReport:
    run_id: int
    outcomes: tuple[Outcome, ...]
    interrupted: bool

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(o.result == "succeeded" for o in self.outcomes)

    def count(self, result: str) -> int:
        return sum(1 for o in self.outcomes if o.result == result)


class BlastRadiusExceeded(PermanentError):
    """A plan changes more than the blast-radius policy allows in one run."""


def check_blast_radius(
    plan: Plan, documents: Mapping[str, models.Document], policy: models.BlastRadius
) -> None:
    """Refuse plans over the policy, naming the rule; `--allow-destructive` skips this check."""
    disruptive = {Action.POWER_OFF, Action.POWER_CYCLE, Action.DELETE, Action.REPLACE}
    changes = [e for e in plan.changes() if e.action in disruptive or e.reason == "restart"]
    power_offs = [e for e in changes if e.action is Action.POWER_OFF]
    if len(power_offs) > policy.maxPowerOffsPerRun:
        raise BlastRadiusExceeded(
            f"the plan powers off {len(power_offs)} machines; blastRadius.maxPowerOffsPerRun is "
            f"{policy.maxPowerOffsPerRun}",
            hint="narrow it with --target/-l, or pass --allow-destructive if this is intended",
        )
    racks: dict[tuple[str, str], list[str]] = {}
    for document in documents.values():
        if isinstance(document, models.Machine):
            racks.setdefault((document.spec.site, document.spec.rack), []).append(document.address)
    for (site, rack), members in sorted(racks.items()):
        hit = [e for e in changes if e.address in members]
        if hit and len(hit) * 100 > policy.maxRackPercent * len(members):
            raise BlastRadiusExceeded(
                f"the plan disrupts {len(hit)} of {len(members)} machines in rack {site}/{rack}; "
                f"blastRadius.maxRackPercent is {policy.maxRackPercent}%",
                hint="apply the rack in smaller steps, or pass --allow-destructive if this is intended",
            )
    for document in documents.values():
        if isinstance(document, models.Cluster):
            nodes = [m.ref for m in document.spec.members]
            hit = [e for e in changes if e.address in nodes]
            if hit and len(hit) * 100 > policy.maxClusterNodePercent * len(nodes):
                raise BlastRadiusExceeded(
                    f"the plan disrupts {len(hit)} of {len(nodes)} nodes of cluster "
                    f"{document.metadata.name}; "
                    f"blastRadius.maxClusterNodePercent is {policy.maxClusterNodePercent}%",
                    hint="apply in smaller steps, or pass --allow-destructive if this is intended",
                )


_FIELDS_OF_ACTION = {
    Action.POWER_ON: ("power",),
    Action.POWER_OFF: ("power",),
    Action.POWER_CYCLE: ("power",),
    Action.BOOT_DEVICE: ("bootDevice", "bootPersistent"),
}


def applied_fields(document: models.Document, entry: PlanEntry | None = None) -> dict[str, Any]:
    """The managed fields an entry's action applied (all of them when `entry` is None), as
    JSON values.

    Only what fleet actually set counts as applied: a field the policy only observes was
    never applied, and a VM field waiting for a restart is not live yet, so neither can
    ever be reported as drift."""
    action = entry.action if entry is not None else None
    if entry is not None and action is Action.CONFIGURE:
        # The configuration's version, when it changed; a repaired drift keeps the one applied.
        versions = [f.after for f in entry.fields if f.field == VERSION_FIELD]
        return {"config": versions[0]} if versions else {}
    if isinstance(document, models.Machine):
        values = document.spec.model_dump(mode="json")
        names = _FIELDS_OF_ACTION.get(action, MACHINE_FIELDS) if action is not None else MACHINE_FIELDS
        return {name: values[name] for name in names}
    if isinstance(document, models.VirtualMachine):
        desired = desired_fields(document)
        if entry is None or action in (Action.CREATE, Action.REPLACE):
            return desired
        if action in (Action.POWER_ON, Action.POWER_OFF):
            return {"power": desired["power"]}
        changed = {d.field for d in entry.fields} - restart_fields(entry)
        return {name: desired[name] for name in changed if name in desired}
    if isinstance(document, models.Cluster | models.SparkPool) and entry is not None:
        return applied_kube_fields(document, entry)
    return {}


Reporter = Callable[[Outcome], None]


def execute(
    plan: Plan,
    documents: Mapping[str, models.Document],
    providers: Mapping[str, Provider],
    store: StateStore,
    run_id: int,
    *,
    parallel: int = 16,
    action_timeout: float = 900.0,
    retries: int = 3,
    stop: threading.Event | None = None,
    report: Reporter | None = None,
) -> ApplyReport:
    stop = stop or threading.Event()
    # One address may have several actions (a boot device set before the power-on that
    # uses it); they run one after another, in the plan's order, as one unit of a wave.
    # Actions of a batch provider wait until the wave's other actions are done, then run
    # together (their address's earlier actions, e.g. a power-on, have finished by then).
    entries: dict[str, list[PlanEntry]] = {}
    batched: dict[str, list[PlanEntry]] = {}
    for entry in plan.changes():
        batch = isinstance(providers.get(provider_key(entry)), BatchProvider)
        (batched if batch else entries).setdefault(entry.address, []).append(entry)
    outcomes: dict[tuple[str, str], Outcome] = {}
    failed: set[str] = set()

    def record(outcome: Outcome) -> None:
        outcomes[(outcome.address, outcome.action)] = outcome
        if report is not None:
            report(outcome)

    def run_address(group: Sequence[PlanEntry]) -> list[Outcome]:
        done: list[Outcome] = []
        for entry in group:
            if done and done[-1].result != "succeeded":
                done.append(_skip(store, run_id, entry, f"skipped: {done[-1].action} failed first"))
                continue
            done.append(_apply_one(entry, documents, providers, store, run_id, plan.revision, retries))
        return done

    waves = plan.waves or (tuple(sorted({*entries, *batched})),)
    with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="fleet-apply") as pool:
        for wave in waves:
            pending = [entries[a] for a in wave if a in entries]
            running: dict[Future[list[Outcome]], tuple[list[PlanEntry], float]] = {}
            while pending or running:
                while pending and len(running) < parallel and not stop.is_set():
                    group = pending.pop(0)
                    blocked = sorted({d for e in group for d in e.depends_on if d in failed})
                    if blocked:
                        failed.add(group[0].address)
                        for entry in group:
                            record(_skip(store, run_id, entry, f"skipped: {', '.join(blocked)} failed first"))
                        continue
                    future = pool.submit(run_address, group)
                    running[future] = (group, time.monotonic())
                if stop.is_set() and not running:
                    break
                if not running:
                    continue
                done, _ = wait(list(running), timeout=0.2, return_when=FIRST_COMPLETED)
                now = time.monotonic()
                for future in done:
                    group, _ = running.pop(future)
                    for outcome in future.result():
                        if outcome.result != "succeeded":
                            failed.add(outcome.address)
                        record(outcome)
                for future, (group, started) in list(running.items()):
                    if now - started > action_timeout:
                        running.pop(future)
                        failed.add(group[0].address)
                        for entry in group:
                            record(
                                Outcome(
                                    entry.address,
                                    _name(entry),
                                    "failed",
                                    f"timed out after {action_timeout:g} s (still running in the provider)",
                                )
                            )
            if not stop.is_set():
                together = [e for a in wave for e in batched.get(a, ())]
                for outcome in _apply_batches(
                    together, documents, providers, store, run_id, plan.revision, retries, failed
                ):
                    if outcome.result != "succeeded":
                        failed.add(outcome.address)
                    record(outcome)
            if stop.is_set():
                break
    interrupted = stop.is_set()
    if interrupted:
        store.interrupt_pending(run_id)
        every = {a: [*entries.get(a, ()), *batched.get(a, ())] for a in {*entries, *batched}}
        for address, group in sorted(every.items()):
            for entry in group:
                if (address, _name(entry)) not in outcomes:
                    # Recorded too, so the audit trail shows the whole plan and where it stopped.
                    message = "not started: the run was interrupted"
                    action_id = store.start_action(run_id, address, _name(entry), _before(entry))
                    store.finish_action(action_id, "interrupted", None, message)
                    outcomes[(address, _name(entry))] = Outcome(address, _name(entry), "interrupted", message)
    return ApplyReport(run_id, tuple(outcomes[k] for k in sorted(outcomes)), interrupted)


def _name(entry: PlanEntry) -> str:
    assert entry.action is not None
    return action_name(entry.action)


def _skip(store: StateStore, run_id: int, entry: PlanEntry, message: str) -> Outcome:
    action_id = store.start_action(run_id, entry.address, _name(entry), _before(entry))
    store.finish_action(action_id, "skipped", None, message)
    return Outcome(entry.address, _name(entry), "skipped", message)


def _before(entry: PlanEntry) -> dict[str, Any]:
    return {f.field: f.before for f in entry.fields}


def _apply_one(
    entry: PlanEntry,
    documents: Mapping[str, models.Document],
    providers: Mapping[str, Provider],
    store: StateStore,
    run_id: int,
    revision: str,
    retries: int,
) -> Outcome:
    """Record the action, run it (retrying what may pass), record how it ended."""
    name = _name(entry)
    action_id = store.start_action(run_id, entry.address, name, _before(entry))
    started = time.monotonic()
    document = documents.get(entry.address)
    provider = providers.get(provider_key(entry))
    orphan = entry.finding is Finding.ORPHANED
    if (document is None and not orphan) or provider is None:
        message = (
            "no desired document for this resource" if document is None else f"no provider for {entry.kind}"
        )
        store.finish_action(action_id, "failed", None, message)
        return Outcome(entry.address, name, "failed", message)
    change = entry.change(None if orphan else document)
    try:
        result = _with_retries(lambda: provider.apply(change), retries)
    except FleetError as exc:
        store.finish_action(action_id, "failed", None, str(exc))
        return Outcome(entry.address, name, "failed", str(exc), time.monotonic() - started)
    return _finish(entry, document, result, store, action_id, revision, run_id, time.monotonic() - started)


def _apply_batches(
    group: Sequence[PlanEntry],
    documents: Mapping[str, models.Document],
    providers: Mapping[str, Provider],
    store: StateStore,
    run_id: int,
    revision: str,
    retries: int,
    failed: set[str],
) -> list[Outcome]:
    """A wave's actions of batch providers, each provider's at once; retried together."""
    outcomes: list[Outcome] = []
    by_provider: dict[str, list[PlanEntry]] = {}
    for entry in group:
        blocked = sorted(d for d in entry.depends_on if d in failed)
        if entry.address in failed:
            outcomes.append(_skip(store, run_id, entry, "skipped: an earlier action of it failed"))
        elif blocked:
            outcomes.append(_skip(store, run_id, entry, f"skipped: {', '.join(blocked)} failed first"))
        elif documents.get(entry.address) is None:
            outcomes.append(_apply_one(entry, documents, providers, store, run_id, revision, retries))
        else:
            by_provider.setdefault(provider_key(entry), []).append(entry)
    for key, todo in sorted(by_provider.items()):
        provider = providers[key]
        assert isinstance(provider, BatchProvider)
        started = time.monotonic()
        action_ids = {e.address: store.start_action(run_id, e.address, _name(e), _before(e)) for e in todo}
        results: dict[str, ApplyResult | FleetError] = {}
        for attempt in range(max(1, retries)):
            try:
                answers: Sequence[ApplyResult | FleetError] = provider.apply_many(
                    [e.change(documents[e.address]) for e in todo]
                )
            except FleetError as exc:
                answers = [exc] * len(todo)
            again = [
                e
                for e, r in zip(todo, answers, strict=True)
                if isinstance(r, TemporaryError) and attempt + 1 < max(1, retries)
            ]
            results.update((e.address, r) for e, r in zip(todo, answers, strict=True) if e not in again)
            if not again:
                break
            time.sleep(_backoff(attempt + 1))
            todo = again
        for entry in by_provider[key]:
            result = results[entry.address]
            seconds = time.monotonic() - started
            if isinstance(result, FleetError):
                store.finish_action(action_ids[entry.address], "failed", None, str(result))
                outcomes.append(Outcome(entry.address, _name(entry), "failed", str(result), seconds))
                continue
            document = documents[entry.address]
            outcomes.append(
                _finish(entry, document, result, store, action_ids[entry.address], revision, run_id, seconds)
            )
    return outcomes


def _finish(
    entry: PlanEntry,
    document: models.Document | None,
    result: ApplyResult,
    store: StateStore,
    action_id: int,
    revision: str,
    run_id: int,
    seconds: float,
) -> Outcome:
    """Record how an action ended, and what it applied."""
    name = _name(entry)
    if result.ok and document is None:
        # An orphan fleet acted on: a deleted one is forgotten; a stopped one stays known as off.
        after = {"power": "off"} if entry.action is Action.POWER_OFF else {}
        store.finish_action(action_id, "succeeded", after, result.message)
        if entry.action is Action.DELETE:
            store.forget_applied(entry.address)
        return Outcome(entry.address, name, "succeeded", result.message, seconds, result.changed)
    assert document is not None
    after = applied_fields(document, entry)
    if result.ok:
        store.finish_action(action_id, "succeeded", after, result.message)
        previous = store.get_applied([entry.address]).get(entry.address)
        merged = {**(previous.fields if previous is not None else {}), **after}
        store.set_applied(entry.address, revision, spec_hash(document), merged, run_id)
        return Outcome(entry.address, name, "succeeded", result.message, seconds, result.changed)
    store.finish_action(action_id, "failed", None, result.message)
    return Outcome(entry.address, name, "failed", result.message, seconds, result.changed)


CONFIG_PROVIDER = "AnsibleConfig"
"""The key of the configuration provider in `execute`'s providers (all kinds share it)."""


def provider_key(entry: PlanEntry) -> str:
    """Which of `execute`'s providers applies an entry: its kind's, or Ansible for `configure`."""
    return CONFIG_PROVIDER if entry.action is Action.CONFIGURE else entry.kind


def _backoff(tries: int) -> float:
    """Seconds before trying again once `tries` tries ended in a temporary error: 0.5, 1, 2, ... 10."""
    return min(10.0, 0.5 * 2.0 ** (tries - 1))


def _with_retries(call: Callable[[], ApplyResult], retries: int) -> ApplyResult:
    for attempt in Retrying(
        retry=retry_if_exception_type(TemporaryError),
        stop=stop_after_attempt(max(1, retries)),
        wait=lambda state: _backoff(state.attempt_number),
        reraise=True,
    ):
        with attempt:
            return call()
    raise PermanentError("unreachable")  # pragma: no cover - Retrying either returns or raises


def summarise(report: ApplyReport) -> dict[str, int]:
    return {result: report.count(result) for result in ("succeeded", "failed", "skipped", "interrupted")}


def documents_by_address(documents: Sequence[models.Document]) -> dict[str, models.Document]:
    return {d.address: d for d in documents}
