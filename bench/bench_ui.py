"""Benchmark: the web UI of `fleet serve` on the synthetic 110,000-Machine fleet.

The fleet (`bench/gen_fleet.py`, Machines only: no VM, Cluster or SparkPool, whose providers
would wait on endpoints that do not exist) is served by `fleet serve` following a bare copy of
it. Its BMC credentials are left unset, so the controller's first pass runs for real over every
Machine (load, validate, plan, record) but observes none: each comes back unknown
("credentials-missing") at once, with no network. A real drift pass over 110,000 simulated BMCs
does not fit 2 cores (10,000 take 40 to 80 s in bench_controller.py, and the simulator farm
would not hold 110,000). So the store is then filled the way the controller's pass writes it,
through the same store methods, from synthetic observations: most Machines in sync, some
drifted (power, observed only, with an open drift finding), unknown, failing (backing off),
waiting for a change window, or suspended. The figures below are of that store.

Then, each printed beside its target:
1. `GET /ui/` (the overview) signed in: time to first byte and HTML size, cold and warm;
2. Chromium (Debian's, headless, tests/browser_testing.py) loading the overview: its
   first-contentful-paint and the navigation's load end (target <= 1 s);
3. `GET /ui/resources/machine/NAME` from --clients (50) concurrent clients, each signed in with a
   session of its own, random Machines, for --seconds (20), each asking again as soon as answered
   (wrk, bench/load.py): p50, p99, max (target p99 <= 100 ms). Then the same clients (httpx,
   asyncio) for as long, each loading a page every --page-every (1) seconds, as people reading
   pages do.

Figures are never asserted; the script exits non-zero only when something went wrong (the
controller failed, a page answered an error, a client's calls failed).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import html
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "tests"))

from browser_testing import available, chromium, paint_timing, sign_in  # noqa: E402

from bench.bench_controller import (  # noqa: E402
    DASHBOARDS,
    BenchFailure,
    _bare_copy,
    _environment,
    _generated_machines,
    _git,
    _load,
    _percentile,
    _served_fleet,
    _serving,
)
from bench.gen_fleet import generate  # noqa: E402
from bench.load import hammer  # noqa: E402
from reconciler.state import ObservationRecord, ResourceState, open_store  # noqa: E402

TARGET_PAINT = 1.0
TARGET_RESOURCE_P99 = 0.1
_CSRF = re.compile(r"<input[^>]*\bname=\"csrf\"[^>]*>")
_VALUE = re.compile(r"\bvalue=\"([^\"]*)\"")

# The share of Machines in each state the store is filled with (the rest are in sync).
MIX = (("drifted", 0.02), ("unknown", 0.01), ("failing", 0.003), ("waiting", 0.005), ("suspended", 0.002))


# --- the store, as a drift pass leaves it ------------------------------------------------------


def _fill(state_url: str, machines: list[dict[str, str]], seed: int) -> dict[str, int]:
    """Synthetic observations and states for every Machine, through the store's own methods."""
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    counts: dict[str, int] = {}
    with open_store(state_url) as store:
        current = store.resource_states()
        observations: list[ObservationRecord] = []
        states: list[ResourceState] = []
        differing: list[tuple[str, str]] = []
        suspended: list[str] = []
        for machine in machines:
            address = f"machine/{machine['name']}"
            resource = current.get(address) or ResourceState(address, "Machine")
            roll, chosen = rng.random(), "in sync"
            for state, share in MIX:
                if roll < share:
                    chosen = state
                    break
                roll -= share
            since = now - timedelta(seconds=rng.randint(60, 86_400))
            live = {"power": machine["power"], "bootDevice": "disk", "bootPersistent": True}
            detail, failures, error, next_try = "", 0, "", None
            if chosen == "unknown":
                observations.append(ObservationRecord(address, "unknown", None, "timeout", now))
                detail = "timeout: the BMC did not answer within 10 s"
            else:
                if chosen == "drifted":
                    wanted = live["power"]
                    live["power"] = "off" if wanted == "on" else "on"
                    detail = f'power: spec "{wanted}", live "{live["power"]}" (observed only)'
                    differing.append((address, "power"))
                    store.record_drift(address, "power", wanted, live["power"], since)
                elif chosen == "failing":
                    failures = rng.randint(1, 6)
                    error = "power-on: the BMC refused the command (completion code 0xd5)"
                    detail = error
                    next_try = now + timedelta(seconds=min(3600, 30 * 2 ** (failures - 1)))
                elif chosen == "waiting":
                    detail = f"outside change window {machine['site']}-weekend"
                elif chosen == "suspended":
                    suspended.append(address)
                    detail = "suspended by bench: rack maintenance"
                observations.append(ObservationRecord(address, "observed", live, None, now))
            states.append(
                dataclasses.replace(
                    resource,
                    state=chosen,
                    detail=detail,
                    since=since,
                    failures=failures,
                    last_error=error,
                    next_try=next_try,
                )
            )
            counts[chosen] = counts.get(chosen, 0) + 1
        store.save_observations(observations)
        store.note_differences(differing, [], now)
        if suspended:
            store.suspend(suspended, "bench", "rack maintenance")
        store.save_resource_states(states)
    return counts


# --- signed in, over HTTP ------------------------------------------------------------------------


def _csrf(page: str) -> str:
    tag = _CSRF.search(page)
    value = _VALUE.search(tag.group(0)) if tag else None
    if value is None:
        raise BenchFailure("the login page has no csrf field")
    return html.unescape(value.group(1))


def _sign_in_sync(client: httpx.Client, token: str) -> None:
    form = client.get("/ui/login")
    answer = client.post("/ui/login", data={"token": token, "csrf": _csrf(form.text)})
    if answer.status_code not in (302, 303) or not client.cookies:
        raise BenchFailure(f"signing in answered {answer.status_code}: {answer.text[:300]}")


async def _sign_in(client: httpx.AsyncClient, token: str) -> None:
    form = await client.get("/ui/login")
    answer = await client.post("/ui/login", data={"token": token, "csrf": _csrf(form.text)})
    if answer.status_code not in (302, 303) or not client.cookies:
        raise BenchFailure(f"signing in answered {answer.status_code}: {answer.text[:300]}")


def _first_byte(client: httpx.Client, path: str) -> tuple[float, int]:
    """Seconds to the response's first byte (its headers) and the body's size in bytes."""
    started = time.perf_counter()
    with client.stream("GET", path) as answer:
        first = time.perf_counter() - started
        body = answer.read()
    if answer.status_code != 200:
        raise BenchFailure(f"GET {path} answered {answer.status_code}: {body[:300]!r}")
    return first, len(body)


def bench_overview(base_url: str, repeats: int) -> dict[str, Any]:
    with httpx.Client(base_url=base_url, timeout=120) as client:
        _sign_in_sync(client, DASHBOARDS)
        cold = _first_byte(client, "/ui/")
        warm = []
        for _ in range(repeats):
            time.sleep(1.2)  # past the second the overview is kept: each load is worked out again
            warm.append(_first_byte(client, "/ui/"))
    return {"cold": cold, "warm": warm}


def bench_paint(base_url: str, repeats: int, log: Path) -> dict[str, Any]:
    with chromium(log) as driver:
        sign_in(driver, base_url, DASHBOARDS)  # lands on the overview once: the first, cold load
        first = paint_timing(driver)
        loads = []
        for _ in range(repeats):
            driver.get("about:blank")
            time.sleep(1.2)
            driver.get(f"{base_url}/ui/")
            loads.append(paint_timing(driver))
    if first["firstContentfulPaint"] < 0 or any(t["firstContentfulPaint"] < 0 for t in loads):
        raise BenchFailure("Chromium reported no first-contentful-paint for the overview")
    return {"first": first, "loads": loads}


async def _paced(
    base_url: str, paths: list[str], clients: int, seconds: float, every: float
) -> dict[str, Any]:
    """`clients` signed-in clients loading random resource pages for `seconds`, each one page every
    `every` seconds (from a random phase), as people reading pages do."""
    latencies: list[float] = []
    failures: list[str] = []
    rng = random.Random(11)
    sessions = [httpx.AsyncClient(base_url=base_url, timeout=60) for _ in range(clients)]
    try:
        for session in sessions:
            await _sign_in(session, DASHBOARDS)
        deadline = time.monotonic() + seconds

        async def one(session: httpx.AsyncClient) -> None:
            due = time.monotonic() + rng.uniform(0, every)
            while time.monotonic() < deadline:
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                due += every
                path = rng.choice(paths)
                started = time.perf_counter()
                try:
                    answer = await session.get(path)
                except httpx.TransportError as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                latencies.append(time.perf_counter() - started)
                if answer.status_code != 200:
                    failures.append(f"{path}: {answer.status_code} {answer.text[:200]}")

        await asyncio.gather(*(one(s) for s in sessions))
    finally:
        for session in sessions:
            await session.aclose()
    if failures:
        raise BenchFailure(f"{len(failures)} resource pages failed, the first: {failures[0]}")
    return {"latencies": latencies, "clients": clients, "seconds": seconds}


# --- the whole benchmark -----------------------------------------------------------------------


@contextmanager
def _workdir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="fleet-bench-ui-") as tmp:
        yield Path(tmp)


def _verdict(value: float, target: float) -> str:
    return "within target" if value <= target else "OVER TARGET"


def _pages(latencies: list[float], args: argparse.Namespace) -> str:
    """How many pages, how fast, p50, p99 and max, and the p99 beside its target."""
    p99 = _percentile(latencies, 0.99)
    return (
        f"{len(latencies)} pages ({len(latencies) / args.seconds:.0f}/s), "
        f"p50 {statistics.median(latencies) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
        f"max {max(latencies) * 1000:.0f} ms (target p99 <= {TARGET_RESOURCE_P99 * 1000:.0f} ms: "
        f"{_verdict(p99, TARGET_RESOURCE_P99)})"
    )


def run(args: argparse.Namespace, workdir: Path) -> None:
    work, bare = workdir / "work", workdir / "fleet.git"
    started = time.monotonic()
    generate(work, machines=args.machines, vms=0, clusters=0, spark_pools=0, sites=4)
    _served_fleet(work / "fleet.yaml")
    _git(work, "add", "-A")
    _git(work, "commit", "-q", "-m", "served: API tokens, no change windows")
    _bare_copy(work, bare)
    machines = _generated_machines(work)
    print(
        f"fleet: {len(machines):,} Machines in {len({m['site'] for m in machines})} sites, generated in "
        f"{time.monotonic() - started:.0f} s"
    )
    env = _environment(workdir)  # no FLEET_BMC_* credentials: every BMC is unknown at once
    options = (
        "--repo",
        str(bare),
        "--branch",
        "main",
        "--poll-interval",
        "3600",
        "--drift-interval",
        "86400",
    )
    with _serving(env, workdir / "serve.log", *options) as served:
        started = time.monotonic()
        deadline = time.monotonic() + 1800
        passes: list[dict[str, Any]] = []
        while len(passes) < 4:
            if time.monotonic() > deadline or served.process.poll() is not None:
                raise BenchFailure(
                    f"the controller's first pass did not end:\n{served.log.read_text()[-3000:]}"
                )
            passes += [
                line
                for line in served.read_log()
                if line.get("kind") == "Machine" and line.get("message") in ("reconciled", "reconcile failed")
            ]
            time.sleep(0.5)
        if any(line["message"] != "reconciled" for line in passes):
            raise BenchFailure(f"the controller's first pass failed: {passes}")
        status = served.wait(lambda s: True, 600)
        print(
            f"controller: first pass over every Machine in {time.monotonic() - started:.0f} s "
            f"(real: load, validate, plan, record; every BMC unknown, no credentials): "
            f"{status['resources']['Machine']}"
        )
        started = time.monotonic()
        counts = _fill(env["FLEET_STATE"], machines, args.seed)
        print(
            f"store: filled from synthetic observations through the store's methods in "
            f"{time.monotonic() - started:.0f} s (NOT a real drift pass over {len(machines):,} BMCs): "
            + ", ".join(f"{n:,} {state}" for state, n in sorted(counts.items()))
        )
        time.sleep(1.5)  # the status summary is kept for a second
        print(f"   ({_load()})")

        overview = bench_overview(served.base_url, args.repeats)
        cold_first, size = overview["cold"]
        warm = [first for first, _ in overview["warm"]]
        print(
            f"1. GET /ui/ (overview), signed in: time to first byte cold {cold_first * 1000:.0f} ms, "
            "warm (each over a second after the last, so worked out again) "
            f"median {statistics.median(warm) * 1000:.0f} ms (max {max(warm) * 1000:.0f} ms, "
            f"{len(warm)} loads); HTML {size / 1024:.1f} KiB"
        )
        paint = bench_paint(served.base_url, args.repeats, workdir / "chromedriver.log")
        fcps = [t["firstContentfulPaint"] / 1000 for t in paint["loads"]]
        loads = [t["load"] / 1000 for t in paint["loads"]]
        first = paint["first"]
        print(
            f"2. Chromium, overview: first-contentful-paint median {statistics.median(fcps) * 1000:.0f} ms "
            f"(max {max(fcps) * 1000:.0f} ms; first load after signing in "
            f"{first['firstContentfulPaint']:.0f} ms) (target <= {TARGET_PAINT * 1000:.0f} ms: "
            f"{_verdict(max(fcps), TARGET_PAINT)}); load end median {statistics.median(loads) * 1000:.0f} ms "
            f"(max {max(loads) * 1000:.0f} ms) (target <= {TARGET_PAINT * 1000:.0f} ms: "
            f"{_verdict(max(loads), TARGET_PAINT)}); {len(fcps)} loads"
        )
        rng = random.Random(args.seed)
        paths = [f"/ui/resources/machine/{m['name']}" for m in rng.sample(machines, 2000)]
        with httpx.Client(base_url=served.base_url, timeout=300) as client:
            _sign_in_sync(client, DASHBOARDS)
            first, _ = _first_byte(client, paths[-1])  # builds what every resource page reads
        print(f"   first resource page (indexes the revision's files, once per revision): {first:.1f} s")
        cookies = []
        for _ in range(args.clients):
            with httpx.Client(base_url=served.base_url, timeout=60) as client:
                _sign_in_sync(client, DASHBOARDS)
                cookies.append("; ".join(f"{name}={value}" for name, value in client.cookies.items()))
        load = hammer(served.base_url, paths, args.clients, cookies=cookies, seconds=args.seconds)
        if load.failures:
            raise BenchFailure(f"{load.failures} of {load.calls} resource pages failed: {load}")
        print(
            f"3. GET /ui/resources/machine/NAME, {args.clients} concurrent signed-in clients (wrk) for "
            f"{args.seconds:.0f} s, each asking again as soon as answered: {load.calls} pages "
            f"({load.rate:.0f}/s), p50 {load.p50 * 1000:.0f} ms, p99 {load.p99 * 1000:.0f} ms, "
            f"max {load.max * 1000:.0f} ms (target p99 <= {TARGET_RESOURCE_P99 * 1000:.0f} ms: "
            f"{_verdict(load.p99, TARGET_RESOURCE_P99)})"
        )
        if args.page_every:
            paced = asyncio.run(_paced(served.base_url, paths, args.clients, args.seconds, args.page_every))
            print(
                f"   the same {args.clients} clients (httpx) each loading a page every "
                f"{args.page_every:g} s: {_pages(paced['latencies'], args)}"
            )
        print(f"   ({_load()})")
        served.read_log()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--machines", type=int, default=110_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0, help="of the concurrent clients")
    parser.add_argument(
        "--page-every",
        type=float,
        default=1.0,
        help="then each client loads a page every this many seconds (0: skip; default 1)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="overview loads, over HTTP and in Chromium")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it (logs, state store)")
    args = parser.parse_args()
    missing = available()
    if missing is not None:
        print(f"FAILED: {missing}", file=sys.stderr)
        return 1
    print(f"cores: {os.cpu_count()}; fleet serve, Chromium and the clients share them")
    print(f"before: {_load()}")
    try:
        with _workdir(args.keep) as workdir:
            run(args, workdir)
    except BenchFailure as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
