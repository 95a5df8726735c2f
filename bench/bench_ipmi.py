"""Benchmark: observe N simulated BMCs with fleet's IPMI provider, and with an ipmitool loop.

Starts the BMC simulator farm (`python -m lab.bmc serve`) with N BMCs
on 127.92.x.y:623 in its own process, then:

1. fleet capacity: passes over all N BMCs with no minimum command interval, as many
   as fit in --seconds; observations per second and p50/p99 latency per observation.
2. fleet with the default 5 s minimum interval between commands to one BMC: one pass
   over all N; seconds and observations per second (bounded by the interval, not CPU).
3. a sequential `ipmitool -I lanplus ... chassis power status` loop over the same
   BMCs for --ipmitool-seconds; calls per second, and the ratio to (1).
4. passes of one process: --passes (10) observe passes over the first --pass-bmcs (200)
   BMCs through the engine the controller runs: `Engine.observe` over one `ProviderPool`
   (no state store and no fleet repo: the Machines are built in memory, and the Fleet anew
   each pass, as each revision brings its own), back to back or --pass-gap seconds apart,
   with a minimum command interval of --pass-interval (default 0, so the seconds are the work
   and not the spacing: with the default 5 s a pass takes about 10 s whatever it costs). Pass 1
   and pass N are printed side by side: seconds (and of them, making the provider: starting
   its workers, each of which runs this script's imports again, as `fleet`'s workers run the
   CLI's), BMC logins, inventory reads and commands (the simulator's counters), the CPU of the
   client (this process, the fork server and the provider's workers) and of the simulator,
   and the sessions each BMC holds open afterwards. For contrast, the same pass with a new
   pool each pass (opened and closed in the pass, as a run without a kept pool does): the last
   of --fresh-passes (2; such a pass owes nothing to the ones before it).

Figures are printed, never asserted. Run as root (port 623 on loopback). `--only passes`
runs (4) alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from providers.access import Access, EndpointMap
from providers.base import Endpoint, ObservationState, RevisionInputs
from providers.credentials import Credentials
from providers.ipmi.provider import IpmiProvider, Timing
from providers.registry import ProviderPool
from reconciler.engine import Engine, open_engine
from reconciler.kinds.planning import Observations
from reconciler.settings import Settings
from reconciler.spec import models

PASSWORD = "bench-password"


def _fleet(min_interval: float | None = None) -> models.Fleet:
    ipmi: dict[str, Any] = {"maxConcurrent": 256}
    if min_interval is not None:
        ipmi["minCommandIntervalSeconds"] = min_interval
    return models.Fleet.model_validate(
        {
            "apiVersion": "fleet/v1alpha1",
            "kind": "Fleet",
            "metadata": {"name": "bench"},
            "spec": {
                "sites": [{"name": "bench", "racks": [{"name": f"r{i:03d}"} for i in range(100)]}],
                "credentials": {"bmc": {"env": "BENCH_BMC"}},
                "providers": {"ipmi": ipmi},
            },
        }
    )


def _address(index: int) -> str:
    return f"127.92.{index // 250}.{1 + index % 250}"


def _machines(count: int) -> list[models.Machine]:
    return [
        models.Machine.model_validate(
            {
                "apiVersion": "fleet/v1alpha1",
                "kind": "Machine",
                "metadata": {"name": f"bmc-{i:05d}"},
                "spec": {
                    "site": "bench",
                    "rack": f"r{i % 100:03d}",
                    "bmc": {
                        "address": f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}",
                        "credentialsRef": "bmc",
                    },
                },
            }
        )
        for i in range(count)
    ]


def _start_farm(count: int, workdir: Path) -> subprocess.Popen[bytes]:
    bmcs: list[dict[str, Any]] = [
        {
            "name": f"bmc-{i:05d}",
            "address": _address(i),
            "port": 623,
            "username": "admin",
            "password": PASSWORD,
            "group": f"r{i % 100:03d}",
        }
        for i in range(count)
    ]
    config = workdir / "farm.json"
    config.write_text(json.dumps({"transition_seconds": 0.2, "bmcs": bmcs}))
    log = open(workdir / "farm.log", "wb")  # noqa: SIM115 - lives as long as the farm
    farm = subprocess.Popen(
        [
            sys.executable,
            *("-m", "lab.bmc", "serve", "--config", str(config)),
            *("--control", str(workdir / "control.sock")),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parent.parent,
    )
    deadline = time.monotonic() + 120
    while not any(
        line.startswith("ready ") for line in (workdir / "farm.log").read_text(errors="replace").splitlines()
    ):
        if farm.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the simulator did not start:\n{(workdir / 'farm.log').read_text()}")
        time.sleep(0.1)
    return farm


def _control_all(workdir: Path, requests: list[dict[str, Any]]) -> list[Any]:
    """Requests to the simulator's control socket (see lab/bmc.py) on one connection, their results."""
    results = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(workdir / "control.sock"))
        with sock.makefile("rwb") as stream:
            for request in requests:
                stream.write(json.dumps(request).encode() + b"\n")
                stream.flush()
                reply = json.loads(stream.readline())
                if not reply.get("ok"):
                    raise SystemExit(f"the simulator refused {request}: {reply.get('error')}")
                results.append(reply["result"])
    return results


def _control(workdir: Path, request: dict[str, Any]) -> Any:
    return _control_all(workdir, [request])[0]


def _access(machines: list[models.Machine]) -> Access:
    """The simulated BMCs where the specs' addresses are, and the credential they take."""
    endpoints = {f"{m.spec.bmc.address}:623": Endpoint(_address(i), 623) for i, m in enumerate(machines)}
    return Access(EndpointMap(endpoints), Credentials({"BENCH_BMC": f"admin:{PASSWORD}"}))


def _provider(machines: list[models.Machine], workers: int, timing: Timing) -> IpmiProvider:
    return IpmiProvider(_fleet().spec.providers.ipmi, _access(machines), workers=workers, timing=timing)


def _fleet_capacity(
    machines: list[models.Machine], workers: int, seconds: float, farm_pid: int
) -> dict[str, Any]:
    """Full passes back to back; latency is from the start of a pass to each observation. CPU
    from the first pass on (the workers' start-up and closing excluded)."""
    timing = Timing(min_interval=0.0, timeout=10.0, retries=1, backoff=0.1)
    inputs = RevisionInputs.of(_fleet(), machines)
    with _provider(machines, workers, timing) as provider:
        client_cpu, farm_cpu = _tree_cpu(farm_pid), _cpu_seconds(farm_pid)
        started = time.monotonic()
        provider.observe(machines, inputs)  # the first pass logs in to every BMC
        first = time.monotonic() - started
        latencies: list[float] = []
        observed = unknown = 0
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            pass_started = time.time()
            for observation in provider.observe(machines, inputs).observations:
                if observation.state is ObservationState.OBSERVED:
                    observed += 1
                else:
                    unknown += 1
                latencies.append(observation.observed_at.timestamp() - pass_started)
        elapsed = time.monotonic() - started
        client_cpu, farm_cpu = _tree_cpu(farm_pid) - client_cpu, _cpu_seconds(farm_pid) - farm_cpu
    latencies.sort()
    return {
        "client_cpu": client_cpu,
        "farm_cpu": farm_cpu,
        "first_pass_seconds": first,
        "observations": observed,
        "unknown": unknown,
        "seconds": elapsed,
        "per_second": observed / elapsed,
        "p50": statistics.median(latencies),
        "p99": latencies[max(0, int(len(latencies) * 0.99) - 1)],
    }


def _fleet_with_interval(machines: list[models.Machine], workers: int) -> dict[str, Any]:
    timing = Timing(min_interval=5.0, timeout=10.0, retries=1, backoff=0.5)
    inputs = RevisionInputs.of(_fleet(), machines)
    with _provider(machines, workers, timing) as provider:
        started = time.monotonic()
        observations = provider.observe(machines, inputs).observations
        elapsed = time.monotonic() - started
    observed = sum(1 for o in observations if o.state is ObservationState.OBSERVED)
    return {"seconds": elapsed, "observed": observed, "per_second": observed / elapsed}


def _cpu_seconds(pid: int) -> float:
    """User+system CPU time of a running process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _client_cpu() -> float:
    """CPU of this process and of the children it waited for (not the provider's workers:
    see `_tree_cpu`)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _tree_cpu(farm_pid: int) -> float:
    """CPU of this process, of its finished children, and of every live descendant but the
    simulator: the provider's worker processes are children of multiprocessing's fork server,
    never waited for by this process, so `RUSAGE_CHILDREN` alone never sees them."""
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent, own + reaped children's CPU)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        ticks = sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
        stats[int(entry)] = (int(fields[1]), ticks / os.sysconf("SC_CLK_TCK"))
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in stats.items():
        children.setdefault(parent, []).append(pid)
    total = _client_cpu()
    pending = [pid for pid in children.get(os.getpid(), []) if pid != farm_pid]
    while pending:
        pid = pending.pop()
        total += stats[pid][1]
        pending.extend(children.get(pid, []))
    return total


@dataclasses.dataclass(frozen=True)
class PassFigures:
    seconds: float
    startup: float  # of which making the provider (starting its workers), when the pool had none
    observed: int
    logins: int  # sessions the BMCs opened
    inventory_reads: int  # OEM inventory requests (netfn 3Ah, command 01h)
    commands: int  # in-session requests, login probes included
    client_cpu: float
    farm_cpu: float
    sessions: tuple[float, int]  # sessions each BMC holds open after the pass: mean, most


PassRun = Callable[[RevisionInputs], tuple[Observations, float, int]]


def _measure_pass(
    workdir: Path, farm_pid: int, names: list[str], run: PassRun, inputs: RevisionInputs
) -> tuple[PassFigures, int]:
    """Run one pass between two readings of the simulator's counters and of the CPU clocks;
    its figures and the id of the provider that observed."""
    _control(workdir, {"op": "reset_stats"})
    cpu, farm_cpu = _tree_cpu(farm_pid), _cpu_seconds(farm_pid)
    started = time.monotonic()
    observations, startup, provider = run(inputs)
    seconds = time.monotonic() - started
    cpu, farm_cpu = _tree_cpu(farm_pid) - cpu, _cpu_seconds(farm_pid) - farm_cpu
    stats = _control(workdir, {"op": "stats", "names": names, "times": False})["bmcs"]
    held = [s["sessions"] for s in _control_all(workdir, [{"op": "state", "name": n} for n in names])]
    observed = sum(
        1
        for kind in observations.by_kind.values()
        for o in kind.observations
        if o.state is ObservationState.OBSERVED
    )
    figures = PassFigures(
        seconds,
        startup,
        observed,
        sum(b["sessions_opened"] for b in stats.values()),
        sum(b["by_command"].get("3a/01", 0) for b in stats.values()),
        sum(b["commands"] for b in stats.values()),
        cpu,
        farm_cpu,
        (statistics.mean(held), max(held)),
    )
    return figures, provider


def _passes(
    workdir: Path,
    farm_pid: int,
    machines: list[models.Machine],
    passes: int,
    interval: float,
    *,
    fresh: bool,
    gap: float = 0.0,
) -> tuple[list[PassFigures], int]:
    """`passes` observe passes through `Engine.observe`, `gap` seconds apart: over one pool, or
    over a new pool each pass (opening and closing it counted in the pass: what a run without a
    kept pool pays). Also how many distinct Machine providers observed (1: the pool kept it)."""
    names = [m.metadata.name for m in machines]
    access = _access(machines)
    settings = Settings(
        state_dir=workdir / "state",
        cache_dir=workdir / "cache",
        lab_dir=workdir / "lab",
        config=False,
        operator="bench",
    )

    def observe(
        pool: ProviderPool, engine: Engine, inputs: RevisionInputs
    ) -> tuple[Observations, float, int]:
        started = time.monotonic()
        provider = pool.provider("Machine", inputs.fleet)  # what Engine.observe asks the pool for
        startup = time.monotonic() - started
        return engine.observe(machines, inputs), startup, id(provider)

    def fresh_pass(inputs: RevisionInputs) -> tuple[Observations, float, int]:
        with ProviderPool(access, settings.state_dir) as pool, open_engine(settings, pool) as engine:
            return observe(pool, engine, inputs)

    figures: list[PassFigures] = []
    providers: set[int] = set()
    with ProviderPool(access, settings.state_dir) as kept, open_engine(settings, kept) as engine:
        for number in range(passes):
            if number and gap:
                time.sleep(gap)
            # Each pass a Fleet of its own, as each revision brings: the pool keeps its provider
            # as long as the provider settings are the same.
            inputs = RevisionInputs.of(_fleet(interval), machines)
            run: PassRun = fresh_pass if fresh else functools.partial(observe, kept, engine)
            figure, provider = _measure_pass(workdir, farm_pid, names, run, inputs)
            figures.append(figure)
            providers.add(provider)
    return figures, len(providers)


def _ipmitool_loop(count: int, seconds: float) -> dict[str, Any]:
    calls = failures = 0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        index = calls % count
        done = subprocess.run(
            [
                "ipmitool",
                "-I",
                "lanplus",
                "-H",
                _address(index),
                "-U",
                "admin",
                "-P",
                PASSWORD,
                "chassis",
                "power",
                "status",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        calls += 1
        failures += "Chassis Power is" not in done.stdout
    elapsed = time.monotonic() - started
    return {"calls": calls, "failures": failures, "seconds": elapsed, "per_second": calls / elapsed}


def _print_passes(
    kept: list[PassFigures],
    fresh: list[PassFigures],
    providers: int,
    count: int,
    interval: float,
    gap: float,
) -> None:
    workers = min(3 * (os.cpu_count() or 1), _fleet(interval).spec.providers.ipmi.maxConcurrent)
    spacing = (
        "no minimum command interval (the default 5 s would make a pass take about 10 s)"
        if interval == 0
        else f"a minimum command interval of {interval:g} s"
    )
    apart = f"{gap:g} s apart" if gap else "back to back"
    print(
        f"passes of one process over {count} BMCs through Engine.observe, {apart}, {spacing}; "
        f"{workers} provider workers (the pool's default: 3 a core)"
    )
    print(
        f"  {'':30} {'seconds':>7} {'start':>6} {'logins':>6} {'inventory':>9} {'commands':>8} "
        f"{'client CPU':>10} {'sim. CPU':>8} {'observed':>8} {'held':>8}"
    )
    rows = [
        ("one pool, pass 1", kept[0]),
        (f"one pool, pass {len(kept)}", kept[-1]),
        (f"a new pool each pass, pass {len(fresh)}", fresh[-1]),
    ]
    for label, f in rows:
        print(
            f"  {label:30} {f.seconds:7.2f} {f.startup:6.2f} {f.logins:6d} {f.inventory_reads:9d} "
            f"{f.commands:8d} {f.client_cpu:9.2f}s {f.farm_cpu:7.2f}s {f.observed:8d} "
            f"{f.sessions[0]:4.1f}/{f.sessions[1]:<3d}"
        )
    last, new = kept[-1], fresh[-1]
    print(
        f"  one pool, pass {len(kept)} against a new pool's pass: {last.seconds / new.seconds:.0%} of "
        f"the seconds, {last.client_cpu / new.client_cpu:.0%} of the client CPU; "
        f"{providers} Machine provider(s) served the {len(kept)} passes of one pool"
    )
    print(
        "  (start: making the provider, i.e. starting its workers; a new pool's pass also counts "
        "closing it: its workers log out; logins: sessions the simulated BMCs opened; inventory: "
        "inventory reads; client CPU: this process, the fork server and the workers; held: sessions "
        "a BMC holds open after the pass, mean/most)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bmcs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to measure fleet's capacity")
    parser.add_argument("--ipmitool-seconds", type=float, default=10.0)
    parser.add_argument("--only", choices=("passes",), help="run only the passes of one process (4)")
    parser.add_argument("--passes", type=int, default=10, help="observe passes of one process (4)")
    parser.add_argument("--pass-bmcs", type=int, default=200, help="BMCs those passes observe")
    parser.add_argument(
        "--pass-gap",
        type=float,
        default=0.0,
        help="seconds between those passes (BMCs end a session idle for about 60 s)",
    )
    parser.add_argument(
        "--fresh-passes", type=int, default=2, help="passes with a new pool each (for contrast)"
    )
    parser.add_argument(
        "--pass-interval", type=float, default=0.0, help="minimum command interval of those passes (s)"
    )
    args = parser.parse_args()
    if min(args.passes, args.pass_bmcs, args.fresh_passes) < 1:
        parser.error("--passes, --pass-bmcs and --fresh-passes must be at least 1")
    only_passes = args.only == "passes"
    size = args.pass_bmcs if only_passes else max(args.bmcs, args.pass_bmcs)
    machines = _machines(size)
    with tempfile.TemporaryDirectory(prefix="fleet-bench-ipmi-") as tmp:
        workdir = Path(tmp)
        farm = _start_farm(size, workdir)
        try:
            if not only_passes:
                observed = machines[: args.bmcs]
                capacity = _fleet_capacity(observed, args.workers, args.seconds, farm.pid)
                spaced = _fleet_with_interval(observed, args.workers)
                loop = _ipmitool_loop(args.bmcs, args.ipmitool_seconds)
            subset = machines[: args.pass_bmcs]
            section = time.monotonic()
            kept, providers = _passes(
                workdir, farm.pid, subset, args.passes, args.pass_interval, fresh=False, gap=args.pass_gap
            )
            fresh, _ = _passes(workdir, farm.pid, subset, args.fresh_passes, args.pass_interval, fresh=True)
            section = time.monotonic() - section
        finally:
            farm.terminate()
            farm.wait(timeout=30)
    print(f"BMCs simulated: {size} (one simulator process); cores: {os.cpu_count()}")
    print()
    if not only_passes:
        print(f"fleet workers: {args.workers}")
        _print_capacity(args, capacity, spaced, loop)
        print()
    _print_passes(kept, fresh, providers, len(subset), args.pass_interval, args.pass_gap)
    print(f"  ({len(kept)} + {len(fresh)} passes in {section:.0f} s)")


def _print_capacity(
    args: argparse.Namespace,
    capacity: dict[str, Any],
    spaced: dict[str, Any],
    loop: dict[str, Any],
) -> None:
    print(
        f"fleet, no interval    first pass (logins) {capacity['first_pass_seconds']:.2f} s; then "
        f"{capacity['observations']} observations in {capacity['seconds']:.1f} s = "
        f"{capacity['per_second']:.0f}/s (p50 {capacity['p50'] * 1000:.0f} ms, "
        f"p99 {capacity['p99'] * 1000:.0f} ms within a pass), {capacity['unknown']} unknown"
    )
    print(
        f"fleet, 5 s interval   one pass over {args.bmcs} BMCs in {spaced['seconds']:.1f} s = "
        f"{spaced['per_second']:.0f}/s ({spaced['observed']} observed)"
    )
    print(
        f"ipmitool loop         {loop['calls']} calls in {loop['seconds']:.1f} s = "
        f"{loop['per_second']:.1f}/s ({loop['failures']} failed)"
    )
    total = capacity["observations"] + args.bmcs  # the timed passes and the login pass
    client_cpu, farm_cpu = capacity["client_cpu"], capacity["farm_cpu"]
    per_observation = client_cpu / total
    print(
        f"CPU during the fleet passes: client (fleet, fork server + workers) {client_cpu:.1f} s, "
        f"simulator {farm_cpu:.1f} s; "
        f"client CPU per observation {per_observation * 1000:.2f} ms -> 2 cores of client alone "
        f"would sustain about {2 / per_observation:.0f} observations/s"
    )
    print()
    print(f"ratio fleet/ipmitool: {capacity['per_second'] / loop['per_second']:.0f}x (goal >= 20x)")
    print(
        f"goal: 10,000 BMCs fresh every 60 s needs >= 170 observations/s: "
        f"{'met' if capacity['per_second'] >= 170 else 'NOT met'} ({capacity['per_second']:.0f}/s)"
    )


if __name__ == "__main__":
    main()
