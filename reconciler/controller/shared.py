"""Work shared by several replicas of `fleet serve` on one PostgreSQL, through procrastinate.

This is the only module that imports procrastinate. Its schema is set up by the state store's
own migrations (one `alembic upgrade` under the migration lock), so replicas never race to
create it. Each replica runs two procrastinate workers in one thread of its own:

- **work** (queue `fleet`): polls of the repo and syncs of a batch (a kind and a site, so that the
  IPMI provider keeps batching). A job runs on the replica's own `WorkQueue`, so the engine is
  used by one unit at a time and an emergency reconcile still goes ahead of waiting work. A sync
  job's `lock` is its batch, so no two replicas ever work on one batch at once; a whole-batch
  pass also has a `queueing_lock`, so pending duplicates merge (a repeat is not deferred). A poll
  has one too. No task uses procrastinate's retries: a retry that meets a queued sibling of its
  queueing lock violates the unique index and sticks in `doing` (procrastinate #1446, #1543),
  and a long retry backoff blocks everything behind its lock (#1599). A failing resource backs
  off in the controller's own state instead.
- **schedule** (queue `fleet-schedule`): two periodic tasks, each deferred once per tick across
  all replicas. `tick` asks for a poll when the poll interval has passed since any replica last
  polled, and plans a drift pass when the drift interval has (marks in the state store say when).
  `sweep` retries the jobs of a replica that stopped heartbeating: procrastinate does not retry
  the jobs of a SIGKILLed worker by itself. A swept job whose queueing lock a queued sibling
  already holds is cancelled instead: the sibling does the same work.

A lock is not a fenced lease: a paused replica can be swept while its job still runs. That is
safe because every action goes through the engine's fenced resource leases, and the retry waits
for the stopped replica's leases to expire. Successful jobs are deleted, so the jobs table stays
small.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import procrastinate
from procrastinate import exceptions as queue_errors
from procrastinate.jobs import Status

from reconciler.errors import StoreFailure
from reconciler.vcs.context import PullRequestRef

if TYPE_CHECKING:
    from reconciler.controller.controller import Batch, Controller

WORK = "fleet"
SCHEDULE = "fleet-schedule"
WORKERS_PER_REPLICA = 2  # work and schedule
STALLED_AFTER_SECONDS = 30.0  # a worker with no heartbeat for this long is stopped (the default)
# A worker heartbeats three times, and the sweep looks once, per stalled timeout (procrastinate's
# defaults: every 10 s for 30 s).

Log = Callable[..., None]


def _every(seconds: int) -> str:
    """A six-field cron (seconds last) for `seconds`, rounded to a divisor of a minute."""
    if seconds >= 60:
        return "* * * * *"
    divisor = max(d for d in (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30) if d <= max(seconds, 1))
    return f"* * * * * */{divisor}"


def libpq_url(url: str) -> str:
    """The store's SQLAlchemy URL as libpq takes it (no `+driver`)."""
    scheme, _, rest = url.partition("://")
    return f"{scheme.split('+', 1)[0]}://{rest}"


class SharedJobs:
    """procrastinate's queue for `fleet serve` replicas on the PostgreSQL at `url`."""

    def __init__(
        self, url: str, *, log: Log, tick_seconds: int = 5, stalled_after: float = STALLED_AFTER_SECONDS
    ) -> None:
        self._conninfo = libpq_url(url)
        self._log = log
        self._tick_seconds = tick_seconds
        self._stalled_after = stalled_after
        self._heartbeat = stalled_after / 3
        # Deferring and listing happen in any thread (webhooks, the API, jobs): a synchronous
        # pool of their own. The workers run on an event loop in their own thread.
        self._client = procrastinate.App(
            connector=procrastinate.SyncPsycopgConnector(conninfo=self._conninfo, min_size=1, max_size=4)
        )
        self._app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=self._conninfo))
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._workers: asyncio.Future[Any] | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self, controller: Controller) -> None:
        """Register the job functions of `controller` and start taking jobs."""
        try:
            self._client.open()
        except queue_errors.ConnectorException as exc:
            raise StoreFailure(f"the job queue cannot be reached: {exc}") from None
        self._register(controller)
        self._thread = threading.Thread(target=self._run, name="fleet-jobs", daemon=True)
        self._thread.start()
        self._started.wait(30)
        if self._failure is not None:
            raise StoreFailure(f"the job queue's workers did not start: {self._failure}")

    def stop(self, grace: float) -> bool:
        """Take no more jobs; the running ones get `grace` seconds to finish (then they are
        aborted, and procrastinate puts a job aborted by a shutdown back in the queue)."""
        loop, workers = self._loop, self._workers
        if loop is not None and workers is not None:
            loop.call_soon_threadsafe(workers.cancel)
        if self._thread is not None:
            self._thread.join(grace + 10)
        self._client.close()
        return self._thread is None or not self._thread.is_alive()

    def _run(self) -> None:
        async def work() -> None:
            async with self._app.open_async():
                self._loop = asyncio.get_running_loop()
                common: dict[str, Any] = {
                    "concurrency": 1,
                    "install_signal_handlers": False,
                    "delete_jobs": "successful",
                    "update_heartbeat_interval": self._heartbeat,
                    "stalled_worker_timeout": self._stalled_after,
                    "listen_notify": True,
                    "fetch_job_polling_interval": 2.0,
                }
                self._workers = asyncio.gather(
                    self._app.run_worker_async(queues=[WORK], name="work", **common),
                    self._app.run_worker_async(queues=[SCHEDULE], name="schedule", **common),
                )
                self._started.set()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._workers

        try:
            asyncio.run(work())
        except BaseException as exc:  # reported by start(), or in the log once running
            self._failure = exc
            self._log("the job queue's workers stopped", error=f"{type(exc).__name__}: {exc}"[:500])
        finally:
            self._started.set()

    # --- the job functions -------------------------------------------------------------------

    def _register(self, controller: Controller) -> None:
        app = self._app

        @app.task(name="fleet.poll", queue=WORK, queueing_lock="poll")
        def poll(why: str) -> None:
            controller.run_poll()

        @app.task(name="fleet.sync", queue=WORK)
        def sync(kind: str, site: str, addresses: list[str] | None, why: str) -> None:
            controller.run_sync((kind, site), addresses, why)

        @app.task(name="fleet.pull", queue=WORK)
        def pull(**fields: Any) -> None:
            controller.run_pull(PullRequestRef(**{**fields, "labels": tuple(fields.get("labels") or ())}))

        @app.task(name="fleet.drift-report", queue=WORK, queueing_lock="drift-report")
        def drift_report(why: str) -> None:
            controller.run_drift_report()

        @app.periodic(cron=_every(self._tick_seconds), periodic_id="tick")
        @app.task(name="fleet.tick", queue=SCHEDULE, queueing_lock="tick")
        def tick(timestamp: int) -> None:
            controller.tick()

        @app.periodic(cron=_every(max(1, int(self._heartbeat))), periodic_id="sweep")
        @app.task(name="fleet.sweep", queue=SCHEDULE, queueing_lock="sweep")
        async def sweep(timestamp: int) -> None:
            manager = app.job_manager
            for job in await manager.get_stalled_jobs(seconds_since_heartbeat=self._stalled_after):
                if job.id is None or job.task_name == "fleet.sweep":
                    continue
                try:
                    await manager.retry_job(job)
                    retried = True
                except queue_errors.ConnectorException:  # a queued sibling holds its queueing lock
                    await manager.finish_job(job, status=Status.ABORTED, delete_job=True)
                    retried = False
                self._log(
                    "the job of a stopped replica "
                    + ("retried" if retried else "merged into its queued twin"),
                    job=job.id,
                    task=job.task_name,
                    lock=job.lock,
                )
            await asyncio.to_thread(controller.interrupt_abandoned)

    # --- asking for work ---------------------------------------------------------------------

    def defer_poll(self, why: str) -> None:
        self._defer("fleet.poll", {"why": why[:200]}, queueing_lock="poll")

    def defer_sync(self, batch: Batch, addresses: list[str] | None, why: str) -> None:
        kind, site = batch
        self._defer(
            "fleet.sync",
            {"kind": kind, "site": site, "addresses": addresses, "why": why[:200]},
            lock=f"batch:{kind}:{site}",
            queueing_lock=f"pass:{kind}:{site}" if addresses is None else None,
        )

    def defer_pull(self, pull: PullRequestRef) -> None:
        # One pull request at a time (its lock); each push is planned, the newest posted last.
        fields = dataclasses.asdict(pull)
        self._defer(
            "fleet.pull", {**fields, "labels": list(pull.labels)}, lock=f"pr:{pull.project}:{pull.number}"
        )

    def defer_drift_report(self, why: str) -> None:
        self._defer("fleet.drift-report", {"why": why[:200]}, queueing_lock="drift-report")

    def _defer(self, task: str, arguments: dict[str, Any], **options: Any) -> None:
        try:
            self._client.configure_task(task, queue=WORK, **options).defer(**arguments)
        except queue_errors.AlreadyEnqueued:
            pass  # the same work is already waiting: merged
        except queue_errors.ConnectorException as exc:
            raise StoreFailure(f"the job queue cannot be reached: {exc}") from None

    # --- what it shows -----------------------------------------------------------------------

    def queue(self) -> tuple[list[str], int, list[str]]:
        manager = self._client.job_manager
        running = [_describe(job) for job in manager.list_jobs(queue=WORK, status=Status.DOING.value)]
        waiting = [_describe(job) for job in manager.list_jobs(queue=WORK, status=Status.TODO.value)]
        return running, len(waiting), waiting[:100]

    def live_replicas(self) -> int:
        try:
            rows = self._client.connector.execute_query_all(
                "SELECT count(*) AS live FROM procrastinate_workers"
                f" WHERE last_heartbeat > now() - interval '{int(self._stalled_after)} seconds'"
            )
        except queue_errors.ConnectorException as exc:
            raise StoreFailure(f"the job queue cannot be reached: {exc}") from None
        return max(1, int(rows[0]["live"]) // WORKERS_PER_REPLICA)


def _describe(job: Any) -> str:
    """`sync:Machine:nyc1`, `poll`: what a job is about, as the single replica's queue says it."""
    arguments = job.task_kwargs or {}
    if job.task_name == "fleet.sync":
        return f"sync:{arguments.get('kind')}:{arguments.get('site')}"
    if job.task_name == "fleet.pull":
        return f"pr:{arguments.get('number')}:{str(arguments.get('head'))[:12]}"
    return str(job.task_name).removeprefix("fleet.")
