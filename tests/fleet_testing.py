"""Shared helpers for fleet's tests: copies of the example repo and real Git repositories, the
example repo's documents, and the access providers are given to reach a lab."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from typer.testing import CliRunner

from providers.access import Access, EndpointMap, build_access
from providers.base import Endpoint
from reconciler.cli import app
from reconciler.source.worktree import read_worktree
from reconciler.spec import models
from reconciler.spec.loader import load_revision

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "fleet-repo-example"
FLEET = Path(sys.executable).parent / "fleet"

_GIT_ENV = {
    "GIT_AUTHOR_NAME": "Fleet Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Fleet Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def copy_example(target: Path) -> Path:
    shutil.copytree(EXAMPLE, target, symlinks=True)
    return target


def example_documents() -> list[models.Document]:
    """Every valid document of the example repo, the Fleet included, in path order."""
    return [loaded.document for loaded in load_revision(read_worktree(EXAMPLE)).documents]


UNREACHABLE = "127.89.0"  # loopback addresses where nothing listens: providers fail at once


def unreachable_endpoints(path: Path, sockets: Path) -> Path:
    """An endpoint map that sends every BMC and API server of the example to a closed loopback
    port and every hypervisor to a missing socket, with short timeouts: nothing leaves the host."""
    documents = example_documents()
    endpoints: dict[str, str] = {}
    hypervisors: dict[str, str] = {}
    for number, machine in enumerate((d for d in documents if isinstance(d, models.Machine)), 1):
        endpoints[f"{machine.spec.bmc.address}:{machine.spec.bmc.port}"] = f"{UNREACHABLE}.{number}:623"
        hypervisors[machine.metadata.name] = f"test+unix:///default?socket={sockets / 'none.sock'}"
    for number, cluster in enumerate((d for d in documents if isinstance(d, models.Cluster)), 1):
        server = urlsplit(cluster.spec.apiServer)
        endpoints[f"{server.hostname}:{server.port or 443}"] = f"{UNREACHABLE}.{100 + number}:6443"
    settings = {
        "ipmi": {"timeoutSeconds": 0.5, "minCommandIntervalSeconds": 0},
        "libvirt": {"timeoutSeconds": 1},
    }
    path.write_text(json.dumps({"endpoints": endpoints, "hypervisors": hypervisors, "settings": settings}))
    return path


def lab_access(
    environment: Mapping[str, str] | None = None,
    *,
    endpoints: Mapping[str, Endpoint] | None = None,
    credentials: Mapping[str, models.CredentialSource] | None = None,
    hypervisors: Mapping[str, str] | None = None,
    ansible_hosts: Mapping[str, Mapping[str, str]] | None = None,
) -> Access:
    """How providers reach a test's lab: the environment credentials are read from, where to really
    connect per endpoint written in the specs, credential sources that beat the specs' (by
    reference key), a libvirt URI per hypervisor and connection variables per Ansible host."""
    return build_access(
        EndpointMap(
            endpoints=dict(endpoints or {}),
            hypervisor_uris=dict(hypervisors or {}),
            ansible_hosts={host: dict(variables) for host, variables in (ansible_hosts or {}).items()},
        ),
        environment or {},
        credentials,
    )


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, **_GIT_ENV, "HOME": str(repo)}
    done = subprocess.run(
        ["git", "-C", str(repo), *args], env=env, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def git_init(repo: Path) -> str:
    git(repo, "init", "-q", "-b", "main")
    return commit_all(repo, "initial fleet")


def commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run `fleet` in-process; returns (exit code, stdout+stderr)."""
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.output


def run_fleet(
    *args: str, env: dict[str, str], timeout: float = 300, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed `fleet` command as a user would; returns the finished process."""
    return subprocess.run(
        [str(FLEET), *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd
    )


def lab_control(env: dict[str, str], request: dict[str, object]) -> object:
    """One request to the running lab's BMC simulator over its control socket."""
    import json
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(Path(env["FLEET_LAB_DIR"]) / "bmc.sock"))
        sock.sendall(json.dumps(request).encode() + b"\n")
        answer = json.loads(sock.makefile().readline())
    assert answer["ok"], answer
    return answer.get("result")


def lab_environment(directory: Path, **extra: str) -> dict[str, str]:
    """Environment for running `fleet` against a lab kept in `directory`, isolated from the caller's.

    Ansible configuration is left out (FLEET_CONFIG=false) unless `extra` asks for it: only the
    configuration suites pay for check-mode runs over SSH."""
    env = {
        **os.environ,
        "FLEET_LAB_DIR": str(directory / "lab"),
        "NO_COLOR": "1",
        "COLUMNS": "200",
        "FLEET_CONFIG": "false",
        **extra,
    }
    for inherited in ("FLEET_LAB_OVERRIDES", "FLEET_STATE"):
        if inherited not in extra:
            env.pop(inherited, None)
    return env


@contextlib.contextmanager
def running_lab(repo: Path, subnet: int, env: dict[str, str], *options: str) -> Iterator[dict[str, str]]:
    """`fleet lab up` for `repo` on 127.SUBNET.x.y; `fleet lab down` afterwards, whatever happened."""
    up = run_fleet("lab", "up", str(repo), "--subnet", str(subnet), *options, env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield env
    finally:
        run_fleet("lab", "down", env=env)


def wait_for_run(env: dict[str, str], condition: Callable[[list[Any]], bool], timeout: float = 120) -> None:
    """Poll the state store of `env` (FLEET_STATE) until its newest runs meet `condition`."""
    from reconciler.state import open_store

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open_store(env["FLEET_STATE"]) as store:
            if condition(store.history(limit=1)):
                return
        time.sleep(0.05)
    raise AssertionError("the run did not get there in time")


def lab_fleet(env: dict[str, str], targets: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    """`fleet ARGS REPO --lab` against a running lab, only for `targets` (all when empty)."""
    return run_fleet(*args, env["REPO"], "--lab", *(f"--target={t}" for t in targets), env=env)


def lab_plan(env: dict[str, str], targets: list[str]) -> dict[str, Any]:
    """The JSON plan of a running lab for `targets` (the whole fleet when empty)."""
    done = lab_fleet(env, targets, "plan", "--format", "json")
    assert done.returncode == 0, done.stderr
    plan: dict[str, Any] = json.loads(done.stdout)
    return plan


def entries_by_address(plan: dict[str, Any], finding: str) -> dict[str, dict[str, Any]]:
    return {e["address"]: e for e in plan["entries"] if e["finding"] == finding}


def ansible_inventory_list(path: Path, home: Path) -> dict[str, Any]:
    """What Ansible's own `ansible-inventory --list` reads from an inventory file or script."""
    env = {**os.environ, "HOME": str(home), "ANSIBLE_LOCAL_TEMP": str(home / "tmp")}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(path), "--list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    listed: dict[str, Any] = json.loads(done.stdout)
    return listed


def ansible_fleet(token_env: str) -> models.Fleet:
    """A one-site Fleet for Ansible provider tests: an `app-token` credential read from
    `token_env`, and the BMC credential its Machines name."""
    return models.Fleet.model_validate(
        {
            "apiVersion": "fleet/v1alpha1",
            "kind": "Fleet",
            "metadata": {"name": "lab"},
            "spec": {
                "sites": [{"name": "lab1", "racks": [{"name": "r01"}]}],
                "credentials": {"app-token": {"env": token_env}, "bmc": {"env": "FLEET_TEST_BMC"}},
            },
        }
    )
