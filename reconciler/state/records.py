"""The plain values the state store hands out and takes in: frozen dataclasses, no SQLAlchemy rows.

Every timestamp is timezone-aware UTC. JSON fields are plain dicts and lists, copies of what
was stored; changing them changes nothing in the store. These values must never carry a
secret: the store refuses to write one (see `values.py`).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any


@dataclasses.dataclass(frozen=True, slots=True)
class ActionRecord:
    id: int
    run_id: int
    address: str
    action: str
    before: Any
    after: Any
    result: str  # pending / succeeded / failed / skipped / interrupted
    message: str | None
    started_at: datetime
    finished_at: datetime | None


@dataclasses.dataclass(frozen=True, slots=True)
class RunRecord:
    id: int
    kind: str  # plan / apply / reconcile / drift
    operator: str
    reason: str | None
    incident: str | None
    revision: str | None
    emergency: bool
    broke_lock: bool
    status: str  # running / succeeded / failed / interrupted
    started_at: datetime
    finished_at: datetime | None
    summary: dict[str, Any] | None
    actions: tuple[ActionRecord, ...] = ()
    replica: str | None = None  # the process (host:pid) that ran it


@dataclasses.dataclass(frozen=True, slots=True)
class Applied:
    """The spec fleet last applied to one resource: what drift is measured against."""

    address: str
    revision: str
    spec_hash: str
    fields: dict[str, Any]
    applied_at: datetime
    run_id: int | None


@dataclasses.dataclass(frozen=True, slots=True)
class ObservationRecord:
    """The last observation of one resource; `state` is observed / absent / unknown."""

    address: str
    state: str
    fields: dict[str, Any] | None
    reason: str | None
    observed_at: datetime


@dataclasses.dataclass(frozen=True, slots=True)
class DriftFinding:
    id: int
    address: str
    field: str
    expected: Any
    actual: Any
    first_seen: datetime
    last_seen: datetime
    resolved_at: datetime | None

    @property
    def open(self) -> bool:
        return self.resolved_at is None


@dataclasses.dataclass(frozen=True, slots=True)
class LockHolder:
    """Who holds (or held, for a broken lock) the lease on one address, and until when."""

    address: str
    owner: str
    run_id: int | None
    acquired_at: datetime
    expires_at: datetime

    def describe(self) -> str:
        run = f" (run {self.run_id})" if self.run_id is not None else ""
        return (
            f"{self.address} held by {self.owner}{run} until {self.expires_at.isoformat(timespec='seconds')}"
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Suspension:
    """A resource fleet observes but must not act on: who suspended it, why, since when, and
    the run (of kind `suspend`) that records it."""

    address: str
    operator: str
    reason: str
    since: datetime
    run_id: int | None

    def describe(self) -> str:
        since = self.since.isoformat(timespec="seconds").replace("+00:00", "Z")
        return f"suspended by {self.operator} since {since}: {self.reason}"


@dataclasses.dataclass(frozen=True, slots=True)
class SuspensionChange:
    """What one `suspend` or `resume` did, as its run records it: `changed` are the suspensions it
    made (or, for resume, ended); `unchanged` are the addresses it found already so (with their
    suspension, for suspend; None, for resume: they were not suspended)."""

    run_id: int
    kind: str  # suspend / resume
    changed: tuple[Suspension, ...]
    unchanged: tuple[tuple[str, Suspension | None], ...]


def _stamp(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


@dataclasses.dataclass(frozen=True, slots=True)
class RevisionState:
    """A revision as the controller took it: valid and in force, or refused with its errors."""

    revision: str
    commit: str | None
    at: datetime
    valid: bool
    error_count: int = 0
    errors: tuple[str, ...] = ()  # rendered diagnostics, the first few

    def as_json(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "commit": self.commit,
            "at": _stamp(self.at),
            "valid": self.valid,
            "errorCount": self.error_count,
            "errors": list(self.errors),
        }


@dataclasses.dataclass(frozen=True, slots=True)
class ResourceState:
    """What the controller last made of one resource, and its back-off while it keeps failing."""

    address: str
    kind: str
    state: str = "unknown"  # in sync / drifted / unknown / suspended / failing / waiting
    detail: str = "not observed yet"
    since: datetime | None = None
    failures: int = 0
    last_error: str = ""
    next_try: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "kind": self.kind,
            "state": self.state,
            "detail": self.detail,
            "since": _stamp(self.since),
            "failures": self.failures,
            "lastError": self.last_error,
            "nextTry": _stamp(self.next_try),
        }
