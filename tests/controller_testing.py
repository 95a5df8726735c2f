"""What the tests of `fleet serve` share: the example in a bare repository with a lab for it, a
`fleet serve` process with a client of its API, and edits pushed to the followed branch."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from fleet_testing import (
    EXAMPLE,
    FLEET,
    commit_all,
    git,
    lab_control,
    lab_environment,
    running_lab,
    unreachable_endpoints,
)
from ruamel.yaml import YAML

OPS = "ops-canary-token-5a1f"
DASHBOARDS = "dashboards-token-77c0"
MACHINE = "nyc1-r02-05"  # powered on by the spec; turned off by a commit below (no cluster's node)
MACHINES = "machines/nyc1/r02.yaml"


@contextlib.contextmanager
def bare_lab(directory: Path, subnet: int, *options: str) -> Iterator[dict[str, str]]:
    """The example in a bare repository's main branch (with no change windows, so that nothing
    depends on the time of day), and a lab for it on 127.SUBNET.x.y."""
    work = directory / "work"
    shutil.copytree(EXAMPLE, work)
    edit(work, "fleet.yaml", lambda f: f["spec"]["policies"].__setitem__("changeWindows", []))
    git(work, "init", "-q", "-b", "main")
    commit_all(work, "the fleet")
    bare = directory / "fleet.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    git(work, "remote", "add", "origin", str(bare))
    env = lab_environment(directory, REPO=str(work), BARE=str(bare))
    with running_lab(work, subnet, env, *options) as running:
        yield running


def edit(repo: Path, path: str, change: Callable[[Any], None]) -> None:
    yaml = YAML()  # round trip: the rest of the file stays as written
    target = repo / path
    document = yaml.load(target.read_text())
    change(document)
    with target.open("w") as handle:
        yaml.dump(document, handle)


def set_power(repo: Path, power: str) -> None:
    """MACHINE's spec power, in its rack's file of several documents (round trip)."""
    yaml = YAML()
    target = repo / MACHINES
    documents = list(yaml.load_all(target.read_text()))
    for document in documents:
        if document["metadata"]["name"] == MACHINE:
            document["spec"]["power"] = power
    with target.open("w") as handle:
        yaml.dump_all(documents, handle)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving_offline(
    directory: Path, work: Path, poll_interval: int, tokens: dict[str, str]
) -> Iterator[tuple[subprocess.Popen[bytes], Path, int]]:
    """`fleet serve` on `work` with every endpoint unreachable and its store in `directory`, with
    `tokens` (variable: value) in its environment: the process, its log and its port. It gets
    SIGTERM at the end (killed if it has not stopped within a minute)."""
    port = free_port()
    env = {
        **os.environ,
        "FLEET_STATE": str(directory / "state.db"),
        "FLEET_STATE_DIR": str(directory / "state"),
        "FLEET_ENDPOINTS": str(unreachable_endpoints(directory / "endpoints.json", directory)),
        "FLEET_CONFIG": "false",
        "XDG_CACHE_HOME": str(directory / "cache"),
        "NO_COLOR": "1",
        **tokens,
    }
    for inherited in ("FLEET_LAB", "FLEET_LAB_OVERRIDES", "FLEET_REPO", "FLEET_LISTEN", "FLEET_KUBECONFIG"):
        env.pop(inherited, None)
    log = directory / "serve.log"
    process = subprocess.Popen(
        [
            str(FLEET),
            "serve",
            str(work),
            "--listen",
            f"127.0.0.1:{port}",
            "--poll-interval",
            str(poll_interval),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )
    try:
        yield process, log, port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Served:
    """A `fleet serve` process and a client of its API."""

    def __init__(self, env: dict[str, str], log: Path, *options: str) -> None:
        self.port = free_port()
        self.log = log
        self.process = subprocess.Popen(
            [
                str(FLEET),
                "serve",
                "--repo",
                env["BARE"],
                "--branch",
                "main",
                "--lab",
                "--listen",
                f"127.0.0.1:{self.port}",
                "--poll-interval",
                "1",
                *options,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log.open("w"),
        )
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    def get(self, path: str, token: str | None = DASHBOARDS) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.client.get(path, headers=headers)

    def status(self) -> dict[str, Any]:
        answer = self.get("/api/v1/status")
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        return found

    def wait(
        self, condition: Callable[[dict[str, Any]], bool], timeout: float = 180, *, idle: bool = True
    ) -> dict[str, Any]:
        """Until the status meets `condition` (with nothing waiting or running, when `idle`)."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            with contextlib.suppress(httpx.TransportError):
                if self.client.get("/readyz").status_code == 200:
                    last = self.status()
                    queue = last["queue"]
                    if condition(last) and (not idle or (not queue["running"] and not queue["depth"])):
                        return last
            time.sleep(0.2)
        raise AssertionError(f"the controller did not get there: {json.dumps(last)[:3000]}")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        finally:
            self.client.close()


def push(env: dict[str, str], message: str) -> str:
    commit = commit_all(Path(env["REPO"]), message)
    git(Path(env["REPO"]), "push", "-q", "origin", "main")
    return commit


def power(env: dict[str, str], name: str) -> str:
    state = lab_control(env, {"op": "state", "name": name})
    assert isinstance(state, dict)
    return str(state["power"])
