"""The provider contract: how the engine observes and changes live infrastructure.

A provider serves one kind of resource. `observe` never changes anything and says,
for every spec it is given, whether the resource was observed (with its live
fields), is absent, or is unknown (unreachable, timed out, refused, with the
reason). Unknown is never drift and never a reason to delete. `apply` makes one
change and is idempotent: applying a change that already holds changes nothing
and succeeds. Errors leave a provider only as `TemporaryError` or `PermanentError`;
no SDK or socket exception ever crosses this boundary.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from reconciler.errors import PermanentError, TemporaryError
from reconciler.spec import models


class ObservationState(enum.StrEnum):
    OBSERVED = "observed"
    ABSENT = "absent"
    UNKNOWN = "unknown"


class UnknownReason(enum.StrEnum):
    TIMEOUT = "timeout"
    AUTH_FAILURE = "auth-failure"
    UNREACHABLE = "unreachable"
    PROTOCOL_ERROR = "protocol-error"
    CREDENTIALS_MISSING = "credentials-missing"
    NOT_ATTEMPTED = "not-attempted"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclasses.dataclass(frozen=True, slots=True)
class Observation:
    """What a provider saw of one resource at `observed_at`."""

    address: str
    state: ObservationState
    observed_at: datetime
    fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    reason: UnknownReason | None = None
    detail: str = ""
    warnings: tuple[str, ...] = ()

    @classmethod
    def observed(
        cls,
        address: str,
        fields: Mapping[str, Any],
        *,
        warnings: Sequence[str] = (),
        at: datetime | None = None,
    ) -> Observation:
        return cls(
            address, ObservationState.OBSERVED, at or utcnow(), dict(fields), None, "", tuple(warnings)
        )

    @classmethod
    def absent(cls, address: str, *, at: datetime | None = None) -> Observation:
        return cls(address, ObservationState.ABSENT, at or utcnow())

    @classmethod
    def unknown(
        cls, address: str, reason: UnknownReason, detail: str, *, at: datetime | None = None
    ) -> Observation:
        return cls(address, ObservationState.UNKNOWN, at or utcnow(), {}, reason, detail)


class Action(enum.StrEnum):
    """What a change does to a resource (symbols as Terraform shows them)."""

    CREATE = "+"
    UPDATE = "~"
    DELETE = "-"
    REPLACE = "-/+"
    POWER_ON = "power-on"
    POWER_OFF = "power-off"
    POWER_CYCLE = "power-cycle"
    BOOT_DEVICE = "boot-device"
    CONFIGURE = "configure"  # the operating system's configuration (Ansible), in place


@dataclasses.dataclass(frozen=True, slots=True)
class FieldChange:
    field: str
    before: Any
    after: Any


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """One action on one resource, with the desired document it comes from."""

    address: str
    action: Action
    desired: models.Document | None  # None for an orphan: its spec is gone
    fields: tuple[FieldChange, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class ApplyResult:
    address: str
    action: Action
    ok: bool
    changed: bool
    message: str
    seconds: float = 0.0
    observation: Observation | None = None


class Progress(Protocol):
    """What an apply already changed, so that a failure part-way says so."""

    @property
    def changed(self) -> bool: ...

    def failed(self, message: str) -> str: ...


def apply_result(
    change: Change, progress: Progress, clock: Callable[[], float], run: Callable[[], tuple[bool, str]]
) -> ApplyResult:
    """Run one apply and report it the same way for every provider: a temporary error is raised
    for retrying (naming what was already changed), a permanent one is a failed result."""
    started = clock()
    try:
        changed, message = run()
    except TemporaryError as exc:
        if not progress.changed:
            raise
        raise TemporaryError(progress.failed(str(exc)), delay=exc.delay) from None
    except PermanentError as exc:
        return ApplyResult(
            change.address,
            change.action,
            False,
            progress.changed,
            progress.failed(str(exc)),
            clock() - started,
        )
    return ApplyResult(change.address, change.action, True, changed, message, clock() - started)


@dataclasses.dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclasses.dataclass(frozen=True)
class RevisionInputs:
    """What providers need of the revision a call is about, besides the specs it names: the
    Fleet, every document of the repo by address (a VirtualMachine names its host Machine, a
    SparkPool renders against its Cluster and the Cluster's other pools), and the repo's files
    at the revision (playbooks and roles, exported from Git; None when configuration is not
    observed). Passed with every call, so one provider serves revision after revision."""

    fleet: models.Fleet
    documents: Mapping[str, models.Document] = dataclasses.field(default_factory=dict)
    playbook_root: Path | None = None
    # Whole-fleet passes look at every hypervisor, so domains whose specs are gone are seen too.
    scan_all_hosts: bool = False
    # None: Ansible may render every value of `config.vars` as a template (the revision is trusted).
    # Otherwise the names of the variables it may render, by address; every other variable (all
    # of those of an address left out) reaches Ansible as data it never templates (`!unsafe`).
    trusted_vars: Mapping[str, frozenset[str]] | None = None
    # The Machines of `documents` by name, when the caller has them at hand (else worked out here).
    known_machines: Mapping[str, models.Machine] | None = dataclasses.field(
        default=None, repr=False, compare=False
    )
    machines: Mapping[str, models.Machine] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        machines = self.known_machines
        if machines is None:
            machines = {d.metadata.name: d for d in self.documents.values() if isinstance(d, models.Machine)}
        object.__setattr__(self, "machines", machines)

    @classmethod
    def of(
        cls,
        fleet: models.Fleet,
        documents: Iterable[models.Document],
        *,
        playbook_root: Path | None = None,
        scan_all_hosts: bool = False,
    ) -> RevisionInputs:
        by_address = {d.address: d for d in documents if not isinstance(d, models.Fleet)}
        return cls(fleet, by_address, playbook_root, scan_all_hosts)


@dataclasses.dataclass(frozen=True, slots=True)
class Observed:
    """What one `observe` call saw: an observation per spec, and the resources it came across
    that no spec names (domains on a hypervisor, say), with `owned` telling whether fleet made them."""

    observations: tuple[Observation, ...] = ()
    unmatched: tuple[Observation, ...] = ()


@runtime_checkable
class Provider(Protocol):
    """Observes and changes the resources of one kind. See the module docstring.

    A provider lives across runs (the caller's provider pool keeps it): it holds what is worth
    keeping between passes (sessions, connections, clients, caches) and takes the revision's
    inputs with every call."""

    kind: ClassVar[str]

    def observe(self, specs: Sequence[models.Document], inputs: RevisionInputs) -> Observed:
        """One Observation per spec, in any order; never changes anything."""
        ...

    def apply(self, change: Change, inputs: RevisionInputs) -> ApplyResult:
        """Make one change and wait until it holds (or time out); safe to repeat."""
        ...

    def close(self) -> None:
        """Release sessions, connections and worker processes."""
        ...


@runtime_checkable
class BatchProvider(Provider, Protocol):
    """A provider that makes many changes of one wave more cheaply together than one by one
    (Ansible: one ansible-playbook run for many hosts). The executor hands it a wave's changes
    at once, after the wave's other actions."""

    def apply_many(
        self, changes: Sequence[Change], inputs: RevisionInputs
    ) -> list[ApplyResult | TemporaryError]:
        """One result per change, in order; a TemporaryError is retried like a raised one."""
        ...
