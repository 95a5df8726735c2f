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
from pathlib import Path

from providers.base import Observation, ProviderContext, UnknownReason
from providers.registry import FACTORIES, load_overrides, provider_for
from reconciler.spec import models


def provider_context(
    fleet: models.Fleet,
    overrides_path: Path | None,
    environment: Mapping[str, str] | None = None,
    documents: Sequence[models.Document] = (),
) -> ProviderContext:
    """`documents` are every document of the repo: VirtualMachines find their hosts among them."""
    overrides = load_overrides(overrides_path) if overrides_path is not None else None
    ipmi = libvirt = None
    if overrides is not None and overrides.ipmi:
        ipmi = fleet.spec.providers.ipmi.model_copy(update=overrides.ipmi)
    if overrides is not None and overrides.libvirt:
        libvirt = fleet.spec.providers.libvirt.model_copy(update=overrides.libvirt)
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
    )


@dataclasses.dataclass(frozen=True)
class Observed:
    """One observation per document, and what the providers saw that no document names."""

    observations: list[Observation]
    unmatched: list[Observation]


def observe_documents(documents: Sequence[models.Document], context: ProviderContext) -> list[Observation]:
    return observe_all(documents, context).observations


def observe_all(documents: Sequence[models.Document], context: ProviderContext) -> Observed:
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
