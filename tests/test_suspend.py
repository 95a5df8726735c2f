"""Suspend and resume end to end, through the `fleet` command against the simulated lab: a
suspended machine is observed and its drift reported but never acted on, by `fleet suspend` or
by its spec's annotation; resume lets the next apply act; the emergency path refuses a suspended
target; who and why are in the audit trail. Same lab and fixtures as test_apply, on its own subnet.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import test_apply
from fleet_testing import lab_control, run_fleet
from test_apply import _history, _power

pytestmark = pytest.mark.slow  # a lab suite: left out of `make test-quick`

LAB_SUBNET = 87
lab = test_apply.lab

HELD = "machine/nyc1-r01-02"
FREE = "machine/nyc1-r01-03"
ANNOTATED = "machine/nyc1-r01-04"


env = test_apply.env


def _as_alice(env: dict[str, str]) -> dict[str, str]:
    return {**env, "FLEET_OPERATOR": "alice"}


def _plan(env: dict[str, str], *targets: str) -> dict:
    args = [a for t in targets for a in ("-t", t)]
    done = run_fleet("plan", env["REPO"], "--lab", *args, "-o", "json", env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _apply(env: dict[str, str], *targets: str) -> str:
    args = [a for t in targets for a in ("-t", t)]
    done = run_fleet("apply", env["REPO"], "--lab", *args, "--yes", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.parametrize("env", ["sqlite", "postgresql"], indirect=True)
def test_a_suspended_machine_is_observed_and_reported_but_never_acted_on(env: dict[str, str]) -> None:
    env = _as_alice(env)
    repo = env["REPO"]
    suspended = run_fleet("suspend", repo, HELD, "--reason", "PSU swap in r01", env=env)
    assert suspended.returncode == 0, suspended.stderr
    assert f"{HELD} suspended" in suspended.stdout

    plan = _plan(env, HELD, FREE)
    assert [(s["address"], s["operator"], s["reason"]) for s in plan["suspended"]] == [
        (HELD, "alice", "PSU swap in r01")
    ]
    assert [s["address"] for s in plan["skipped"]] == [HELD]
    assert "suspended by alice" in plan["skipped"][0]["because"]
    assert {e["address"] for e in plan["entries"] if e["action"] == "power-on"} == {HELD, FREE}
    text = run_fleet("plan", repo, "--lab", "-t", HELD, "-t", FREE, env=env).stdout
    assert "Suspended (observed and reported" in text and "1 skipped (suspended)" in text

    applied = _apply(env, HELD, FREE)
    assert "skipped" in applied and "PSU swap in r01" in applied
    assert (_power(env, "nyc1-r01-02"), _power(env, "nyc1-r01-03")) == ("off", "on")
    record = _history(env)[0]
    assert record["kind"] == "apply" and record["status"] == "succeeded"
    assert {(a["address"], a["result"]) for a in record["actions"]} == {
        (HELD, "skipped"),
        (FREE, "succeeded"),
    }

    # Drift on a suspended machine is still found and reported (and still not put back).
    lab_control(env, {"op": "set_power", "name": "nyc1-r01-03", "power": "off"})
    run_fleet("suspend", repo, FREE, "--reason", "firmware update", env=env)
    drift = run_fleet("drift", repo, "--lab", "-t", FREE, "-o", "json", env=env)
    assert drift.returncode == 0, drift.stderr
    assert FREE in drift.stdout and "power" in drift.stdout
    _apply(env, FREE)
    assert _power(env, "nyc1-r01-03") == "off"

    resumed = run_fleet("resume", repo, HELD, FREE, "--reason", "PSU replaced", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{HELD} resumed" in resumed.stdout
    assert _plan(env, HELD, FREE)["suspended"] == []
    _apply(env, HELD, FREE)
    assert (_power(env, "nyc1-r01-02"), _power(env, "nyc1-r01-03")) == ("on", "on")

    # Who and why, for every suspend and resume, in the audit trail.
    trail = [
        (r["kind"], r["operator"], r["reason"]) for r in _history(env) if r["kind"] in ("suspend", "resume")
    ]
    assert trail == [
        ("resume", "alice", "PSU replaced"),
        ("suspend", "alice", "firmware update"),
        ("suspend", "alice", "PSU swap in r01"),
    ]
    wide = run_fleet("history", "--target", HELD, "-o", "wide", env=env).stdout
    assert "PSU swap in r01" in wide and f"{HELD} suspend: succeeded" in wide


def test_the_annotation_suspends_a_machine_as_fleet_suspend_does(env: dict[str, str]) -> None:
    env = _as_alice(env)
    spec = Path(env["REPO"]) / "machines" / "nyc1" / "r01.yaml"
    original = spec.read_text()
    spec.write_text(
        original.replace(
            "  name: nyc1-r01-04\n",
            "  name: nyc1-r01-04\n  annotations:\n    fleet.dev/reconcile: disabled\n",
        )
    )
    try:
        plan = _plan(env, ANNOTATED)
        ((held,),) = [plan["suspended"]]
        assert held["operator"] is None and held["since"] is None
        assert held["reason"] == "annotation fleet.dev/reconcile: disabled in machines/nyc1/r01.yaml"
        _apply(env, ANNOTATED)
        assert _power(env, "nyc1-r01-04") == "off"
        # `fleet resume` cannot lift what the spec says, and says so.
        resumed = run_fleet("resume", env["REPO"], ANNOTATED, env=env)
        assert resumed.returncode == 0 and "stays suspended by its spec" in resumed.stderr
        refused = run_fleet(
            "reconcile", env["REPO"], "--now", "-t", ANNOTATED, "--reason", "x", "--lab", "--yes", env=env
        )
        assert refused.returncode == 1 and "remove the annotation" in refused.stderr
    finally:
        spec.write_text(original)
    _apply(env, ANNOTATED)
    assert _power(env, "nyc1-r01-04") == "on"


def test_an_emergency_reconcile_of_a_suspended_target_is_refused(env: dict[str, str]) -> None:
    env = _as_alice(env)
    repo = env["REPO"]
    run_fleet("suspend", repo, HELD, "--reason", "hands in the chassis", env=env)
    refused = run_fleet(
        "reconcile", repo, "--now", "-t", HELD, "--reason", "PSU swap", "--lab", "--yes", env=env
    )
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"`fleet resume {HELD}` first" in refused.stderr and "hands in the chassis" in refused.stderr
    assert "Changes" not in refused.stdout  # refused before showing or asking anything
    assert _power(env, "nyc1-r01-02") == "off"
    assert [r["kind"] for r in _history(env)] == ["suspend"]  # no reconcile run was recorded


def test_suspend_and_resume_name_existing_resources_and_say_what_they_did(env: dict[str, str]) -> None:
    env = _as_alice(env)
    repo = env["REPO"]
    typo = run_fleet("suspend", repo, "machine/nyc1-r01-2", "--reason", "x", env=env)
    assert typo.returncode == 2 and f"did you mean {HELD}?" in typo.stderr
    nothing = run_fleet("suspend", repo, "-l", "team=nobody", "--reason", "x", env=env)
    assert nothing.returncode == 2 and "no resource matches" in nothing.stderr
    no_reason = run_fleet("suspend", repo, HELD, env=env)
    assert no_reason.returncode == 2 and "--reason is required" in no_reason.stderr

    first = run_fleet(
        "suspend",
        repo,
        "-l",
        "team=platform-k8s",
        "-k",
        "Machine",
        "--reason",
        "kernel CVE",
        "-o",
        "json",
        env=env,
    )
    assert first.returncode == 0, first.stderr
    data = json.loads(first.stdout)
    assert data["action"] == "suspend" and data["operator"] == "alice" and data["reason"] == "kernel CVE"
    assert HELD in [s["address"] for s in data["changed"]] and data["unchanged"] == []
    again = run_fleet("suspend", repo, HELD, "--reason", "other", env=env)
    assert again.returncode == 0 and f"{HELD} already suspended by alice" in again.stdout
    assert "kernel CVE" in again.stdout
    resumed = run_fleet("resume", repo, "-l", "team=platform-k8s", "-k", "Machine", "-o", "json", env=env)
    assert {s["address"] for s in json.loads(resumed.stdout)["changed"]} == {
        s["address"] for s in data["changed"]
    }
