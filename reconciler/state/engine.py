"""How fleet talks to the state store: its URL, engines and error mapping.

SQLite is the default (a file under the state directory the settings name, WAL mode, a busy timeout and
`BEGIN IMMEDIATE` for every writing transaction so concurrent writers queue instead of failing);
any `postgresql+psycopg://` URL serves replicas in HA. Database driver exceptions must never
leave this package: `database_error` turns them into fleet's Temporary/PermanentError.
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite

from reconciler.errors import FleetError, StoreFailure, StoreUnavailable, UsageError

# Execution option that marks a writing transaction (SQLite starts it with BEGIN IMMEDIATE).
WRITE = "fleet_write"
SQLITE_BUSY_TIMEOUT_SECONDS = 30.0
# Connections kept open to an SQLite file: one for each thread of the API's request pool (40, as
# anyio starts it) and the controller's own. SQLAlchemy's default (5, and 10 more opened and
# closed again) had pages read under load open a connection, with its pragmas, each time.
SQLITE_POOL_SIZE = 48
# Rows or IN-list items per statement: well under SQLite's and PostgreSQL's bound-parameter limits.
CHUNK = 500
PG_CONNECT_TIMEOUT_SECONDS = 10


def resolve_url(url: str) -> sa.URL:
    """Parse a store URL; a bare path means a SQLite file, `postgresql://` means psycopg 3."""
    if not url.strip():
        raise UsageError("the state store URL is empty", hint="use sqlite:///PATH or postgresql://...")
    if "://" not in url:
        url = f"sqlite:///{Path(url).expanduser().absolute()}"
    try:
        parsed = sa.make_url(url)
    except sa_exc.ArgumentError as exc:
        # Not repeated in the message: it may hold a password.
        raise UsageError("not a state store URL", hint="use sqlite:///PATH or postgresql://...") from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+pysqlite")
    if parsed.drivername not in ("sqlite+pysqlite", "postgresql+psycopg"):
        raise UsageError(
            f"unsupported state store {parsed.drivername!r}",
            hint="use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB",
        )
    if parsed.drivername == "sqlite+pysqlite" and parsed.database in (None, "", ":memory:"):
        # Every pooled connection would see its own empty in-memory database.
        raise UsageError("the state store needs a SQLite file, not an in-memory database")
    return parsed


def display_url(url: sa.URL) -> str:
    return url.render_as_string(hide_password=True)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event (below) emit BEGIN; pysqlite's own implicit transactions
    # start late (at the first write) and never with IMMEDIATE.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_SECONDS * 1000)}")
        _enable_wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _sqlite_on_connect_read_only(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_SECONDS * 1000)}")
    finally:
        cursor.close()


def _enable_wal(cursor: Any) -> None:
    # Switching a fresh file to WAL while another process opens it too fails with "database is
    # locked" at once, without consulting the busy timeout; WAL is persistent, so only the first
    # opener of a file ever gets here for real, and retrying briefly is enough.
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_SECONDS
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL").fetchall()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.005, 0.02))


def _sqlite_on_begin(connection: sa.Connection) -> None:
    # A deferred transaction that reads and then writes fails at once with SQLITE_BUSY when another
    # process committed in between (no busy wait helps); taking the write lock up front avoids it.
    immediate = connection.get_execution_options().get(WRITE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def create_engine(url: sa.URL, *, read_only: bool = False) -> sa.Engine:
    if url.drivername.startswith("sqlite") and read_only:
        # A file opened with mode=ro: no WAL switch, no directory to create, no writes.
        engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
        event.listen(engine, "connect", _sqlite_on_connect_read_only)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    if url.drivername.startswith("sqlite"):
        assert url.database is not None
        directory = Path(url.database).parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreFailure(f"cannot create the state directory {directory}: {exc.strerror}") from exc
        engine = sa.create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
            pool_size=SQLITE_POOL_SIZE,
            max_overflow=SQLITE_POOL_SIZE // 4,
        )
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_SECONDS
    if "application_name" not in url.query:
        connect_args["application_name"] = "fleet"
    return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def is_retryable(exc: sa_exc.DBAPIError) -> bool:
    """Deadlock, serialization failure, lock timeout or a lost connection: worth another try."""
    if exc.connection_invalidated:
        return True
    code = getattr(exc.orig, "sqlstate", None)
    if isinstance(code, str):  # PostgreSQL: classes 08 connection, 40 rollback, 55/57 lock or shutdown
        return code[:2] in ("08", "40", "55", "57")
    if isinstance(exc.orig, sqlite3.OperationalError):  # SQLite says little else than its message
        message = str(exc.orig).lower()
        return "locked" in message or "busy" in message
    return isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError)


def database_error(exc: sa_exc.SQLAlchemyError, url: sa.URL) -> FleetError:
    # The driver's message, first line only: SQLAlchemy's own str() appends the SQL and its
    # parameters, which have no place in a person's error message.
    orig = getattr(exc, "orig", None) or exc
    detail = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    where = display_url(url)
    if isinstance(exc, sa_exc.DBAPIError) and is_retryable(exc):
        return StoreUnavailable(
            f"state store {where} unavailable: {detail}", delay=1.0, hint=_what_to_do(url, detail)
        )
    return StoreFailure(f"state store {where}: {detail}", hint=_what_to_do(url, detail))


def _what_to_do(url: sa.URL, detail: str) -> str:
    """What a person can do about a store error, by what it is."""
    lowered = detail.lower()
    if url.drivername.startswith("sqlite"):
        if "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
            return (
                f"{url.database} is damaged or not a SQLite file: restore it from your backup, or move it"
                " aside to start a new, empty store (fleet then has no record of what it applied)"
            )
        if "readonly" in lowered or "read-only" in lowered or "permission" in lowered:
            return f"fleet cannot write {url.database}: check its permissions and those of its directory"
        if "locked" in lowered or "busy" in lowered:
            return "another fleet holds the store; wait for it, or run again"
        return f"check {url.database}, or point --state or FLEET_STATE at another store"
    host, port = url.host or "localhost", url.port or 5432
    if "password" in lowered or "authentication" in lowered:
        return f"check the user and password of the store URL for {host}:{port}"
    if "does not exist" in lowered:
        return f"create the database on {host}:{port}, or fix the store URL"
    return (
        f"check that PostgreSQL on {host}:{port} runs and accepts connections"
        f" (`pg_isready -h {host} -p {port}`)"
    )


def is_conflict(exc: BaseException | None) -> bool:
    """A deadlock or serialization failure: the transaction lost a race and may simply run again."""
    if not isinstance(exc, sa_exc.DBAPIError):
        return False
    return getattr(exc.orig, "sqlstate", None) in ("40P01", "40001")


def chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


class Database:
    """One engine plus the two habits every query needs: error mapping and the database's clock."""

    def __init__(self, url: sa.URL, *, read_only: bool = False) -> None:
        self.url = url
        self.engine = create_engine(url, read_only=read_only)
        self.dialect = self.engine.dialect.name
        self._writer = self.engine.execution_options(**{WRITE: True})
        self._reading = threading.local()  # the read transaction `reading` holds open, per thread

    @contextlib.contextmanager
    def transaction(self, *, write: bool) -> Iterator[sa.Connection]:
        """One transaction, committed when the block ends; driver errors become fleet errors.
        A read inside `reading` is part of the transaction that block holds."""
        shared: sa.Connection | None = None if write else getattr(self._reading, "connection", None)
        if shared is not None:
            try:
                yield shared
            except sa_exc.SQLAlchemyError as exc:
                raise database_error(exc, self.url) from exc
            return
        try:
            with (self._writer if write else self.engine).begin() as connection:
                yield connection
        except sa_exc.SQLAlchemyError as exc:
            raise database_error(exc, self.url) from exc

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Every read of this thread inside the block is one transaction: one connection, one
        BEGIN, and on PostgreSQL one snapshot, for an answer made of several reads."""
        if getattr(self._reading, "connection", None) is not None:
            yield
            return
        with self.transaction(write=False) as connection:
            self._reading.connection = connection
            try:
                yield
            finally:
                self._reading.connection = None

    def insert(self, table: sa.Table) -> Any:
        """An INSERT that can `on_conflict_do_update`: both dialects spell upserts the same way."""
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    def now(self, connection: sa.Connection) -> datetime:
        # Leases are judged by one clock: the database server's, shared by every replica, so a
        # replica with a skewed clock can neither steal a live lease nor keep a dead one alive.
        if self.dialect == "postgresql":
            value: datetime = connection.execute(sa.select(sa.func.clock_timestamp())).scalar_one()
            return value.astimezone(UTC)
        return datetime.now(UTC)

    def close(self) -> None:
        self.engine.dispose()
