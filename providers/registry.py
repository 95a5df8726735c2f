"""Which provider serves which kind, and the pool that keeps providers alive across runs: the
engine's only way to reach providers.

The pool is owned by its caller (the CLI for one command, the controller for its whole life).
It makes a kind's provider when first asked and keeps it, with its sessions, connections,
clients and caches, for as long as the provider settings it was made with hold; a revision
that changes them gets a new provider and the old one is closed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from providers.access import Access
from providers.base import BatchProvider, Provider
from reconciler.errors import UsageError
from reconciler.spec import models

Factory = Callable[[models.ProviderSettings, Access, Path], Provider]
"""Makes a provider from the provider settings, the access, and a directory it may keep files in."""


def _ipmi(settings: models.ProviderSettings, access: Access, state_dir: Path) -> Provider:
    from providers.ipmi.provider import IpmiProvider

    return IpmiProvider(settings.ipmi, access)


def _libvirt(settings: models.ProviderSettings, access: Access, state_dir: Path) -> Provider:
    from providers.libvirt.provider import LibvirtProvider

    return LibvirtProvider(settings.libvirt, access)


def _kubernetes(kind: str) -> Factory:
    def factory(settings: models.ProviderSettings, access: Access, state_dir: Path) -> Provider:
        from providers.kubernetes.provider import KubernetesProvider

        return KubernetesProvider(access, kind)

    return factory


def _ansible(settings: models.ProviderSettings, access: Access, state_dir: Path) -> Provider:
    from providers.ansible.provider import AnsibleProvider
    from providers.ansible.runner import RunSettings

    ansible = settings.ansible
    artifacts = Path(ansible.artifactsDir) if ansible.artifactsDir else state_dir / "ansible"
    return AnsibleProvider(
        access,
        settings=RunSettings(
            forks=ansible.forks,
            timeout_seconds=ansible.timeoutSeconds,
            host_key_checking=ansible.hostKeyChecking,
        ),
        artifacts_dir=artifacts,
    )


CONFIG = "AnsibleConfig"
"""The key of the provider of Machines' and VirtualMachines' `spec.config` (Ansible): a second
provider for those kinds, driven by the `configure` action."""

FACTORIES: Mapping[str, Factory] = {
    "Machine": _ipmi,
    "VirtualMachine": _libvirt,
    "Cluster": _kubernetes("Cluster"),
    "SparkPool": _kubernetes("SparkPool"),
    CONFIG: _ansible,
}

# The part of the provider settings each provider is made with: a change elsewhere keeps it.
_SETTINGS_OF = {"Machine": "ipmi", "VirtualMachine": "libvirt", CONFIG: "ansible"}


class ProviderPool:
    """Providers by key (a kind, or CONFIG), made on first use and kept until `close`. Thread-safe."""

    def __init__(self, access: Access, state_dir: Path, factories: Mapping[str, Factory] = FACTORIES) -> None:
        self.access = access
        self.state_dir = state_dir  # where providers keep files of their own (Ansible's artifacts)
        self._factories = factories
        self._lock = threading.Lock()
        self._providers: dict[str, tuple[str, Provider]] = {}
        self._closed = False

    def serves(self, key: str) -> bool:
        return key in self._factories

    def provider(self, key: str, fleet: models.Fleet) -> Provider:
        """The provider for `key` made with the fleet's provider settings (and the endpoint map's)."""
        try:
            factory = self._factories[key]
        except KeyError:
            raise UsageError(f"no provider observes {key} resources yet") from None
        settings = self.access.endpoints.provider_settings(fleet)
        part = _SETTINGS_OF.get(key)
        fingerprint = (
            json.dumps(getattr(settings, part).model_dump(mode="json"), sort_keys=True) if part else ""
        )
        stale: Provider | None = None
        with self._lock:
            if self._closed:
                raise UsageError("the provider pool is closed")
            held = self._providers.get(key)
            if held is not None and held[0] == fingerprint:
                return held[1]
            made = factory(settings, self.access, self.state_dir)
            self._providers[key] = (fingerprint, made)
            stale = held[1] if held is not None else None
        if stale is not None:
            stale.close()
        return made

    def config_provider(self, fleet: models.Fleet) -> BatchProvider:
        provider = self.provider(CONFIG, fleet)
        assert isinstance(provider, BatchProvider)
        return provider

    def close(self) -> None:
        with self._lock:
            self._closed = True
            held, self._providers = list(self._providers.values()), {}
        for _, provider in held:
            provider.close()

    def __enter__(self) -> ProviderPool:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def ansible_host_names(documents: Sequence[models.Document]) -> dict[str, str]:
    """The inventory host name of every Machine and VirtualMachine, by address."""
    from providers.ansible.inventory import host_names

    return host_names(documents)


def ansible_inventory(documents: Sequence[models.Document], fleet: models.Fleet, output: str) -> str:
    """The Ansible inventory of a fleet (hosts with `config`): INI, or dynamic-inventory JSON."""
    from providers.ansible.inventory import build_inventory, render_ini

    inventory: Any = build_inventory(documents, fleet)
    return render_ini(inventory) if output == "ini" else json.dumps(inventory, indent=2) + "\n"
