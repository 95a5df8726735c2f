"""Per-resource leases in the state store: a set of addresses is taken all at once or not at all.

No address is ever held by two owners, across processes and replicas, on SQLite and
PostgreSQL alike: one `INSERT ... ON CONFLICT (address) DO UPDATE ... WHERE the lease expired (or
is one we chose to break) RETURNING address` per set, inside one transaction that is rolled back
unless every address came back. This module must never take a lease by reading first and writing
later, and never touch a row whose token is not its own.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import sqlalchemy as sa

from reconciler.errors import PermanentError, TemporaryError
from reconciler.state.engine import Database, chunks, is_conflict
from reconciler.state.records import LockHolder
from reconciler.state.schema import locks, runs

_POLL_FIRST_SECONDS = 0.02
_POLL_MAX_SECONDS = 1.0
_RACE_RETRIES = 20

WaitCallback = Callable[[float, Sequence[LockHolder]], None]


class LockHeld(TemporaryError):
    """Some of the addresses are leased by another owner; `holders` says who, for which run, until when."""

    def __init__(self, holders: Sequence[LockHolder], *, delay: float = 1.0) -> None:
        self.holders = tuple(holders)
        shown = "; ".join(h.describe() for h in self.holders[:5])
        more = f"; and {len(self.holders) - 5} more" if len(self.holders) > 5 else ""
        super().__init__(
            f"locked: {shown or 'by another owner'}{more}",
            delay=delay,
            hint="wait for the run to finish, or break the lock (audited) if its owner is gone",
        )


class LockLost(PermanentError):
    """A lease expired and was taken (or released) by someone else: stop changing those resources."""

    def __init__(self, addresses: Sequence[str], holders: Sequence[LockHolder] = ()) -> None:
        self.addresses = tuple(addresses)
        self.holders = tuple(holders)
        shown = ", ".join(self.addresses[:5]) + (
            f" and {len(self.addresses) - 5} more" if len(self.addresses) > 5 else ""
        )
        why = (
            "; now " + "; ".join(h.describe() for h in self.holders[:3])
            if self.holders
            else " (it expired or was released)"
        )
        super().__init__(
            f"lost the lease on {shown}{why}",
            hint="its run stops before its next action; plan again once the other run is done",
        )


def _holder(row: sa.Row[Any]) -> LockHolder:
    return LockHolder(row.address, row.owner, row.run_id, row.acquired_at, row.expires_at)


class LockSet:
    """Leases on a set of addresses, held until `release()` (or the end of a `with` block) or expiry."""

    def __init__(
        self,
        db: Database,
        addresses: Sequence[str],
        owner: str,
        run_id: int | None,
        token: str,
        acquired_at: datetime,
        expires_at: datetime,
        broken: Sequence[LockHolder] = (),
    ) -> None:
        self._db = db
        self.addresses = tuple(addresses)
        self.owner = owner
        self.run_id = run_id
        self.token = token
        self.acquired_at = acquired_at
        self.expires_at = expires_at
        self.broken = tuple(broken)  # the live leases of others this set took over (for the audit)
        self.released = False

    def renew(self, ttl_seconds: float) -> None:
        """Extend every lease to now + ttl; raises LockLost if any of them is no longer ours."""
        _check_ttl(ttl_seconds)
        if self.released:
            raise PermanentError("renewing a lock set that was released")
        lost: list[str] = []
        with self._db.transaction(write=True) as connection:
            expires_at = self._db.now(connection) + timedelta(seconds=ttl_seconds)
            for chunk in chunks(self.addresses):
                renewed = connection.execute(
                    sa.update(locks)
                    .where(locks.c.token == self.token, locks.c.address.in_(chunk))
                    .values(expires_at=expires_at)
                    .returning(locks.c.address)
                )
                got = set(renewed.scalars())
                lost.extend(a for a in chunk if a not in got)
        if lost:
            raise LockLost(lost, held(self._db, lost))
        self.expires_at = expires_at

    def release(self) -> None:
        """Delete our rows (by token); leases someone else took after expiry stay theirs. Idempotent."""
        if self.released:
            return
        with self._db.transaction(write=True) as connection:
            connection.execute(sa.delete(locks).where(locks.c.token == self.token))
        self.released = True

    def __enter__(self) -> LockSet:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"LockSet({len(self.addresses)} addresses, owner={self.owner!r}, run_id={self.run_id})"


class _Blocked(Exception):
    """Raised inside the attempt's transaction so that it rolls back; carries who was in the way."""

    def __init__(self, holders: list[LockHolder], delay: float) -> None:
        super().__init__("blocked")
        self.holders = holders
        self.delay = delay


def _check_ttl(ttl_seconds: float) -> None:
    if not ttl_seconds > 0:
        raise PermanentError(f"a lease needs a positive TTL, not {ttl_seconds}")


def _attempt(
    db: Database,
    wanted: list[str],
    owner: str,
    run_id: int | None,
    ttl_seconds: float,
    break_lock: bool,
) -> LockSet:
    token = secrets.token_hex(16)
    with db.transaction(write=True) as connection:
        now = db.now(connection)
        expires_at = now + timedelta(seconds=ttl_seconds)
        breaking: list[LockHolder] = []
        tokens: list[str] = []
        if break_lock:
            # Only the leases seen here may be broken (matched by token below), so the report of
            # what was broken is exact even if another owner slips in between on PostgreSQL.
            for chunk in chunks(wanted):
                rows = connection.execute(
                    sa.select(locks).where(locks.c.address.in_(chunk), locks.c.expires_at > now)
                )
                for row in rows:
                    breaking.append(_holder(row))
                    tokens.append(row.token)
        taken: set[str] = set()
        for chunk in chunks(wanted):
            statement = db.insert(locks).values(
                [
                    {
                        "address": address,
                        "owner": owner,
                        "run_id": run_id,
                        "token": token,
                        "acquired_at": now,
                        "expires_at": expires_at,
                    }
                    for address in chunk
                ]
            )
            takeable = locks.c.expires_at <= now
            if tokens:
                takeable = sa.or_(takeable, locks.c.token.in_(tokens))
            statement = statement.on_conflict_do_update(
                index_elements=[locks.c.address],
                set_={
                    "owner": statement.excluded.owner,
                    "run_id": statement.excluded.run_id,
                    "token": statement.excluded.token,
                    "acquired_at": statement.excluded.acquired_at,
                    "expires_at": statement.excluded.expires_at,
                },
                where=takeable,
            ).returning(locks.c.address)
            taken.update(connection.execute(statement).scalars())
        if len(taken) != len(wanted):
            holders: list[LockHolder] = []
            for chunk in chunks(wanted):
                rows = connection.execute(
                    sa.select(locks)
                    .where(locks.c.address.in_(chunk), locks.c.token != token)
                    .order_by(locks.c.address)
                )
                holders.extend(_holder(row) for row in rows)
            soonest = min((h.expires_at for h in holders), default=now)
            raise _Blocked(holders, max((soonest - now).total_seconds(), 0.1))
        if breaking and run_id is not None:
            # The audit mark commits with the takeover itself: a broken lock is never unrecorded.
            connection.execute(sa.update(runs).where(runs.c.id == run_id).values(broke_lock=True))
    return LockSet(db, wanted, owner, run_id, token, now, expires_at, breaking)


def acquire(
    db: Database,
    addresses: Sequence[str],
    owner: str,
    run_id: int | None,
    ttl_seconds: float,
    *,
    wait_seconds: float = 0,
    break_lock: bool = False,
    on_wait: WaitCallback | None = None,
) -> LockSet:
    if not owner:
        raise PermanentError("a lock needs an owner")
    _check_ttl(ttl_seconds)
    # Sorted: every owner takes rows in the same order, so PostgreSQL never sees a lock cycle.
    wanted = sorted(set(addresses))
    deadline = time.monotonic() + max(wait_seconds, 0)
    poll = _POLL_FIRST_SECONDS
    races = 0
    while True:
        try:
            if not wanted:
                now = datetime.now(UTC)
                return LockSet(db, [], owner, run_id, secrets.token_hex(16), now, now)
            return _attempt(db, wanted, owner, run_id, ttl_seconds, break_lock)
        except _Blocked as blocked:
            holders, delay = blocked.holders, blocked.delay
        except TemporaryError as error:
            if not is_conflict(error.__cause__) or races >= _RACE_RETRIES:
                raise
            races += 1
            continue
        if break_lock or not holders:
            # Lost a race to a lease taken (or freed) after we looked: look again at once.
            races += 1
            if races <= _RACE_RETRIES:
                continue
        left = deadline - time.monotonic()
        if left <= 0:
            raise LockHeld(holders, delay=delay)
        if on_wait is not None:
            on_wait(left, holders)
        # Jitter keeps two waiters from polling in lockstep.
        time.sleep(min(poll * random.uniform(0.75, 1.25), left))
        poll = min(poll * 2, _POLL_MAX_SECONDS)


# Made once, with bound values: making a statement for each read costs more than running it.
_HELD = sa.select(locks).where(locks.c.expires_at > sa.bindparam("now")).order_by(locks.c.address)
_HELD_ON = _HELD.where(locks.c.address.in_(sa.bindparam("addresses", expanding=True)))


def held(db: Database, addresses: Sequence[str] | None = None) -> list[LockHolder]:
    """The live leases (all, or on these addresses), sorted by address."""
    with db.transaction(write=False) as connection:
        now = db.now(connection)
        if addresses is None:
            return [_holder(row) for row in connection.execute(_HELD, {"now": now})]
        result: list[LockHolder] = []
        for chunk in chunks(sorted(set(addresses))):
            found = connection.execute(_HELD_ON, {"now": now, "addresses": list(chunk)})
            result.extend(_holder(row) for row in found)
        return sorted(result, key=lambda h: h.address)


def check_held(db: Database, connection: sa.Connection, address: str, token: str) -> None:
    """Inside a writing transaction: raise LockLost unless `address` is leased under `token` right
    now. On PostgreSQL the lease row stays locked until the transaction ends, so a takeover waits
    for what this transaction records (a fencing check: nothing is recorded as started, and so
    nothing is done, under a lease that is no longer ours)."""
    now = db.now(connection)
    mine = connection.execute(
        sa.select(locks.c.address)
        .where(locks.c.address == address, locks.c.token == token, locks.c.expires_at > now)
        .with_for_update()
    ).first()
    if mine is None:
        rows = connection.execute(
            sa.select(locks).where(locks.c.address == address, locks.c.expires_at > now)
        )
        raise LockLost([address], [_holder(row) for row in rows])
