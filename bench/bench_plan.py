"""Benchmark: plan the synthetic fleet (110,000 Machines) against a state-store snapshot.

No BMC is contacted: observations come from a SQLite state store filled once with one
observation per Machine (most in sync, some powered off, some with another boot device,
some unknown), and last-applied records for half of them (so drift is computed too). The
figure that matters is planning: reading the snapshot, diffing, ordering into waves and
building the Plan, beyond loading the repo. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_validate import ensure_repo
from providers.base import Observation, ObservationState, UnknownReason
from reconciler.plan.diff import diff_machines
from reconciler.plan.graph import order_entries
from reconciler.plan.model import Plan
from reconciler.source.git import read_revision
from reconciler.spec import models
from reconciler.state import ObservationRecord, open_store
from reconciler.workspace import load_documents


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/fleet-bench"))
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    repo = ensure_repo(args.workdir)
    rng = random.Random(args.seed)

    started = time.perf_counter()
    snapshot = read_revision(str(repo), "HEAD", Path(tempfile.mkdtemp(prefix="fleet-bench-cache-")))
    loaded = load_documents(snapshot)
    documents = [item.document for item in loaded if not isinstance(item.document, models.Fleet)]
    fleet = next(item.document for item in loaded if isinstance(item.document, models.Fleet))
    assert isinstance(fleet, models.Fleet)
    machines = [d for d in documents if isinstance(d, models.Machine)]
    load_seconds = time.perf_counter() - started
    rss_after_load = _peak_rss_mib()

    with tempfile.TemporaryDirectory(prefix="fleet-bench-state-") as tmp:
        store = open_store(str(Path(tmp) / "state.db"))
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

        started = time.perf_counter()
        stored = store.get_observations()
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
        last_applied = {a: record.fields for a, record in store.get_applied().items()}
        read_seconds = time.perf_counter() - started
        diff = diff_machines(machines, observations, last_applied, fleet.spec.policies)
        entries, waves = order_entries(documents, diff.entries)
        plan = Plan("bench", datetime.now(UTC), entries, diff.observed, waves)
        plan_seconds = time.perf_counter() - started
        fingerprint = plan.fingerprint()
        store.close()

    print(f"fleet: {len(machines):,} Machines, {len(documents):,} documents in all (repo {repo})")
    print(
        f"load (parse and validate the repo, no cache): {load_seconds:.1f} s, "
        f"peak RSS {rss_after_load:.0f} MiB"
    )
    print(
        f"plan beyond load: {plan_seconds:.2f} s (reading the store snapshot {read_seconds:.2f} s), "
        f"target <= 5 s"
    )
    print(f"peak RSS of the whole run: {_peak_rss_mib():.0f} MiB, target <= 2048 MiB")
    print(
        f"{plan.summary_line()}  ({len(plan.entries):,} entries, {len(plan.waves)} waves, {fingerprint[:19]})"
    )


if __name__ == "__main__":
    main()
