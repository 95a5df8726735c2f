"""Benchmark: observe N simulated BMCs with fleet's IPMI provider, and with an ipmitool loop.

Starts the BMC simulator farm (`python -m lab.bmc serve`) with N BMCs
on 127.92.x.y:623 in its own process, then:

1. fleet capacity: passes over all N BMCs with no minimum command interval, as many
   as fit in --seconds; observations per second and p50/p99 latency per observation.
2. fleet with the default 5 s minimum interval between commands to one BMC: one pass
   over all N; seconds and observations per second (bounded by the interval, not CPU).
3. a sequential `ipmitool -I lanplus ... chassis power status` loop over the same
   BMCs for --ipmitool-seconds; calls per second, and the ratio to (1).

Figures are printed, never asserted. Run as root (port 623 on loopback).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from providers.access import Access, EndpointMap
from providers.base import Endpoint, ObservationState, RevisionInputs
from providers.credentials import Credentials
from providers.ipmi.provider import IpmiProvider, Timing
from reconciler.spec import models

PASSWORD = "bench-password"


def _fleet() -> models.Fleet:
    return models.Fleet.model_validate(
        {
            "apiVersion": "fleet/v1alpha1",
            "kind": "Fleet",
            "metadata": {"name": "bench"},
            "spec": {
                "sites": [{"name": "bench", "racks": [{"name": f"r{i:03d}"} for i in range(100)]}],
                "credentials": {"bmc": {"env": "BENCH_BMC"}},
                "providers": {"ipmi": {"maxConcurrent": 256}},
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
        [sys.executable, "-m", "lab.bmc", "serve", "--config", str(config)],
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


def _access(machines: list[models.Machine]) -> Access:
    """The simulated BMCs where the specs' addresses are, and the credential they take."""
    endpoints = {f"{m.spec.bmc.address}:623": Endpoint(_address(i), 623) for i, m in enumerate(machines)}
    return Access(EndpointMap(endpoints), Credentials({"BENCH_BMC": f"admin:{PASSWORD}"}))


def _provider(machines: list[models.Machine], workers: int, timing: Timing) -> IpmiProvider:
    return IpmiProvider(_fleet().spec.providers.ipmi, _access(machines), workers=workers, timing=timing)


def _fleet_capacity(machines: list[models.Machine], workers: int, seconds: float) -> dict[str, Any]:
    """Full passes back to back; latency is from the start of a pass to each observation."""
    timing = Timing(min_interval=0.0, timeout=10.0, retries=1, backoff=0.1)
    inputs = RevisionInputs.of(_fleet(), machines)
    with _provider(machines, workers, timing) as provider:
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
    latencies.sort()
    return {
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
    """CPU of this process and of its finished children (the provider's workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bmcs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to measure fleet's capacity")
    parser.add_argument("--ipmitool-seconds", type=float, default=10.0)
    args = parser.parse_args()
    machines = _machines(args.bmcs)
    with tempfile.TemporaryDirectory(prefix="fleet-bench-ipmi-") as tmp:
        farm = _start_farm(args.bmcs, Path(tmp))
        try:
            farm_cpu_before = _cpu_seconds(farm.pid)
            client_before = _client_cpu()
            capacity = _fleet_capacity(machines, args.workers, args.seconds)
            client_cpu = _client_cpu() - client_before
            farm_cpu = _cpu_seconds(farm.pid) - farm_cpu_before
            spaced = _fleet_with_interval(machines, args.workers)
            loop = _ipmitool_loop(args.bmcs, args.ipmitool_seconds)
        finally:
            farm.terminate()
            farm.wait(timeout=30)
    print(
        f"BMCs simulated: {args.bmcs} (one simulator process); "
        f"fleet workers: {args.workers}; cores: {os.cpu_count()}"
    )
    print()
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
    total = capacity["observations"] + len(machines)  # the timed passes and the login pass
    per_observation = client_cpu / total
    print(
        f"CPU during the fleet passes: client (fleet + workers) {client_cpu:.1f} s, "
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
