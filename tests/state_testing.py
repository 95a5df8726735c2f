"""Shared helpers for the state store's tests: throwaway PostgreSQL databases and worker processes.

The workers run in spawned processes (fresh interpreters), so they live in an importable module
and take only picklable arguments.
"""

from __future__ import annotations

import os
import random
import secrets
import time
import traceback
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa

from reconciler.state import LockHeld, open_store

# CI and every dev machine have PostgreSQL here (trust auth); override to point elsewhere.
PG_ADMIN_URL = os.environ.get("FLEET_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def _admin() -> psycopg.Connection[Any]:
    return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)


def create_pg_database(prefix: str = "fleet_test") -> str:
    """Create an empty database with a unique name; returns its SQLAlchemy URL."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    with _admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return (
        sa.make_url(PG_ADMIN_URL).set(drivername="postgresql+psycopg", database=name).render_as_string(False)
    )


def drop_pg_database(url: str) -> None:
    name = sa.make_url(url).database
    with _admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def open_at_once(url: str, barrier: Any, results: Any) -> None:
    """Open (and so migrate) the store the moment the other process does too."""
    try:
        barrier.wait(30)
        with open_store(url) as store:
            results.put(("ok", store.migrated, store.schema_revision()))
    except BaseException:
        results.put(("error", traceback.format_exc(), None))


def race_for_locks(url: str, owner: str, rounds: int, held_dir: str, barrier: Any, results: Any) -> None:
    """Take random overlapping sets of addresses again and again; while holding a set, claim each
    address with an O_EXCL file, so that two holders of one address at once are caught outside the
    database. Reports (owner, acquired, refused, waits, overlaps) or the traceback."""
    addresses = [f"machine/m{i}" for i in range(4)]
    rng = random.Random(owner)
    acquired = refused = waits = overlaps = 0

    def waited(_left: float, _holders: object) -> None:
        nonlocal waits
        waits += 1

    try:
        with open_store(url) as store:
            barrier.wait(30)
            for round_ in range(rounds):
                wanted = rng.sample(addresses, rng.randint(1, 3))
                try:
                    lockset = store.acquire_locks(
                        wanted, owner, None, 30, wait_seconds=0.2 if round_ % 25 == 0 else 0, on_wait=waited
                    )
                except LockHeld:
                    refused += 1
                    continue
                with lockset:
                    acquired += 1
                    claimed: list[Path] = []
                    for address in wanted:
                        claim = Path(held_dir) / address.replace("/", "_")
                        try:
                            os.close(os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                            claimed.append(claim)
                        except FileExistsError:
                            overlaps += 1
                    time.sleep(0.002)
                    for claim in claimed:
                        claim.unlink()
        results.put(("ok", owner, acquired, refused, waits, overlaps))
    except BaseException:
        results.put(("error", owner, traceback.format_exc(), 0, 0, 0))
