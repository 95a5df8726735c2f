"""The audited emergency path and the guards around applies, end to end against the simulated
lab: leases (wait, break, two applies racing), change windows, blast radius, and what
`fleet reconcile --now` records. Same lab and fixtures as test_apply, on a lab of its own.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import test_apply
from fleet_testing import FLEET, lab_control, run_fleet, wait_for_run
from test_apply import K8S_NODES, _history, _power, _set_change_windows

from reconciler.state import open_store

pytestmark = pytest.mark.slow  # a lab suite: left out of `make test-quick`

LAB_SUBNET = 73
# test_apply's fixtures: a lab of this module's own (LAB_SUBNET), a fresh store per test.
lab = test_apply.lab
env = test_apply.env


def test_locks_wait_break_and_the_emergency_audit_record(env: dict[str, str]) -> None:
    repo = env["REPO"]
    with open_store(env["FLEET_STATE"]) as store:
        other = store.start_run("apply", "someone-else")
        held = store.acquire_locks(["machine/nyc1-r02-03"], "someone-else@host:1", other, 600)
        busy = run_fleet("apply", repo, "--lab", "-t", "machine/nyc1-r02-03", "--yes", env=env)
        assert busy.returncode == 1 and "someone-else@host:1" in busy.stderr, busy.stderr
        waited = run_fleet(
            "reconcile",
            repo,
            "--now",
            "-t",
            "machine/nyc1-r02-03",
            "--reason",
            "disk failure",
            "--lab",
            "--wait",
            "1",
            "--yes",
            env=env,
        )
        assert waited.returncode == 1 and "waiting for locks held by someone-else" in waited.stderr
        broke = run_fleet(
            "reconcile",
            repo,
            "--now",
            "-t",
            "machine/nyc1-r02-03",
            "--reason",
            "disk failure",
            "--incident",
            "INC-42",
            "--emergency",
            "--break-lock",
            "--lab",
            "--yes",
            env=env,
        )
        assert broke.returncode == 0, broke.stdout + broke.stderr
        assert "broke the lock of someone-else@host:1" in broke.stderr
        held.release()
    assert _power(env, "nyc1-r02-03") == "on"
    record = _history(env)[0]
    assert (record["kind"], record["reason"], record["incident"]) == ("reconcile", "disk failure", "INC-42")
    assert record["emergency"] and record["broke_lock"] and record["status"] == "succeeded"
    assert record["operator"]


def test_change_windows_bind_reconcile_unless_emergency(env: dict[str, str]) -> None:
    repo = Path(env["REPO"])
    original = (repo / "fleet.yaml").read_text()
    # A window that never opens: the check cannot depend on when the test runs.
    _set_change_windows(repo, [{"name": "never", "days": ["mon"], "start": "00:00", "end": "00:00"}])
    try:
        args = [
            "reconcile",
            str(repo),
            "--now",
            "-t",
            "machine/nyc1-r01-05",
            "--reason",
            "r",
            "--lab",
            "--yes",
        ]
        refused = run_fleet(*args, env=env)
        assert refused.returncode == 1 and "outside its change windows (never)" in refused.stderr
        assert _power(env, "nyc1-r01-05") == "off"
        emergency = run_fleet(*args, "--emergency", env=env)
        assert emergency.returncode == 0, emergency.stdout + emergency.stderr
        assert _power(env, "nyc1-r01-05") == "on"
    finally:
        (repo / "fleet.yaml").write_text(original)


def test_reconcile_needs_a_reason_and_targets(env: dict[str, str]) -> None:
    no_reason = run_fleet("reconcile", env["REPO"], "--now", "-t", "machine/nyc1-r01-02", "--lab", env=env)
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
    no_target = run_fleet("reconcile", env["REPO"], "--now", "--reason", "x", "--lab", env=env)
    assert no_target.returncode == 2


def test_two_concurrent_applies_never_act_on_one_resource(env: dict[str, str]) -> None:
    # The first apply leases all its machines up front and works through them one at a time,
    # in address order; a second apply of the last of them, started meanwhile, must not touch
    # it. Once the first run has started (its planning done), the first machine's BMC answers
    # slowly, so the second apply is sure to find the last one still off (and leased) however
    # fast the rest goes.
    first = subprocess.Popen(
        [str(FLEET), "apply", env["REPO"], "--lab", "-l", K8S_NODES, "--parallel", "1", "--yes"],
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        wait_for_run(env, bool)
        lab_control(env, {"op": "set_faults", "name": "nyc1-r01-02", "faults": ["slow"]})
        wait_for_run(env, lambda runs: bool(runs[0].actions))
        second = run_fleet("apply", env["REPO"], "--lab", "-t", "machine/nyc1-r02-04", "--yes", env=env)
        out, err = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 0, out + err
    assert second.returncode == 1 and "held by" in second.stderr, second.stdout + second.stderr
    runs = _history(env)
    touched = [a["address"] for r in runs for a in r["actions"] if a["address"] == "machine/nyc1-r02-04"]
    assert touched == ["machine/nyc1-r02-04"]  # only the first run acted on it


def test_reconcile_of_an_unobservable_target_is_not_converged(env: dict[str, str]) -> None:
    lab_control(env, {"op": "set_faults", "name": "nyc1-r01-05", "faults": ["reject-auth"]})
    result = run_fleet(
        "reconcile",
        env["REPO"],
        "--now",
        "-t",
        "machine/nyc1-r01-05",
        "--reason",
        "check",
        "--lab",
        "--yes",
        env=env,
    )
    assert result.returncode == 1 and "not converged" in result.stderr, result.stdout + result.stderr


def test_reconcile_honours_blast_radius_unless_emergency(env: dict[str, str]) -> None:
    repo = Path(env["REPO"])
    rack = repo / "machines" / "nyc1" / "r02.yaml"
    original = rack.read_text()
    rack.write_text(original.replace("power: on", "power: off"))
    targets = [part for n in ("02", "03", "04") for part in ("-t", f"machine/nyc1-r02-{n}")]
    try:
        for n in ("02", "03", "04"):
            lab_control(env, {"op": "set_power", "name": f"nyc1-r02-{n}", "power": "on"})
        args = ["reconcile", str(repo), "--now", *targets, "--reason", "rack drain", "--lab", "--yes"]
        refused = run_fleet(*args, env=env)
        assert refused.returncode == 1 and "blastRadius.maxRackPercent" in refused.stderr, refused.stderr
        assert _power(env, "nyc1-r02-03") == "on"
        emergency = run_fleet(*args, "--emergency", env=env)
        assert emergency.returncode == 0, emergency.stdout + emergency.stderr
        assert _power(env, "nyc1-r02-03") == "off"
    finally:
        rack.write_text(original)
    record = _history(env)[0]
    assert record["emergency"] and record["reason"] == "rack drain" and len(record["actions"]) == 3
