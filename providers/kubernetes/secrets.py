"""Credentials kept in Kubernetes Secrets (`credentialsRef: {kubernetesSecret: ...}`), read
through a kubeconfig (`FLEET_KUBECONFIG`), the cluster fleet runs in (its pod's service
account) or the Cluster the Fleet names as `credentialsCluster`, in that order, with the
Kubernetes provider's own client.

A value read is kept for a minute, so a pass over thousands of BMCs that share one Secret
asks the API server once, and a rotated Secret is seen within the minute. Errors name the
Secret and the key, never a value.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from providers.access import Access
from providers.credentials import Revision
from providers.kubernetes.client import (
    ApiRejected,
    ClusterClient,
    Credentials,
    CredentialsUnusable,
    Target,
    kubeconfig_credentials,
    parse_credentials,
    read_credentials,
    target_of,
)
from reconciler.errors import PermanentError
from reconciler.spec import models

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
KUBECONFIG_VARIABLE = "FLEET_KUBECONFIG"
KEEP_SECONDS = 60.0


def _kubeconfig_server(text: str, what: str) -> str:
    from ruamel.yaml import YAML

    config = YAML(typ="safe", pure=True).load(text)
    if not isinstance(config, dict):
        raise CredentialsUnusable(f"{what} is not a kubeconfig")
    current = config.get("current-context")
    contexts = [c for c in config.get("contexts") or [] if isinstance(c, dict)]
    context = next((c.get("context") for c in contexts if c.get("name") == current), None) or (
        contexts[0].get("context") if len(contexts) == 1 else None
    )
    clusters = [c for c in config.get("clusters") or [] if isinstance(c, dict)]
    name = context.get("cluster") if isinstance(context, dict) else None
    cluster = next((c.get("cluster") for c in clusters if c.get("name") == name), None)
    server = cluster.get("server") if isinstance(cluster, dict) else None
    if not server:
        raise CredentialsUnusable(f"{what} names no server in its current context")
    return str(server).rstrip("/")


class SecretReader:
    """Reads `key` of Secret `namespace/name` for the credential source; thread-safe.

    `connect` makes a client to the API server that holds the Secrets: through a kubeconfig
    (`from_kubeconfig`), a pod's service account (`in_pod`) or a Cluster of the fleet
    (`through_cluster`)."""

    def __init__(self, connect: Callable[[], ClusterClient]) -> None:
        self._connect = connect
        self._lock = threading.Lock()
        self._kept: dict[tuple[str, str, str | None], tuple[float, str]] = {}

    @classmethod
    def of(cls, environment: Mapping[str, str]) -> SecretReader | None:
        """A reader through FLEET_KUBECONFIG, else the pod's service account; None when there is
        neither (the Fleet's credentialsCluster is then the way, if it names one)."""
        path = environment.get(KUBECONFIG_VARIABLE)
        if path:
            return cls.from_kubeconfig(Path(path))
        if environment.get("KUBERNETES_SERVICE_HOST") and (SERVICE_ACCOUNT / "token").is_file():
            return cls.in_pod(environment)
        return None

    @classmethod
    def from_kubeconfig(cls, kubeconfig: Path) -> SecretReader:
        def connect() -> ClusterClient:
            what = f"the kubeconfig {kubeconfig} (for Kubernetes Secret credentials)"
            try:
                text = kubeconfig.read_text(encoding="utf-8")
            except OSError as exc:
                raise CredentialsUnusable(f"cannot read {what}: {exc.strerror}") from None
            server = _kubeconfig_server(text, what)
            credentials = parse_credentials(text, what, kubeconfig.parent)
            return ClusterClient(Target("secrets", server, server, KUBECONFIG_VARIABLE), credentials)

        return cls(connect)

    @classmethod
    def in_pod(cls, environment: Mapping[str, str], service_account: Path = SERVICE_ACCOUNT) -> SecretReader:
        """Through the service account the kubelet mounts at `service_account`."""

        def connect() -> ClusterClient:
            host = environment.get("KUBERNETES_SERVICE_HOST", "")
            port = environment.get("KUBERNETES_SERVICE_PORT", "443")
            server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
            try:
                token = (service_account / "token").read_text().strip()
                ca = (service_account / "ca.crt").read_bytes()
            except OSError as exc:
                raise CredentialsUnusable(f"cannot read the pod's service account: {exc.strerror}") from None
            config = {
                "kind": "Config",
                "current-context": "in-cluster",
                "contexts": [{"name": "in-cluster", "context": {"cluster": "in-cluster", "user": "fleet"}}],
                "clusters": [{"name": "in-cluster", "cluster": {}}],
                "users": [{"name": "fleet", "user": {"token": token}}],
            }
            account = kubeconfig_credentials(config, "the pod's service account")
            return ClusterClient(
                Target("secrets", server, server, "service account"),
                Credentials(token=account.token, ca_pem=ca),
            )

        return cls(connect)

    @classmethod
    def through_cluster(cls, cluster: models.Cluster, revision: Revision, access: Access) -> SecretReader:
        """Through a Cluster of the fleet (its API server, as the endpoint map reaches it, and its
        own credentialsRef): the Fleet's credentialsCluster."""
        return cls(
            lambda: ClusterClient(target_of(cluster, access), read_credentials(cluster, revision, access))
        )

    def __call__(self, namespace: str, name: str, key: str | None) -> str:
        """The value of `key` (or of the Secret's only key, when `key` is None)."""
        wanted = (namespace, name, key)
        with self._lock:
            kept = self._kept.get(wanted)
            if kept is not None and time.monotonic() - kept[0] < KEEP_SECONDS:
                return kept[1]
        value = self._read(namespace, name, key)
        with self._lock:
            self._kept[wanted] = (time.monotonic(), value)
        return value

    def _read(self, namespace: str, name: str, key: str | None) -> str:
        shown = f"Kubernetes Secret {namespace}/{name}"
        client = self._connect()
        try:
            secret = client.request(
                "GET", f"/api/v1/namespaces/{namespace}/secrets/{name}", what=f"read {shown}"
            )
        except ApiRejected as exc:
            if exc.status == 404:
                raise PermanentError(
                    f"{shown} does not exist", hint="create it, or fix kubernetesSecret in fleet.yaml"
                ) from None
            raise
        finally:
            client.close()
        data = secret.get("data") or {}
        if key is None:
            if len(data) != 1:
                keys = ", ".join(sorted(map(str, data))) or "none"
                raise PermanentError(
                    f"{shown} has {len(data)} keys ({keys}), not one",
                    hint="name one with kubernetesSecret.key",
                )
            key = str(next(iter(data)))
        if key not in data:
            keys = ", ".join(sorted(map(str, data))) or "none"
            raise PermanentError(
                f"{shown} has no key {key!r} (its keys: {keys})", hint="fix kubernetesSecret.key"
            )
        try:
            return base64.b64decode(str(data[key]), validate=True).decode("utf-8").strip()
        except (ValueError, UnicodeDecodeError):
            raise PermanentError(f"{shown}: key {key!r} is not base64-encoded UTF-8 text") from None
