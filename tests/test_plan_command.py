"""`fleet plan` against the simulated lab: changes, no changes, unknown, saved plans, exit codes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet_testing import EXAMPLE, ROOT, lab_control, lab_environment, run_fleet, running_lab
from jsonschema import Draft202012Validator


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    directory = tmp_path_factory.mktemp("plan-lab")
    env = lab_environment(directory, FLEET_STATE=str(directory / "state.db"))
    with running_lab(EXAMPLE, 63, env):
        yield env


def _plan(env: dict[str, str], *args: str) -> tuple[int, dict]:
    result = run_fleet(
        "plan", str(EXAMPLE), "--lab", "--detailed-exitcode", "--format", "json", *args, env=env
    )
    assert result.returncode in (0, 2, 3), result.stdout + result.stderr
    return result.returncode, json.loads(result.stdout)


def test_a_cold_machine_is_planned_to_power_on_and_the_plan_matches_its_schema(lab: dict[str, str]) -> None:
    code, plan = _plan(lab, "--target", "machine/nyc1-r01-02")
    assert code == 2
    Draft202012Validator(json.loads((ROOT / "schemas" / "plan.schema.json").read_text())).validate(plan)
    (entry,) = plan["entries"]
    assert (entry["address"], entry["finding"], entry["action"]) == (
        "machine/nyc1-r01-02",
        "change",
        "power-on",
    )


def test_no_changes_once_live_state_matches(lab: dict[str, str]) -> None:
    lab_control(lab, {"op": "set_power", "name": "nyc1-r02-02", "power": "on"})
    code, plan = _plan(lab, "--target", "machine/nyc1-r02-02")
    assert code == 0 and plan["entries"] == []
    text = run_fleet("plan", str(EXAMPLE), "--lab", "-t", "machine/nyc1-r02-02", env=lab)
    assert text.returncode == 0 and "Plan: no changes." in text.stdout


def test_an_unreachable_bmc_is_unknown_never_planned(lab: dict[str, str]) -> None:
    lab_control(lab, {"op": "set_faults", "name": "nyc1-r01-03", "faults": ["reject-auth"]})
    try:
        code, plan = _plan(lab, "--target", "machine/nyc1-r01-03")
    finally:
        lab_control(lab, {"op": "set_faults", "name": "nyc1-r01-03", "faults": []})
    assert code == 3  # nothing differs among what was seen, but not everything was seen
    (entry,) = plan["entries"]
    assert (entry["finding"], entry["action"], entry["reason"]) == ("unknown", None, "auth-failure")
    assert (plan["complete"], plan["unknown"]) == (False, {"count": 1, "reasons": {"auth-failure": 1}})
    assert plan["summary"]["line"].startswith(
        "Plan: incomplete: 1 of 1 resource not observed (1 auth-failure)"
    )


def test_saved_plan_and_markdown(lab: dict[str, str], tmp_path: Path) -> None:
    saved = tmp_path / "plan.json"
    result = run_fleet(
        "plan",
        str(EXAMPLE),
        "--lab",
        "-l",
        "team=platform-k8s",
        "--out",
        str(saved),
        "--format",
        "markdown",
        env=lab,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("### fleet plan") and "<details>" in result.stdout
    plan = json.loads(saved.read_text())
    assert plan["fingerprint"].startswith("sha256:")
    assert any(e["finding"] == "observe-only" for e in plan["entries"])  # ldn1 only observes power
