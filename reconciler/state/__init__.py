"""Fleet's state store (SQLAlchemy Core + alembic): SQLite by default, PostgreSQL for replicas in HA.

Import what you need from here. This package sits at the bottom of the engine: it may import
only `reconciler.errors` and third-party libraries, never the spec, plan, CLI or providers.
"""

from __future__ import annotations

from reconciler.state.locks import LockHeld, LockLost, LockSet
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
from reconciler.state.store import ResourceSuspended, StateStore, open_store, store_exists

__all__ = [
    "ActionRecord",
    "Applied",
    "DriftFinding",
    "LockHeld",
    "LockHolder",
    "LockLost",
    "LockSet",
    "ObservationRecord",
    "ResourceState",
    "ResourceSuspended",
    "RevisionState",
    "RunRecord",
    "StateStore",
    "Suspension",
    "SuspensionChange",
    "open_store",
    "store_exists",
]
