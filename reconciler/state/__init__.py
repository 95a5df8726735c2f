"""Fleet's state store (SQLAlchemy Core + alembic): SQLite by default, PostgreSQL for replicas in HA.

Import what you need from here. This package sits at the bottom of the engine: it may import
only `reconciler.errors` and third-party libraries, never the spec, plan, CLI or providers.
"""

from __future__ import annotations

from reconciler.state.engine import default_url
from reconciler.state.locks import LockHeld, LockLost, LockSet
from reconciler.state.records import (
    ActionRecord,
    Applied,
    DriftFinding,
    LockHolder,
    ObservationRecord,
    PRComment,
    RunRecord,
)
from reconciler.state.store import StateStore, current_operator, open_store

__all__ = [
    "ActionRecord",
    "Applied",
    "DriftFinding",
    "LockHeld",
    "LockHolder",
    "LockLost",
    "LockSet",
    "ObservationRecord",
    "PRComment",
    "RunRecord",
    "StateStore",
    "current_operator",
    "default_url",
    "open_store",
]
