"""Benchmark: observe the configuration of 50 hosts with fleet's Ansible provider (check mode with
diffs), and with plain `ansible-playbook --check --diff` on the same inventory, in the same run.

Every host is `ansible_connection=local` with a directory of its own as `baseline_root`, managed
by the example repo's `playbooks/site.yml` (the baseline role; services not managed, so it only
writes files). The Machines are built in memory; both sides use the inventory fleet builds from
them (`build_inventory`, with the lab's connection overrides), fleet as its JSON and Ansible as
`render_ini` of it. Half the hosts are configured first by one real `ansible-playbook` run, and a
few of those then get one file edited behind fleet's back, so observing finds hosts in sync,
drifted and never configured. Then:

1. fleet: `AnsibleProvider.observe` of all Machines with the fleet default forks
   (`AnsibleSettings().forks`, 20), --runs times: the first run and the median;
2. `ansible-playbook -i hosts.ini playbooks/site.yml --check --diff -f FORKS`, --runs times
   (median), each right after one of fleet's runs;

and the ratio fleet/Ansible, which is fleet's overhead over Ansible itself (ansible-runner, its
event stream, reading the reports). Fleet's provider gets the RunSettings the registry makes from
the Fleet's defaults, with its run directories in the scratch directory. CPU seconds are this
process's and its children's. Figures are printed, never asserted; the script exits non-zero when
the two sides saw different hosts or disagree on which would change (fleet's `config.changes`
against the recap's `changed=N`), or a host failed or was not observed: then the two sides did
different work. Everything lives in one temporary directory, HOME and Ansible's temporary
directories included, removed at the end.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from providers.access import Access, EndpointMap
from providers.ansible.inventory import build_inventory, render_ini
from providers.ansible.provider import AnsibleProvider
from providers.ansible.runner import RunSettings
from providers.base import Observation, ObservationState, RevisionInputs
from reconciler.spec import models

REPO = Path(__file__).resolve().parent.parent
PLAYBOOKS = REPO / "fleet-repo-example" / "playbooks"
ROLES = ("kubernetes-node", "spark-node", "storage", "generic")
# The files the baseline role writes under a host's root: drift edits one of them.
DRIFTED_FILES = ("etc/motd", "etc/sysctl.d/90-fleet-baseline.conf", "etc/chrony/chrony.conf")
_RECAP_LINE = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=\d+\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)"
)


def _fleet() -> models.Fleet:
    return models.Fleet.model_validate(
        {
            "apiVersion": "fleet/v1alpha1",
            "kind": "Fleet",
            "metadata": {"name": "bench"},
            "spec": {
                "sites": [{"name": "lab", "racks": [{"name": "r01"}, {"name": "r02"}]}],
                "credentials": {"bmc": {"env": "BENCH_BMC"}},
            },
        }
    )


def _machine(index: int, root: Path) -> models.Machine:
    role = ROLES[index % len(ROLES)]
    return models.Machine.model_validate(
        {
            "apiVersion": "fleet/v1alpha1",
            "kind": "Machine",
            "metadata": {"name": f"lab-{index:03d}"},
            "spec": {
                "site": "lab",
                "rack": f"r{index % 2 + 1:02d}",
                "role": role,
                "bmc": {"address": f"10.0.{index // 250}.{index % 250 + 1}", "credentialsRef": "bmc"},
                "config": {
                    "playbooks": ["playbooks/site.yml"],
                    "vars": {
                        "baseline_root": str(root),
                        "baseline_manage_services": "false",
                        "baseline_motd_role": role,
                        "baseline_ntp_servers": ["ntp1.lab.example", "ntp2.lab.example"],
                        "baseline_sysctl": {"vm.swappiness": 10 if role == "storage" else 60},
                    },
                },
            },
        }
    )


class Clock:
    """Wall and CPU seconds (this process and its waited-for children) of the block it wraps."""

    def __enter__(self) -> Clock:
        self._wall = time.monotonic()
        self._cpu = _cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self._wall
        self.cpu = _cpu_seconds() - self._cpu


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _ansible_playbook() -> str:
    beside = Path(sys.executable).parent / "ansible-playbook"  # the one fleet's runner uses
    found = str(beside) if beside.is_file() else shutil.which("ansible-playbook")
    if found is None:
        raise SystemExit("ansible-playbook is not installed next to fleet")
    return found


def _ansible_environment(scratch: Path) -> dict[str, str]:
    """Our environment with HOME and every Ansible directory inside the scratch directory."""
    home, temp = scratch / "home", scratch / "tmp"
    for directory in (home, temp / "local", temp / "remote"):
        directory.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)]),
        "HOME": str(home),
        "ANSIBLE_HOME": str(home / ".ansible"),
        "ANSIBLE_LOCAL_TEMP": str(temp / "local"),
        "ANSIBLE_REMOTE_TEMP": str(temp / "remote"),
        "TMPDIR": str(temp / "local"),
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "True",
    }


def _run_ansible(command: Sequence[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ansible-playbook in a session of its own, killed with its workers if it does not end."""
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=600)
    finally:
        if process.poll() is None:  # timed out or interrupted: stop it and its workers
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return subprocess.CompletedProcess(list(command), process.returncode, stdout, stderr)


def _recap(done: subprocess.CompletedProcess[str]) -> dict[str, int]:
    """Changed tasks per host from the PLAY RECAP; any unreachable or failed host is an error."""
    _, _, recap = done.stdout.rpartition("PLAY RECAP")
    changed: dict[str, int] = {}
    for line in recap.splitlines():
        match = _RECAP_LINE.match(line.strip())
        if match is None:
            continue
        if int(match["unreachable"]) or int(match["failed"]):
            raise SystemExit(f"ansible-playbook: host {match['host']} failed or was unreachable:\n{line}")
        changed[match["host"]] = int(match["changed"])
    if done.returncode != 0 or not changed:
        tail = (done.stdout + done.stderr).strip()[-2000:]
        raise SystemExit(f"ansible-playbook exited {done.returncode} with no usable recap:\n{tail}")
    return changed


def _fleet_changes(observations: Sequence[Observation], names: dict[str, str]) -> dict[str, int]:
    """Tasks that would change each host, by inventory name; an unknown or failing host is an error."""
    changed: dict[str, int] = {}
    for seen in observations:
        if seen.state is not ObservationState.OBSERVED:
            raise SystemExit(f"fleet: {seen.address} is {seen.state} ({seen.reason}): {seen.detail}")
        config = seen.fields["config"]
        if config["failed"]:
            raise SystemExit(f"fleet: {seen.address} has failed tasks: {config['failed']}")
        changed[names[seen.address]] = len(config["changes"])
    return changed


def _compare(fleet: dict[str, int], ansible: dict[str, int], run: int) -> None:
    fleet_hosts = {h for h, n in fleet.items() if n}
    ansible_hosts = {h for h, n in ansible.items() if n}
    if set(fleet) != set(ansible) or fleet_hosts != ansible_hosts:
        raise SystemExit(
            f"run {run}: the two sides disagree. Seen only by fleet: {sorted(set(fleet) - set(ansible))},"
            f" only by Ansible: {sorted(set(ansible) - set(fleet))}; changed only for fleet:"
            f" {sorted(fleet_hosts - ansible_hosts)}, only for Ansible: {sorted(ansible_hosts - fleet_hosts)}"
        )
    counts = {h: (fleet[h], ansible[h]) for h in sorted(fleet) if fleet[h] != ansible[h]}
    if counts:
        print(f"   note: run {run}: changed tasks per host differ (fleet, Ansible): {counts}")


def _line(name: str, seconds: float, cpu: float, hosts: int) -> str:
    return f"{name:28s} {seconds:7.2f} s  {seconds / hosts:6.3f} s/host  cpu {cpu:6.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3, help="timed runs per side (medians)")
    parser.add_argument("--drifted", type=int, default=3, help="configured hosts with a file edited")
    arguments = parser.parse_args()
    started = time.monotonic()
    python = "/usr/bin/python3" if Path("/usr/bin/python3").is_file() else sys.executable

    with tempfile.TemporaryDirectory(prefix="fleet-bench-ansible-") as scratch_name:
        scratch = Path(scratch_name)
        shutil.copytree(PLAYBOOKS, scratch / "repo" / "playbooks")
        roots = [scratch / "hosts" / f"lab-{i:03d}" for i in range(arguments.hosts)]
        for root in roots:
            root.mkdir(parents=True)
        machines = [_machine(i, root) for i, root in enumerate(roots)]
        local = {
            "ansible_connection": "local",
            "ansible_python_interpreter": python,
            "ansible_become": "false",
            "ansible_remote_tmp": str(scratch / "remote-tmp"),
        }
        overrides = {m.metadata.name: local for m in machines}
        fleet = _fleet()
        inputs = RevisionInputs.of(fleet, machines, playbook_root=scratch / "repo")
        settings = fleet.spec.providers.ansible  # the fleet's defaults: no providers.ansible in the Fleet
        forks = settings.forks
        provider = AnsibleProvider(
            Access(EndpointMap(ansible_hosts=overrides)),
            settings=RunSettings(
                forks=settings.forks,
                timeout_seconds=settings.timeoutSeconds,
                host_key_checking=settings.hostKeyChecking,
                temp_dir=scratch / "runs",
            ),
        )
        inventory_file = scratch / "hosts.ini"
        inventory_file.write_text(
            render_ini(build_inventory(machines, fleet, connection_overrides=overrides))
        )
        env = _ansible_environment(scratch)
        playbook = ["playbooks/site.yml", "-i", str(inventory_file), "-f", str(forks)]
        names = {m.address: m.metadata.name for m in machines}

        # The hosts' state: every other one configured, a few of those edited by hand since.
        configured = [m.metadata.name for m in machines[::2]]
        with Clock() as setup:
            done = _run_ansible(
                [_ansible_playbook(), *playbook, "--limit", ",".join(configured)], env, scratch / "repo"
            )
        applied = _recap(done)
        if set(applied) != set(configured):
            raise SystemExit(f"configuring hosts reached {sorted(applied)}, not {configured}")
        drifted = configured[1 : 1 + 2 * arguments.drifted : 2]
        for index, name in enumerate(drifted):
            path = scratch / "hosts" / name / DRIFTED_FILES[index % len(DRIFTED_FILES)]
            path.write_text(path.read_text() + "# edited by hand\n")
        print(
            f"{len(configured)} of {len(machines)} hosts configured by ansible-playbook in"
            f" {setup.seconds:.1f} s; {len(drifted)} of them then edited by hand ({', '.join(drifted)})"
        )

        fleet_runs: list[Clock] = []
        ansible_runs: list[Clock] = []
        for run in range(1, arguments.runs + 1):
            with Clock() as step:
                fleet_changes = _fleet_changes(provider.observe(machines, inputs).observations, names)
            fleet_runs.append(step)
            with Clock() as step:
                done = _run_ansible(
                    [_ansible_playbook(), *playbook, "--check", "--diff"], env, scratch / "repo"
                )
            ansible_runs.append(step)
            ansible_changes = _recap(done)
            _compare(fleet_changes, ansible_changes, run)
        left = list((scratch / "runs").iterdir()) if (scratch / "runs").exists() else []
        if left:
            print(f"   WARNING: fleet's runs left {len(left)} private directories behind")

    hosts = len(machines)
    would_change = sorted(h for h, n in ansible_changes.items() if n)
    fleet_median = statistics.median(r.seconds for r in fleet_runs)
    ansible_median = statistics.median(r.seconds for r in ansible_runs)
    print(
        f"hosts: {hosts} (ansible_connection=local), forks: {forks}, cores: {os.cpu_count()},"
        f" ansible-core {importlib.metadata.version('ansible-core')}"
    )
    print(
        f"hosts that would change: {len(would_change)} on both sides"
        f" ({hosts - len(configured)} never configured, {len(drifted)} drifted),"
        f" without changes: {hosts - len(would_change)}"
    )
    print()
    first = fleet_runs[0]
    print(_line("fleet observe, first run", first.seconds, first.cpu, hosts))
    print(
        _line(
            f"fleet observe, median of {len(fleet_runs)}",
            fleet_median,
            statistics.median(r.cpu for r in fleet_runs),
            hosts,
        )
    )
    print(
        _line(
            f"ansible-playbook, median of {len(ansible_runs)}",
            ansible_median,
            statistics.median(r.cpu for r in ansible_runs),
            hosts,
        )
    )
    print()
    print(
        f"ratio fleet/ansible seconds: {fleet_median / ansible_median:.2f}x"
        f" (first run {first.seconds / ansible_median:.2f}x)"
    )
    print(f"benchmark took {time.monotonic() - started:.0f} s in all")


if __name__ == "__main__":
    main()
