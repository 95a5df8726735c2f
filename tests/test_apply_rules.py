"""The rules an apply runs under, without a lab: change windows (a VM's site is its host's), and
the one retry path of the executor, which waits as long as a temporary error asks (and at least
the backoff), for single and batched changes alike."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import pytest
from test_plan import machine, vm

from providers.base import Action, ApplyResult, Change, Observed, RevisionInputs
from reconciler.apply.cancel import CancelToken
from reconciler.apply.executor import Retry, execute
from reconciler.apply.guards import OutsideChangeWindow, check_change_windows
from reconciler.apply.record import Recorder
from reconciler.errors import TemporaryError
from reconciler.plan.model import FieldDiff, Finding, Plan, PlanEntry
from reconciler.spec import models
from reconciler.state import open_store

MONDAY_NOON = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def fleet() -> models.Fleet:
    return models.Fleet.model_validate(
        {
            "apiVersion": "fleet/v1alpha1",
            "kind": "Fleet",
            "metadata": {"name": "t"},
            "spec": {
                "sites": [
                    {"name": "nyc1", "racks": [{"name": "r01"}]},
                    {"name": "ldn1", "racks": [{"name": "r01"}]},
                ],
                "credentials": {"bmc": {"env": "BMC"}},
                "policies": {
                    "changeWindows": [
                        {
                            "name": "nights",
                            "sites": ["nyc1"],
                            "days": ["sat"],
                            "start": "01:00",
                            "end": "05:00",
                        }
                    ]
                },
            },
        }
    )


def test_a_vm_is_held_to_the_change_windows_of_its_hosts_site() -> None:
    hosts = {
        "hv1": machine("hv1", site="nyc1", role="hypervisor"),
        "hv2": machine("hv2", site="ldn1", role="hypervisor"),
    }
    with pytest.raises(OutsideChangeWindow, match="site nyc1 is outside its change windows"):
        check_change_windows(fleet(), [vm("guest", "hv1")], hosts, MONDAY_NOON)
    check_change_windows(fleet(), [vm("guest", "hv2")], hosts, MONDAY_NOON)  # ldn1 has no windows
    check_change_windows(fleet(), [vm("stray", "gone")], hosts, MONDAY_NOON)  # no host: no site known


class _Waits(CancelToken):
    """A cancellation token that records how long the executor waited on it, without waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.waited: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waited.append(float(timeout or 0))
        return False


class _Flaky:
    """A provider (in-process, no I/O) whose first apply of each address fails temporarily,
    asking for a delay; its batch apply does the same for each change."""

    kind: ClassVar[str] = "Machine"

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.tries: dict[str, int] = {}

    def observe(self, specs: Sequence[models.Document], inputs: RevisionInputs) -> Observed:
        return Observed()

    def apply(self, change: Change, inputs: RevisionInputs) -> ApplyResult:
        self.tries[change.address] = self.tries.get(change.address, 0) + 1
        if self.tries[change.address] == 1:
            raise TemporaryError("the BMC is busy", delay=self.delay)
        return ApplyResult(change.address, change.action, True, True, "powered on")

    def close(self) -> None:
        pass


class _FlakyBatch(_Flaky):
    def apply_many(
        self, changes: Sequence[Change], inputs: RevisionInputs
    ) -> list[ApplyResult | TemporaryError]:
        results: list[ApplyResult | TemporaryError] = []
        for change in changes:
            try:
                results.append(self.apply(change, inputs))
            except TemporaryError as exc:
                results.append(exc)
        return results


@pytest.mark.parametrize("provider", [_Flaky, _FlakyBatch], ids=["single", "batched"])
@pytest.mark.parametrize("delay", [0.1, 7.0], ids=["backoff-wins", "the-error's-delay-wins"])
def test_a_temporary_error_is_retried_after_the_delay_it_asks_for(
    tmp_path: Path, provider: type[_Flaky], delay: float
) -> None:
    document = machine("m1", power="on")
    entry = PlanEntry(
        "machine/m1", "Machine", Finding.CHANGE, Action.POWER_ON, (FieldDiff("power", "off", "on"),)
    )
    plan = Plan("rev", MONDAY_NOON, (entry,), (), (("machine/m1",),))
    flaky = provider(delay)
    waits = _Waits()
    with open_store(str(tmp_path / "state.db")) as store:
        run_id = store.start_run("apply", "test")
        report = execute(
            plan,
            {document.address: document},
            {"Machine": flaky},
            RevisionInputs.of(fleet(), [document]),
            Recorder(store, run_id, "rev"),
            waits,
            retry=Retry(attempts=3),
        )
    assert report.ok and flaky.tries == {"machine/m1": 2}, report
    assert waits.waited == [max(delay, 0.5)]  # the first backoff is 0.5 s
