"""Read secrets named by `credentialsRef` at the moment of use, and never show them.

A secret comes from an environment variable, a file or a Kubernetes Secret (read through the
Kubernetes provider's client); it is wrapped in `Secret`,
whose repr and str are masked, so it cannot reach a log, an error or a plan by
accident. Errors name the reference (the variable or the path), never the value.
`Credentials` is the credential source a deployment injects: the environment it reads
variables from and, where a deployment (or the lab) keeps a secret elsewhere than the
specs say, a source per reference that beats the spec. It remembers every value it
handed out, so a run can forbid the state store to ever hold one.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from reconciler.errors import PermanentError, TemporaryError
from reconciler.spec import models
from reconciler.spec.secrets import Secret as Secret  # where credentials are kept


class Revision(Protocol):
    """What a credential is read for: the Fleet and the revision's documents by address (a
    provider's `RevisionInputs`)."""

    @property
    def fleet(self) -> models.Fleet: ...

    @property
    def documents(self) -> Mapping[str, models.Document]: ...


@dataclasses.dataclass(frozen=True, slots=True)
class UserPassword:
    """A `username:password` credential, as BMCs and SASL logins use them."""

    username: str
    password: Secret


def reference_key(ref: models.CredentialSource | str) -> str:
    """How a credential source map names a credentialsRef: its name, or env:/file:/secret: for
    inline ones."""
    if isinstance(ref, str):
        return ref
    if ref.env is not None:
        return f"env:{ref.env}"
    if ref.file is not None:
        return f"file:{ref.file}"
    assert ref.kubernetesSecret is not None
    return f"secret:{ref.kubernetesSecret.namespace}/{ref.kubernetesSecret.name}"


def describe(source: models.CredentialSource) -> str:
    if source.env is not None:
        return f"environment variable {source.env}"
    if source.file is not None:
        return f"file {source.file}"
    assert source.kubernetesSecret is not None
    return f"Kubernetes Secret {source.kubernetesSecret.namespace}/{source.kubernetesSecret.name}"


# Reads key (or the only key, for None) of the Kubernetes Secret namespace/name.
ReadSecret = Callable[[str, str, str | None], str]
# A ReadSecret through a Cluster's API server, with that Cluster's credentials (read from the
# credential source it is given), for the Fleet's `credentialsCluster`.
ClusterSecretReader = Callable[[models.Cluster, Revision, "Credentials"], ReadSecret]


class Credentials:
    """The credential source: resolves a credentialsRef of a fleet to its secret. Thread-safe.

    A Kubernetes Secret is read through `secret_reader` (FLEET_KUBECONFIG, or the pod's service
    account when fleet runs in a cluster), else through the Cluster the Fleet names as its
    `credentialsCluster`, which needs the revision's documents."""

    def __init__(
        self,
        environment: Mapping[str, str] | None = None,
        sources: Mapping[str, models.CredentialSource] | None = None,
        secret_reader: ReadSecret | None = None,
        cluster_reader: ClusterSecretReader | None = None,
    ) -> None:
        self.environment: Mapping[str, str] = dict(environment or {})
        # None where fleet has neither FLEET_KUBECONFIG nor a pod's service account.
        self.secret_reader = secret_reader
        self.cluster_reader = cluster_reader
        # One reader per credentials cluster (API server and credentials), which keeps its values.
        self._cluster_readers: dict[tuple[str, str, str], ReadSecret] = {}
        # By reference key: where this deployment keeps a credential, beating the spec.
        self.sources: Mapping[str, models.CredentialSource] = dict(sources or {})
        self._lock = threading.Lock()
        self._revealed: set[str] = set()
        self._listeners: list[Callable[[str], None]] = []

    def source(self, ref: models.CredentialSource | str, fleet: models.Fleet) -> models.CredentialSource:
        override = self.sources.get(reference_key(ref))
        if override is not None:
            return override
        if isinstance(ref, models.CredentialSource):
            return ref
        try:
            return fleet.spec.credentials[ref]
        except KeyError:
            raise PermanentError(
                f"credentialsRef {ref!r} is not defined in fleet.yaml", hint="add it under spec.credentials"
            ) from None

    def secret(self, ref: models.CredentialSource | str, revision: Revision) -> Secret:
        return self.read(self.source(ref, revision.fleet), revision)

    def read(self, source: models.CredentialSource, revision: Revision | None = None) -> Secret:
        """The secret a source holds, read now (a Kubernetes Secret may need the `revision`: the
        Cluster its Fleet names as credentialsCluster)."""
        if source.env is not None:
            value = self.environment.get(source.env)
            if not value:
                raise PermanentError(
                    f"environment variable {source.env} is not set",
                    hint=f"export {source.env} before running fleet (it holds the credential, not the repo)",
                )
            return self._reveal(value.strip())
        if source.file is not None:
            try:
                return self._reveal(Path(source.file).read_text(encoding="utf-8").strip())
            except OSError as exc:
                raise PermanentError(
                    f"cannot read credential file {source.file}: {exc.strerror}",
                    hint="check the path and its mode",
                ) from None
        secret = source.kubernetesSecret
        assert secret is not None
        if self.secret_reader is not None:
            return self._reveal(self.secret_reader(secret.namespace, secret.name, secret.key))
        reader, cluster = self._through_cluster(source, revision)
        try:
            return self._reveal(reader(secret.namespace, secret.name, secret.key))
        except TemporaryError as exc:
            raise TemporaryError(
                f"{describe(source)} via credentialsCluster {cluster}: {exc.message}",
                delay=exc.delay,
                hint=exc.hint,
            ) from None
        except PermanentError as exc:
            raise PermanentError(
                f"{describe(source)} via credentialsCluster {cluster}: {exc.message}", hint=exc.hint
            ) from None

    def _through_cluster(
        self, source: models.CredentialSource, revision: Revision | None
    ) -> tuple[ReadSecret, str]:
        """The reader through the Fleet's credentialsCluster (kept across calls), and its name."""
        name = revision.fleet.spec.credentialsCluster if revision is not None else None
        if revision is None or name is None or self.cluster_reader is None:
            raise PermanentError(
                f"{describe(source)} cannot be read: fleet runs neither in a pod of a cluster nor with"
                " FLEET_KUBECONFIG, and fleet.yaml names no credentialsCluster",
                hint="set FLEET_KUBECONFIG to a kubeconfig allowed to read the Secret, name the Cluster"
                " that holds it as spec.credentialsCluster in fleet.yaml, or run fleet in that cluster",
            )
        cluster = revision.documents.get(f"cluster/{name}")
        if not isinstance(cluster, models.Cluster):
            raise PermanentError(
                f"{describe(source)} cannot be read: credentialsCluster {name!r} is not a Cluster of"
                " this revision",
                hint="name an existing Cluster as spec.credentialsCluster in fleet.yaml",
            )
        own = self.source(cluster.spec.credentialsRef, revision.fleet)
        if own.kubernetesSecret is not None:
            raise PermanentError(
                f"{describe(source)} cannot be read through cluster {name!r}: that cluster's own"
                f" credentials are {describe(own)}",
                hint=f"give cluster {name!r} an env or file credentialsRef",
            )
        key = (name, cluster.spec.apiServer, own.model_dump_json())
        with self._lock:
            reader = self._cluster_readers.get(key)
            if reader is None:
                reader = self._cluster_readers[key] = self.cluster_reader(cluster, revision, self)
        return reader, name

    def user_password(self, ref: models.CredentialSource | str, revision: Revision) -> UserPassword:
        """A `username:password` credential."""
        source = self.source(ref, revision.fleet)
        value = self.read(source, revision).reveal()
        username, sep, password = value.partition(":")
        if not sep or not username:
            raise PermanentError(
                f"the credential in {describe(source)} is not of the form username:password",
                hint="store it as `username:password` (one line)",
            )
        self._reveal(password)
        return UserPassword(username, Secret(password))

    def environment_names(self, fleet: models.Fleet) -> list[str]:
        """Environment variables credentials are read from (never passed on to child processes)."""
        sources = [*fleet.spec.credentials.values(), *self.sources.values()]
        return sorted({s.env for s in sources if s.env is not None})

    # --- what was handed out ------------------------------------------------------------------

    def on_reveal(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call `listener` with every secret value read from now on (and each read before); returns
        a function that stops it."""
        with self._lock:
            self._listeners.append(listener)
            known = sorted(self._revealed)
        for value in known:
            listener(value)

        def stop() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return stop

    def _reveal(self, value: str) -> Secret:
        with self._lock:
            new = value not in self._revealed
            self._revealed.add(value)
            listeners = list(self._listeners) if new else []
        for listener in listeners:
            listener(value)
        return Secret(value)
