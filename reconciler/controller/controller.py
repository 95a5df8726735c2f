"""The controller of one replica: follows the fleet repo, decides when and what to reconcile, and
calls the engine for it. It has no run logic of its own.

- **Following.** A poll (on the interval, or at once when a webhook says the branch moved) reads
  the followed source. A new revision goes through the engine's validation gate: an invalid one
  is recorded as the last attempted, with its diagnostics, and nothing is applied: the last good
  revision stays in force. A valid one is in force at once, and the resources it changed (and
  those depending on them) are reconciled at once.
- **Level-based passes.** Every `policies.drift.intervalMinutes`, a pass per kind and site plans
  every resource against live state and applies what the plan changes: drift is corrected where
  the field is enforced and only recorded where it is observed. A pass run twice is harmless; after
  a crash, the next pass recomputes everything from Git and live state.
- **Policies hold as for a person.** A batch over the blast radius, or outside its change window,
  waits (shown as waiting, with the reason); the controller never allows destruction or declares
  an emergency by itself. A resource whose actions keep failing backs off exponentially (capped).

Units of work (a poll, a (kind, site) batch) run one at a time on this replica's `WorkQueue`.
Alone (SQLite), the controller puts them there itself, merging a pending duplicate. With several
replicas on PostgreSQL, `SharedJobs` hands them out through procrastinate, and the replica that
takes a job runs it on its own queue: the job functions are the same. Everything replicas must
agree on lives in the state store: the revisions in force and attempted, each resource's state
and back-off, and when the repo was last polled and the last drift pass planned.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import threading
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from providers.base import RevisionInputs
from reconciler.controller.follow import Followed, revision_id
from reconciler.controller.metrics import Metrics
from reconciler.controller.queue import WorkQueue
from reconciler.engine import CancelToken, Engine, RunOptions, Selection, SyncResult
from reconciler.engine.changes import affected, changed_files, file_digests, without_directory
from reconciler.engine.pipeline import process_name
from reconciler.engine.suspensions import SuspensionResult
from reconciler.errors import FleetError, PermanentError, TemporaryError
from reconciler.kinds import KINDS, kind_named, kind_of
from reconciler.plan.model import Finding, Plan
from reconciler.settings import process_environment
from reconciler.source import SourceRef
from reconciler.source.git import GitCredentials, branch_head, changed_paths, fetch_pull_head
from reconciler.spec import models
from reconciler.spec.loader import LoadedRevision
from reconciler.state import ResourceState, RevisionState
from reconciler.vcs.comment import comment_on_pull_request
from reconciler.vcs.context import PullRequestRef, forge_for, token_of
from reconciler.vcs.drift import report_drift

MAX_DIAGNOSTICS = 50  # shown per invalid revision; the count says how many there were
BACKOFF_BASE = 30.0  # seconds before the first retry of a failing resource
BACKOFF_CAP = 3600.0
TOKENS_KEPT_SECONDS = 60.0  # a rotated API token is taken within a minute
ALL = None  # a batch's whole (kind, site)
METRICS_REFRESH_SECONDS = 15.0  # store-wide gauges are read again this often, work or not
STATUS_EVERY_SECONDS = 1.0  # the status is read again at least this often
STATUS_STALE_SECONDS = 5.0  # an older status (the store does not answer) is not served: 503

Log = Callable[..., None]
T = TypeVar("T")


Batch = tuple[str, str]  # (kind, site)


class PlanChanged(PermanentError):
    """The plan a person confirmed is not the plan that would run now."""


class SharedJobs(Protocol):
    """How several replicas share the units of work (see `shared.py`)."""

    def start(self, controller: Controller) -> None: ...

    def stop(self, grace: float) -> bool: ...

    def defer_poll(self, why: str) -> None: ...

    def defer_sync(self, batch: Batch, addresses: list[str] | None, why: str) -> None: ...

    def queue(self) -> tuple[list[str], int, list[str]]:
        """Units running (on every replica), how many wait, the first waiting ones."""
        ...

    def live_replicas(self) -> int: ...

    def defer_pull(self, pull: PullRequestRef) -> None: ...

    def defer_drift_report(self, why: str) -> None: ...


@dataclasses.dataclass
class _InForce:
    revision: str
    commit: str | None
    loaded: LoadedRevision
    files: dict[str, str]

    @functools.cached_property
    def batches(self) -> dict[Batch, set[str]]:
        """Every (kind, site) batch of the revision, worked out once: a pass and each unit of
        work ask for them, and a revision of 100,000 documents takes a while to sort."""
        return _batches(self.loaded)

    @functools.cached_property
    def inputs(self) -> RevisionInputs | None:
        """What a secret of the revision is read with (its Fleet and documents): built once."""
        if self.loaded.fleet is None:
            return None
        return RevisionInputs.of(self.loaded.fleet, (d.document for d in self.loaded.documents))


@dataclasses.dataclass(frozen=True)
class StatusSnapshot:
    """The status as one read of the store and the queue found it, with its JSON: what every
    status call answers, however many ask at once, without reading anything itself."""

    taken: float  # time.monotonic()
    answer: dict[str, Any]
    body: bytes


class Controller:
    """Follows `followed` and reconciles it through `engine`; start() and stop() it. With
    `shared`, units of work are shared with the other replicas on the same PostgreSQL."""

    def __init__(
        self,
        engine: Engine,
        followed: Followed,
        *,
        poll_interval: float | None = None,
        drift_interval: float | None = None,
        log: Log | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        shared: SharedJobs | None = None,
    ) -> None:
        self.engine = engine
        self.followed = followed
        self.metrics = metrics or Metrics()
        self.replica = process_name()
        self._store = engine.store
        self._poll_interval = poll_interval
        self._drift_interval = drift_interval
        self._log: Log = log or (lambda event, **fields: None)
        self._clock = clock
        self._shared = shared
        self._lock = threading.Lock()
        self._cancel = CancelToken()
        self._queue = WorkQueue(self._job_failed)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._in_force: _InForce | None = None
        self._status: StatusSnapshot | None = None
        self._status_lock = threading.Lock()
        self._status_failing = False
        self._wanted: dict[Batch, set[str] | None] = {}
        self._next_pass = 0.0
        self._tokens: tuple[str, float, dict[str, tuple[str, str]]] | None = None
        self._tokens_lock = threading.Lock()
        self._emergencies = itertools.count(1)
        self._scheduler = threading.Thread(
            target=self._schedule, name="fleet-controller-schedule", daemon=True
        )
        self._status_keeper = threading.Thread(
            target=self._keep_status, name="fleet-controller-status", daemon=True
        )

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Mark the runs a dead process left open as interrupted, then follow and serve."""
        self.interrupt_abandoned()
        if self._shared is not None:
            self._shared.start(self)  # the status reads the shared queue
        self._publish_status()
        self._status_keeper.start()
        self._scheduler.start()

    def stop(self, grace: float = 30.0) -> bool:
        """Take no more work and let the running unit finish within `grace` seconds; then cancel
        it (running actions finish, the rest are recorded as not run, leases are released)."""
        self._stopping.set()
        self._wake.set()
        running, _ = self._queue.snapshot()
        started = time.monotonic()
        if self._shared is not None:
            self._shared.stop(grace)  # takes no more jobs; the running one ends within grace
        done = self._queue.stop(max(0.0, grace - (time.monotonic() - started)))
        if not done:
            self._cancel.cancel("the controller is stopping")
            done = self._queue.stop(10.0)
        self._scheduler.join(timeout=5)
        if self._status_keeper.is_alive():
            self._status_keeper.join(timeout=5)
        self._log("controller stopped", running=running, drained=done)
        return done

    def interrupt_abandoned(self) -> None:
        """Runs a dead process left open (their leases expired) are marked interrupted."""
        if self._store.read_only:
            return
        cutoff = self._clock() - timedelta(seconds=self.engine.settings.lease_ttl)
        abandoned = self._store.interrupt_abandoned(cutoff)
        if abandoned:
            self._log("runs left open by a stopped process marked interrupted", runs=abandoned)

    def request_poll(self, why: str) -> None:
        """Look at the followed source now (a webhook said it moved); returns at once."""
        self._log("poll requested", why=why)
        if self._shared is not None:
            self._shared.defer_poll(why)
        else:
            self._queue.submit("poll", self.poll)
        self._update_queue_metric()

    def request_pull(self, pull: PullRequestRef) -> None:
        """Plan a pull request and keep its comment and status (a webhook said it was opened,
        pushed to or labelled); returns at once."""
        self._log("pull request plan requested", pull=pull.number, head=pull.head[:12])
        if self._shared is not None:
            self._shared.defer_pull(pull)
        else:
            self._queue.submit(f"pr:{pull.number}:{pull.head}", lambda: self.comment(pull))
        self._update_queue_metric()

    def idle(self, timeout: float) -> bool:
        """Wait until no work is waiting or running here (for tests and a drained shutdown)."""
        return self._queue.idle(timeout)

    # --- what it shows -----------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """A revision is in force (and so status and passes mean something)."""
        return self._in_force is not None

    def status(self) -> StatusSnapshot:
        """The status as last read: at most a second old, and read again at once when this
        replica changes what it shows. Answering it reads nothing, so a status call costs the same
        for 35 resources as for 100,000, however many dashboards ask at once and however busy the
        engine is. Raises TemporaryError when the store has not answered for a while."""
        kept = self._status
        if kept is None or time.monotonic() - kept.taken > STATUS_STALE_SECONDS:
            raise TemporaryError("the status cannot be read now: the state store does not answer")
        return kept

    def _publish_status(self) -> StatusSnapshot:
        """Read the status (revisions, resources by kind and state, the queue, live replicas) and
        make it the one every status call answers; the resource metrics come from the same read."""
        with self._status_lock:
            taken = time.monotonic()
            revisions = self._store.revisions()
            counts, failing = self._store.resource_summary()
            if self._shared is not None:
                running, depth, waiting = self._shared.queue()
                replicas = self._shared.live_replicas()
            else:
                here, waiting = self._queue.snapshot()
                running, depth, replicas = ([here] if here else []), len(waiting), 1
            applied, attempted = revisions.get("applied"), revisions.get("attempted")
            answer = {
                "following": self.followed.describe(),
                "lastAppliedRevision": applied.as_json() if applied else None,
                "lastAttemptedRevision": attempted.as_json() if attempted else None,
                "resources": counts,
                "queue": {"depth": depth, "running": running, "waiting": waiting[:100]},
                "replicas": {"this": self.replica, "live": replicas},
                "failing": [r.as_json() for r in failing],
            }
            flat = {(kind, state): n for kind, states in counts.items() for state, n in states.items()}
            self.metrics.set_resources(flat, set(KINDS) - {"Fleet"})
            self._status = StatusSnapshot(taken, answer, json.dumps(answer).encode())
            return self._status

    def _keep_status(self) -> None:
        """Read the status again every second (the queue, other replicas' work), and the API
        tokens every minute (a rotated one is taken), until the controller stops."""
        while not self._stopping.wait(STATUS_EVERY_SECONDS):
            try:
                self._publish_status()
            except Exception as exc:  # kept going: the store may answer again next time
                if not self._status_failing:
                    error = str(exc) if isinstance(exc, FleetError) else f"{type(exc).__name__}: {exc}"
                    self._log("the status cannot be read", error=error[:500])
                self._status_failing = True
            else:
                if self._status_failing:
                    self._log("the status is read again")
                self._status_failing = False
            in_force, kept = self._in_force, self._tokens
            if in_force is not None and kept is not None and time.monotonic() - kept[1] > TOKENS_KEPT_SECONDS:
                self._read_tokens(in_force, unless_moved_on=True)

    def revision_in_force(self) -> tuple[str, str | None, LoadedRevision] | None:
        """The revision this replica reconciles: its id, commit and loaded documents."""
        in_force = self._in_force
        if in_force is None:
            return None
        return in_force.revision, in_force.commit, in_force.loaded

    def spec_files(self) -> tuple[str | None, dict[str, bytes]]:
        """The revision in force and its YAML files by path (for where each document starts)."""
        in_force = self._in_force
        if in_force is None:
            return None, {}
        wanted = {d.path for d in in_force.loaded.documents}
        try:
            snapshot = self.engine.open_source(self.followed.at(in_force.commit))
            return in_force.revision, {f.path: snapshot.read(f) for f in snapshot.files if f.path in wanted}
        except FleetError as exc:
            self._log("the revision in force cannot be read", revision=in_force.revision, error=str(exc))
            return in_force.revision, {}

    def resources(self) -> list[ResourceState]:
        """The resources of the revision in force (and the orphans), by address."""
        in_force = self._in_force
        if in_force is None:
            return []
        return [s for _, s in sorted(self._store.resource_states().items())]

    def resource(self, address: str) -> ResourceState | None:
        return self._store.resource_states([address]).get(address)

    def document(self, address: str) -> tuple[models.Document, str] | None:
        """The spec of `address` in the revision in force, with its file."""
        in_force = self._in_force
        if in_force is None:
            return None
        for loaded in in_force.loaded.documents:
            if loaded.document.address == address:
                return loaded.document, loaded.path
        return None

    def read_secret(self, ref: models.CredentialSource | str | None) -> str | None:
        """A secret the Fleet in force names (a webhook secret, an API token); None when it names
        none or it cannot be read now (said in the log, never the value)."""
        return self._secret(self._in_force, ref)

    def _secret(self, in_force: _InForce | None, ref: models.CredentialSource | str | None) -> str | None:
        revision = in_force.inputs if in_force is not None else None
        if ref is None or revision is None:
            return None
        try:
            return self.engine.pool.access.credentials.secret(ref, revision).reveal()
        except FleetError as exc:
            self._log("a secret of the controller cannot be read", reference=str(ref)[:80], error=exc.message)
            return None

    def webhook_secret(self, forge: str) -> str | None:
        """The secret of `forge`'s push webhooks the Fleet in force names (githubSecretRef,
        gitlabTokenRef); the environment's, when set, is taken before this is asked."""
        in_force = self._in_force
        if in_force is None or in_force.loaded.fleet is None:
            return None
        webhooks = in_force.loaded.fleet.spec.controller.webhooks
        return self.read_secret(webhooks.githubSecretRef if forge == "github" else webhooks.gitlabTokenRef)

    def api_tokens(self) -> dict[str, tuple[str, str]]:
        """The API's bearer tokens by value: (name, role). Read when a revision is taken and
        again every minute, never when asked: checking a token reads nothing."""
        kept = self._tokens
        return kept[2] if kept is not None else {}

    def _read_tokens(self, in_force: _InForce, *, unless_moved_on: bool = False) -> None:
        """The tokens `in_force` names, read now; with `unless_moved_on`, only while the kept ones
        are still of its revision (a newer revision's, taken meanwhile, stay)."""
        with self._tokens_lock:
            if unless_moved_on and (self._tokens is None or self._tokens[0] != in_force.revision):
                return
            tokens: dict[str, tuple[str, str]] = {}
            if in_force.loaded.fleet is not None:
                for token in in_force.loaded.fleet.spec.controller.apiTokens:
                    value = self._secret(in_force, token.credentialsRef)
                    if value:
                        tokens[value] = (token.name, token.role)
            self._tokens = (in_force.revision, time.monotonic(), tokens)

    def emergency(
        self,
        targets: tuple[str, ...],
        selector: str | None,
        options: RunOptions,
        *,
        fingerprint: str | None = None,
        timeout: float = 300.0,
    ) -> int:
        """`fleet reconcile --now` through this controller: ahead of every waiting unit, on the
        newest revision, with the same partial gate, guards and leases. Returns the run's id as
        soon as the run is recorded; raises what refused it (nothing applied then). With
        `fingerprint`, only the plan a person was shown runs: a different one is refused."""
        started = threading.Event()
        run_ids: list[int] = []

        def on_start(run_id: int) -> None:
            run_ids.append(run_id)
            started.set()

        def work() -> None:
            with self.engine.plan(
                self._newest(), Selection(None, selector, targets), partial=True
            ) as planned:
                if fingerprint is not None and planned.plan.fingerprint() != fingerprint:
                    raise PlanChanged(
                        "the plan changed since it was shown (live state or the revision moved)",
                        hint="look at the plan again and confirm the new one",
                    )
                self.engine.apply(planned, options, self._cancel, on_start=on_start)

        self._now(f"emergency:{next(self._emergencies)}", work, timeout, answered=started)
        self._update_queue_metric()
        if run_ids:
            return run_ids[0]
        raise TemporaryError("the emergency reconcile did not start")

    def preview(self, targets: tuple[str, ...], selector: str | None, *, timeout: float = 300.0) -> Plan:
        """The plan an emergency reconcile of `targets` or `selector` would run now (on this
        replica's queue, ahead of waiting units); nothing is applied or recorded."""

        def work() -> Plan:
            with self.engine.plan(
                self._newest(), Selection(None, selector, targets), partial=True
            ) as planned:
                return planned.plan

        found = self._now(f"preview:{next(self._emergencies)}", work, timeout)
        assert found is not None
        return found

    def suspend(
        self,
        selection: Selection,
        reason: str | None,
        operator: str,
        *,
        resume: bool = False,
        timeout: float = 120.0,
    ) -> dict[str, Any]:
        """`fleet suspend` (or resume) through this controller, recorded with `operator`; a resumed
        resource is reconciled at once. Returns what changed, as the CLI's `-o json` says it."""
        key = f"{'resume' if resume else 'suspend'}:{next(self._emergencies)}"

        def change() -> SuspensionResult:
            if resume:
                return self.engine.resume(self._newest(), selection, reason, operator=operator)
            assert reason is not None
            return self.engine.suspend(self._newest(), selection, reason, operator=operator)

        result = self._now(key, change, timeout)
        assert result is not None
        addresses = [s.address for s in result.change.changed]
        now = self._clock()
        changed = []
        for state in self._store.resource_states(addresses).values():
            if resume:
                changed.append(_set(state, "unknown", "resumed: the next reconcile looks at it", now))
            else:
                changed.append(_set(state, "suspended", f"suspended by {operator}: {reason}", now))
        self._store.save_resource_states(changed)
        self._update_resource_metrics()
        in_force = self._in_force
        if resume and in_force is not None and addresses:
            for batch, wanted in sorted(_batches(in_force.loaded, set(addresses)).items()):
                self._want(batch, wanted, f"resumed by {operator}")
        return {
            "run": result.change.run_id,
            "changed": addresses,
            "unchanged": [address for address, _ in result.change.unchanged],
            "annotated": dict(result.annotated),
        }

    def _newest(self) -> SourceRef:
        """The source of the newest revision taken through the gate (valid or not)."""
        attempted = self._store.revisions().get("attempted")
        return self.followed.at(attempted.commit if attempted is not None else None)

    def _now(
        self,
        key: str,
        work: Callable[[], T],
        timeout: float | None,
        *,
        answered: threading.Event | None = None,
        first: bool = True,
    ) -> T | None:
        """Run `work` on this replica's queue (the engine is used by one unit of work at a time;
        ahead of everything waiting when `first`) and wait for its result or its error, or until
        `work` sets `answered` (then None: it goes on running)."""
        done = answered or threading.Event()
        results: list[T] = []
        failures: list[BaseException] = []

        def unit() -> None:
            try:
                results.append(work())
            except BaseException as exc:
                failures.append(exc)
                if not isinstance(exc, FleetError):
                    raise
            finally:
                done.set()

        if not self._queue.submit(key, unit, first=first):
            raise TemporaryError("the controller is stopping", hint="call another replica")
        if not done.wait(timeout):
            raise TemporaryError(
                f"{key.split(':')[0]} is queued behind the running unit of work and has not started yet",
                hint="GET /api/v1/runs shows it when it starts",
            )
        if failures:
            raise failures[0]
        return results[0] if results else None

    # --- jobs: what a shared job runs, on this replica's queue ---------------------------------

    def run_poll(self) -> None:
        self._now("poll", self.poll, None, first=False)

    def run_sync(self, batch: Batch, addresses: list[str] | None, why: str) -> None:
        kind, site = batch
        self._now(
            f"sync:{kind}:{site}",
            lambda: self._sync(batch, set(addresses) if addresses is not None else ALL, why),
            None,
            first=False,
        )

    def run_pull(self, pull: PullRequestRef) -> None:
        self._now(f"pr:{pull.number}:{pull.head}", lambda: self.comment(pull), None, first=False)

    def comment(self, pull: PullRequestRef) -> None:
        """What `fleet pr comment` does, for a pull request into the followed branch."""
        repo = self.followed.repo
        if repo is None:
            self._log(
                "pull request not planned: fleet serve follows a working tree, not --repo", pull=pull.number
            )
            return
        settings = self.engine.settings
        try:
            fetch_pull_head(repo, pull.vcs, pull.number, settings.cache_dir)
            forge = forge_for(pull, settings, process_environment())
            try:
                done = comment_on_pull_request(
                    self.engine, pull, repo, directory=self.followed.directory, forge=forge
                )
            finally:
                forge.close()
        except FleetError as exc:
            self._log("pull request not commented", pull=pull.number, error=str(exc))
            return
        self._log(
            "pull request commented",
            pull=pull.number,
            head=pull.head[:12],
            status=done.state,
            comment=done.comment_action,
            api_calls=done.api_calls,
        )

    def _reports_drift(self) -> bool:
        settings = self.engine.settings
        return bool(getattr(settings, "drift_reports", False)) and self.followed.repo is not None

    def request_drift_report(self, why: str) -> None:
        """Keep the drift pull requests (one per site) up to date; returns at once."""
        self._log("drift report requested", why=why)
        if self._shared is not None:
            self._shared.defer_drift_report(why)
        else:
            self._queue.submit("drift-report", self.report_drift)

    def run_drift_report(self) -> None:
        self._now("drift-report", self.report_drift, None, first=False)

    def report_drift(self) -> None:
        """What `fleet drift-report` does, for the followed repository and branch."""
        settings = self.engine.settings
        repo, name, forge_kind = (
            self.followed.repo,
            getattr(settings, "repository_name", None),
            getattr(settings, "vcs", None),
        )
        if repo is None or not name or forge_kind is None:
            self._log("drift not reported: drift reports need --vcs and --repository-name")
            return
        where = PullRequestRef(vcs=forge_kind, project=name, number=0, base="", head="")
        try:
            forge = forge_for(where, settings, process_environment())
            token = token_of(where, settings, process_environment())
            credentials = GitCredentials.token(token, forge_kind) if token else None
            try:
                reports = report_drift(
                    self.engine,
                    repo,
                    self.followed.branch,
                    directory=self.followed.directory,
                    forge=forge,
                    credentials=credentials,
                    grace=timedelta(minutes=float(getattr(settings, "drift_grace", 60.0))),
                )
            finally:
                forge.close()
        except FleetError as exc:
            self._log("drift not reported", error=str(exc))
            return
        for report in reports:
            self._log(
                "drift reported",
                scope=report.scope,
                action=report.action,
                fields=report.fields,
                url=report.url,
            )

    def tick(self) -> None:
        """The shared schedule, run by one replica at a time, outside its queue (it uses no
        engine): ask for a poll when the poll interval has passed since any replica last asked,
        plan a pass when the drift interval has."""
        if self._store.mark_if_due("poll", self._interval() * 0.9):
            self.request_poll("interval")
        in_force = self._in_force
        if in_force is not None and self._store.mark_if_due("pass", self._drift_seconds(in_force) * 0.9):
            self._plan_passes("drift schedule")
        due = in_force is not None and self._reports_drift()
        if due and in_force and self._store.mark_if_due("drift-report", self._drift_seconds(in_force) * 0.9):
            self.request_drift_report("drift schedule")

    # --- the schedule ------------------------------------------------------------------------

    def _interval(self) -> float:
        if self._poll_interval is not None:
            return self._poll_interval
        in_force = self._in_force
        if in_force is not None and in_force.loaded.fleet is not None:
            return float(in_force.loaded.fleet.spec.controller.pollIntervalSeconds)
        return 60.0

    def _drift_seconds(self, in_force: _InForce) -> float:
        if self._drift_interval is not None:
            return self._drift_interval
        assert in_force.loaded.fleet is not None
        return float(in_force.loaded.fleet.spec.policies.drift.intervalMinutes * 60)

    def _schedule(self) -> None:
        """Alone: poll on the interval and plan passes on the drift schedule. Shared: the ticks
        are jobs (deferred once across replicas); this replica only follows the revision in
        force that any of them took."""
        self.request_poll("start")
        next_poll = time.monotonic() + self._interval()
        next_refresh = next_metrics = 0.0
        while not self._stopping.is_set():
            now = time.monotonic()
            if now >= next_metrics:
                self.refresh_metrics()
                next_metrics = now + METRICS_REFRESH_SECONDS
            if self._shared is not None:
                if now >= next_refresh:
                    self._queue.submit("refresh", self._refresh)
                    next_refresh = now + 2.0
            else:
                if now >= next_poll:
                    self.request_poll("interval")
                    next_poll = now + self._interval()
                if self._in_force is not None and self._next_pass and now >= self._next_pass:
                    self._plan_passes("drift schedule")
                    if self._reports_drift():
                        self.request_drift_report("drift schedule")
            self._update_queue_metric()
            self._wake.wait(timeout=min(1.0, max(0.05, next_poll - time.monotonic())))
            self._wake.clear()

    def _plan_passes(self, why: str) -> None:
        """Every (kind, site) batch of the revision in force, whole."""
        in_force = self._in_force
        if in_force is None or in_force.loaded.fleet is None:
            return
        self._next_pass = time.monotonic() + self._drift_seconds(in_force)
        for batch in sorted(in_force.batches):
            self._want(batch, ALL, why)

    def _want(self, batch: Batch, addresses: set[str] | None, why: str) -> None:
        if self._shared is not None:
            self._shared.defer_sync(batch, sorted(addresses) if addresses is not None else None, why)
            return
        with self._lock:
            if batch in self._wanted:
                current = self._wanted[batch]
                self._wanted[batch] = None if current is None or addresses is None else current | addresses
            else:
                self._wanted[batch] = addresses
        kind, site = batch
        self._queue.submit(f"sync:{kind}:{site}", lambda: self._sync_wanted(batch, why))

    def refresh_metrics(self) -> None:
        """Read the store-wide gauges again (replicas, revisions, resources): another replica may
        have changed them, and an idle replica must not go on showing what it saw last."""
        try:
            self.metrics.replicas.set(self._shared.live_replicas() if self._shared is not None else 1)
            for which, state in sorted(self._store.revisions().items()):
                self.metrics.set_revision(which, state.revision, state.valid, state.at.timestamp())
            self._update_resource_metrics()
        except FleetError as exc:
            self._log("metrics not refreshed", error=str(exc))

    def _update_queue_metric(self) -> None:
        self.metrics.queue_depth.set(self._queue.depth)

    def _job_failed(self, key: str, exc: BaseException) -> None:
        """A bug, not a fleet error (those are handled where they happen): where it happened goes
        into the log, for a report."""
        frames = traceback.extract_tb(exc.__traceback__)[-3:]
        where = [f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno} in {f.name}" for f in frames]
        self._log("unit of work failed", unit=key, error=f"{type(exc).__name__}: {exc}"[:500], where=where)

    # --- following ---------------------------------------------------------------------------

    def poll(self) -> None:
        """Read the followed source; take a new revision through the gate, and reconcile it."""
        started = time.monotonic()
        try:
            commit = None
            if self.followed.repo is not None:
                commit = branch_head(self.followed.repo, self.followed.branch, self.engine.settings.cache_dir)
            snapshot = self.engine.open_source(self.followed.at(commit))
        except FleetError as exc:
            self.metrics.fetch_errors.inc()
            self._log("fetch failed", error=str(exc))
            return
        finally:
            self.metrics.fetch_seconds.observe(time.monotonic() - started)
        self.metrics.fetch_success_time.set(self._clock().timestamp())
        revision = revision_id(snapshot)
        stored = self._store.revisions()
        attempted = stored.get("attempted")
        if attempted is not None and attempted.revision == revision:
            if self._in_force is None:
                self._refresh()
                if self._shared is None and self._in_force is not None:
                    self._plan_passes(f"revision {revision[:12]}: first pass")
            return
        loaded = self.engine.load(snapshot)
        now = self._clock()
        if loaded.errors or loaded.fleet is None:
            state = RevisionState(
                revision,
                commit,
                now,
                False,
                len(loaded.errors),
                tuple(d.render() for d in loaded.errors[:MAX_DIAGNOSTICS]),
            )
            self._store.set_revision("attempted", state)
            self._publish_status()
            self.metrics.set_revision("attempted", revision, False, now.timestamp())
            self._log(
                "revision refused: nothing applied, the last good revision stays in force",
                revision=revision,
                errors=len(loaded.errors),
                first=state.errors[0] if state.errors else "",
            )
            if self._in_force is None:
                self._refresh()  # serve the last good one of an earlier process or replica
            return
        previous = self._in_force
        applied = stored.get("applied")
        if previous is not None and (applied is None or previous.revision != applied.revision):
            previous = None  # another replica moved on meanwhile: compare with what it applied
        if previous is None and applied is not None:
            previous = self._load(applied)
        in_force = _InForce(revision, commit, loaded, file_digests(snapshot))
        self._take(in_force, previous)
        self._store.set_revision("attempted", RevisionState(revision, commit, now, True))
        self._store.set_revision("applied", RevisionState(revision, commit, now, True))
        self.metrics.set_revision("attempted", revision, True, now.timestamp())
        self._log("revision in force", revision=revision, previous=previous.revision if previous else None)
        if previous is None:
            self._store.mark_if_due("pass", 0)
            self._plan_passes(f"revision {revision[:12]}: first pass")
            return
        changed = changed_files(previous.files, in_force.files)
        if previous.commit and commit and self.followed.repo is not None:
            everything = changed_paths(
                self.followed.repo, previous.commit, commit, self.engine.settings.cache_dir
            )
            changed |= without_directory(everything, self.followed.directory)
        targets = affected(previous.loaded, loaded, changed)
        why = f"revision {revision[:12]}"
        if targets is None:
            self._store.mark_if_due("pass", 0)
            self._plan_passes(f"{why}: fleet.yaml changed or a document was removed")
            return
        for batch, addresses in sorted(_batches(loaded, targets).items()):
            self._want(batch, addresses, f"{why} changed them")

    def _take(self, in_force: _InForce, previous: _InForce | None = None) -> None:
        """`in_force` is the revision this replica reconciles; its resources get a state, and
        those fleet applied whose specs are gone show as orphaned. The controller only reports
        orphans: acting on one (the orphans policy's powerOff or delete) is destructive, which
        only a person allows (`fleet apply --allow-destructive` on the whole fleet). A revision
        with the same resources as the `previous` one in force (most commits: an edit) keeps
        their states as they are, without reading every state and every applied resource."""
        self._read_tokens(in_force)
        self._publish_status()  # before the revision shows as in force: the status shows its work
        self._in_force = in_force
        if previous is not None and previous.loaded.resources.keys() == in_force.loaded.resources.keys():
            self.metrics.set_revision("applied", in_force.revision, True, self._clock().timestamp())
            return
        present = {
            d.document.address: d.document.kind_name
            for d in in_force.loaded.documents
            if d.document.kind_name != "Fleet"
        }
        assert in_force.loaded.fleet is not None
        policy = in_force.loaded.fleet.spec.policies.orphans
        orphans = {}
        for address in sorted(self._store.applied_addresses() - set(present)):
            kind = kind_named(address.split("/", 1)[0])
            if kind is not None and kind.name != "Fleet":
                orphans[address] = kind.name
        self._store.keep_resource_states({**present, **orphans})
        now = self._clock()
        detail = f"its spec was removed; the orphans policy is {policy}, which only a person applies"
        self._store.save_resource_states(
            _set(state, "orphaned", detail, now) for state in self._store.resource_states(orphans).values()
        )
        self._update_resource_metrics()
        self.metrics.set_revision("applied", in_force.revision, True, self._clock().timestamp())

    def _load(self, state: RevisionState) -> _InForce | None:
        """A revision recorded as applied, read again (by a replica that did not take it, or
        after a restart); None when it cannot be read or no longer passes the gate."""
        try:
            snapshot = self.engine.open_source(self.followed.at(state.commit))
        except FleetError as exc:
            self._log("the revision in force cannot be read", revision=state.revision, error=str(exc))
            return None
        loaded = self.engine.load(snapshot)
        if loaded.errors or loaded.fleet is None:
            return None
        return _InForce(revision_id(snapshot), state.commit, loaded, file_digests(snapshot))

    def _refresh(self) -> None:
        """Follow the revision in force the store names (another replica may have taken it)."""
        applied = self._store.revisions().get("applied")
        if applied is None or (self._in_force is not None and self._in_force.revision == applied.revision):
            return
        found = self._load(applied)
        if found is not None:
            self._take(found)
            self._log("revision in force", revision=found.revision, taken_by="another replica or process")

    # --- a unit of work ----------------------------------------------------------------------

    def _sync_wanted(self, batch: Batch, why: str) -> None:
        with self._lock:
            if batch not in self._wanted:
                return
            wanted = self._wanted.pop(batch)
        self._sync(batch, wanted, why)

    def _sync(self, batch: Batch, wanted: set[str] | None, why: str) -> None:
        """Plan `wanted` of `batch` (all of it: None) against live state and apply the plan."""
        self._refresh()
        in_force = self._in_force
        if in_force is None:
            return
        if wanted is None:  # a whole pass: the revision's batches, worked out once
            chosen = in_force.batches.get(batch, set())
        else:  # some resources (a commit's): only theirs are looked at
            chosen = _batches(in_force.loaded, wanted).get(batch, set())
        now = self._clock()
        backing_off = {
            a
            for a, r in self._store.resource_states(chosen).items()
            if r.next_try is not None and r.next_try > now
        }
        targets = sorted(chosen - backing_off)
        if not targets:
            return
        kind, site = batch
        started = time.monotonic()
        reason = f"controller: {why}"
        self._log(
            "reconciling", kind=kind, site=site, resources=len(targets), why=why, revision=in_force.revision
        )
        try:
            result = self.engine.sync(
                self.followed.at(in_force.commit),
                Selection(targets=tuple(targets)),
                # A lease held by a replica that died is free within one TTL: wait that long.
                RunOptions(kind="reconcile", reason=reason, lock_wait_seconds=self.engine.settings.lease_ttl),
                self._cancel,
            )
        except FleetError as exc:
            self.metrics.reconcile_seconds.labels(kind, "error").observe(time.monotonic() - started)
            self._log("reconcile failed", kind=kind, site=site, error=str(exc))
            self._failed(targets, str(exc))
            return
        outcome = _outcome(result)
        self.metrics.reconcile_seconds.labels(kind, outcome).observe(time.monotonic() - started)
        self.metrics.observe_seconds.labels(kind).observe(result.observe_seconds)
        self._record(targets, result)
        run = result.run
        self._log(
            "reconciled",
            kind=kind,
            site=site,
            run=run.run_id if run else None,
            changes=len(result.plan.changes()),
            unknown=sum(1 for e in result.plan.entries if e.finding is Finding.UNKNOWN),
            result=outcome,
            refused=str(result.refused) if result.refused else None,
        )

    def _failed(self, addresses: list[str], error: str) -> None:
        now = self._clock()
        states = self._store.resource_states(addresses)
        self._store.save_resource_states(_back_off(s, error, now) for s in states.values())
        self._update_resource_metrics()

    def _record(self, addresses: list[str], result: SyncResult) -> None:
        """Each resource's state from the plan, the guard's refusal and the actions' outcomes."""
        now = self._clock()
        plan: Plan = result.plan
        held = {s.address: s for s in plan.suspended}
        entries: dict[str, list[Any]] = {}
        for entry in plan.entries:
            entries.setdefault(entry.address, []).append(entry)
        outcomes: dict[str, list[Any]] = {}
        report = result.run.report if result.run is not None else None
        if report is not None:
            for outcome in report.outcomes:
                outcomes.setdefault(outcome.address, []).append(outcome)
                self.metrics.actions.labels(
                    entries.get(outcome.address, [None])[0].kind if outcome.address in entries else "",
                    outcome.action,
                    outcome.result,
                ).inc()
            if report.interrupted and "lease" in report.reason:
                self.metrics.lease_losses.inc()
        changed = []
        for address, resource in self._store.resource_states(addresses).items():
            found = entries.get(address, [])
            done = outcomes.get(address, [])
            failed = [o for o in done if o.result == "failed"]
            skipped = [o for o in done if o.result == "skipped" and o.suspended]
            changes = [e for e in found if e.finding is Finding.CHANGE]
            if failed:
                changed.append(_back_off(resource, failed[0].message, now))
                continue
            resource = dataclasses.replace(resource, failures=0, last_error="", next_try=None)
            if address in held:
                resource = _set(resource, "suspended", held[address].describe(), now)
            elif any(e.finding is Finding.UNKNOWN for e in found):
                unknown = next(e for e in found if e.finding is Finding.UNKNOWN)
                resource = _set(resource, "unknown", unknown.detail or unknown.reason, now)
            elif skipped:
                resource = _set(resource, "waiting", skipped[0].message, now)
            elif changes and result.refused is not None:
                resource = _set(resource, "waiting", str(result.refused), now)
            elif not changes and (
                moved := [e for e in found if e.finding in (Finding.DRIFT, Finding.OBSERVE_ONLY)]
            ):
                resource = _set(resource, "drifted", _differences(moved), now)
            else:
                resource = _set(resource, "in sync", "", now)
            changed.append(resource)
        self._store.save_resource_states(changed)
        self._update_resource_metrics()

    def _update_resource_metrics(self) -> None:
        """A fresh status (and the metrics of the resources' states), after a change of them."""
        self._publish_status()
        kinds = set(KINDS) - {"Fleet"}
        self.metrics.set_drift_since(self._store.oldest_since("drifted"), kinds)
        self.metrics.set_unknowns(self._store.unknown_reasons(), kinds)


def _batches(loaded: LoadedRevision, only: set[str] | None = None) -> dict[Batch, set[str]]:
    """The (kind, site) batches of `loaded` (of its resources in `only`), with their addresses."""
    resources = loaded.resources
    chosen = resources.values() if only is None else [resources[a] for a in only if a in resources]
    batches: dict[Batch, set[str]] = {}
    for document in chosen:
        site = kind_of(document).site(document, loaded.machines) or "-"
        batches.setdefault((document.kind_name, site), set()).add(document.address)
    return batches


def _back_off(resource: ResourceState, error: str, now: datetime) -> ResourceState:
    failures = resource.failures + 1
    delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (failures - 1))
    failing = _set(resource, "failing", error[:200], now)
    return dataclasses.replace(
        failing, failures=failures, last_error=error[:500], next_try=now + timedelta(seconds=delay)
    )


def _set(resource: ResourceState, state: str, detail: str, now: datetime) -> ResourceState:
    since = now if resource.state != state or resource.since is None else resource.since
    return dataclasses.replace(resource, state=state, detail=detail, since=since)


def _differences(entries: list[Any]) -> str:
    """`power: on -> off (observed only)`: what moved, for a resource left drifted."""
    shown = []
    for entry in entries:
        how = "observed only" if entry.finding is Finding.OBSERVE_ONLY else "drift"
        for diff in entry.fields:
            if entry.finding is Finding.OBSERVE_ONLY:  # a change's diff: live before, spec after
                shown.append(
                    f"{diff.field}: spec {json.dumps(diff.after)}, live {json.dumps(diff.before)} ({how})"
                )
            else:  # drift's diff: last applied before, live after
                shown.append(
                    f"{diff.field}: applied {json.dumps(diff.before)}, live {json.dumps(diff.after)} ({how})"
                )
    return "; ".join(shown)[:500] or "differs from the spec (reported, not corrected)"


def _outcome(result: SyncResult) -> str:
    """How a unit of work ended, for the metrics and the log: refused by a guard, failed (an
    action did), incomplete (some resources could not be observed: unknown is never "ok"), or ok."""
    if result.refused is not None:
        return "refused"
    report = result.run.report if result.run is not None else None
    if report is not None and not report.ok:
        return "failed"
    if any(entry.finding is Finding.UNKNOWN for entry in result.plan.entries):
        return "incomplete"
    return "ok"
