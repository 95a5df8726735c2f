"""The state store keeps runs, actions, applied specs, observations, drift and leases (SQLite and PostgreSQL).

Every test runs against both backends: a SQLite file under tmp_path and a throwaway PostgreSQL
database on 127.0.0.1:5432 (created per module and worker, dropped at the end). PostgreSQL being
unreachable fails the postgresql tests; it is never a reason to skip them.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command as alembic_command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from state_testing import create_pg_database, drop_pg_database, open_at_once, race_for_locks

from reconciler.errors import PermanentError, TemporaryError, UsageError
from reconciler.settings import load_settings
from reconciler.state import (
    LockHeld,
    LockHolder,
    LockLost,
    ObservationRecord,
    ResourceState,
    ResourceSuspended,
    RevisionState,
    StateStore,
    open_store,
)
from reconciler.state.migrate import alembic_config, head_revision
from reconciler.state.schema import JOB_QUEUE_PREFIX, described_here, metadata
from reconciler.state.schema import drift as drift_table

BACKENDS = ["sqlite", "postgresql"]
TABLES = {
    "runs",
    "controller_revisions",
    "controller_marks",
    "webhook_deliveries",
    "observed_differences",
    "ended_sessions",
    "resource_states",
    "actions",
    "applied",
    "observations",
    "drift",
    "locks",
    "pr_comments",
    "suspensions",
    "alembic_version",
}
T0 = datetime(2025, 11, 25, 12, 0, tzinfo=UTC)


def _new_database(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh' / 'state.db'}"
    try:
        return create_pg_database()
    except Exception as exc:  # psycopg's OperationalError and friends: the machine must have it
        pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is required for the state store tests: {exc}")


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    url = _new_database("postgresql", Path())
    yield url
    drop_pg_database(url)


@pytest.fixture(scope="module")
def sqlite_database(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('state') / 'state.db'}"


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest) -> str:
    """A migrated database of the module, emptied for this test."""
    url: str = request.getfixturevalue("sqlite_database" if request.param == "sqlite" else "pg_database")
    open_store(url).close()
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        for table in reversed(metadata.sorted_tables):
            connection.execute(table.delete())
    engine.dispose()
    return url


@pytest.fixture()
def store(url: str) -> Iterator[StateStore]:
    with open_store(url) as store:
        yield store


@pytest.fixture(params=BACKENDS)
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database nobody has opened yet."""
    url = _new_database(request.param, tmp_path)
    yield url
    if request.param == "postgresql":
        drop_pg_database(url)


def _spawn(target: Any, *args: Any) -> multiprocessing.process.BaseProcess:
    process = multiprocessing.get_context("spawn").Process(target=target, args=args)
    process.start()
    return process


# Schema and migrations.


def _comparing(connection: sa.Connection) -> MigrationContext:
    return MigrationContext.configure(connection, opts={"include_name": described_here})


def test_migrations_create_the_schema_and_reopening_is_a_no_op(fresh_url: str) -> None:
    with open_store(fresh_url) as store:
        assert store.migrated
        assert store.schema_revision() == head_revision()
        run_id = store.start_run("plan", "alice")
    engine = sa.create_engine(fresh_url)
    with engine.connect() as connection:
        tables = set(sa.inspect(connection).get_table_names())
        queue = {name for name in tables if name.startswith(JOB_QUEUE_PREFIX)}
        assert tables - queue == TABLES
        # On PostgreSQL, procrastinate's job queue comes with the schema; SQLite has none.
        assert bool(queue) == fresh_url.startswith("postgresql"), queue
        # The migrations produce exactly what schema.py describes (types, indexes, keys).
        assert compare_metadata(_comparing(connection), metadata) == []
    engine.dispose()
    with open_store(fresh_url) as again:
        assert not again.migrated
        assert again.schema_revision() == head_revision()
        run = again.get_run(run_id)
        assert run is not None and run.operator == "alice"


def test_two_processes_opening_a_fresh_store_at_once_both_succeed(fresh_url: str) -> None:
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    processes = [_spawn(open_at_once, fresh_url, barrier, results) for _ in range(2)]
    outcomes = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(30)
    assert [o[0] for o in outcomes] == ["ok", "ok"], outcomes
    assert sorted(o[1] for o in outcomes) == [False, True]  # exactly one of them migrated
    assert {o[2] for o in outcomes} == {head_revision()}


def test_the_default_store_is_sqlite_under_xdg_state_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    url = load_settings().state_url()
    assert url == f"sqlite:///{tmp_path / 'state' / 'fleet' / 'state.db'}"
    with open_store(url) as store:
        assert store.dialect == "sqlite"
    assert (tmp_path / "state" / "fleet" / "state.db").is_file()
    monkeypatch.setenv("XDG_STATE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert (
        load_settings().state_url()
        == f"sqlite:///{tmp_path / 'home' / '.local' / 'state' / 'fleet' / 'state.db'}"
    )
    monkeypatch.setenv("FLEET_STATE", str(tmp_path / "elsewhere.db"))
    assert load_settings().state_url() == str(tmp_path / "elsewhere.db")


def test_bad_urls_and_unreachable_servers_are_fleet_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        open_store("mysql://root@localhost/fleet")
    with pytest.raises(UsageError):
        open_store("sqlite://")
    # Nothing listens on port 1: a temporary error naming the store, password hidden.
    with pytest.raises(TemporaryError) as caught:
        open_store("postgresql://fleet:hunter2@127.0.0.1:1/fleet")
    assert "127.0.0.1:1" in str(caught.value) and "hunter2" not in str(caught.value)


# Runs and actions: the audit trail.


def test_an_action_is_recorded_before_it_runs_and_finished_after(store: StateStore, url: str) -> None:
    run_id = store.start_run("apply", "alice", reason="rack swap", incident="INC-42", revision="abc123")
    action_id = store.start_action(run_id, "machine/a", "power-on", {"power": "off"})

    # Committed at once: another connection (another process, after a crash) already sees it.
    with open_store(url) as other:
        seen = other.get_run(run_id)
    assert seen is not None and seen.status == "running" and seen.finished_at is None
    (pending,) = seen.actions
    assert (pending.address, pending.action, pending.result, pending.before) == (
        "machine/a",
        "power-on",
        "pending",
        {"power": "off"},
    )
    assert pending.finished_at is None and pending.started_at.tzinfo == UTC

    store.finish_action(action_id, "succeeded", {"power": "on"}, "took 12 s")
    store.finish_run(run_id, "succeeded", {"changed": 1, "failed": 0})
    run = store.get_run(run_id)
    assert run is not None
    assert (run.kind, run.operator, run.reason, run.incident, run.revision) == (
        "apply",
        "alice",
        "rack swap",
        "INC-42",
        "abc123",
    )
    assert (run.status, run.summary, run.emergency, run.broke_lock) == (
        "succeeded",
        {"changed": 1, "failed": 0},
        False,
        False,
    )
    assert run.finished_at is not None and run.finished_at >= run.started_at
    (done,) = run.actions
    assert (done.result, done.after, done.message) == ("succeeded", {"power": "on"}, "took 12 s")
    assert done.finished_at is not None and done.finished_at >= done.started_at

    with pytest.raises(PermanentError):
        store.finish_run(run_id, "failed", None)  # a finished run stays as it was recorded
    with pytest.raises(PermanentError):
        store.finish_action(action_id, "failed")
    with pytest.raises(PermanentError):
        store.start_run("destroy", "alice")


def test_runs_a_dead_process_left_open_are_interrupted_and_live_ones_are_not(store: StateStore) -> None:
    """A replica that starts marks runs left `running` by a killed process interrupted: those
    started before the cut-off that hold no live lease. A run renewing its leases is left alone."""
    dead = store.start_run("reconcile", "fleet-controller")
    pending = store.start_action(dead, "machine/dead-1", "power-on", None)
    alive = store.start_run("reconcile", "fleet-controller")
    held = store.acquire_locks(["machine/alive-1"], "controller@host:1", alive, 60)
    later = datetime.now(UTC) + timedelta(seconds=1)
    try:
        assert store.interrupt_abandoned(datetime.now(UTC) - timedelta(hours=1)) == []  # too recent
        found = store.interrupt_abandoned(later)
        assert dead in found and alive not in found
    finally:
        held.release()
    run = store.get_run(dead)
    assert run is not None and run.status == "interrupted" and run.finished_at is not None
    assert [(a.id, a.result) for a in run.actions] == [(pending, "interrupted")]
    still = store.get_run(alive)
    assert still is not None and still.status == "running"
    store.finish_run(alive, "succeeded")


def test_interrupt_pending_marks_only_that_runs_pending_actions(store: StateStore) -> None:
    run_id = store.start_run("reconcile", "controller", emergency=True)
    other_run = store.start_run("apply", "bob")
    done = store.start_action(run_id, "machine/a", "power-on", None)
    store.finish_action(done, "succeeded")
    store.start_action(run_id, "machine/b", "power-off", {"power": "on"})
    store.start_action(run_id, "machine/c", "boot-device", {"boot": "disk"})
    elsewhere = store.start_action(other_run, "machine/d", "power-on", None)

    assert store.interrupt_pending(run_id) == 2
    store.finish_run(run_id, "interrupted", {"interrupted": 2})
    run = store.get_run(run_id)
    assert run is not None and run.emergency and run.status == "interrupted"
    assert [(a.address, a.result) for a in run.actions] == [
        ("machine/a", "succeeded"),
        ("machine/b", "interrupted"),
        ("machine/c", "interrupted"),
    ]
    assert all(a.finished_at is not None for a in run.actions)
    other = store.get_run(other_run)
    assert other is not None and [(a.id, a.result) for a in other.actions] == [(elsewhere, "pending")]


def test_history_filters_by_target_and_time_newest_first(store: StateStore) -> None:
    ids = []
    for n, address in enumerate(["machine/a", "machine/b", "machine/a"]):
        run_id = store.start_run("apply", f"user{n}")
        store.start_action(run_id, address, "power-on", None)
        store.start_action(run_id, "machine/z", "power-on", None)
        ids.append(run_id)
        time.sleep(0.01)
    plan = store.start_run("plan", "user3")

    assert [r.id for r in store.history()] == [plan, *reversed(ids)]
    assert [len(r.actions) for r in store.history(limit=2)] == [0, 2]
    on_a = store.history("machine/a")
    assert [r.id for r in on_a] == [ids[2], ids[0]]
    assert all([a.address for a in r.actions] == ["machine/a"] for r in on_a)
    since = store.get_run(ids[1])
    assert since is not None
    assert [r.id for r in store.history(since=since.started_at)] == [plan, ids[2], ids[1]]
    assert [r.id for r in store.history("machine/a", since=since.started_at, limit=10)] == [ids[2]]
    assert store.history("machine/nope") == []


def test_the_history_of_a_target_is_found_through_its_actions_not_every_run(sqlite_database: str) -> None:
    """The audit log gains a run per pass and per commit for ever: a resource's history (its page,
    `fleet history --target`) must not read every run to find the few that touched it."""
    open_store(sqlite_database).close()
    with open_store(sqlite_database) as store:
        statements: list[tuple[str, Any]] = []

        def executed(
            conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
        ) -> None:
            statements.append((statement, parameters))

        engine = store._db.engine  # the plan asked of is the database's own
        sa.event.listen(engine, "before_cursor_execute", executed)
        try:
            store.history("machine/a", limit=20)
        finally:
            sa.event.remove(engine, "before_cursor_execute", executed)
        statement, parameters = next((s, p) for s, p in statements if "FROM runs" in s)
        with engine.connect() as connection:
            raw = connection.connection.driver_connection
            assert raw is not None
            plan = [row[-1] for row in raw.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)]
        assert any("actions" in step and "address" in step for step in plan), plan
        assert not any(step.startswith("SCAN runs") for step in plan), plan


def test_reads_inside_reading_share_one_transaction_and_writes_do_not(store: StateStore) -> None:
    begun: list[int] = []
    engine = store._db.engine  # what is counted is the database's own BEGINs

    def began(connection: sa.Connection) -> None:
        begun.append(id(connection))

    sa.event.listen(engine, "begin", began)
    try:
        run_id = store.start_run("apply", "operator")
        store.start_action(run_id, "machine/a", "power-on", None)
        begun.clear()
        with store.reading():
            assert [r.id for r in store.history("machine/a")] == [run_id]
            assert store.suspensions(["machine/a"]) == {}
            assert store.open_drift(["machine/a"]) == []
            assert store.held_locks(["machine/a"]) == []
            assert len(begun) == 1, "four reads, one transaction"
            store.start_run("plan", "operator")  # a write is a transaction of its own, committed
            assert len(begun) == 2
        assert len(begun) == 2
        assert len(store.history()) == 2  # and the next read outside the block begins again
        assert len(begun) == 3
    finally:
        sa.event.remove(engine, "begin", began)


def test_a_store_made_by_the_first_schema_upgrades_and_keeps_its_history(fresh_url: str) -> None:
    """A store created before suspensions existed: its runs and actions survive the rebuild of
    `runs` (SQLite must not cascade the old table's drop into `actions`), and it takes the new
    run kinds and the suspensions table."""
    engine = sa.create_engine(fresh_url)
    if engine.dialect.name == "sqlite":
        Path(str(engine.url.database)).parent.mkdir(parents=True, exist_ok=True)
    with engine.begin() as connection:
        alembic_command.upgrade(alembic_config(connection=connection), "0001")
        assert "suspensions" not in sa.inspect(connection).get_table_names()
        when = T0.replace(tzinfo=None) if engine.dialect.name == "sqlite" else T0
        run_id = connection.execute(
            sa.text(
                "INSERT INTO runs (kind, operator, status, started_at, emergency, broke_lock)"
                " VALUES ('apply', 'bob', 'succeeded', :at, false, false) RETURNING id"
            ),
            {"at": when},
        ).scalar_one()
        connection.execute(
            sa.text(
                "INSERT INTO actions (run_id, address, action, result, started_at)"
                " VALUES (:run, 'machine/a', 'power-on', 'succeeded', :at)"
            ),
            {"run": run_id, "at": when},
        )
    engine.dispose()

    with open_store(fresh_url) as store:
        assert store.migrated and store.schema_revision() == head_revision()
        (run,) = store.history()
        assert (run.id, run.operator, [(a.address, a.action) for a in run.actions]) == (
            run_id,
            "bob",
            [("machine/a", "power-on")],
        )
        change = store.suspend(["machine/a"], "alice", "disk swap")
        assert [s.address for s in change.changed] == ["machine/a"]
        assert [r.kind for r in store.history()] == ["suspend", "apply"]
    engine = sa.create_engine(fresh_url)
    with engine.connect() as connection:
        assert compare_metadata(_comparing(connection), metadata) == []
    engine.dispose()


# Suspensions.


def test_suspend_and_resume_are_recorded_with_who_and_why(store: StateStore) -> None:
    first = store.suspend(["machine/b", "machine/a"], "alice", "PSU swap in r12")
    assert first.kind == "suspend" and first.unchanged == ()
    assert [(s.address, s.operator, s.reason, s.run_id) for s in first.changed] == [
        ("machine/a", "alice", "PSU swap in r12", first.run_id),
        ("machine/b", "alice", "PSU swap in r12", first.run_id),
    ]
    # Suspending again keeps the first who and why, and says so.
    again = store.suspend(["machine/a", "machine/c"], "bob", "other reason")
    assert [s.address for s in again.changed] == ["machine/c"]
    ((address, kept),) = again.unchanged
    assert (
        address == "machine/a"
        and kept is not None
        and (kept.operator, kept.reason) == ("alice", "PSU swap in r12")
    )
    held = store.suspensions()
    assert sorted(held) == ["machine/a", "machine/b", "machine/c"]
    assert held["machine/a"].operator == "alice" and held["machine/a"].since.tzinfo == UTC
    assert list(store.suspensions(["machine/b", "machine/x"])) == ["machine/b"]

    resumed = store.resume(["machine/a", "machine/x"], "carol", "PSU replaced")
    assert [s.address for s in resumed.changed] == ["machine/a"]
    assert resumed.unchanged == (("machine/x", None),)
    assert sorted(store.suspensions()) == ["machine/b", "machine/c"]

    # The audit trail: one run per command, an action per address, newest first.
    runs = store.history()
    assert [(r.kind, r.operator, r.reason, r.status) for r in runs] == [
        ("resume", "carol", "PSU replaced", "succeeded"),
        ("suspend", "bob", "other reason", "succeeded"),
        ("suspend", "alice", "PSU swap in r12", "succeeded"),
    ]
    assert [(a.address, a.result) for a in runs[1].actions] == [
        ("machine/a", "skipped"),
        ("machine/c", "succeeded"),
    ]
    assert "already suspended by alice" in str(runs[1].actions[0].message)
    assert [r.kind for r in store.history("machine/a")] == ["resume", "suspend", "suspend"]

    with pytest.raises(PermanentError, match="reason"):
        store.suspend(["machine/d"], "alice", "  ")
    with pytest.raises(PermanentError, match="no addresses"):
        store.resume([], "alice")
    secret = "s3cr3t-Passw0rd"
    store.forbid_values([secret])
    with pytest.raises(PermanentError) as caught:
        store.suspend(["machine/d"], "alice", f"the password {secret} leaked")
    assert secret not in str(caught.value)
    assert "machine/d" not in store.suspensions() and len(store.history()) == 3


def test_an_action_is_refused_under_a_lease_on_a_resource_suspended_meanwhile(store: StateStore) -> None:
    run_id = store.start_run("apply", "controller")
    with store.acquire_locks(["machine/a", "machine/b"], "controller", run_id, 30) as lockset:
        store.suspend(["machine/a"], "alice", "hands on the chassis")
        with pytest.raises(ResourceSuspended, match="suspended by alice") as caught:
            store.start_action(run_id, "machine/a", "power-on", None, fence=lockset.token)
        assert caught.value.hint == "fleet resume machine/a"
        store.start_action(run_id, "machine/b", "power-on", None, fence=lockset.token)
    run = store.get_run(run_id)
    assert run is not None and [a.address for a in run.actions] == ["machine/b"]


# Applied specs and observations.


def test_applied_specs_round_trip_and_are_replaced(store: StateStore) -> None:
    run_id = store.start_run("apply", "alice")
    fields = {"power": "on", "boot": {"device": "pxe", "persistent": True}, "disks": [1, 2.5, None]}
    store.set_applied("machine/a", "rev1", "sha256:aa", fields, run_id)
    store.set_applied("machine/b", "rev1", "sha256:bb", {"power": "off"}, None)

    got = store.get_applied(["machine/a", "machine/missing"])
    assert list(got) == ["machine/a"]
    a = got["machine/a"]
    assert (a.revision, a.spec_hash, a.fields, a.run_id) == ("rev1", "sha256:aa", fields, run_id)
    assert a.applied_at.tzinfo == UTC

    store.set_applied("machine/a", "rev2", "sha256:a2", {"power": "off"}, None)
    again = store.get_applied(["machine/a"])["machine/a"]
    assert (again.revision, again.spec_hash, again.fields, again.run_id) == (
        "rev2",
        "sha256:a2",
        {"power": "off"},
        None,
    )
    assert set(store.get_applied()) == {"machine/a", "machine/b"}


def test_observations_keep_the_newest_per_address(store: StateStore) -> None:
    store.save_observations(
        [
            ("machine/a", "observed", {"power": "on"}, None, T0),
            ObservationRecord("machine/b", "unknown", None, "timeout", T0),
            ("machine/c", "absent", None, None, T0),
        ]
    )
    got = store.get_observations(["machine/a", "machine/b", "machine/x"])
    assert got["machine/a"] == ObservationRecord("machine/a", "observed", {"power": "on"}, None, T0)
    assert got["machine/b"] == ObservationRecord("machine/b", "unknown", None, "timeout", T0)
    assert "machine/x" not in got

    # Newer wins; an older observation arriving late (a slow replica) does not overwrite it, and
    # within one batch the newest of two for one address is kept.
    later, earlier = T0 + timedelta(minutes=1), T0 - timedelta(minutes=1)
    store.save_observations(
        [
            ("machine/a", "observed", {"power": "off"}, None, later),
            ("machine/b", "observed", {"power": "on"}, None, earlier),
            ("machine/c", "observed", {"power": "on"}, None, later + timedelta(seconds=1)),
            ("machine/c", "observed", {"power": "off"}, None, later),
        ]
    )
    got = store.get_observations()
    assert (got["machine/a"].fields, got["machine/a"].observed_at) == ({"power": "off"}, later)
    assert got["machine/b"].state == "unknown"
    assert got["machine/c"].fields == {"power": "on"}
    with pytest.raises(PermanentError):
        store.save_observations([("machine/a", "maybe", None, None, T0)])


# Drift.


def test_drift_opens_updates_and_resolves_one_finding_per_field(store: StateStore, url: str) -> None:
    first = store.record_drift("machine/a", "power", "on", "off", T0)
    assert (first.expected, first.actual, first.first_seen, first.last_seen, first.open) == (
        "on",
        "off",
        T0,
        T0,
        True,
    )
    again = store.record_drift("machine/a", "power", "on", "off", T0 + timedelta(minutes=5))
    assert (again.id, again.first_seen, again.last_seen) == (first.id, T0, T0 + timedelta(minutes=5))
    late = store.record_drift("machine/a", "power", "on", "off", T0 + timedelta(minutes=1))  # out of order
    assert (late.id, late.last_seen) == (first.id, T0 + timedelta(minutes=5))
    boot = store.record_drift("machine/a", "boot", {"device": "disk"}, {"device": "pxe"}, T0)
    other = store.record_drift("machine/b", "power", "off", "on", T0)
    assert len({first.id, boot.id, other.id}) == 3

    assert [(f.address, f.field) for f in store.open_drift()] == [
        ("machine/a", "boot"),
        ("machine/a", "power"),
        ("machine/b", "power"),
    ]
    assert [f.id for f in store.open_drift(["machine/b"])] == [other.id]

    assert store.resolve_drift("machine/a", "power", T0 + timedelta(minutes=10))
    assert not store.resolve_drift("machine/a", "power", T0 + timedelta(minutes=11))
    assert [f.field for f in store.open_drift(["machine/a"])] == ["boot"]
    # The same drift coming back is a new finding; the resolved one stays as history.
    back = store.record_drift("machine/a", "power", "on", "off", T0 + timedelta(hours=1))
    assert back.id != first.id and back.first_seen == T0 + timedelta(hours=1)

    # The database itself refuses a second open finding for one (address, field).
    engine = sa.create_engine(url)
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
        connection.execute(
            drift_table.insert().values(address="machine/a", field="power", first_seen=T0, last_seen=T0)
        )
    engine.dispose()


# What the store refuses.


def test_the_controller_state_is_shared_through_the_store(store: StateStore) -> None:
    """Revisions, resource states and marks: what several replicas of `fleet serve` share."""
    at = datetime(2026, 1, 1, tzinfo=UTC)
    store.set_revision(
        "attempted", RevisionState("r1", "c1", at, False, 2, ("a.yaml:1: bad", "b.yaml:2: bad"))
    )
    store.set_revision("applied", RevisionState("r0", None, at, True))
    store.set_revision("attempted", RevisionState("r2", "c2", at, True))
    found = store.revisions()
    assert found["attempted"] == RevisionState("r2", "c2", at, True, 0, ())
    assert found["applied"].revision == "r0"
    with pytest.raises(PermanentError):
        store.set_revision("newest", RevisionState("r3", None, at, True))

    store.keep_resource_states({"machine/a": "Machine", "machine/b": "Machine", "cluster/c": "Cluster"})
    failing = ResourceState("machine/b", "Machine", "failing", "BMC refused", at, 2, "refused", at)
    store.save_resource_states([failing, ResourceState("cluster/c", "Cluster", "in sync", "", at)])
    counts, first = store.resource_summary()
    assert counts == {"Machine": {"unknown": 1, "failing": 1}, "Cluster": {"in sync": 1}}
    assert first == [failing]
    assert store.resource_states(["machine/b"]) == {"machine/b": failing}
    store.keep_resource_states({"machine/b": "Machine"})  # a and c left the revision
    assert list(store.resource_states()) == ["machine/b"]
    assert store.resource_states()["machine/b"] == failing  # kept as it was

    assert store.mark_if_due("poll", 60)
    assert not store.mark_if_due("poll", 60)  # not due yet: nothing changed
    assert store.mark_if_due("poll", 0)
    assert store.mark_if_due("pass", 60)

    later = datetime(2026, 1, 2, tzinfo=UTC)
    store.note_differences([("machine/a", "power"), ("machine/b", "power")], ["machine/a", "machine/b"], at)
    store.note_differences([("machine/a", "power")], ["machine/a", "machine/b"], later)
    assert store.differences_since() == {("machine/a", "power"): at}  # kept since first seen; b is gone

    assert store.record_delivery("github", "d-1")
    assert not store.record_delivery("github", "d-1")  # a redelivery, to any replica
    assert store.record_delivery("gitlab", "d-1")
    store.forget_delivery("github", "d-1")
    assert store.record_delivery("github", "d-1")


def test_the_store_takes_plain_json_aware_times_and_no_secrets(store: StateStore) -> None:
    run_id = store.start_run("apply", "alice")
    with pytest.raises(PermanentError):
        store.record_drift("machine/a", "power", "on", "off", datetime(2025, 1, 1))  # naive
    with pytest.raises(PermanentError, match="plain JSON"):
        store.start_action(run_id, "machine/a", "power-on", {"when": T0})
    with pytest.raises(PermanentError, match="non-finite"):
        store.set_applied("machine/a", "r", "h", {"load": float("nan")}, None)

    secret = "s3cr3t-Passw0rd"
    store.forbid_values([secret, "", "on"])  # too short to be looked for: it would refuse "power: on"
    for attempt in (
        lambda: store.start_action(run_id, "machine/a", "power-on", {"bmc": {"auth": f"admin:{secret}"}}),
        lambda: store.set_applied("machine/a", "r", "h", {"list": ["x", secret]}, None),
        lambda: store.finish_run(run_id, "failed", {"error": f"login {secret} refused"}),
        lambda: store.start_run("apply", "alice", reason=f"password is {secret}"),
        lambda: store.save_observations([("machine/a", "unknown", None, f"auth {secret}", T0)]),
    ):
        with pytest.raises(PermanentError) as caught:
            attempt()
        assert secret not in str(caught.value)
    store.finish_run(run_id, "succeeded", {"power": "on"})  # nothing was half-written meanwhile
    run = store.get_run(run_id)
    assert run is not None and run.actions == () and store.get_applied() == {}


# Locks and leases.


def test_a_lock_set_is_taken_whole_or_not_at_all(store: StateStore) -> None:
    run_a = store.start_run("apply", "alice")
    held = store.acquire_locks(["machine/b"], "alice@host1", run_a, 60)
    with pytest.raises(LockHeld) as caught:
        store.acquire_locks(["machine/c", "machine/b", "machine/a"], "bob@host2", None, 60)
    error = caught.value
    assert isinstance(error, TemporaryError)
    assert [(h.address, h.owner, h.run_id) for h in error.holders] == [("machine/b", "alice@host1", run_a)]
    assert "machine/b held by alice@host1" in str(error) and f"run {run_a}" in str(error)
    assert 50 < error.delay <= 60
    # Nothing of bob's set was left behind; alice's lease is intact.
    assert [(h.address, h.owner) for h in store.held_locks()] == [("machine/b", "alice@host1")]
    # The same owner does not get it twice either: a lease is exclusive until released or expired.
    with pytest.raises(LockHeld):
        store.acquire_locks(["machine/b"], "alice@host1", run_a, 60)
    held.release()
    with store.acquire_locks(
        ["machine/c", "machine/b", "machine/a", "machine/a"], "bob@host2", None, 60
    ) as bobs:
        assert bobs.addresses == ("machine/a", "machine/b", "machine/c") and bobs.broken == ()
        assert [h.owner for h in store.held_locks(["machine/a", "machine/b"])] == ["bob@host2"] * 2
    assert store.held_locks() == []


def test_waiting_for_a_lock_counts_down_then_takes_it_or_gives_up(store: StateStore) -> None:
    holder = store.acquire_locks(["machine/a"], "alice", None, 60)
    calls: list[tuple[float, list[LockHolder]]] = []

    def on_wait(left: float, holders: Any) -> None:
        calls.append((left, list(holders)))

    started = time.monotonic()
    with pytest.raises(LockHeld):
        store.acquire_locks(["machine/a", "machine/b"], "bob", None, 60, wait_seconds=0.4, on_wait=on_wait)
    assert time.monotonic() - started >= 0.4  # it waited as long as asked before giving up
    assert len(calls) >= 2
    lefts = [left for left, _ in calls]
    assert lefts == sorted(lefts, reverse=True) and lefts[0] <= 0.4
    assert all([h.owner for h in holders] == ["alice"] for _, holders in calls)

    calls.clear()
    threading.Timer(0.3, holder.release).start()
    with store.acquire_locks(["machine/a", "machine/b"], "bob", None, 60, wait_seconds=10, on_wait=on_wait):
        assert calls and all(left > 9 for left, _ in calls)
        assert {h.owner for h in store.held_locks()} == {"bob"}


def test_an_expired_lease_goes_to_the_next_owner_and_the_old_one_cannot_touch_it(store: StateStore) -> None:
    old = store.acquire_locks(["machine/a", "machine/b"], "alice", None, 0.3)
    with pytest.raises(LockHeld):
        store.acquire_locks(["machine/a"], "bob", None, 60)
    time.sleep(0.4)
    assert store.held_locks() == []
    new = store.acquire_locks(["machine/a"], "bob", None, 60)
    assert new.broken == ()  # taking an expired lease breaks nothing

    with pytest.raises(LockLost) as caught:
        old.renew(60)
    assert caught.value.addresses == ("machine/a",)
    old.release()  # deletes its own (expired) row of machine/b only
    assert [(h.address, h.owner) for h in store.held_locks()] == [("machine/a", "bob")]
    new.release()


def test_renew_extends_every_lease(store: StateStore) -> None:
    lockset = store.acquire_locks(["machine/a", "machine/b"], "alice", None, 0.5)
    first_expiry = lockset.expires_at
    lockset.renew(60)
    assert lockset.expires_at > first_expiry + timedelta(seconds=50)
    time.sleep(0.6)
    assert [h.expires_at for h in store.held_locks()] == [lockset.expires_at] * 2
    lockset.release()
    lockset.release()  # idempotent
    with pytest.raises(PermanentError):
        lockset.renew(60)


def test_breaking_a_lock_takes_it_and_reports_whom_it_broke(store: StateStore) -> None:
    run_a = store.start_run("apply", "alice")
    run_b = store.start_run("reconcile", "bob", reason="BMC wedged, alice's run is gone", emergency=True)
    alices = store.acquire_locks(["machine/a", "machine/b"], "alice", run_a, 600)
    bobs = store.acquire_locks(
        ["machine/a", "machine/b", "machine/c"], "bob", run_b, 60, break_lock=True, wait_seconds=0
    )
    assert [(h.address, h.owner, h.run_id) for h in bobs.broken] == [
        ("machine/a", "alice", run_a),
        ("machine/b", "alice", run_a),
    ]
    assert all(h.expires_at == alices.expires_at for h in bobs.broken)
    run = store.get_run(run_b)
    assert run is not None and run.broke_lock  # the audit mark came with the takeover
    other = store.get_run(run_a)
    assert other is not None and not other.broke_lock

    with pytest.raises(LockLost):
        alices.renew(600)
    alices.release()  # her rows are bob's now: nothing of his is deleted
    assert {(h.address, h.owner) for h in store.held_locks()} == {
        (a, "bob") for a in ("machine/a", "machine/b", "machine/c")
    }
    bobs.release()
    store.mark_broke_lock(run_a)
    marked = store.get_run(run_a)
    assert marked is not None and marked.broke_lock


def test_release_deletes_only_the_rows_of_its_own_lock_set(store: StateStore) -> None:
    alices = store.acquire_locks(["machine/a"], "alice", None, 60)
    bobs = store.acquire_locks(["machine/b"], "bob", None, 60)
    with store.acquire_locks(["machine/c"], "alice", None, 60):
        pass
    alices.release()
    assert [(h.address, h.owner) for h in store.held_locks()] == [("machine/b", "bob")]
    bobs.release()
    assert store.held_locks() == []


def test_two_processes_never_hold_one_address_at_once(url: str, tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    processes = [
        _spawn(race_for_locks, url, owner, 250, str(tmp_path), barrier, results) for owner in ("p1", "p2")
    ]
    outcomes = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(30)
    assert all(o[0] == "ok" for o in outcomes), outcomes
    assert sum(o[5] for o in outcomes) == 0, f"two holders of one address at once: {outcomes}"
    # The race was real: both took sets, both were refused or made to wait.
    assert all(o[2] > 0 for o in outcomes), outcomes
    assert sum(o[3] + o[4] for o in outcomes) > 0, outcomes
    with open_store(url) as store:
        assert store.held_locks() == []
