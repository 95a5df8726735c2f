"""Simulated hypervisors: real libvirtd daemons (test driver only), started, faulted and stopped.

Each check goes through a real client: libvirt-python or Debian's virsh over the daemon's socket.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lab.hypervisors import HypervisorFarm, HypervisorFarmError
from lab.serving import process_running

ROOT = Path(__file__).resolve().parent.parent


def virsh(uri: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True, timeout=30)


def test_a_farm_starts_daemons_that_answer_and_stops_them_all(tmp_path: Path) -> None:
    names = [f"hv-{i:02d}" for i in range(8)]
    with HypervisorFarm(
        tmp_path, names, pools=["default"], networks=["default", "lan"], images=["default/debian-12"]
    ) as farm:
        pids = farm.pids
        assert sorted(farm.uris) == names and len(set(pids.values())) == len(names)
        assert all(process_running(pid) for pid in pids.values())
        uri = farm.uri("hv-03")
        listing = virsh(uri, "list", "--all")
        assert listing.returncode == 0 and " test " in listing.stdout  # the test driver's own domain
        assert "default" in virsh(uri, "pool-list", "--all").stdout
        assert "lan" in virsh(uri, "net-list", "--all").stdout
        assert "debian-12" in virsh(uri, "vol-list", "default").stdout
        assert (tmp_path / "hv-03" / "libvirtd.log").exists()
    assert not any(process_running(pid) for pid in pids.values())
    assert not (tmp_path / "hv-03" / "libvirt-sock").exists()
    assert (tmp_path / "hv-03" / "libvirtd.conf").exists()  # the directory is the caller's


def test_the_farm_keeps_state_between_clients(tmp_path: Path) -> None:
    with HypervisorFarm(tmp_path, ["hv-a"]) as farm:
        definition = tmp_path / "d.xml"
        definition.write_text(
            "<domain type='test'><name>kept</name><memory unit='KiB'>65536</memory>"
            "<vcpu>1</vcpu><os><type>hvm</type></os></domain>"
        )
        assert virsh(farm.uri("hv-a"), "define", str(definition)).returncode == 0
        assert "kept" in virsh(farm.uri("hv-a"), "list", "--all").stdout  # a second client sees it


def test_faults_kill_pause_and_restart_one_daemon(tmp_path: Path) -> None:
    with HypervisorFarm(tmp_path, ["hv-a", "hv-b"], sample_domain=False) as farm:
        assert " test " not in virsh(farm.uri("hv-a"), "list", "--all").stdout
        old_pid = farm.pids["hv-a"]
        farm.kill("hv-a")
        assert not process_running(old_pid) and not farm.alive("hv-a")
        assert virsh(farm.uri("hv-a"), "list").returncode != 0
        assert virsh(farm.uri("hv-b"), "list").returncode == 0

        farm.restart("hv-a")
        assert farm.pids["hv-a"] != old_pid and virsh(farm.uri("hv-a"), "list").returncode == 0

        farm.pause("hv-b")
        with pytest.raises(subprocess.TimeoutExpired):
            subprocess.run(["virsh", "-c", farm.uri("hv-b"), "list"], capture_output=True, timeout=1)
        farm.resume("hv-b")
        assert virsh(farm.uri("hv-b"), "list").returncode == 0
        farm.pause("hv-b")  # a paused daemon is stopped all the same
        pids = farm.pids
    assert not any(process_running(pid) for pid in pids.values())


def test_a_deep_directory_gets_short_socket_paths(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    with HypervisorFarm(deep, ["hv-a"]) as farm:
        assert virsh(farm.uri("hv-a"), "list").returncode == 0
        socket = farm.uri("hv-a").partition("socket=")[2]
        assert len(socket) < 108
        assert (deep / "hv-a" / "libvirtd.conf").exists()
    assert not Path(socket).parent.exists()


def test_a_missing_libvirtd_names_the_debian_package(tmp_path: Path) -> None:
    with pytest.raises(HypervisorFarmError, match="libvirt-daemon"):
        HypervisorFarm(tmp_path, ["hv-a"], libvirtd=tmp_path / "no-libvirtd").start()


def test_serve_writes_the_table_and_stops_on_sigterm(tmp_path: Path) -> None:
    directory = tmp_path / "hypervisors"
    command = [sys.executable, "-m", "lab.hypervisors", "serve", "--dir", str(directory)]
    command += ["--hypervisor", "hv-a", "--hypervisor", "hv-b", "--pool", "default", "--network", "lan"]
    command += ["--image", "default/base"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        ready = process.stdout.readline()
        assert ready.startswith("ready 2 hypervisors"), ready
        table = json.loads((directory / "hypervisors.json").read_text())["hypervisors"]
        assert sorted(table) == ["hv-a", "hv-b"]
        for name, entry in table.items():
            assert entry["dir"] == str(directory / name)
            assert process_running(entry["pid"])
            assert "base" in virsh(entry["uri"], "vol-list", "default").stdout
        os.kill(table["hv-a"]["pid"], signal.SIGKILL)  # a daemon that dies is reported, not restarted
        assert "hv-a stopped" in process.stdout.readline()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert not any(process_running(entry["pid"]) for entry in table.values())
    assert not (directory / "hv-b" / "libvirt-sock").exists()
