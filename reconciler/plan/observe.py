"""Ask the providers what is live right now, for a set of desired documents.

Observing never changes anything. Documents are grouped by kind and handed to the
provider the registry names for that kind; a kind without a provider yet is
reported as not observed rather than guessed.
"""

from __future__ import annotations

import dataclasses
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from providers.base import Observation, ProviderContext, UnknownReason
from providers.registry import FACTORIES, config_provider, load_overrides, provider_for
from reconciler.spec import models


def provider_context(
    fleet: models.Fleet,
    overrides_path: Path | None,
    environment: Mapping[str, str] | None = None,
    documents: Sequence[models.Document] = (),
) -> ProviderContext:
    """`documents` are every document of the repo: VirtualMachines find their hosts among them."""
    overrides = load_overrides(overrides_path) if overrides_path is not None else None
    ipmi = libvirt = ansible = None
    if overrides is not None and overrides.ipmi:
        ipmi = fleet.spec.providers.ipmi.model_copy(update=overrides.ipmi)
    if overrides is not None and overrides.libvirt:
        libvirt = fleet.spec.providers.libvirt.model_copy(update=overrides.libvirt)
    if overrides is not None and overrides.ansible:
        ansible = fleet.spec.providers.ansible.model_copy(update=overrides.ansible)
    return ProviderContext(
        fleet=fleet,
        endpoint_overrides=overrides.endpoints if overrides else {},
        credential_overrides=overrides.credentials if overrides else {},
        environment=dict(os.environ if environment is None else environment),
        ipmi_settings=ipmi,
        libvirt_settings=libvirt,
        machines={d.metadata.name: d for d in documents if isinstance(d, models.Machine)},
        documents={d.address: d for d in documents if not isinstance(d, models.Fleet)},
        hypervisor_uris=overrides.hypervisor_uris if overrides else {},
        ansible_hosts=overrides.ansible_hosts if overrides else {},
        ansible_settings=ansible,
    )


@dataclasses.dataclass(frozen=True)
class Observed:
    """One observation per document, what the providers saw that no document names, and the
    configuration (Ansible check mode) of the documents whose configuration was asked for."""

    observations: list[Observation]
    unmatched: list[Observation]
    config: list[Observation] = dataclasses.field(default_factory=list)


def observe_documents(documents: Sequence[models.Document], context: ProviderContext) -> list[Observation]:
    return observe_all(documents, context).observations


def observe_all(
    documents: Sequence[models.Document],
    context: ProviderContext,
    *,
    config: Sequence[models.Document] = (),
) -> Observed:
    """`config` are documents whose `spec.config` is checked too (needs `context.playbook_root`).
    Ansible runs in processes of its own, so the check runs alongside the other providers."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fleet-config") as pool:
        checked = pool.submit(_observe_config, config, context) if config else None
        observed = _observe_kinds(documents, context)
        if checked is not None:
            observed = dataclasses.replace(observed, config=checked.result())
    return observed


def _observe_config(documents: Sequence[models.Document], context: ProviderContext) -> list[Observation]:
    provider = config_provider(context)
    try:
        return sorted(provider.observe(documents), key=lambda o: o.address)
    finally:
        provider.close()


def _observe_kinds(documents: Sequence[models.Document], context: ProviderContext) -> Observed:
    by_kind: dict[str, list[models.Document]] = defaultdict(list)
    for document in documents:
        by_kind[document.kind_name].append(document)
    observations: list[Observation] = []
    unmatched: list[Observation] = []
    for kind, group in sorted(by_kind.items()):
        if kind not in FACTORIES:
            observations.extend(
                Observation.unknown(
                    d.address, UnknownReason.NOT_ATTEMPTED, f"no provider observes {kind} yet"
                )
                for d in group
            )
            continue
        provider = provider_for(kind, context)
        try:
            observations.extend(provider.observe(group))
            unmatched.extend(provider.unmatched())
        finally:
            provider.close()
    return Observed(sorted(observations, key=lambda o: o.address), unmatched)
