"""Apply a Plan: its changes in waves, under budgets, each recorded before and after it runs.

A wave starts only when the one before it has ended; inside a wave at most `parallel`
changes run at once (providers add their own per-rack and per-power-domain budgets).
A failed change fails alone: the rest go on, and what depends on it is skipped. When the
run's cancellation token is set (Ctrl-C, shutdown, a lost lease), no new change starts,
running ones finish or time out, and the unfinished ones are recorded as interrupted with
the token's reason. Nothing here decides *what* to change.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from providers.base import Action, ApplyResult, BatchProvider, Provider, RevisionInputs
from providers.registry import CONFIG
from reconciler.apply.cancel import CancelToken
from reconciler.apply.record import Recorder
from reconciler.errors import FleetError, PermanentError, TemporaryError
from reconciler.kinds import KINDS
from reconciler.plan.model import Finding, Plan, PlanEntry, action_name
from reconciler.spec import models
from reconciler.state import LockLost, ResourceSuspended


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    address: str
    action: str
    result: str  # succeeded / failed / skipped / interrupted
    message: str
    seconds: float = 0.0
    changed: bool = False
    suspended: bool = False  # skipped because the resource (or one it waits for) is suspended


def suspended_skip(address: str, action: str, message: str) -> Outcome:
    return Outcome(address, action, "skipped", message, suspended=True)


@dataclasses.dataclass(frozen=True, slots=True)
class ApplyReport:
    run_id: int
    outcomes: tuple[Outcome, ...]
    interrupted: bool
    reason: str = ""  # why it was interrupted

    @property
    def ok(self) -> bool:
        """Every change succeeded, but those held back because suspended: a suspension is
        what someone asked for, not a failure."""
        return not self.interrupted and all(o.result == "succeeded" or o.suspended for o in self.outcomes)

    def count(self, result: str) -> int:
        return sum(1 for o in self.outcomes if o.result == result)


def provider_key(entry: PlanEntry) -> str:
    """Which provider applies an entry: its kind's, or the configuration's for `configure`."""
    return CONFIG if entry.action is Action.CONFIGURE else KINDS[entry.kind].provider


Reporter = Callable[[Outcome], None]
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Retry:
    """How temporary failures are retried: `attempts` in all, waiting as long as the error asks
    (`TemporaryError.delay`) but at least the backoff (0.5 s, 1, 2, ... 10)."""

    attempts: int = 3

    def wait(self, state: RetryCallState) -> float:
        backoff = min(10.0, 0.5 * 2.0 ** (state.attempt_number - 1))
        error = state.outcome.exception() if state.outcome is not None else None
        asked = error.delay if isinstance(error, TemporaryError) else 0.0
        return max(backoff, asked)

    def run(self, call: Callable[[], T], cancel: CancelToken) -> T:
        """Call until it returns, raises a permanent error, runs out of attempts or is cancelled."""
        for attempt in Retrying(
            retry=retry_if_exception_type(TemporaryError),
            stop=stop_after_attempt(max(1, self.attempts)),
            wait=self.wait,
            sleep=lambda seconds: _sleep_unless(cancel, seconds),
            reraise=True,
        ):
            with attempt:
                return call()
        raise PermanentError("unreachable")  # pragma: no cover - Retrying either returns or raises


class _Cancelled(TemporaryError):
    """Raised instead of sleeping before a retry when the run was cancelled meanwhile."""


def _sleep_unless(cancel: CancelToken, seconds: float) -> None:
    if cancel.wait(seconds):
        raise _Cancelled(f"not retried: {cancel.reason}")


def execute(
    plan: Plan,
    documents: Mapping[str, models.Document],
    providers: Mapping[str, Provider],
    inputs: RevisionInputs,
    recorder: Recorder,
    cancel: CancelToken,
    *,
    parallel: int = 16,
    action_timeout: float = 900.0,
    retry: Retry = Retry(),
    report: Reporter | None = None,
) -> ApplyReport:
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
    context = _Context(documents, providers, inputs, recorder, cancel, retry)

    def record(outcome: Outcome) -> None:
        outcomes[(outcome.address, outcome.action)] = outcome
        if outcome.result != "succeeded":
            failed.add(outcome.address)
        if report is not None:
            report(outcome)

    def run_address(group: Sequence[PlanEntry]) -> list[Outcome]:
        done: list[Outcome] = []
        for entry in group:
            if done and done[-1].result != "succeeded":
                done.append(context.skip(entry, f"skipped: {done[-1].action} failed first"))
                continue
            if cancel.cancelled:
                break
            outcome = context.apply_one(entry)
            if outcome is not None:
                done.append(outcome)
        return done

    waves = plan.waves or (tuple(sorted({*entries, *batched})),)
    with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="fleet-apply") as pool:
        for wave in waves:
            pending = [entries[a] for a in wave if a in entries]
            running: dict[Future[list[Outcome]], tuple[list[PlanEntry], float]] = {}
            while pending or running:
                while pending and len(running) < parallel and not cancel.cancelled:
                    group = pending.pop(0)
                    blocked = sorted({d for e in group for d in e.depends_on if d in failed})
                    if blocked:
                        for entry in group:
                            record(context.skip(entry, f"skipped: {', '.join(blocked)} failed first"))
                        continue
                    running[pool.submit(run_address, group)] = (group, time.monotonic())
                if cancel.cancelled and not running:
                    break
                if not running:
                    continue
                done, _ = wait(list(running), timeout=0.2, return_when=FIRST_COMPLETED)
                now = time.monotonic()
                for future in done:
                    running.pop(future)
                    for outcome in future.result():
                        record(outcome)
                for future, (group, started) in list(running.items()):
                    if now - started > action_timeout:
                        running.pop(future)
                        for entry in group:
                            record(
                                Outcome(
                                    entry.address,
                                    _name(entry),
                                    "failed",
                                    f"timed out after {action_timeout:g} s (still running in the provider)",
                                )
                            )
            if not cancel.cancelled:
                together = [e for a in wave for e in batched.get(a, ())]
                for outcome in context.apply_batches(together, failed):
                    record(outcome)
            if cancel.cancelled:
                break
    if cancel.cancelled:
        reason = cancel.reason
        recorder.interrupt_pending(f"interrupted before it finished: {reason}")
        every = {a: [*entries.get(a, ()), *batched.get(a, ())] for a in {*entries, *batched}}
        for address, group in sorted(every.items()):
            for entry in group:
                if (address, _name(entry)) not in outcomes:
                    message = f"not started: {reason}"
                    recorder.never_started(entry, "interrupted", message)
                    outcomes[(address, _name(entry))] = Outcome(address, _name(entry), "interrupted", message)
    ordered = tuple(outcomes[k] for k in sorted(outcomes))
    return ApplyReport(recorder.run_id, ordered, cancel.cancelled, cancel.reason)


def _name(entry: PlanEntry) -> str:
    assert entry.action is not None
    return action_name(entry.action)


@dataclasses.dataclass(frozen=True)
class _Context:
    documents: Mapping[str, models.Document]
    providers: Mapping[str, Provider]
    inputs: RevisionInputs
    recorder: Recorder
    cancel: CancelToken
    retry: Retry

    def skip(self, entry: PlanEntry, message: str) -> Outcome:
        self.recorder.never_started(entry, "skipped", message)
        return Outcome(entry.address, _name(entry), "skipped", message)

    def _start(self, entry: PlanEntry) -> int | Outcome | None:
        """Record the action as started under the run's lease; None (and the run cancelled)
        when the lease is gone, so nothing is done without it; a skipped Outcome when someone
        suspended the resource since the run was planned."""
        try:
            return self.recorder.start(entry)
        except LockLost as exc:
            self.cancel.cancel(str(exc))
            return None
        except ResourceSuspended as exc:
            message = f"skipped: {exc.suspension.describe()} (after this run was planned)"
            self.recorder.never_started(entry, "skipped", message)
            return suspended_skip(entry.address, _name(entry), message)

    def apply_one(self, entry: PlanEntry) -> Outcome | None:
        """Record the action, run it (retrying what may pass), record how it ended; None when
        it was never started because the run lost its lease."""
        name = _name(entry)
        document = self.documents.get(entry.address)
        provider = self.providers.get(provider_key(entry))
        orphan = entry.finding is Finding.ORPHANED
        action_id = self._start(entry)
        if action_id is None or isinstance(action_id, Outcome):
            return action_id
        started = time.monotonic()
        if (document is None and not orphan) or provider is None:
            message = (
                "no desired document for this resource"
                if document is None
                else f"no provider for {entry.kind}"
            )
            self.recorder.finish(action_id, "failed", message)
            return Outcome(entry.address, name, "failed", message)
        change = entry.change(None if orphan else document)
        try:
            result = self.retry.run(lambda: provider.apply(change, self.inputs), self.cancel)
        except FleetError as exc:
            self.recorder.finish(action_id, "failed", str(exc))
            return Outcome(entry.address, name, "failed", str(exc), time.monotonic() - started)
        return self._finish(
            entry, None if orphan else document, result, action_id, time.monotonic() - started
        )

    def apply_batches(self, group: Sequence[PlanEntry], failed: set[str]) -> list[Outcome]:
        """A wave's actions of batch providers, each provider's at once; retried together."""
        outcomes: list[Outcome] = []
        by_provider: dict[str, list[PlanEntry]] = {}
        for entry in group:
            blocked = sorted(d for d in entry.depends_on if d in failed)
            if entry.address in failed:
                outcomes.append(self.skip(entry, "skipped: an earlier action of it failed"))
            elif blocked:
                outcomes.append(self.skip(entry, f"skipped: {', '.join(blocked)} failed first"))
            elif self.documents.get(entry.address) is None:
                outcome = self.apply_one(entry)
                if outcome is not None:
                    outcomes.append(outcome)
            else:
                by_provider.setdefault(provider_key(entry), []).append(entry)
        for key, todo in sorted(by_provider.items()):
            outcomes.extend(self._apply_batch(self.providers[key], todo))
        return outcomes

    def _apply_batch(self, provider: Provider, todo: Sequence[PlanEntry]) -> list[Outcome]:
        assert isinstance(provider, BatchProvider)
        started = time.monotonic()
        action_ids: dict[str, int] = {}
        outcomes: list[Outcome] = []
        for entry in todo:
            action_id = self._start(entry)
            if action_id is None:
                break
            if isinstance(action_id, Outcome):
                outcomes.append(action_id)
                continue
            action_ids[entry.address] = action_id
        todo = [e for e in todo if e.address in action_ids]
        results: dict[str, ApplyResult | FleetError] = {}
        pending = list(todo)

        def attempt() -> None:
            """One run for every pending change; raises to retry the ones that failed temporarily."""
            nonlocal pending
            answers: Sequence[ApplyResult | FleetError]
            try:
                answers = provider.apply_many(
                    [e.change(self.documents[e.address]) for e in pending], self.inputs
                )
            except FleetError as exc:
                answers = [exc] * len(pending)
            again = [e for e, r in zip(pending, answers, strict=True) if isinstance(r, TemporaryError)]
            results.update((e.address, r) for e, r in zip(pending, answers, strict=True))
            if again:
                pending = again
                delay = max(r.delay for r in answers if isinstance(r, TemporaryError))
                raise TemporaryError(f"{len(again)} hosts failed temporarily", delay=delay)

        if todo:
            with contextlib.suppress(FleetError):  # each change's last answer is in `results`
                self.retry.run(attempt, self.cancel)
        for entry in todo:
            result = results[entry.address]
            seconds = time.monotonic() - started
            if isinstance(result, FleetError):
                self.recorder.finish(action_ids[entry.address], "failed", str(result))
                outcomes.append(Outcome(entry.address, _name(entry), "failed", str(result), seconds))
                continue
            document = self.documents[entry.address]
            outcomes.append(self._finish(entry, document, result, action_ids[entry.address], seconds))
        return outcomes

    def _finish(
        self,
        entry: PlanEntry,
        document: models.Document | None,
        result: ApplyResult,
        action_id: int,
        seconds: float,
    ) -> Outcome:
        """Record how an action ended, and what it applied."""
        name = _name(entry)
        if result.ok:
            after = self.recorder.applied(entry, document)
            self.recorder.finish(action_id, "succeeded", result.message, after)
            return Outcome(entry.address, name, "succeeded", result.message, seconds, result.changed)
        self.recorder.finish(action_id, "failed", result.message)
        return Outcome(entry.address, name, "failed", result.message, seconds, result.changed)
