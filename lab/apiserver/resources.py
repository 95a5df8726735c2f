"""The resources the test API server serves: built-in kinds, and those that CRDs define.

Each resource type carries what the server needs to behave like upstream for it: scope, status
subresource, short names, the list types server-side apply merges by (from upstream's
applyconfigurations schema), the patch strategies strategic merge patch uses (from the Go struct
tags), the field selectors it accepts and the columns `kubectl get` shows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lab.apiserver.managedfields import ITEM, SET, ListType, Pattern, Schema, map_list

VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True, slots=True)
class PatchStrategy:
    """A list that strategic merge patch merges instead of replacing; no key: a list of scalars."""

    merge_key: str | None = None
    retain_keys: bool = False


@dataclass(frozen=True, slots=True)
class Column:
    """A `kubectl get` column: a JSONPath-like dotted path into the object (".status.phase")."""

    name: str
    path: str
    type: str = "string"
    priority: int = 0
    description: str = ""


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status_subresource: bool = False
    schema: Schema = field(default_factory=Schema)
    # None: strategic merge patch is refused (415), as for custom resources.
    strategies: Mapping[Pattern, PatchStrategy] | None = None
    # Top-level fields a typed empty object has ({}), so creates don't own them as new maps.
    skeleton: tuple[str, ...] = ()
    field_labels: tuple[str, ...] = ()
    columns: tuple[Column, ...] = ()
    # Deleting returns the object (custom resources) rather than a Success Status.
    return_deleted: bool = False
    # Status kept on create (nodes and pods are created with theirs by kubelets and tests).
    keep_status_on_create: bool = False
    # Upstream sets metadata.generation only for some kinds (custom resources, CRDs, workloads).
    generation: bool = False
    crd: str | None = None

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> str:
        return self.api_version

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def key(self) -> tuple[str, str]:
        """Where objects are stored: one store per group and resource, across versions."""
        return (self.group, self.plural)

    @property
    def qualified(self) -> str:
        """The name upstream uses in messages: "configmaps", "roles.rbac.authorization.k8s.io"."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


META_LISTS: dict[Pattern, ListType] = {
    ("metadata", "finalizers"): SET,
    ("metadata", "ownerReferences"): map_list("uid"),
}
META_STRATEGIES: dict[Pattern, PatchStrategy] = {
    ("metadata", "finalizers"): PatchStrategy(),
    ("metadata", "ownerReferences"): PatchStrategy("uid"),
}

_CONTAINER_LISTS: dict[Pattern, ListType] = {
    ("ports",): map_list("containerPort", "protocol", protocol="TCP"),
    ("env",): map_list("name"),
    ("volumeMounts",): map_list("mountPath"),
    ("volumeDevices",): map_list("devicePath"),
    ("resources", "claims"): map_list("name"),
}
_CONTAINER_STRATEGIES: dict[Pattern, PatchStrategy] = {
    ("ports",): PatchStrategy("containerPort"),
    ("env",): PatchStrategy("name"),
    ("volumeMounts",): PatchStrategy("mountPath"),
    ("volumeDevices",): PatchStrategy("devicePath"),
}
_POD_SPEC_LISTS: dict[Pattern, ListType] = {
    ("volumes",): map_list("name"),
    ("imagePullSecrets",): map_list("name"),
    ("hostAliases",): map_list("ip"),
    ("topologySpreadConstraints",): map_list("topologyKey", "whenUnsatisfiable"),
    ("resourceClaims",): map_list("name"),
    ("schedulingGates",): map_list("name"),
}
_POD_SPEC_STRATEGIES: dict[Pattern, PatchStrategy] = {
    ("volumes",): PatchStrategy("name", retain_keys=True),
    ("imagePullSecrets",): PatchStrategy("name"),
    ("hostAliases",): PatchStrategy("ip"),
    ("topologySpreadConstraints",): PatchStrategy("topologyKey"),
    ("resourceClaims",): PatchStrategy("name", retain_keys=True),
    ("schedulingGates",): PatchStrategy("name"),
}
_CONTAINER_FIELDS = ("containers", "initContainers", "ephemeralContainers")


def _pod_spec(prefix: Pattern) -> tuple[dict[Pattern, ListType], dict[Pattern, PatchStrategy], set[Pattern]]:
    lists = {(*prefix, *p): t for p, t in _POD_SPEC_LISTS.items()}
    strategies = {(*prefix, *p): s for p, s in _POD_SPEC_STRATEGIES.items()}
    for name in _CONTAINER_FIELDS:
        lists[(*prefix, name)] = map_list("name")
        strategies[(*prefix, name)] = PatchStrategy("name")
        item = (*prefix, name, ITEM)
        lists.update({(*item, *p): t for p, t in _CONTAINER_LISTS.items()})
        strategies.update({(*item, *p): s for p, s in _CONTAINER_STRATEGIES.items()})
    return lists, strategies, {(*prefix, "nodeSelector")}


def _template(prefix: Pattern) -> tuple[dict[Pattern, ListType], dict[Pattern, PatchStrategy], set[Pattern]]:
    """A pod template at `prefix`: its metadata and its pod spec."""
    lists, strategies, atomic = _pod_spec((*prefix, "spec"))
    lists.update({(*prefix, *p): t for p, t in META_LISTS.items()})
    strategies.update({(*prefix, *p): s for p, s in META_STRATEGIES.items()})
    return lists, strategies, atomic


def _conditions(
    *prefixes: Pattern, key: str = "type"
) -> tuple[dict[Pattern, ListType], dict[Pattern, PatchStrategy]]:
    return (
        {(*p, "conditions"): map_list(key) for p in prefixes},
        {(*p, "conditions"): PatchStrategy(key) for p in prefixes},
    )


def _builtin(
    group: str,
    version: str,
    plural: str,
    kind: str,
    *,
    namespaced: bool = True,
    short: Iterable[str] = (),
    categories: Iterable[str] = (),
    status: bool = False,
    lists: Mapping[Pattern, ListType] | None = None,
    strategies: Mapping[Pattern, PatchStrategy] | None = None,
    atomic_maps: Iterable[Pattern] = (),
    skeleton: tuple[str, ...] = (),
    field_labels: tuple[str, ...] = (),
    columns: tuple[Column, ...] = (),
    keep_status_on_create: bool = False,
    return_deleted: bool = False,
    generation: bool = False,
) -> ResourceType:
    all_lists = {**META_LISTS, **(lists or {})}
    all_strategies = {**META_STRATEGIES, **(strategies or {})}
    return ResourceType(
        group=group,
        version=version,
        plural=plural,
        singular=kind.lower(),
        kind=kind,
        namespaced=namespaced,
        short_names=tuple(short),
        categories=tuple(categories),
        status_subresource=status,
        schema=Schema(all_lists, atomic_maps),
        strategies=all_strategies,
        skeleton=skeleton,
        field_labels=field_labels,
        columns=columns,
        keep_status_on_create=keep_status_on_create,
        return_deleted=return_deleted,
        generation=generation,
    )


def builtin_types() -> list[ResourceType]:
    """The built-in resources, in discovery order."""
    pod_lists, pod_strategies, pod_atomic = _pod_spec(("spec",))
    pod_conditions = _conditions(("status",))
    pod_lists.update(pod_conditions[0])
    pod_lists[("status", "podIPs")] = map_list("ip")
    pod_strategies.update(pod_conditions[1])
    pod_strategies[("status", "podIPs")] = PatchStrategy("ip")

    node_lists: dict[Pattern, ListType] = {
        ("spec", "podCIDRs"): SET,
        ("status", "addresses"): map_list("type"),
        ("status", "conditions"): map_list("type"),
    }
    node_strategies: dict[Pattern, PatchStrategy] = {
        ("spec", "podCIDRs"): PatchStrategy(),
        ("status", "addresses"): PatchStrategy("type"),
        ("status", "conditions"): PatchStrategy("type"),
    }
    workload: list[ResourceType] = []
    for plural, kind, short in (
        ("deployments", "Deployment", ("deploy",)),
        ("statefulsets", "StatefulSet", ("sts",)),
        ("daemonsets", "DaemonSet", ("ds",)),
        ("replicasets", "ReplicaSet", ("rs",)),
    ):
        lists, strategies, atomic = _template(("spec", "template"))
        conditions = _conditions(("status",))
        workload.append(
            _builtin(
                "apps",
                "v1",
                plural,
                kind,
                short=short,
                categories=("all",),
                status=True,
                lists={**lists, **conditions[0]},
                strategies={**strategies, **conditions[1]},
                atomic_maps={*atomic, ("spec", "selector")},
                skeleton=("spec", "status"),
                generation=True,
            )
        )
    crd_conditions = _conditions(("status",))
    pvc_conditions = _conditions(("status",))
    pdb_conditions = _conditions(("status",))
    age = Column("Age", ".metadata.creationTimestamp", "date")
    return [
        _builtin(
            "",
            "v1",
            "namespaces",
            "Namespace",
            namespaced=False,
            short=("ns",),
            status=True,
            lists={("status", "conditions"): map_list("type")},
            strategies={("status", "conditions"): PatchStrategy("type")},
            skeleton=("spec", "status"),
            field_labels=("status.phase",),
            columns=(Column("Status", ".status.phase"), age),
            keep_status_on_create=True,
        ),
        _builtin(
            "",
            "v1",
            "nodes",
            "Node",
            namespaced=False,
            short=("no",),
            status=True,
            lists=node_lists,
            strategies=node_strategies,
            skeleton=("spec", "status"),
            field_labels=("spec.unschedulable",),
            columns=(Column("Status", "<node-status>"), Column("Roles", "<node-roles>"), age),
            keep_status_on_create=True,
        ),
        _builtin(
            "",
            "v1",
            "configmaps",
            "ConfigMap",
            short=("cm",),
            columns=(Column("Data", "<data-count>", "integer"), age),
        ),
        _builtin(
            "",
            "v1",
            "secrets",
            "Secret",
            field_labels=("type",),
            columns=(Column("Type", ".type"), Column("Data", "<data-count>", "integer"), age),
        ),
        _builtin(
            "",
            "v1",
            "serviceaccounts",
            "ServiceAccount",
            short=("sa",),
            lists={("secrets",): map_list("name")},
            strategies={("secrets",): PatchStrategy("name")},
        ),
        _builtin(
            "",
            "v1",
            "resourcequotas",
            "ResourceQuota",
            short=("quota",),
            status=True,
            skeleton=("spec", "status"),
        ),
        _builtin("", "v1", "limitranges", "LimitRange", short=("limits",), skeleton=("spec",)),
        _builtin(
            "",
            "v1",
            "pods",
            "Pod",
            short=("po",),
            categories=("all",),
            status=True,
            lists=pod_lists,
            strategies=pod_strategies,
            atomic_maps=pod_atomic,
            skeleton=("spec", "status"),
            field_labels=(
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "status.phase",
                "status.podIP",
            ),
            columns=(Column("Status", ".status.phase"), Column("Node", ".spec.nodeName"), age),
            keep_status_on_create=True,
        ),
        _builtin(
            "",
            "v1",
            "persistentvolumeclaims",
            "PersistentVolumeClaim",
            short=("pvc",),
            status=True,
            lists=pvc_conditions[0],
            strategies=pvc_conditions[1],
            skeleton=("spec", "status"),
            field_labels=("status.phase",),
            columns=(Column("Status", ".status.phase"), Column("Volume", ".spec.volumeName"), age),
        ),
        _builtin(
            "",
            "v1",
            "services",
            "Service",
            short=("svc",),
            categories=("all",),
            status=True,
            lists={("spec", "ports"): map_list("port", "protocol", protocol="TCP")},
            strategies={("spec", "ports"): PatchStrategy("port")},
            atomic_maps={("spec", "selector")},
            skeleton=("spec", "status"),
        ),
        *workload,
        _builtin("coordination.k8s.io", "v1", "leases", "Lease", skeleton=("spec",)),
        _builtin(
            "policy",
            "v1",
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            short=("pdb",),
            status=True,
            lists=pdb_conditions[0],
            strategies=pdb_conditions[1],
            atomic_maps={("spec", "selector")},
            skeleton=("spec", "status"),
            generation=True,
        ),
        _builtin(
            "networking.k8s.io",
            "v1",
            "networkpolicies",
            "NetworkPolicy",
            short=("netpol",),
            skeleton=("spec",),
            generation=True,
        ),
        _builtin("rbac.authorization.k8s.io", "v1", "roles", "Role"),
        _builtin("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
        _builtin("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False),
        _builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterrolebindings",
            "ClusterRoleBinding",
            namespaced=False,
        ),
        _builtin(
            "scheduling.k8s.io",
            "v1",
            "priorityclasses",
            "PriorityClass",
            namespaced=False,
            short=("pc",),
            columns=(
                Column("Value", ".value", "integer"),
                Column("Global-Default", ".globalDefault", "boolean"),
                age,
            ),
        ),
        _builtin(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            namespaced=False,
            short=("crd", "crds"),
            categories=("api-extensions",),
            status=True,
            lists={**crd_conditions[0], ("spec", "versions"): map_list("name")},
            strategies=crd_conditions[1],
            skeleton=("spec", "status"),
            columns=(Column("Created At", ".metadata.creationTimestamp", "date"),),
            generation=True,
        ),
    ]


class CrdError(ValueError):
    """A CustomResourceDefinition the server cannot serve; the message names the field."""


def crd_types(crd: Mapping[str, Any]) -> list[ResourceType]:
    """The resource types a CRD serves, one per served version; raises CrdError when invalid."""
    spec = crd.get("spec")
    if not isinstance(spec, dict):
        raise CrdError("spec: Required value")
    group = spec.get("group")
    names = spec.get("names")
    if not isinstance(group, str) or not group or "." not in group:
        raise CrdError("spec.group: Invalid value: should be a domain with at least one dot")
    if not isinstance(names, dict) or not names.get("plural") or not names.get("kind"):
        raise CrdError("spec.names: Required value: plural and kind are required")
    plural, kind = str(names["plural"]), str(names["kind"])
    name = (crd.get("metadata") or {}).get("name")
    if name != f"{plural}.{group}":
        raise CrdError(f'metadata.name: Invalid value: "{name}": must be spec.names.plural+"."+spec.group')
    scope = spec.get("scope")
    if scope not in ("Namespaced", "Cluster"):
        raise CrdError('spec.scope: Unsupported value: supported values: "Cluster", "Namespaced"')
    versions = spec.get("versions")
    if not isinstance(versions, list) or not versions:
        raise CrdError(
            "spec.versions: Invalid value: must have exactly one version marked as storage version"
        )
    if sum(1 for v in versions if isinstance(v, dict) and v.get("storage")) != 1:
        raise CrdError(
            "spec.versions: Invalid value: must have exactly one version marked as storage version"
        )
    out: list[ResourceType] = []
    for version in versions:
        if not isinstance(version, dict) or not version.get("name"):
            raise CrdError("spec.versions[].name: Required value")
        if not version.get("served", False):
            continue
        lists: dict[Pattern, ListType] = dict(META_LISTS)
        atomic: set[Pattern] = set()
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        if isinstance(schema, dict):
            _walk_openapi(schema, (), lists, atomic)
        columns = tuple(
            Column(
                str(c.get("name", "")),
                str(c.get("jsonPath", "")),
                str(c.get("type", "string")),
                int(c.get("priority", 0) or 0),
                str(c.get("description", "")),
            )
            for c in version.get("additionalPrinterColumns") or []
            if isinstance(c, dict)
        )
        out.append(
            ResourceType(
                group=group,
                version=str(version["name"]),
                plural=plural,
                singular=str(names.get("singular") or kind.lower()),
                kind=kind,
                namespaced=scope == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                status_subresource="status" in (version.get("subresources") or {}),
                schema=Schema(lists, atomic),
                strategies=None,
                columns=(*columns, Column("Age", ".metadata.creationTimestamp", "date")),
                return_deleted=True,
                generation=True,
                crd=name,
            )
        )
    return out


def _walk_openapi(
    node: Mapping[str, Any], pattern: Pattern, lists: dict[Pattern, ListType], atomic: set[Pattern]
) -> None:
    if node.get("x-kubernetes-map-type") == "atomic":
        atomic.add(pattern)
    for name, child in (node.get("properties") or {}).items():
        if isinstance(child, dict):
            _walk_openapi(child, (*pattern, name), lists, atomic)
    items = node.get("items")
    if node.get("type") == "array" and isinstance(items, dict):
        list_type = node.get("x-kubernetes-list-type")
        if list_type == "set":
            lists[pattern] = SET
        elif list_type == "map":
            keys = [str(k) for k in node.get("x-kubernetes-list-map-keys") or []]
            properties = items.get("properties") or {}
            defaults = {
                k: properties[k]["default"]
                for k in keys
                if isinstance(properties.get(k), dict) and "default" in properties[k]
            }
            lists[pattern] = map_list(*keys, **defaults)
        _walk_openapi(items, (*pattern, ITEM), lists, atomic)
