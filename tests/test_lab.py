"""`fleet lab` and `fleet observe --lab`: simulators for the example repo, cross-checked with ipmitool."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from fleet_testing import EXAMPLE, lab_environment, run_fleet

from lab.serving import process_running

pytestmark = pytest.mark.slow  # a lab suite: left out of `make test-quick`


@pytest.fixture()
def lab_env(tmp_path: Path):
    env = lab_environment(tmp_path)
    yield env
    run_fleet("lab", "down", env=env)


def test_lab_up_observe_status_down_leaves_nothing_behind(lab_env: dict[str, str], tmp_path: Path) -> None:
    # From the directory that holds the lab's state directory, ./lab (as the demo runs it): the
    # simulators still import fleet's lab package, not that directory.
    assert Path(lab_env["FLEET_LAB_DIR"]) == tmp_path / "lab"
    up = run_fleet("lab", "up", str(EXAMPLE), "--subnet", "61", env=lab_env, cwd=tmp_path)
    assert up.returncode == 0, up.stdout + up.stderr
    status = json.loads(run_fleet("lab", "status", "--format", "json", env=lab_env).stdout)
    assert status["running"] and status["machines"] >= 24
    pid = status["pid"]
    assert all(actual.startswith("127.61.") for actual in status["endpoints"].values())

    observed = run_fleet("observe", str(EXAMPLE), "--lab", "-k", "Machine", "--format", "json", env=lab_env)
    assert observed.returncode == 0, observed.stderr
    observations = json.loads(observed.stdout)
    assert len(observations) == status["machines"]
    assert all(o["state"] == "observed" and o["fields"]["power"] == "off" for o in observations), observations
    # ldn1 r03's BMC account is kept in a Kubernetes Secret: the lab serves it from the API server
    # of k8s-ldn1, the Fleet's credentialsCluster, and fleet reads it through that Cluster as a
    # deployment outside a pod does (the endpoint map names no file and no kubeconfig for it).
    overrides = json.loads((Path(lab_env["FLEET_LAB_DIR"]) / "overrides.json").read_text())
    assert "bmc-ldn1-r03" not in overrides["credentials"] and "kubeconfig" not in overrides
    kubeconfig = Path(lab_env["FLEET_LAB_DIR"]) / "clusters" / "k8s-ldn1" / "kubeconfig"
    served = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "get", "secret", "-n", "fleet-system", "-o", "name"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert served.stdout.split() == ["secret/bmc-ldn1-r03"], served.stdout + served.stderr
    assert {o["address"] for o in observations} >= {"machine/ldn1-r03-02", "machine/ldn1-r03-03"}
    # With no --kind, every kind is observed: VMs on the hypervisors, Clusters and SparkPools.
    everything = run_fleet("observe", str(EXAMPLE), "--lab", "--format", "json", env=lab_env)
    assert everything.returncode == 0, everything.stderr
    kinds = {o["address"].split("/")[0] for o in json.loads(everything.stdout)}
    assert kinds == {"machine", "virtualmachine", "cluster", "sparkpool"}, kinds

    # An independent client sees the same BMC: Debian's ipmitool over lanplus.
    overrides = json.loads(Path(status["overrides"]).read_text())
    machines = json.loads(run_fleet("get", str(EXAMPLE), "-k", "Machine", "-o", "json", env=lab_env).stdout)
    machine = next(m for m in machines if m["metadata"]["name"] == "nyc1-r01-01")
    bmc = machine["spec"]["bmc"]
    actual = overrides["endpoints"][f"{bmc['address']}:{bmc['port']}"]
    credential = Path(overrides["credentials"][bmc["credentialsRef"]]["file"]).read_text().strip()
    user, password = credential.split(":", 1)
    ipmitool = subprocess.run(
        [
            "ipmitool",
            "-I",
            "lanplus",
            "-H",
            actual.rsplit(":", 1)[0],
            "-U",
            user,
            "-P",
            password,
            "chassis",
            "power",
            "status",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Chassis Power is off" in ipmitool.stdout, ipmitool.stdout + ipmitool.stderr

    text = run_fleet("observe", str(EXAMPLE), "--lab", "-l", "team=platform-k8s", env=lab_env)
    assert text.returncode == 0 and "machine/" in text.stdout and "observed" in text.stdout
    assert password not in text.stdout + text.stderr + observed.stdout

    # Every configured Machine is an SSH host a plain ssh client reaches with the lab's key.
    ssh_vars = overrides["ansibleHosts"]["nyc1-r01-01"]
    assert status["sshHosts"] == len(overrides["ansibleHosts"]) and ssh_vars["ansible_host"].startswith(
        "127.61."
    )
    ssh = subprocess.run(
        [
            "ssh",
            "-i",
            ssh_vars["ansible_ssh_private_key_file"],
            *ssh_vars["ansible_ssh_common_args"].split(),
            "-o",
            "BatchMode=yes",
            "-p",
            ssh_vars["ansible_port"],
            f"{ssh_vars['ansible_user']}@{ssh_vars['ansible_host']}",
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ssh.returncode == 0, ssh.stderr
    ready = json.loads((Path(lab_env["FLEET_LAB_DIR"]) / "ssh" / "ready.json").read_text())
    sshd_pids = [host["pid"] for host in ready["hosts"].values()]

    down = run_fleet("lab", "down", env=lab_env)
    assert down.returncode == 0 and "lab down" in down.stdout
    assert not process_running(pid)
    assert not process_running(status["sshPid"]) and not [p for p in sshd_pids if process_running(p)]
    assert not Path(lab_env["FLEET_LAB_DIR"]).exists()
    assert run_fleet("lab", "status", env=lab_env).returncode == 1


def test_observe_without_a_lab_is_a_clear_error(lab_env: dict[str, str]) -> None:
    result = run_fleet("observe", str(EXAMPLE), "--lab", env=lab_env)
    assert result.returncode == 2 and "no lab is running" in result.stderr


def test_observe_real_endpoints_without_credentials_is_unknown_not_a_crash(lab_env: dict[str, str]) -> None:
    env = {k: v for k, v in lab_env.items() if not k.startswith("FLEET_BMC")}
    result = run_fleet("observe", str(EXAMPLE), "-t", "machine/nyc1-r01-01", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    (observation,) = json.loads(result.stdout)
    assert observation["state"] == "unknown" and observation["reason"] == "credentials-missing"
    assert "FLEET_BMC_NYC1" in observation["detail"]
