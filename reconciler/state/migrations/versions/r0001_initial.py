"""The first schema of the state store: runs, actions, applied, observations, drift, locks, pr_comments.

Revision ID: 0001
Revises:
Create Date: 2025-11-25
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


# Frozen copies of the column types of this revision (schema.py may move on; this file must not).
def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def _id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", _id(), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("operator", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("incident", sa.String(255)),
        sa.Column("revision", sa.String(255)),
        sa.Column("emergency", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("broke_lock", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", _ts(), nullable=False),
        sa.Column("finished_at", _ts()),
        sa.Column("summary", _json()),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
        sa.CheckConstraint("kind IN ('plan', 'apply', 'reconcile', 'drift')", name=op.f("ck_runs_kind")),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'failed', 'interrupted')", name=op.f("ck_runs_status")
        ),
    )
    op.create_index(op.f("ix_runs_started_at"), "runs", ["started_at"])

    op.create_table(
        "actions",
        sa.Column("id", _id(), primary_key=True, autoincrement=True),
        sa.Column("run_id", _id(), nullable=False),
        sa.Column("address", sa.String(512), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("before", _json()),
        sa.Column("after", _json()),
        sa.Column("result", sa.String(16), nullable=False),
        sa.Column("message", sa.Text()),
        sa.Column("started_at", _ts(), nullable=False),
        sa.Column("finished_at", _ts()),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_actions")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_actions_run_id_runs"), ondelete="CASCADE"
        ),
        sa.CheckConstraint(
            "result IN ('pending', 'succeeded', 'failed', 'skipped', 'interrupted')",
            name=op.f("ck_actions_result"),
        ),
    )
    op.create_index(op.f("ix_actions_run_id"), "actions", ["run_id"])
    op.create_index(op.f("ix_actions_address"), "actions", ["address"])

    op.create_table(
        "applied",
        sa.Column("address", sa.String(512), nullable=False),
        sa.Column("revision", sa.String(255), nullable=False),
        sa.Column("spec_hash", sa.String(128), nullable=False),
        sa.Column("fields", _json(), nullable=False),
        sa.Column("applied_at", _ts(), nullable=False),
        sa.Column("run_id", _id()),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_applied")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_applied_run_id_runs"), ondelete="SET NULL"
        ),
    )

    op.create_table(
        "observations",
        sa.Column("address", sa.String(512), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("fields", _json()),
        sa.Column("reason", sa.Text()),
        sa.Column("observed_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_observations")),
        sa.CheckConstraint("state IN ('observed', 'absent', 'unknown')", name=op.f("ck_observations_state")),
    )

    op.create_table(
        "drift",
        sa.Column("id", _id(), primary_key=True, autoincrement=True),
        sa.Column("address", sa.String(512), nullable=False),
        sa.Column("field", sa.String(512), nullable=False),
        sa.Column("expected", _json()),
        sa.Column("actual", _json()),
        sa.Column("first_seen", _ts(), nullable=False),
        sa.Column("last_seen", _ts(), nullable=False),
        sa.Column("resolved_at", _ts()),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_drift")),
    )
    op.create_index(
        op.f("uq_drift_open"),
        "drift",
        ["address", "field"],
        unique=True,
        sqlite_where=sa.text("resolved_at IS NULL"),
        postgresql_where=sa.text("resolved_at IS NULL"),
    )
    op.create_index(op.f("ix_drift_address"), "drift", ["address"])

    op.create_table(
        "locks",
        sa.Column("address", sa.String(512), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("run_id", _id()),
        sa.Column("token", sa.String(32), nullable=False),
        sa.Column("acquired_at", _ts(), nullable=False),
        sa.Column("expires_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_locks")),
    )
    op.create_index(op.f("ix_locks_token"), "locks", ["token"])

    op.create_table(
        "pr_comments",
        sa.Column("repo", sa.String(512), nullable=False),
        sa.Column("pr_number", sa.Integer(), nullable=False),
        sa.Column("comment_id", sa.String(64), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("repo", "pr_number", name=op.f("pk_pr_comments")),
    )


def downgrade() -> None:
    for table in ("pr_comments", "locks", "drift", "observations", "applied", "actions", "runs"):
        op.drop_table(table)
