"""The libvirt provider: VirtualMachines as domains on the hypervisor Machines that run them.

`observe` reads each hypervisor it needs once per call, with bulk calls and one or two XML reads
per domain, and looks on the other hypervisors for a VM missing from its own, so a VM whose spec
moved is found where it still runs. `apply` checks the live state before every step, so repeating
a change is harmless, and never touches a domain without fleet's ownership element in its
<metadata>. A running domain is restarted only when `policies.vmRestarts` allows it, and a moved
VM is stopped on its old host before it starts on the new one, so two copies never run at once.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

from providers.access import Access
from providers.base import (
    Action,
    ApplyResult,
    Change,
    Observation,
    ObservationState,
    Observed,
    RevisionInputs,
    UnknownReason,
    apply_result,
    utcnow,
)
from providers.libvirt.connections import (
    Connections,
    Domain,
    DomainRecord,
    DomainState,
    Hypervisor,
    HypervisorAuthFailed,
    HypervisorUnavailable,
    Session,
)
from providers.libvirt.domain import (
    DomainDefinition,
    DomainXmlError,
    adopt_command,
    desired_definition,
    device_differences,
    differences,
    domain_xml,
    kept_macs,
    kib_quantity,
    memory_kib,
    observed_disks,
    observed_networks,
    owner_address,
    parse_domain,
    size_bytes,
    volume_name,
    volume_xml,
)
from reconciler.errors import FleetError, PermanentError, TemporaryError
from reconciler.spec import models

# Copying a base image can take far longer than reading a hypervisor; it gets its own deadline.
VOLUME_CLONE_TIMEOUT = 3600.0
_POLL_FIRST, _POLL_MAX = 0.05, 1.0


class _TargetError(PermanentError):
    """A hypervisor fleet cannot even try to reach (no URI, no credentials, not a hypervisor)."""

    def __init__(self, message: str, reason: UnknownReason, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason


class NotOwnedError(PermanentError):
    """A domain fleet did not make: it is never changed."""


@dataclasses.dataclass(frozen=True)
class _Seen:
    """One domain of a scan, read."""

    host: str
    record: DomainRecord
    config: DomainDefinition
    live: DomainDefinition | None

    @property
    def owned(self) -> bool:
        return self.config.owned_as(owner_address(self.record.name))


@dataclasses.dataclass(frozen=True)
class _HostScan:
    domains: dict[str, _Seen]
    unreadable: dict[str, str]  # domain name -> why its XML could not be read


@dataclasses.dataclass(frozen=True)
class _Found:
    domain: Domain
    config: DomainDefinition
    state: DomainState


def observed_fields(seen: _Seen) -> dict[str, Any]:
    """The observed fields of one domain, the contract with the engine's plan.

    host (Machine name), uuid, owned (fleet's ownership element names this domain), power (on, off,
    paused, crashed); vcpus and memory as the domain runs (its persistent current values when it
    is stopped); maxVcpus/maxMemory and configVcpus/configMemory from the persistent definition;
    autostart; disks [{name, pool}] in target order (a disk fleet did not generate is named by its
    target device, with pool ""); networks [{network, mac, model}]. A running domain also reports
    liveMaxVcpus/liveMaxMemory, the ceilings a live change cannot pass. Memory is a canonical
    Kubernetes quantity.
    """
    config, live = seen.config, seen.live
    current = live or config  # a running domain reports what runs, a stopped one what will run
    fields: dict[str, Any] = {
        "host": seen.host,
        "uuid": seen.record.uuid,
        "owned": seen.owned,
        "power": seen.record.state.power,
        "vcpus": current.vcpus,
        "maxVcpus": config.max_vcpus,
        "configVcpus": config.vcpus,
        "memory": kib_quantity(current.memory_kib),
        "maxMemory": kib_quantity(config.max_memory_kib),
        "configMemory": kib_quantity(config.memory_kib),
        "autostart": seen.record.autostart,
        "disks": observed_disks(current),
        "networks": observed_networks(current),
    }
    if live is not None:
        fields["liveMaxVcpus"] = live.max_vcpus
        fields["liveMaxMemory"] = kib_quantity(live.max_memory_kib)
    return fields


def _scan(session: Session) -> _HostScan:
    domains: dict[str, _Seen] = {}
    unreadable: dict[str, str] = {}
    for record in session.scan():
        try:
            config = parse_domain(record.config_xml)
            live = parse_domain(record.live_xml) if record.live_xml is not None else None
        except DomainXmlError as exc:
            unreadable[record.name] = str(exc)
            continue
        domains[record.name] = _Seen(session.hypervisor.name, record, config, live)
    return _HostScan(domains, unreadable)


def _unknown_reason(error: FleetError) -> UnknownReason:
    if isinstance(error, HypervisorUnavailable | _TargetError):
        return error.reason
    if isinstance(error, HypervisorAuthFailed):
        return UnknownReason.AUTH_FAILURE
    return UnknownReason.PROTOCOL_ERROR


def _describe_power(seen: _Seen) -> str:
    return {"on": "running", "off": "shut off"}.get(seen.record.state.power, seen.record.state.power)


def _parse(session: Session, name: str, xml: str) -> DomainDefinition:
    try:
        return parse_domain(xml)
    except DomainXmlError as exc:
        raise PermanentError(f"machine/{session.hypervisor.name}: domain {name}: {exc}") from None


def _inspect(session: Session, name: str) -> _Found | None:
    """The domain called `name`, if there is one, refusing it unless fleet owns it."""
    domain = session.lookup(name)
    if domain is None:
        return None
    config = _parse(session, name, domain.config_xml())
    if not config.owned_as(owner_address(name)):
        host = session.hypervisor
        raise NotOwnedError(
            f"domain {name} on machine/{host.name} was not made by fleet (it has no fleet ownership"
            " metadata), so fleet will not change it",
            hint=f"to adopt it, run: {adopt_command(name, host.shown_uri)}",
        )
    return _Found(domain, config, domain.state())


class _Progress:
    """What an apply already changed, for the message when a later step fails."""

    def __init__(self) -> None:
        self.steps: list[str] = []

    @property
    def changed(self) -> bool:
        return bool(self.steps)

    def note(self, step: str) -> None:
        self.steps.append(step)

    def failed(self, message: str) -> str:
        if not self.steps:
            return message
        return f"{message}; done before that: {', '.join(self.steps)}"


class LibvirtProvider:
    """VirtualMachines on libvirt hypervisors. Thread-safe: observe and apply may run concurrently."""

    kind: ClassVar[str] = "VirtualMachine"

    def __init__(
        self,
        settings: models.LibvirtSettings,
        access: Access,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.access = access
        self._clock = clock
        self._sleep = sleep
        self._connections = Connections(
            timeout=self.settings.timeoutSeconds, max_concurrent=self.settings.maxConcurrent, clock=clock
        )
        self._lock = threading.Lock()

    # --- where hypervisors are ----------------------------------------------------------

    @staticmethod
    def _hypervisor_names(inputs: RevisionInputs) -> list[str]:
        return sorted(name for name, m in inputs.machines.items() if m.spec.role == "hypervisor")

    def _target(self, host: str, inputs: RevisionInputs) -> Hypervisor:
        machine = inputs.machines.get(host)
        if machine is None:
            raise _TargetError(
                f"machine/{host} is not in the fleet repo",
                UnknownReason.NOT_ATTEMPTED,
                hint="spec.host names a Machine with role hypervisor",
            )
        if machine.spec.role != "hypervisor":
            raise _TargetError(
                f"machine/{host} has role {machine.spec.role}, not hypervisor", UnknownReason.NOT_ATTEMPTED
            )
        access = machine.spec.hypervisor
        uri = self.access.endpoints.hypervisor_uris.get(host) or (access.uri if access is not None else None)
        if not uri:
            address = machine.spec.address
            if address is None:
                raise _TargetError(
                    f"machine/{host} has neither spec.address nor spec.hypervisor.uri, so its libvirt URI"
                    " is unknown",
                    UnknownReason.NOT_ATTEMPTED,
                    hint="set one of them",
                )
            template = self.settings.uriTemplate
            try:
                uri = template.format(address=f"[{address}]" if ":" in address else address)
            except (KeyError, IndexError, ValueError):
                raise _TargetError(
                    f"providers.libvirt.uriTemplate {template!r} cannot be filled in",
                    UnknownReason.NOT_ATTEMPTED,
                    hint="use {address} as its only placeholder",
                ) from None
        credentials = None
        if access is not None and access.credentialsRef is not None:
            try:
                credentials = self.access.credentials.user_password(access.credentialsRef, inputs)
            except FleetError as exc:  # a Secret's API server may be down too
                raise _TargetError(
                    f"machine/{host}: {exc.message}", UnknownReason.CREDENTIALS_MISSING, hint=exc.hint
                ) from None
        return Hypervisor(host, uri, credentials)

    def _run(
        self, hypervisor: Hypervisor, work: Callable[[Session], Any], *, timeout: float | None = None
    ) -> Any:
        return self._connections.run(hypervisor, work, timeout=timeout)

    # --- observe ------------------------------------------------------------------------

    def _scan_hosts(
        self, hosts: Iterable[str], scans: dict[str, _HostScan | FleetError], inputs: RevisionInputs
    ) -> None:
        targets = []
        for host in sorted(set(hosts) - set(scans)):
            try:
                targets.append(self._target(host, inputs))
            except _TargetError as exc:
                scans[host] = exc
        for host, outcome in self._connections.run_each(targets, _scan).items():
            scans[host] = outcome

    def observe(self, specs: Sequence[models.Document], inputs: RevisionInputs) -> Observed:
        vms: list[models.VirtualMachine] = []
        results: list[Observation] = []
        for spec in specs:
            if isinstance(spec, models.VirtualMachine):
                vms.append(spec)
            else:
                results.append(
                    Observation.unknown(
                        spec.address,
                        UnknownReason.NOT_ATTEMPTED,
                        "the libvirt provider observes VirtualMachines",
                    )
                )
        scans: dict[str, _HostScan | FleetError] = {}
        wanted = {vm.spec.host for vm in vms}
        if inputs.scan_all_hosts:
            wanted.update(self._hypervisor_names(inputs))
        self._scan_hosts(wanted, scans, inputs)

        def missing(vm: models.VirtualMachine) -> bool:
            scan = scans.get(vm.spec.host)
            return isinstance(scan, _HostScan) and vm.metadata.name not in scan.domains

        if any(missing(vm) for vm in vms):
            self._scan_hosts(self._hypervisor_names(inputs), scans, inputs)
        for vm in vms:
            results.append(self._observation(vm, scans))
        names = {vm.metadata.name for vm in vms}
        unmatched = [
            Observation.observed(owner_address(seen.record.name), observed_fields(seen))
            for scan in scans.values()
            if isinstance(scan, _HostScan)
            for seen in scan.domains.values()
            if seen.record.name not in names
        ]
        unmatched.sort(key=lambda o: (o.address, str(o.fields["host"])))
        return Observed(tuple(results), tuple(unmatched))

    def _observation(
        self, vm: models.VirtualMachine, scans: dict[str, _HostScan | FleetError]
    ) -> Observation:
        address, name, home = vm.address, vm.metadata.name, vm.spec.host
        scan = scans.get(home)
        if isinstance(scan, FleetError):
            return Observation.unknown(address, _unknown_reason(scan), str(scan))
        assert scan is not None
        if name in scan.unreadable:
            return Observation.unknown(
                address,
                UnknownReason.PROTOCOL_ERROR,
                f"machine/{home}: domain {name}: {scan.unreadable[name]}",
            )
        elsewhere = [
            other.domains[name]
            for host, other in sorted(scans.items())
            if host != home and isinstance(other, _HostScan) and name in other.domains
        ]
        owned_elsewhere = [seen for seen in elsewhere if seen.owned]
        seen = scan.domains.get(name)
        if seen is None and owned_elsewhere:
            # The spec moved: report it where it still is (running copies first).
            owned_elsewhere.sort(key=lambda s: (not s.record.state.active, s.host))
            seen = owned_elsewhere.pop(0)
        copies = [s for s in elsewhere if s is not seen]
        warnings = [
            f"a domain {name} is also defined on machine/{s.host} ({_describe_power(s)}"
            f"{'' if s.owned else ', not made by fleet'})"
            for s in copies
        ]
        if seen is None:
            unread = sorted(h for h, s in scans.items() if isinstance(s, FleetError))
            if unread:
                warnings.append(f"not found on the hypervisors that answered; not read: {', '.join(unread)}")
            return Observation(address, ObservationState.ABSENT, utcnow(), warnings=tuple(warnings))
        return Observation.observed(address, observed_fields(seen), warnings=warnings)

    # --- apply --------------------------------------------------------------------------

    def apply(self, change: Change, inputs: RevisionInputs) -> ApplyResult:
        progress = _Progress()
        return apply_result(change, progress, self._clock, lambda: self._apply(change, progress, inputs))

    def _apply(self, change: Change, progress: _Progress, inputs: RevisionInputs) -> tuple[bool, str]:
        action = change.action
        if change.desired is None:
            if action in (Action.DELETE, Action.POWER_OFF):
                return self._orphan(change, progress, inputs)
            raise PermanentError(
                f"{change.address}: an orphaned VirtualMachine can only be powered off or deleted"
            )
        vm = change.desired
        if not isinstance(vm, models.VirtualMachine):
            raise PermanentError(f"the libvirt provider changes VirtualMachines, not {vm.kind_name}")
        touched = {f.field for f in change.fields} or None
        hypervisor = self._target(vm.spec.host, inputs)
        if action is Action.CREATE:
            return self._create(hypervisor, vm, progress, inputs)
        if action is Action.UPDATE:
            found = self._run(hypervisor, lambda s: _inspect(s, vm.metadata.name))
            if found is None:
                raise PermanentError(
                    f"{vm.address} is not defined on machine/{vm.spec.host}",
                    hint="plan again: it will be created",
                )
            return self._converge(
                hypervisor, vm, progress, inputs, touched=touched, power="power" in (touched or ())
            )
        if action is Action.POWER_ON:
            return self._power_on(hypervisor, vm.metadata.name)
        if action is Action.POWER_OFF:
            how = self._stop(hypervisor, vm.metadata.name)
            return (how is not None, f"{how} on machine/{hypervisor.name}" if how else "already off")
        if action is Action.REPLACE:
            return self._replace(change, vm, hypervisor, progress, inputs)
        raise PermanentError(f"the libvirt provider cannot {action.value} a VirtualMachine")

    # --- steps ---------------------------------------------------------------------------

    def _ensure_volumes(self, hypervisor: Hypervisor, vm: models.VirtualMachine, progress: _Progress) -> None:
        """Create each disk's volume that is missing, cloning its image where it names one. Every
        pool and image is checked before anything is created."""
        name = vm.metadata.name

        def missing_volumes(session: Session) -> list[models.Disk]:
            missing, problems = [], []
            for disk in vm.spec.disks:
                pool = session.pool(disk.pool)
                if pool is None or not pool.active():
                    state = "no" if pool is None else "an inactive"
                    problems.append(f"{state} storage pool {disk.pool} (disk {disk.name})")
                    continue
                if pool.has_volume(volume_name(name, disk.name)):
                    continue
                if disk.image and not pool.has_volume(disk.image):
                    problems.append(
                        f"no image volume {disk.image} in storage pool {disk.pool} (disk {disk.name})"
                    )
                    continue
                missing.append(disk)
            if problems:
                raise PermanentError(
                    f"machine/{hypervisor.name} has {'; '.join(problems)}, which {vm.address} needs",
                    hint="create the pool or upload the image on that hypervisor, or change the spec",
                )
            return missing

        for disk in self._run(hypervisor, missing_volumes):
            volume = volume_name(name, disk.name)

            def create(session: Session, disk: models.Disk = disk, volume: str = volume) -> bool:
                pool = session.pool(disk.pool)
                if pool is None:
                    raise PermanentError(f"machine/{hypervisor.name}: storage pool {disk.pool} disappeared")
                if pool.has_volume(volume):
                    return False  # an earlier, interrupted attempt made it
                xml = volume_xml(volume, size_bytes(disk.size))
                if disk.image:
                    pool.clone_volume(volume, xml, disk.image)
                else:
                    pool.create_volume(volume, xml)
                return True

            timeout = VOLUME_CLONE_TIMEOUT if disk.image else None
            if self._run(hypervisor, create, timeout=timeout):
                progress.note(
                    f"created volume {disk.pool}/{volume}" + (f" from {disk.image}" if disk.image else "")
                )

    def _define(self, hypervisor: Hypervisor, vm: models.VirtualMachine, progress: _Progress) -> bool:
        """Define the domain unless it exists; True if it was defined now."""
        name = vm.metadata.name

        def define(session: Session) -> bool:
            if _inspect(session, name) is not None:
                return False
            definition = desired_definition(vm, domain_type=session.domain_type())
            domain = session.define(domain_xml(definition), name)
            domain.set_autostart(vm.spec.autostart)
            return True

        defined = bool(self._run(hypervisor, define))
        if defined:
            progress.note(f"defined on machine/{hypervisor.name}")
        return defined

    def _create(
        self, hypervisor: Hypervisor, vm: models.VirtualMachine, progress: _Progress, inputs: RevisionInputs
    ) -> tuple[bool, str]:
        host = f"machine/{hypervisor.name}"
        if self._run(hypervisor, lambda s: _inspect(s, vm.metadata.name)) is not None:
            changed, message = self._converge(hypervisor, vm, progress, inputs, touched=None, power=True)
            return changed, f"already defined on {host}; {message}"
        self._ensure_volumes(hypervisor, vm, progress)
        self._define(hypervisor, vm, progress)
        if vm.spec.power == "on":
            self._start(hypervisor, vm.metadata.name)
            progress.note("started")
            return True, f"defined and started on {host}"
        return True, f"defined on {host} (power off, as specified)"

    def _start(self, hypervisor: Hypervisor, name: str) -> str | None:
        """Start (or resume) the domain; None if it already runs."""

        def begin(session: Session) -> str | None:
            found = _inspect(session, name)
            if found is None:
                raise PermanentError(f"virtualmachine/{name} is not defined on machine/{hypervisor.name}")
            power, active = found.state.power, found.state.active
            if power == "on":
                return None
            if power == "paused":
                found.domain.resume()
                return "resumed"
            if active:
                return "busy"  # still shutting down, or crashed and kept: wait, then start
            found.domain.start()
            return "started"

        how = self._run(hypervisor, begin)
        if how != "busy":
            return str(how) if how is not None else None
        self._wait_until_off(hypervisor, name, self.settings.shutdownTimeoutSeconds)
        self._run(hypervisor, lambda s: self._destroy_if_active(s, name))
        self._run(hypervisor, lambda s: _must_find(s, name, hypervisor).domain.start())
        return "started"

    @staticmethod
    def _destroy_if_active(session: Session, name: str) -> bool:
        found = _inspect(session, name)
        if found is None or not found.state.active:
            return False
        found.domain.destroy()
        return True

    def _is_active(self, hypervisor: Hypervisor, name: str) -> bool:
        def active(session: Session) -> bool:
            found = _inspect(session, name)
            return found is not None and found.state.active

        return bool(self._run(hypervisor, active))

    def _wait_until_off(self, hypervisor: Hypervisor, name: str, timeout: float) -> bool:
        deadline = self._clock() + timeout
        pause = _POLL_FIRST
        while self._is_active(hypervisor, name):
            if self._clock() >= deadline:
                return False
            self._sleep(min(pause, max(deadline - self._clock(), 0.0)))
            pause = min(pause * 2, _POLL_MAX)
        return True

    def _stop(self, hypervisor: Hypervisor, name: str) -> str | None:
        """Graceful shutdown, then destroy after shutdownTimeoutSeconds; None if it was not running."""

        def begin(session: Session) -> str | None:
            found = _inspect(session, name)
            if found is None or not found.state.active:
                return None
            if found.state.power in ("paused", "crashed"):
                found.domain.destroy()  # a paused or crashed guest cannot act on a shutdown request
                return f"destroyed ({found.state.power})"
            try:
                found.domain.shutdown()
            except PermanentError as exc:
                found.domain.destroy()
                return f"destroyed (the graceful shutdown was refused: {exc.message})"
            return "shutdown"

        how = self._run(hypervisor, begin)
        if how != "shutdown":
            return str(how) if how is not None else None
        timeout = self.settings.shutdownTimeoutSeconds
        if self._wait_until_off(hypervisor, name, timeout):
            return "shut down gracefully"
        self._run(hypervisor, lambda s: self._destroy_if_active(s, name))
        return f"destroyed after {timeout:g} s without shutting down"

    def _power_on(self, hypervisor: Hypervisor, name: str) -> tuple[bool, str]:
        how = self._start(hypervisor, name)
        if how is None:
            return False, f"already running on machine/{hypervisor.name}"
        return True, f"{how} on machine/{hypervisor.name}"

    def _converge(
        self,
        hypervisor: Hypervisor,
        vm: models.VirtualMachine,
        progress: _Progress,
        inputs: RevisionInputs,
        *,
        touched: set[str] | None,
        power: bool,
    ) -> tuple[bool, str]:
        """Bring an owned domain to its spec: persistent definition, live values where the running
        domain can take them, autostart, and power when `power`; restart only if the policy allows."""
        name, spec = vm.metadata.name, vm.spec
        host = f"machine/{hypervisor.name}"
        self._ensure_volumes(hypervisor, vm, progress)

        def wants(field: str) -> bool:
            return touched is None or field in touched

        def redefine(session: Session) -> list[str]:
            found = _must_find(session, name, hypervisor)
            config = found.config
            desired = desired_definition(
                vm,
                domain_type=config.type or session.domain_type(),
                uuid=config.uuid,
                macs=kept_macs(vm, config),
            )
            changed = differences(config, desired)
            if changed:
                session.define(domain_xml(desired), name)
            return changed

        parts: list[str] = []
        redefined = self._run(hypervisor, redefine)
        if redefined:
            progress.note("persistent definition updated")

        def live_update(session: Session) -> tuple[dict[str, str], dict[str, str]]:
            found = _must_find(session, name, hypervisor)
            if not found.state.active:
                return {}, {}
            live = _parse(session, name, found.domain.live_xml())
            done: dict[str, str] = {}
            pending: dict[str, str] = {}
            if wants("vcpus") and live.vcpus != spec.vcpus:
                change = f"{live.vcpus}->{spec.vcpus}"
                if spec.vcpus <= live.max_vcpus:
                    found.domain.set_live_vcpus(spec.vcpus)
                    done["vcpus"] = change
                else:
                    pending["vcpus"] = change
            want_kib = memory_kib(spec.memory)
            if wants("memory") and live.memory_kib != want_kib:
                change = f"{kib_quantity(live.memory_kib)}->{kib_quantity(want_kib)}"
                if want_kib <= live.max_memory_kib:
                    found.domain.set_live_memory(want_kib)
                    done["memory"] = change
                else:
                    pending["memory"] = change
            desired = desired_definition(vm, domain_type=live.type, macs=kept_macs(vm, live))
            for device in device_differences(live, desired):
                if wants(device):
                    pending[device] = "differ"
            return done, pending

        done, pending = self._run(hypervisor, live_update)
        for field, how in done.items():
            progress.note(f"{field} {how} live")
        parts.extend(f"{field} {how} live" for field, how in done.items())

        if wants("autostart"):

            def autostart(session: Session) -> bool:
                domain = _must_find(session, name, hypervisor).domain
                if domain.autostart() == spec.autostart:
                    return False
                domain.set_autostart(spec.autostart)
                return True

            if self._run(hypervisor, autostart):
                progress.note(f"autostart {'on' if spec.autostart else 'off'}")
                parts.append(f"autostart {'on' if spec.autostart else 'off'}")

        restart_for = ", ".join(
            f"{field} {how}" if how != "differ" else field for field, how in pending.items()
        )
        if power and spec.power == "off":
            how = self._stop(hypervisor, name)
            if how is not None:
                progress.note(how)
                parts.append(how)
        elif pending and inputs.fleet.spec.policies.vmRestarts == "allowed":
            how = self._stop(hypervisor, name) or "was already off"
            self._start(hypervisor, name)
            progress.note("restarted")
            parts.append(f"restarted for {restart_for} ({how})")
        elif pending:
            parts.append(f"restart needed for {restart_for} (policies.vmRestarts is never)")
        elif power and spec.power == "on":
            how = self._start(hypervisor, name)  # starts a stopped domain, resumes a paused one
            if how is not None:
                progress.note(how)
                parts.append(how)
        if redefined:
            parts.append(f"persistent definition updated ({', '.join(redefined)})")
        if not parts:
            return False, f"already as specified on {host}"
        return progress.changed, "; ".join(parts)

    # --- moves and orphans --------------------------------------------------------------

    def _owned_copies(
        self, name: str, exclude: set[str], inputs: RevisionInputs
    ) -> tuple[list[str], list[str]]:
        """Hypervisors (other than `exclude`) holding fleet's domain `name`, and those not read."""

        def holds(session: Session) -> bool:
            try:
                return _inspect(session, name) is not None
            except NotOwnedError:
                return False

        targets, unread = [], []
        for host in self._hypervisor_names(inputs):
            if host in exclude:
                continue
            try:
                targets.append(self._target(host, inputs))
            except _TargetError:
                unread.append(host)
        found = []
        for host, outcome in sorted(self._connections.run_each(targets, holds).items()):
            if isinstance(outcome, FleetError):
                unread.append(host)
            elif outcome:
                found.append(host)
        return found, sorted(unread)

    def _where(self, change: Change, name: str, exclude: set[str], inputs: RevisionInputs) -> list[str]:
        """The hosts a change's domain lives on: the planned `host` before-value, else a search."""
        before = [str(f.before) for f in change.fields if f.field == "host" and f.before]
        named = [h for h in before if h not in exclude and h in inputs.machines]
        if named:
            return named
        found, unread = self._owned_copies(name, exclude, inputs)
        if not found and unread:
            raise TemporaryError(
                f"{change.address} was not found on the hypervisors that answered;"
                f" not read: {', '.join(unread)}"
            )
        return found

    def _replace(
        self,
        change: Change,
        vm: models.VirtualMachine,
        hypervisor: Hypervisor,
        progress: _Progress,
        inputs: RevisionInputs,
    ) -> tuple[bool, str]:
        name, new_host = vm.metadata.name, hypervisor.name
        old_hosts = self._where(change, name, {new_host}, inputs)
        if not old_hosts:
            changed, message = self._create(hypervisor, vm, progress, inputs)
            return changed, f"{message} (no old copy found)"
        stopped: list[tuple[Hypervisor, bool]] = []
        parts = []
        for host in old_hosts:
            old = self._target(host, inputs)
            how = self._stop(old, name)
            if how is not None:
                progress.note(f"{how} on machine/{host}")
                parts.append(f"{how} on machine/{host}")
            stopped.append((old, how is not None))
        try:
            existing = self._run(hypervisor, lambda s: _inspect(s, name))
            if existing is None:
                self._ensure_volumes(hypervisor, vm, progress)
                self._define(hypervisor, vm, progress)
            else:
                self._converge(hypervisor, vm, progress, inputs, touched=None, power=False)
        except FleetError as exc:
            restarted = []
            for old, was_running in stopped:
                if was_running:
                    try:
                        self._start(old, name)
                        restarted.append(f"machine/{old.name}")
                    except FleetError as again:
                        restarted.append(f"not machine/{old.name} ({again.message})")
            note = f"; restarted on {', '.join(restarted)}" if restarted else ""
            message = f"cannot define {vm.address} on machine/{new_host}: {exc}{note}"
            raise (
                TemporaryError(message) if isinstance(exc, TemporaryError) else PermanentError(message)
            ) from None
        if vm.spec.power == "on":
            self._start(hypervisor, name)
            progress.note(f"started on machine/{new_host}")
            parts.append(f"defined and started on machine/{new_host}")
        else:
            parts.append(f"defined on machine/{new_host} (power off, as specified)")
        for old, _ in stopped:
            if self._run(old, lambda s: _undefine(s, name)):
                progress.note(f"undefined on machine/{old.name}")
                parts.append(f"undefined on machine/{old.name} (its volumes are kept)")
        return True, "; ".join(parts)

    def _orphan(self, change: Change, progress: _Progress, inputs: RevisionInputs) -> tuple[bool, str]:
        name = change.address.partition("/")[2]
        hosts = self._where(change, name, set(), inputs)
        if not hosts:
            return False, "not defined on any hypervisor"
        parts = []
        for host in hosts:
            hypervisor = self._target(host, inputs)
            how = self._stop(hypervisor, name)
            if how is not None:
                progress.note(f"{how} on machine/{host}")
            if change.action is Action.POWER_OFF:
                parts.append(f"{how} on machine/{host}" if how else f"already off on machine/{host}")
                continue
            if self._run(hypervisor, lambda s: _undefine(s, name)):
                progress.note(f"undefined on machine/{host}")
                parts.append(
                    f"{how + ' and ' if how else ''}undefined on machine/{host} (its volumes are kept)"
                )
            else:
                parts.append(f"already gone from machine/{host}")
        return progress.changed, "; ".join(parts)

    def close(self) -> None:
        self._connections.close()

    def __enter__(self) -> LibvirtProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _must_find(session: Session, name: str, hypervisor: Hypervisor) -> _Found:
    found = _inspect(session, name)
    if found is None:
        raise PermanentError(f"virtualmachine/{name} is no longer defined on machine/{hypervisor.name}")
    return found


def _undefine(session: Session, name: str) -> bool:
    found = _inspect(session, name)
    if found is None:
        return False
    if found.state.active:
        raise PermanentError(
            f"virtualmachine/{name} on machine/{session.hypervisor.name} is running again; not undefined"
        )
    found.domain.undefine()
    return True
