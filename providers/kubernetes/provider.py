"""The Kubernetes provider: SparkPools and Clusters as objects, and settings of member Nodes.

`observe` renders what each spec wants, finds what is live with label-selector lists (one per
kind, by fleet's owner label) and a GET for any wanted object the lists did not show, then asks
the API server what a forced server-side apply would change with one dry run per live object; it
never writes. `apply` server-side applies only the objects that are missing or differ, in
dependency order, then member Node labels, taints and cordons, then prunes the keys the engine
lists, never an object fleet's owner label does not give to the address nor one annotated
`fleet.dev/prune: disabled`. Repeating an apply writes nothing. Kubernetes and urllib3 errors
are mapped in client.py; only fleet errors leave this module.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from providers.access import Access
from providers.base import (
    Action,
    ApplyResult,
    Change,
    FieldChange,
    Observation,
    ObservationState,
    Observed,
    RevisionInputs,
    UnknownReason,
    apply_result,
    utcnow,
)
from providers.kubernetes import nodes as node_rules
from providers.kubernetes.client import (
    CRD,
    NODE,
    ApiConflict,
    ApiRejected,
    ClusterClient,
    Resource,
    Target,
    read_credentials,
    target_of,
    unknown_reason,
)
from providers.kubernetes.render import (
    OWNER_LABEL,
    PRUNE_ANNOTATION,
    PRUNE_DISABLED,
    VOLCANO_API_VERSION,
    NodeIntent,
    Obj,
    cluster_node_intents,
    dependency_rank,
    member_pool_taints,
    object_key,
    owner_value,
    parse_key,
    pool_matches,
    pool_node_intents,
    pool_taint,
    render_cluster,
    render_spark_pool,
    taint_id,
)
from reconciler.errors import FleetError, PermanentError, TemporaryError
from reconciler.spec import models

T = TypeVar("T")
R = TypeVar("R")

# The kinds a SparkPool renders, listed by owner even when a spec no longer renders one of them,
# so that strays show up under `owned`.
POOL_KINDS: tuple[tuple[str, str], ...] = (
    ("v1", "Namespace"),
    ("scheduling.k8s.io/v1", "PriorityClass"),
    ("v1", "ServiceAccount"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("v1", "ResourceQuota"),
    ("v1", "LimitRange"),
    ("v1", "ConfigMap"),
)
VOLCANO_QUEUE = (VOLCANO_API_VERSION, "Queue")
# Owners per label-selector list: keeps the URL short when thousands of pools are observed at once.
OWNERS_PER_LIST = 100
# Up to this many namespaces, namespaced kinds are listed per namespace rather than cluster-wide.
NAMESPACED_LISTS_UP_TO = 4
NODE_UPDATE_ATTEMPTS = 5
CRD_ESTABLISHED_TIMEOUT = 30.0
# Where a Secret keeps its values (the last-applied annotation holds a copy): never shown in a diff.
_SECRET_PATHS = (
    "data",
    "stringData",
    "metadata.annotations.kubectl.kubernetes.io/last-applied-configuration",
)
HIDDEN = "(hidden)"

IN_SYNC, DIFFERS, MISSING = "in-sync", "differs", "missing"


# --- comparing ---------------------------------------------------------------------------


def _comparable(obj: Mapping[str, Any]) -> Obj:
    """What an apply can change: everything but status and server-set metadata."""
    out: Obj = {key: value for key, value in obj.items() if key not in ("status", "metadata")}
    meta = obj.get("metadata") or {}
    out["metadata"] = {key: meta[key] for key in ("labels", "annotations") if meta.get(key)}
    return out


def _leaves(live: Any, desired: Any, path: str, out: list[tuple[str, Any, Any]]) -> None:
    if isinstance(live, dict) and isinstance(desired, dict):
        for name in sorted(set(live) | set(desired)):
            child = f"{path}.{name}" if path else name
            old, new = live.get(name), desired.get(name)
            if isinstance(old, dict) or isinstance(new, dict):
                _leaves(
                    old if isinstance(old, dict) else ({} if old is None else old),
                    new if new is not None else {},
                    child,
                    out,
                )
            elif old != new:
                out.append((child, old, new))
    elif live != desired:
        out.append((path, live, desired))


def object_diff(live: Mapping[str, Any], after: Mapping[str, Any]) -> list[Obj]:
    """Every leaf where the object after an apply differs from the live one (lists are leaves).

    A Secret's data never appears: its values are shown as "(hidden)"."""
    found: list[tuple[str, Any, Any]] = []
    _leaves(_comparable(live), _comparable(after), "", found)
    secret = after.get("kind") == "Secret" and after.get("apiVersion") == "v1"
    out = []
    for path, old, new in found:
        if (old == {} and new is None) or (old is None and new == {}):
            continue  # an empty map and no map are the same to an apply
        if secret and any(path == p or path.startswith(p + ".") for p in _SECRET_PATHS):
            old, new = (None if old is None else HIDDEN), (None if new is None else HIDDEN)
        out.append({"path": path, "live": old, "desired": new})
    return out


# --- what a pass works on ----------------------------------------------------------------


@dataclasses.dataclass
class _Desired:
    address: str
    obj: Obj
    resource: Resource | None  # None: the cluster does not serve the kind (yet)

    @property
    def key(self) -> str:
        return object_key(self.obj)

    @property
    def namespace(self) -> str | None:
        namespace = self.obj["metadata"].get("namespace")
        return str(namespace) if namespace else None

    @property
    def rank(self) -> int:
        return dependency_rank(
            self.obj, namespaced=None if self.resource is None else self.resource.namespaced
        )


@dataclasses.dataclass
class _ObjectState:
    desired: _Desired
    state: str
    diff: list[Obj] = dataclasses.field(default_factory=list)
    conflicts: list[Obj] = dataclasses.field(default_factory=list)
    error: str = ""

    def entry(self) -> Obj:
        out: Obj = {"key": self.desired.key, "state": self.state, "diff": self.diff}
        if self.error:
            out["error"] = self.error
        return out


@dataclasses.dataclass
class _Scan:
    """One address as a pass saw it."""

    spec: models.Cluster | models.SparkPool
    cluster: models.Cluster
    states: list[_ObjectState]
    intents: list[NodeIntent]
    nodes: list[Obj]
    owned: list[str]

    @property
    def address(self) -> str:
        return self.spec.address

    def fields(self) -> Obj:
        manager = node_rules.label_manager(self.address)
        return {
            "cluster": self.cluster.metadata.name,
            "objects": sorted((s.entry() for s in self.states), key=lambda e: str(e["key"])),
            "conflicts": sorted(
                (c for s in self.states for c in s.conflicts),
                key=lambda c: (c["key"], c["path"], c["manager"]),
            ),
            "nodes": node_rules.node_entries(self.intents, self.nodes, manager),
            "owned": self.owned,
        }

    def observation(self) -> Observation:
        fields = self.fields()
        absent = isinstance(self.spec, models.SparkPool) and all(s.state == MISSING for s in self.states)
        state = ObservationState.ABSENT if absent else ObservationState.OBSERVED
        return Observation(self.address, state, utcnow(), fields)


class _Progress:
    """What an apply already changed, for its message and for the message of a later failure."""

    def __init__(self) -> None:
        self.applied = 0
        self.pruned = 0
        self.nodes: dict[str, set[str]] = {}
        self.notes: list[str] = []

    @property
    def changed(self) -> bool:
        return bool(self.applied or self.pruned or self.nodes)

    def node(self, what: str, name: str) -> None:
        self.nodes.setdefault(what, set()).add(name)

    def summary(self) -> str:
        parts = []
        if self.applied:
            parts.append(f"applied {_count(self.applied, 'object')}")
        if self.pruned:
            parts.append(f"pruned {self.pruned}")
        for what in ("labelled", "tainted", "cordoned", "uncordoned", "cleaned"):
            if what in self.nodes:
                parts.append(f"{_count(len(self.nodes[what]), 'node')} {what}")
        return ", ".join(parts)

    def message(self, idle: str) -> str:
        text = self.summary() or idle
        return f"{text}; {'; '.join(self.notes)}" if self.notes else text

    def failed(self, message: str) -> str:
        done = self.summary()
        return f"{message}; done before that: {done}" if done else message


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _prune_keys(change: Change) -> list[str]:
    for field in change.fields:
        if field.field == "prune" and isinstance(field.before, list | tuple):
            return sorted({str(key) for key in field.before})
    return []


def _field(change: Change, name: str) -> FieldChange | None:
    return next((f for f in change.fields if f.field == name), None)


# --- the provider ------------------------------------------------------------------------


class KubernetesProvider:
    """Clusters or SparkPools (one kind per instance) in Kubernetes clusters. Thread-safe."""

    kind: ClassVar[str] = "SparkPool"

    def __init__(
        self,
        access: Access,
        kind: str = "SparkPool",
        *,
        timeout: tuple[float, float] | None = None,
        workers: int = 16,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if kind not in ("Cluster", "SparkPool"):
            raise ValueError(f"the Kubernetes provider serves Clusters and SparkPools, not {kind}")
        vars(self)["kind"] = kind  # one class, two kinds: the registry makes one instance per kind
        self.access = access
        self._timeout = timeout
        self._workers = workers
        self._sleep = sleep
        self._clock = clock
        self._lock = threading.Lock()
        self._clients: dict[str, tuple[Target, Any, ClusterClient]] = {}
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    # --- documents ------------------------------------------------------------------------

    @staticmethod
    def _cluster_named(name: str, inputs: RevisionInputs) -> models.Cluster | None:
        document = inputs.documents.get(f"cluster/{name}")
        return document if isinstance(document, models.Cluster) else None

    def _cluster_of(self, spec: models.Document, inputs: RevisionInputs) -> models.Cluster:
        if isinstance(spec, models.Cluster):
            return spec
        assert isinstance(spec, models.SparkPool)
        cluster = self._cluster_named(spec.spec.cluster, inputs)
        if cluster is None:
            raise PermanentError(
                f"{spec.address}: cluster/{spec.spec.cluster} named by spec.cluster is not in the fleet repo",
                hint="add the Cluster or correct spec.cluster",
            )
        return cluster

    @staticmethod
    def _pools_of(
        cluster: models.Cluster, inputs: RevisionInputs, extra: Iterable[models.Document] = ()
    ) -> list[models.SparkPool]:
        name = cluster.metadata.name
        pools = {
            d.address: d
            for d in inputs.documents.values()
            if isinstance(d, models.SparkPool) and d.spec.cluster == name
        }
        pools.update(
            {d.address: d for d in extra if isinstance(d, models.SparkPool) and d.spec.cluster == name}
        )
        return [pools[address] for address in sorted(pools)]

    # --- connections ----------------------------------------------------------------------

    def _client(self, cluster: models.Cluster, inputs: RevisionInputs) -> ClusterClient:
        target = target_of(cluster, self.access)
        credentials = read_credentials(cluster, inputs, self.access)
        with self._lock:
            held = self._clients.get(cluster.metadata.name)
            if held is not None and held[0] == target and held[1] == credentials:
                return held[2]
            options: dict[str, Any] = {"max_connections": self._workers}
            if self._timeout is not None:
                options["timeout"] = self._timeout
            client = ClusterClient(target, credentials, **options)
            self._clients[cluster.metadata.name] = (target, credentials, client)
        if held is not None:
            held[2].close()
        return client

    def _parallel(self, work: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """`work` on every item, a few at a time; the first error cancels what has not started."""
        todo = list(items)
        if len(todo) <= 1:
            return [work(item) for item in todo]
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    self._workers, thread_name_prefix="fleet-kube"
                )
            pool = self._pool
        futures = [pool.submit(work, item) for item in todo]
        try:
            return [future.result() for future in futures]
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        for _, _, client in clients:
            client.close()

    def __enter__(self) -> KubernetesProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- rendering -----------------------------------------------------------------------

    def _render(
        self,
        spec: models.Cluster | models.SparkPool,
        cluster: models.Cluster,
        pools: Sequence[models.SparkPool],
        fleet: models.Fleet,
        member_taints: Mapping[str, Mapping[str, str]] | None = None,
    ) -> tuple[list[Obj], list[NodeIntent]]:
        if isinstance(spec, models.Cluster):
            return render_cluster(spec, pools), cluster_node_intents(spec, pools)
        intents = pool_node_intents(spec, cluster, pools, member_taints)
        return render_spark_pool(spec, cluster, pools, fleet), intents

    def _resolve(self, client: ClusterClient, address: str, obj: Obj) -> _Desired:
        """The object with its resource; a namespaced one without a namespace goes to `default`."""
        resource = client.resource(str(obj["apiVersion"]), str(obj["kind"]))
        meta = obj["metadata"]
        if resource is not None:
            if resource.namespaced and not meta.get("namespace"):
                meta["namespace"] = "default"
            elif not resource.namespaced:
                meta.pop("namespace", None)
        return _Desired(address, obj, resource)

    # --- reading -------------------------------------------------------------------------

    def _scan(
        self,
        cluster: models.Cluster,
        specs: Sequence[models.Cluster | models.SparkPool],
        inputs: RevisionInputs,
    ) -> list[_Scan]:
        """Render, read and compare every spec of one cluster. Raises fleet errors that concern the
        whole cluster (unreachable, credentials); an object's own failure is kept in its state."""
        client = self._client(cluster, inputs)
        pools = self._pools_of(cluster, inputs, specs)
        desired: dict[str, list[_Desired]] = {}
        intents: dict[str, list[NodeIntent]] = {}
        kinds: set[tuple[str, str]] = set()
        member_taints = member_pool_taints(
            cluster, pools, [spec for spec in specs if isinstance(spec, models.SparkPool)]
        )
        for spec in specs:
            objects, intents[spec.address] = self._render(spec, cluster, pools, inputs.fleet, member_taints)
            desired[spec.address] = [self._resolve(client, spec.address, obj) for obj in objects]
            kinds.update((str(o["apiVersion"]), str(o["kind"])) for o in objects)
            if isinstance(spec, models.SparkPool):
                kinds.update(POOL_KINDS)
                if cluster.spec.scheduler == "volcano":
                    kinds.add(VOLCANO_QUEUE)
        resources = [r for r in (client.resource(*kind) for kind in sorted(kinds)) if r is not None]
        owners = sorted(owner_value(spec.address) for spec in specs)
        everything = [d for group in desired.values() for d in group]
        namespaces = {d.namespace for d in everything if d.namespace and d.resource and d.resource.namespaced}
        live, owned = self._list_owned(client, resources, owners, namespaces)
        self._get_unlisted(client, everything, live)
        node_list: list[Obj] = []
        if any(intents.values()):
            node_list = list(client.list(NODE, what="listing nodes"))

        def compare(d: _Desired) -> _ObjectState:
            found = live.get(d.key)
            return _ObjectState(d, MISSING) if found is None else self._compare(client, d, found)

        states = dict(zip((id(d) for d in everything), self._parallel(compare, everything), strict=True))
        return [
            _Scan(
                spec,
                cluster,
                [states[id(d)] for d in desired[spec.address]],
                intents[spec.address],
                node_list,
                sorted(owned.get(owner_value(spec.address), ())),
            )
            for spec in specs
        ]

    def _list_owned(
        self,
        client: ClusterClient,
        resources: Sequence[Resource],
        owners: Sequence[str],
        namespaces: set[str],
    ) -> tuple[dict[str, Obj], dict[str, set[str]]]:
        """Live objects carrying the owners' label, by key, and their keys by owner.

        Namespaced kinds are listed in the namespaces involved when they are few (one pool), and
        across the cluster otherwise (thousands of pools at once)."""
        chunks = [owners[i : i + OWNERS_PER_LIST] for i in range(0, len(owners), OWNERS_PER_LIST)]
        scopes: list[str | None] = [None]
        if len(namespaces) <= NAMESPACED_LISTS_UP_TO:
            scopes = [*sorted(namespaces)]
        queries = [
            (resource, namespace, chunk)
            for resource in resources
            for namespace in (scopes if resource.namespaced else [None])
            for chunk in chunks
        ]

        def list_one(query: tuple[Resource, str | None, Sequence[str]]) -> list[Obj]:
            resource, namespace, chunk = query
            selector = f"{OWNER_LABEL} in ({','.join(chunk)})"
            what = f"listing {resource.plural}" + (f" in namespace {namespace}" if namespace else "")
            return list(client.list(resource, namespace=namespace, label_selector=selector, what=what))

        live: dict[str, Obj] = {}
        owned: dict[str, set[str]] = {}
        for items in self._parallel(list_one, queries):
            for item in items:
                key = object_key(item)
                live[key] = item
                owner = ((item.get("metadata") or {}).get("labels") or {}).get(OWNER_LABEL, "")
                owned.setdefault(str(owner), set()).add(key)
        return live, owned

    def _get_unlisted(self, client: ClusterClient, desired: Sequence[_Desired], live: dict[str, Obj]) -> None:
        """GET the wanted objects the owner lists did not show (made by someone else, or missing);
        nothing is looked up in a namespace that is known to be missing."""

        def get(d: _Desired) -> tuple[str, Obj | None]:
            assert d.resource is not None
            meta = d.obj["metadata"]
            return d.key, client.get(d.resource, d.namespace, meta["name"], what=f"reading {d.key}")

        unlisted = {d.key: d for d in desired if d.key not in live and d.resource is not None}
        first = [d for d in unlisted.values() if d.rank == 0]
        for key, found in self._parallel(get, first):
            if found is not None:
                live[key] = found
        present = {
            str(obj["metadata"]["name"])
            for obj in live.values()
            if obj.get("kind") == "Namespace" and obj.get("apiVersion") == "v1"
        }
        wanted_namespaces = {d.obj["metadata"]["name"] for d in desired if d.key in unlisted and d.rank == 0}
        rest = [
            d
            for d in unlisted.values()
            if d.rank != 0 and not (d.namespace in wanted_namespaces and d.namespace not in present)
        ]
        for key, found in self._parallel(get, rest):
            if found is not None:
                live[key] = found

    def _compare(self, client: ClusterClient, d: _Desired, live: Obj) -> _ObjectState:
        assert d.resource is not None
        try:
            after = client.apply(d.resource, d.obj, dry_run=True, what=f"dry-run applying {d.key}")
        except (ApiConflict, ApiRejected) as exc:  # this object's problem: the apply will show it too
            return _ObjectState(d, DIFFERS, error=exc.message)
        diff = object_diff(live, after)
        if not diff:
            return _ObjectState(d, IN_SYNC)
        conflicts: list[Obj] = []
        try:  # unforced: who owns the fields fleet would take over
            client.apply(d.resource, d.obj, dry_run=True, force=False, what=f"dry-run applying {d.key}")
        except ApiConflict as exc:
            conflicts = [{"key": d.key, "path": path, "manager": manager} for path, manager in exc.conflicts]
        except ApiRejected:
            pass  # the forced dry run passed, so the apply will; only the conflicts stay unknown
        return _ObjectState(d, DIFFERS, diff, conflicts)

    # --- observe -------------------------------------------------------------------------

    def observe(self, specs: Sequence[models.Document], inputs: RevisionInputs) -> Observed:
        results: list[Observation] = []
        by_cluster: dict[str, tuple[models.Cluster, list[models.Cluster | models.SparkPool]]] = {}
        for spec in specs:
            if spec.kind_name != self.kind or not isinstance(spec, models.Cluster | models.SparkPool):
                results.append(
                    Observation.unknown(
                        spec.address,
                        UnknownReason.NOT_ATTEMPTED,
                        f"this Kubernetes provider observes {self.kind}s, not {spec.kind_name}s",
                    )
                )
                continue
            try:
                cluster = self._cluster_of(spec, inputs)
            except PermanentError as exc:
                results.append(Observation.unknown(spec.address, UnknownReason.NOT_ATTEMPTED, str(exc)))
                continue
            by_cluster.setdefault(cluster.metadata.name, (cluster, []))[1].append(spec)
        for name in sorted(by_cluster):
            cluster, group = by_cluster[name]
            try:
                scans = self._scan(cluster, group, inputs)
            except FleetError as exc:
                results.extend(
                    Observation.unknown(spec.address, unknown_reason(exc), str(exc)) for spec in group
                )
                continue
            results.extend(scan.observation() for scan in scans)
        return Observed(tuple(results))

    # --- apply ---------------------------------------------------------------------------

    def apply(self, change: Change, inputs: RevisionInputs) -> ApplyResult:
        progress = _Progress()

        def run() -> tuple[bool, str]:
            message = self._apply(change, progress, inputs)
            return progress.changed, message

        return apply_result(change, progress, self._clock, run)

    def _apply(self, change: Change, progress: _Progress, inputs: RevisionInputs) -> str:
        if change.action is Action.DELETE:
            return self._delete(change, progress, inputs)
        if change.action not in (Action.CREATE, Action.UPDATE):
            raise PermanentError(f"the Kubernetes provider cannot {change.action.value} a {self.kind}")
        spec = change.desired
        if (
            spec is None
            or spec.kind_name != self.kind
            or not isinstance(spec, models.Cluster | models.SparkPool)
        ):
            raise PermanentError(f"{change.address}: this Kubernetes provider changes {self.kind}s")
        cluster = self._cluster_of(spec, inputs)
        client = self._client(cluster, inputs)
        (scan,) = self._scan(cluster, [spec], inputs)
        self._apply_objects(client, scan, progress)
        self._apply_nodes(client, scan, progress)
        keys = _prune_keys(change)
        if keys:
            prune_cluster = cluster
            moved = _field(change, "cluster")
            if moved is not None and moved.before and moved.before != cluster.metadata.name:
                prune_cluster = self._must_cluster(str(moved.before), change.address, inputs)
            rendered = {s.desired.key for s in scan.states} if prune_cluster is cluster else set()
            self._prune(
                self._client(prune_cluster, inputs),
                change.address,
                [k for k in keys if k not in rendered],
                progress,
            )
        in_sync = sum(1 for s in scan.states if s.state == IN_SYNC)
        return progress.message(
            f"no changes: {_count(in_sync, 'object')} and {_count(len(scan.intents), 'node')} in sync"
        )

    def _must_cluster(self, name: str, address: str, inputs: RevisionInputs) -> models.Cluster:
        cluster = self._cluster_named(name, inputs)
        if cluster is None:
            raise PermanentError(
                f"{address}: its objects are in cluster/{name}, which is no longer in the fleet repo,"
                " so fleet cannot reach them",
                hint="delete them with kubectl, or restore the Cluster until they are pruned",
            )
        return cluster

    def _apply_objects(self, client: ClusterClient, scan: _Scan, progress: _Progress) -> None:
        todo = sorted((s.desired for s in scan.states if s.state != IN_SYNC), key=lambda d: (d.rank, d.key))
        for desired in todo:
            resource = desired.resource
            if resource is None:  # served only now, by a CRD applied before it
                desired = self._resolve(client, desired.address, desired.obj)
                resource = desired.resource
            if resource is None:
                raise PermanentError(
                    f"cluster {scan.cluster.metadata.name} does not serve {desired.obj['apiVersion']}"
                    f" {desired.obj['kind']}, so {desired.key} cannot be applied",
                    hint="install the CustomResourceDefinition (for a Volcano Queue: install Volcano)",
                )
            applied = client.apply(resource, desired.obj, what=f"applying {desired.key}")
            progress.applied += 1
            if resource == CRD:
                self._wait_established(client, str(applied["metadata"]["name"]))

    def _wait_established(self, client: ClusterClient, name: str) -> None:
        deadline = self._clock() + CRD_ESTABLISHED_TIMEOUT
        while True:
            crd = client.get(CRD, None, name, what=f"reading CustomResourceDefinition {name}")
            conditions = ((crd or {}).get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
                client.forget_discovery()
                return
            if self._clock() >= deadline:
                raise TemporaryError(
                    f"CustomResourceDefinition {name} is not Established after {CRD_ESTABLISHED_TIMEOUT:g} s",
                    delay=10.0,
                )
            self._sleep(0.2)

    def _apply_nodes(self, client: ClusterClient, scan: _Scan, progress: _Progress) -> None:
        manager = node_rules.label_manager(scan.address)
        missing = []
        for intent in scan.intents:
            node = node_rules.find_node(scan.nodes, intent.node)
            if node is None:
                missing.append(intent.node)
                continue
            name = str(node["metadata"]["name"])
            if node_rules.labels_to_apply(intent, node, manager):
                node = client.apply(  # the Node as it is now, so its taint update is not stale
                    NODE,
                    node_rules.label_configuration(intent, node),
                    manager=manager,
                    what=f"applying labels of node {name}",
                )
                progress.node("labelled", name)
            if node_rules.node_update(intent, node) is not None:
                for what in self._update_node(client, intent, node):
                    progress.node(what, name)
        if missing:
            progress.notes.append(f"no Node for {', '.join(sorted(missing))} (not registered yet?)")

    def _update_node(
        self, client: ClusterClient, intent: NodeIntent, node: Mapping[str, Any]
    ) -> tuple[str, ...]:
        """Set fleet's taints and cordon under the Node's resourceVersion, re-reading it after a
        conflict; what changed ("tainted", "cordoned", "uncordoned")."""
        name = str(node["metadata"]["name"])
        current: Mapping[str, Any] | None = node
        for _ in range(NODE_UPDATE_ATTEMPTS):
            if current is None:
                return ()  # the Node went away
            update = node_rules.node_update(intent, current)
            if update is None:
                return ()
            try:
                client.replace(NODE, update.applied_to(current), what=f"updating taints of node {name}")
            except ApiConflict:
                current = client.get(NODE, None, name, what=f"reading node {name}")
                continue
            return update.changes or ("updated",)
        raise TemporaryError(f"node {name} kept changing while fleet updated its taints", delay=2.0)

    def _prune(self, client: ClusterClient, address: str, keys: Sequence[str], progress: _Progress) -> None:
        """Delete the listed objects fleet made for `address`, Namespaces and CRDs last."""
        owner = owner_value(address)
        targets = []
        for key in keys:
            try:
                ref = parse_key(key)
            except ValueError:
                progress.notes.append(f"skipped {key!r}: not an object key")
                continue
            resource = client.resource(ref.api_version, ref.kind)
            if resource is None:
                continue  # the kind is not served, so no such object exists
            rank = dependency_rank(
                {"apiVersion": ref.api_version, "kind": ref.kind}, namespaced=resource.namespaced
            )
            targets.append((-rank, key, ref, resource))
        kept, foreign = [], []
        for _, key, ref, resource in sorted(targets, key=lambda t: (t[0], t[1])):
            live = client.get(resource, ref.namespace, ref.name, what=f"reading {key}")
            if live is None:
                continue
            meta = live.get("metadata") or {}
            if (meta.get("labels") or {}).get(OWNER_LABEL) != owner:
                foreign.append(key)
                continue
            if (meta.get("annotations") or {}).get(PRUNE_ANNOTATION) == PRUNE_DISABLED:
                kept.append(key)
                continue
            if client.delete(resource, ref.namespace, ref.name, uid=meta.get("uid"), what=f"deleting {key}"):
                progress.pruned += 1
        if kept:
            progress.notes.append(f"kept {', '.join(kept)} ({PRUNE_ANNOTATION}: {PRUNE_DISABLED})")
        if foreign:
            progress.notes.append(f"did not prune {', '.join(foreign)}: not owned by {address}")

    def _delete(self, change: Change, progress: _Progress, inputs: RevisionInputs) -> str:
        """An orphan: prune every key fleet applied for it, and take its labels and taints off Nodes."""
        keys = _prune_keys(change)
        where = _field(change, "cluster")
        if change.address.startswith("cluster/"):
            name = change.address.split("/", 1)[1]
        elif where is not None and where.before:
            name = str(where.before)
        elif isinstance(change.desired, models.SparkPool):
            name = change.desired.spec.cluster
        else:
            raise PermanentError(
                f"{change.address}: fleet does not know which cluster its objects are in",
                hint="the engine passes FieldChange('cluster', before=<Cluster name>) with a delete",
            )
        cluster = self._must_cluster(name, change.address, inputs)
        client = self._client(cluster, inputs)
        self._prune(client, change.address, keys, progress)
        if change.address.startswith("sparkpool/"):
            self._release_nodes(client, cluster, change.address, progress, inputs)
        return progress.message("nothing to delete")

    def _release_nodes(
        self,
        client: ClusterClient,
        cluster: models.Cluster,
        address: str,
        progress: _Progress,
        inputs: RevisionInputs,
    ) -> None:
        """Drop a deleted pool's labels (its field manager's) and the fleet taints nobody wants any more."""
        pools = [p for p in self._pools_of(cluster, inputs) if p.address != address]
        manager = node_rules.label_manager(address)
        node_list = list(client.list(NODE, what="listing nodes"))
        for member in cluster.spec.members:
            node = node_rules.find_node(node_list, member.ref.split("/", 1)[1])
            if node is None:
                continue
            wanted = {taint_id(t) for t in member.taints} | {
                taint_id(pool_taint(p)) for p in pools if pool_matches(p, member)
            }
            intent = NodeIntent(member.ref, str(node["metadata"]["name"]), {}, (), None, frozenset(wanted))
            name = intent.node
            if node_rules.applied_label_keys(node, manager):
                node = client.apply(
                    NODE,
                    {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}},
                    manager=manager,
                    what=f"releasing labels of node {name}",
                )
                progress.node("cleaned", name)
            if node_rules.node_update(intent, node) is not None and self._update_node(client, intent, node):
                progress.node("cleaned", name)
