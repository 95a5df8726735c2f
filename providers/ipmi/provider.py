"""The IPMI provider: observes and changes Machines through their BMCs.

Each observation or change is a small script (a generator) of BMC commands. One
scheduler thread runs all of them at once over a pool of worker processes: it
keeps the minimum interval between two commands to one BMC, holds the global,
per-rack and per-power-domain budgets, retries what may pass with backoff, and
gives up on a BMC at its deadline, so one slow or dead BMC never holds up the
rest. `observe` never sends a command that changes anything.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Generator, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, ClassVar

from providers.access import Access
from providers.base import (
    Action,
    ApplyResult,
    Change,
    Endpoint,
    Observation,
    Observed,
    RevisionInputs,
    UnknownReason,
)
from providers.credentials import UserPassword
from providers.ipmi.workers import WorkerPool
from reconciler.errors import FleetError, PermanentError
from reconciler.spec import models
from reconciler.spec.quantity import quantity_value

Command = tuple[str, dict[str, Any]]
# Hardware inventory changes with a screwdriver, not between passes: read it once an hour.
INVENTORY_TTL = 3600.0


@dataclasses.dataclass(frozen=True)
class Sleep:
    """Yielded by a script to wait without holding a worker (e.g. between power polls)."""

    seconds: float


class BmcFailure(Exception):
    def __init__(self, temporary: bool, reason: UnknownReason, message: str) -> None:
        super().__init__(message)
        self.temporary = temporary
        self.reason = reason
        self.message = message


Script = Generator[Command | Sleep, dict[str, Any], Any]


@dataclasses.dataclass(frozen=True)
class Timing:
    min_interval: float = 5.0
    timeout: float = 10.0
    retries: int = 2
    backoff: float = 0.5
    soft_off_grace: float = 120.0
    transition_timeout: float = 300.0
    # A session idle this long is opened again: BMCs drop one after 60 s of inactivity.
    session_idle: float = 30.0
    # How long a BMC's command waits for the busy worker holding its session before it logs in
    # on another: sessions stay one per BMC, yet a worker stuck on a slow BMC holds up no other.
    session_affinity: float = 1.0

    @classmethod
    def from_settings(cls, settings: models.IpmiSettings) -> Timing:
        return cls(
            min_interval=settings.minCommandIntervalSeconds,
            timeout=settings.timeoutSeconds,
            soft_off_grace=settings.softPowerOffGraceSeconds,
        )


@dataclasses.dataclass(eq=False)
class _Job:
    key: str  # the BMC endpoint
    endpoint: Endpoint
    credentials: UserPassword
    groups: tuple[str, ...]
    script: Script
    future: Future[Any]
    deadline: float
    pending: Command | None = None
    attempts: int = 0


class Scheduler:
    """Runs BMC scripts concurrently under budgets; one thread, many worker processes."""

    def __init__(self, workers: int, timing: Timing, budgets: Mapping[str, int], global_budget: int) -> None:
        self.timing = timing
        self.budgets = dict(budgets)
        self.global_budget = global_budget
        self._pool = WorkerPool(workers, session_idle=timing.session_idle)
        self._lock = threading.Condition()
        self._incoming: list[_Job] = []
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="fleet-ipmi-scheduler", daemon=True)
        self._thread.start()

    def set_budgets(self, budgets: Mapping[str, int]) -> None:
        """The per-group budgets of the fleet now planned (they come with each revision)."""
        with self._lock:
            self.budgets = dict(budgets)

    def submit(self, job: _Job) -> None:
        with self._lock:
            if self._closed:
                raise PermanentError("the IPMI provider is closed")
            self._incoming.append(job)
            self._lock.notify()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify()
        self._thread.join(timeout=30)
        self._pool.close()

    # --- the loop --------------------------------------------------------------------

    def _loop(self) -> None:
        jobs: set[_Job] = set()
        try:
            self._run(jobs)
        except BaseException as exc:
            error = PermanentError(f"the IPMI scheduler stopped: {type(exc).__name__}: {exc}")
            with self._lock:
                self._closed = True
                jobs.update(self._incoming)
                self._incoming = []
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(error)

    def _run(self, jobs: set[_Job]) -> None:
        """The scheduler proper; `jobs` collects every job it ever took, for `_loop`'s cleanup."""
        sequence = itertools.count()
        in_flight: dict[int, _Job] = {}
        in_use: dict[str, int] = defaultdict(int)
        busy_bmcs: set[str] = set()
        last_command: dict[str, float] = {}
        # The worker that holds each BMC's session: its next command goes there (the first to
        # the BMC's home worker), waiting up to `session_affinity` while that worker is busy, so
        # a run logs in to a BMC once, not once per worker (BMCs have few session slots).
        served_by: dict[str, int] = {}
        request_ids = itertools.count(1)
        # Jobs by the worker they wait for, each queue ordered by (not before, tie-break): a free
        # worker looks at its own queue, and at those of workers busy past the affinity, never at
        # the thousands of commands due for busy workers (a scan of them per reply would take
        # the CPU, and the interpreter, from the rest of the process).
        ready: dict[int, list[tuple[float, int, _Job]]] = defaultdict(list)

        def queue(job: _Job, not_before: float) -> None:
            requeue((not_before, next(sequence), job))

        def requeue(item: tuple[float, int, _Job]) -> None:
            key = item[2].key
            heapq.heappush(ready[served_by.get(key, self._pool.home(key))], item)

        def finish(job: _Job, value: Any = None, error: BaseException | None = None) -> None:
            jobs.discard(job)
            if not job.future.done():
                if error is not None:
                    job.future.set_exception(error)
                else:
                    job.future.set_result(value)

        def advance(job: _Job, reply: dict[str, Any] | None, failure: BmcFailure | None, now: float) -> None:
            """Feed a script the answer to its last command and queue what it asks next."""
            try:
                if failure is not None:
                    step = job.script.throw(failure)
                elif reply is None:
                    step = next(job.script)
                else:
                    step = job.script.send(reply)
            except StopIteration as stop:
                finish(job, stop.value)
                return
            except BaseException as exc:
                finish(job, error=exc)
                return
            if isinstance(step, Sleep):
                job.pending = None
                queue(job, now + step.seconds)
                return
            job.pending = step
            job.attempts = 0
            not_before = last_command.get(job.key, -1e9) + self.timing.min_interval
            queue(job, max(now, not_before))

        def take(
            waiting: list[tuple[float, int, _Job]],
            own: int | None,
            idle: list[int],
            now: float,
            deferred: list[tuple[float, int, _Job]],
        ) -> None:
            """Send the due jobs of `waiting` to `own`, the worker they wait for, while it is idle;
            or (None) to any idle worker. A job over a budget goes to `deferred`."""
            while waiting and waiting[0][0] <= now and idle and (own is None or own in idle):
                item = heapq.heappop(waiting)
                job = item[2]
                if now > job.deadline:
                    advance(
                        job,
                        None,
                        BmcFailure(
                            True, UnknownReason.TIMEOUT, f"BMC {job.endpoint}: no answer before the deadline"
                        ),
                        now,
                    )
                    continue
                if job.pending is None:  # a Sleep ended
                    advance(job, {}, None, now)
                    continue
                over_budget = (
                    job.key in busy_bmcs
                    or len(in_flight) >= self.global_budget
                    or any(in_use[g] >= self.budgets.get(g, 1 << 30) for g in job.groups)
                )
                if over_budget:
                    deferred.append(item)
                    continue
                worker = own if own is not None else idle[0]
                idle.remove(worker)
                request_id = next(request_ids)
                op, args = job.pending
                credentials = job.credentials
                request = (
                    request_id,
                    job.endpoint.host,
                    job.endpoint.port,
                    credentials.username,
                    credentials.password.reveal(),
                    op,
                    args,
                )
                if not self._pool.submit(worker, request, now):
                    deferred.append(item)  # that worker had died and was replaced; try again
                    continue
                in_flight[request_id] = job
                served_by[job.key] = worker
                busy_bmcs.add(job.key)
                last_command[job.key] = now
                for group in job.groups:
                    in_use[group] += 1

        while True:
            now = time.monotonic()
            with self._lock:
                arrived, self._incoming = self._incoming, []
                closing = self._closed
            jobs.update(arrived)
            for job in arrived:
                advance(job, None, None, now)
            if closing:
                for _, _, job in itertools.chain.from_iterable(ready.values()):
                    finish(job, error=PermanentError("the IPMI provider was closed"))
                for job in in_flight.values():
                    finish(job, error=PermanentError("the IPMI provider was closed"))
                return

            # Dispatch every job whose time has come, as budgets and idle workers allow: each idle
            # worker takes from its own queue first, then from that of a worker busy past the
            # affinity (the BMC logs in on another worker rather than wait longer).
            deferred: list[tuple[float, int, _Job]] = []
            idle = self._pool.idle()
            for worker in list(idle):
                take(ready[worker], worker, idle, now, deferred)
            for worker, waiting in list(ready.items()):
                past_affinity = now - self._pool.busy_since(worker) >= self.timing.session_affinity
                if idle and worker not in idle and past_affinity:
                    take(waiting, None, idle, now, deferred)
            for item in deferred:
                requeue(item)

            # Sleep until the next job falls due, or a reply frees a worker or a budget. A job
            # that is due but blocked waits for a reply: nothing else can unblock it.
            wait = 0.2
            heads = [waiting[0][0] for waiting in ready.values() if waiting]
            upcoming = min(heads, default=None)
            if upcoming is not None and upcoming > time.monotonic() and not deferred:
                wait = min(wait, upcoming - time.monotonic())
            wait = max(wait, 0.0005)
            if not in_flight:
                with self._lock:
                    if not self._incoming and not self._closed:
                        self._lock.wait(timeout=wait)
                continue

            for request_id, ok, payload in self._pool.wait(wait):
                job = in_flight.pop(request_id)
                self._release(job, busy_bmcs, in_use)
                now = time.monotonic()
                last_command[job.key] = now  # as Ironic: the interval runs from the end of a command
                if ok:
                    advance(job, payload, None, now)
                    continue
                temporary, reason, message = payload
                failure = BmcFailure(bool(temporary), UnknownReason(reason), str(message))
                if failure.temporary and job.attempts < self.timing.retries and now < job.deadline:
                    job.attempts += 1
                    delay = self.timing.backoff * (2 ** (job.attempts - 1))
                    not_before = max(now + delay, last_command[job.key] + self.timing.min_interval)
                    queue(job, not_before)
                else:
                    advance(job, None, failure, now)

            now = time.monotonic()
            for worker, request_id in self._pool.stuck(now, self.timing.timeout):
                self._pool.replace(worker)
                job = in_flight.pop(request_id)
                self._release(job, busy_bmcs, in_use)
                advance(
                    job,
                    None,
                    BmcFailure(
                        True,
                        UnknownReason.TIMEOUT,
                        f"BMC {job.endpoint} did not answer within {self.timing.timeout:g} s",
                    ),
                    now,
                )

    @staticmethod
    def _release(job: _Job, busy_bmcs: set[str], in_use: dict[str, int]) -> None:
        busy_bmcs.discard(job.key)
        for group in job.groups:
            in_use[group] -= 1


# --- scripts: what one observation or change says to one BMC ---------------------------


def observe_script(
    machine: models.Machine,
    address: str,
    inventory: Mapping[str, Any] | None,
    remember: Callable[[dict[str, Any]], None],
) -> Script:
    """Power and boot device every pass; the inventory only when none is cached."""
    try:
        power = yield ("power", {})
        boot = yield ("bootdev", {})
    except BmcFailure as failure:
        return Observation.unknown(address, failure.reason, failure.message)
    if inventory is None:
        try:
            inventory = yield ("inventory", {})
            remember(dict(inventory))
        except BmcFailure:
            inventory = {}  # informational only: power and boot device were observed
    fields = {"power": power["power"], "reachable": True, **boot, "inventory": inventory}
    return Observation.observed(address, fields, warnings=hardware_warnings(machine, inventory))


def hardware_warnings(machine: models.Machine, inventory: Mapping[str, Any]) -> list[str]:
    """Expected hardware is compared, never enforced: differences are warnings."""
    expected = machine.spec.hardware
    if expected is None:
        return []
    warnings = []
    if expected.product and inventory.get("product") and expected.product != inventory["product"]:
        warnings.append(
            f"BMC reports product {inventory['product']!r}, the spec expects {expected.product!r}"
        )
    if expected.serial and inventory.get("serial") and expected.serial != inventory["serial"]:
        warnings.append(f"BMC reports serial {inventory['serial']!r}, the spec expects {expected.serial!r}")
    if expected.cpus and inventory.get("cpus") and expected.cpus != inventory["cpus"]:
        warnings.append(f"BMC reports {inventory['cpus']} CPUs, the spec expects {expected.cpus}")
    if expected.memory and inventory.get("memoryMiB"):
        want = int(quantity_value(expected.memory) / (1024 * 1024))
        if want != inventory["memoryMiB"]:
            warnings.append(
                f"BMC reports {inventory['memoryMiB']} MiB of memory, the spec expects {expected.memory}"
            )
    return warnings


def _wait_for_power(
    want: str, timing: Timing, until: float
) -> Generator[Command | Sleep, dict[str, Any], bool]:
    poll = max(1.0, timing.min_interval) if timing.min_interval >= 1 else max(0.05, timing.min_interval)
    while True:
        state = yield ("power", {})
        if state["power"] == want:
            return True
        if time.monotonic() >= until:
            return False
        yield Sleep(poll)


def apply_script(change: Change, timing: Timing) -> Script:
    started = time.monotonic()
    machine = change.desired
    assert isinstance(machine, models.Machine)

    def result(ok: bool, changed: bool, message: str) -> ApplyResult:
        return ApplyResult(change.address, change.action, ok, changed, message, time.monotonic() - started)

    try:
        if change.action is Action.BOOT_DEVICE:
            want = {"bootDevice": machine.spec.bootDevice, "bootPersistent": machine.spec.bootPersistent}
            boot = yield ("bootdev", {})
            if boot == want:
                return result(True, False, f"boot device already {machine.spec.bootDevice}")
            yield (
                "set_bootdev",
                {"device": machine.spec.bootDevice, "persistent": machine.spec.bootPersistent},
            )
            boot = yield ("bootdev", {})
            if boot["bootDevice"] != machine.spec.bootDevice:
                return result(
                    False,
                    True,
                    f"boot device is {boot['bootDevice']} after setting {machine.spec.bootDevice}",
                )
            return result(True, True, f"boot device set to {machine.spec.bootDevice}")

        state = (yield ("power", {}))["power"]
        if change.action is Action.POWER_ON:
            if state == "on":
                return result(True, False, "already on")
            yield ("set_power", {"state": "on"})
            reached = yield from _wait_for_power("on", timing, time.monotonic() + timing.transition_timeout)
            return result(reached, True, "powered on" if reached else "still off after the power-on timeout")
        if change.action is Action.POWER_OFF:
            if state == "off":
                return result(True, False, "already off")
            yield ("set_power", {"state": "shutdown"})
            reached = yield from _wait_for_power("off", timing, time.monotonic() + timing.soft_off_grace)
            if reached:
                return result(True, True, "shut down by the operating system")
            yield ("set_power", {"state": "off"})
            reached = yield from _wait_for_power("off", timing, time.monotonic() + timing.transition_timeout)
            return result(
                reached, True, "powered off (hard, after the soft grace)" if reached else "still on"
            )
        if change.action is Action.POWER_CYCLE:
            yield ("set_power", {"state": "boot"})
            reached = yield from _wait_for_power("on", timing, time.monotonic() + timing.transition_timeout)
            return result(reached, True, "power cycled" if reached else "not on after the power cycle")
    except BmcFailure as failure:
        return result(False, False, failure.message)
    return result(False, False, f"the IPMI provider cannot {change.action.value}")


# --- the provider ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Of one Fleet document: each rack's power domain, and the per-rack and per-domain budgets."""

    fleet: models.Fleet
    power_domains: dict[tuple[str, str], str]
    budgets: dict[str, int]

    @classmethod
    def of(cls, fleet: models.Fleet) -> _Layout:
        power_domains: dict[tuple[str, str], str] = {}
        budgets: dict[str, int] = {}
        for site in fleet.spec.sites:
            domains = {d.name: d for d in site.powerDomains}
            for rack in site.racks:
                if rack.powerDomain:
                    power_domains[(site.name, rack.name)] = rack.powerDomain
                if rack.maxConcurrent is not None:
                    budgets[f"rack:{site.name}/{rack.name}"] = rack.maxConcurrent
                domain = domains.get(rack.powerDomain or "")
                if domain is not None and domain.maxConcurrent is not None:
                    budgets[f"power:{site.name}/{domain.name}"] = domain.maxConcurrent
        return cls(fleet, power_domains, budgets)


class IpmiProvider:
    """Machines, through their BMCs. Thread-safe: observe and apply may run concurrently."""

    kind: ClassVar[str] = "Machine"

    def __init__(
        self,
        settings: models.IpmiSettings,
        access: Access,
        *,
        workers: int | None = None,
        timing: Timing | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.access = access
        self.timing = timing or Timing.from_settings(settings)
        self._clock = clock
        self._inventory: dict[str, tuple[float, dict[str, Any]]] = {}
        self._inventory_lock = threading.Lock()
        self._last_layout: _Layout | None = None
        # pyghmi spends CPU per packet; three workers a core keep the cores busy while others wait.
        count = workers if workers is not None else 3 * (os.cpu_count() or 1)
        self._scheduler = Scheduler(
            min(count, settings.maxConcurrent), self.timing, {}, settings.maxConcurrent
        )

    def _layout(self, fleet: models.Fleet) -> _Layout:
        """The fleet's racks and budgets, worked out once per Fleet document."""
        with self._inventory_lock:
            if self._last_layout is not None and self._last_layout.fleet is fleet:
                return self._last_layout
        layout = _Layout.of(fleet)
        with self._inventory_lock:
            self._last_layout = layout
        return layout

    def _groups(self, machine: models.Machine, layout: _Layout) -> tuple[str, ...]:
        site, rack_name = machine.spec.site, machine.spec.rack
        groups = [f"rack:{site}/{rack_name}"]
        domain = layout.power_domains.get((site, rack_name))
        if domain:
            groups.append(f"power:{site}/{domain}")
        return tuple(groups)

    def _job(self, machine: models.Machine, inputs: RevisionInputs, script: Script, deadline: float) -> _Job:
        """The job of one script; raises FleetError when the BMC's credential cannot be read."""
        bmc = machine.spec.bmc
        endpoint = self.access.endpoints.endpoint(bmc.address, bmc.port)
        credentials = self.access.credentials.user_password(bmc.credentialsRef, inputs)
        groups = self._groups(machine, self._layout(inputs.fleet))
        return _Job(str(endpoint), endpoint, credentials, groups, script, Future(), deadline)

    def _cached_inventory(self, key: str) -> dict[str, Any] | None:
        with self._inventory_lock:
            cached = self._inventory.get(key)
        if cached is None or self._clock() - cached[0] > INVENTORY_TTL:
            return None
        return cached[1]

    def _remember_inventory(self, key: str) -> Callable[[dict[str, Any]], None]:
        def remember(inventory: dict[str, Any]) -> None:
            with self._inventory_lock:
                self._inventory[key] = (self._clock(), inventory)

        return remember

    def observe(self, specs: Sequence[models.Document], inputs: RevisionInputs) -> Observed:
        futures: list[tuple[str, Future[Any]]] = []
        results: list[Observation] = []
        self._scheduler.set_budgets(self._layout(inputs.fleet).budgets)
        # A pass gets time for every command of a BMC plus the retries, spaced by the interval.
        deadline = time.monotonic() + 3 * (self.timing.timeout + self.timing.min_interval) * (
            self.timing.retries + 1
        )
        for spec in specs:
            assert isinstance(spec, models.Machine)
            address = spec.address
            key = str(self.access.endpoints.endpoint(spec.spec.bmc.address, spec.spec.bmc.port))
            try:
                job = self._job(
                    spec,
                    inputs,
                    observe_script(spec, address, self._cached_inventory(key), self._remember_inventory(key)),
                    deadline,
                )
            except FleetError as exc:  # a Secret's API server may be down too: still unknown
                results.append(Observation.unknown(address, UnknownReason.CREDENTIALS_MISSING, str(exc)))
                continue
            self._scheduler.submit(job)
            futures.append((address, job.future))
        for address, future in futures:
            try:
                results.append(future.result())
            except PermanentError as exc:
                results.append(Observation.unknown(address, UnknownReason.NOT_ATTEMPTED, str(exc)))
        return Observed(tuple(results))

    def apply(self, change: Change, inputs: RevisionInputs) -> ApplyResult:
        machine = change.desired
        if not isinstance(machine, models.Machine):
            what = change.desired.kind_name if change.desired is not None else "orphans"
            raise PermanentError(f"the IPMI provider changes specified Machines, not {what}")
        self._scheduler.set_budgets(self._layout(inputs.fleet).budgets)
        deadline = time.monotonic() + self.timing.soft_off_grace + 2 * self.timing.transition_timeout + 60
        try:
            job = self._job(machine, inputs, apply_script(change, self.timing), deadline)
        except FleetError as exc:
            return ApplyResult(change.address, change.action, False, False, str(exc))
        self._scheduler.submit(job)
        result = job.future.result()
        assert isinstance(result, ApplyResult)
        return result

    def close(self) -> None:
        self._scheduler.close()

    def __enter__(self) -> IpmiProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
