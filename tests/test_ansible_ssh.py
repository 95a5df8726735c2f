"""The Ansible provider over real SSH: Debian's sshd on loopback addresses as the hosts.

Four simulated hosts (127.0.93.1-4), each an sshd of its own with key-only root login and a
directory the example repo's baseline role writes into instead of `/`. Host key checking stays
on. One scenario (five ansible-playbook runs) runs once per module and the tests read its
results: fresh hosts, apply, in sync, a file changed behind fleet's back, a host whose sshd
died, a host whose key nobody trusts, a canary secret, and a plain `ssh` client reading back
what apply wrote. One more test logs in as an unprivileged user (made for it, removed after)
and configures through sudo, with the sudo password a secret variable.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fleet_testing import EXAMPLE, ansible_fleet, lab_access

from lab.serving import process_running
from lab.sshd import (
    SshHost,
    SshHostError,
    ansible_vars,
    descendants,
    known_hosts,
    make_client_key,
    start_hosts,
    stop_hosts,
)
from providers.ansible.provider import AnsibleProvider
from providers.ansible.runner import RunSettings
from providers.base import (
    Action,
    ApplyResult,
    Change,
    Observation,
    ObservationState,
    Observed,
    RevisionInputs,
    UnknownReason,
)
from reconciler.spec import models

pytestmark = pytest.mark.slow  # a lab suite: left out of `make test-quick`

SUBNET = "127.0.93"
PORT = 2201
CANARY = "canary-5b2e0a91-ssh-token-never-shown"
TOKEN_ENV = "FLEET_TEST_SSH_TOKEN"
# Ansible names a role's tasks "ROLE : TASK".
MOTD_TASK = "baseline : Write the message of the day"
TOKEN_TASK = "Install the application token"
FRESH_HOST_TASKS = [
    "baseline : Make the directories of the configuration files",
    "baseline : Configure chrony",
    "baseline : Write sysctl settings",
    MOTD_TASK,
    TOKEN_TASK,
]
TOKEN_PLAYBOOK = """\
- name: Application token
  hosts: all
  gather_facts: false
  tasks:
    - name: Install the application token
      ansible.builtin.copy:
        dest: "{{ baseline_root }}/app-token"
        content: "{{ app_token }}\\n"
        mode: "0600"
      no_log: true
"""


def _machine(name: str, index: int, config: dict[str, Any] | None = None) -> models.Machine:
    """A Machine running the example's site playbook, then the token one (unless `config` says
    otherwise): every host has the same set, so that one ansible-playbook run observes them all."""
    config = config or {
        "playbooks": ["playbooks/site.yml", "playbooks/token.yml"],
        "vars": {
            "baseline_ntp_servers": ["ntp1.lab1.acme.internal", "ntp2.lab1.acme.internal"],
            "baseline_motd_role": "web",
            "baseline_sysctl": {"vm.swappiness": 1},
            "app_token": {"credentialsRef": "app-token"},
        },
    }
    spec = {
        "site": "lab1",
        "rack": "r01",
        "address": f"192.0.2.{index}",  # where it would be in production; the overrides beat it
        "bmc": {"address": f"198.51.100.{index}", "credentialsRef": "bmc"},
        "config": config,
    }
    return models.Machine.model_validate(
        {"apiVersion": "fleet/v1alpha1", "kind": "Machine", "metadata": {"name": name}, "spec": spec}
    )


@dataclasses.dataclass
class Scenario:
    base: Path
    hosts: dict[str, SshHost]
    client_key: Path
    known_hosts: Path
    first: dict[str, Observation]
    written_by_observe: list[Path]
    apply_web1: ApplyResult
    drifted: dict[str, Observation]
    apply_drift: ApplyResult
    fixed: dict[str, Observation]


def _by_address(observed: Observed) -> dict[str, Observation]:
    return {o.address: o for o in observed.observations}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    base = tmp_path_factory.mktemp("ssh")
    repo = base / "repo"
    shutil.copytree(EXAMPLE / "playbooks", repo / "playbooks")
    (repo / "playbooks" / "token.yml").write_text(TOKEN_PLAYBOOK)
    names = ["web-1", "web-2", "web-3", "stranger-1"]
    client_key = make_client_key(base / "client")
    hosts = {
        host.name: host
        for host in start_hosts(
            base / "hosts",
            [(name, f"{SUBNET}.{index}", PORT) for index, name in enumerate(names, start=1)],
            Path(f"{client_key}.pub"),
        )
    }
    try:
        # stranger-1's key is left out: nobody has seen that host before.
        trusted = known_hosts(base, [host for name, host in hosts.items() if name != "stranger-1"])
        machines = {name: _machine(name, index) for index, name in enumerate(names, start=1)}
        inputs = RevisionInputs.of(ansible_fleet(TOKEN_ENV), machines.values(), playbook_root=repo)
        provider = AnsibleProvider(
            lab_access(
                {TOKEN_ENV: CANARY},
                ansible_hosts={n: ansible_vars(h, client_key, trusted) for n, h in hosts.items()},
            ),
            settings=RunSettings(forks=4, timeout_seconds=120, temp_dir=base / "runs"),
        )
        web1, web2, web3 = machines["web-1"], machines["web-2"], machines["web-3"]
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(TOKEN_ENV, CANARY)  # the reconciler's own environment holds it too
            first = _by_address(provider.observe([web1, web2, web3, machines["stranger-1"]], inputs))
            written_by_observe = [path for host in hosts.values() for path in host.root.rglob("*")]
            apply_web1 = provider.apply(Change(web1.address, Action.CONFIGURE, web1), inputs)

            motd = hosts["web-1"].root / "etc" / "motd"
            motd.write_text(motd.read_text() + "  edited by hand on the host\n")
            os.kill(hosts["web-3"].pid, signal.SIGKILL)  # as a crash would
            drifted = _by_address(provider.observe([web1, web2, web3], inputs))
            apply_drift = provider.apply(Change(web1.address, Action.CONFIGURE, web1), inputs)
            fixed = _by_address(provider.observe([web1, web2], inputs))
        yield Scenario(
            base,
            hosts,
            client_key,
            trusted,
            first,
            written_by_observe,
            apply_web1,
            drifted,
            apply_drift,
            fixed,
        )
    finally:
        stop_hosts([host.pid for host in hosts.values()])


def _config(observation: Observation) -> dict[str, Any]:
    assert observation.state is ObservationState.OBSERVED, observation.detail
    config: dict[str, Any] = observation.fields["config"]
    return config


def _changed_tasks(observation: Observation) -> list[str]:
    return [change["task"] for change in _config(observation)["changes"]]


# --- observe and apply -------------------------------------------------------------------


def test_fresh_hosts_would_get_every_file(scenario: Scenario) -> None:
    for name in ("web-1", "web-2", "web-3"):
        seen = scenario.first[f"machine/{name}"]
        assert _changed_tasks(seen) == FRESH_HOST_TASKS, name
        config = _config(seen)
        assert config["failed"] == [] and config["notVerifiable"] == [] and config["inSync"] is False
    assert scenario.written_by_observe == []  # observing changed nothing on any host


def test_apply_writes_the_files(scenario: Scenario) -> None:
    result = scenario.apply_web1
    assert result.ok and result.changed, result.message
    assert f"changed {len(FRESH_HOST_TASKS)} of" in result.message and MOTD_TASK in result.message
    root = scenario.hosts["web-1"].root
    assert "server ntp1.lab1.acme.internal" in (root / "etc" / "chrony" / "chrony.conf").read_text()
    assert "vm.swappiness = 1" in (root / "etc" / "sysctl.d" / "90-fleet-baseline.conf").read_text()
    assert not (scenario.hosts["web-2"].root / "etc").exists()  # the other hosts were left alone


def test_a_file_changed_behind_fleets_back_is_the_only_change_with_a_diff(scenario: Scenario) -> None:
    # Everything else the first apply wrote holds.
    (change,) = _config(scenario.drifted["machine/web-1"])["changes"]
    assert change["task"] == MOTD_TASK
    assert "-  edited by hand on the host" in change["diff"]
    assert scenario.apply_drift.ok and scenario.apply_drift.changed, scenario.apply_drift.message
    assert scenario.apply_drift.message.startswith("changed 1 of ")
    assert MOTD_TASK in scenario.apply_drift.message
    assert "edited by hand" not in (scenario.hosts["web-1"].root / "etc" / "motd").read_text()


def test_after_apply_the_host_is_in_sync_and_the_others_still_differ(scenario: Scenario) -> None:
    config = _config(scenario.fixed["machine/web-1"])
    assert config["changes"] == [] and config["failed"] == [] and config["notVerifiable"] == []
    # The tasks a false `when` skipped (chrony's package and service) count as verified.
    assert config["coverage"]["verified"] == config["coverage"]["total"] > 0
    assert config["inSync"] is True
    assert _changed_tasks(scenario.fixed["machine/web-2"]) == FRESH_HOST_TASKS


def test_a_host_whose_sshd_died_is_unreachable_and_the_others_are_observed(scenario: Scenario) -> None:
    gone = scenario.drifted["machine/web-3"]
    assert gone.state is ObservationState.UNKNOWN
    assert gone.reason is UnknownReason.UNREACHABLE
    assert f"{SUBNET}.3" in gone.detail and "refused" in gone.detail.lower(), gone.detail
    assert gone.fields == {}
    assert _changed_tasks(scenario.drifted["machine/web-2"]) == FRESH_HOST_TASKS
    assert scenario.drifted["machine/web-1"].state is ObservationState.OBSERVED


def test_host_key_checking_stays_on(scenario: Scenario) -> None:
    stranger = scenario.first["machine/stranger-1"]
    assert stranger.state is ObservationState.UNKNOWN
    assert stranger.reason is UnknownReason.UNREACHABLE
    assert "Host key verification failed" in stranger.detail, stranger.detail


def test_a_plain_ssh_client_reads_what_apply_wrote(scenario: Scenario) -> None:
    host = scenario.hosts["web-1"]
    done = subprocess.run(
        [
            "ssh",
            "-i",
            str(scenario.client_key),
            "-o",
            f"UserKnownHostsFile={scenario.known_hosts}",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-p",
            str(host.port),
            f"root@{host.address}",
            f"cat {host.root}/etc/motd",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == (host.root / "etc" / "motd").read_text()
    assert "web-1  (web, owned by platform-infra)" in done.stdout


# --- secrets -----------------------------------------------------------------------------


def _files_holding(root: Path, needle: bytes) -> list[Path]:
    found = []
    for directory, _, files in os.walk(root):
        for name in files:
            path = Path(directory) / name
            with contextlib.suppress(OSError):
                if not path.is_symlink() and needle in path.read_bytes():
                    found.append(path)
    return found


def test_the_secret_reaches_the_host_and_nothing_else(scenario: Scenario) -> None:
    (hidden,) = [c for c in _config(scenario.first["machine/web-1"])["changes"] if c["task"] == TOKEN_TASK]
    assert hidden["diff"] == "(no_log)"
    assert TOKEN_TASK in scenario.apply_web1.message
    token = scenario.hosts["web-1"].root / "app-token"
    assert token.read_text() == f"{CANARY}\n"
    assert token.stat().st_mode & 0o777 == 0o600
    shown = [
        repr(scenario.first),
        repr(scenario.drifted),
        repr(scenario.fixed),
        repr(scenario.apply_web1),
        repr(scenario.apply_drift),
    ]
    assert not [text for text in shown if CANARY in text]
    # Nothing else under the scenario's directory: not the runs, not the sshd logs.
    assert _files_holding(scenario.base, CANARY.encode()) == [token]


# --- the hosts themselves ----------------------------------------------------------------


def test_stopping_a_host_ends_its_sessions_and_leaves_no_sshd(tmp_path: Path) -> None:
    key = make_client_key(tmp_path / "client")
    (host,) = start_hosts(tmp_path / "hosts", [("once-1", f"{SUBNET}.20", PORT)], Path(f"{key}.pub"))
    ssh = subprocess.Popen(
        [
            "ssh",
            "-i",
            str(key),
            "-o",
            f"UserKnownHostsFile={known_hosts(tmp_path, [host])}",
            "-o",
            "BatchMode=yes",
            "-p",
            str(PORT),
            f"root@{host.address}",
            "sleep 60",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while len(descendants([host.pid])) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)  # the listener, the connection's sshd and its session
        serving = descendants([host.pid])
        assert len(serving) >= 3
        stop_hosts([host.pid])
        assert ssh.wait(timeout=10) != 0  # the session was cut
        assert not [pid for pid in serving if process_running(pid)]
    finally:
        ssh.kill()
        ssh.wait()


def test_a_host_that_cannot_start_is_named_with_what_sshd_said(tmp_path: Path) -> None:
    key = make_client_key(tmp_path / "client")
    with pytest.raises(
        SshHostError, match=r"sshd for host bad-1 \(192\.0\.2\.1:2201\) exited.*Cannot assign"
    ):
        # 192.0.2.1 is no address of this machine: sshd cannot bind it.
        start_hosts(tmp_path / "hosts", [("bad-1", "192.0.2.1", PORT)], Path(f"{key}.pub"))


# --- an unprivileged login and sudo --------------------------------------------------------

BECOME_USER = "fleet-become-test"
BECOME_ENV = "FLEET_TEST_BECOME_PASSWORD"
PROOF_PLAYBOOK = """\
- name: Privileged configuration
  hosts: all
  gather_facts: false
  become: true
  tasks:
    - name: Write a file only root may write
      ansible.builtin.copy:
        dest: "{{ proof_dir }}/proof"
        content: "written by {{ ansible_user }} through sudo\\n"
        owner: root
        mode: "0600"
"""


@dataclasses.dataclass
class Unprivileged:
    name: str
    password: str
    home: Path


@pytest.fixture()
def unprivileged_user() -> Iterator[Unprivileged]:
    """A login without privileges that sudo lets run anything as root after its password, as on
    hosts where nobody logs in as root. The user and its sudoers entry go away afterwards."""
    password = f"canary-{secrets.token_hex(8)}-sudo-password"
    sudoers = Path("/etc/sudoers.d") / BECOME_USER
    # Its home must be reachable by the user: not under pytest's directory, which only root enters.
    base = Path(tempfile.mkdtemp(prefix="fleet-become-"))
    base.chmod(0o755)
    home = base / "home"
    subprocess.run(["userdel", "--remove", BECOME_USER], capture_output=True)  # an interrupted run's
    try:
        subprocess.run(
            ["useradd", "--create-home", "--home-dir", str(home), "--shell", "/bin/sh", BECOME_USER],
            check=True,
            capture_output=True,
        )
        # A password unlocks the account (sshd refuses a locked one, keys or not) and is what sudo asks.
        subprocess.run(["chpasswd"], input=f"{BECOME_USER}:{password}\n", text=True, check=True)
        sudoers.write_text(f"{BECOME_USER} ALL=(ALL:ALL) ALL\n")
        sudoers.chmod(0o440)
        subprocess.run(["visudo", "-cf", str(sudoers)], check=True, capture_output=True)
        yield Unprivileged(BECOME_USER, password, home)
    finally:
        sudoers.unlink(missing_ok=True)
        subprocess.run(["userdel", "--remove", BECOME_USER], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def _without_remote_tmp(variables: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in variables.items() if name != "ansible_remote_tmp"}


def test_an_unprivileged_login_configures_through_sudo_with_a_secret_password(
    unprivileged_user: Unprivileged,
) -> None:
    base = unprivileged_user.home.parent
    repo = base / "repo"
    (repo / "playbooks").mkdir(parents=True)
    (repo / "playbooks" / "proof.yml").write_text(PROOF_PLAYBOOK)
    proof_dir = base / "proof"
    proof_dir.mkdir(mode=0o700)  # root's alone: only a task running as root can write here
    client_key = make_client_key(base / "client")
    names = ["sudo-1", "wrong-1"]
    hosts = {
        h.name: h
        for h in start_hosts(
            base / "hosts",
            [(name, f"{SUBNET}.{30 + i}", PORT) for i, name in enumerate(names)],
            Path(f"{client_key}.pub"),
        )
    }
    try:
        trusted = known_hosts(base, list(hosts.values()))
        config = {
            "playbooks": ["playbooks/proof.yml"],
            "vars": {
                "proof_dir": str(proof_dir),
                "ansible_become_password": {"credentialsRef": {"env": BECOME_ENV}},
            },
        }
        right = _machine("sudo-1", 30, config)
        wrong_password = {"credentialsRef": {"env": f"{BECOME_ENV}_WRONG"}}
        wrong = _machine(
            "wrong-1", 31, {**config, "vars": {**config["vars"], "ansible_become_password": wrong_password}}
        )
        # As on a real host: Ansible keeps its files in ~/.ansible/tmp of the login user, its own
        # default (the test hosts' usual directory belongs to root).
        login = {"ansible_user": unprivileged_user.name, "ansible_become": "true"}
        inputs = RevisionInputs.of(ansible_fleet(TOKEN_ENV), [right, wrong], playbook_root=repo)
        provider = AnsibleProvider(
            lab_access(
                {BECOME_ENV: unprivileged_user.password, f"{BECOME_ENV}_WRONG": "not-the-password"},
                ansible_hosts={
                    n: _without_remote_tmp(ansible_vars(h, client_key, trusted)) | login
                    for n, h in hosts.items()
                },
            ),
            settings=RunSettings(forks=2, timeout_seconds=120, temp_dir=base / "runs"),
        )
        before = _by_address(provider.observe([right, wrong], inputs))
        applied = provider.apply(Change(right.address, Action.CONFIGURE, right), inputs)
        after = _by_address(provider.observe([right], inputs))
    finally:
        stop_hosts([h.pid for h in hosts.values()])

    # Check mode read root's directory through sudo, so it knows the file is missing.
    assert _changed_tasks(before[right.address]) == ["Write a file only root may write"]
    assert applied.changed, applied.message
    proof = proof_dir / "proof"
    assert proof.read_text() == f"written by {BECOME_USER} through sudo\n"
    assert proof.stat().st_uid == 0
    assert _changed_tasks(after[right.address]) == []
    # A wrong password is the host's failure, said as sudo said it, never a silent "in sync".
    (failed,) = _config(before[wrong.address])["failed"]
    assert "password" in failed["message"].lower(), failed
    shown = [repr(before), repr(applied), repr(after)]
    assert not [text for text in shown if unprivileged_user.password in text]
    assert _files_holding(base, unprivileged_user.password.encode()) == []
