"""Benchmark: `fleet serve` end to end, as a subprocess following a bare Git repository.

1. webhook -> first action: the example fleet (change windows removed) in a bare repository,
   its lab (`fleet lab up`, loopback subnet 94), and `fleet serve --repo BARE --poll-interval
   3600 --repository-name acme/fleet`, so that only a webhook brings a commit in. --pushes (20)
   times: one Machine's power toggled in one file, commit, push, a signed GitHub push webhook;
   timed from sending the webhook to the `started_at` of the first action of the run it causes
   (read from the state store), and split by the controller's JSON log: the request, fetch and
   load/validate (`poll requested` -> `revision in force`), scheduling (-> `reconciling`), the
   engine's plan (open, load, observe, plan, guards, lease: -> the run's `started_at`) and the
   apply's start (-> the action's `started_at`). The power each push asks for must be reached.
2. a full drift pass over --machines (10,000) simulated BMCs: a generated fleet of Machines only
   (`bench/gen_fleet.py`, 4 sites, change windows removed), a BMC simulator farm on 127.96.x.y:623
   in one process (each BMC's power as its spec says), an endpoint map (FLEET_ENDPOINTS) and
   `fleet serve --drift-interval`; the first pass (cold: every BMC logged in to, the revision
   loaded and validated) and the next drift-scheduled pass, with nothing else running, each from
   its first `reconciling` to its last `reconciled` log line, with every (kind, site) batch's
   time. The fleet's own IPMI settings hold (5 s between two commands to one BMC, 256 BMCs at
   once).
3. `GET /api/v1/status` with --clients (100) concurrent clients (wrk, bench/load.py; a read token)
   during the third pass, each asking again as soon as answered: p50, p99 and max. Then the
   same clients (httpx) during the fourth pass, each polling once every --poll-every (1)
   seconds, as dashboards and status pages do. Those two passes' times are printed too.

4. three replicas against one on the same PostgreSQL and work: --replica-machines (3,000)
   simulated BMCs over 6 sites (6 Machine batches), a fresh database per configuration; after the
   first (cold) pass, a commit to fleet.yaml and `POST /api/v1/poll` make every batch run again;
   timed from the poll until every batch of the new revision is reconciled, across the replicas'
   logs. Prints both times and their ratio (no target; on 2 cores the replicas share the CPUs).

Figures are printed beside their targets and never asserted; the script exits non-zero when the
controller does something wrong (an action not applied or failed, a power not reached, a pass
that leaves a Machine not in sync, a unit of work that failed). Run as root (port 623 on
loopback); `--only webhook`, `--only drift` or `--only replicas` runs one part. Part 4 needs
PostgreSQL (FLEET_BENCH_POSTGRES, default postgresql://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gen_fleet import generate, without_change_windows  # noqa: E402
from bench.load import Load, hammer  # noqa: E402
from reconciler.state import open_store  # noqa: E402

EXAMPLE = ROOT / "fleet-repo-example"
FLEET = Path(sys.executable).parent / "fleet"
LAB_SUBNET = 94  # the example's lab
FARM_SUBNET = 96  # the 10,000 BMCs: 127.96.0.1 ... (and part 4's, run after part 2)
PG_ADMIN = os.environ.get("FLEET_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
PASSWORD = "bench-password"
OPS, DASHBOARDS = "bench-ops-token", "bench-dashboards-token"
WEBHOOK_SECRET = "bench-webhook-secret"
MACHINE, MACHINES = "nyc1-r02-05", "machines/nyc1/r02.yaml"  # no cluster's node: free to toggle
GIT_ENV = {
    "GIT_AUTHOR_NAME": "fleet-bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "fleet-bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}
TARGET_WEBHOOK_P99 = 1.0
TARGET_PASS = 60.0
TARGET_STATUS_P99 = 0.1


class BenchFailure(Exception):
    """The controller did something wrong: the benchmark's figures mean nothing then."""


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV, "HOME": str(repo)}
    done = subprocess.run(
        ["git", "-C", str(repo), *args], env=env, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def _commit_and_push(repo: Path, message: str) -> str:
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", message)
    _git(repo, "push", "-q", "origin", "main")
    return _git(repo, "rev-parse", "HEAD")


def _bare_copy(work: Path, bare: Path) -> None:
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    _git(work, "remote", "add", "origin", str(bare))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def _stamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


class Served:
    """`fleet serve` as a subprocess, its JSON log, and a client of its API."""

    def __init__(self, env: dict[str, str], log: Path, *options: str) -> None:
        self.port = _free_port()
        self.log = log
        self.read_from = 0
        self.lines: list[dict[str, Any]] = []
        self.process = subprocess.Popen(
            [str(FLEET), "serve", "--listen", f"127.0.0.1:{self.port}", *options],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log.open("w"),
        )
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=self.base_url, timeout=30)

    def status(self) -> dict[str, Any]:
        answer = self.client.get("/api/v1/status", headers={"Authorization": f"Bearer {DASHBOARDS}"})
        if answer.status_code != 200:
            raise BenchFailure(f"GET /api/v1/status answered {answer.status_code}: {answer.text[:500]}")
        found: dict[str, Any] = answer.json()
        return found

    def read_log(self) -> list[dict[str, Any]]:
        """The JSON lines written since the last call (all kept in `lines`)."""
        with self.log.open() as handle:
            handle.seek(self.read_from)
            text = handle.read()
        complete = text[: text.rfind("\n") + 1]
        self.read_from += len(complete.encode())
        new = [json.loads(line) for line in complete.splitlines() if line.startswith("{")]
        self.lines += new
        for line in new:
            if line.get("message") == "unit of work failed":
                raise BenchFailure(f"the controller's unit of work failed: {json.dumps(line)}")
        return new

    def wait(self, condition: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        """Until the status meets `condition` with nothing waiting or running."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchFailure(f"fleet serve exited:\n{self.log.read_text()[-3000:]}")
            self.read_log()
            with contextlib.suppress(httpx.TransportError):
                if self.client.get("/readyz").status_code == 200:
                    last = self.status()
                    if condition(last) and not last["queue"]["running"] and not last["queue"]["depth"]:
                        return last
            time.sleep(0.1)
        raise BenchFailure(f"the controller did not get there in {timeout:.0f} s: {json.dumps(last)[:2000]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.client.close()


@contextlib.contextmanager
def _serving(env: dict[str, str], log: Path, *options: str) -> Iterator[Served]:
    served = Served(env, log, *options)
    try:
        yield served
    finally:
        served.stop()


def _environment(directory: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "FLEET_LAB_DIR": str(directory / "lab"),
        "FLEET_STATE": str(directory / "state.db"),
        "FLEET_CONFIG": "false",  # no Ansible: the pass is the BMCs'
        "FLEET_API_TOKEN_OPS": OPS,
        "FLEET_API_TOKEN_DASHBOARDS": DASHBOARDS,
        "FLEET_WEBHOOK_SECRET_GITHUB": WEBHOOK_SECRET,
        "XDG_CACHE_HOME": str(directory / "cache"),
        "NO_COLOR": "1",
        **extra,
    }
    for inherited in ("FLEET_LAB_OVERRIDES", "FLEET_ENDPOINTS", "FLEET_REPO", "FLEET_LISTEN"):
        if inherited not in extra:
            env.pop(inherited, None)
    return env


# --- 1. webhook -> first action -------------------------------------------------------------


def _set_power(repo: Path, power: str) -> None:
    yaml = YAML()
    target = repo / MACHINES
    documents = list(yaml.load_all(target.read_text()))
    for document in documents:
        if document["metadata"]["name"] == MACHINE:
            document["spec"]["power"] = power
    with target.open("w") as handle:
        yaml.dump_all(documents, handle)


def _lab_power(env: dict[str, str], name: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(Path(env["FLEET_LAB_DIR"]) / "bmc.sock"))
        sock.sendall(json.dumps({"op": "state", "name": name}).encode() + b"\n")
        answer = json.loads(sock.makefile().readline())
    if not answer.get("ok"):
        raise BenchFailure(f"the lab's simulator refused a state request: {answer}")
    return str(answer["result"]["power"])


def _webhook(served: Served, before: str, commit: str, delivery: str) -> httpx.Response:
    body = json.dumps(
        {
            "ref": "refs/heads/main",
            "before": before,
            "after": commit,
            "repository": {"full_name": "acme/fleet", "clone_url": "https://github.com/acme/fleet.git"},
            "commits": [{"id": commit, "added": [], "removed": [], "modified": [MACHINES]}],
        }
    ).encode()
    signature = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": delivery,
        "Content-Type": "application/json",
        "X-Hub-Signature-256": signature,
    }
    return served.client.post("/webhooks/github", content=body, headers=headers)


def _first_action(state: str, revision: str, after_run: int, timeout: float) -> tuple[Any, Any]:
    """The controller's run after `after_run` that acts on MACHINE for `revision`, once finished,
    and its first action."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open_store(state) as store:
            for run in store.history(limit=10):
                if run.id <= after_run or revision[:12] not in (run.reason or ""):
                    continue
                mine = [a for a in run.actions if a.address == f"machine/{MACHINE}"]
                if mine and run.finished_at:
                    return run, min(run.actions, key=lambda a: a.started_at)
        time.sleep(0.02)
    with open_store(state) as store:
        runs = [
            (r.id, r.kind, r.reason, r.status, [(a.address, a.action) for a in r.actions])
            for r in store.history(limit=5)
        ]
    raise BenchFailure(f"no finished run acting on {MACHINE} for {revision[:12]} in {timeout:.0f} s: {runs}")


def bench_webhook(pushes: int, workdir: Path) -> dict[str, Any]:
    work, bare = workdir / "work", workdir / "fleet.git"
    shutil.copytree(EXAMPLE, work, symlinks=True)
    without_change_windows(work)
    _git(work, "init", "-q", "-b", "main")
    _git(work, "add", "-A")
    _git(work, "commit", "-q", "-m", "the fleet")
    _bare_copy(work, bare)
    env = _environment(workdir)
    up = subprocess.run(
        [str(FLEET), "lab", "up", str(work), "--subnet", str(LAB_SUBNET), "--transition-seconds", "0.1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if up.returncode:
        raise BenchFailure(f"fleet lab up failed:\n{up.stdout}{up.stderr}")
    try:
        options = ("--repo", str(bare), "--branch", "main", "--lab", "--poll-interval", "3600")
        with _serving(env, workdir / "serve.log", *options, "--repository-name", "acme/fleet") as served:
            head = _git(work, "rev-parse", "HEAD")
            served.wait(lambda s: (s["lastAppliedRevision"] or {}).get("revision") == head, 300)
            power = _lab_power(env, MACHINE)
            samples = []
            last_run = 0
            with open_store(env["FLEET_STATE"]) as store:
                last_run = max((r.id for r in store.history(limit=1)), default=0)
            for number in range(pushes):
                wanted = "off" if power == "on" else "on"
                _set_power(work, wanted)
                before = head
                head = _commit_and_push(work, f"bench: {MACHINE} {wanted} ({number + 1})")
                served.read_log()
                seen = len(served.lines)
                sent = time.time()
                answer = _webhook(served, before, head, f"bench-{number}")
                answered = time.time()
                if answer.status_code != 202:
                    raise BenchFailure(f"the webhook was answered {answer.status_code}: {answer.text}")
                run, action = _first_action(env["FLEET_STATE"], head, last_run, 120)
                last_run = run.id
                if action.result != "succeeded" or action.address != f"machine/{MACHINE}":
                    raise BenchFailure(f"push {number + 1}: {action.address} {action.action} {action.result}")
                served.wait(lambda s, h=head: (s["lastAppliedRevision"] or {}).get("revision") == h, 120)
                if _lab_power(env, MACHINE) != wanted:
                    raise BenchFailure(f"push {number + 1}: {MACHINE} is not {wanted} after its run")
                power = wanted
                samples.append(_split(served.lines[seen:], sent, answered, run, action))
    finally:
        subprocess.run([str(FLEET), "lab", "down"], env=env, capture_output=True, timeout=120)
    return {"samples": samples}


def _split(
    lines: list[dict[str, Any]], sent: float, answered: float, run: Any, action: Any
) -> dict[str, float]:
    """Where the time from the webhook to the first action went, from the log lines it caused."""

    def at(message: str) -> float:
        for line in lines:
            if line.get("message", "").startswith(message):
                return _stamp(line["timestamp"])
        raise BenchFailure(f"no log line {message!r} after a push")

    requested, in_force, reconciling = at("poll requested"), at("revision in force"), at("reconciling")
    run_started, action_started = run.started_at.timestamp(), action.started_at.timestamp()
    return {
        "total": action_started - sent,
        "answer": answered - sent,
        "request": requested - sent,
        "fetch+load": in_force - requested,
        "schedule": reconciling - in_force,
        "plan": run_started - reconciling,
        "apply start": action_started - run_started,
    }


def _print_webhook(result: dict[str, Any]) -> None:
    samples = result["samples"]
    totals = [s["total"] for s in samples]
    p50, p99 = statistics.median(totals), _percentile(totals, 0.99)
    print(f"1. webhook -> first action: example fleet (35 Machines), {len(samples)} pushes of one file")
    verdict = "within target" if p99 <= TARGET_WEBHOOK_P99 else "OVER TARGET"
    print(
        f"   p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {max(totals) * 1000:.0f} ms "
        f"(target p99 <= {TARGET_WEBHOOK_P99 * 1000:.0f} ms: {verdict})"
    )
    parts = ("answer", "request", "fetch+load", "schedule", "plan", "apply start")
    slowest = max(samples, key=lambda s: s["total"])
    for label, value in (
        ("median split (ms):", lambda part: statistics.median(s[part] for s in samples)),
        ("slowest push (ms):", lambda part: slowest[part]),
    ):
        print(f"   {label:<19}" + "".join(f"  {part} {value(part) * 1000:.0f}" for part in parts))
    print("   (request: webhook sent -> poll requested; fetch+load: -> revision in force; schedule: ->")
    print("    reconciling; plan: -> the run's start (engine: open, load, observe, plan, guards, lease);")
    print("    apply start: -> the first action's start)")


# --- 2 and 3. a drift pass over 10,000 BMCs, and the status under load ----------------------


def _served_fleet(path: Path) -> None:
    """The generated Fleet, served: the example's API tokens (read from the same variables), and
    no change windows."""
    text = path.read_text()
    windows = re.compile(r"^    changeWindows:\n(?:^      .*\n)+", re.MULTILINE)
    text = windows.sub("    changeWindows: []\n", text, count=1)
    tokens = "".join(
        f"    fleet-api-{name}:\n      env: FLEET_API_TOKEN_{name.upper()}\n"
        for name in ("ops", "dashboards")
    )
    controller = (
        "  controller:\n    apiTokens:\n"
        "      - {name: ops, role: operator, credentialsRef: fleet-api-ops}\n"
        "      - {name: dashboards, role: read, credentialsRef: fleet-api-dashboards}\n"
    )
    for old, new in (
        ("  credentials:\n", "  credentials:\n" + tokens),
        ("  providers:\n", controller + "  providers:\n"),
    ):
        if text.count(old) != 1:
            raise BenchFailure(f"the generated fleet.yaml has no single {old.strip()!r}")
        text = text.replace(old, new)
    path.write_text(text)


def _farm_address(index: int) -> str:
    return f"127.{FARM_SUBNET}.{index // 250}.{1 + index % 250}"


_MACHINE = re.compile(
    r"^  name: (?P<name>\S+)\n.*?^  rack: (?P<rack>\S+)\n.*?^  power: \"(?P<power>on|off)\"\n.*?"
    r"^    address: (?P<bmc>\S+)\n",
    re.MULTILINE | re.DOTALL,
)


def _generated_machines(repo: Path) -> list[dict[str, str]]:
    """Name, rack, power and BMC address of every generated Machine (read from its rack file)."""
    found = []
    for path in sorted((repo / "machines").glob("*/*.yaml")):
        for document in path.read_text().split("\n---\n"):
            match = _MACHINE.search(document)
            if match is None:
                raise BenchFailure(f"{path}: a Machine the benchmark cannot read")
            found.append({**match.groupdict(), "site": path.parent.name})
    return found


def _start_farm(machines: list[dict[str, str]], workdir: Path) -> subprocess.Popen[bytes]:
    bmcs = [
        {
            "name": m["name"],
            "address": _farm_address(i),
            "port": 623,
            "username": "admin",
            "password": PASSWORD,
            "power": m["power"],
            "group": f"{m['site']}/{m['rack']}",
        }
        for i, m in enumerate(machines)
    ]
    config = workdir / "farm.json"
    config.write_text(json.dumps({"transition_seconds": 0.2, "bmcs": bmcs}))
    log_path = workdir / "farm.log"
    farm = subprocess.Popen(
        [sys.executable, "-m", "lab.bmc", "serve", "--config", str(config)],
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    deadline = time.monotonic() + 300
    while not any(line.startswith("ready ") for line in log_path.read_text(errors="replace").splitlines()):
        if farm.poll() is not None or time.monotonic() > deadline:
            farm.kill()
            raise BenchFailure(f"the simulator did not start:\n{log_path.read_text()[-2000:]}")
        time.sleep(0.2)
    return farm


def _passes(lines: list[dict[str, Any]], sites: int) -> list[dict[str, Any]]:
    """Passes from the log: the units of work run one at a time, so a pass is the `reconciling` /
    `reconciled` pairs of consecutive batches until every site's has been seen."""
    passes: list[dict[str, Any]] = []
    running: dict[str, Any] | None = None
    for line in lines:
        message = line.get("message")
        if message == "reconciling":
            if not passes or len({b["site"] for b in passes[-1]["batches"]}) >= sites:
                passes.append({"why": line["why"], "batches": []})
            running = {
                "site": line["site"],
                "resources": line["resources"],
                "start": _stamp(line["timestamp"]),
            }
        elif message in ("reconciled", "reconcile failed") and running is not None:
            running.update(end=_stamp(line["timestamp"]), result=line.get("result", "error"), line=line)
            passes[-1]["batches"].append(running)
            running = None
    return passes


def _complete(passes: list[dict[str, Any]], sites: int) -> list[dict[str, Any]]:
    return [p for p in passes if len({b["site"] for b in p["batches"]}) >= sites]


async def _poll_paced(
    base_url: str, clients: int, stop: asyncio.Event, every: float
) -> tuple[list[float], list[str]]:
    """`clients` concurrent loops of GET /api/v1/status until `stop`, each asking once every
    `every` seconds (starting at a random phase), as a dashboard or a status page polls; every
    latency."""
    latencies: list[float] = []
    failures: list[str] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {DASHBOARDS}"}
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60, headers=headers) as client:

        async def one() -> None:
            due = time.perf_counter() + random.uniform(0, every)
            while not stop.is_set():
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                due += every
                started = time.perf_counter()
                try:
                    answer = await client.get("/api/v1/status")
                except httpx.TransportError as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                latencies.append(time.perf_counter() - started)
                if answer.status_code != 200:
                    failures.append(f"{answer.status_code}: {answer.text[:200]}")

        await asyncio.gather(*(one() for _ in range(clients)))
    if len(failures) > len(latencies) // 100:
        raise BenchFailure(f"{len(failures)} status calls failed, the first: {failures[0]}")
    return latencies, failures


def _wait_for(served: Served, begun: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 1800
    while not begun():
        if time.monotonic() > deadline or served.process.poll() is not None:
            raise BenchFailure(f"the passes did not come:\n{served.log.read_text()[-3000:]}")
        time.sleep(0.1)


def _alive(served: Served) -> None:
    if served.process.poll() is not None:
        raise BenchFailure(f"fleet serve exited:\n{served.log.read_text()[-3000:]}")


def _status_back_to_back(
    served: Served, clients: int, begun: Callable[[], bool], over: Callable[[], bool]
) -> Load:
    """From when `begun()` until `over()` (both read the controller's log), `clients` concurrent
    clients (wrk) each asking for the status again as soon as answered."""
    _wait_for(served, begun)
    load = hammer(
        served.base_url,
        ["/api/v1/status"],
        clients,
        headers={"Authorization": f"Bearer {DASHBOARDS}"},
        until=over,
        check=lambda: _alive(served),
    )
    if load.failures > load.calls // 100:
        raise BenchFailure(f"{load.failures} of {load.calls} status calls failed: {load}")
    return load


def _status_paced(
    served: Served, clients: int, begun: Callable[[], bool], over: Callable[[], bool], every: float
) -> tuple[list[float], list[str]]:
    """From when `begun()` until `over()`, `clients` dashboards each polling every `every` s."""

    async def run() -> tuple[list[float], list[str]]:
        stop = asyncio.Event()
        polling = asyncio.create_task(_poll_paced(served.base_url, clients, stop, every))
        while not over():
            _alive(served)
            await asyncio.sleep(0.5)
        stop.set()
        return await polling

    _wait_for(served, begun)
    return asyncio.run(run())


def bench_drift(
    count: int, clients: int, drift_interval: float, workdir: Path, poll_every: float = 1.0
) -> dict[str, Any]:
    work, bare = workdir / "work", workdir / "fleet.git"
    started = time.monotonic()
    generate(work, machines=count, vms=0, clusters=0, spark_pools=0, sites=4)
    _served_fleet(work / "fleet.yaml")
    _git(work, "add", "-A")
    _git(work, "commit", "-q", "-m", "served: API tokens, no change windows")
    _bare_copy(work, bare)
    machines = _generated_machines(work)
    sites = len({m["site"] for m in machines})
    if len(machines) != count:
        raise BenchFailure(f"read {len(machines)} generated Machines, not {count}")
    generated = time.monotonic() - started
    started = time.monotonic()
    farm = _start_farm(machines, workdir)
    farm_seconds = time.monotonic() - started
    endpoints = workdir / "endpoints.json"
    endpoints.write_text(
        json.dumps(
            {"endpoints": {f"{m['bmc']}:623": f"{_farm_address(i)}:623" for i, m in enumerate(machines)}}
        )
    )
    credentials = {f"FLEET_BMC_{site.upper()}": f"admin:{PASSWORD}" for site in {m["site"] for m in machines}}
    env = _environment(workdir, FLEET_ENDPOINTS=str(endpoints), **credentials)
    try:
        options = ("--repo", str(bare), "--branch", "main", "--poll-interval", "3600")
        interval = ("--drift-interval", str(drift_interval))
        with _serving(env, workdir / "serve.log", *options, *interval) as served:
            spawned = time.time()

            def passes_seen(complete: bool) -> int:
                served.read_log()
                found = _passes(served.lines, sites)
                return len(_complete(found, sites) if complete else found)

            # Passes 1 (cold) and 2 (warm) with nothing else running: the pass figures.
            _wait_for(served, lambda: passes_seen(True) >= 2)
            machine_states = served.status()["resources"].get("Machine", {})
            load = _status_back_to_back(
                served, clients, lambda: passes_seen(False) >= 3, lambda: passes_seen(True) >= 3
            )
            paced: list[float] = []
            errors: list[str] = []
            if poll_every:
                paced, errors = _status_paced(
                    served,
                    clients,
                    lambda: passes_seen(False) >= 4,
                    lambda: passes_seen(True) >= 4,
                    poll_every,
                )
            passes = _complete(_passes(served.lines, sites), sites)[:4]
            served.stop()
    finally:
        farm.terminate()
        farm.wait(timeout=60)
    problems = []
    for number, one in enumerate(passes[:2], 1):
        total = sum(b["resources"] for b in one["batches"])
        if total != count:
            problems.append(f"pass {number} reconciled {total} Machines, not {count}")
        for batch in one["batches"]:
            if batch["result"] != "ok" or batch["line"].get("changes") or batch["line"].get("unknown"):
                problems.append(f"pass {number}, {batch['site']}: {json.dumps(batch['line'])}")
    if machine_states.get("in sync", 0) != count:
        problems.append(f"after two passes the Machines are {machine_states}, not all in sync")
    return {
        "problems": problems,
        "errors": errors,
        "generated": generated,
        "farm": farm_seconds,
        "spawned": spawned,
        "passes": passes,
        "load": load,
        "paced": paced,
        "poll_every": poll_every,
        "clients": clients,
        "count": count,
    }


def _latencies(latencies: list[float]) -> str:
    """How many calls, p50, p99 and max, and the p99 beside its target."""
    p99 = _percentile(latencies, 0.99)
    verdict = "within target" if p99 <= TARGET_STATUS_P99 else "OVER TARGET"
    return (
        f"{len(latencies)} calls, p50 {statistics.median(latencies) * 1000:.0f} ms, "
        f"p99 {p99 * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms "
        f"(target p99 <= {TARGET_STATUS_P99 * 1000:.0f} ms: {verdict})"
    )


def _print_drift(result: dict[str, Any]) -> None:
    count, passes = result["count"], result["passes"]
    print(
        f"2. full drift pass over {count:,} simulated BMCs (generated fleet, 4 sites; repo and farm "
        f"ready in {result['generated']:.0f} s + {result['farm']:.0f} s)"
    )
    labels = (
        "first pass (cold: logins, load)",
        "drift-scheduled pass",
        "the next, under the back-to-back status clients (3.)",
        "the next, under the polling status clients (3.)",
    )
    for number, one in enumerate(passes, 1):
        start = min(b["start"] for b in one["batches"])
        seconds = max(b["end"] for b in one["batches"]) - start
        verdict = "within target" if seconds <= TARGET_PASS else "OVER TARGET"
        target = f"(target <= {TARGET_PASS:.0f} s: {verdict})" if number <= 2 else "(printed)"
        extra = f", {start - result['spawned']:.1f} s after the process started" if number == 1 else ""
        print(f"   {labels[number - 1]:<32} {seconds:6.1f} s  {target}{extra}; per batch:")
        for batch in one["batches"]:
            seconds = batch["end"] - batch["start"]
            unknown = batch["line"].get("unknown", "?")
            print(
                f"      {batch['site']:<6} {batch['resources']:>5} Machines  {seconds:6.1f} s  "
                f"({unknown} unknown, {batch['line'].get('changes')} changes)"
            )
    load: Load = result["load"]
    verdict = "within target" if load.p99 <= TARGET_STATUS_P99 else "OVER TARGET"
    print(
        f"3. GET /api/v1/status, {result['clients']} concurrent clients (wrk) during the third pass, "
        f"each asking again as soon as answered: {load.calls} calls ({load.rate:.0f}/s), "
        f"p50 {load.p50 * 1000:.0f} ms, p99 {load.p99 * 1000:.0f} ms, max {load.max * 1000:.0f} ms "
        f"(target p99 <= {TARGET_STATUS_P99 * 1000:.0f} ms: {verdict}); {load.failures} failed"
    )
    if result["paced"]:
        print(
            f"   the same {result['clients']} clients (httpx) each polling once every "
            f"{result['poll_every']:g} s, during the fourth pass: {_latencies(result['paced'])}; "
            f"{len(result['errors'])} failed"
        )
    if result["problems"]:
        raise BenchFailure(
            "the controller did not keep every Machine in sync:\n  " + "\n  ".join(result["problems"])
        )


# --- 4. three replicas against one -----------------------------------------------------------


@contextlib.contextmanager
def _database(name: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one configuration; dropped afterwards."""
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _batches_done(replicas: list[Served], why: str) -> dict[str, dict[str, Any]]:
    """The Machine batches reconciled for a `why` starting so, by site, across the replicas (each
    replica runs one unit at a time, so its `reconciled` line follows its `reconciling`)."""
    done: dict[str, dict[str, Any]] = {}
    for served in replicas:
        served.read_log()
        site = None
        for line in served.lines:
            if line.get("kind") != "Machine":
                continue
            message = line.get("message")
            if message == "reconciling":
                site = line["site"] if str(line.get("why", "")).startswith(why) else None
                if site is not None:
                    done[site] = {"start": _stamp(line["timestamp"])}
            elif message in ("reconciled", "reconcile failed") and site is not None:
                done[site].update(end=_stamp(line["timestamp"]), replica=line["replica"], line=line)
                site = None
    return done


def _until_batches(replicas: list[Served], why: str, sites: int, timeout: float) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = _batches_done(replicas, why)
        if len(done) >= sites and all("end" in b for b in done.values()):
            return done
        for served in replicas:
            if served.process.poll() is not None:
                raise BenchFailure(f"fleet serve exited:\n{served.log.read_text()[-3000:]}")
        time.sleep(0.2)
    raise BenchFailure(f"the batches of {why!r} were not all reconciled in {timeout:.0f} s")


def bench_replicas(count: int, workdir: Path) -> dict[str, Any]:
    sites = 6
    work, bare = workdir / "work", workdir / "fleet.git"
    generate(work, machines=count, vms=0, clusters=0, spark_pools=0, sites=sites)
    _served_fleet(work / "fleet.yaml")
    _git(work, "add", "-A")
    _git(work, "commit", "-q", "-m", "served: API tokens, no change windows")
    _bare_copy(work, bare)
    machines = _generated_machines(work)
    farm = _start_farm(machines, workdir)
    endpoints = workdir / "endpoints.json"
    endpoints.write_text(
        json.dumps(
            {"endpoints": {f"{m['bmc']}:623": f"{_farm_address(i)}:623" for i, m in enumerate(machines)}}
        )
    )
    credentials = {f"FLEET_BMC_{site.upper()}": f"admin:{PASSWORD}" for site in {m["site"] for m in machines}}
    options = ("--repo", str(bare), "--branch", "main", "--poll-interval", "3600", "--drift-interval", "3600")
    seconds: dict[int, float] = {}
    spread: dict[int, dict[str, int]] = {}
    try:
        for size in (1, 3):
            with _database(f"fleet_bench_replicas_{size}") as url, contextlib.ExitStack() as stack:
                replicas = []
                for number in range(size):
                    env = _environment(
                        workdir / f"{size}-{number}",
                        FLEET_ENDPOINTS=str(endpoints),
                        FLEET_STATE=url,
                        **credentials,
                    )
                    (workdir / f"{size}-{number}").mkdir()
                    log = workdir / f"{size}-{number}" / "serve.log"
                    replicas.append(stack.enter_context(_serving(env, log, *options)))
                _until_batches(replicas, "revision", sites, 900)  # the first, cold pass
                (work / "fleet.yaml").write_text((work / "fleet.yaml").read_text() + f"# {size}\n")
                commit = _commit_and_push(work, f"measured pass with {size} replicas")
                started = time.time()
                answer = replicas[0].client.post("/api/v1/poll", headers={"Authorization": f"Bearer {OPS}"})
                if answer.status_code >= 300:
                    raise BenchFailure(
                        f"POST /api/v1/poll answered {answer.status_code}: {answer.text[:300]}"
                    )
                done = _until_batches(replicas, f"revision {commit[:12]}", sites, 900)
                seconds[size] = max(b["end"] for b in done.values()) - started
                spread[size] = {}
                for batch in done.values():
                    spread[size][batch["replica"]] = spread[size].get(batch["replica"], 0) + 1
                    if batch["line"].get("result") != "ok" or batch["line"].get("changes"):
                        raise BenchFailure(
                            f"a measured batch did not end in sync: {json.dumps(batch['line'])}"
                        )
    finally:
        farm.terminate()
        farm.wait(timeout=60)
    return {"count": count, "sites": sites, "seconds": seconds, "spread": spread}


def _print_replicas(result: dict[str, Any]) -> None:
    one, three = result["seconds"][1], result["seconds"][3]
    print(
        f"4. three replicas against one, same PostgreSQL and work: {result['count']:,} simulated BMCs,"
        f" {result['sites']} Machine batches, every batch run again after a commit"
    )
    for size in (1, 3):
        batches = ", ".join(f"{n} on {r}" for r, n in sorted(result["spread"][size].items()))
        print(f"   {size} replica{'s' if size > 1 else ' '}: {result['seconds'][size]:6.1f} s  ({batches})")
    print(f"   ratio (one / three): {one / three:.2f}x (no target: printed)")


@contextlib.contextmanager
def _workdir(keep: Path | None, part: str) -> Iterator[Path]:
    if keep is not None:
        (keep / part).mkdir(parents=True)
        yield keep / part
        return
    with tempfile.TemporaryDirectory(prefix=f"fleet-bench-serve-{part}-") as tmp:
        yield Path(tmp)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pushes", type=int, default=20)
    parser.add_argument("--machines", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument(
        "--poll-every",
        type=float,
        default=1.0,
        help="then each client polls the status once every this many seconds, during the next pass"
        " (0: skip; default 1)",
    )
    parser.add_argument("--drift-interval", type=float, default=5.0, help="seconds (default 5)")
    parser.add_argument("--replica-machines", type=int, default=3_000)
    parser.add_argument("--only", choices=("webhook", "drift", "replicas"))
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it (logs, state store)")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}; the controller, the simulators and this client share them")
    print(f"before: {_load()}")
    try:
        if args.only in (None, "webhook"):
            with _workdir(args.keep, "webhook") as workdir:
                _print_webhook(bench_webhook(args.pushes, workdir))
            print(f"   ({_load()})")
        if args.only in (None, "drift"):
            with _workdir(args.keep, "drift") as workdir:
                _print_drift(
                    bench_drift(args.machines, args.clients, args.drift_interval, workdir, args.poll_every)
                )
            print(f"   ({_load()})")
        if args.only in (None, "replicas"):
            with _workdir(args.keep, "replicas") as workdir:
                _print_replicas(bench_replicas(args.replica_machines, workdir))
            print(f"   ({_load()})")
    except BenchFailure as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
