"""The tables of the state store, described once with SQLAlchemy Core for both SQLite and PostgreSQL.

This is the current shape the code reads and writes; migrations under `migrations/` are the
history that produces it, and a test checks that the two agree. It must never hold a secret or
a live SQLAlchemy object outside this package: callers get plain dataclasses from the store.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

RUN_KINDS = ("plan", "apply", "reconcile", "drift", "suspend", "resume")
RUN_STATUSES = ("running", "succeeded", "failed", "interrupted")
ACTION_RESULTS = ("pending", "succeeded", "failed", "skipped", "interrupted")
OBSERVATION_STATES = ("observed", "absent", "unknown")
REVISION_NAMES = ("applied", "attempted")
# On PostgreSQL the store also holds procrastinate's job queue (its own tables, types and
# functions, named with this prefix): shared by the controller's replicas, not described here.
JOB_QUEUE_PREFIX = "procrastinate_"


def described_here(name: str | None, type_: str, parents: object) -> bool:
    """For alembic's comparisons (`include_name`): the objects this module describes."""
    return not (name or "").startswith(JOB_QUEUE_PREFIX)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on both backends.

    SQLite has no timezone type, so values are stored as naive UTC text (which sorts and compares
    correctly) and given back their UTC tzinfo when read; PostgreSQL stores timestamptz.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("the state store takes timezone-aware timestamps only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def json_type() -> sa.types.TypeEngine[Any]:
    # JSONB on PostgreSQL (indexable, compact); JSON text on SQLite. None is SQL NULL, not 'null'.
    return sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def id_type() -> sa.types.TypeEngine[int]:
    # BIGSERIAL on PostgreSQL; on SQLite only INTEGER PRIMARY KEY is the fast rowid alias.
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


# Named constraints, so that later migrations (SQLite batch mode included) can find them by name.
metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", id_type(), primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("operator", sa.String(255), nullable=False),
    sa.Column("reason", sa.Text()),
    sa.Column("incident", sa.String(255)),
    sa.Column("revision", sa.String(255)),
    sa.Column("emergency", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("broke_lock", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime()),
    sa.Column("summary", json_type()),
    sa.Column("replica", sa.String(255)),  # the `fleet serve` replica (host:pid) that ran it
    sa.CheckConstraint(_one_of("kind", RUN_KINDS), name="kind"),
    sa.CheckConstraint(_one_of("status", RUN_STATUSES), name="status"),
    sa.Index(None, "started_at"),
)

actions = sa.Table(
    "actions",
    metadata,
    sa.Column("id", id_type(), primary_key=True, autoincrement=True),
    sa.Column("run_id", id_type(), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("address", sa.String(512), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("before", json_type()),
    sa.Column("after", json_type()),
    sa.Column("result", sa.String(16), nullable=False),
    sa.Column("message", sa.Text()),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime()),
    sa.CheckConstraint(_one_of("result", ACTION_RESULTS), name="result"),
    sa.Index(None, "run_id"),
    sa.Index(None, "address"),
)

applied = sa.Table(
    "applied",
    metadata,
    sa.Column("address", sa.String(512), primary_key=True),
    sa.Column("revision", sa.String(255), nullable=False),
    sa.Column("spec_hash", sa.String(128), nullable=False),
    sa.Column("fields", json_type(), nullable=False),
    sa.Column("applied_at", UTCDateTime(), nullable=False),
    sa.Column("run_id", id_type(), sa.ForeignKey("runs.id", ondelete="SET NULL")),
)

observations = sa.Table(
    "observations",
    metadata,
    sa.Column("address", sa.String(512), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("fields", json_type()),
    sa.Column("reason", sa.Text()),
    sa.Column("observed_at", UTCDateTime(), nullable=False),
    sa.CheckConstraint(_one_of("state", OBSERVATION_STATES), name="state"),
)

drift = sa.Table(
    "drift",
    metadata,
    sa.Column("id", id_type(), primary_key=True, autoincrement=True),
    sa.Column("address", sa.String(512), nullable=False),
    sa.Column("field", sa.String(512), nullable=False),
    sa.Column("expected", json_type()),
    sa.Column("actual", json_type()),
    sa.Column("first_seen", UTCDateTime(), nullable=False),
    sa.Column("last_seen", UTCDateTime(), nullable=False),
    sa.Column("resolved_at", UTCDateTime()),
    # At most one open finding per (address, field); resolved ones are history and may repeat.
    sa.Index(
        "uq_drift_open",
        "address",
        "field",
        unique=True,
        sqlite_where=sa.text("resolved_at IS NULL"),
        postgresql_where=sa.text("resolved_at IS NULL"),
    ),
    sa.Index(None, "address"),
)

locks = sa.Table(
    "locks",
    metadata,
    sa.Column("address", sa.String(512), primary_key=True),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("run_id", id_type()),
    # A random id per acquisition: renew and release touch only rows still carrying it, so a
    # lease that expired and was taken by someone else (even the same owner) is never disturbed.
    sa.Column("token", sa.String(32), nullable=False),
    sa.Column("acquired_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Index(None, "token"),
)

pr_comments = sa.Table(
    "pr_comments",
    metadata,
    sa.Column("repo", sa.String(512), primary_key=True),
    sa.Column("pr_number", sa.Integer(), primary_key=True),
    sa.Column("comment_id", sa.String(64), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

# A resource fleet must not act on: still observed, planned and checked for drift, never changed.
# One row per suspended address; `run_id` is the audit record (a run of kind "suspend") that made it.
suspensions = sa.Table(
    "suspensions",
    metadata,
    sa.Column("address", sa.String(512), primary_key=True),
    sa.Column("operator", sa.String(255), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("since", UTCDateTime(), nullable=False),
    sa.Column("run_id", id_type(), sa.ForeignKey("runs.id", ondelete="SET NULL")),
)

# The controller's revisions, shared by its replicas: the one in force ("applied") and the newest
# one it took through the gate ("attempted", valid or refused with its diagnostics).
controller_revisions = sa.Table(
    "controller_revisions",
    metadata,
    sa.Column("name", sa.String(16), primary_key=True),
    sa.Column("revision", sa.String(255), nullable=False),
    sa.Column("commit", sa.String(64)),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("valid", sa.Boolean(), nullable=False),
    sa.Column("error_count", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("errors", json_type()),
    sa.CheckConstraint(_one_of("name", REVISION_NAMES), name="name"),
)

# What the controller last made of each resource, and its back-off while it keeps failing.
resource_states = sa.Table(
    "resource_states",
    metadata,
    sa.Column("address", sa.String(512), primary_key=True),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text(), nullable=False, server_default=""),
    sa.Column("since", UTCDateTime()),
    sa.Column("failures", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text(), nullable=False, server_default=""),
    sa.Column("next_try", UTCDateTime()),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Index(None, "kind", "state"),
    sa.Index(None, "updated_at"),
)

# When shared work last happened ("poll": the repo was read; "pass": a drift pass was planned).
controller_marks = sa.Table(
    "controller_marks",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("at", UTCDateTime(), nullable=False),
)

# Push deliveries already handed on (forge, the delivery's id), kept a week.
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("forge", sa.String(16), primary_key=True),
    sa.Column("delivery_id", sa.String(200), primary_key=True),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.Index(None, "received_at"),
)

# Observe-only fields that differ from their spec (not drift: fleet never applied them), and since
# when: a drift report waits out its grace period for them too.
observed_differences = sa.Table(
    "observed_differences",
    metadata,
    sa.Column("address", sa.String(512), primary_key=True),
    sa.Column("field", sa.String(512), primary_key=True),
    sa.Column("first_seen", UTCDateTime(), nullable=False),
)

# Web UI sessions ended before they expire (signed out), by a digest of the session's id: every
# replica refuses them until they would have expired anyway, then the row is dropped.
ended_sessions = sa.Table(
    "ended_sessions",
    metadata,
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Index(None, "expires_at"),
)
