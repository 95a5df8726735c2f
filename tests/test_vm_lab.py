"""VirtualMachines end to end: `fleet plan/apply/drift --lab` against the lab's simulated
hypervisors (one libvirtd with the test driver per hypervisor Machine), checked and
disturbed with Debian's `virsh` as an operator would.

The lab starts with its machines powered on as specified (the IPMI side is covered by
test_apply), so every change planned here is a VirtualMachine's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fleet_testing import EXAMPLE, entries_by_address, lab_environment, lab_fleet, lab_plan, run_fleet
from ruamel.yaml import YAML

pytestmark = pytest.mark.slow  # a lab suite: left out of `make test-quick`

BASTION = "nyc1-bastion-1"  # on nyc1-r01-01, 2 vCPUs, 4Gi
DNS = "nyc1-dns-1"  # on nyc1-r01-01


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    directory = tmp_path_factory.mktemp("vm-lab")
    repo = directory / "repo"
    shutil.copytree(EXAMPLE, repo)
    _edit(repo / "fleet.yaml", lambda fleet: fleet["spec"]["policies"].update(changeWindows=[]))
    env = lab_environment(directory, REPO=str(repo), FLEET_STATE=str(directory / "state.db"))
    up = run_fleet("lab", "up", str(repo), "--subnet", "67", "--as-specified", env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "6 simulated hypervisors" in up.stdout
    try:
        yield env
    finally:
        down = run_fleet("lab", "down", env=env)
        assert down.returncode == 0, down.stderr


def _edit(path: Path, change: Any, index: int | None = None) -> None:
    """Round-trip edit of a YAML file (one document of a multi-document file with `index`)."""
    yaml = YAML()
    documents = list(yaml.load_all(path.read_text()))
    change(documents[index or 0])
    with path.open("w") as handle:
        yaml.dump_all(documents, handle)


def _uris(env: dict[str, str]) -> dict[str, str]:
    overrides = json.loads((Path(env["FLEET_LAB_DIR"]) / "overrides.json").read_text())
    return dict(overrides["hypervisors"])


def virsh(env: dict[str, str], host: str, *args: str, check: bool = True) -> str:
    done = subprocess.run(
        ["virsh", "-q", "-c", _uris(env)[host], *args], capture_output=True, text=True, timeout=30
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done.stdout


def _vm_targets(repo: Path) -> list[str]:
    """Every VirtualMachine of the repo: most steps select them only, so the lab's 35 BMCs and
    its clusters are not observed (test_apply and test_kube_lab cover those)."""
    yaml = YAML(typ="safe")
    return sorted(
        f"virtualmachine/{document['metadata']['name']}"
        for path in (repo / "virtual-machines").glob("*.yaml")
        for document in yaml.load_all(path.read_text())
        if document
    )


def _targets(env: dict[str, str], whole_fleet: bool) -> list[str]:
    return [] if whole_fleet else _vm_targets(Path(env["REPO"]))


def _fleet(env: dict[str, str], *args: str, whole_fleet: bool = False) -> subprocess.CompletedProcess[str]:
    return lab_fleet(env, _targets(env, whole_fleet), *args)


def _plan(env: dict[str, str], *, whole_fleet: bool = False) -> dict[str, Any]:
    return lab_plan(env, _targets(env, whole_fleet))


_entries = entries_by_address


def _dominfo(env: dict[str, str], host: str, name: str) -> dict[str, str]:
    lines = virsh(env, host, "dominfo", name).splitlines()
    return {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in lines)}


def test_first_apply_defines_and_starts_every_vm_and_leaves_the_hypervisors_own_domains(
    lab: dict[str, str],
) -> None:
    plan = _plan(lab)
    creates = [e["address"] for e in plan["entries"] if e["action"] == "create"]
    assert len(creates) == 13
    # Every test-driver daemon starts with a domain called `test` that fleet did not make.
    unmanaged = [e for e in plan["entries"] if e["finding"] == "unmanaged"]
    assert {e["address"] for e in unmanaged} == {"virtualmachine/test"}
    assert len(unmanaged) == 6

    applied = _fleet(lab, "apply", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr

    info = _dominfo(lab, "nyc1-r01-01", BASTION)
    assert info["State"] == "running"
    assert info["CPU(s)"] == "2"
    assert info["Max memory"] == f"{4 * 1024 * 1024} KiB"
    assert info["Autostart"] == "enable"
    definition = virsh(lab, "nyc1-r01-01", "dumpxml", "--inactive", BASTION)
    assert "<address>virtualmachine/nyc1-bastion-1</address>" in definition
    assert "52:54:00:14:01:21" in definition
    # The domains fleet did not make are exactly as they were.
    assert _dominfo(lab, "nyc1-r01-01", "test")["State"] == "running"

    again = _fleet(lab, "plan", "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr


def test_changes_made_with_virsh_behind_fleets_back_are_drift_and_apply_puts_them_back(
    lab: dict[str, str],
) -> None:
    virsh(lab, "nyc1-r01-01", "setvcpus", BASTION, "1", "--live")
    virsh(lab, "nyc1-r01-01", "destroy", DNS)

    drift = _fleet(lab, "drift", "--detailed-exitcode")
    assert drift.returncode == 2, drift.stdout + drift.stderr
    assert "virtualmachine/nyc1-bastion-1" in drift.stdout
    plan = _plan(lab)
    drifted = {
        (e["address"], f["field"], f["before"], f["after"])
        for e in plan["entries"]
        if e["finding"] == "drift"
        for f in e["fields"]
    }
    assert (f"virtualmachine/{BASTION}", "vcpus", 2, 1) in drifted
    assert (f"virtualmachine/{DNS}", "power", "on", "off") in drifted
    actions = {e["address"]: e["action"] for e in plan["entries"] if e["action"]}
    assert actions == {f"virtualmachine/{BASTION}": "update", f"virtualmachine/{DNS}": "power-on"}

    applied = _fleet(lab, "apply", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert _dominfo(lab, "nyc1-r01-01", BASTION)["CPU(s)"] == "2"
    assert _dominfo(lab, "nyc1-r01-01", DNS)["State"] == "running"
    assert _fleet(lab, "plan", "--detailed-exitcode").returncode == 0


def test_a_vm_moved_to_another_host_is_replaced_old_copy_stopped_first(lab: dict[str, str]) -> None:
    path = Path(lab["REPO"]) / "virtual-machines" / "nyc1-services.yaml"
    _edit(path, lambda vm: vm["spec"].update(host="nyc1-r02-01"), index=1)  # nyc1-dns-1
    plan = _plan(lab)
    (replace,) = [e for e in plan["entries"] if e["action"] == "replace"]
    assert replace["address"] == f"virtualmachine/{DNS}"
    assert {"field": "host", "before": "nyc1-r01-01", "after": "nyc1-r02-01"} in replace["fields"]

    applied = _fleet(lab, "apply", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert _dominfo(lab, "nyc1-r02-01", DNS)["State"] == "running"
    assert DNS not in virsh(lab, "nyc1-r01-01", "list", "--all", "--name").split()
    assert _fleet(lab, "plan", "--detailed-exitcode").returncode == 0


def test_a_removed_vm_is_an_orphan_deleted_only_when_the_policy_says_so(lab: dict[str, str]) -> None:
    path = Path(lab["REPO"]) / "virtual-machines" / "nyc1-services.yaml"
    text = path.read_text()
    documents = text.split("\n---\n")
    prometheus = next(d for d in documents if "name: nyc1-prometheus-1" in d)
    path.write_text("\n---\n".join(d for d in documents if d is not prometheus))
    # Orphans are found by whole-fleet passes only: a selection is nobody's whole fleet.
    orphaned = _entries(_plan(lab, whole_fleet=True), "orphaned")
    assert orphaned["virtualmachine/nyc1-prometheus-1"]["action"] is None  # orphans: report
    assert "nyc1-prometheus-1" in virsh(lab, "nyc1-r03-01", "list", "--name")

    _edit(Path(lab["REPO"]) / "fleet.yaml", lambda fleet: fleet["spec"]["policies"].update(orphans="delete"))
    orphan = _entries(_plan(lab, whole_fleet=True), "orphaned")["virtualmachine/nyc1-prometheus-1"]
    assert orphan["action"] == "delete"
    applied = _fleet(lab, "apply", "--yes", "--allow-destructive", whole_fleet=True)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "virtualmachine/nyc1-prometheus-1  delete: succeeded" in applied.stdout
    assert "nyc1-prometheus-1" not in virsh(lab, "nyc1-r03-01", "list", "--all", "--name")
    assert "virtualmachine/nyc1-prometheus-1" not in _entries(_plan(lab, whole_fleet=True), "orphaned")


def test_a_dead_hypervisor_makes_its_vms_unknown_not_absent(lab: dict[str, str]) -> None:
    table = json.loads((Path(lab["FLEET_LAB_DIR"]) / "hypervisors" / "hypervisors.json").read_text())
    os.kill(int(table["hypervisors"]["ldn1-r01-01"]["pid"]), signal.SIGKILL)
    time.sleep(0.2)
    plan = _plan(lab)
    unknown = _entries(plan, "unknown")
    on_dead_host = {"virtualmachine/ldn1-dns-1", "virtualmachine/k8s-ldn1-cp-1"}
    assert on_dead_host <= set(unknown), sorted(unknown)
    assert {unknown[a]["reason"] for a in on_dead_host} == {"unreachable"}
    assert all(re.search("ldn1-r01-01", unknown[a]["detail"]) for a in on_dead_host)
    assert "virtualmachine/ldn1-ci-runner-1" not in unknown  # other hypervisors still answer
    assert not [e for e in plan["entries"] if e["action"]], "nothing is planned for what was not seen"
