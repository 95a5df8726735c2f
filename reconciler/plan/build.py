"""Make a Plan for a fleet repo: observe the selected resources, read what fleet last applied
from the state store, diff, and order the changes.

Building a plan reads live state and the store; it never changes either. Every kind has a
provider: IPMI for Machines, libvirt for VirtualMachines, Kubernetes for Clusters and
SparkPools; the `config` of Machines and VirtualMachines is checked by Ansible when the
context holds the repo's files at the planned revision (`playbook_root`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from providers.base import Observation, ProviderContext
from reconciler.plan.config import config_version, configured, diff_config, observed_config
from reconciler.plan.diff import diff_machines
from reconciler.plan.graph import order_entries
from reconciler.plan.kube import PREFIXES as KUBE_PREFIXES
from reconciler.plan.kube import diff_kubernetes
from reconciler.plan.model import ObservedState, Plan
from reconciler.plan.observe import observe_all
from reconciler.plan.vms import check_host_capacity, diff_virtual_machines
from reconciler.spec import models
from reconciler.state import ObservationRecord, StateStore

_PREFIXES = {"Machine": "machine/", "VirtualMachine": "virtualmachine/"}


def build_plan(
    documents: Sequence[models.Document],
    selected: Sequence[models.Document],
    context: ProviderContext,
    store: StateStore,
    revision: str,
    *,
    whole_fleet: bool,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Plan:
    """`selected` are the resources to plan; `whole_fleet` says nothing was filtered out,
    so resources fleet applied before whose specs are gone are reported as orphaned."""
    machines = [d for d in selected if isinstance(d, models.Machine)]
    vms = [d for d in selected if isinstance(d, models.VirtualMachine)]
    kube = [d for d in selected if isinstance(d, models.Cluster | models.SparkPool)]
    all_vms = [d for d in documents if isinstance(d, models.VirtualMachine)]
    # Refused before anything is observed: no plan may over-commit a hypervisor.
    check_host_capacity(all_vms, context.machines, (vm.spec.host for vm in vms))
    root = context.playbook_root
    checked = configured([*machines, *vms]) if root is not None else []
    digests: dict[str, str] = {}
    versions = {
        d.address: config_version(d.spec.config, root, digests) for d in checked if d.spec.config and root
    }
    observed = observe_all(
        [*machines, *vms, *kube], dataclasses.replace(context, scan_all_hosts=whole_fleet), config=checked
    )
    _save_observations(
        store,
        [*observed.observations, *(u for u in observed.unmatched if u.fields.get("owned"))],
        [observed_config(o, versions[o.address]) for o in observed.config],
    )
    addresses = [d.address for d in (*machines, *vms, *kube)]
    applied = store.get_applied(None if whole_fleet else addresses)
    first_seen = {(d.address, d.field): d.first_seen for d in store.open_drift(addresses)}

    def last_applied(kind: str) -> dict[str, dict[str, object]]:
        return {
            address: dict(record.fields)
            for address, record in applied.items()
            if address.startswith(_PREFIXES[kind]) and (whole_fleet or address in addresses)
        }

    machine_diff = diff_machines(
        machines,
        [o for o in observed.observations if o.address.startswith("machine/")],
        last_applied("Machine"),
        context.fleet.spec.policies,
        drift_first_seen=first_seen,
    )
    vm_diff = diff_virtual_machines(
        vms,
        [o for o in observed.observations if o.address.startswith("virtualmachine/")],
        observed.unmatched,
        last_applied("VirtualMachine"),
        context.fleet,
        context.machines,
        whole_fleet=whole_fleet,
        drift_first_seen=first_seen,
    )
    kube_diff = diff_kubernetes(
        kube,
        [o for o in observed.observations if o.address.startswith(KUBE_PREFIXES)],
        {
            address: (record.spec_hash, record.fields)
            for address, record in applied.items()
            if address.startswith(KUBE_PREFIXES) and (whole_fleet or address in addresses)
        },
        context.fleet.spec.policies,
        whole_fleet=whole_fleet,
        drift_first_seen=first_seen,
    )
    config_diff = diff_config(
        checked,
        observed.config,
        versions,
        {address: record.fields for address, record in applied.items()},
        context.fleet.spec.policies,
        context.machines,
        drift_first_seen=first_seen,
    )
    entries, waves = order_entries(
        documents, machine_diff.entries + vm_diff.entries + kube_diff.entries + config_diff.entries
    )
    observed_states = machine_diff.observed + vm_diff.observed + kube_diff.observed + config_diff.observed
    return Plan(revision, clock(), entries, observed_states, waves)


def _save_observations(
    store: StateStore, observations: Sequence[Observation], config: Sequence[ObservedState] = ()
) -> None:
    """The store keeps the last observation of every resource (what the controller and PR
    comments show between passes); unknown ones are kept too, with their reason. A checked
    configuration is kept with its resource, as counts and coverage (`config`)."""
    summaries = {c.address: dict(c.fields).get("config") for c in config}
    store.save_observations(
        [
            ObservationRecord(
                o.address,
                o.state.value,
                {
                    **{k: v for k, v in o.fields.items() if k != "inventory"},
                    **({"config": summaries[o.address]} if summaries.get(o.address) else {}),
                },
                o.reason.value if o.reason else None,
                o.observed_at,
            )
            for o in observations
        ]
    )
