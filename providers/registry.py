"""Which provider serves which kind: the engine's only way to reach providers."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from providers.base import Endpoint, Provider, ProviderContext
from reconciler.errors import UsageError
from reconciler.spec import models


def _ipmi(context: ProviderContext) -> Provider:
    from providers.ipmi.provider import IpmiProvider

    return IpmiProvider(context)


def _libvirt(context: ProviderContext) -> Provider:
    from providers.libvirt.provider import LibvirtProvider

    return LibvirtProvider(context)


def _kubernetes(kind: str) -> Callable[[ProviderContext], Provider]:
    def factory(context: ProviderContext) -> Provider:
        from providers.kubernetes.provider import KubernetesProvider

        return KubernetesProvider(context, kind)

    return factory


FACTORIES: Mapping[str, Callable[[ProviderContext], Provider]] = {
    "Machine": _ipmi,
    "VirtualMachine": _libvirt,
    "Cluster": _kubernetes("Cluster"),
    "SparkPool": _kubernetes("SparkPool"),
}


def provider_for(kind: str, context: ProviderContext) -> Provider:
    try:
        factory = FACTORIES[kind]
    except KeyError:
        raise UsageError(f"no provider observes {kind} resources yet") from None
    return factory(context)


def config_provider(context: ProviderContext) -> Provider:
    """The provider of Machines' and VirtualMachines' `spec.config` (Ansible): a second provider
    for those kinds, driven by the `configure` action."""
    from providers.ansible.provider import AnsibleProvider
    from providers.ansible.runner import RunSettings

    settings = context.ansible()
    artifacts = settings.artifactsDir or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "fleet", "ansible"
    )
    return AnsibleProvider(
        context,
        context.playbook_root,
        connection_overrides=context.ansible_hosts,
        settings=RunSettings(
            forks=settings.forks,
            timeout_seconds=settings.timeoutSeconds,
            host_key_checking=settings.hostKeyChecking,
        ),
        artifacts_dir=Path(artifacts),
    )


def ansible_host_names(documents: Sequence[models.Document]) -> dict[str, str]:
    """The inventory host name of every Machine and VirtualMachine, by address."""
    from providers.ansible.inventory import host_names

    return host_names(documents)


def ansible_inventory(documents: Sequence[models.Document], fleet: models.Fleet, output: str) -> str:
    """The Ansible inventory of a fleet (hosts with `config`): INI, or dynamic-inventory JSON."""
    from providers.ansible.inventory import build_inventory, render_ini

    inventory = build_inventory(documents, fleet)
    return render_ini(inventory) if output == "ini" else json.dumps(inventory, indent=2) + "\n"


@dataclasses.dataclass(frozen=True)
class Overrides:
    endpoints: dict[str, Endpoint]
    credentials: dict[str, models.CredentialSource]
    ipmi: dict[str, Any]
    libvirt: dict[str, Any] = dataclasses.field(default_factory=dict)
    hypervisor_uris: dict[str, str] = dataclasses.field(default_factory=dict)
    ansible: dict[str, Any] = dataclasses.field(default_factory=dict)
    ansible_hosts: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)


def load_overrides(path: Path) -> Overrides:
    """Read a lab's override file (written by `fleet lab up`; production never has one):
    {"endpoints": {"10.128.1.11:623": "127.10.0.1:623"}, "credentials": {"bmc-nyc1": {"file": "..."}},
     "hypervisors": {"nyc1-r01-01": "test+unix:///default?socket=..."},
     "ansibleHosts": {"nyc1-r01-01": {"ansible_host": "127.10.0.1", "ansible_port": "2222", ...}},
     "settings": {"ipmi": {}, "libvirt": {}, "ansible": {}}}
    """
    try:
        document = json.loads(path.read_text())
        endpoints: dict[str, Endpoint] = {}
        for written, actual in document.get("endpoints", {}).items():
            host, _, port = str(actual).rpartition(":")
            endpoints[str(written)] = Endpoint(host.strip("[]"), int(port))
        credentials = {
            str(name): models.CredentialSource.model_validate(source)
            for name, source in document.get("credentials", {}).items()
        }
        settings = document.get("settings", {})
        hypervisors = {str(name): str(uri) for name, uri in document.get("hypervisors", {}).items()}
        ansible_hosts = {
            str(host): {str(k): str(v) for k, v in variables.items()}
            for host, variables in document.get("ansibleHosts", {}).items()
        }
        return Overrides(
            endpoints,
            credentials,
            dict(settings.get("ipmi", {})),
            dict(settings.get("libvirt", {})),
            hypervisors,
            dict(settings.get("ansible", {})),
            ansible_hosts,
        )
    except OSError as exc:
        raise UsageError(f"cannot read lab overrides {path}: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UsageError(
            f"{path} is not a lab override file",
            hint='expected {"endpoints": {"ADDRESS:PORT": "HOST:PORT"}, "credentials": {...}}',
        ) from None
