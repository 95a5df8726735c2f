"""fleet's main job end to end against the simulated lab: apply, plan again, drift, guards,
saved plans, locks, the emergency path, Ctrl-C, and the audit trail, on SQLite and PostgreSQL.

Out-of-band changes are made the way an operator would: with Debian's ipmitool, or through
the simulator's control socket.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet_testing import EXAMPLE, FLEET, lab_control, lab_environment, run_fleet, running_lab, wait_for_run
from ruamel.yaml import YAML
from state_testing import create_pg_database, drop_pg_database

from reconciler.state import open_store

pytestmark = pytest.mark.slow  # a lab suite: left out of `make test-quick`

K8S_NODES = "team=platform-k8s"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """A lab per test module (on the module's LAB_SUBNET), so modules can run side by side."""
    directory = tmp_path_factory.mktemp("apply-lab")
    repo = directory / "repo"
    shutil.copytree(EXAMPLE, repo)
    _set_change_windows(repo, [])  # tests must not depend on the time of day they run at
    subnet = getattr(request.module, "LAB_SUBNET", 65)
    # Power transitions of 0.1 s: what is tested is order, budgets and records, not waiting.
    with running_lab(
        repo, subnet, lab_environment(directory, REPO=str(repo)), "--transition-seconds", "0.1"
    ) as env:
        yield env


@pytest.fixture()
def env(lab: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The lab, every machine cold again, and a fresh state store (SQLite unless a test asks
    for PostgreSQL with indirect parametrization)."""
    for machine in _machines(lab):
        lab_control(lab, {"op": "set_faults", "name": machine, "faults": []})
        lab_control(lab, {"op": "set_power", "name": machine, "power": "off"})
    if getattr(request, "param", "sqlite") == "sqlite":
        yield {**lab, "FLEET_STATE": str(tmp_path / "state.db")}
        return
    url = create_pg_database("fleet_apply")
    try:
        yield {**lab, "FLEET_STATE": url}
    finally:
        drop_pg_database(url)


def _set_change_windows(repo: Path, windows: list[dict[str, object]]) -> None:
    yaml = YAML()  # round trip: the rest of fleet.yaml stays as written
    path = repo / "fleet.yaml"
    fleet = yaml.load(path.read_text())
    fleet["spec"]["policies"]["changeWindows"] = windows
    with path.open("w") as handle:
        yaml.dump(fleet, handle)


def _machines(env: dict[str, str]) -> list[str]:
    found = json.loads(run_fleet("get", env["REPO"], "-k", "Machine", "-o", "json", env=env).stdout)
    return [m["metadata"]["name"] for m in found]


def _power(env: dict[str, str], name: str) -> str:
    state = lab_control(env, {"op": "state", "name": name})
    assert isinstance(state, dict)
    return str(state["power"])


def _ipmitool(env: dict[str, str], machine: str, *command: str) -> str:
    """Talk to a lab BMC with Debian's ipmitool, as an operator working behind fleet's back would."""
    overrides = json.loads((Path(env["FLEET_LAB_DIR"]) / "overrides.json").read_text())
    spec = next(
        m
        for m in json.loads(run_fleet("get", env["REPO"], "-k", "Machine", "-o", "json", env=env).stdout)
        if m["metadata"]["name"] == machine
    )
    bmc = spec["spec"]["bmc"]
    host = overrides["endpoints"][f"{bmc['address']}:{bmc['port']}"].rsplit(":", 1)[0]
    user, password = (
        Path(overrides["credentials"][bmc["credentialsRef"]]["file"]).read_text().strip().split(":", 1)
    )
    done = subprocess.run(
        ["ipmitool", "-I", "lanplus", "-H", host, "-U", user, "-P", password, *command],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout + done.stderr


def _history(env: dict[str, str]) -> list[dict]:
    return json.loads(run_fleet("history", "--format", "json", env=env).stdout)


@pytest.mark.parametrize("env", ["sqlite", "postgresql"], indirect=True)
def test_apply_then_plan_is_empty_then_drift_is_found_and_fixed(env: dict[str, str]) -> None:
    repo = env["REPO"]
    first = run_fleet("apply", repo, "--lab", "-l", K8S_NODES, "--yes", env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert _power(env, "nyc1-r01-02") == "on"

    again = run_fleet("plan", repo, "--lab", "-l", K8S_NODES, "--detailed-exitcode", env=env)
    assert again.returncode == 0 and "Plan: no changes" in again.stdout, again.stdout

    assert "Down/Off" in _ipmitool(env, "nyc1-r01-02", "chassis", "power", "off")
    drift = run_fleet("drift", repo, "--lab", "-l", K8S_NODES, "--detailed-exitcode", "-o", "json", env=env)
    assert drift.returncode == 2, drift.stdout + drift.stderr
    (finding,) = [d for d in json.loads(drift.stdout) if d["finding"] == "drift"]
    assert finding["address"] == "machine/nyc1-r01-02"
    assert finding["fields"][0] | {"firstSeen": None} == {
        "field": "power",
        "applied": "on",
        "live": "off",
        "firstSeen": None,
    }
    assert finding["fields"][0]["firstSeen"]

    fix = run_fleet("apply", repo, "--lab", "-t", "machine/nyc1-r01-02", "--yes", env=env)
    assert fix.returncode == 0 and _power(env, "nyc1-r01-02") == "on"
    clean = run_fleet("drift", repo, "--lab", "-l", K8S_NODES, "--detailed-exitcode", env=env)
    assert clean.returncode == 0, clean.stdout
    with open_store(env["FLEET_STATE"]) as store:
        assert store.open_drift() == []
        last = store.get_observations(["machine/nyc1-r01-02"])["machine/nyc1-r01-02"]
        assert (last.state, (last.fields or {}).get("power")) == ("observed", "on")

    runs = _history(env)
    assert [r["kind"] for r in runs][:2] == ["apply", "apply"]
    assert all(a["result"] == "succeeded" and a["finished_at"] for r in runs for a in r["actions"])


def test_unknown_machines_are_never_applied(env: dict[str, str]) -> None:
    lab_control(env, {"op": "set_faults", "name": "nyc1-r01-03", "faults": ["reject-auth"]})
    result = run_fleet("apply", env["REPO"], "--lab", "-t", "machine/nyc1-r01-03", "--yes", env=env)
    assert result.returncode == 0 and "nothing to apply" in result.stdout, result.stdout
    assert _power(env, "nyc1-r01-03") == "off"


def test_blast_radius_refuses_and_allow_destructive_overrides(env: dict[str, str]) -> None:
    repo = Path(env["REPO"])
    rack = repo / "machines" / "nyc1" / "r02.yaml"
    original = rack.read_text()
    rack.write_text(original.replace("power: on", "power: off"))
    try:
        for name in ("nyc1-r02-01", "nyc1-r02-02", "nyc1-r02-03", "nyc1-r02-04"):
            lab_control(env, {"op": "set_power", "name": name, "power": "on"})
        refused = run_fleet("apply", str(repo), "--lab", "-l", K8S_NODES, "--yes", env=env)
        assert refused.returncode == 1
        assert "blastRadius.maxRackPercent" in refused.stderr and "--allow-destructive" in refused.stderr
        assert _power(env, "nyc1-r02-02") == "on"  # nothing happened
        allowed = run_fleet(
            "apply", str(repo), "--lab", "-l", K8S_NODES, "--yes", "--allow-destructive", env=env
        )
        assert allowed.returncode == 0, allowed.stdout + allowed.stderr
        assert _power(env, "nyc1-r02-02") == "off"
    finally:
        rack.write_text(original)


def test_a_saved_plan_is_refused_once_live_state_moved(env: dict[str, str], tmp_path: Path) -> None:
    saved = tmp_path / "plan.json"
    made = run_fleet("plan", env["REPO"], "--lab", "-t", "machine/nyc1-r01-04", "--out", str(saved), env=env)
    assert made.returncode == 0
    lab_control(env, {"op": "set_power", "name": "nyc1-r01-04", "power": "on"})
    stale = run_fleet("apply", str(saved), "--path", env["REPO"], "--lab", "--yes", env=env)
    assert stale.returncode == 1 and "live state changed since the plan was made" in stale.stderr
    lab_control(env, {"op": "set_power", "name": "nyc1-r01-04", "power": "off"})
    fresh = run_fleet("apply", str(saved), "--path", env["REPO"], "--lab", "--yes", env=env)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert _power(env, "nyc1-r01-04") == "on"


def test_ctrl_c_leaves_a_complete_audit_record(env: dict[str, str]) -> None:
    names = [n for n in _machines(env) if n.startswith("nyc1-r0")]
    process = subprocess.Popen(
        [
            str(FLEET),
            "apply",
            env["REPO"],
            "--lab",
            "-l",
            "fleet.acme.io/env=production",
            "--yes",
            "--parallel",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        # Once planning is over and the run is recorded, slow every BMC down, so Ctrl-C lands
        # while changes are running.
        wait_for_run(env, lambda runs: bool(runs))
        for name in names:
            lab_control(env, {"op": "set_faults", "name": name, "faults": ["slow"]})
        wait_for_run(env, lambda runs: bool(runs[0].actions))
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
        for name in names:
            lab_control(env, {"op": "set_faults", "name": name, "faults": []})
    assert process.returncode == 130, out + err
    (run,) = _history(env)[:1]
    assert run["status"] == "interrupted"
    results = {a["result"] for a in run["actions"]}
    assert results <= {"succeeded", "failed", "interrupted", "skipped"} and "interrupted" in results, run
    assert all(a["finished_at"] for a in run["actions"])


def test_one_failing_machine_fails_alone_and_the_run_exits_1(env: dict[str, str]) -> None:
    lab_control(env, {"op": "set_faults", "name": "nyc1-r01-02", "faults": ["refuse-power-on"]})
    result = run_fleet("apply", env["REPO"], "--lab", "-l", K8S_NODES, "--yes", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "machine/nyc1-r01-02  power-on: failed" in result.stdout
    assert _power(env, "nyc1-r01-02") == "off" and _power(env, "nyc1-r01-03") == "on"
    (run,) = _history(env)[:1]
    results = {a["address"]: a["result"] for a in run["actions"]}
    assert results["machine/nyc1-r01-02"] == "failed" and results["machine/nyc1-r01-03"] == "succeeded"
    assert run["status"] == "failed"
