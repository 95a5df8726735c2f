"""Operating-system configuration end to end: `fleet plan/apply/drift` against a lab whose
Machines are real sshd hosts, reached by Ansible over SSH, checked with Debian's `ssh`.

The lab's repo is the example without VMs, clusters and pools (their simulators are tested
elsewhere), with a canary secret in one Machine's message of the day: it must show up on that
host and nowhere else fleet writes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fleet_testing import (
    ROOT,
    copy_example,
    lab_environment,
    lab_fleet,
    lab_plan,
    run_fleet,
    running_lab,
)
from jsonschema import Draft202012Validator

pytestmark = pytest.mark.slow  # a lab suite: left out of `make test-quick`

SUBNET = 75
CANARY = "canary-motd-7c1f0e2d9b"
FRESH = "machine/nyc1-r01-02"
DRIFTED = "machine/nyc1-r01-03"
SECRET = "machine/nyc1-r01-04"
GONE = "machine/nyc1-r01-05"
MOTD_TASK = "config/baseline : Write the message of the day"


def _with_canary(repo: Path) -> None:
    """nyc1-r01-04's message of the day is a secret read from the environment at run time."""
    path = repo / "machines/nyc1/r01.yaml"
    documents = path.read_text().split("\n---\n")
    (index,) = [i for i, d in enumerate(documents) if "name: nyc1-r01-04\n" in d]
    lines = documents[index].splitlines()
    (at,) = [i for i, line in enumerate(lines) if line.startswith("      baseline_motd_message:")]
    lines[at] = "      baseline_motd_message: {credentialsRef: {env: FLEET_TEST_MOTD}}"
    documents[index] = "\n".join(lines)
    path.write_text("\n---\n".join(documents))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    directory = tmp_path_factory.mktemp("config-lab")
    repo = copy_example(directory / "repo")
    for kind in ("virtual-machines", "clusters", "spark-pools"):
        shutil.rmtree(repo / kind)
    # Without its clusters, the repo has no credentialsCluster (the lab serves that Secret as a file).
    fleet = repo / "fleet.yaml"
    fleet.write_text(fleet.read_text().replace("  credentialsCluster: k8s-ldn1\n", ""))
    _with_canary(repo)
    env = lab_environment(
        directory,
        FLEET_STATE=str(directory / "state.db"),
        FLEET_CONFIG="true",
        FLEET_TEST_MOTD=CANARY,
        REPO=str(repo),
    )
    with running_lab(repo, SUBNET, env):
        yield env


def _overrides(env: dict[str, str]) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((Path(env["FLEET_LAB_DIR"]) / "overrides.json").read_text())
    return document


def _ssh(env: dict[str, str], host: str, command: str) -> subprocess.CompletedProcess[str]:
    """Run `command` on a lab host with Debian's ssh client, as Ansible reaches it."""
    hostvars = _overrides(env)["ansibleHosts"][host]
    return subprocess.run(
        [
            "ssh",
            "-i",
            hostvars["ansible_ssh_private_key_file"],
            *hostvars["ansible_ssh_common_args"].split(),
            "-o",
            "BatchMode=yes",
            "-p",
            hostvars["ansible_port"],
            f"{hostvars['ansible_user']}@{hostvars['ansible_host']}",
            command,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _history(env: dict[str, str]) -> list[dict[str, Any]]:
    done = run_fleet("history", "--format", "json", env=env)
    assert done.returncode == 0, done.stderr
    runs: list[dict[str, Any]] = json.loads(done.stdout)
    return runs


def _root(env: dict[str, str], host: str) -> str:
    return str(_overrides(env)["ansibleHosts"][host]["baseline_root"])


def test_fresh_hosts_are_planned_to_configure_with_the_diffs_and_the_plan_matches_its_schema(
    lab: dict[str, str],
) -> None:
    done = lab_fleet(lab, [FRESH, SECRET], "plan", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert CANARY not in done.stdout + done.stderr  # the secret motd's diff is masked
    plan = json.loads(done.stdout)
    Draft202012Validator(json.loads((ROOT / "schemas" / "plan.schema.json").read_text())).validate(plan)
    configure = {e["address"]: e for e in plan["entries"] if e["action"] == "configure"}
    assert sorted(configure) == [FRESH, SECRET]
    fields = {f["field"]: f for f in configure[FRESH]["fields"]}
    assert fields["config.version"]["before"] is None
    assert str(fields["config.version"]["after"]).startswith("sha256:")
    assert fields[MOTD_TASK] == {"field": MOTD_TASK, "before": "differs", "after": "as specified"}
    assert "+  nyc1-r01-02  (kubernetes-node, owned by platform-k8s)" in configure[FRESH]["detail"]
    assert plan["summary"]["counts"]["configure"] == 2
    assert plan["summary"]["counts"]["power-on"] == 2  # the lab starts cold; configure runs after


def test_apply_configures_the_hosts_records_the_runs_and_the_next_plan_is_empty(lab: dict[str, str]) -> None:
    done = lab_fleet(lab, [FRESH, DRIFTED, SECRET], "apply", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert CANARY not in done.stdout + done.stderr
    for address in (FRESH, DRIFTED, SECRET):
        assert f"{address}  configure: succeeded" in done.stdout
    motd = _ssh(lab, "nyc1-r01-02", f"cat {_root(lab, 'nyc1-r01-02')}/etc/motd")
    assert motd.returncode == 0 and "owned by platform-k8s" in motd.stdout
    secret = _ssh(lab, "nyc1-r01-04", f"cat {_root(lab, 'nyc1-r01-04')}/etc/motd")
    assert CANARY in secret.stdout  # the run really used the secret
    actions = {a["address"]: a for run in _history(lab) for a in run["actions"] if a["action"] == "configure"}
    assert sorted(actions) == [FRESH, DRIFTED, SECRET]
    assert {a["result"] for a in actions.values()} == {"succeeded"}
    assert str(actions[FRESH]["after"]["config"]).startswith("sha256:")  # the version applied
    # The three hosts were configured by one ansible-playbook run, not by a process each.
    (directory,) = {re.findall(r"artifacts: (\S+)\)", a["message"])[0] for a in actions.values()}
    assert list(Path(directory).glob("artifacts/*/job_events/*.json"))
    again = lab_fleet(lab, [FRESH, DRIFTED, SECRET], "plan", "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr


def test_a_file_changed_behind_fleets_back_is_drift_that_apply_puts_back(lab: dict[str, str]) -> None:
    motd = f"{_root(lab, 'nyc1-r01-03')}/etc/motd"
    edited = _ssh(lab, "nyc1-r01-03", f"echo 'edited by hand' > {motd}")
    assert edited.returncode == 0, edited.stderr
    drift = lab_fleet(lab, [FRESH, DRIFTED], "drift", "--detailed-exitcode")
    assert drift.returncode == 2, drift.stdout + drift.stderr
    lines = drift.stdout.splitlines()
    (drifted,) = [line for line in lines if line.startswith("drift ")]
    assert drifted.startswith(f"drift    {DRIFTED}  {MOTD_TASK}: applied 'as applied', live 'changed'")
    coverage = {line.split()[1]: line for line in lines if line.startswith("config ")}
    assert "0 not verifiable; in sync" in coverage[FRESH]
    assert "0 not verifiable; 1 tasks would change" in coverage[DRIFTED]
    fix = lab_fleet(lab, [DRIFTED], "apply", "--yes")
    assert fix.returncode == 0, fix.stdout + fix.stderr
    assert "-edited by hand" in fix.stdout  # the plan apply showed had the diff
    assert "edited by hand" not in _ssh(lab, "nyc1-r01-03", f"cat {motd}").stdout
    clean = lab_fleet(lab, [DRIFTED], "drift", "--detailed-exitcode")
    assert clean.returncode == 0, clean.stdout + clean.stderr


def test_a_secret_is_nowhere_but_on_its_host(lab: dict[str, str]) -> None:
    assert CANARY not in json.dumps(_history(lab))
    assert CANARY.encode() not in Path(lab["FLEET_STATE"]).read_bytes()
    host_root = Path(_root(lab, "nyc1-r01-04"))
    leaked = [
        p
        for p in Path(lab["FLEET_LAB_DIR"]).rglob("*")
        if p.is_file() and not p.is_relative_to(host_root) and CANARY.encode() in p.read_bytes()
    ]
    assert leaked == []


def test_an_unreachable_host_is_unknown_while_others_are_checked(lab: dict[str, str]) -> None:
    name = GONE.removeprefix("machine/")
    # Only this lab's daemon: another lab (a demo, a parallel run) may simulate the same host.
    config = re.escape(f"{lab['FLEET_LAB_DIR']}/ssh/{name}/sshd_config")
    found = subprocess.run(["pgrep", "-f", config], capture_output=True, text=True)
    assert found.stdout.split(), "the lab runs an sshd for every configured Machine"
    for pid in found.stdout.split():
        os.kill(int(pid), signal.SIGKILL)
    plan = lab_plan(lab, [GONE, FRESH])
    unknown = {e["address"]: e for e in plan["entries"] if e["finding"] == "unknown"}
    assert unknown[GONE]["reason"] == "config-unreachable"
    assert FRESH not in unknown
    assert not [e for e in plan["entries"] if e["address"] == GONE and e["action"] == "configure"]
