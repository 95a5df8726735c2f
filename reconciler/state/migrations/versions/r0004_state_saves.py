"""An index on when each resource's state was saved.

The web UI keeps its counts by reading only the states saved since its last look
(`StateStore.resource_state_changes`); with the index that read, and the latest save it asks for,
touch only the rows saved since then instead of every resource's.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f("ix_resource_states_updated_at"), "resource_states", ["updated_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_resource_states_updated_at"), table_name="resource_states")
