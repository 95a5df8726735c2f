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


def reference_key(ref: models.CredentialSource | str) -> str:
    """How credential overrides name a credentialsRef: its name, or env:/file:/secret: for inline ones."""
    if isinstance(ref, str):
        return ref
    if ref.env is not None:
        return f"env:{ref.env}"
    if ref.file is not None:
        return f"file:{ref.file}"
    assert ref.kubernetesSecret is not None
    return f"secret:{ref.kubernetesSecret.namespace}/{ref.kubernetesSecret.name}"


@dataclasses.dataclass(frozen=True)
class ProviderContext:
    """Everything a provider needs besides the specs: the fleet, and where to really connect.

    `endpoint_overrides` maps an address as written in the specs ("10.128.1.11:623") to
    where a simulated lab listens, and `credential_overrides` maps a credentialsRef (a
    name, or "env:VAR" / "file:PATH" for inline ones) to the lab's own secrets. Both are
    empty in production.
    """

    fleet: models.Fleet
    endpoint_overrides: Mapping[str, Endpoint] = dataclasses.field(default_factory=dict)
    credential_overrides: Mapping[str, models.CredentialSource] = dataclasses.field(default_factory=dict)
    environment: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # A lab may speed up provider settings (simulators do not crash when hammered).
    ipmi_settings: models.IpmiSettings | None = None
    libvirt_settings: models.LibvirtSettings | None = None
    # Every Machine of the repo by name: VirtualMachines name their host Machine.
    machines: Mapping[str, models.Machine] = dataclasses.field(default_factory=dict)
    # Every document of the repo by address: a SparkPool renders against its Cluster and the
    # Cluster's other pools, a Cluster matches its members' Nodes.
    documents: Mapping[str, models.Document] = dataclasses.field(default_factory=dict)
    # A lab's libvirt URI per hypervisor Machine name, beating the spec and the template.
    hypervisor_uris: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # Whole-fleet passes look at every hypervisor, so domains whose specs are gone are seen too.
    scan_all_hosts: bool = False
    # The fleet repo's files at the planned revision (playbooks, roles), exported from Git;
    # None when configuration is not observed.
    playbook_root: Path | None = None
    # A lab's Ansible host variables per inventory host (where its sshd listens, its key),
    # beating the specs.
    ansible_hosts: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=dict)
    ansible_settings: models.AnsibleSettings | None = None

    def ansible(self) -> models.AnsibleSettings:
        return self.ansible_settings or self.fleet.spec.providers.ansible

    def ipmi(self) -> models.IpmiSettings:
        return self.ipmi_settings or self.fleet.spec.providers.ipmi

    def libvirt(self) -> models.LibvirtSettings:
        return self.libvirt_settings or self.fleet.spec.providers.libvirt

    def endpoint(self, host: str, port: int) -> Endpoint:
        written = Endpoint(host, port)
        return self.endpoint_overrides.get(str(written), written)


@runtime_checkable
class Provider(Protocol):
    """Observes and changes the resources of one kind. See the module docstring."""

    kind: ClassVar[str]

    def observe(self, specs: Sequence[models.Document]) -> Iterable[Observation]:
        """One Observation per spec, in any order; never changes anything."""
        ...

    def apply(self, change: Change) -> ApplyResult:
        """Make one change and wait until it holds (or time out); safe to repeat."""
        ...

    def unmatched(self) -> Sequence[Observation]:
        """Resources the last `observe` came across that no spec it was given names
        (domains on a hypervisor, say), with `owned` telling whether fleet made them."""
        ...

    def close(self) -> None:
        """Release sessions, connections and worker processes."""
        ...


@runtime_checkable
class BatchProvider(Provider, Protocol):
    """A provider that makes many changes of one wave more cheaply together than one by one
    (Ansible: one ansible-playbook run for many hosts). The executor hands it a wave's changes
    at once, after the wave's other actions."""

    def apply_many(self, changes: Sequence[Change]) -> list[ApplyResult | TemporaryError]:
        """One result per change, in order; a TemporaryError is retried like a raised one."""
        ...
