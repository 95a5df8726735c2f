"""The shapes of the HTTP API's answers, as its OpenAPI schema documents them.

Every model forbids fields it does not name: an answer that grows a field without its model
growing it fails loudly (and the schema test with it) instead of being documented wrongly.
Times are the strings the CLI prints (`fleet history -o json`), not re-parsed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RevisionErrors(Answer):
    """Why a revision cannot be reconciled: its diagnostics, `file:line` first."""

    message: str
    errors: list[str] = Field(description="At most 50 rendered diagnostics.")


class Problem(Answer):
    """Every error answer: what went wrong, never a traceback, a token or a secret."""

    detail: str | list[str] | RevisionErrors = Field(
        description="A message; the request's problems (`where: what`, at most 20) when it is"
        " invalid; a revision's errors when the revision refuses the request."
    )


class Health(Answer):
    status: Literal["ok"]


class Readiness(Answer):
    status: Literal["ready", "not ready"]
    problems: list[str] | None = Field(None, description="Why not ready.")


class RevisionState(Answer):
    revision: str
    commit: str | None = Field(description="The commit of the followed branch; none for a working tree.")
    at: str
    valid: bool
    errorCount: int
    errors: list[str]


class Queue(Answer):
    depth: int = Field(description="Units of work waiting (on every replica, when shared).")
    running: list[str] = Field(description="Units of work running (on every replica, when shared).")
    waiting: list[str] = Field(description="The first 100 waiting, in order.")


class Replicas(Answer):
    this: str = Field(description="The replica that answered: host:pid.")
    live: int = Field(description="Replicas taking work now (1 when alone).")


class ResourceState(Answer):
    address: str
    kind: str
    state: str = Field(description="in sync, drifted, unknown, suspended, failing, waiting or orphaned.")
    detail: str
    since: str | None
    failures: int
    lastError: str
    nextTry: str | None


class Status(Answer):
    following: str
    lastAppliedRevision: RevisionState | None
    lastAttemptedRevision: RevisionState | None
    resources: dict[str, dict[str, int]] = Field(description="Counts by kind, then by state.")
    queue: Queue
    replicas: Replicas
    failing: list[ResourceState] = Field(description="The first 100 resources whose actions keep failing.")


class ResourceList(Answer):
    items: list[ResourceState]
    total: int = Field(description="How many matched, `limit` or not.")


class Action(Answer):
    id: int
    run_id: int
    address: str
    action: str
    before: Any
    after: Any
    result: str
    message: str | None
    started_at: str
    finished_at: str | None


class Run(Answer):
    """A run as the audit trail records it (`fleet history -o json`)."""

    id: int
    kind: str
    operator: str
    reason: str | None
    incident: str | None
    revision: str | None
    emergency: bool
    broke_lock: bool
    status: str
    started_at: str
    finished_at: str | None
    summary: dict[str, Any] | None
    actions: list[Action]
    replica: str | None


class RunList(Answer):
    items: list[Run]


class Observation(Answer):
    state: str
    fields: dict[str, Any]
    reason: str | None
    at: str


class Drift(Answer):
    field: str
    expected: Any
    actual: Any
    firstSeen: str


class Lease(Answer):
    owner: str
    run: int
    expires: str


class Resource(ResourceState):
    """One resource: its state, spec and file, last observation, open drift, recent runs and
    the lease that holds it."""

    file: str
    spec: dict[str, Any]
    observation: Observation | None
    drift: list[Drift]
    actions: list[Run] = Field(description="The last 20 runs that acted on it.")
    lease: list[Lease]


class ReconcileAccepted(Answer):
    run: int
    operator: str


class SuspensionDone(Answer):
    run: int
    changed: list[str]
    unchanged: list[str]
    annotated: dict[str, str] = Field(
        description="Addresses whose spec suspends them anyway, with the file (a resume does not lift it)."
    )


class PollAccepted(Answer):
    result: Literal["accepted"]
