"""Brings a state store's schema to the newest alembic revision, from code, on SQLite and PostgreSQL.

The alembic configuration is built here (no alembic.ini at runtime) and points at the
`migrations` package. Migrations must never run twice at once: they run inside one writing
transaction that holds a PostgreSQL advisory lock or SQLite's write lock (BEGIN IMMEDIATE), so a
second process opening a fresh store waits and then finds the schema already at head.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from reconciler.errors import StoreFailure
from reconciler.state.engine import WRITE, display_url

MIGRATIONS = Path(__file__).resolve().with_name("migrations")
# pg_advisory_xact_lock key: any constant shared by every fleet process ("fleet" in ASCII).
_PG_MIGRATION_LOCK = 0x666C656574


def alembic_config(url: str | sa.URL | None = None, connection: sa.Connection | None = None) -> Config:
    """An alembic Config for the state store, for `open_store` and for developers' alembic commands."""
    config = Config()
    # ConfigParser interpolates '%', which may occur in a path or a URL-encoded password.
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    if url is not None:
        rendered = url.render_as_string(hide_password=False) if isinstance(url, sa.URL) else url
        config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the migrations package has no revisions"
    return head


@functools.cache
def _known_revisions() -> frozenset[str]:
    return frozenset(s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions())


def current_revision(connection: sa.Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade_to_head(engine: sa.Engine, *, read_only: bool = False) -> bool:
    """Migrate to head if needed; True when this call changed the schema. A database that holds
    tables but no fleet schema is refused rather than extended; so is a read-only one that
    would need migrating."""
    with engine.connect() as connection:
        current = current_revision(connection)
        foreign = sorted(sa.inspect(connection).get_table_names()) if current is None else []
    if current == head_revision():
        return False
    _refuse_unknown(current, engine)
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise StoreFailure(
            f"state store {display_url(engine.url)} holds tables that are not fleet's ({shown});"
            " fleet does not add its own to them",
            hint="point --state or FLEET_STATE at a store of fleet's own (a new file or database)",
        )
    if read_only:
        raise StoreFailure(
            f"state store {display_url(engine.url)} is read-only and has an older schema",
            hint="open it once writable with this fleet version (it migrates the schema), then read it",
        )
    with (
        engine.execution_options(**{WRITE: True}).connect() as connection,
        _foreign_key_actions_off(connection),
        connection.begin(),
    ):
        if engine.dialect.name == "postgresql":
            # Held until this transaction ends; a second migrator waits here, then sees head.
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_MIGRATION_LOCK)))
        current = current_revision(connection)
        if current == head_revision():
            return False
        _refuse_unknown(current, engine)
        try:
            command.upgrade(alembic_config(connection=connection), "head")
        except CommandError as exc:
            raise StoreFailure(f"state store {display_url(engine.url)}: migration failed: {exc}") from exc
        _check_foreign_keys(connection, engine)
    return True


@contextlib.contextmanager
def _foreign_key_actions_off(connection: sa.Connection) -> Iterator[None]:
    """SQLite rebuilds a table to alter it (batch mode: copy, drop, rename); with foreign keys
    enforced, dropping the old `runs` would cascade into `actions`. SQLite's own procedure for
    such changes turns enforcement off around the transaction (it cannot be changed inside one)
    and checks the keys before committing; fleet's connections have it on again afterwards."""
    if connection.dialect.name != "sqlite":
        yield
        return
    raw = connection.connection.driver_connection
    assert raw is not None
    raw.execute("PRAGMA foreign_keys = OFF")
    try:
        yield
    finally:
        raw.execute("PRAGMA foreign_keys = ON")


def _check_foreign_keys(connection: sa.Connection, engine: sa.Engine) -> None:
    if connection.dialect.name != "sqlite":
        return
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise StoreFailure(
            f"state store {display_url(engine.url)}: migration failed: {len(broken)} rows lost their"
            " foreign keys; nothing was changed"
        )


def _refuse_unknown(current: str | None, engine: sa.Engine) -> None:
    if current is not None and current not in _known_revisions():
        raise StoreFailure(
            f"state store {display_url(engine.url)} has schema revision {current!r},"
            " newer than this fleet knows",
            hint="upgrade fleet; never point an older fleet at a newer store",
        )
