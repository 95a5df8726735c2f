"""The Ansible provider against real ansible-playbook runs on this machine.

Each lab host is `ansible_connection=local` with a root directory of its own, managed by a small
playbook. One scenario runs once per module (a handful of ansible-runner runs, hosts batched into
one run where the provider allows it) and the tests read its results: drift behind fleet's back,
apply, in sync again, check-mode blind spots, an unreachable host, a failing task, and a canary
secret that must never leave the run. Two runs of their own check the run's budgets: a run past
its timeout, and no more hosts at once than the forks allow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet_testing import ansible_fleet, lab_access

from providers.ansible.provider import AnsibleProvider
from providers.ansible.runner import RunSettings
from providers.base import (
    Action,
    ApplyResult,
    Change,
    Observation,
    ObservationState,
    RevisionInputs,
    UnknownReason,
)
from reconciler.errors import TemporaryError
from reconciler.spec import models

pytestmark = pytest.mark.slow  # a lab suite: left out of `make test-quick`

CANARY = "canary-3f9c1d7e-token-never-shown"
TOKEN_ENV = "FLEET_TEST_APP_TOKEN"
PLAYBOOK = """\
- name: Lab baseline
  hosts: all
  gather_facts: false
  tasks:
    - name: Write the message of the day
      ansible.builtin.copy:
        dest: "{{ fleet_root }}/etc/motd"
        content: "{{ motd }}\\n"
        mode: "0644"

    - name: Check the data disk
      ansible.builtin.fail:
        msg: "data disk {{ fleet_root }}/dev/sdb is missing"
      when: disk_missing | default(false)

    - name: Install the application token
      ansible.builtin.copy:
        dest: "{{ fleet_root }}/etc/app-token"
        content: "{{ app_token | default('none') }}\\n"
        mode: "0600"
      no_log: true

    - name: Rebuild the package cache
      ansible.builtin.command: /bin/true
      when: rebuild_cache | default(false)

    - name: Warn about an old kernel
      ansible.builtin.fail:
        msg: "kernel 4.19 is out of support"
      ignore_errors: true
      when: old_kernel | default(false)

    - name: Open the firewall for the listed ports
      ansible.builtin.debug:
        msg: "port {{ item }}"
      loop: "{{ open_ports | default([1, 2]) }}"
      when: item > 1024
"""
ROLE_TASKS = """\
- name: Note that the role ran
  ansible.builtin.set_fact:
    lab_marker_ran: true
"""
MOTD = "web-1: managed by fleet, changes are reverted"


def _machine(name: str, index: int, config: dict[str, object] | None) -> models.Machine:
    spec: dict[str, object] = {
        "site": "lab1",
        "rack": "r01",
        "address": f"192.0.2.{index}",
        "bmc": {"address": f"198.51.100.{index}", "credentialsRef": "bmc"},
    }
    if config is not None:
        spec["config"] = config
    return models.Machine.model_validate(
        {"apiVersion": "fleet/v1alpha1", "kind": "Machine", "metadata": {"name": name}, "spec": spec}
    )


@dataclasses.dataclass
class Scenario:
    roots: dict[str, Path]
    runs_dir: Path
    output: Path
    logged: list[str]
    first: dict[str, Observation]
    motd_after_check: str
    apply_web: ApplyResult
    second: dict[str, Observation]
    apply_broken: ApplyResult
    apply_gone: TemporaryError
    apply_wrong_action: ApplyResult
    started: float


@contextlib.contextmanager
def _captured_output(path: Path) -> Iterator[None]:
    """Everything written to fd 1 and 2 (ours and any child's) goes to `path` meanwhile."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("wb") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    base = tmp_path_factory.mktemp("ansible")
    repo = base / "repo"
    (repo / "playbooks").mkdir(parents=True)
    (repo / "playbooks" / "lab.yml").write_text(PLAYBOOK)
    (repo / "roles" / "lab_marker" / "tasks").mkdir(parents=True)
    (repo / "roles" / "lab_marker" / "tasks" / "main.yml").write_text(ROLE_TASKS)
    roots = {name: base / "hosts" / name for name in ("web-1", "cmd-1", "broken-1", "gone-1")}
    for root in roots.values():
        (root / "etc").mkdir(parents=True)

    def lab(name: str, **variables: object) -> dict[str, object]:
        return {
            "playbooks": ["playbooks/lab.yml"],
            "roles": ["lab_marker"],
            "vars": {"fleet_root": str(roots.get(name, "/nonexistent")), "motd": name, **variables},
        }

    machines = {
        "web-1": _machine("web-1", 1, lab("web-1", motd=MOTD, app_token={"credentialsRef": "app-token"})),
        "cmd-1": _machine("cmd-1", 2, lab("cmd-1", rebuild_cache=True, old_kernel=True)),
        "broken-1": _machine("broken-1", 3, lab("broken-1", disk_missing=True)),
        "gone-1": _machine("gone-1", 4, lab("gone-1")),
        "bare-1": _machine("bare-1", 5, None),
        "nocreds-1": _machine(
            "nocreds-1", 6, lab("nocreds-1", api_key={"credentialsRef": {"env": "FLEET_TEST_UNSET"}})
        ),
        "stale-1": _machine("stale-1", 7, {"playbooks": ["playbooks/removed.yml"]}),
    }
    python = "/usr/bin/python3" if Path("/usr/bin/python3").is_file() else sys.executable  # starts faster
    local = {
        "ansible_connection": "local",
        "ansible_python_interpreter": python,
        "ansible_pipelining": "true",
        "ansible_remote_tmp": str(base / "remote-tmp"),  # "the host" is this machine
    }
    overrides = {
        "web-1": local,
        "cmd-1": local,
        "broken-1": local,
        "gone-1": {"ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": "1"},
    }
    access = lab_access({TOKEN_ENV: CANARY}, ansible_hosts=overrides)
    inputs = RevisionInputs.of(ansible_fleet(TOKEN_ENV), machines.values(), playbook_root=repo)
    runs_dir = base / "runs"
    settings = RunSettings(forks=4, timeout_seconds=120, temp_dir=runs_dir)
    provider = AnsibleProvider(access, settings=settings)
    keeping = AnsibleProvider(access, settings=dataclasses.replace(settings, keep_artifacts=True))

    # What fleet applied earlier, then changed behind its back (the token too, which only a
    # no_log task touches); cmd-1 is as specified, so only what check mode cannot evaluate is left.
    (roots["web-1"] / "etc" / "motd").write_text("hand-edited on the host\n")
    (roots["web-1"] / "etc" / "app-token").write_text("old-token\n")
    (roots["cmd-1"] / "etc" / "motd").write_text("cmd-1\n")
    (roots["cmd-1"] / "etc" / "app-token").write_text("none\n")
    (roots["cmd-1"] / "etc" / "app-token").chmod(0o600)

    records = _Records()
    root_logger = logging.getLogger()
    level = root_logger.level
    root_logger.addHandler(records)
    root_logger.setLevel(logging.DEBUG)
    output = base / "output.log"
    started = time.time()
    try:
        with pytest.MonkeyPatch.context() as patch, _captured_output(output):
            # The reconciler's own environment holds the secret too: it must not reach Ansible.
            patch.setenv(TOKEN_ENV, CANARY)
            patch.setenv("FLEET_TEST_BMC", f"admin:{CANARY}")
            patch.setenv("ANSIBLE_GATHERING", "explicit")  # the lab role needs no facts: saves a second a run
            first = {o.address: o for o in provider.observe(list(machines.values()), inputs).observations}
            motd_after_check = (roots["web-1"] / "etc" / "motd").read_text()
            apply_web = provider.apply(Change("machine/web-1", Action.CONFIGURE, machines["web-1"]), inputs)
            second = {o.address: o for o in keeping.observe([machines["web-1"]], inputs).observations}
            apply_broken = provider.apply(
                Change("machine/broken-1", Action.CONFIGURE, machines["broken-1"]), inputs
            )
            with pytest.raises(TemporaryError) as unreachable:
                provider.apply(Change("machine/gone-1", Action.CONFIGURE, machines["gone-1"]), inputs)
            wrong = provider.apply(Change("machine/web-1", Action.POWER_OFF, machines["web-1"]), inputs)
    finally:
        root_logger.removeHandler(records)
        root_logger.setLevel(level)
    yield Scenario(
        roots,
        runs_dir,
        output,
        records.lines,
        first,
        motd_after_check,
        apply_web,
        second,
        apply_broken,
        unreachable.value,
        wrong,
        started,
    )


# --- observe ---------------------------------------------------------------------------


def test_drift_behind_fleets_back_is_a_change_with_a_diff(scenario: Scenario) -> None:
    seen = scenario.first["machine/web-1"]
    assert seen.state is ObservationState.OBSERVED, seen.detail
    config = seen.fields["config"]
    assert [c["task"] for c in config["changes"]] == [
        "Write the message of the day",
        "Install the application token",
    ]
    motd, token = config["changes"]
    assert motd["module"] == "ansible.builtin.copy"
    assert "-hand-edited on the host" in motd["diff"]
    assert f"+{MOTD}" in motd["diff"]
    assert token["diff"] == "(no_log)"
    assert config["failed"] == [] and config["notVerifiable"] == []
    assert config["coverage"] == {"verified": 7, "total": 7}
    assert config["inSync"] is False
    assert scenario.motd_after_check == "hand-edited on the host\n"  # observing changed nothing


def test_a_task_check_mode_cannot_run_is_not_verifiable_never_in_sync(scenario: Scenario) -> None:
    config = scenario.first["machine/cmd-1"].fields["config"]
    assert config["changes"] == [] and config["failed"] == []
    assert config["notVerifiable"] == [
        {
            "task": "Rebuild the package cache",
            "module": "ansible.builtin.command",
            "why": "skipped in check mode: Command would have run if not in check mode",
        },
        {
            "task": "Warn about an old kernel",
            "module": "ansible.builtin.fail",
            "why": "failed, errors ignored: kernel 4.19 is out of support",
        },
    ]
    # Tasks whose `when` is false (for a loop: on every item) were evaluated: they count as verified.
    assert config["coverage"] == {"verified": 5, "total": 7}
    assert config["inSync"] is False


def test_a_failing_task_is_reported_by_name_and_message(scenario: Scenario) -> None:
    config = scenario.first["machine/broken-1"].fields["config"]
    (failed,) = config["failed"]
    assert failed["task"] == "Check the data disk"
    assert failed["message"] == f"data disk {scenario.roots['broken-1']}/dev/sdb is missing"
    assert config["inSync"] is False


@pytest.mark.parametrize(
    ("address", "reason", "words"),
    [
        pytest.param("machine/gone-1", UnknownReason.UNREACHABLE, "port 1", id="ssh-refused-is-unreachable"),
        pytest.param("machine/bare-1", UnknownReason.NOT_ATTEMPTED, "no spec.config", id="no-config-no-run"),
        pytest.param(
            "machine/nocreds-1", UnknownReason.CREDENTIALS_MISSING, "FLEET_TEST_UNSET", id="secret-not-set"
        ),
        pytest.param(
            "machine/stale-1",
            UnknownReason.NOT_ATTEMPTED,
            "playbook 'playbooks/removed.yml' is not in the fleet repo",
            id="playbook-missing-at-this-revision",
        ),
    ],
)
def test_hosts_fleet_cannot_observe_are_unknown_never_drift(
    scenario: Scenario, address: str, reason: UnknownReason, words: str
) -> None:
    seen = scenario.first[address]
    assert seen.state is ObservationState.UNKNOWN
    assert seen.reason is reason
    assert words in seen.detail
    assert seen.fields == {}


# --- apply -----------------------------------------------------------------------------


def test_apply_fixes_drift_and_the_next_observe_is_in_sync(scenario: Scenario) -> None:
    result = scenario.apply_web
    assert result.ok and result.changed, result.message
    assert "Write the message of the day" in result.message
    assert "Install the application token" in result.message
    assert (scenario.roots["web-1"] / "etc" / "motd").read_text() == f"{MOTD}\n"
    assert (scenario.roots["web-1"] / "etc" / "app-token").stat().st_mode & 0o777 == 0o600
    config = scenario.second["machine/web-1"].fields["config"]
    assert config == {
        "changes": [],
        "failed": [],
        "notVerifiable": [],
        "coverage": {"verified": 7, "total": 7},
        "inSync": True,
    }


def test_a_failed_apply_names_the_task_and_what_it_changed_before(scenario: Scenario) -> None:
    result = scenario.apply_broken
    assert not result.ok
    assert result.changed  # the motd was written before the disk check failed
    assert "task 'Check the data disk' (ansible.builtin.fail) failed: data disk" in result.message
    assert result.message.endswith("changed before that: Write the message of the day")


def test_an_unreachable_host_is_a_temporary_error(scenario: Scenario) -> None:
    assert "machine/gone-1 is unreachable" in str(scenario.apply_gone)


def test_only_configuration_updates_are_applied(scenario: Scenario) -> None:
    assert not scenario.apply_wrong_action.ok
    assert "only configures hosts" in scenario.apply_wrong_action.message


# --- secrets ---------------------------------------------------------------------------


def _files_holding(root: Path, needle: bytes, *, newer_than: float = 0.0) -> list[Path]:
    found = []
    for directory, _, files in os.walk(root):
        for name in files:
            path = Path(directory) / name
            with contextlib.suppress(OSError):
                if path.is_symlink() or path.stat().st_mtime < newer_than or path.stat().st_size > 1 << 20:
                    continue
                if needle in path.read_bytes():
                    found.append(path)
    return found


def test_the_secret_reaches_the_host_and_nothing_else(scenario: Scenario) -> None:
    needle = CANARY.encode()
    # It did reach Ansible (through the 0600 host_vars file): the token file on the host holds it.
    assert (scenario.roots["web-1"] / "etc" / "app-token").read_text() == f"{CANARY}\n"
    shown = [
        repr(scenario.first),
        repr(scenario.second),
        repr(scenario.apply_web),
        repr(scenario.apply_broken),
        str(scenario.apply_gone),
        *scenario.logged,
    ]
    assert not [text for text in shown if CANARY in text]
    assert needle not in scenario.output.read_bytes()
    # Only the run asked to keep its artifacts is left; its secrets file is gone.
    (kept,) = scenario.runs_dir.iterdir()
    assert (kept / "artifacts").is_dir()
    assert not (kept / "inventory" / "host_vars").exists()
    assert _files_holding(scenario.runs_dir, needle) == []
    (command,) = kept.glob("artifacts/*/command")
    environment = json.loads(command.read_text())["env"]
    assert TOKEN_ENV not in environment and "FLEET_TEST_BMC" not in environment
    assert environment["HOME"].startswith(str(kept))
    hosts = scenario.roots["web-1"].parent
    for place in (Path(tempfile.gettempdir()), Path.home() / ".ansible"):
        leaked = [
            p
            for p in _files_holding(place, needle, newer_than=scenario.started)
            if not p.is_relative_to(hosts)
        ]
        assert leaked == [], leaked


# --- the run's deadline ------------------------------------------------------------------------

HANGING = """\
- name: Hangs
  hosts: all
  gather_facts: false
  tasks:
    - name: Wait for a device that never settles
      ansible.builtin.command: sleep 613
      check_mode: false
      changed_when: false
"""


def _local(base: Path) -> dict[str, str]:
    """Connection variables of a host that is this machine, with Ansible's files kept under `base`."""
    return {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "ansible_remote_tmp": str(base / "remote-tmp"),
    }


def _processes_running(needle: bytes) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and needle in (entry / "cmdline").read_bytes().replace(b"\0", b" "):
                found.append(int(entry.name))
    return found


def test_a_run_past_its_timeout_is_stopped_and_its_host_is_unknown(tmp_path: Path) -> None:
    (tmp_path / "repo" / "playbooks").mkdir(parents=True)
    (tmp_path / "repo" / "playbooks" / "hang.yml").write_text(HANGING)
    machine = _machine("hang-1", 1, {"playbooks": ["playbooks/hang.yml"]})
    inputs = RevisionInputs.of(ansible_fleet(TOKEN_ENV), [machine], playbook_root=tmp_path / "repo")
    local = _local(tmp_path)
    provider = AnsibleProvider(
        lab_access(ansible_hosts={"hang-1": local}),
        settings=RunSettings(forks=2, timeout_seconds=5, temp_dir=tmp_path / "runs"),
    )
    (observed,) = provider.observe([machine], inputs).observations
    assert observed.state is ObservationState.UNKNOWN and observed.reason is UnknownReason.TIMEOUT
    assert "did not finish within 5 s" in observed.detail
    with pytest.raises(TemporaryError, match="did not finish within 5 s"):
        provider.apply(Change(machine.address, Action.CONFIGURE, machine), inputs)
    # Ansible's workers run in sessions of their own; nothing of either run is left behind.
    assert _processes_running(b"sleep 613") == []
    assert list((tmp_path / "runs").iterdir()) == []


COUNTING = """\
- name: Counts the hosts worked on at once
  hosts: all
  gather_facts: false
  tasks:
    - name: Note this host as busy, wait, and write down how many were busy meanwhile
      ansible.builtin.shell: |
        touch {{ busy }}/{{ inventory_hostname }}
        sleep 1
        ls {{ busy }} | wc -l > {{ seen }}/{{ inventory_hostname }}
        rm {{ busy }}/{{ inventory_hostname }}
      check_mode: false
      changed_when: false
"""


def test_no_more_hosts_than_the_forks_budget_are_worked_on_at_once(tmp_path: Path) -> None:
    (tmp_path / "repo" / "playbooks").mkdir(parents=True)
    (tmp_path / "repo" / "playbooks" / "count.yml").write_text(COUNTING)
    busy, seen = tmp_path / "busy", tmp_path / "seen"
    busy.mkdir()
    seen.mkdir()
    config = {"playbooks": ["playbooks/count.yml"], "vars": {"busy": str(busy), "seen": str(seen)}}
    machines = {f"count-{i}": _machine(f"count-{i}", i, config) for i in range(1, 7)}
    inputs = RevisionInputs.of(ansible_fleet(TOKEN_ENV), machines.values(), playbook_root=tmp_path / "repo")
    local = _local(tmp_path)
    provider = AnsibleProvider(
        lab_access(ansible_hosts=dict.fromkeys(machines, local)),
        settings=RunSettings(forks=2, timeout_seconds=300, temp_dir=tmp_path / "runs"),
    )
    observed = provider.observe(list(machines.values()), inputs).observations
    assert {o.state for o in observed} == {ObservationState.OBSERVED}, observed
    counts = {path.name: int(path.read_text()) for path in seen.iterdir()}
    assert set(counts) == set(machines)
    assert max(counts.values()) <= 2, counts
