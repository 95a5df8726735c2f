"""Suspensions: the resources fleet observes but must not act on, and the runs that record them.

Adds the `suspensions` table and the run kinds `suspend` and `resume` (the audit trail of who
suspended or resumed what, and why). SQLite cannot alter a CHECK constraint, so `runs` is rebuilt
in batch mode; `reconciler.state.migrate` turns SQLite's foreign-key actions off meanwhile, so the
rebuild never cascades into the actions of the old table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-01-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_KINDS = "kind IN ('plan', 'apply', 'reconcile', 'drift', 'suspend', 'resume')"
_OLD_KINDS = "kind IN ('plan', 'apply', 'reconcile', 'drift')"


# Frozen copies of the column types of this revision (schema.py may move on; this file must not).
def _id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _runs_kind(check: str) -> None:
    with op.batch_alter_table("runs", recreate="auto") as batch:
        batch.drop_constraint(op.f("ck_runs_kind"), type_="check")
        batch.create_check_constraint(op.f("ck_runs_kind"), sa.text(check))


def upgrade() -> None:
    _runs_kind(_KINDS)
    op.create_table(
        "suspensions",
        sa.Column("address", sa.String(512), nullable=False),
        sa.Column("operator", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("since", _ts(), nullable=False),
        sa.Column("run_id", _id()),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_suspensions")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_suspensions_run_id_runs"), ondelete="SET NULL"
        ),
    )


def downgrade() -> None:
    op.drop_table("suspensions")
    op.execute(sa.text("DELETE FROM runs WHERE kind IN ('suspend', 'resume')"))
    _runs_kind(_OLD_KINDS)
