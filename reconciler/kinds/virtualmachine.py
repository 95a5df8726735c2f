"""VirtualMachines: libvirt domains on hypervisor Machines.

Desired VMs are compared with the domains the hypervisors report. A domain fleet does not
own is reported as unmanaged and never planned for; a VM on a hypervisor that could not be
read is unknown, never absent; a change the hypervisor cannot make live says so, and a
restart is planned only when `policies.vmRestarts` allows it. A VM waits for its host's
power-on; a host powers off only after its guests (and guests leaving it) have stopped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from providers.base import Action, Observation, ObservationState, Observed
from reconciler.errors import PermanentError
from reconciler.kinds.base import Adoption, DiffInputs, Inexpressible, Kind, SpecChange
from reconciler.plan.findings import (
    KindDiff,
    drift_entries,
    enforcement_mode,
    index_observations,
    unknown_entry,
)
from reconciler.plan.graph import Edge
from reconciler.plan.model import FieldDiff, Finding, ObservedState, PlanEntry, action_name
from reconciler.spec import models
from reconciler.spec.diagnostics import YamlPath
from reconciler.spec.quantity import quantity_value

VM_FIELDS: tuple[str, ...] = ("host", "power", "vcpus", "memory", "autostart", "disks", "networks")
"""The live fields of a VirtualMachine that fleet manages (and compares for drift)."""

ADOPTABLE_FIELDS: Mapping[str, YamlPath] = {
    "host": ("spec", "host"),
    "power": ("spec", "power"),
    "vcpus": ("spec", "vcpus"),
    "memory": ("spec", "memory"),
    "autostart": ("spec", "autostart"),
}
"""Where each drift-reportable VM field lives in the spec. The hypervisor reports memory as a
canonical quantity; it is written in the unit the spec uses (`48Gi`, or `49152Mi` beside `32768Mi`)."""

NOT_ADOPTABLE_FIELDS: Mapping[str, str] = {
    "disks": "the live disk list names disks and pools only (no size, no image); edit spec.disks by hand",
    "networks": "fleet does not hot-plug interfaces, and the live list cannot say which spec entry moved;"
    " edit spec.networks by hand",
}

_CONFIG_FIELDS: tuple[str, ...] = (
    "configVcpus",
    "configMemory",
    "maxVcpus",
    "maxMemory",
    "liveMaxVcpus",
    "liveMaxMemory",
)
_RUNNING = frozenset({"on", "paused"})
# Fields a running domain cannot take without a restart when they grow past its maximum
# (or, for devices, at all: fleet does not hot-plug disks or interfaces).
_RESTART_FIELDS = ("vcpus", "memory", "disks", "networks")


def desired_fields(vm: models.VirtualMachine) -> dict[str, Any]:
    """The spec as the provider reports live domains (JSON values, same shapes)."""
    spec = vm.spec
    return {
        "host": spec.host,
        "power": spec.power,
        "vcpus": spec.vcpus,
        "memory": spec.memory,
        "autostart": spec.autostart,
        "disks": [{"name": d.name, "pool": d.pool} for d in spec.disks],
        "networks": [{"network": n.network, "mac": n.mac, "model": n.model} for n in spec.networks],
    }


def same_networks(desired: Sequence[Mapping[str, Any]], live: Sequence[Mapping[str, Any]]) -> bool:
    """A MAC the spec leaves open is whatever the hypervisor generated."""
    if len(desired) != len(live):
        return False
    return all(
        want["network"] == have.get("network")
        and want["model"] == have.get("model")
        and (want["mac"] is None or want["mac"] == have.get("mac"))
        for want, have in zip(desired, live, strict=True)
    )


def _differs(name: str, desired: Any, live: Any) -> bool:
    if name == "networks":
        return not same_networks(desired, live)
    if name == "memory":
        return quantity_value(str(desired)) != quantity_value(str(live))
    return bool(desired != live)


def diff_virtual_machines(
    vms: Sequence[models.VirtualMachine],
    observations: Iterable[Observation],
    unmatched: Iterable[Observation],
    last_applied: Mapping[str, Mapping[str, Any]],
    fleet: models.Fleet,
    machines: Mapping[str, models.Machine],
    *,
    whole_fleet: bool,
    drift_first_seen: Mapping[tuple[str, str], datetime] | None = None,
) -> KindDiff:
    """Entries for every VM spec, for the domains fleet owns whose specs are gone (a
    whole-fleet pass only), and for the domains fleet does not own (unmanaged)."""
    by_address = index_observations(observations)
    first_seen = drift_first_seen or {}
    policies = fleet.spec.policies
    entries: list[PlanEntry] = []
    observed: list[ObservedState] = []
    for vm in vms:
        observation = by_address.get(vm.address)
        if observation is not None:
            observed.append(ObservedState.of(observation, VM_FIELDS + _CONFIG_FIELDS))
        if observation is None or observation.state is ObservationState.UNKNOWN:
            entries.append(unknown_entry(vm.address, "VirtualMachine", observation))
            continue
        host = machines.get(vm.spec.host)
        site = host.spec.site if host is not None else ""
        if observation.state is ObservationState.ABSENT:
            entries.append(_create_entry(vm))
            continue
        if not observation.fields.get("owned", False):
            entries.append(_not_owned_entry(vm.address, observation))
            continue
        applied = last_applied.get(vm.address, {})
        entries.extend(_spec_entries(vm, observation, policies, site))
        entries.extend(
            drift_entries(
                vm.address,
                "VirtualMachine",
                observation,
                _drift_baseline(applied, observation),
                first_seen,
                VM_FIELDS,
            )
        )
    desired = {vm.address for vm in vms}
    orphans: dict[str, Observation | None] = {}
    if whole_fleet:
        for address in last_applied:
            if address.startswith("virtualmachine/") and address not in desired:
                orphans[address] = by_address.get(address)
    for stray in sorted(unmatched, key=lambda o: (o.address, str(o.fields.get("host")))):
        if stray.address in desired:
            continue
        if stray.fields.get("owned", False):
            if whole_fleet:
                orphans[stray.address] = stray
        else:
            entries.append(_unmanaged_entry(stray))
    for address, observation in sorted(orphans.items()):
        if observation is not None:
            observed.append(ObservedState.of(observation, VM_FIELDS))
        entries.append(_orphan_entry(address, observation, policies.orphans))
    return KindDiff(tuple(entries), tuple(observed))


def check_host_capacity(
    vms: Sequence[models.VirtualMachine], machines: Mapping[str, models.Machine], hosts: Iterable[str]
) -> None:
    """Refuse a plan that puts more vCPUs or memory on a hypervisor than its spec says it has."""
    for name in sorted(set(hosts)):
        host = machines.get(name)
        hardware = host.spec.hardware if host is not None else None
        if hardware is None:
            continue
        guests = [vm for vm in vms if vm.spec.host == name and vm.spec.power == "on"]
        vcpus = sum(vm.spec.vcpus for vm in guests)
        memory = sum(quantity_value(vm.spec.memory) for vm in guests)
        problems = []
        if hardware.cpus is not None and vcpus > hardware.cpus:
            problems.append(f"{vcpus} vCPUs on {hardware.cpus} CPUs")
        if hardware.memory is not None and memory > quantity_value(hardware.memory):
            problems.append(f"{memory / 2**30:g} GiB of memory on {hardware.memory}")
        if problems:
            raise PermanentError(
                f"machine/{name} would be over-committed: {' and '.join(problems)}"
                f" ({len(guests)} running VirtualMachines)",
                hint="move VirtualMachines to another hypervisor or make them smaller",
            )


def converged_vm_fields(
    vm: models.VirtualMachine, live: Mapping[str, Any], policies: models.Policies, site: str
) -> dict[str, Any]:
    """The enforced fields of a VM fleet owns that were observed as its spec says."""
    if not live.get("owned", False) or live.get("host") != vm.spec.host:
        return {}
    desired = desired_fields(vm)
    return {
        name: value
        for name, value in desired.items()
        if name in live
        and not _differs(name, value, live[name])
        and (name == "host" or enforcement_mode(policies, name, site) == "enforce")
    }


def _create_entry(vm: models.VirtualMachine) -> PlanEntry:
    fields = tuple(FieldDiff(name, None, value) for name, value in desired_fields(vm).items())
    return PlanEntry(vm.address, vm.kind_name, Finding.CHANGE, Action.CREATE, fields)


def _not_owned_entry(address: str, observation: Observation) -> PlanEntry:
    host = observation.fields.get("host", "?")
    name = address.partition("/")[2]
    return PlanEntry(
        address,
        "VirtualMachine",
        Finding.UNMANAGED,
        fields=(FieldDiff("host", host, None),),
        reason="not-owned",
        detail=(
            f"a domain named {name} on {host} was not made by fleet, so fleet leaves it alone;"
            f" to adopt it, add fleet's ownership metadata to its persistent definition"
        ),
    )


def _unmanaged_entry(stray: Observation) -> PlanEntry:
    host = stray.fields.get("host", "?")
    return PlanEntry(
        stray.address,
        "VirtualMachine",
        Finding.UNMANAGED,
        fields=(FieldDiff("host", host, None), FieldDiff("power", stray.fields.get("power"), None)),
        reason="not-owned",
        detail=f"on {host}; no spec names it and fleet did not make it, so fleet never touches it",
    )


def _orphan_entry(address: str, observation: Observation | None, policy: str) -> PlanEntry:
    detail = f"its spec was removed; the orphans policy is {policy}"
    action: Action | None = None
    fields: tuple[FieldDiff, ...] = ()
    if observation is None or observation.state is ObservationState.UNKNOWN:
        if policy != "report":
            detail += ", but it was not observed, so nothing is done"
    elif observation.state is ObservationState.ABSENT:
        detail += ", and it is already gone"
    else:
        live = observation.fields
        fields = (FieldDiff("host", live.get("host"), None),)
        if policy == "delete":
            action = Action.DELETE
            detail += "; its volumes are kept"
        elif policy == "powerOff":
            if live.get("power") in _RUNNING:
                action = Action.POWER_OFF
                fields += (FieldDiff("power", live.get("power"), "off"),)
            else:
                detail += ", and it is already off"
    return PlanEntry(
        address,
        "VirtualMachine",
        Finding.ORPHANED,
        action,
        fields,
        reason=f"orphans={policy}",
        detail=detail,
    )


def _drift_baseline(applied: Mapping[str, Any], observation: Observation) -> dict[str, Any]:
    """What fleet applied, as comparable with live values (memory in canonical form)."""
    baseline = dict(applied)
    live_memory = observation.fields.get("memory")
    if (
        "memory" in baseline
        and live_memory is not None
        and quantity_value(str(baseline["memory"])) == quantity_value(str(live_memory))
    ):
        baseline["memory"] = live_memory
    live_networks = observation.fields.get("networks")
    if (
        "networks" in baseline
        and live_networks is not None
        and same_networks(baseline["networks"], live_networks)
    ):
        baseline["networks"] = live_networks
    return baseline


def _spec_entries(
    vm: models.VirtualMachine, observation: Observation, policies: models.Policies, site: str
) -> list[PlanEntry]:
    live = observation.fields
    desired = desired_fields(vm)
    if live.get("host") != vm.spec.host:
        fields = tuple(
            FieldDiff(name, live.get(name), value)
            for name, value in desired.items()
            if name == "host" or _differs(name, value, live.get(name))
        )
        return [
            PlanEntry(
                vm.address,
                vm.kind_name,
                Finding.CHANGE,
                Action.REPLACE,
                fields,
                reason="host-changed",
                detail=(
                    f"stopped on {live.get('host')} before it is defined and started on {vm.spec.host};"
                    " the old definition is then removed and its volumes are kept"
                ),
            )
        ]
    enforced: list[FieldDiff] = []
    observed_only: list[FieldDiff] = []
    for name in ("vcpus", "memory", "autostart", "disks", "networks", "power"):
        if name not in live:
            continue  # a field the provider did not report cannot be compared; it is not guessed
        if _differs(name, desired[name], live[name]):
            diff = FieldDiff(name, live[name], desired[name])
            mode = enforcement_mode(policies, name, site)
            (enforced if mode == "enforce" else observed_only).append(diff)
    running = live.get("power") in _RUNNING
    entries: list[PlanEntry] = []
    if observed_only:
        entries.append(
            PlanEntry(
                vm.address,
                vm.kind_name,
                Finding.OBSERVE_ONLY,
                fields=tuple(observed_only),
                reason="policy=observe",
                detail=f"the enforcement policy only observes these fields at site {site}",
            )
        )
    config = [d for d in enforced if d.field != "power"]
    power = [d for d in enforced if d.field == "power"]
    if not config:
        if power:
            action = Action.POWER_ON if vm.spec.power == "on" else Action.POWER_OFF
            entries.append(PlanEntry(vm.address, vm.kind_name, Finding.CHANGE, action, tuple(power)))
        return entries
    needs_restart = sorted(d.field for d in config if running and _needs_restart(d, live))
    if needs_restart and vm.spec.power == "on" and policies.vmRestarts == "never":
        pending = [d for d in config if d.field in needs_restart and _config_holds(d, live)]
        if pending and len(pending) == len(config):
            entries.append(
                PlanEntry(
                    vm.address,
                    vm.kind_name,
                    Finding.OBSERVE_ONLY,
                    fields=tuple(pending) + tuple(power),
                    reason="restart-pending",
                    detail=(
                        "the persistent definition already has these values; they take effect at the"
                        " next restart (policies.vmRestarts is never)"
                    ),
                )
            )
            return entries
    reason, detail = "", ""
    if needs_restart and vm.spec.power == "on":
        if policies.vmRestarts == "allowed":
            reason = "restart"
            detail = f"restarted for {', '.join(needs_restart)} (policies.vmRestarts is allowed)"
        else:
            reason = "restart-needed"
            detail = (
                f"{', '.join(needs_restart)} cannot change while it runs: written to the persistent"
                " definition, takes effect at the next restart (policies.vmRestarts is never)"
            )
    entries.append(
        PlanEntry(
            vm.address, vm.kind_name, Finding.CHANGE, Action.UPDATE, tuple(config + power), reason, detail
        )
    )
    return entries


def _needs_restart(diff: FieldDiff, live: Mapping[str, Any]) -> bool:
    """Whether a running domain can take the change only at a restart: growth past the
    maximum it was started with (the live one; the persistent one may already be higher)."""
    if diff.field == "vcpus":
        maximum = live.get("liveMaxVcpus", live.get("maxVcpus", diff.before))
        return int(diff.after) > int(maximum)
    if diff.field == "memory":
        maximum = live.get("liveMaxMemory", live.get("maxMemory", diff.before))
        return quantity_value(str(diff.after)) > quantity_value(str(maximum))
    return diff.field in _RESTART_FIELDS


def _config_holds(diff: FieldDiff, live: Mapping[str, Any]) -> bool:
    """Whether the persistent definition already has the desired value (only live differs)."""
    if diff.field == "vcpus":
        return bool(live.get("configVcpus") == diff.after)
    if diff.field == "memory":
        config = live.get("configMemory")
        return config is not None and quantity_value(str(config)) == quantity_value(str(diff.after))
    return False


def restart_fields(entry: PlanEntry) -> frozenset[str]:
    """Fields of an UPDATE that stay as they were while the domain runs (no restart allowed)."""
    if entry.reason != "restart-needed":
        return frozenset()
    return frozenset(d.field for d in entry.fields if d.field in _RESTART_FIELDS)


def host_moves(entries: Iterable[PlanEntry]) -> dict[str, str]:
    """VM address -> the host Machine name it leaves (replaced or orphaned VMs)."""
    moves = {}
    for entry in entries:
        if entry.action is None or entry.kind != "VirtualMachine":
            continue
        for diff in entry.fields:
            if diff.field == "host" and diff.before and diff.before != diff.after:
                moves[entry.address] = str(diff.before)
    return moves


_STOPS = frozenset({Action.POWER_OFF, Action.DELETE})
_STARTS = frozenset({Action.POWER_ON, Action.POWER_CYCLE, Action.CREATE, Action.REPLACE})


class VirtualMachineKind(Kind):
    name = "VirtualMachine"
    short_names = ("vm",)
    model = models.VirtualMachine
    provider = "VirtualMachine"
    policy_fields = ("vm",)

    def diff(self, documents: Sequence[models.Document], observed: Observed, inputs: DiffInputs) -> KindDiff:
        return diff_virtual_machines(
            [d for d in documents if isinstance(d, models.VirtualMachine)],
            observed.observations,
            observed.unmatched,
            {address: dict(record.fields) for address, record in inputs.applied_of(self.name).items()},
            inputs.fleet,
            inputs.machines,
            whole_fleet=inputs.whole_fleet,
            drift_first_seen=inputs.first_seen,
        )

    def site(self, document: models.Document, machines: Mapping[str, models.Machine]) -> str:
        """Its host's."""
        assert isinstance(document, models.VirtualMachine)
        host = machines.get(document.spec.host)
        return host.spec.site if host is not None else ""

    def rack(self, document: models.Document, machines: Mapping[str, models.Machine]) -> str:
        """Its host's."""
        assert isinstance(document, models.VirtualMachine)
        host = machines.get(document.spec.host)
        return host.spec.rack if host is not None else ""

    def nested_under(self, document: models.Document) -> str | None:
        assert isinstance(document, models.VirtualMachine)
        return f"machine/{document.spec.host}"

    def references(self, document: models.Document) -> Iterable[str]:
        assert isinstance(document, models.VirtualMachine)
        return (f"machine/{document.spec.host}",)

    def precheck(
        self, everything: Mapping[str, models.Document], selected: Sequence[models.Document]
    ) -> None:
        """No plan may over-commit a hypervisor."""
        hosts = [d.spec.host for d in selected if isinstance(d, models.VirtualMachine)]
        if not hosts:  # nothing to check: no walk over every document
            return
        vms = [d for d in everything.values() if isinstance(d, models.VirtualMachine)]
        machines = {d.metadata.name: d for d in everything.values() if isinstance(d, models.Machine)}
        check_host_capacity(vms, machines, hosts)

    def applied_fields(self, document: models.Document, entry: PlanEntry | None) -> dict[str, Any]:
        assert isinstance(document, models.VirtualMachine)
        desired = desired_fields(document)
        action = entry.action if entry is not None else None
        if entry is None or action in (Action.CREATE, Action.REPLACE):
            return desired
        if action in (Action.POWER_ON, Action.POWER_OFF):
            return {"power": desired["power"]}
        changed = {d.field for d in entry.fields} - restart_fields(entry)
        return {name: desired[name] for name in changed if name in desired}

    def converged_fields(
        self, document: models.Document, live: Mapping[str, Any], inputs: DiffInputs
    ) -> dict[str, Any]:
        assert isinstance(document, models.VirtualMachine)
        return converged_vm_fields(document, live, inputs.policies, self.site(document, inputs.machines))

    def edges(
        self,
        documents: Sequence[models.Document],
        entries: Sequence[PlanEntry],
        planned: Mapping[str, frozenset[Action]],
    ) -> Iterable[Edge]:
        for document in documents:
            if not isinstance(document, models.VirtualMachine):
                continue
            host = f"machine/{document.spec.host}"
            host_actions = planned.get(host, frozenset())
            vm_actions = planned.get(document.address, frozenset())
            if host_actions & _STOPS:
                if vm_actions & _STARTS:
                    starts = ", ".join(sorted(action_name(a) for a in vm_actions & _STARTS))
                    raise PermanentError(
                        f"the plan would {starts} {document.address} on {host}, which it also powers off",
                        hint=f"set {document.address} to power off or keep {host} on",
                    )
                yield (host, document.address)  # stop the guests before their host
            else:
                yield (document.address, host)
        for address, old_host in host_moves(entries).items():
            host = f"machine/{old_host}"
            if planned.get(host, frozenset()) & _STOPS:
                yield (host, address)  # a guest leaves (or stops on) its old host before the host stops

    def where(self, document: models.Document) -> str:
        assert isinstance(document, models.VirtualMachine)
        return f"host {document.spec.host}"

    def what(self, document: models.Document) -> str:
        assert isinstance(document, models.VirtualMachine)
        spec = document.spec
        return f"{spec.vcpus} vCPU, {spec.memory}, power {spec.power}"

    def adopt(self, document: models.Document, field: str, live: Any) -> list[Adoption]:
        if field in NOT_ADOPTABLE_FIELDS:
            return [Inexpressible(NOT_ADOPTABLE_FIELDS[field])]
        path = ADOPTABLE_FIELDS.get(field)
        if path is None:
            return [Inexpressible(f"{field!r} is not a VirtualMachine field fleet manages")]
        if field == "power" and live not in ("on", "off"):
            return [
                Inexpressible(f"the domain is {live}; a spec asks for on or off, so decide which by hand")
            ]
        return [SpecChange(path, live, quantity=field == "memory")]

    def observed_detail(self, fields: Mapping[str, Any]) -> str:
        if "host" not in fields:
            return ""
        owner = "" if fields.get("owned", True) else ", not fleet's"
        return f"on {fields['host']}, {fields.get('vcpus')} vCPU, {fields.get('memory')}{owner}"


KIND = VirtualMachineKind()
