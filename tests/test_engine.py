"""The engine driven directly from Python, as the controller and the PR job drive it: plan, apply
and drift without the CLI; a cancellation token; leases with a TTL that a killed run gives up
and a broken one loses before its next action; a store that refuses every secret a run read;
and providers that live across a hundred passes without anything growing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fleet_testing import EXAMPLE, FLEET, lab_control, lab_environment, run_fleet, running_lab, wait_for_run
from ruamel.yaml import YAML

from providers.access import load_access
from providers.registry import ProviderPool
from reconciler.apply.executor import Outcome
from reconciler.engine import CancelToken, Engine, RunOptions, Selection, SourceRef, open_engine
from reconciler.errors import PermanentError
from reconciler.settings import Settings
from reconciler.state import open_store

pytestmark = pytest.mark.slow  # a lab suite: left out of `make test-quick`

LAB_SUBNET = 77
MACHINES = ("machine/nyc1-r02-02", "machine/nyc1-r02-03", "machine/nyc1-r02-04")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    directory = tmp_path_factory.mktemp("engine-lab")
    repo = directory / "repo"
    shutil.copytree(EXAMPLE, repo)
    yaml = YAML()
    fleet = yaml.load((repo / "fleet.yaml").read_text())
    fleet["spec"]["policies"]["changeWindows"] = []  # tests must not depend on the time of day
    with (repo / "fleet.yaml").open("w") as handle:
        yaml.dump(fleet, handle)
    env = lab_environment(directory, REPO=str(repo))
    with running_lab(repo, LAB_SUBNET, env, "--transition-seconds", "0.1"):
        yield env


def _cold(lab: dict[str, str]) -> None:
    for address in MACHINES:
        name = address.split("/")[1]
        lab_control(lab, {"op": "set_faults", "name": name, "faults": []})
        lab_control(lab, {"op": "set_power", "name": name, "power": "off"})


def _settings(lab: dict[str, str], tmp_path: Path, *, config: bool = False) -> Settings:
    return Settings(
        state=str(tmp_path / "state.db"),
        state_dir=tmp_path / "state",
        cache_dir=tmp_path / "cache",
        lab_dir=Path(lab["FLEET_LAB_DIR"]),
        lab=True,
        config=config,
    )


@pytest.fixture()
def engine(lab: dict[str, str], tmp_path: Path) -> Iterator[Engine]:
    """An engine as a controller holds one: its settings, a provider pool, a store."""
    _cold(lab)
    settings = _settings(lab, tmp_path)
    access = load_access(settings.endpoint_map(), os.environ)
    with (
        ProviderPool(access, settings.state_dir) as pool,
        open_store(settings.state_url()) as store,
        open_engine(settings, pool, store) as engine,
    ):
        yield engine


def _ref(lab: dict[str, str]) -> SourceRef:
    return SourceRef(Path(lab["REPO"]))


def _power(lab: dict[str, str], address: str) -> str:
    state = lab_control(lab, {"op": "state", "name": address.split("/")[1]})
    assert isinstance(state, dict)
    return str(state["power"])


def test_plan_apply_plan_again_and_drift_driven_from_python(lab: dict[str, str], engine: Engine) -> None:
    selection = Selection(targets=MACHINES)
    with engine.plan(_ref(lab), selection) as planned:
        assert planned.plan.complete and [e.action for e in planned.plan.changes()] == ["power-on"] * 3
        result = engine.apply(planned, RunOptions(parallel=2), CancelToken())
    assert result.report is not None and result.report.ok, result.report
    assert {_power(lab, a) for a in MACHINES} == {"on"}
    with engine.plan(_ref(lab), selection) as again:
        assert again.plan.complete and not again.plan.has_changes, again.plan.summary_line()
    lab_control(lab, {"op": "set_power", "name": "nyc1-r02-03", "power": "off"})  # behind fleet's back
    drifted = engine.drift(_ref(lab), selection)
    assert [(e.address, e.fields[0].field) for e in drifted.plan.entries if e.finding.value == "drift"] == [
        ("machine/nyc1-r02-03", "power")
    ]
    assert ("machine/nyc1-r02-03", "power") in drifted.findings
    (run, *_) = engine.store.history(limit=5)
    assert run.kind == "apply" and run.status == "succeeded" and len(run.actions) == 3


def test_a_cancelled_run_starts_nothing_and_records_why(lab: dict[str, str], engine: Engine) -> None:
    cancel = CancelToken()
    with engine.plan(_ref(lab), Selection(targets=MACHINES)) as planned:
        cancel.cancel("the controller is shutting down")
        result = engine.apply(planned, RunOptions(), cancel)
    assert result.report is not None and result.report.interrupted
    assert {(o.result, o.message) for o in result.report.outcomes} == {
        ("interrupted", "not started: the controller is shutting down")
    }
    assert {_power(lab, a) for a in MACHINES} == {"off"}
    run = engine.store.get_run(result.run_id)
    assert run is not None and run.status == "interrupted"
    assert run.summary is not None and run.summary["interrupted"] == "the controller is shutting down"


def test_a_run_whose_lease_is_broken_stops_before_its_next_action_and_says_why(
    lab: dict[str, str], engine: Engine
) -> None:
    taken: list[Any] = []

    def break_the_lease(outcome: Outcome) -> None:
        # Someone else (an operator with --break-lock) takes every lease after the first action.
        if not taken:
            with open_store(engine.settings.state_url()) as other:
                taken.append(other.acquire_locks(MACHINES, "oncall@elsewhere:1", None, 60, break_lock=True))

    with engine.plan(_ref(lab), Selection(targets=MACHINES)) as planned:
        result = engine.apply(planned, RunOptions(parallel=1), CancelToken(), on_outcome=break_the_lease)
    report = result.report
    assert report is not None and report.interrupted
    assert "lost the lease" in report.reason and "oncall@elsewhere:1" in report.reason, report.reason
    assert [o.result for o in report.outcomes].count("succeeded") == 1
    assert {o.message for o in report.outcomes if o.result != "succeeded"} == {
        f"not started: {report.reason}"
    }
    assert sorted(_power(lab, a) for a in MACHINES) == ["off", "off", "on"]  # the other two never touched
    taken[0].release()


def test_a_killed_apply_frees_its_targets_within_the_lease_ttl(lab: dict[str, str], tmp_path: Path) -> None:
    _cold(lab)
    ttl = 3.0
    env = {**lab, "FLEET_STATE": str(tmp_path / "state.db"), "FLEET_LEASE_TTL": str(ttl)}
    targets = [f"--target={a}" for a in MACHINES]
    first = subprocess.Popen(
        [str(FLEET), "apply", lab["REPO"], "--lab", "--yes", "--parallel", "1", *targets],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Once the run has started (planning is done), every BMC answers each command after 2 s:
        # when the run has recorded its first action, it is sure to be still at work.
        wait_for_run(env, bool)
        for address in MACHINES:
            lab_control(lab, {"op": "set_faults", "name": address.split("/")[1], "faults": ["slow"]})
        wait_for_run(env, lambda runs: bool(runs[0].actions))
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    finally:
        first.kill()
    with open_store(env["FLEET_STATE"]) as store:
        held = store.held_locks(list(MACHINES))
    # The dead run renewed its leases at most a third of a TTL ago: they lapse within one TTL.
    now = datetime.now(UTC)
    assert held and all((h.expires_at - now).total_seconds() <= ttl for h in held), held
    for address in MACHINES:
        lab_control(lab, {"op": "set_faults", "name": address.split("/")[1], "faults": []})
    again = run_fleet(
        "reconcile",
        "--now",
        lab["REPO"],
        "--lab",
        "--yes",
        "--reason",
        "after a crash",
        "--wait",
        "30",
        *targets,
        env=env,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert {_power(lab, a) for a in MACHINES} == {"on"}


def _rows(database: Path) -> str:
    """Every value of every row of every table, as text."""
    with sqlite3.connect(database) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return "\n".join(repr(row) for table in tables for row in db.execute(f'SELECT * FROM "{table}"'))


def test_no_secret_a_run_read_reaches_the_state_store(lab: dict[str, str], engine: Engine) -> None:
    overrides = json.loads((Path(lab["FLEET_LAB_DIR"]) / "overrides.json").read_text())
    user_password = Path(overrides["credentials"]["bmc-nyc1"]["file"]).read_text().strip()
    canary = user_password.split(":", 1)[1]  # what the lab's BMCs of nyc1 take as the password
    selection = Selection(targets=MACHINES)
    lab_control(lab, {"op": "set_faults", "name": "nyc1-r02-04", "faults": ["refuse-power-on"]})
    with engine.plan(_ref(lab), selection) as planned:
        failed = engine.apply(planned, RunOptions(), CancelToken())  # one of them fails
    assert failed.report is not None and failed.report.count("failed") == 1
    engine.drift(_ref(lab), selection)
    # The store refuses the secret from now on, wherever it would go.
    with pytest.raises(PermanentError, match="refusing to store a secret"):
        engine.store.start_run("apply", "ops", reason=f"password is {canary}")
    state = Path(engine.settings.state_url().removeprefix("sqlite:///"))
    text = _rows(state)
    assert "nyc1-r02-02" in text and canary not in text and user_password not in text


def _count_sessions(lab: dict[str, str]) -> int:
    total = 0
    for address in MACHINES:
        state = lab_control(lab, {"op": "state", "name": address.split("/")[1]})
        assert isinstance(state, dict)
        total += int(state["sessions"])
    return total


def _resources(lab: dict[str, str], temp: Path) -> dict[str, int]:
    return {
        "threads": threading.active_count(),
        "fds": len(os.listdir("/proc/self/fd")),
        "tmp": len(list(temp.iterdir())),
        "sessions": _count_sessions(lab),
    }


def test_a_hundred_passes_of_one_engine_leave_nothing_growing(
    lab: dict[str, str], engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The provider pool keeps BMC sessions, libvirt connections and Kubernetes clients between
    passes, and nothing of a pass outlives it: threads, descriptors, temporary directories and
    BMC sessions stay level."""
    # This process's temporary files go to a directory of their own, so other tests' cannot count.
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    selection = Selection(targets=(*MACHINES, "virtualmachine/nyc1-dns-1", "cluster/k8s-nyc1"))
    seen: list[dict[str, int]] = []
    for number in range(1, 101):
        with engine.plan(_ref(lab), selection) as planned:
            assert planned.plan.complete, planned.plan.summary_line()
        if number in (10, 100):
            seen.append(_resources(lab, temp))
    # Nothing grows. A BMC session may lapse on a busy machine and be opened again while the
    # simulator still counts the old one until it times out: two per BMC at most, never 90 passes'.
    assert all(seen[1][what] <= seen[0][what] for what in ("threads", "fds", "tmp")), seen
    assert seen[1]["sessions"] <= max(seen[0]["sessions"], 2 * len(MACHINES)), seen


def test_the_playbooks_a_plan_exports_live_as_long_as_the_run(lab: dict[str, str], tmp_path: Path) -> None:
    settings = _settings(lab, tmp_path, config=True)
    access = load_access(settings.endpoint_map(), os.environ)
    with (
        ProviderPool(access, settings.state_dir) as pool,
        open_store(settings.state_url()) as store,
        open_engine(settings, pool, store) as engine,
    ):
        with engine.plan(_ref(lab), Selection(targets=("machine/nyc1-r02-02",))) as planned:
            root = planned.inputs.playbook_root
            assert root is not None and (root / "playbooks" / "site.yml").is_file()
            assert planned.observations.config, "the configuration was checked"
        assert not root.exists()
        with pytest.raises(PermanentError), engine.plan(_ref(lab), Selection(targets=("machine/nope",))):
            pass
