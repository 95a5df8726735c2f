"""The run pipeline every entry point shares: the CLI, the controller and the PR job call these
steps, with plain typed values, and render what comes back.

    open the source at a revision -> load and validate (the gate) -> select -> observe -> plan
    -> guard (blast radius, change windows, stale saved plan) -> lease -> apply -> record

Each step returns a value and prints nothing. The gate refuses a revision with any error as a
whole: nothing is observed as missing, planned or changed. The engine reads no environment
variable (its `Settings` say everything about the deployment), installs no signal handler (a
caller stops a run with a `CancelToken`), and keeps nothing beyond a run but what its caller
owns: the provider pool, the state store and the validation cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from providers.base import Observation, Observed, RevisionInputs, UnknownReason
from providers.registry import ProviderPool
from reconciler.apply.cancel import CancelToken
from reconciler.apply.executor import ApplyReport, Outcome, execute, provider_key, suspended_skip
from reconciler.apply.guards import (
    BlastIndex,
    BlastRadiusExceeded,
    OutsideChangeWindow,
    check_blast_radius,
    check_change_windows,
    check_saved_plan,
)
from reconciler.apply.record import Recorder, record_converged, record_drift
from reconciler.engine import suspensions
from reconciler.engine.lease import Lease
from reconciler.engine.suspensions import SuspensionResult, TargetSuspended
from reconciler.engine.untrusted import UntrustedConfig, UntrustedReport, UntrustedSource, untrusted_config
from reconciler.errors import FleetError, PermanentError, StoreFailure, UsageError
from reconciler.kinds import (
    KINDS,
    DiffInputs,
    kind_named,
    kind_of,
    managed_kinds,
    referrers,
    unknown_kind_hint,
)
from reconciler.kinds.config import config_directories, config_version, configured, observed_config
from reconciler.kinds.planning import Observations, by_kind_name, make_plan
from reconciler.memory import collector_paused
from reconciler.plan.model import Plan, Suspended, action_name
from reconciler.settings import Settings
from reconciler.source import SourceRef, open_snapshot
from reconciler.source.export import directory_digest, exported
from reconciler.source.snapshot import Snapshot
from reconciler.spec import models
from reconciler.spec.cache import SpecCache
from reconciler.spec.diagnostics import Diagnostic
from reconciler.spec.loader import (
    InvalidRevision,
    LoadedRevision,
    default_workers,
    load_revision,
    revision_key,
)
from reconciler.spec.results import FLEET_FILE
from reconciler.spec.selector import parse_selector
from reconciler.spec.trust import is_trusted
from reconciler.state import DriftFinding, LockHolder, ObservationRecord, StateStore
from reconciler.state.locks import WaitCallback


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which resources of a revision a run is about: by kind, label selector and addresses."""

    kind: str | None = None
    selector: str | None = None
    targets: tuple[str, ...] = ()

    @property
    def whole_fleet(self) -> bool:
        """Nothing filtered out, so resources fleet applied whose specs are gone are orphans."""
        return self.kind is None and not self.selector and not self.targets


@dataclasses.dataclass(frozen=True)
class Selected:
    """The documents a selection chose from a revision, with the rest of the revision."""

    revision: LoadedRevision
    fleet: models.Fleet
    documents: tuple[models.Document, ...]  # the chosen ones, in listing order
    everything: Mapping[str, models.Document]  # every document but the Fleet, by address
    paths: Mapping[str, str]  # the file of every document, by address
    whole_fleet: bool


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How an apply runs, and what its audit record says about why."""

    kind: str = "apply"  # the audit's run kind: apply / reconcile
    reason: str | None = None
    incident: str | None = None
    emergency: bool = False  # bypasses blast radius and change windows (recorded)
    allow_destructive: bool = False  # bypasses blast radius
    break_lock: bool = False  # takes the leases of others (recorded)
    lock_wait_seconds: float = 0.0
    parallel: int = 16
    operator: str | None = None  # who the audit names, when not the settings' operator (an API token)
    # An explicit run (the emergency reconcile) is refused, not skipped, on a suspended target.
    refuse_suspended: bool = False
    # Who approved a plan over the blast radius (it bypasses the blast radius; recorded).
    approved_by: str | None = None


class PlannedRun:
    """A plan and what it rests on, for as long as the run lives: `close()` (or leaving the `with`
    block) removes what the run exported (the playbooks at the planned revision).

    `untrusted` is set for a plan of a revision fleet does not trust (`Engine.plan(untrusted=...)`):
    what its configuration was evaluated with, and what waits until it is trusted. Such a plan is
    for review only: `Engine.apply` refuses it."""

    def __init__(
        self,
        selected: Selected,
        inputs: RevisionInputs,
        observations: Observations,
        plan: Plan,
        tolerated: tuple[Diagnostic, ...],
        scope: contextlib.ExitStack,
        untrusted: UntrustedReport | None = None,
    ) -> None:
        self.selected = selected
        self.inputs = inputs
        self.observations = observations
        self.plan = plan
        # Errors of the revision outside an emergency reconcile's targets: it goes on, and says so.
        self.tolerated = tolerated
        self.untrusted = untrusted
        self.observe_seconds = 0.0  # how long observing the selection took (providers in parallel)
        self._scope = scope

    def close(self) -> None:
        self._scope.close()

    def __enter__(self) -> PlannedRun:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@dataclasses.dataclass(frozen=True)
class RunResult:
    """An applied plan: the audit's run id, and how every action ended (None: nothing to apply)."""

    run_id: int
    plan: Plan
    report: ApplyReport | None
    broken_locks: tuple[LockHolder, ...] = ()


@dataclasses.dataclass(frozen=True)
class DriftResult:
    plan: Plan
    findings: Mapping[tuple[str, str], DriftFinding]  # the open findings, by (address, field)


@dataclasses.dataclass(frozen=True)
class SyncResult:
    """One unit of a controller's work: the plan, and the run that applied it, or the guard that
    refused it (blast radius, change window) before anything was recorded or changed."""

    plan: Plan
    run: RunResult | None
    refused: PermanentError | None = None
    observe_seconds: float = 0.0


def process_name() -> str:
    """This process, as runs and leases name it: `host:pid`."""
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_name(operator: str) -> str:
    """Who holds a lease: the operator, this host and this process."""
    return f"{operator}@{process_name()}"


class Engine:
    """The pipeline, over what its caller owns and keeps across runs: settings, the provider pool,
    the state store (for plan, apply and drift) and the validation cache (None: parse everything)."""

    def __init__(
        self,
        settings: Settings,
        pool: ProviderPool,
        store: StateStore | None = None,
        cache: SpecCache | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.cache = cache
        self._store = store
        self._clock = clock
        self._last_revision: tuple[str, LoadedRevision] | None = None
        # Every secret a provider reads is refused by the store from then on.
        self._stop_forbidding = (
            pool.access.credentials.on_reveal(lambda value: store.forbid_values([value]))
            if store is not None
            else None
        )

    def close(self) -> None:
        if self._stop_forbidding is not None:
            self._stop_forbidding()
            self._stop_forbidding = None

    @property
    def store(self) -> StateStore:
        if self._store is None:
            raise UsageError("this command has no state store")
        return self._store

    # --- the steps --------------------------------------------------------------------------

    def open_source(self, ref: SourceRef) -> Snapshot:
        """The fleet repo at the revision `ref` names."""
        return open_snapshot(ref, self.settings.cache_dir)

    def load(self, snapshot: Snapshot, *, documents: bool = True) -> LoadedRevision:
        """Every document and every diagnostic of the revision, as `fleet validate` sees them.

        The engine keeps the last revision it loaded: a caller that passes over an unchanged
        revision again and again (the controller, between commits) loads it once, and a new
        revision is loaded from it, reading and checking again only what changed (the
        controller's next commit)."""
        key = revision_key(snapshot)
        kept = self._last_revision
        if kept is not None and kept[0] == key and (kept[1].documents or not documents):
            return kept[1]
        revision = load_revision(
            snapshot,
            self.cache,
            self.settings.workers or default_workers(),
            documents=documents,
            base=kept[1] if kept is not None else None,
        )
        self._last_revision = (key, revision)
        return revision

    def gate(self, revision: LoadedRevision, *, partial: Selection | None = None) -> tuple[Diagnostic, ...]:
        """Refuse a revision with any error. With `partial` (an emergency reconcile of explicit
        targets), errors that lie outside the targets' own documents and the documents they
        reference are tolerated: they are returned, for the run's audit record."""
        if not revision.errors:
            return ()
        if partial is None or not partial.targets or partial.kind or partial.selector:
            raise InvalidRevision(revision)
        loaded = {d.document.address: d for d in revision.documents}
        broken = sorted(t for t in partial.targets if t not in loaded)
        if broken:
            raise InvalidRevision(
                revision,
                message=f"{', '.join(broken)} cannot be reconciled: its own spec has errors (or it does "
                "not exist); nothing was done",
            )
        involved = set(partial.targets)
        for target in partial.targets:
            document = loaded[target].document
            involved.update(kind_of(document).references(document))
        paths = {loaded[a].path for a in involved if a in loaded} | {FLEET_FILE}
        inside = [d for d in revision.errors if d.address in involved or d.path in paths]
        if inside:
            raise InvalidRevision(
                revision,
                message=f"{len(inside)} of the errors concern the targets or what they reference; "
                "nothing was done",
            )
        return tuple(revision.errors)

    def select(
        self, revision: LoadedRevision, selection: Selection, *, include_fleet: bool = False
    ) -> Selected:
        """The documents a selection chooses; unknown kinds and addresses are usage errors."""
        if revision.fleet is None:
            raise UsageError("the repo has no valid fleet.yaml", hint="run `fleet validate` to see why")
        wanted = None
        if selection.kind is not None:
            kind = kind_named(selection.kind)
            if kind is None:
                raise UsageError(f"unknown kind {selection.kind!r}", hint=unknown_kind_hint(selection.kind))
            wanted = kind.name
        match = parse_selector(selection.selector) if selection.selector else None
        targets = set(selection.targets)
        # Explicit targets (the controller's units of work) are looked up, not searched for.
        candidates = (
            [revision.by_address[t] for t in sorted(targets) if t in revision.by_address]
            if targets
            else revision.documents
        )
        chosen = [
            loaded.document
            for loaded in candidates
            if (include_fleet or loaded.document.kind_name != "Fleet")
            and (wanted is None or loaded.document.kind_name == wanted)
            and (match is None or match(loaded.document.metadata.labels))
            and (not targets or loaded.document.address in targets)
        ]
        missing = sorted(targets - {d.address for d in chosen})
        for address in missing:
            declared = revision.by_address.get(address)
            if declared is None:
                continue
            document = declared.document
            filters = [
                name
                for name, excludes in (
                    ("--kind", wanted is not None and document.kind_name != wanted),
                    ("the label selector", match is not None and not match(document.metadata.labels)),
                )
                if excludes
            ]
            verb = "leaves" if len(filters) == 1 else "leave"
            raise UsageError(
                f"{address} is declared, but {' and '.join(filters)} {verb} it out",
                hint="drop the filter, or the target",
            )
        if missing:
            raise UsageError(
                f"no such resource: {', '.join(missing)}", hint="addresses look like machine/NAME"
            )
        order = list(KINDS)
        chosen.sort(key=lambda d: (order.index(d.kind_name), d.metadata.name))
        return Selected(
            revision, revision.fleet, tuple(chosen), revision.resources, revision.paths, selection.whole_fleet
        )

    def observe(
        self,
        documents: Sequence[models.Document],
        inputs: RevisionInputs,
        *,
        config: Sequence[models.Document] = (),
        config_versions: Mapping[str, str] | None = None,
        config_inputs: RevisionInputs | None = None,
        not_checked: Sequence[Observation] = (),
    ) -> Observations:
        """What the providers see of `documents` now, and the configuration of `config` (Ansible
        check mode, run alongside the other providers, with `config_inputs` when they differ from
        `inputs`). `not_checked` are configurations left unknown on purpose. Changes nothing anywhere."""
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fleet-config") as pool:
            checked = pool.submit(self._observe_config, config, config_inputs or inputs) if config else None
            by_kind = self._observe_kinds(documents, inputs)
            found = [*(checked.result() if checked is not None else ()), *not_checked]
        found.sort(key=lambda o: o.address)
        return Observations(by_kind, tuple(found), dict(config_versions or {}))

    def _observe_config(
        self, documents: Sequence[models.Document], inputs: RevisionInputs
    ) -> list[Observation]:
        observed = self.pool.config_provider(inputs.fleet).observe(documents, inputs)
        return sorted(observed.observations, key=lambda o: o.address)

    def _observe_kinds(
        self, documents: Sequence[models.Document], inputs: RevisionInputs
    ) -> dict[str, Observed]:
        by_kind: dict[str, Observed] = {}
        grouped = by_kind_name(documents)
        for kind in managed_kinds():
            group = grouped.get(kind.name, [])
            if not group and not (inputs.scan_all_hosts and kind.name == "VirtualMachine"):
                continue
            if not self.pool.serves(kind.provider):
                by_kind[kind.name] = Observed(
                    tuple(
                        Observation.unknown(
                            d.address, UnknownReason.NOT_ATTEMPTED, f"no provider observes {kind.name}"
                        )
                        for d in group
                    )
                )
                continue
            observed = self.pool.provider(kind.provider, inputs.fleet).observe(group, inputs)
            by_kind[kind.name] = Observed(
                tuple(sorted(observed.observations, key=lambda o: o.address)), observed.unmatched
            )
        return by_kind

    def save_observations(self, observations: Observations) -> None:
        """The store keeps the last observation of every resource (what the controller and PR
        comments show between passes); unknown ones are kept too, with their reason. A checked
        configuration is kept with its resource, as counts and coverage (`config`). A read-only
        store keeps nothing (the command said so when it opened it)."""
        if self.store.read_only:
            return
        summaries = {
            o.address: dict(state.fields).get("config")
            for o in observations.config
            if (state := observed_config(o, observations.config_versions.get(o.address, "")))
        }
        kept = [
            o
            for observed in observations.by_kind.values()
            for o in (*observed.observations, *(u for u in observed.unmatched if u.fields.get("owned")))
        ]
        self.store.save_observations(
            [
                ObservationRecord(
                    o.address,
                    o.state.value,
                    {
                        **{k: v for k, v in o.fields.items() if k != "inventory"},
                        **({"config": summaries[o.address]} if summaries.get(o.address) else {}),
                    },
                    o.reason.value if o.reason else None,
                    o.observed_at,
                )
                for o in kept
            ]
        )

    def diff_inputs(self, selected: Selected) -> DiffInputs:
        """What the diffs need from the store: what fleet last applied and the open drift."""
        addresses = [d.address for d in selected.documents]
        with collector_paused():
            applied = self.store.get_applied(None if selected.whole_fleet else addresses)
            first_seen = {(d.address, d.field): d.first_seen for d in self.store.open_drift(addresses)}
        revision = selected.revision
        kept = selected.everything is revision.resources  # the revision's own maps and indexes serve
        return DiffInputs(
            selected.fleet,
            selected.everything,
            applied,
            first_seen,
            selected.whole_fleet,
            known_machines=revision.machines if kept else None,
            referrers=referrers(revision) if kept else None,
        )

    def make_plan(self, selected: Selected, observations: Observations) -> Plan:
        """The plan of the selection against what was observed and what fleet last applied,
        with the resources of it that are suspended (their changes are held, see `Plan.held`)."""
        plan = make_plan(
            selected.revision.revision,
            self._clock(),
            selected.documents,
            observations,
            self.diff_inputs(selected),
        )
        return dataclasses.replace(plan, suspended=self.suspended_in(selected, plan))

    def suspended_in(self, selected: Selected, plan: Plan) -> tuple[Suspended, ...]:
        """Which resources of a plan are suspended right now: by the store or by their spec.
        Orphans count: a suspended address is never acted on, spec or no spec."""
        addresses = {d.address for d in selected.documents} | {e.address for e in plan.entries}
        return suspensions.suspended_among(self.store, addresses, selected.documents, selected.paths)

    def check_blast_radius(self, planned: PlannedRun) -> None:
        """Raise BlastRadiusExceeded for a plan over the fleet's blast radius. The racks and
        clusters it weighs the plan against are worked out once per revision."""
        selected = planned.selected
        policy = selected.fleet.spec.policies.blastRadius
        check_blast_radius(planned.plan, BlastIndex.of(selected.revision), policy)

    def guard(self, planned: PlannedRun, options: RunOptions) -> None:
        """Blast radius and change windows; raises before anything is recorded or changed."""
        if options.emergency:
            return
        plan, fleet = planned.plan, planned.selected.fleet
        if not options.allow_destructive and options.approved_by is None:
            self.check_blast_radius(planned)
        changes = plan.changes()
        if changes and options.kind == "reconcile":
            # Change windows bind the emergency path and the controller; a person's `fleet apply`
            # is the reviewed, deliberate change the windows exist to schedule.
            touched = [
                planned.selected.everything[e.address]
                for e in changes
                if e.address in planned.selected.everything
            ]
            check_change_windows(fleet, touched, planned.inputs.machines, self._clock())

    def apply(
        self,
        planned: PlannedRun,
        options: RunOptions,
        cancel: CancelToken,
        *,
        on_outcome: Callable[[Outcome], None] | None = None,
        on_wait: WaitCallback | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> RunResult:
        """Guard, lease, apply and record one plan. Raises before anything changes when a guard
        refuses. `on_start` hears the run's id as soon as the run is recorded."""
        if planned.untrusted is not None:
            raise UsageError(
                "this plan is of a revision fleet does not trust: it is for review only, never applied",
                hint="apply the revision once it is merged (or trusted), from a plan of its own",
            )
        if self.store.read_only:
            raise StoreFailure(
                f"state store {self.store.url} is read-only, and every action is recorded before it runs",
                hint="apply with a store fleet can write",
            )
        # Suspensions are read again: one made since the plan (while its reader was asked to
        # confirm) holds as well. The store checks once more as each action starts.
        plan, store = planned.plan, self.store
        operator = options.operator or self.settings.operator
        now_suspended = {s.address: s for s in (*plan.suspended, *self.suspended_in(planned.selected, plan))}
        plan = dataclasses.replace(plan, suspended=tuple(now_suspended.values()))
        if options.refuse_suspended:
            self.refuse_suspended(planned, plan)
        self.guard(planned, options)
        held = plan.held()
        runnable = plan.without_held()
        run_id = store.start_run(
            options.kind,
            operator,
            reason=options.reason,
            incident=options.incident,
            revision=plan.revision,
            emergency=options.emergency,
            replica=process_name(),
        )
        status = "failed"
        summary: dict[str, object] = {"plan": plan.summary(), "fingerprint": plan.fingerprint()}
        if planned.tolerated:
            summary["validationErrors"] = [d.render() for d in planned.tolerated]
            summary["orphans"] = "not handled: the revision has errors outside the targets"
        if held:
            summary["suspended"] = sorted(held)
        if options.approved_by is not None:
            summary["approvedBy"] = options.approved_by
        try:
            if on_start is not None:
                on_start(run_id)
            inputs = self.diff_inputs(planned.selected)
            skipped = self._skip_held(plan, held, Recorder(store, run_id, plan.revision), on_outcome)
            changes = runnable.changes()
            if not changes:
                record_converged(plan, inputs, store, run_id)
                status = "succeeded"
                report = ApplyReport(run_id, tuple(skipped), False) if skipped else None
                return RunResult(run_id, plan, report)
            addresses = sorted({e.address for e in changes})
            with Lease(
                store,
                addresses,
                owner_name(operator),
                run_id,
                cancel,
                ttl=self.settings.lease_ttl,
                wait_seconds=options.lock_wait_seconds,
                break_lock=options.break_lock,
                on_wait=on_wait,
            ) as lease:
                fleet = planned.selected.fleet
                providers = {
                    key: self.pool.provider(key, fleet) for key in sorted({provider_key(e) for e in changes})
                }
                report = execute(
                    runnable,
                    planned.selected.everything,
                    providers,
                    planned.inputs,
                    Recorder(store, run_id, plan.revision, lease.token),
                    cancel,
                    parallel=options.parallel,
                    report=on_outcome,
                )
                report = dataclasses.replace(
                    report, outcomes=tuple(sorted((*report.outcomes, *skipped), key=_outcome_order))
                )
                status = "interrupted" if report.interrupted else ("succeeded" if report.ok else "failed")
                if report.interrupted:
                    summary["interrupted"] = report.reason
                else:
                    record_converged(plan, inputs, store, run_id)
                return RunResult(run_id, plan, report, lease.broken)
        finally:
            store.finish_run(run_id, status, summary)

    def refuse_suspended(self, planned: PlannedRun, plan: Plan | None = None) -> None:
        """Raise TargetSuspended when any resource the run selected is suspended: an explicit run
        (the emergency reconcile) says so instead of quietly skipping what it was asked to do."""
        held = {s.address: s for s in (plan or planned.plan).suspended}
        named = [held[d.address] for d in planned.selected.documents if d.address in held]
        if named:
            raise TargetSuspended(named)

    def _skip_held(
        self,
        plan: Plan,
        held: Mapping[str, str],
        recorder: Recorder,
        on_outcome: Callable[[Outcome], None] | None,
    ) -> list[Outcome]:
        """Record every held change as skipped, with why (who suspended what, or what it waits
        for); nothing is leased or called for them."""
        skipped: list[Outcome] = []
        for entry in plan.changes():
            if entry.address not in held or entry.action is None:
                continue
            recorder.never_started(entry, "skipped", held[entry.address])
            outcome = suspended_skip(entry.address, action_name(entry.action), held[entry.address])
            skipped.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
        return skipped

    # --- suspensions ----------------------------------------------------------------------------

    def suspend(
        self, ref: SourceRef, selection: Selection, reason: str, *, operator: str | None = None
    ) -> SuspensionResult:
        """Suspend what the selection names (addresses of the repo, or a label selector), as the
        settings' operator, for `reason`; one audit record. The repo need not be valid: a person
        may need to stop fleet from acting on a resource precisely while a spec is broken."""
        revision = self.load(self.open_source(ref))
        addresses = suspensions.resolve(
            revision, self.store, selection.targets, selection.selector, selection.kind, resuming=False
        )
        return suspensions.suspend(
            revision, self.store, addresses, operator or self.settings.operator, reason
        )

    def resume(
        self, ref: SourceRef, selection: Selection, reason: str | None = None, *, operator: str | None = None
    ) -> SuspensionResult:
        """End the suspensions of what the selection names; one audit record. A spec's own
        annotation still suspends its resource (the result says which)."""
        revision = self.load(self.open_source(ref))
        addresses = suspensions.resolve(
            revision, self.store, selection.targets, selection.selector, selection.kind, resuming=True
        )
        return suspensions.resume(revision, self.store, addresses, operator or self.settings.operator, reason)

    def suspended(self, ref: SourceRef) -> dict[str, Suspended]:
        """Every suspended resource: those of the store and those the revision's specs suspend."""
        revision = self.load(self.open_source(ref))
        documents = [d.document for d in revision.documents]
        paths = {d.document.address: d.path for d in revision.documents}
        found = suspensions.annotated(documents, paths)
        for address, held in self.store.suspensions().items():
            found[address] = Suspended(address, held.reason, held.operator, held.since)
        return dict(sorted(found.items()))

    # --- whole runs ---------------------------------------------------------------------------

    def revision(self, ref: SourceRef, *, documents: bool = True) -> LoadedRevision:
        """Open, load and gate: a revision every document of which is valid, or InvalidRevision."""
        revision = self.load(self.open_source(ref), documents=documents)
        self.gate(revision)
        return revision

    def live(self, ref: SourceRef, selection: Selection) -> Observations:
        """What the providers see of a selection right now; changes and records nothing."""
        selected = self.select(self.revision(ref), selection)
        return self.observe(selected.documents, _inputs(selected))

    def plan(
        self,
        ref: SourceRef,
        selection: Selection,
        *,
        config: bool | None = None,
        saved: Plan | None = None,
        partial: bool = False,
        untrusted: UntrustedSource | None = None,
    ) -> PlannedRun:
        """Open, load, gate, select, observe and plan (and check a saved plan against the fresh
        one). `partial`: an emergency reconcile of explicit targets, which tolerates errors
        outside them (and then never handles orphans). The caller closes the PlannedRun.

        `untrusted`: `ref` is a revision fleet does not trust yet (a pull request's head): its
        specs are planned, but every file Ansible reads as code (playbooks, roles, plugins, vars
        files, anything under the configurations' directories) comes from the base revision
        `untrusted.base`, its variables that differ from the base revision reach Ansible as data
        it never templates, and configurations that cannot be evaluated so wait until it is
        trusted (see `reconciler.engine.untrusted`). The PlannedRun's `untrusted` says what was
        done; such a plan is never applied."""
        scope = contextlib.ExitStack()
        try:
            snapshot = self.open_source(ref)
            revision = self.load(snapshot)
            if saved is not None:
                selection = Selection(targets=tuple(sorted({o.address for o in saved.observed})))
            tolerated = self.gate(revision, partial=selection if partial else None)
            selected = self.select(revision, selection)
            if tolerated:
                selected = dataclasses.replace(selected, whole_fleet=False)
            self._reveal_credentials(_inputs(selected))
            grouped = by_kind_name(selected.documents)
            for kind in managed_kinds():
                kind.precheck(selected.everything, grouped.get(kind.name, []))
            checked = configured(selected.documents) if self._config(config) else []
            prepared: UntrustedConfig | None = None
            report: UntrustedReport | None = None
            versions: dict[str, str] = {}
            if untrusted is not None:
                prepared = self._untrusted_config(scope, snapshot, untrusted, checked)
                root, checked, report = prepared.root, list(prepared.evaluated), prepared.report
                versions = dict(prepared.versions)
            else:
                directories = sorted(
                    {d for c in checked if c.spec.config for d in config_directories(c.spec.config)}
                )
                root = scope.enter_context(exported(snapshot, directories)) if checked else None
                if root is None:
                    checked = []
                else:
                    digests = {d: directory_digest(root, d) for d in directories}
                    versions = {
                        c.address: config_version(c.spec.config, digests) for c in checked if c.spec.config
                    }
            inputs = _inputs(selected, playbook_root=root, scan_all_hosts=selected.whole_fleet)
            config_inputs = inputs
            if prepared is not None:
                # The base revision's Fleet says how Ansible runs (provider settings, credentials,
                # regions); the head revision's documents only which hosts, groups and values.
                config_inputs = dataclasses.replace(
                    inputs, fleet=prepared.fleet or selected.fleet, trusted_vars=prepared.trusted_vars
                )
            started = time.monotonic()
            observations = self.observe(
                selected.documents,
                inputs,
                config=checked,
                config_versions=versions,
                config_inputs=config_inputs,
                not_checked=prepared.deferred if prepared is not None else (),
            )
            observed_in = time.monotonic() - started
            self.save_observations(observations)
            plan = self.make_plan(selected, observations)
            if saved is not None:
                check_saved_plan(saved, plan)
                plan = saved  # what was reviewed is what is applied, while it still holds
            planned = PlannedRun(selected, inputs, observations, plan, tolerated, scope, report)
            planned.observe_seconds = observed_in
            return planned
        except BaseException:
            scope.close()
            raise

    def drift(self, ref: SourceRef, selection: Selection, *, config: bool | None = None) -> DriftResult:
        """Plan, and keep the drift findings: open or refresh what drifted, resolve what no longer does."""
        with self.plan(ref, selection, config=config) as planned:
            if not self.store.read_only:
                record_drift(planned.plan, self.store, self._clock())
            return DriftResult(planned.plan, {(d.address, d.field): d for d in self.store.open_drift()})

    def sync(
        self,
        ref: SourceRef,
        selection: Selection,
        options: RunOptions,
        cancel: CancelToken,
        *,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> SyncResult:
        """Plan, record the drift findings, and apply what the plan changes: a level-based pass,
        harmless to repeat. A guard's refusal is returned with the plan, for the caller to show
        what waits and why; nothing has been applied then."""
        with self.plan(ref, selection) as planned:
            if not self.store.read_only:
                record_drift(planned.plan, self.store, self._clock())
            try:
                self.guard(planned, options)
            except (BlastRadiusExceeded, OutsideChangeWindow) as refused:
                return SyncResult(planned.plan, None, refused, planned.observe_seconds)
            run = self.apply(planned, options, cancel, on_outcome=on_outcome)
            return SyncResult(planned.plan, run, None, planned.observe_seconds)

    def _config(self, config: bool | None) -> bool:
        return self.settings.config if config is None else config

    def _untrusted_config(
        self,
        scope: contextlib.ExitStack,
        head: Snapshot,
        untrusted: UntrustedSource,
        checked: Sequence[models.Machine | models.VirtualMachine],
    ) -> UntrustedConfig:
        """The configuration of an untrusted revision, against its base revision's files."""
        base = self.open_source(untrusted.base)
        revision = load_revision(base, self.cache, self.settings.workers or default_workers())
        return untrusted_config(scope, head, base, revision, checked)

    def trusts(
        self, base: SourceRef, author: str, *, teams: Sequence[str] = (), labels: Sequence[str] = ()
    ) -> bool:
        """Whether a pull request into `base` (its target branch, never its head: a pull request
        cannot trust itself) by `author` is trusted by the base revision's fleet.yaml; see
        `reconciler.spec.trust.is_trusted`. A base revision without a valid fleet.yaml trusts nobody."""
        revision = load_revision(self.open_source(base), self.cache, documents=False)
        return revision.fleet is not None and is_trusted(revision.fleet, author, teams, labels)

    def _reveal_credentials(self, revision: RevisionInputs) -> None:
        """Read every credential the fleet names that can be read here, so the state store refuses
        them before anything is written (providers read them again when they need them)."""
        credentials = self.pool.access.credentials
        for source in [*revision.fleet.spec.credentials.values(), *credentials.sources.values()]:
            with contextlib.suppress(FleetError):
                credentials.read(source, revision)


def _inputs(selected: Selected, **options: Any) -> RevisionInputs:
    """What providers get of the revision a selection is from: its Fleet and every document."""
    return RevisionInputs(
        selected.fleet, selected.everything, known_machines=selected.revision.machines, **options
    )


def _outcome_order(outcome: Outcome) -> tuple[str, str]:
    return (outcome.address, outcome.action)


@contextlib.contextmanager
def open_engine(
    settings: Settings, pool: ProviderPool, store: StateStore | None = None, cache: SpecCache | None = None
) -> Iterator[Engine]:
    engine = Engine(settings, pool, store, cache)
    try:
        yield engine
    finally:
        engine.close()
