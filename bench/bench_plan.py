"""Benchmark: plan the synthetic fleet (110,000 Machines) against a state-store snapshot, with a
cold and a warm validation cache.

No BMC is contacted: observations come from a SQLite state store filled once with one
observation per Machine (most in sync, some powered off, some with another boot device,
some unknown), and last-applied records for half of them (so drift is computed too). Every
plan loads the repo through the engine's one loader (the same as `fleet validate`): cold, it
parses and validates every file and fills the cache; warm, it reads the documents from the
cache. Cold and warm each run in a process of their own, one after the other, as two `fleet
plan` of the same revision would. Then each reads the store, diffs, orders into waves and
builds the Plan. A second pass in the warm process shows what the controller's next pass over
an unchanged revision costs (the engine keeps the last revision it loaded). Figures are
printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_validate import ensure_repo
from providers.access import Access
from providers.base import Observation, ObservationState, Observed, UnknownReason
from providers.registry import ProviderPool
from reconciler.engine import Engine, SourceRef
from reconciler.kinds import DiffInputs
from reconciler.kinds.planning import Observations, make_plan
from reconciler.memory import collector_paused
from reconciler.settings import Settings
from reconciler.spec import models
from reconciler.spec.cache import SpecCache
from reconciler.spec.loader import LoadedRevision
from reconciler.state import ObservationRecord, open_store

LOAD_TARGET, PLAN_TARGET = 1.0, 5.0  # warm: seconds


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _engine(cache_dir: Path, cache: SpecCache) -> Engine:
    """An engine as `fleet plan` builds one (its provider pool is never asked for a provider here)."""
    settings = Settings(cache_dir=cache_dir, state_dir=cache_dir / "state", config=False)
    return Engine(settings, ProviderPool(Access(), settings.state_dir), None, cache)


def _load(engine: Engine, repo: Path) -> tuple[LoadedRevision, float]:
    """Open the repo at HEAD and load it through the engine's one loader: (revision, seconds)."""
    started = time.perf_counter()
    revision = engine.load(engine.open_source(SourceRef(repo=str(repo), rev="HEAD")))
    return revision, time.perf_counter() - started


def _plan(revision: LoadedRevision, state: Path) -> tuple[Any, float, float]:
    """The whole fleet's plan against the store snapshot: (plan, seconds reading the store, seconds)."""
    started = time.perf_counter()
    fleet = revision.fleet
    assert fleet is not None
    everything = {d.document.address: d.document for d in revision.documents if d.document is not fleet}
    with open_store(str(state)) as store, collector_paused():  # as the engine reads the store
        stored = store.get_observations()
        applied = store.get_applied()
        drift = store.open_drift()
        observations = [
            Observation(
                r.address,
                ObservationState(r.state),
                r.observed_at,
                r.fields or {},
                UnknownReason(r.reason) if r.reason else None,
            )
            for r in stored.values()
        ]
    read = time.perf_counter() - started
    inputs = DiffInputs(
        fleet, everything, applied, {(d.address, d.field): d.first_seen for d in drift}, whole_fleet=True
    )
    machines = [d for d in everything.values() if isinstance(d, models.Machine)]
    plan = make_plan(
        revision.revision,
        datetime.now(UTC),
        machines,
        Observations({"Machine": Observed(tuple(observations))}),
        inputs,
    )
    return plan, read, time.perf_counter() - started


def _fill_store(state: Path, revision: LoadedRevision, seed: int) -> None:
    rng = random.Random(seed)
    machines = [d.document for d in revision.documents if isinstance(d.document, models.Machine)]
    with open_store(str(state)) as store:
        now = datetime.now(UTC)
        records = []
        applied_records = []
        for machine in machines:
            roll = rng.random()
            live = {
                "power": machine.spec.power,
                "bootDevice": machine.spec.bootDevice,
                "bootPersistent": machine.spec.bootPersistent,
            }
            if roll < 0.01:
                records.append(ObservationRecord(machine.address, "unknown", {}, "timeout", now))
                continue
            if roll < 0.03:
                live["power"] = "off" if live["power"] == "on" else "on"
            elif roll < 0.04:
                live["bootDevice"] = "network"
            records.append(ObservationRecord(machine.address, "observed", live, None, now))
            if rng.random() < 0.5:
                applied_records.append(machine)
        store.save_observations(records)
        run_id = store.start_run("apply", "bench")
        for machine in applied_records:
            spec = machine.spec
            store.set_applied(
                machine.address,
                "bench",
                "x",
                {"power": spec.power, "bootDevice": spec.bootDevice, "bootPersistent": spec.bootPersistent},
                run_id,
            )
        store.finish_run(run_id, "succeeded", {})


def _cold(repo: Path, cache_dir: Path, state: Path, seed: int) -> None:
    """The first child: a cold load (filling the cache), the store snapshot, a plan; as JSON."""
    cache = SpecCache(cache_dir / "specs.sqlite")
    revision, load = _load(_engine(cache_dir, cache), repo)
    cache.close()
    rss_after_load = _peak_rss_mib()
    _fill_store(state, revision, seed)
    plan, _, seconds = _plan(revision, state)
    print(
        json.dumps(
            {
                "load": load,
                "plan": seconds,
                "rssAfterLoad": rss_after_load,
                "rss": _peak_rss_mib(),
                "fingerprint": plan.fingerprint(),
                "machines": sum(1 for d in revision.documents if isinstance(d.document, models.Machine)),
                "documents": len(revision.documents),
                "entries": len(plan.entries),
                "waves": len(plan.waves),
                "summary": plan.summary_line(),
            }
        )
    )


def _warm(repo: Path, cache_dir: Path, state: Path) -> None:
    """The second child: a warm load and plan (as a second `fleet plan` would), then a second
    pass in the same process (as the controller's next pass over an unchanged revision); as JSON."""
    cache = SpecCache(cache_dir / "specs.sqlite")
    engine = _engine(cache_dir, cache)
    revision, load = _load(engine, repo)
    plan, read, seconds = _plan(revision, state)
    again, load_again = _load(engine, repo)
    _, _, seconds_again = _plan(again, state)
    cache.close()
    print(
        json.dumps(
            {
                "load": load,
                "fromCache": revision.from_cache,
                "read": read,
                "plan": seconds,
                "loadAgain": load_again,
                "planAgain": seconds_again,
                "rss": _peak_rss_mib(),
                "fingerprint": plan.fingerprint(),
            }
        )
    )


def _child(*args: str) -> dict[str, Any] | None:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(f"the {args[0].lstrip('-')} run failed: {done.stderr.strip()[-2000:]}")
        return None
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/fleet-bench"))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cold", nargs=4, metavar=("REPO", "CACHE", "STATE", "SEED"), help=argparse.SUPPRESS)
    parser.add_argument("--warm", nargs=3, metavar=("REPO", "CACHE", "STATE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cold:
        _cold(*(Path(p) for p in args.cold[:3]), int(args.cold[3]))
        return
    if args.warm:
        _warm(*(Path(p) for p in args.warm))
        return
    repo = ensure_repo(args.workdir)
    with tempfile.TemporaryDirectory(prefix="fleet-bench-plan-") as tmp:
        cache_dir, state = Path(tmp) / "cache", Path(tmp) / "state.db"
        cache_dir.mkdir()
        paths = (str(repo), str(cache_dir), str(state))
        cold = _child("--cold", *paths, str(args.seed))
        warm = _child("--warm", *paths) if cold else None
    if cold is None or warm is None:
        return
    print(f"fleet: {cold['machines']:,} Machines, {cold['documents']:,} documents in all (repo {repo})")
    print(
        f"load (parse, validate, documents): cold {cold['load']:.1f} s "
        f"(peak RSS {cold['rssAfterLoad']:.0f} MiB), "
        f"warm {warm['load']:.2f} s from the cache ({warm['fromCache']}), target warm <= {LOAD_TARGET:g} s"
    )
    print(
        f"plan beyond load: cold run {cold['plan']:.2f} s, warm run {warm['plan']:.2f} s "
        f"(reading the store snapshot {warm['read']:.2f} s)"
    )
    print(
        f"whole plan (load + plan): cold {cold['load'] + cold['plan']:.1f} s, "
        f"warm {warm['load'] + warm['plan']:.2f} s, target warm <= {PLAN_TARGET:g} s"
    )
    print(
        f"the same revision again in the same process (the controller's next pass): load "
        f"{warm['loadAgain']:.2f} s, whole plan {warm['loadAgain'] + warm['planAgain']:.2f} s"
    )
    print(f"peak RSS: cold run {cold['rss']:.0f} MiB, warm run {warm['rss']:.0f} MiB, target <= 2048 MiB")
    same = "same plan" if warm["fingerprint"] == cold["fingerprint"] else "DIFFERENT plans"
    print(f"{cold['summary']}  ({cold['entries']:,} entries, {cold['waves']} waves, {same} cold and warm)")


if __name__ == "__main__":
    main()
