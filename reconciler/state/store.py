"""The state store: fleet's memory of runs, actions, applied specs, observations, drift and leases.

Every method is one short transaction, committed before it returns (an action is on disk
before it runs), and hands back plain dataclasses. The same code serves SQLite and PostgreSQL;
the store must never hold a secret (callers pass non-secret fields only, and values registered
with `forbid_values` are refused) and never let a driver exception escape as anything but
fleet's TemporaryError or PermanentError.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc

from reconciler.errors import PermanentError
from reconciler.state import locks as leases
from reconciler.state.engine import CHUNK, Database, chunks, database_error, display_url, resolve_url
from reconciler.state.migrate import current_revision, upgrade_to_head
from reconciler.state.records import (
    ActionRecord,
    Applied,
    DriftFinding,
    LockHolder,
    ObservationRecord,
    ResourceState,
    RevisionState,
    RunRecord,
    Suspension,
    SuspensionChange,
)
from reconciler.state.schema import (
    ACTION_RESULTS,
    OBSERVATION_STATES,
    REVISION_NAMES,
    RUN_KINDS,
    RUN_STATUSES,
    actions,
    applied,
    controller_marks,
    controller_revisions,
    drift,
    ended_sessions,
    locks,
    observations,
    observed_differences,
    resource_states,
    runs,
    suspensions,
    webhook_deliveries,
)
from reconciler.state.values import ValueGuard, one_of, utc

ObservationInput = ObservationRecord | tuple[str, str, Mapping[str, Any] | None, str | None, datetime]


class ResourceSuspended(PermanentError):
    """An action was about to start on a resource someone suspended after its run was planned."""

    def __init__(self, suspension: Suspension) -> None:
        super().__init__(
            f"{suspension.address} is {suspension.describe()}",
            hint=f"fleet resume {suspension.address}",
        )
        self.suspension = suspension


def store_exists(url: str) -> bool:
    """False only for a SQLite file that is not there (a PostgreSQL database is created by its
    administrator; fleet creates only its tables in it)."""
    parsed = resolve_url(url)
    return not parsed.drivername.startswith("sqlite") or Path(str(parsed.database)).exists()


def open_store(url: str) -> StateStore:
    """Open (creating and migrating as needed) the store at `url` (a bare path is a SQLite file).

    A SQLite file fleet may not write is opened read-only (`store.read_only`): it answers reads,
    and callers record nothing in it. `store.created` says whether this call made the file."""
    parsed = resolve_url(url)
    created = read_only = False
    if parsed.drivername.startswith("sqlite"):
        path = Path(str(parsed.database))
        created = not path.exists()
        writable_directory = os.access(path.parent, os.W_OK)
        if not created and not (os.access(path, os.W_OK) and writable_directory):
            read_only = True
            # Without a writable directory SQLite cannot make the WAL index: read as immutable.
            options = "mode=ro" if writable_directory else "mode=ro&immutable=1"
            parsed = parsed.set(database=f"file:{path}?{options}", query={"uri": "true"})
    db = Database(parsed, read_only=read_only)
    try:
        migrated = upgrade_to_head(db.engine, read_only=read_only)
    except sa_exc.SQLAlchemyError as exc:
        db.close()
        raise database_error(exc, db.url) from exc
    except BaseException:
        db.close()
        raise
    return StateStore(db, migrated=migrated, created=created, read_only=read_only)


DELIVERIES_KEPT = timedelta(days=7)
_OPEN_DRIFT = sa.select(drift).where(drift.c.resolved_at.is_(None))
_MARKS_LOCK = 0x666C65656D  # pg_advisory_xact_lock key of controller_marks ("fleem")


def _now() -> datetime:
    return datetime.now(UTC)


def _action(row: sa.Row[Any]) -> ActionRecord:
    return ActionRecord(
        row.id,
        row.run_id,
        row.address,
        row.action,
        row.before,
        row.after,
        row.result,
        row.message,
        row.started_at,
        row.finished_at,
    )


def _run(row: sa.Row[Any], run_actions: Sequence[ActionRecord] = ()) -> RunRecord:
    return RunRecord(
        row.id,
        row.kind,
        row.operator,
        row.reason,
        row.incident,
        row.revision,
        bool(row.emergency),
        bool(row.broke_lock),
        row.status,
        row.started_at,
        row.finished_at,
        row.summary,
        tuple(run_actions),
        row.replica,
    )


def _resource_state(row: sa.Row[Any]) -> ResourceState:
    return ResourceState(
        row.address,
        row.kind,
        row.state,
        row.detail,
        row.since,
        row.failures,
        row.last_error,
        row.next_try,
    )


def _suspension(row: sa.Row[Any]) -> Suspension:
    return Suspension(row.address, row.operator, row.reason, row.since, row.run_id)


def _drift(row: sa.Row[Any]) -> DriftFinding:
    return DriftFinding(
        row.id,
        row.address,
        row.field,
        row.expected,
        row.actual,
        row.first_seen,
        row.last_seen,
        row.resolved_at,
    )


class StateStore:
    """Open one with `open_store`; close it (or use `with`) to release its connections."""

    def __init__(
        self, db: Database, *, migrated: bool = False, created: bool = False, read_only: bool = False
    ) -> None:
        self._db = db
        self._guard = ValueGuard()
        self.migrated = migrated  # True when opening this store changed its schema
        self.created = created  # True when opening it made a new SQLite file
        self.read_only = read_only  # a SQLite file fleet may not write: reads only

    @property
    def url(self) -> str:
        """Where the store lives, password hidden."""
        return display_url(self._db.url)

    @property
    def dialect(self) -> str:
        return self._db.dialect

    def schema_revision(self) -> str | None:
        with self._db.transaction(write=False) as connection:
            return current_revision(connection)

    def close(self) -> None:
        self._db.close()

    def reading(self) -> contextlib.AbstractContextManager[None]:
        """Inside the block, this thread's reads share one transaction (an answer made of several
        reads: one connection and one BEGIN, and one snapshot on PostgreSQL)."""
        return self._db.reading()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def forbid_values(self, values: Iterable[str]) -> None:
        """Refuse (PermanentError) to store any text or JSON string containing one of these secrets."""
        self._guard.forbid(values)

    # Runs and actions: the audit trail.

    def start_run(
        self,
        kind: str,
        operator: str,
        reason: str | None = None,
        incident: str | None = None,
        revision: str | None = None,
        emergency: bool = False,
        replica: str | None = None,
    ) -> int:
        if not operator:
            raise PermanentError("a run needs an operator")
        values = {
            "kind": one_of(kind, RUN_KINDS, "run kind"),
            "operator": self._guard.text(operator, "operator"),
            "reason": self._guard.text(reason, "reason"),
            "incident": self._guard.text(incident, "incident"),
            "revision": self._guard.text(revision, "revision"),
            "emergency": bool(emergency),
            "broke_lock": False,
            "status": "running",
            "started_at": _now(),
            "replica": self._guard.text(replica, "replica"),
        }
        with self._db.transaction(write=True) as connection:
            run_id: int = connection.execute(sa.insert(runs).values(values).returning(runs.c.id)).scalar_one()
        return run_id

    def finish_run(self, run_id: int, status: str, summary: Mapping[str, Any] | None = None) -> None:
        finished = one_of(status, tuple(s for s in RUN_STATUSES if s != "running"), "finished run status")
        payload = self._guard.json(summary, f"summary of run {run_id}")
        with self._db.transaction(write=True) as connection:
            done = connection.execute(
                sa.update(runs)
                .where(runs.c.id == run_id, runs.c.status == "running")
                .values(status=finished, summary=payload, finished_at=_now())
            )
            if done.rowcount != 1:
                raise PermanentError(f"run {run_id} does not exist or has already finished")

    def mark_broke_lock(self, run_id: int) -> None:
        """Record on the run that it took over another owner's live lock (acquire_locks does it too)."""
        with self._db.transaction(write=True) as connection:
            connection.execute(sa.update(runs).where(runs.c.id == run_id).values(broke_lock=True))

    def get_run(self, run_id: int) -> RunRecord | None:
        with self._db.transaction(write=False) as connection:
            row = connection.execute(sa.select(runs).where(runs.c.id == run_id)).one_or_none()
            if row is None:
                return None
            rows = connection.execute(
                sa.select(actions).where(actions.c.run_id == run_id).order_by(actions.c.id)
            )
            return _run(row, [_action(r) for r in rows])

    def start_action(
        self, run_id: int, address: str, action: str, before: Any, *, fence: str | None = None
    ) -> int:
        """Record an action as pending and commit, before it runs; returns its id for finish_action.

        With `fence` (the token of the run's lease set), the action is recorded only if the run
        still holds the lease on `address` and nobody suspended it meanwhile, in the same
        transaction; otherwise LockLost or ResourceSuspended."""
        values = {
            "run_id": run_id,
            "address": self._guard.text(address, "address"),
            "action": self._guard.text(action, "action"),
            "before": self._guard.json(before, f"state before {action} on {address}"),
            "result": "pending",
            "started_at": _now(),
        }
        with self._db.transaction(write=True) as connection:
            if fence is not None:
                leases.check_held(self._db, connection, address, fence)
                suspended = connection.execute(
                    sa.select(suspensions).where(suspensions.c.address == address)
                ).one_or_none()
                if suspended is not None:
                    raise ResourceSuspended(_suspension(suspended))
            action_id: int = connection.execute(
                sa.insert(actions).values(values).returning(actions.c.id)
            ).scalar_one()
        return action_id

    def finish_action(
        self, action_id: int, result: str, after: Any = None, message: str | None = None
    ) -> None:
        """Record how an action ended; an action marked interrupted may still report its real end."""
        ended = one_of(result, tuple(r for r in ACTION_RESULTS if r != "pending"), "action result")
        values = {
            "result": ended,
            "after": self._guard.json(after, f"state after action {action_id}"),
            "message": self._guard.text(message, f"message of action {action_id}"),
            "finished_at": _now(),
        }
        with self._db.transaction(write=True) as connection:
            done = connection.execute(
                sa.update(actions)
                .where(actions.c.id == action_id, actions.c.result.in_(("pending", "interrupted")))
                .values(values)
            )
            if done.rowcount != 1:
                raise PermanentError(f"action {action_id} does not exist or has already finished")

    def interrupt_pending(self, run_id: int, message: str | None = "interrupted before it finished") -> int:
        """Mark every pending action of the run interrupted (after a crash or a signal); returns how many."""
        text = self._guard.text(message, f"message of run {run_id}'s interrupted actions")
        with self._db.transaction(write=True) as connection:
            done = connection.execute(
                sa.update(actions)
                .where(actions.c.run_id == run_id, actions.c.result == "pending")
                .values(result="interrupted", message=text, finished_at=_now())
            )
            return int(done.rowcount)

    def interrupt_abandoned(self, started_before: datetime) -> list[int]:
        """Runs still `running` that were started before `started_before` and hold no live lease:
        their process died (SIGKILL, a lost machine). They, and their pending actions, are marked
        interrupted; returns their ids. A live run renews its leases, so it is never taken."""
        now = _now()
        live = sa.select(locks.c.run_id).where(locks.c.run_id == runs.c.id, locks.c.expires_at > now)
        message = "interrupted: the process running it stopped before it finished"
        summary = self._guard.json({"interrupted": message}, "summary of an abandoned run")
        with self._db.transaction(write=True) as connection:
            found = [
                int(row.id)
                for row in connection.execute(
                    sa.select(runs.c.id).where(
                        runs.c.status == "running",
                        runs.c.started_at < utc(started_before, "started_before"),
                        ~live.exists(),
                    )
                )
            ]
            for start in range(0, len(found), CHUNK):
                chunk = found[start : start + CHUNK]
                connection.execute(
                    sa.update(actions)
                    .where(actions.c.run_id.in_(chunk), actions.c.result == "pending")
                    .values(result="interrupted", message=message, finished_at=now)
                )
                connection.execute(
                    sa.update(runs)
                    .where(runs.c.id.in_(chunk), runs.c.status == "running")
                    .values(status="interrupted", finished_at=now, summary=summary)
                )
        return found

    def history(
        self, target: str | None = None, since: datetime | None = None, limit: int = 50
    ) -> list[RunRecord]:
        """Runs, newest first, with their actions (only those on `target` when it is given)."""
        query, action_query = _history_statements(target is not None, since is not None)
        values: dict[str, Any] = {"limit": max(limit, 0), "target": target}
        if since is not None:
            values["since"] = utc(since, "since")
        with self._db.transaction(write=False) as connection:
            run_rows = list(connection.execute(query, values))
            by_run: dict[int, list[ActionRecord]] = {row.id: [] for row in run_rows}
            ids = list(by_run)
            for start in range(0, len(ids), CHUNK):
                chunk = {"ids": ids[start : start + CHUNK], "target": target}
                for row in connection.execute(action_query, chunk):
                    by_run[row.run_id].append(_action(row))
        return [_run(row, by_run[row.id]) for row in run_rows]

    # Suspensions: resources fleet observes but must not act on.

    def suspend(self, addresses: Iterable[str], operator: str, reason: str) -> SuspensionChange:
        """Suspend every address not suspended yet, in one transaction with its audit record (a
        run of kind `suspend`, an action per address: `succeeded`, or `skipped` when it already
        was, keeping the first suspension's who and why)."""
        if not reason or not reason.strip():
            raise PermanentError("a suspension needs a reason", hint="say why, e.g. --reason 'disk swap'")
        return self._change_suspensions("suspend", addresses, operator, reason)

    def resume(self, addresses: Iterable[str], operator: str, reason: str | None = None) -> SuspensionChange:
        """End the suspension of every address, in one transaction with its audit record (a run of
        kind `resume`; `skipped` for an address that was not suspended)."""
        return self._change_suspensions("resume", addresses, operator, reason)

    def suspensions(self, addresses: Iterable[str] | None = None) -> dict[str, Suspension]:
        """The suspended addresses (all, or those of `addresses`), with who, why and since when."""
        with self._db.transaction(write=False) as connection:
            rows = self._select_by_address(connection, suspensions, addresses)
            return {row.address: _suspension(row) for row in sorted(rows, key=lambda r: r.address)}

    def _change_suspensions(
        self, kind: str, addresses: Iterable[str], operator: str, reason: str | None
    ) -> SuspensionChange:
        wanted = sorted(set(addresses))
        if not wanted:
            raise PermanentError(f"nothing to {kind}: no addresses")
        if not operator:
            raise PermanentError(f"{kind} needs an operator")
        now = _now()
        checked = [self._guard.text(a, "address") or "" for a in wanted]
        run_values = {
            "kind": kind,
            "operator": self._guard.text(operator, "operator"),
            "reason": self._guard.text(reason, "reason"),
            "emergency": False,
            "broke_lock": False,
            "status": "succeeded",
            "started_at": now,
            "finished_at": now,
        }
        changed: list[Suspension] = []
        unchanged: list[tuple[str, Suspension | None]] = []
        with self._db.transaction(write=True) as connection:
            run_id: int = connection.execute(
                sa.insert(runs).values(run_values).returning(runs.c.id)
            ).scalar_one()
            before: dict[str, Suspension] = {}
            for chunk in chunks(checked):
                query = sa.select(suspensions).where(suspensions.c.address.in_(chunk))
                before.update((row.address, _suspension(row)) for row in connection.execute(query))
            for address in checked:
                current = before.get(address)
                if kind == "suspend" and current is None:
                    made = Suspension(address, operator, reason or "", now, run_id)
                    connection.execute(sa.insert(suspensions).values(dataclasses.asdict(made)))
                    changed.append(made)
                elif kind == "resume" and current is not None:
                    connection.execute(suspensions.delete().where(suspensions.c.address == address))
                    changed.append(current)
                else:
                    unchanged.append((address, current))
            outcomes = [
                (s.address, "succeeded", None if kind == "suspend" else f"was {s.describe()}")
                for s in changed
            ]
            outcomes += [
                (
                    address,
                    "skipped",
                    "was not suspended" if current is None else f"already {current.describe()}",
                )
                for address, current in unchanged
            ]
            rows = [
                {
                    "run_id": run_id,
                    "address": address,
                    "action": kind,
                    "result": result,
                    "message": self._guard.text(message, f"message of {kind} of {address}"),
                    "started_at": now,
                    "finished_at": now,
                }
                for address, result, message in sorted(outcomes)
            ]
            for start in range(0, len(rows), CHUNK):
                connection.execute(sa.insert(actions), rows[start : start + CHUNK])
            summary = {"changed": len(changed), "unchanged": len(unchanged)}
            connection.execute(sa.update(runs).where(runs.c.id == run_id).values(summary=summary))
        return SuspensionChange(run_id, kind, tuple(changed), tuple(unchanged))

    # What was applied and what was seen.

    def set_applied(
        self, address: str, revision: str, spec_hash: str, fields: Mapping[str, Any], run_id: int | None
    ) -> None:
        values = {
            "address": self._guard.text(address, "address"),
            "revision": self._guard.text(revision, "revision"),
            "spec_hash": self._guard.text(spec_hash, "spec hash"),
            "fields": self._guard.json(fields, f"applied fields of {address}"),
            "applied_at": _now(),
            "run_id": run_id,
        }
        statement = self._db.insert(applied).values(values)
        statement = statement.on_conflict_do_update(
            index_elements=[applied.c.address],
            set_={
                k: statement.excluded[k] for k in ("revision", "spec_hash", "fields", "applied_at", "run_id")
            },
        )
        with self._db.transaction(write=True) as connection:
            connection.execute(statement)

    def forget_applied(self, address: str) -> None:
        """A resource fleet deleted is no longer fleet's: it leaves the applied set (its
        history stays in runs and actions)."""
        with self._db.transaction(write=True) as connection:
            connection.execute(applied.delete().where(applied.c.address == address))

    def applied_addresses(self) -> set[str]:
        """Every address fleet has applied a spec to (and not forgotten)."""
        with self._db.transaction(write=False) as connection:
            return set(connection.execute(sa.select(applied.c.address)).scalars())

    def get_applied(self, addresses: Iterable[str] | None = None) -> dict[str, Applied]:
        """The last-applied spec per address (all when `addresses` is None); missing ones are left out."""
        result: dict[str, Applied] = {}
        with self._db.transaction(write=False) as connection:
            for row in self._select_by_address(connection, applied, addresses):
                result[row.address] = Applied(
                    row.address, row.revision, row.spec_hash, row.fields, row.applied_at, row.run_id
                )
        return result

    def save_observations(self, records: Iterable[ObservationInput]) -> None:
        """Keep the newest observation per address; an older one arriving late never overwrites it."""
        newest: dict[str, dict[str, Any]] = {}
        for item in records:
            fields: Mapping[str, Any] | None
            if isinstance(item, ObservationRecord):
                address, state, fields, reason, observed_at = (
                    item.address,
                    item.state,
                    item.fields,
                    item.reason,
                    item.observed_at,
                )
            else:
                address, state, fields, reason, observed_at = item
            values = {
                "address": self._guard.text(address, "address"),
                "state": one_of(state, OBSERVATION_STATES, "observation state"),
                "fields": self._guard.json(fields, f"observed fields of {address}"),
                "reason": self._guard.text(reason, f"reason of the observation of {address}"),
                "observed_at": utc(observed_at, "observed_at"),
            }
            seen = newest.get(address)
            # One row per address per statement: PostgreSQL refuses to upsert a row twice in one go.
            if seen is None or seen["observed_at"] <= values["observed_at"]:
                newest[address] = values
        if not newest:
            return
        statement = self._db.insert(observations)
        statement = statement.on_conflict_do_update(
            index_elements=[observations.c.address],
            set_={k: statement.excluded[k] for k in ("state", "fields", "reason", "observed_at")},
            where=observations.c.observed_at <= statement.excluded.observed_at,
        )
        rows = list(newest.values())
        with self._db.transaction(write=True) as connection:
            for start in range(0, len(rows), CHUNK):
                connection.execute(statement, rows[start : start + CHUNK])

    def get_observations(self, addresses: Iterable[str] | None = None) -> dict[str, ObservationRecord]:
        result: dict[str, ObservationRecord] = {}
        with self._db.transaction(write=False) as connection:
            for row in self._select_by_address(connection, observations, addresses):
                result[row.address] = ObservationRecord(
                    row.address, row.state, row.fields, row.reason, row.observed_at
                )
        return result

    # Drift findings.

    def record_drift(
        self, address: str, field: str, expected: Any, actual: Any, seen_at: datetime
    ) -> DriftFinding:
        """Open a finding for (address, field), or update the open one: values and last_seen."""
        seen = utc(seen_at, "seen_at")
        statement = self._db.insert(drift).values(
            address=self._guard.text(address, "address"),
            field=self._guard.text(field, "field"),
            expected=self._guard.json(expected, f"expected {field} of {address}"),
            actual=self._guard.json(actual, f"actual {field} of {address}"),
            first_seen=seen,
            last_seen=seen,
            resolved_at=None,
        )
        excluded = statement.excluded
        statement = statement.on_conflict_do_update(
            index_elements=[drift.c.address, drift.c.field],
            index_where=drift.c.resolved_at.is_(None),
            set_={
                "expected": excluded.expected,
                "actual": excluded.actual,
                # Out-of-order reports (two replicas, retries) only ever widen the window.
                "first_seen": sa.case(
                    (excluded.first_seen < drift.c.first_seen, excluded.first_seen), else_=drift.c.first_seen
                ),
                "last_seen": sa.case(
                    (excluded.last_seen > drift.c.last_seen, excluded.last_seen), else_=drift.c.last_seen
                ),
            },
        ).returning(*drift.c)
        with self._db.transaction(write=True) as connection:
            return _drift(connection.execute(statement).one())

    def resolve_drift(self, address: str, field: str, at: datetime) -> bool:
        """Close the open finding of (address, field); False when there was none."""
        with self._db.transaction(write=True) as connection:
            done = connection.execute(
                sa.update(drift)
                .where(drift.c.address == address, drift.c.field == field, drift.c.resolved_at.is_(None))
                .values(resolved_at=utc(at, "at"))
            )
            return bool(done.rowcount)

    def open_drift(self, addresses: Iterable[str] | None = None) -> list[DriftFinding]:
        """Open findings (all, or on these addresses), sorted by address and field."""
        with self._db.transaction(write=False) as connection:
            rows = self._select_by_address(connection, drift, addresses, _OPEN_DRIFT)
            found = [_drift(row) for row in rows]
        return sorted(found, key=lambda f: (f.address, f.field))

    # Leases.

    def acquire_locks(
        self,
        addresses: Sequence[str],
        owner: str,
        run_id: int | None,
        ttl_seconds: float,
        *,
        wait_seconds: float = 0,
        break_lock: bool = False,
        on_wait: leases.WaitCallback | None = None,
    ) -> leases.LockSet:
        """Lease every address or none. Waits up to `wait_seconds` (calling `on_wait(seconds_left,
        holders)` between tries), then raises LockHeld naming the holders. `break_lock` takes live
        leases of others, lists them in `LockSet.broken` and marks the run `broke_lock`."""
        return leases.acquire(
            self._db,
            addresses,
            owner,
            run_id,
            ttl_seconds,
            wait_seconds=wait_seconds,
            break_lock=break_lock,
            on_wait=on_wait,
        )

    def held_locks(self, addresses: Sequence[str] | None = None) -> list[LockHolder]:
        return leases.held(self._db, addresses)

    # The controller's shared state: its revisions and what it made of each resource.

    def set_revision(self, name: str, state: RevisionState) -> None:
        """Record the controller's revision `name` (applied: in force; attempted: the newest
        taken through the gate)."""
        values = {
            "name": one_of(name, REVISION_NAMES, "revision name"),
            "revision": self._guard.text(state.revision, "revision"),
            "commit": self._guard.text(state.commit, "commit"),
            "at": utc(state.at, "at"),
            "valid": state.valid,
            "error_count": state.error_count,
            "errors": self._guard.json(list(state.errors), "diagnostics of a revision"),
        }
        statement = self._db.insert(controller_revisions).values(values)
        statement = statement.on_conflict_do_update(
            index_elements=[controller_revisions.c.name],
            set_={k: statement.excluded[k] for k in values if k != "name"},
        )
        with self._db.transaction(write=True) as connection:
            connection.execute(statement)

    def revisions(self) -> dict[str, RevisionState]:
        with self._db.transaction(write=False) as connection:
            return {
                row.name: RevisionState(
                    row.revision,
                    row.commit,
                    row.at,
                    bool(row.valid),
                    row.error_count,
                    tuple(row.errors or ()),
                )
                for row in connection.execute(sa.select(controller_revisions))
            }

    def mark_if_due(self, name: str, every: float) -> bool:
        """Set mark `name` to now and answer True when it is older than `every` seconds (or
        unset); False, changing nothing, when it is not due yet. The database's clock judges, so
        replicas agree; one transaction, so two replicas never both find it due."""
        with self._db.transaction(write=True) as connection:
            now = self._db.now(connection)
            if self._db.dialect == "postgresql":
                connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_MARKS_LOCK)))
            at = connection.execute(
                sa.select(controller_marks.c.at).where(controller_marks.c.name == name)
            ).scalar_one_or_none()
            if at is not None and (now - at).total_seconds() < every:
                return False
            statement = self._db.insert(controller_marks).values(name=name, at=now)
            connection.execute(
                statement.on_conflict_do_update(index_elements=[controller_marks.c.name], set_={"at": now})
            )
            return True

    def note_differences(
        self, differing: Iterable[tuple[str, str]], looked_at: Iterable[str], at: datetime
    ) -> None:
        """Keep (address, field) of each observe-only field that differs from its spec, with when
        it was first seen; forget those of `looked_at` addresses that no longer differ."""
        wanted = set(differing)
        addresses = set(looked_at) | {address for address, _ in wanted}
        if not addresses:
            return
        when = utc(at, "at")
        with self._db.transaction(write=True) as connection:
            known: set[tuple[str, str]] = set()
            for chunk in chunks(sorted(addresses)):
                known |= {
                    (row.address, row.field)
                    for row in connection.execute(
                        sa.select(observed_differences.c.address, observed_differences.c.field).where(
                            observed_differences.c.address.in_(chunk)
                        )
                    )
                }
            for address, field in sorted(known - wanted):
                connection.execute(
                    sa.delete(observed_differences).where(
                        observed_differences.c.address == address, observed_differences.c.field == field
                    )
                )
            new = [
                {
                    "address": self._guard.text(a, "address"),
                    "field": self._guard.text(f, "field"),
                    "first_seen": when,
                }
                for a, f in sorted(wanted - known)
            ]
            for start in range(0, len(new), CHUNK):
                connection.execute(sa.insert(observed_differences), new[start : start + CHUNK])

    def differences_since(self, addresses: Iterable[str] | None = None) -> dict[tuple[str, str], datetime]:
        """When each observe-only difference was first seen, by (address, field)."""
        with self._db.transaction(write=False) as connection:
            return {
                (row.address, row.field): row.first_seen
                for row in self._select_by_address(connection, observed_differences, addresses)
            }

    def record_delivery(self, forge: str, delivery_id: str) -> bool:
        """Record a webhook delivery; True when it was not recorded before (in the last week)."""
        statement = self._db.insert(webhook_deliveries).values(
            forge=self._guard.text(forge, "forge"),
            delivery_id=self._guard.text(delivery_id, "delivery id"),
            received_at=_now(),
        )
        with self._db.transaction(write=True) as connection:
            connection.execute(
                sa.delete(webhook_deliveries).where(
                    webhook_deliveries.c.received_at < _now() - DELIVERIES_KEPT
                )
            )
            done = connection.execute(
                statement.on_conflict_do_nothing().returning(webhook_deliveries.c.forge)
            )
            return done.first() is not None

    def forget_delivery(self, forge: str, delivery_id: str) -> None:
        with self._db.transaction(write=True) as connection:
            connection.execute(
                sa.delete(webhook_deliveries).where(
                    webhook_deliveries.c.forge == forge, webhook_deliveries.c.delivery_id == delivery_id
                )
            )

    # Web UI sessions signed out before they expire.

    def end_session(self, digest: str, expires_at: datetime) -> None:
        """Record that the session with this digest of its id ended (until `expires_at`, when its
        cookie would have expired anyway); sessions past that are dropped."""
        statement = self._db.insert(ended_sessions).values(
            digest=self._guard.text(digest, "session digest"), expires_at=utc(expires_at, "expires_at")
        )
        with self._db.transaction(write=True) as connection:
            connection.execute(sa.delete(ended_sessions).where(ended_sessions.c.expires_at <= _now()))
            connection.execute(statement.on_conflict_do_nothing())

    def ended_sessions(self) -> set[str]:
        """The digests of the sessions ended that have not expired yet."""
        with self._db.transaction(write=False) as connection:
            query = sa.select(ended_sessions.c.digest).where(ended_sessions.c.expires_at > _now())
            return set(connection.execute(query).scalars())

    def save_resource_states(self, states: Iterable[ResourceState]) -> None:
        rows = [
            {
                "address": self._guard.text(s.address, "address"),
                "kind": s.kind,
                "state": s.state,
                "detail": self._guard.text(s.detail, f"state of {s.address}"),
                "since": utc(s.since, "since") if s.since is not None else None,
                "failures": s.failures,
                "last_error": self._guard.text(s.last_error, f"last error of {s.address}"),
                "next_try": utc(s.next_try, "next_try") if s.next_try is not None else None,
                "updated_at": _now(),
            }
            for s in states
        ]
        if not rows:
            return
        statement = self._db.insert(resource_states)
        statement = statement.on_conflict_do_update(
            index_elements=[resource_states.c.address],
            set_={k: statement.excluded[k] for k in rows[0] if k != "address"},
        )
        with self._db.transaction(write=True) as connection:
            for start in range(0, len(rows), CHUNK):
                connection.execute(statement, rows[start : start + CHUNK])

    def resource_states(self, addresses: Iterable[str] | None = None) -> dict[str, ResourceState]:
        with self._db.transaction(write=False) as connection:
            return {
                row.address: _resource_state(row)
                for row in self._select_by_address(connection, resource_states, addresses)
            }

    def resource_state_changes(
        self, since: datetime | None = None
    ) -> tuple[dict[str, str], int, datetime | None]:
        """The states by address of the resources whose state was saved at or after `since`
        (every one, when None), how many resources have a state, and the latest save among them:
        what an overview needs to keep its counts without reading every row each time."""
        query = sa.select(resource_states.c.address, resource_states.c.state)
        if since is not None:
            query = query.where(resource_states.c.updated_at >= utc(since, "since"))
        with self._db.transaction(write=False) as connection:
            # Only the two short columns per row: converting a timestamp per row costs more
            # than everything else together at 100,000 rows.
            changed = dict(connection.execute(query).tuples().all())
            total, latest = connection.execute(
                sa.select(sa.func.count(), sa.func.max(resource_states.c.updated_at))
            ).one()
        return changed, int(total), latest

    def keep_resource_states(self, present: Mapping[str, str]) -> None:
        """Forget the states of resources no longer in `present` (address: kind); add those new
        to it as not observed yet."""
        with self._db.transaction(write=False) as connection:
            known = set(connection.execute(sa.select(resource_states.c.address)).scalars())
        gone = sorted(known - set(present))
        new = [ResourceState(address, present[address]) for address in sorted(set(present) - known)]
        if gone:
            with self._db.transaction(write=True) as connection:
                for chunk in chunks(gone):
                    connection.execute(sa.delete(resource_states).where(resource_states.c.address.in_(chunk)))
        self.save_resource_states(new)

    def resource_summary(self, failing: int = 100) -> tuple[dict[str, dict[str, int]], list[ResourceState]]:
        """Resources by kind and state, and the first `failing` ones that are failing."""
        counts: dict[str, dict[str, int]] = {}
        with self._db.transaction(write=False) as connection:
            for kind, state, count in connection.execute(
                sa.select(resource_states.c.kind, resource_states.c.state, sa.func.count()).group_by(
                    resource_states.c.kind, resource_states.c.state
                )
            ):
                counts.setdefault(kind, {})[state] = int(count)
            first = [
                _resource_state(row)
                for row in connection.execute(
                    sa.select(resource_states)
                    .where(resource_states.c.failures > 0)
                    .order_by(resource_states.c.address)
                    .limit(max(failing, 0))
                )
            ]
        return counts, first

    def oldest_since(self, state: str) -> dict[str, datetime]:
        """By kind: when its longest-standing resource in `state` entered it (for the metrics)."""
        with self._db.transaction(write=False) as connection:
            return {
                kind: since
                for kind, since in connection.execute(
                    sa.select(resource_states.c.kind, sa.func.min(resource_states.c.since))
                    .where(resource_states.c.state == state, resource_states.c.since.is_not(None))
                    .group_by(resource_states.c.kind)
                )
                if since is not None
            }

    def unknown_reasons(self) -> dict[tuple[str, str | None], int]:
        """Resources in state unknown by (kind, the reason of their last observation); the reason
        is None when that observation was not an unknown one, or there is none (not observed yet)."""
        seen = observations.c
        joined = resource_states.outerjoin(observations, seen.address == resource_states.c.address)
        counts: dict[tuple[str, str | None], int] = {}
        with self._db.transaction(write=False) as connection:
            for kind, observed, reason, count in connection.execute(
                sa.select(resource_states.c.kind, seen.state, seen.reason, sa.func.count())
                .select_from(joined)
                .where(resource_states.c.state == "unknown")
                .group_by(resource_states.c.kind, seen.state, seen.reason)
            ):
                key = (kind, reason if observed == "unknown" else None)
                counts[key] = counts.get(key, 0) + int(count)
        return counts

    def _select_by_address(
        self,
        connection: sa.Connection,
        table: sa.Table,
        addresses: Iterable[str] | None,
        query: sa.Select[Any] | None = None,
    ) -> Iterator[sa.Row[Any]]:
        """The rows of `table` (or of `query`, a module constant) on `addresses` (all when None)."""
        base = sa.select(table) if query is None else query
        if addresses is None:
            yield from connection.execute(base)
            return
        statement = _on_addresses(table, query)
        for chunk in chunks(sorted(set(addresses))):
            yield from connection.execute(statement, {"addresses": list(chunk)})


@functools.cache
def _on_addresses(table: sa.Table, query: sa.Select[Any] | None) -> sa.Select[Any]:
    """The statement that reads the rows of `table` (of `query`, a module constant, when given) on
    a list of addresses, made once: making a statement for each read costs SQLAlchemy three times
    what running it costs SQLite, and a resource's page makes seven."""
    base = sa.select(table) if query is None else query
    return base.where(table.c.address.in_(sa.bindparam("addresses", expanding=True)))


@functools.cache
def _history_statements(by_target: bool, by_since: bool) -> tuple[sa.Select[Any], sa.Select[Any]]:
    """The statements of `StateStore.history`: its runs, then their actions (bound: limit, since,
    target, ids), made once for each kind of question."""
    query = sa.select(runs).order_by(runs.c.started_at.desc(), runs.c.id.desc()).limit(sa.bindparam("limit"))
    if by_since:
        query = query.where(runs.c.started_at >= sa.bindparam("since"))
    of_runs = actions.c.run_id.in_(sa.bindparam("ids", expanding=True))
    action_query = sa.select(actions).where(of_runs).order_by(actions.c.id)
    if by_target:
        # The runs found through the target's actions (their address index), not every run
        # checked for one: the audit log grows by a run per pass and commit, forever.
        touched = sa.select(actions.c.run_id).where(actions.c.address == sa.bindparam("target"))
        query = query.where(runs.c.id.in_(touched))
        action_query = action_query.where(actions.c.address == sa.bindparam("target"))
    return query, action_query
