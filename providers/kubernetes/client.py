"""One Kubernetes API client per Cluster: where to connect, with which credentials, errors mapped.

The only module that imports the `kubernetes` package (and urllib3 beneath it). The server is
always the Cluster's `spec.apiServer`, or the lab's endpoint override for its host:port. The
credentials are read at the moment of use from the Cluster's credentialsRef: a kubeconfig (its
current context's user token or client certificate, its cluster's CA or insecure-skip-tls-verify)
or a bare bearer token verified against the system CAs. In-cluster service-account credentials
and kubeconfig exec/auth-provider plugins are not supported yet. Every kubernetes and urllib3
exception becomes a fleet error here, and no message ever carries a token.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import shutil
import ssl
import tempfile
import threading
import urllib.parse
import urllib.request
import warnings
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import kubernetes.client  # type: ignore[import-untyped]
import urllib3
from kubernetes.client.exceptions import (  # type: ignore[import-untyped]
    ApiException,
    OpenApiException,
)
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from providers.access import Access
from providers.base import UnknownReason
from providers.credentials import Revision, Secret, describe, reference_key
from reconciler.errors import FleetError, PermanentError, TemporaryError
from reconciler.spec import models

# Skipping TLS verification is what a kubeconfig's insecure-skip-tls-verify asks for, and kubectl
# says nothing of it either. The kubernetes client reads error responses' headers with a method
# urllib3 2 deprecates; that is its business, not a fleet user's.
warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"kubernetes\.client\.rest")

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 10.0
LIST_PAGE = 500
FIELD_MANAGER = "fleet"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"

Obj = dict[str, Any]


# --- errors ------------------------------------------------------------------------------


class ClusterUnreachable(TemporaryError):
    """The API server did not answer, or not in Kubernetes' terms: refused, timed out, unknown
    name, TLS failure, a body that is not JSON."""

    def __init__(self, message: str, reason: UnknownReason, *, hint: str | None = None) -> None:
        super().__init__(message, delay=5.0, hint=hint)
        self.reason = reason


class ClusterAuthFailed(PermanentError):
    """The API server rejected the credentials (401) or forbade the request (403)."""

    reason = UnknownReason.AUTH_FAILURE

    def __init__(self, message: str, status: int, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class CredentialsUnusable(PermanentError):
    """The credentialsRef cannot be read, or is not a kubeconfig or token fleet can use."""

    reason = UnknownReason.CREDENTIALS_MISSING


class ApiRejected(PermanentError):
    """The API server refused a request (400, 404, 422, ...) for a reason retrying cannot fix."""

    reason = UnknownReason.PROTOCOL_ERROR

    def __init__(
        self, message: str, status: int, status_reason: str = "", *, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.status_reason = status_reason


class ApiConflict(TemporaryError):
    """409: a stale resourceVersion, or fields other managers own (`conflicts`: field, manager)."""

    reason = UnknownReason.PROTOCOL_ERROR

    def __init__(self, message: str, conflicts: list[tuple[str, str]]) -> None:
        super().__init__(message, delay=1.0)
        self.conflicts = conflicts


class ApiUnavailable(TemporaryError):
    """429 or 5xx: the API server is overloaded or failing; worth retrying later."""

    reason = UnknownReason.PROTOCOL_ERROR


def unknown_reason(error: FleetError) -> UnknownReason:
    reason = getattr(error, "reason", None)
    return reason if isinstance(reason, UnknownReason) else UnknownReason.PROTOCOL_ERROR


# --- resources ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Resource:
    """A served resource: how its objects are named in URLs."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        where = f"/namespaces/{_quote(namespace)}" if self.namespaced and namespace else ""
        tail = f"/{_quote(name)}" if name else ""
        return f"{base}{where}/{self.plural}{tail}"


def _quote(part: str) -> str:
    return urllib.parse.quote(part, safe="")


_BUILTIN = [
    Resource("v1", "Namespace", "namespaces", False),
    Resource("v1", "Node", "nodes", False),
    Resource("v1", "ConfigMap", "configmaps", True),
    Resource("v1", "Secret", "secrets", True),
    Resource("v1", "ServiceAccount", "serviceaccounts", True),
    Resource("v1", "ResourceQuota", "resourcequotas", True),
    Resource("v1", "LimitRange", "limitranges", True),
    Resource("v1", "Service", "services", True),
    Resource("rbac.authorization.k8s.io/v1", "Role", "roles", True),
    Resource("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings", True),
    Resource("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", False),
    Resource("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "clusterrolebindings", False),
    Resource("scheduling.k8s.io/v1", "PriorityClass", "priorityclasses", False),
    Resource("apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", False),
    # Volcano's CRD: its name and scope are fixed upstream, so no discovery request is needed.
    Resource("scheduling.volcano.sh/v1beta1", "Queue", "queues", False),
]
BUILTIN_RESOURCES: Mapping[tuple[str, str], Resource] = {(r.api_version, r.kind): r for r in _BUILTIN}
NODE = BUILTIN_RESOURCES[("v1", "Node")]
CRD = BUILTIN_RESOURCES[("apiextensions.k8s.io/v1", "CustomResourceDefinition")]


# --- credentials -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Credentials:
    """How to authenticate and verify TLS; PEM material is kept in memory until connecting."""

    token: Secret | None = None
    client_cert_pem: bytes | None = None
    client_key_pem: Secret | None = None
    ca_pem: bytes | None = None
    insecure: bool = False
    tls_server_name: str | None = None
    proxy_url: str | None = None


def _load_yaml(text: str) -> Any:
    try:
        return YAML(typ="safe", pure=True).load(text)
    except YAMLError:
        return None


def _file_or_data(
    section: Mapping[str, Any], data_key: str, file_key: str, base: Path | None, what: str
) -> bytes | None:
    data = section.get(data_key)
    if data:
        try:
            return base64.b64decode(str(data), validate=True)
        except ValueError:
            raise CredentialsUnusable(f"{what}: {data_key} is not base64") from None
    path = section.get(file_key)
    if path:
        full = Path(str(path))
        if not full.is_absolute() and base is not None:
            full = base / full
        try:
            return full.read_bytes()
        except OSError as exc:
            raise CredentialsUnusable(f"{what}: cannot read {file_key} {full}: {exc.strerror}") from None
    return None


def _named(entries: Any, name: str, section: str) -> Mapping[str, Any]:
    for entry in entries or []:
        if isinstance(entry, dict) and entry.get("name") == name and isinstance(entry.get(section), dict):
            found: Mapping[str, Any] = entry[section]
            return found
    return {}


def kubeconfig_credentials(config: Mapping[str, Any], what: str, base: Path | None = None) -> Credentials:
    """The current context's user and cluster TLS settings of a parsed kubeconfig (server ignored)."""
    contexts = [c for c in config.get("contexts") or [] if isinstance(c, dict)]
    current = config.get("current-context")
    if not current and len(contexts) == 1:
        current = contexts[0].get("name")
    context = _named(contexts, str(current), "context") if current else {}
    if not context:
        raise CredentialsUnusable(
            f"{what} is a kubeconfig without a usable current-context",
            hint="set current-context to a context naming a cluster and a user",
        )
    user = _named(config.get("users"), str(context.get("user", "")), "user")
    cluster = _named(config.get("clusters"), str(context.get("cluster", "")), "cluster")
    if user.get("exec") or user.get("auth-provider"):
        raise CredentialsUnusable(
            f"{what}: the user of context {current} authenticates with an exec or auth-provider plugin,"
            " which fleet does not run",
            hint="give fleet a kubeconfig with a token or a client certificate",
        )
    token = user.get("token")
    if not token and user.get("tokenFile"):
        token_bytes = _file_or_data(user, "", "tokenFile", base, what)
        token = token_bytes.decode().strip() if token_bytes else None
    cert = _file_or_data(user, "client-certificate-data", "client-certificate", base, what)
    key = _file_or_data(user, "client-key-data", "client-key", base, what)
    if (cert is None) != (key is None):
        raise CredentialsUnusable(f"{what}: a client certificate needs its key, and a key its certificate")
    if not token and cert is None:
        raise CredentialsUnusable(
            f"{what}: the user of context {current} has neither a token nor a client certificate",
            hint="fleet authenticates with a bearer token or a client certificate",
        )
    return Credentials(
        token=Secret(str(token)) if token else None,
        client_cert_pem=cert,
        client_key_pem=Secret(key.decode()) if key is not None else None,
        ca_pem=_file_or_data(cluster, "certificate-authority-data", "certificate-authority", base, what),
        insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
        tls_server_name=str(cluster["tls-server-name"]) if cluster.get("tls-server-name") else None,
        proxy_url=str(cluster["proxy-url"]) if cluster.get("proxy-url") else None,
    )


def parse_credentials(text: str, what: str, base: Path | None = None) -> Credentials:
    """A kubeconfig (YAML with `kind: Config`) or else a bearer token."""
    stripped = text.strip()
    looks_like_yaml = ":" in stripped or any(c.isspace() for c in stripped)  # a token has neither
    if looks_like_yaml:
        config = _load_yaml(stripped)
        if isinstance(config, dict) and config.get("kind") == "Config":
            return kubeconfig_credentials(config, what, base)
    if not stripped or looks_like_yaml:
        raise CredentialsUnusable(
            f"{what} holds neither a kubeconfig nor a bearer token",
            hint="store a kubeconfig (kind: Config) or the token alone on one line",
        )
    return Credentials(token=Secret(stripped))


# --- the client --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a Cluster's API server is, as written and as actually reached, and whose credentials."""

    cluster: str
    url: str  # as the spec writes it
    actual_url: str  # after the lab's endpoint override
    credentials_name: str

    @property
    def shown(self) -> str:
        return f"the API server of cluster {self.cluster} ({self.url})"


def target_of(cluster: models.Cluster, access: Access) -> Target:
    url = cluster.spec.apiServer.rstrip("/")
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname or ""
    endpoint = access.endpoints.endpoint(host, port)
    actual = f"{parts.scheme}://{endpoint}"
    return Target(cluster.metadata.name, url, actual, reference_key(cluster.spec.credentialsRef))


def read_credentials(cluster: models.Cluster, revision: Revision, access: Access) -> Credentials:
    ref = cluster.spec.credentialsRef
    name = reference_key(ref)
    try:
        source = access.credentials.source(ref, revision.fleet)
        secret = access.credentials.read(source, revision)
    except PermanentError as exc:
        raise CredentialsUnusable(f"cluster {cluster.metadata.name}: {exc.message}", hint=exc.hint) from None
    base = Path(source.file).parent if source.file else None
    return parse_credentials(secret.reveal(), f"credentials {name} ({describe(source)})", base)


def _system_ca_file() -> str | None:
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None  # the kubernetes client then uses certifi's bundle


def _proxy_for(url: str, configured: str | None) -> str | None:
    if configured:
        return configured
    host = urllib.parse.urlsplit(url).hostname or ""
    if urllib.request.proxy_bypass(host):
        return None
    proxies = urllib.request.getproxies_environment()
    return proxies.get(urllib.parse.urlsplit(url).scheme) or None


# urllib3 2 tells a name that does not resolve from a refused connection; urllib3 1 does not.
_NAME_RESOLUTION_ERROR: Any = getattr(urllib3.exceptions, "NameResolutionError", ())


def _parse_conflicts(body: Mapping[str, Any]) -> list[tuple[str, str]]:
    out = []
    for cause in (body.get("details") or {}).get("causes") or []:
        if not isinstance(cause, dict):
            continue
        if (cause.get("reason") or cause.get("type")) != "FieldManagerConflict":
            continue
        message = str(cause.get("message", ""))
        manager = message.removeprefix("conflict with ").strip()
        if manager.startswith('"'):
            end = manager.find('"', 1)
            manager = manager[1:end] if end > 0 else manager.strip('"')
        out.append((str(cause.get("field", "")).lstrip("."), manager))
    return out


class ClusterClient:
    """Requests to one Cluster's API server; thread-safe. Raises fleet errors only."""

    def __init__(
        self,
        target: Target,
        credentials: Credentials,
        *,
        timeout: tuple[float, float] = (CONNECT_TIMEOUT, READ_TIMEOUT),
        max_connections: int = 16,
    ) -> None:
        self.target = target
        self.timeout = timeout
        # Like kubectl, never send credentials over an unencrypted connection.
        self.plain_http = target.actual_url.startswith("http://")
        if self.plain_http:
            credentials = Credentials()
        self._secrets = [
            s.reveal()
            for s in (credentials.token, credentials.client_key_pem)
            if s is not None and s.reveal()
        ]
        self._tempdir: Path | None = None
        self._cleanup: weakref.finalize[Any, Any] | None = None
        configuration = kubernetes.client.Configuration(host=target.actual_url)
        configuration.proxy = _proxy_for(target.actual_url, credentials.proxy_url)
        configuration.no_proxy = None
        configuration.verify_ssl = not credentials.insecure
        configuration.assert_hostname = False if credentials.insecure else None
        configuration.tls_server_name = credentials.tls_server_name
        configuration.ssl_ca_cert = (
            self._write("ca.crt", credentials.ca_pem) if credentials.ca_pem else _system_ca_file()
        )
        if credentials.client_cert_pem is not None and credentials.client_key_pem is not None:
            configuration.cert_file = self._write("client.crt", credentials.client_cert_pem)
            configuration.key_file = self._write("client.key", credentials.client_key_pem.reveal().encode())
        # No retries: a request that fails makes the pass unknown (observe) or retried (apply).
        configuration.retries = urllib3.Retry(total=0, redirect=0)
        configuration.connection_pool_maxsize = max_connections
        self._api = kubernetes.client.ApiClient(configuration)
        self._api.user_agent = "fleet/0.1 (kubernetes-python)"
        if credentials.token is not None:
            self._api.set_default_header("Authorization", f"Bearer {credentials.token.reveal()}")
        self._lock = threading.Lock()
        self._discovered: dict[str, dict[str, Resource] | None] = {}

    def _write(self, name: str, content: bytes) -> str:
        """A private file for PEM material (Python's ssl module reads certificates from files)."""
        if self._tempdir is None:
            self._tempdir = Path(tempfile.mkdtemp(prefix="fleet-kube-"))
            self._cleanup = weakref.finalize(self, shutil.rmtree, self._tempdir, True)
        path = self._tempdir / name
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(content)
        return str(path)

    def close(self) -> None:
        self._api.rest_client.pool_manager.clear()
        if self._cleanup is not None:
            self._cleanup()

    # --- requests --------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        what: str,
    ) -> Obj:
        """One request; the JSON object it answers. `what` names the step in error messages."""
        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            answer = self._api.call_api(
                path,
                method,
                query_params=list((query or {}).items()),
                header_params=headers,
                body=body,
                response_type="object",
                _return_http_data_only=True,
                _preload_content=True,
                _request_timeout=self.timeout,
            )
        except ApiException as exc:
            raise self._status_error(exc, what) from None
        except urllib3.exceptions.HTTPError as exc:
            raise self._transport_error(exc, what) from None
        except OSError as exc:  # a socket error urllib3 did not wrap
            raise ClusterUnreachable(
                f"{self.target.shown}: {what}: {type(exc).__name__}", UnknownReason.UNREACHABLE
            ) from None
        except (OpenApiException, ValueError, TypeError) as exc:  # the client refused the request
            raise ApiRejected(f"{self.target.shown}: {what}: {type(exc).__name__}", 0) from None
        if not isinstance(answer, dict):
            raise ClusterUnreachable(
                f"{self.target.shown} answered {what} with something other than a JSON object",
                UnknownReason.PROTOCOL_ERROR,
            )
        return answer

    def _transport_error(self, exc: urllib3.exceptions.HTTPError, what: str) -> FleetError:
        cause: BaseException = exc
        if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
            cause = exc.reason
        shown = self.target.shown
        # Order matters: in urllib3, NewConnectionError (refused, no route, no such name) is a
        # subclass of ConnectTimeoutError.
        if isinstance(cause, _NAME_RESOLUTION_ERROR):
            return ClusterUnreachable(
                f"{shown}: its host name does not resolve ({what})", UnknownReason.UNREACHABLE
            )
        if isinstance(cause, urllib3.exceptions.NewConnectionError):
            return ClusterUnreachable(f"{shown} refused the connection ({what})", UnknownReason.UNREACHABLE)
        if isinstance(cause, urllib3.exceptions.ConnectTimeoutError):
            return ClusterUnreachable(
                f"{shown} did not accept a connection within {self.timeout[0]:g} s ({what})",
                UnknownReason.TIMEOUT,
            )
        if isinstance(cause, urllib3.exceptions.ReadTimeoutError):
            return ClusterUnreachable(
                f"{shown} did not answer within {self.timeout[1]:g} s ({what})", UnknownReason.TIMEOUT
            )
        if isinstance(cause, urllib3.exceptions.SSLError):
            return ClusterUnreachable(
                f"{shown}: TLS failed ({what}): {self._scrub(str(cause))[:200]}",
                UnknownReason.PROTOCOL_ERROR,
                hint="check certificate-authority-data of the kubeconfig in the credentialsRef",
            )
        return ClusterUnreachable(
            f"{shown} dropped the connection ({what}): {type(cause).__name__}", UnknownReason.UNREACHABLE
        )

    def _status_error(self, exc: ApiException, what: str) -> FleetError:
        status = int(exc.status or 0)
        shown = self.target.shown
        if status == 0:  # the kubernetes client wraps TLS errors this way
            return ClusterUnreachable(
                f"{shown}: TLS failed ({what})",
                UnknownReason.PROTOCOL_ERROR,
                hint="check certificate-authority-data of the kubeconfig in the credentialsRef",
            )
        raw = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else str(exc.body or "")
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        message = self._scrub(str(body.get("message") or exc.reason or "")).strip()
        status_reason = str(body.get("reason") or "")
        if status == 401:
            if self.plain_http:
                return ClusterAuthFailed(
                    f"{shown} asks for credentials (401), which fleet does not send over plain http",
                    401,
                    hint="use an https:// apiServer",
                )
            return ClusterAuthFailed(
                f"{shown} rejected the credentials from {self.target.credentials_name} (401)",
                401,
                hint="renew the token or certificate the credentialsRef names",
            )
        if status == 403:
            return ClusterAuthFailed(
                f"{shown} refused {what} to the credentials from {self.target.credentials_name} (403):"
                f" {message}",
                403,
                hint="grant fleet's user the RBAC permissions it needs",
            )
        if status == 409:
            return ApiConflict(f"{shown}: {what}: {message}", _parse_conflicts(body))
        if status == 429 or status >= 500:
            return ApiUnavailable(f"{shown}: {what}: {status} {message}")
        return ApiRejected(f"{shown}: {what}: {message or status_reason} ({status})", status, status_reason)

    # --- discovery ---------------------------------------------------------------------------

    def resource(self, api_version: str, kind: str) -> Resource | None:
        """The resource serving `kind`, or None when the cluster does not serve it."""
        known = BUILTIN_RESOURCES.get((api_version, kind))
        if known is not None:
            return known
        with self._lock:
            looked_up = api_version in self._discovered
            served = self._discovered.get(api_version)
        if not looked_up:
            served = self._discover(api_version)
        return served.get(kind) if served else None

    def _discover(self, api_version: str) -> dict[str, Resource] | None:
        path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        try:
            listing = self.request("GET", path, what=f"discovering {api_version}")
        except ApiRejected as exc:
            if exc.status != 404:
                raise
            listing = None
        found: dict[str, Resource] | None = None
        if isinstance(listing, dict):
            found = {}
            for entry in listing.get("resources") or []:
                if isinstance(entry, dict) and "/" not in str(entry.get("name", "")):
                    kind = str(entry.get("kind", ""))
                    found[kind] = Resource(
                        api_version, kind, str(entry["name"]), bool(entry.get("namespaced"))
                    )
        with self._lock:
            self._discovered[api_version] = found
        return found

    def forget_discovery(self) -> None:
        """After a CRD changed: look its group-version up again."""
        with self._lock:
            self._discovered.clear()

    # --- verbs -------------------------------------------------------------------------------

    def get(self, resource: Resource, namespace: str | None, name: str, *, what: str) -> Obj | None:
        try:
            return self.request("GET", resource.path(namespace, name), what=what)
        except ApiRejected as exc:
            if exc.status == 404:
                return None
            raise

    def list(
        self, resource: Resource, *, namespace: str | None = None, label_selector: str = "", what: str
    ) -> Iterator[Obj]:
        """Every object matching, page by page; nothing when the cluster does not serve the kind."""
        query: dict[str, str] = {"limit": str(LIST_PAGE)}
        if label_selector:
            query["labelSelector"] = label_selector
        while True:
            try:
                page = self.request("GET", resource.path(namespace), query=query, what=what)
            except ApiRejected as exc:
                if exc.status == 404:
                    return
                raise
            for item in page.get("items") or []:
                item.setdefault("apiVersion", resource.api_version)
                item.setdefault("kind", resource.kind)
                yield item
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return
            query["continue"] = token

    def apply(
        self,
        resource: Resource,
        obj: Obj,
        *,
        manager: str = FIELD_MANAGER,
        force: bool = True,
        dry_run: bool = False,
        what: str,
    ) -> Obj:
        """Server-side apply `obj` (a 409 without force lists the conflicting fields)."""
        meta = obj["metadata"]
        query = {"fieldManager": manager}
        if force:
            query["force"] = "true"
        if dry_run:
            query["dryRun"] = "All"
        return self.request(
            "PATCH",
            resource.path(meta.get("namespace"), meta["name"]),
            query=query,
            body=obj,
            content_type=APPLY_CONTENT_TYPE,
            what=what,
        )

    def replace(self, resource: Resource, obj: Obj, *, manager: str = FIELD_MANAGER, what: str) -> Obj:
        """PUT `obj`; its resourceVersion is the precondition (409 ApiConflict when stale)."""
        meta = obj["metadata"]
        return self.request(
            "PUT",
            resource.path(meta.get("namespace"), meta["name"]),
            query={"fieldManager": manager},
            body=obj,
            what=what,
        )

    def delete(
        self, resource: Resource, namespace: str | None, name: str, *, uid: str | None, what: str
    ) -> bool:
        """Delete one object (only if it still has `uid`); False when it was already gone."""
        options: Obj = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        if uid:
            options["preconditions"] = {"uid": uid}
        try:
            self.request("DELETE", resource.path(namespace, name), body=options, what=what)
        except ApiRejected as exc:
            if exc.status == 404:
                return False
            raise
        return True
