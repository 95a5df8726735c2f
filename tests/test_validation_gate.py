"""A broken spec never leads to an action: every run reads a revision through the same loader and
checks as `fleet validate`, and any error refuses the whole run, before anything is observed as
missing, planned or changed. Against the lab, after fleet applied the whole example with
`orphans: delete` (so that a document dropped as invalid would be planned for deletion).

The refused commands run in-process (the gate refuses before anything live is touched); the lab
is then checked from outside: every resource as it was, and no run in the audit trail but the
first apply.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fleet_testing import EXAMPLE, lab_environment, run_cli, run_fleet, running_lab
from ruamel.yaml import YAML

pytestmark = pytest.mark.slow  # a lab suite: left out of `make test-quick`

LAB_SUBNET = 74

TYPOS = {
    # kind: (file, text, replacement, code of the error it makes)
    "Fleet": ("fleet.yaml", "changeWindows:", "changeWindow:", "unknown-field"),
    "Machine": ("machines/nyc1/r04.yaml", "bootDevice: disk", "bootDevice: dsik", "invalid-value"),
    "VirtualMachine": ("virtual-machines/nyc1-services.yaml", "vcpus: 2", "vcpus: eight", "invalid-value"),
    "Cluster": ("clusters/k8s-nyc1.yaml", "scheduler: yunikorn", "schedulr: yunikorn", "unknown-field"),
    "SparkPool": (
        "spark-pools/etl.yaml",
        "namespace: spark-etl",
        "namespace: spark-etl\n  namspace: spark-etl",
        "unknown-field",
    ),
}
ORPHANS = ("report", "powerOff", "delete")
DIAGNOSTIC = re.compile(r"^(\S+):(\d+):(\d+): error\[([a-z-]+)\]: .+", re.M)


def _copy(source: Path, target: Path, orphans: str) -> Path:
    shutil.copytree(source, target)
    yaml = YAML()  # round trip: the rest of fleet.yaml stays as written
    path = target / "fleet.yaml"
    fleet = yaml.load(path.read_text())
    fleet["spec"]["policies"]["changeWindows"] = []  # tests must not depend on the time of day
    fleet["spec"]["policies"]["orphans"] = orphans
    with path.open("w") as handle:
        yaml.dump(fleet, handle)
    return target


def _edit(repo: Path, file: str, text: str, replacement: str) -> None:
    path = repo / file
    content = path.read_text()
    assert text in content, f"{text!r} is not in {file}"
    path.write_text(content.replace(text, replacement, 1))


def _live(env: dict[str, str]) -> list[tuple[str, str, Any]]:
    """Every resource of the example as the providers see it now (all kinds), timestamps aside."""
    done = run_fleet("observe", env["REPO"], "--lab", "-o", "json", env=env)
    assert done.returncode == 0, done.stderr
    return [(o["address"], o["state"], o["fields"]) for o in json.loads(done.stdout)]


def _runs(env: dict[str, str]) -> list[dict[str, Any]]:
    done = run_fleet("history", "-o", "json", env=env)
    assert done.returncode == 0, done.stderr
    runs: list[dict[str, Any]] = json.loads(done.stdout)
    return runs


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The example, applied once with `orphans: delete`, and what the lab looked like then."""
    directory = tmp_path_factory.mktemp("gate-lab")
    repo = _copy(EXAMPLE, directory / "repo", "delete")
    env = lab_environment(directory, REPO=str(repo), FLEET_STATE=str(directory / "state.db"))
    with running_lab(repo, LAB_SUBNET, env, "--transition-seconds", "0.1"):
        applied = run_fleet("apply", str(repo), "--lab", "--yes", env=env)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        yield {**env, "LIVE": json.dumps(_live(env))}


@pytest.mark.parametrize("orphans", ORPHANS)
@pytest.mark.parametrize("kind", sorted(TYPOS))
def test_a_typo_in_any_kind_refuses_plan_and_apply_whatever_the_orphans_policy(
    lab: dict[str, str], tmp_path: Path, kind: str, orphans: str
) -> None:
    repo = _copy(Path(lab["REPO"]), tmp_path / "repo", orphans)
    file, text, replacement, code = TYPOS[kind]
    _edit(repo, file, text, replacement)
    env = {k: v for k, v in lab.items() if k != "LIVE"}
    for command in (["plan"], ["plan", "--detailed-exitcode", "-o", "json"], ["apply", "--yes"]):
        exit_code, output = run_cli(*command, str(repo), "--lab", env=env)
        assert exit_code == 1, output
        found = DIAGNOSTIC.findall(output)
        assert (file, code) in {(path, c) for path, _, _, c in found}, output
        assert "nothing was done" in output and "Traceback" not in output
        assert "Plan:" not in output and "Run " not in output  # nothing planned, no run recorded


def test_nothing_was_done_to_the_lab_and_no_run_was_recorded(lab: dict[str, str], tmp_path: Path) -> None:
    """After every refused plan and apply of this module (and any order of them)."""
    env = {k: v for k, v in lab.items() if k != "LIVE"}
    repo = _copy(Path(lab["REPO"]), tmp_path / "repo", "delete")
    for file, text, replacement, _ in TYPOS.values():
        _edit(repo, file, text, replacement)
    assert run_cli("apply", str(repo), "--lab", "--yes", env=env)[0] == 1
    assert _live(env) == [tuple(item) for item in json.loads(lab["LIVE"])]
    runs = _runs(env)
    assert [(r["kind"], r["status"]) for r in runs] == [("apply", "succeeded")]


def test_a_yaml_syntax_error_in_one_file_of_many_is_reported_once_and_refuses_everything(
    lab: dict[str, str], tmp_path: Path
) -> None:
    env = {k: v for k, v in lab.items() if k != "LIVE"}
    repo = _copy(Path(lab["REPO"]), tmp_path / "repo", "delete")
    # nyc1-r01-01 is a hypervisor (VMs name it as their host) and a member of cluster k8s-nyc1.
    _edit(repo, "machines/nyc1/r01.yaml", "  rack: r01\n", "  rack: [r01\n")
    code, output = run_cli("validate", str(repo), "--no-cache", env=env)
    found = DIAGNOSTIC.findall(output)
    assert code == 1 and [(path, c) for path, _, _, c in found] == [
        ("machines/nyc1/r01.yaml", "yaml-syntax")
    ], output
    assert "unresolved-reference" not in output
    for command in (
        ["plan", "--lab"],
        ["apply", "--lab", "--yes"],
        ["drift", "--lab"],
        ["get"],
        ["inventory"],
    ):
        code, output = run_cli(*command, str(repo), env=env)
        assert code == 1 and "yaml-syntax" in output and "nothing was done" in output, (command, output)
    # An inventory with some hosts missing would go straight into ansible-playbook: none is printed.
    done = run_fleet("inventory", str(repo), env=env)
    assert done.returncode == 1 and done.stdout == "", done.stdout


def test_a_literal_secret_in_config_vars_refuses_the_run_and_is_never_shown(
    lab: dict[str, str], tmp_path: Path
) -> None:
    env = {k: v for k, v in lab.items() if k != "LIVE"}
    repo = _copy(Path(lab["REPO"]), tmp_path / "repo", "report")
    canary = "Canary-4bd17e0c-literal"
    _edit(
        repo,
        "machines/nyc1/r02.yaml",
        "      baseline_motd_role:",
        f"      db_password: {canary}\n      baseline_motd_role:",
    )
    for command in (["plan", "--lab"], ["apply", "--lab", "--yes"], ["inventory"]):
        code, output = run_cli(*command, str(repo), env=env)
        assert code == 1 and "error[secret-literal]" in output, output
        assert canary not in output


def test_reconcile_goes_on_for_targets_whose_specs_are_valid_and_records_the_errors(
    lab: dict[str, str], tmp_path: Path
) -> None:
    """The emergency path: errors outside the targets' own documents (and those they reference)
    are tolerated, said and recorded; errors in them refuse it as everywhere else."""
    env = {k: v for k, v in lab.items() if k != "LIVE"} | {"FLEET_STATE": str(tmp_path / "state.db")}
    repo = _copy(Path(lab["REPO"]), tmp_path / "repo", "delete")
    _edit(repo, *TYPOS["SparkPool"][:3])  # spark-pools/etl.yaml: nothing a Machine references
    _edit(repo, *TYPOS["VirtualMachine"][:3])  # virtualmachine/nyc1-bastion-1, on nyc1-r01-01

    def reconcile(repo: Path, *selection: str) -> tuple[int, str]:
        return run_cli(
            "reconcile", "--now", str(repo), "--lab", "--yes", "--reason", "PSU swap", *selection, env=env
        )

    code, output = reconcile(repo, "-t", "machine/nyc1-r02-04")
    assert code == 0, output
    assert "none of them in the targets" in output and "without orphan handling" in output
    (run,) = _runs(env)
    assert run["kind"] == "reconcile" and run["status"] == "succeeded"
    recorded = "\n".join(run["summary"]["validationErrors"])
    assert "spark-pools/etl.yaml" in recorded and "virtual-machines/nyc1-services.yaml" in recorded
    # A target whose own document is broken is refused, as everywhere else.
    code, output = reconcile(repo, "-t", "virtualmachine/nyc1-bastion-1")
    assert code == 1 and "nothing was done" in output, output
    # A label selector cannot show that no broken document would have matched it: refused.
    code, output = reconcile(repo, "-l", "team=platform-k8s")
    assert code == 1 and "nothing was done" in output, output
    # An error in a target's own file (another Machine of its rack) concerns it: refused.
    rack = _copy(Path(lab["REPO"]), tmp_path / "rack", "delete")
    _edit(rack, *TYPOS["Machine"][:3])  # machines/nyc1/r04.yaml: its first machine
    code, output = reconcile(rack, "-t", "machine/nyc1-r04-02")
    assert code == 1 and "concern the targets" in output, output
    assert len(_runs(env)) == 1
