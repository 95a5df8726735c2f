"""The controller's shared state, and procrastinate's job queue on PostgreSQL.

- `runs.replica`: which `fleet serve` replica (host:pid) ran a run, for the audit of work shared
  by several replicas.
- `controller_revisions`: the revision last applied (in force) and last attempted (valid or
  refused, with its diagnostics), shared by every replica.
- `resource_states`: what the controller last made of each resource (in sync, drifted, unknown,
  suspended, failing, waiting) and its back-off when it keeps failing, shared by every replica.
- `controller_marks`: when shared work last happened (the last poll of the repo, the last drift
  pass), so that whichever replica runs the next tick knows whether it is due.
- `webhook_deliveries`: the push deliveries already handed on, so that a forge's redelivery (to
  any replica) is acknowledged once and not processed twice.
- `observed_differences`: observe-only fields that differ from their spec, and since when (for
  drift reports; not drift, which is measured against what fleet applied).
- On PostgreSQL, procrastinate's own schema (its `schema.sql`, read from the installed package):
  one `alembic upgrade`, run at start-up under the migration lock, sets up everything, so replicas
  never race to create the queue. procrastinate's version is pinned; moving to a version with a
  new schema means a new revision here that applies procrastinate's migration files.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

from importlib import resources

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


# Frozen copies of the column types of this revision (schema.py may move on; this file must not).
def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _json() -> sa.types.TypeEngine[object]:
    from sqlalchemy.dialects import postgresql

    return sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def _procrastinate_schema() -> str:
    # The schema as SQL text shipped with the package (data, not code: nothing is imported here).
    return resources.files("procrastinate").joinpath("sql", "schema.sql").read_text()


def upgrade() -> None:
    op.add_column("runs", sa.Column("replica", sa.String(255)))
    op.create_table(
        "controller_revisions",
        sa.Column("name", sa.String(16), nullable=False),
        sa.Column("revision", sa.String(255), nullable=False),
        sa.Column("commit", sa.String(64)),
        sa.Column("at", _ts(), nullable=False),
        sa.Column("valid", sa.Boolean(), nullable=False),
        sa.Column("error_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("errors", _json()),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_controller_revisions")),
        sa.CheckConstraint("name IN ('applied', 'attempted')", name=op.f("ck_controller_revisions_name")),
    )
    op.create_table(
        "resource_states",
        sa.Column("address", sa.String(512), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False, server_default=""),
        sa.Column("since", _ts()),
        sa.Column("failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text(), nullable=False, server_default=""),
        sa.Column("next_try", _ts()),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_resource_states")),
    )
    op.create_index(op.f("ix_resource_states_kind_state"), "resource_states", ["kind", "state"])
    op.create_table(
        "controller_marks",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_controller_marks")),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("forge", sa.String(16), nullable=False),
        sa.Column("delivery_id", sa.String(200), nullable=False),
        sa.Column("received_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("forge", "delivery_id", name=op.f("pk_webhook_deliveries")),
    )
    op.create_index(op.f("ix_webhook_deliveries_received_at"), "webhook_deliveries", ["received_at"])
    op.create_table(
        "observed_differences",
        sa.Column("address", sa.String(512), nullable=False),
        sa.Column("field", sa.String(512), nullable=False),
        sa.Column("first_seen", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("address", "field", name=op.f("pk_observed_differences")),
    )
    if op.get_bind().dialect.name == "postgresql":
        # Straight to the driver, without parameters (in this migration's transaction): its '%'
        # and ':' are SQL, not parameter markers.
        driver = op.get_bind().connection.driver_connection
        assert driver is not None
        driver.execute(_procrastinate_schema())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in (
            "DROP TABLE IF EXISTS procrastinate_events, procrastinate_periodic_defers,"
            " procrastinate_jobs, procrastinate_workers CASCADE",
            "DROP TYPE IF EXISTS procrastinate_job_to_defer_v1, procrastinate_job_event_type,"
            " procrastinate_job_status CASCADE",
        ):
            op.execute(sa.text(statement))
        op.execute(
            sa.text(
                "DO $$ DECLARE f record; BEGIN FOR f IN SELECT oid::regprocedure AS name FROM pg_proc"
                " WHERE proname LIKE 'procrastinate\\_%' LOOP EXECUTE 'DROP FUNCTION ' || f.name"
                " || ' CASCADE'; END LOOP; END $$"
            )
        )
    op.drop_table("observed_differences")
    op.drop_index(op.f("ix_webhook_deliveries_received_at"), table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_table("controller_marks")
    op.drop_index(op.f("ix_resource_states_kind_state"), table_name="resource_states")
    op.drop_table("resource_states")
    op.drop_table("controller_revisions")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("replica")
