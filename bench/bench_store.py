"""Benchmark: how big the state store grows, per resource and per run, for sizing a database.

A fresh store (SQLite in a temporary directory, and PostgreSQL too with --postgres ADMIN_URL: a
database of its own, dropped at the end) is filled through the store's own methods the way the
controller leaves it for --machines Machines: one observation per Machine with the fields the IPMI
provider records (power, boot device, inventory), one last-applied record, one resource state. That
part is rewritten in place by every pass. Then the part that grows: --passes drift passes of
--sites batches each, one run per batch (with a plan summary, as the engine records it), and
--changes actions per pass (each started and finished, with before and after). Printed: rows per
table and bytes per Machine, per run and per action, for each database. Figures are never asserted.

    python bench/bench_store.py                                  # 10,000 Machines, SQLite
    python bench/bench_store.py --postgres postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reconciler.plan.model import SUMMARY_KEYS  # noqa: E402
from reconciler.state import ObservationRecord, ResourceState, open_store  # noqa: E402

TABLES = ("observations", "applied", "resource_states", "runs", "actions")
SUMMARY = {"plan": {**dict.fromkeys(SUMMARY_KEYS, 0), "drift": 3, "unknown": 12}, "fingerprint": "d" * 64}


def _machines(count: int, sites: int) -> list[tuple[str, str]]:
    """(address, site) of `count` Machines spread over `sites` sites, 40 to a rack."""
    return [
        (f"machine/site{i % sites}-r{(i // sites) // 40:04d}-{(i // sites) % 40:02d}", f"site{i % sites}")
        for i in range(count)
    ]


def _fill_resources(url: str, machines: list[tuple[str, str]]) -> None:
    now = datetime.now(UTC)
    with open_store(url) as store:
        run = store.start_run("reconcile", "fleet-controller", reason="first pass", revision="a" * 40)
        store.save_observations(
            ObservationRecord(
                address,
                "observed",
                {
                    "power": "on",
                    "reachable": True,
                    "bootDevice": "disk",
                    "bootPersistent": True,
                    "inventory": {
                        "product": "PowerEdge R750",
                        "serial": f"SN{n:010d}",
                        "cpus": 96,
                        "memory": "512Gi",
                    },
                },
                None,
                now,
            )
            for n, (address, _) in enumerate(machines)
        )
        for address, _ in machines:
            store.set_applied(
                address,
                "a" * 40,
                "b" * 64,
                {"power": "on", "bootDevice": "disk", "bootPersistent": True},
                run,
            )
        store.save_resource_states(
            ResourceState(address, "Machine", "in sync", "", now) for address, _ in machines
        )
        store.finish_run(run, "succeeded", {"plan": dict.fromkeys(SUMMARY_KEYS, 0), "fingerprint": "c" * 64})


def _fill_runs(url: str, passes: int, sites: int) -> int:
    """One run per batch per drift pass, with nothing to change: what a quiet fleet's history adds."""
    with open_store(url) as store:
        for _ in range(passes):
            for site in range(sites):
                run = store.start_run(
                    "reconcile",
                    "fleet-controller",
                    reason=f"drift pass of Machine at site{site}",
                    revision="e" * 40,
                    replica="fleet-7d9c6b5f4-x2k8q:1",
                )
                store.finish_run(run, "succeeded", SUMMARY)
    return passes * sites


def _fill_actions(url: str, machines: list[tuple[str, str]], passes: int, changes: int) -> int:
    """`changes` power-ons in one run per pass, each recorded before and after it runs."""
    with open_store(url) as store:
        for number in range(passes):
            run = store.start_run(
                "reconcile", "fleet-controller", reason="revision in force", revision="f" * 40
            )
            for n in range(changes):
                address = machines[(number * changes + n) % len(machines)][0]
                action = store.start_action(run, address, "power-on", {"power": "off"})
                store.finish_action(action, "succeeded", {"power": "on"}, "power on: done in 12.3 s")
            store.finish_run(run, "succeeded", SUMMARY)
    return passes * changes


def _rows(url: str) -> dict[str, int]:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as connection:
            return {t: connection.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES}
    finally:
        engine.dispose()


def _sqlite_bytes(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        size = connection.execute("PRAGMA page_size").fetchone()[0]
        free = connection.execute("PRAGMA freelist_count").fetchone()[0]
    return int((pages - free) * size)


@contextlib.contextmanager
def _postgres(admin: str) -> Iterator[str]:
    name = f"fleet_bench_store_{os.getpid()}"
    engine = sa.create_engine(
        admin.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    with engine.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.make_url(admin).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with engine.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


def _postgres_bytes(url: str) -> int:
    engine = sa.create_engine(
        url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("VACUUM ANALYZE"))
            return int(
                connection.execute(
                    sa.text(
                        "SELECT sum(pg_total_relation_size(format('%I', t)))"
                        " FROM unnest(CAST(:tables AS text[])) AS t"
                    ),
                    {"tables": list(TABLES)},
                ).scalar_one()
            )
    finally:
        engine.dispose()


def measure(name: str, url: str, size: Callable[[], int], args: argparse.Namespace) -> None:
    machines = _machines(args.machines, args.sites)
    _fill_resources(url, machines)
    resources = size()
    runs = _fill_runs(url, args.passes, args.sites)
    with_runs = size()
    actions = _fill_actions(url, machines, args.passes, args.changes)
    with_actions = size()
    rows = _rows(url)
    print(f"{name}: {args.machines:,} Machines; rows: " + ", ".join(f"{t} {rows[t]:,}" for t in TABLES))
    print(
        f"  per Machine (observation, last applied, state; rewritten in place by every pass):"
        f" {resources / args.machines:,.0f} bytes ({resources / 2**20:,.1f} MiB in all)"
    )
    print(
        f"  per run of a batch with no changes ({runs:,} runs: {args.passes} passes x {args.sites}"
        f" batches): {(with_runs - resources) / runs:,.0f} bytes"
    )
    print(
        f"  per action, its run's share included ({actions:,} actions):"
        f" {(with_actions - with_runs) / actions:,.0f} bytes"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machines", type=int, default=10_000)
    parser.add_argument("--sites", type=int, default=4, help="batches per drift pass (default 4)")
    parser.add_argument("--passes", type=int, default=96, help="drift passes: a day at 15 minutes (96)")
    parser.add_argument("--changes", type=int, default=10, help="actions per pass (default 10)")
    parser.add_argument(
        "--postgres", metavar="ADMIN_URL", help="also measure PostgreSQL (a database of its own)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fleet-bench-store-") as tmp:
        path = Path(tmp) / "state.db"
        measure("SQLite", f"sqlite:///{path}", lambda: _sqlite_bytes(path), args)
    if args.postgres:
        with _postgres(args.postgres) as url:
            measure("PostgreSQL", url, lambda: _postgres_bytes(url), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
