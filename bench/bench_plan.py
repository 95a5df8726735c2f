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
an unchanged revision costs (the engine keeps the last revision it loaded).

`--only replan` times what a warm controller does with a one-file commit: a `Controller` (not
started: no schedule, no HTTP) follows the generated repo's branch with an engine whose
provider pool observes Machines from the store snapshot (and applies to it: no BMC), takes the
generated revision in force, then for each of --commits commits (one Machine's power toggled in
one rack file) runs the controller's own `poll()` and waits for the units of work it queues:
fetch, load and the validation gate, choosing the affected resources, and their reconcile (read
the store, observe, plan, guards, lease, apply, record). Each commit's time is printed broken
into those steps (wrappers around the steps' functions time them; nothing is replaced), beside
the target. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import reconciler.controller.controller as controller_module
import reconciler.engine.pipeline as pipeline_module
import reconciler.spec.loader as loader_module
from bench.bench_validate import ensure_repo
from bench.gen_fleet import commit_all, without_change_windows
from providers.access import Access
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
from providers.registry import ProviderPool
from reconciler.controller.controller import Controller
from reconciler.controller.follow import Followed
from reconciler.engine import Engine, SourceRef
from reconciler.kinds import DiffInputs
from reconciler.kinds.planning import Observations, make_plan
from reconciler.memory import collector_paused
from reconciler.settings import Settings
from reconciler.spec import models
from reconciler.spec.cache import SpecCache
from reconciler.spec.loader import LoadedRevision
from reconciler.spec.references import CrossIndex
from reconciler.state import ObservationRecord, RevisionState, StateStore, open_store

LOAD_TARGET, PLAN_TARGET = 1.0, 5.0  # warm: seconds
REPLAN_TARGET = 0.3  # a one-file commit, warm controller: seconds


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


# --- a one-file commit in a warm controller ----------------------------------------------------


class SnapshotMachines:
    """Machines as the store snapshot has them: `observe` answers from it, `apply` changes it, as
    a BMC that does at once what it is told would. No I/O."""

    kind: ClassVar[str] = "Machine"

    def __init__(self, seen: dict[str, Observation]) -> None:
        self.seen = seen
        self.applied: list[tuple[str, Action]] = []

    def observe(self, specs: Sequence[models.Document], inputs: RevisionInputs) -> Observed:
        return Observed(tuple(self.seen.get(s.address) or Observation.absent(s.address) for s in specs))

    def apply(self, change: Change, inputs: RevisionInputs) -> ApplyResult:
        current = self.seen.get(change.address)
        fields = dict(current.fields) if current is not None else {}
        fields.update({f.field: f.after for f in change.fields})
        if change.action in (Action.POWER_ON, Action.POWER_OFF):
            fields["power"] = "on" if change.action is Action.POWER_ON else "off"
        self.seen[change.address] = Observation.observed(change.address, fields)
        self.applied.append((change.address, change.action))
        return ApplyResult(change.address, change.action, True, True, "done (store snapshot)")

    def close(self) -> None:
        return None


class Stopwatch:
    """Seconds spent in named steps, by wrapping the functions that do them (nothing replaced)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def wrap(self, owner: object, name: str, label: str) -> None:
        original: Callable[..., Any] = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - started

        setattr(owner, name, timed)

    def take(self) -> dict[str, float]:
        taken, self.seconds = dict(self.seconds), defaultdict(float)
        return taken


# Steps of a one-file commit, in the order they happen; indented ones are part of the one above.
STEPS = (
    ("fetch", "fetch and open the revision"),
    ("load", "load + validation gate"),
    ("files", "  read (cache) or parse and check the changed files"),
    ("cross", "  cross-document checks"),
    ("take", "put the revision in force (resource states)"),
    ("affected", "choose the affected resources"),
    ("select", "select them"),
    ("observe", "observe (store snapshot)"),
    ("save", "keep the observations"),
    ("plan", "plan (reads the store: applied, drift, suspensions)"),
    ("drift", "record drift findings"),
    ("apply", "guards, lease, apply, record"),
    ("record", "resource states after the run"),
)


def _instrument(controller: Controller, engine: Engine) -> Stopwatch:
    watch = Stopwatch()
    watch.wrap(controller_module, "branch_head", "fetch")
    watch.wrap(engine, "open_source", "fetch")
    watch.wrap(engine, "load", "load")
    watch.wrap(loader_module, "_file_results", "files")
    watch.wrap(CrossIndex, "replace", "cross")
    watch.wrap(controller, "_take", "take")
    watch.wrap(controller_module, "affected", "affected")
    watch.wrap(controller_module, "_batches", "affected")
    watch.wrap(engine, "select", "select")
    watch.wrap(engine, "observe", "observe")
    watch.wrap(engine, "save_observations", "save")
    watch.wrap(engine, "make_plan", "plan")
    watch.wrap(pipeline_module, "record_drift", "drift")
    watch.wrap(engine, "apply", "apply")
    watch.wrap(controller, "_record", "record")
    return watch


_POWER = re.compile(r'^(  power: )"?(on|off)"?$', re.M)


def _toggle_one_power(repo: Path, commit: int) -> tuple[str, str, str]:
    """Toggle the power of the first Machine of one rack file (another file each commit) and
    commit it: (file, machine, new power)."""
    racks = sorted((repo / "machines").glob("*/*.yaml"))
    path = racks[(commit * 97 + 13) % len(racks)]
    text = path.read_text()
    found = _POWER.search(text)
    name = re.search(r"^  name: (\S+)$", text, re.M)
    if found is None or name is None:
        raise RuntimeError(f"{path} has no Machine power to toggle")
    power = "off" if found.group(2) == "on" else "on"
    path.write_text(text[: found.start()] + f'{found.group(1)}"{power}"' + text[found.end() :])
    relative = str(path.relative_to(repo))
    commit_all(repo, f"bench: power {power} in {relative}")
    return relative, name.group(1), power


def _replan(repo: Path, workdir: Path, commits: int, seed: int) -> dict[str, Any]:
    """A warm controller, then `commits` one-file commits through its own poll."""
    cache_dir = workdir / "cache"
    cache_dir.mkdir()
    without_change_windows(repo)
    commit_all(repo, "bench: no change windows")
    settings = Settings(cache_dir=cache_dir, state_dir=cache_dir / "state", config=False)
    cache = SpecCache(cache_dir / "specs.sqlite")
    state = workdir / "state.db"
    machines: SnapshotMachines | None = None

    def snapshot_provider(*_: Any) -> SnapshotMachines:
        assert machines is not None
        return machines

    pool = ProviderPool(Access(), settings.state_dir, {"Machine": snapshot_provider})
    with open_store(str(state)) as store:
        engine = Engine(settings, pool, store, cache)
        followed = Followed(repo=str(repo), branch="main")
        started = time.perf_counter()
        base = engine.load(engine.open_source(followed.at(None)))
        cold = time.perf_counter() - started
        _fill_store(state, base, seed)
        machines = SnapshotMachines(_snapshot(store))
        store.set_revision("applied", RevisionState(base.revision, base.commit, datetime.now(UTC), True))
        controller = Controller(engine, followed)
        started = time.perf_counter()
        controller.poll()  # the revision in force, read again as a restarted controller does
        if not controller.idle(600):
            raise RuntimeError("the controller did not settle on the generated revision")
        warm_up = time.perf_counter() - started
        watch = _instrument(controller, engine)
        runs = []
        for number in range(commits):
            path, machine, power = _toggle_one_power(repo, number)
            watch.take()
            started = time.perf_counter()
            controller.poll()
            if not controller.idle(600):
                raise RuntimeError(f"commit {number + 1}: the controller did not settle")
            seconds = time.perf_counter() - started
            steps = watch.take()
            address = f"machine/{machine}"
            seen = machines.seen.get(address)
            if seen is None or seen.fields.get("power") != power:
                raise RuntimeError(f"commit {number + 1}: {address} was not powered {power}")
            runs.append({"file": path, "machine": machine, "seconds": seconds, "steps": steps})
        engine.close()  # the controller was never started: its idle worker thread ends with the process
    cache.close()
    pool.close()
    return {"cold": cold, "warmUp": warm_up, "runs": runs, "rss": _peak_rss_mib()}


def _snapshot(store: StateStore) -> dict[str, Observation]:
    with collector_paused():
        return {
            r.address: Observation(
                r.address,
                ObservationState(r.state),
                r.observed_at,
                r.fields or {},
                UnknownReason(r.reason) if r.reason else None,
            )
            for r in store.get_observations().values()
        }


def _print_replan(result: dict[str, Any]) -> None:
    runs = result["runs"]
    print(
        f"warm controller: generated revision loaded cold in {result['cold']:.1f} s, taken in force "
        f"in {result['warmUp']:.1f} s; {len(runs)} one-file commits (one Machine's power toggled):"
    )
    for number, run in enumerate(runs, 1):
        print(f"  commit {number:2}: {run['seconds']:.3f} s  {run['file']} ({run['machine']})")
    seconds = [r["seconds"] for r in runs]
    print("median of each step over the commits (seconds):")
    accounted = 0.0
    for key, label in STEPS:
        value = statistics.median(r["steps"].get(key, 0.0) for r in runs)
        if not label.startswith(" "):
            accounted += value
        print(f"  {label:<55} {value:.3f}")
    print(f"  {'the rest (scheduling, logs, metrics)':<55} {statistics.median(seconds) - accounted:.3f}")
    print(
        f"one-file commit, poll to reconciled: p50 {statistics.median(seconds):.3f} s, "
        f"max {max(seconds):.3f} s, target <= {REPLAN_TARGET:g} s (peak RSS {result['rss']:.0f} MiB)"
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
    parser.add_argument("--only", choices=("plan", "replan"), help="run one part (default: both)")
    parser.add_argument("--commits", type=int, default=10, help="one-file commits of the replan part")
    args = parser.parse_args()
    if args.cold:
        _cold(*(Path(p) for p in args.cold[:3]), int(args.cold[3]))
        return
    if args.warm:
        _warm(*(Path(p) for p in args.warm))
        return
    repo = ensure_repo(args.workdir)
    if args.only != "replan":
        _plan_part(repo, args.seed)
    if args.only != "plan":
        try:
            with tempfile.TemporaryDirectory(prefix="fleet-bench-replan-") as tmp:
                _print_replan(_replan(repo, Path(tmp), args.commits, args.seed))
        finally:
            ensure_repo(args.workdir)  # back to the generated commit


def _plan_part(repo: Path, seed: int) -> None:
    with tempfile.TemporaryDirectory(prefix="fleet-bench-plan-") as tmp:
        cache_dir, state = Path(tmp) / "cache", Path(tmp) / "state.db"
        cache_dir.mkdir()
        paths = (str(repo), str(cache_dir), str(state))
        cold = _child("--cold", *paths, str(seed))
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
