"""`fleet inventory`: the fleet as an Ansible inventory, checked with Ansible's own
`ansible-inventory`, so operators can reuse it with plain `ansible-playbook`."""

from __future__ import annotations

from pathlib import Path

import pytest
from fleet_testing import EXAMPLE, ansible_inventory_list, run_cli


@pytest.mark.parametrize("output", ["json", "ini"])
def test_ansible_reads_the_inventory_fleet_prints(output: str, tmp_path: Path) -> None:
    code, text = run_cli("inventory", str(EXAMPLE), "--format", output)
    assert code == 0, text
    path = tmp_path / ("inventory.json" if output == "json" else "inventory.ini")
    path.write_text(text)
    if output == "json":
        # A dynamic inventory is a program; Ansible's script plugin runs it and reads its JSON.
        script = tmp_path / "inventory.py"
        script.write_text(f"#!/bin/sh\ncat {path}\n")
        script.chmod(0o755)
        path = script
    listed = ansible_inventory_list(path, tmp_path)
    hostvars = listed["_meta"]["hostvars"]  # type: ignore[index]
    assert hostvars["nyc1-bastion-1"]["fleet_address"] == "virtualmachine/nyc1-bastion-1"
    assert hostvars["nyc1-r01-02"]["ansible_host"] == "10.20.1.12"
    assert hostvars["nyc1-r01-02"]["baseline_ntp_servers"] == [
        "ntp1.nyc1.acme.internal",
        "ntp2.nyc1.acme.internal",
    ]
    assert "nyc1-r01-02" in listed["cluster_k8s_nyc1"]["hosts"]  # type: ignore[index]
    assert "nyc1-r01-02" in listed["rack_nyc1_r01"]["hosts"]  # type: ignore[index]
    assert listed["role_hypervisor"]["hosts"]  # type: ignore[index]


def test_inventory_of_an_invalid_repo_is_a_clear_error(tmp_path: Path) -> None:
    code, text = run_cli("inventory", str(tmp_path))
    assert code != 0
    assert "fleet.yaml" in text and "Traceback" not in text
