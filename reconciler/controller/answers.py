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


class SuspensionRecord(Answer):
    operator: str
    reason: str
    since: str
    run: int | None = Field(description="The run (of kind suspend) that records it.")


class Resource(ResourceState):
    """One resource: its state, spec and where it is written, last observation, open drift, the
    fields enforced and only observed, recent runs, the lease that holds it and its suspension."""

    file: str
    line: int = Field(description="Where its document starts in `file`.")
    fileUrl: str | None = Field(
        description="The file at the revision on the forge (a repo followed over HTTPS)."
    )
    revision: str = Field(description="The revision in force, whose spec this is.")
    spec: dict[str, Any]
    enforced: list[str] = Field(description="Fields of policies.enforcement that are enforced for it.")
    observedOnly: list[str] = Field(description="Fields of policies.enforcement only observed for it.")
    observation: Observation | None
    drift: list[Drift]
    actions: list[Run] = Field(description="The last 20 runs that acted on it.")
    lease: list[Lease]
    suspension: SuspensionRecord | None = Field(description="Who suspended it, why and since when.")


class RackCount(Answer):
    name: str
    counts: dict[str, int] = Field(description="Resources by state.")
    total: int


class SiteCount(RackCount):
    racks: list[RackCount] = Field(description="Its racks (`-`: resources of no rack).")


class Overview(Answer):
    """The fleet counted by state per site and rack (`-`: clusters, pools and orphans)."""

    revision: str | None
    total: int = Field(description="Resources with a state, filter or not.")
    matched: int = Field(description="Resources the filter matched.")
    counts: dict[str, int] = Field(description="Matched resources by state.")
    sites: list[SiteCount]


class Cell(Answer):
    address: str
    kind: str
    state: str


class RackCell(Cell):
    children: list[Cell] = Field(description="What runs on it: a host's VMs, a cluster's SparkPools.")


class Rack(Answer):
    site: str
    rack: str
    revision: str | None
    total: int
    matched: int
    items: list[RackCell] = Field(description="At most 5,000, by address.")


class PlanPreview(Answer):
    """The plan an emergency reconcile would run now; confirm it by passing its fingerprint."""

    revision: str
    fingerprint: str
    summary: str
    changes: int
    markdown: str = Field(description="As a PR comment shows it.")
    plan: dict[str, Any] = Field(description="As `fleet plan -o json` (schemas/plan.schema.json).")


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
