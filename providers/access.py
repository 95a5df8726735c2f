"""How providers reach live infrastructure: an endpoint map and a credential source.

Specs say where things are as the datacenter knows them ("10.128.1.11:623"). A deployment
that reaches them another way (through NAT, a bastion's forwarded ports, or the simulated
lab on loopback) gives an endpoint map: where to really connect per written endpoint, a
libvirt URI per hypervisor, SSH connection variables per Ansible host, provider settings
that beat fleet.yaml's, and a credential source per credentialsRef. It is built once at the
edge (the CLI or the controller, from settings) and handed to the provider pool; providers
never know whether they talk to a datacenter or a lab.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from providers.base import Endpoint
from providers.credentials import Credentials, ReadSecret, Revision
from reconciler.errors import UsageError
from reconciler.spec import models

_SETTINGS = ("ipmi", "libvirt", "ansible")


@dataclasses.dataclass(frozen=True)
class EndpointMap:
    """Where to really connect, where it is not where the specs say. Empty: as the specs say."""

    endpoints: Mapping[str, Endpoint] = dataclasses.field(default_factory=dict)
    hypervisor_uris: Mapping[str, str] = dataclasses.field(default_factory=dict)
    ansible_hosts: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=dict)
    settings: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)

    def endpoint(self, host: str, port: int) -> Endpoint:
        written = Endpoint(host, port)
        return self.endpoints.get(str(written), written)

    def provider_settings(self, fleet: models.Fleet) -> models.ProviderSettings:
        """fleet.yaml's provider settings, with this map's settings over them (validated)."""
        providers = fleet.spec.providers
        update = {
            name: getattr(providers, name).model_copy(update=dict(self.settings[name]))
            for name in _SETTINGS
            if self.settings.get(name)
        }
        return providers.model_copy(update=update) if update else providers


@dataclasses.dataclass(frozen=True)
class Access:
    """The endpoint map and the credential source, together: what a provider pool is built with."""

    endpoints: EndpointMap = dataclasses.field(default_factory=EndpointMap)
    credentials: Credentials = dataclasses.field(default_factory=Credentials)


def build_access(
    endpoints: EndpointMap,
    environment: Mapping[str, str],
    sources: Mapping[str, models.CredentialSource] | None = None,
) -> Access:
    """An endpoint map with its credential source, which reads Kubernetes Secrets through
    FLEET_KUBECONFIG or the pod's service account, else through the Fleet's credentialsCluster
    as `endpoints` reach it. The Kubernetes client is imported when a Secret is first read."""

    def through_cluster(cluster: models.Cluster, revision: Revision, credentials: Credentials) -> ReadSecret:
        from providers.kubernetes.secrets import SecretReader

        return SecretReader.through_cluster(cluster, revision, Access(endpoints, credentials))

    reader: ReadSecret | None = None
    if environment.get("FLEET_KUBECONFIG") or environment.get("KUBERNETES_SERVICE_HOST"):
        from providers.kubernetes.secrets import SecretReader

        reader = SecretReader.of(environment)
    return Access(endpoints, Credentials(environment, sources, reader, through_cluster))


def load_access(path: Path | None, environment: Mapping[str, str]) -> Access:
    """The access of a deployment: the environment's credentials and, when `path` is given, the
    endpoint map in that file (the lab writes one; production needs none):

    {"endpoints": {"10.128.1.11:623": "127.10.0.1:623"},
     "credentials": {"bmc-nyc1": {"file": "..."}, "env:VAR": {"file": "..."}},
     "hypervisors": {"nyc1-r01-01": "test+unix:///default?socket=..."},
     "ansibleHosts": {"nyc1-r01-01": {"ansible_host": "127.10.0.1", "ansible_port": "2222", ...}},
     "settings": {"ipmi": {...}, "libvirt": {...}, "ansible": {...}}}
    """
    if path is None:
        return build_access(EndpointMap(), environment)
    try:
        document = json.loads(path.read_text())
        endpoints: dict[str, Endpoint] = {}
        for written, actual in document.get("endpoints", {}).items():
            host, _, port = str(actual).rpartition(":")
            endpoints[str(written)] = Endpoint(host.strip("[]"), int(port))
        sources = {
            str(name): models.CredentialSource.model_validate(source)
            for name, source in document.get("credentials", {}).items()
        }
        settings = document.get("settings", {})
        endpoint_map = EndpointMap(
            endpoints,
            {str(name): str(uri) for name, uri in document.get("hypervisors", {}).items()},
            {
                str(host): {str(k): str(v) for k, v in variables.items()}
                for host, variables in document.get("ansibleHosts", {}).items()
            },
            {name: dict(settings[name]) for name in _SETTINGS if settings.get(name)},
        )
        return build_access(endpoint_map, environment, sources)
    except OSError as exc:
        raise UsageError(f"cannot read the endpoint map {path}: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UsageError(
            f"{path} is not an endpoint map",
            hint='expected {"endpoints": {"ADDRESS:PORT": "HOST:PORT"}, "credentials": {...}}',
        ) from None
