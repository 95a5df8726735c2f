"""What fleet wants in a Kubernetes cluster: SparkPool and Cluster specs turned into API objects.

Pure functions of the specs, with no I/O: the same specs always give the same objects, with sorted
lists and canonical quantities, so that server-side applying them again changes nothing. Every
object carries fleet's ownership label and address annotation. Node intents (labels, taints and
cordons fleet wants on member Nodes) are computed here too; reading and writing Nodes is the
provider's job.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from reconciler.spec import models
from reconciler.spec.quantity import canonical_quantity, quantity_value

Obj = dict[str, Any]

OWNER_LABEL = "fleet.dev/owner"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
ADDRESS_ANNOTATION = "fleet.dev/address"
PRUNE_ANNOTATION = "fleet.dev/prune"
PRUNE_DISABLED = "disabled"
TAINTS_ANNOTATION = "fleet.dev/taints"
CORDONED_ANNOTATION = "fleet.dev/cordoned"
HOSTNAME_LABEL = "kubernetes.io/hostname"

POD_TEMPLATES_CONFIGMAP = "spark-pod-templates"
DRIVER_TEMPLATE_KEY = "driver-pod-template.yaml"
EXECUTOR_TEMPLATE_KEY = "executor-pod-template.yaml"
SPARK_DEFAULTS_KEY = "spark-defaults.conf"
# Where a submitter mounts the ConfigMap: spark-submit reads spark-defaults.conf from SPARK_CONF_DIR.
SPARK_CONF_DIR = "/opt/spark/conf"
QUOTA_NAME = "spark-quota"
LIMIT_RANGE_NAME = "spark-defaults"
YUNIKORN_NAMESPACE = "yunikorn"
YUNIKORN_CONFIGMAP = "yunikorn-configs"
YUNIKORN_QUEUES_KEY = "queues.yaml"
VOLCANO_QUEUE_API_VERSION = "scheduling.volcano.sh/v1beta1"
VOLCANO_QUEUE_ANNOTATION = "scheduling.volcano.sh/queue-name"
YUNIKORN_QUEUE_LABEL = "queue"
# What the Spark driver does in its namespace (Spark on Kubernetes, "RBAC").
SPARK_DRIVER_RESOURCES = ("configmaps", "persistentvolumeclaims", "pods", "services")
SPARK_DRIVER_VERBS = ("create", "delete", "deletecollection", "get", "list", "watch")

_LABEL_VALUE_MAX = 63


# --- ownership and keys --------------------------------------------------------------------


def owner_value(address: str) -> str:
    """The owner label's value for an address: `sparkpool/etl` -> `sparkpool.etl`.

    Label values hold at most 63 characters; a longer one keeps its start and gains a hash, and
    the address annotation stays exact."""
    value = address.replace("/", ".", 1)
    if len(value) <= _LABEL_VALUE_MAX:
        return value
    digest = hashlib.sha256(address.encode()).hexdigest()[:10]
    return f"{value[: _LABEL_VALUE_MAX - 11].rstrip('.-_')}-{digest}"


def object_key(obj: Mapping[str, Any]) -> str:
    """`{apiVersion}/{kind}/{namespace or '_'}/{name}`, the name of an object in inventories."""
    meta = obj.get("metadata") or {}
    return f"{obj['apiVersion']}/{obj['kind']}/{meta.get('namespace') or '_'}/{meta['name']}"


@dataclasses.dataclass(frozen=True, slots=True)
class ObjectRef:
    api_version: str
    kind: str
    namespace: str | None
    name: str

    @property
    def key(self) -> str:
        return f"{self.api_version}/{self.kind}/{self.namespace or '_'}/{self.name}"


def parse_key(key: str) -> ObjectRef:
    """The inverse of `object_key`; raises ValueError for anything else."""
    parts = key.split("/")
    if len(parts) not in (4, 5) or not all(parts):
        raise ValueError(f"{key!r} is not an object key (apiVersion/kind/namespace-or-_/name)")
    *version, kind, namespace, name = parts
    return ObjectRef("/".join(version), kind, None if namespace == "_" else namespace, name)


def with_ownership(obj: Mapping[str, Any], address: str) -> Obj:
    """A deep copy of `obj` with fleet's owner label and address annotation."""
    out: Obj = copy.deepcopy(dict(obj))
    meta = out.setdefault("metadata", {})
    meta["labels"] = {
        **(meta.get("labels") or {}),
        OWNER_LABEL: owner_value(address),
        MANAGED_BY_LABEL: "fleet",
    }
    meta["annotations"] = {**(meta.get("annotations") or {}), ADDRESS_ANNOTATION: address}
    return out


def dependency_rank(obj: Mapping[str, Any], *, namespaced: bool | None = None) -> int:
    """Apply order: Namespaces and CRDs (0), other cluster-scoped objects (1), namespaced ones (2)."""
    kind, api_version = obj.get("kind"), str(obj.get("apiVersion", ""))
    if (kind == "Namespace" and api_version == "v1") or (
        kind == "CustomResourceDefinition" and api_version.startswith("apiextensions.k8s.io/")
    ):
        return 0
    if namespaced is None:
        namespaced = bool((obj.get("metadata") or {}).get("namespace"))
    return 2 if namespaced else 1


# --- quantities --------------------------------------------------------------------------


def _quantities(resources: Mapping[str, str]) -> dict[str, str]:
    return {name: canonical_quantity(value) for name, value in sorted(resources.items())}


def _integer(value: Decimal) -> int:
    return int(value.to_integral_value(rounding="ROUND_CEILING"))


def yunikorn_resources(resources: Mapping[str, str]) -> dict[str, int]:
    """A resource list in YuniKorn's units: `vcore` in millicores, memory in bytes, others as counts."""
    out: dict[str, int] = {}
    for name, value in sorted(resources.items()):
        amount = quantity_value(value)
        if name == "cpu":
            out["vcore"] = _integer(amount * 1000)
        else:
            out[name] = _integer(amount)
    return dict(sorted(out.items()))


def spark_memory(value: str) -> str:
    """A Kubernetes memory quantity as a JVM size Spark reads (`28Gi` -> `28g`), exact."""
    size = _integer(quantity_value(value))
    for suffix, unit in (("t", 1024**4), ("g", 1024**3), ("m", 1024**2), ("k", 1024)):
        if size >= unit and size % unit == 0:
            return f"{size // unit}{suffix}"
    return f"{size}b"


# --- YAML and properties text --------------------------------------------------------------


# Plain (unquoted) YAML scalars: a conservative set that no YAML 1.1 or 1.2 reader takes for
# anything but a string; everything else is written as a JSON string, which YAML reads the same.
_PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./-]*$")
_NOT_STRINGS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf"})


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _NOT_STRINGS:
        return text
    return json.dumps(text, ensure_ascii=False)


def _emit(value: Any, indent: int, lines: list[str]) -> None:
    pad = " " * indent
    if isinstance(value, dict):
        for key in sorted(value):
            child = value[key]
            if isinstance(child, dict | list) and child:
                lines.append(f"{pad}{_scalar(key)}:")
                _emit(child, indent + 2 if isinstance(child, dict) else indent, lines)
            else:
                lines.append(f"{pad}{_scalar(key)}: {_inline(child)}")
        return
    for item in value:
        if isinstance(item, dict | list) and item:
            start = len(lines)
            _emit(item, indent + 2, lines)
            lines[start] = f"{pad}- {lines[start][indent + 2 :]}"
        else:
            lines.append(f"{pad}- {_inline(item)}")


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _scalar(value)


def yaml_text(value: Mapping[str, Any]) -> str:
    """Block-style YAML with sorted keys: the same value always gives the same text.

    Written here rather than with ruamel.yaml, whose pure-Python emitter made rendering the
    slowest part of observing thousands of pools; the tests check that ruamel reads it back."""
    lines: list[str] = []
    _emit(value, 0, lines)
    return "\n".join(lines) + "\n"


def _property(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


# --- SparkPool ---------------------------------------------------------------------------


def pool_taint(pool: models.SparkPool) -> models.Taint:
    """The taint a pool puts on its nodes; default `dedicated=<pool>:NoSchedule`."""
    return pool.spec.nodes.taint or models.Taint(
        key="dedicated", value=pool.metadata.name, effect="NoSchedule"
    )


def _toleration(taint: models.Taint) -> Obj:
    if taint.value:
        return {"effect": taint.effect, "key": taint.key, "operator": "Equal", "value": taint.value}
    return {"effect": taint.effect, "key": taint.key, "operator": "Exists"}


def _pod_template(pool: models.SparkPool, cluster: models.Cluster) -> str:
    spec = pool.spec
    metadata: Obj = {}
    pod_spec: Obj = {
        "nodeSelector": dict(sorted(spec.nodes.selector.items())),
        "tolerations": [_toleration(pool_taint(pool))],
    }
    if spec.priorityClass is not None:
        pod_spec["priorityClassName"] = spec.priorityClass.name
    scheduler = cluster.spec.scheduler
    if scheduler == "yunikorn":
        pod_spec["schedulerName"] = "yunikorn"
        metadata["labels"] = {YUNIKORN_QUEUE_LABEL: f"root.{spec.queue.name}"}
    elif scheduler == "volcano":
        pod_spec["schedulerName"] = "volcano"
        metadata["annotations"] = {VOLCANO_QUEUE_ANNOTATION: spec.queue.name}
    template: Obj = {"apiVersion": "v1", "kind": "Pod", "spec": pod_spec}
    if metadata:
        template["metadata"] = metadata
    return yaml_text(template)


def spark_defaults(pool: models.SparkPool, cluster: models.Cluster) -> dict[str, str]:
    """spark-defaults.conf entries; the pool's `spark.defaults` win over the derived ones."""
    spec, spark = pool.spec, pool.spec.spark
    scaling = spark.dynamicAllocation
    conf = {
        "spark.kubernetes.namespace": spec.namespace,
        "spark.kubernetes.authenticate.driver.serviceAccountName": spec.serviceAccount,
        "spark.driver.cores": str(spark.driver.cores),
        "spark.driver.memory": spark_memory(spark.driver.memory),
        "spark.executor.cores": str(spark.executor.cores),
        "spark.executor.memory": spark_memory(spark.executor.memory),
        "spark.dynamicAllocation.enabled": str(scaling.enabled).lower(),
        "spark.dynamicAllocation.shuffleTracking.enabled": str(scaling.shuffleTracking).lower(),
        "spark.dynamicAllocation.minExecutors": str(scaling.minExecutors),
        "spark.dynamicAllocation.maxExecutors": str(scaling.maxExecutors),
        "spark.kubernetes.driver.podTemplateFile": f"{SPARK_CONF_DIR}/{DRIVER_TEMPLATE_KEY}",
        "spark.kubernetes.executor.podTemplateFile": f"{SPARK_CONF_DIR}/{EXECUTOR_TEMPLATE_KEY}",
    }
    scheduler = cluster.spec.scheduler
    if scheduler != "default":
        conf["spark.kubernetes.scheduler.name"] = scheduler
    if scheduler == "yunikorn":  # as Spark's "Using Apache YuniKorn as customized scheduler" says
        for role in ("driver", "executor"):
            conf[f"spark.kubernetes.{role}.label.queue"] = f"root.{spec.queue.name}"
            conf[f"spark.kubernetes.{role}.annotation.yunikorn.apache.org/app-id"] = "{{APP_ID}}"
    conf.update(spark.defaults)
    return dict(sorted(conf.items()))


def _spark_defaults_text(pool: models.SparkPool, cluster: models.Cluster) -> str:
    return "".join(f"{key} {_property(value)}\n" for key, value in spark_defaults(pool, cluster).items())


def render_spark_pool(
    pool: models.SparkPool, cluster: models.Cluster, pools_of_cluster: Sequence[models.SparkPool]
) -> list[Obj]:
    """The objects of one SparkPool, in dependency order.

    `pools_of_cluster` are all pools of `cluster` (this one included); nothing a pool renders
    depends on its siblings today, but the signature matches `render_cluster` so that callers
    hand both the same view of the repo.
    """
    del pools_of_cluster  # see the docstring
    spec, address, ns = pool.spec, pool.address, pool.spec.namespace
    account = spec.serviceAccount
    objects: list[Obj] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
    ]
    if spec.priorityClass is not None:
        priority = spec.priorityClass
        objects.append(
            {
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": priority.name},
                "value": priority.value,
                "preemptionPolicy": priority.preemptionPolicy,
                "globalDefault": False,
                "description": f"Spark pool {pool.metadata.name} (fleet)",
            }
        )
    if cluster.spec.scheduler == "volcano":
        queue_spec: Obj = {"weight": 1}
        if spec.queue.max:
            queue_spec["capability"] = _quantities(spec.queue.max)
        if spec.queue.guaranteed:
            queue_spec["guarantee"] = {"resource": _quantities(spec.queue.guaranteed)}
        objects.append(
            {
                "apiVersion": VOLCANO_QUEUE_API_VERSION,
                "kind": "Queue",
                "metadata": {"name": spec.queue.name},
                "spec": queue_spec,
            }
        )
    objects.append(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account, "namespace": ns}}
    )
    objects.append(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": account, "namespace": ns},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": list(SPARK_DRIVER_RESOURCES),
                    "verbs": list(SPARK_DRIVER_VERBS),
                }
            ],
        }
    )
    objects.append(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": account, "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": ns}],
        }
    )
    if spec.quota:
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": {"name": QUOTA_NAME, "namespace": ns},
                "spec": {"hard": _quantities(spec.quota)},
            }
        )
    if spec.limits.default or spec.limits.defaultRequest:
        limit: Obj = {"type": "Container"}
        if spec.limits.default:
            limit["default"] = _quantities(spec.limits.default)
        if spec.limits.defaultRequest:
            limit["defaultRequest"] = _quantities(spec.limits.defaultRequest)
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "LimitRange",
                "metadata": {"name": LIMIT_RANGE_NAME, "namespace": ns},
                "spec": {"limits": [limit]},
            }
        )
    template = _pod_template(pool, cluster)
    objects.append(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": POD_TEMPLATES_CONFIGMAP, "namespace": ns},
            "data": {
                DRIVER_TEMPLATE_KEY: template,
                EXECUTOR_TEMPLATE_KEY: template,
                SPARK_DEFAULTS_KEY: _spark_defaults_text(pool, cluster),
            },
        }
    )
    return [with_ownership(obj, address) for obj in objects]


# --- Cluster -----------------------------------------------------------------------------


def _queue_tree(pools: Iterable[models.SparkPool]) -> list[Obj]:
    """YuniKorn child queues of root; a dotted queue name nests (`a.b` is `b` under `a`).

    Two pools naming one queue: the first by pool name defines it (validation should refuse it)."""
    root: dict[str, Any] = {}
    for pool in sorted(pools, key=lambda p: p.metadata.name):
        *parents, leaf = pool.spec.queue.name.split(".")
        level = root
        for parent in parents:
            level = level.setdefault(parent, {"queues": {}})["queues"]
        if leaf in level and "resources" in level[leaf]:
            continue
        resources: Obj = {}
        if pool.spec.queue.guaranteed:
            resources["guaranteed"] = yunikorn_resources(pool.spec.queue.guaranteed)
        if pool.spec.queue.max:
            resources["max"] = yunikorn_resources(pool.spec.queue.max)
        entry = level.setdefault(leaf, {"queues": {}})
        entry["resources"] = resources

    def as_list(level: Mapping[str, Any]) -> list[Obj]:
        out: list[Obj] = []
        for name in sorted(level):
            node = level[name]
            queue: Obj = {"name": name}
            if node["queues"]:
                queue["parent"] = True
                queue["queues"] = as_list(node["queues"])
            if node.get("resources"):
                queue["resources"] = node["resources"]
            out.append(queue)
        return out

    return as_list(root)


def yunikorn_queues(pools: Iterable[models.SparkPool]) -> str:
    """queues.yaml of the `yunikorn-configs` ConfigMap: every pool's queue as a child of root.

    Memory is in bytes and vcore in millicores, the units YuniKorn's Kubernetes shim uses; pods
    name their queue with the `queue: root.<name>` label, which the `provided` rule places."""
    config = {
        "partitions": [
            {
                "name": "default",
                "placementrules": [{"name": "provided", "create": False}],
                "queues": [{"name": "root", "submitacl": "*", "queues": _queue_tree(pools)}],
            }
        ]
    }
    return yaml_text(config)


def render_cluster(cluster: models.Cluster, pools_of_cluster: Sequence[models.SparkPool]) -> list[Obj]:
    """The Cluster's objects: `spec.objects` as written, and for YuniKorn its queue configuration.

    The `yunikorn-configs` ConfigMap belongs to the YuniKorn installation; fleet applies only its
    `queues.yaml` key and marks it `fleet.dev/prune: disabled`, so fleet never deletes it."""
    address = cluster.address
    objects = [with_ownership(obj, address) for obj in cluster.spec.objects]
    if cluster.spec.scheduler == "yunikorn":
        configmap = with_ownership(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": YUNIKORN_CONFIGMAP,
                    "namespace": YUNIKORN_NAMESPACE,
                    "annotations": {PRUNE_ANNOTATION: PRUNE_DISABLED},
                },
                "data": {YUNIKORN_QUEUES_KEY: yunikorn_queues(pools_of_cluster)},
            },
            address,
        )
        objects.append(configmap)
    return sorted(objects, key=lambda o: (dependency_rank(o), object_key(o)))


# --- Nodes ------------------------------------------------------------------------------


def taint_id(taint: models.Taint | Mapping[str, Any]) -> str:
    """How fleet records a taint it manages: `key:effect` (a Node has one taint per pair)."""
    if isinstance(taint, models.Taint):
        return f"{taint.key}:{taint.effect}"
    return f"{taint.get('key', '')}:{taint.get('effect', '')}"


def taint_text(taint: models.Taint | Mapping[str, Any]) -> str:
    """A taint as kubectl writes it: `key=value:effect`, or `key:effect` without a value."""
    if isinstance(taint, models.Taint):
        taint = taint_object(taint)
    key, value, effect = (str(taint.get(name) or "") for name in ("key", "value", "effect"))
    return f"{key}={value}:{effect}" if value else f"{key}:{effect}"


def taint_object(taint: models.Taint) -> Obj:
    out: Obj = {"key": taint.key, "effect": taint.effect}
    if taint.value:
        out["value"] = taint.value
    return out


def member_node_name(member: models.ClusterMember) -> str:
    """`machine/NAME` and `virtualmachine/NAME` are the Node NAME (or the Node whose hostname label is)."""
    return member.ref.split("/", 1)[1]


def pool_matches(pool: models.SparkPool, member: models.ClusterMember) -> bool:
    return all(member.labels.get(key) == value for key, value in pool.spec.nodes.selector.items())


@dataclasses.dataclass(frozen=True, slots=True)
class NodeIntent:
    """What one fleet address wants on one member Node.

    `others` are the taints (`key:effect`) other fleet addresses want there, which this address
    must neither remove nor claim. `cordon` is None when the address does not decide it.
    """

    member: str
    node: str
    labels: Mapping[str, str]
    taints: tuple[models.Taint, ...]
    cordon: bool | None
    others: frozenset[str]


def _pool_taints_of(member: models.ClusterMember, pools: Iterable[models.SparkPool]) -> dict[str, str]:
    return {pool.address: taint_id(pool_taint(pool)) for pool in pools if pool_matches(pool, member)}


def cluster_node_intents(
    cluster: models.Cluster, pools_of_cluster: Sequence[models.SparkPool]
) -> list[NodeIntent]:
    """The Cluster's own part of every member: its labels, taints and cordon."""
    out = []
    for member in cluster.spec.members:
        others = frozenset(_pool_taints_of(member, pools_of_cluster).values())
        out.append(
            NodeIntent(
                member.ref,
                member_node_name(member),
                dict(sorted(member.labels.items())),
                tuple(sorted(member.taints, key=taint_id)),
                member.cordon,
                others,
            )
        )
    return out


def member_pool_taints(
    cluster: models.Cluster,
    pools_of_cluster: Sequence[models.SparkPool],
    for_pools: Iterable[models.SparkPool] | None = None,
) -> dict[str, dict[str, str]]:
    """member ref -> {pool address: taint id} of the pools whose selector matches it, for the
    members `for_pools` select (all without it): worked out once per pass, not once per pool,
    which would be quadratic in the pools of a cluster."""
    members = cluster.spec.members
    if for_pools is not None:
        wanted = list(for_pools)
        members = [m for m in members if any(pool_matches(pool, m) for pool in wanted)]
    return {member.ref: _pool_taints_of(member, pools_of_cluster) for member in members}


def pool_node_intents(
    pool: models.SparkPool,
    cluster: models.Cluster,
    pools_of_cluster: Sequence[models.SparkPool],
    member_taints: Mapping[str, Mapping[str, str]] | None = None,
) -> list[NodeIntent]:
    """A pool's part of every member its selector matches: the selector labels and the pool taint."""
    out = []
    taint = pool_taint(pool)
    taints = member_taints if member_taints is not None else member_pool_taints(cluster, pools_of_cluster)
    for member in cluster.spec.members:
        if not pool_matches(pool, member):
            continue
        siblings = [t for address, t in taints.get(member.ref, {}).items() if address != pool.address]
        others = frozenset({*(taint_id(t) for t in member.taints), *siblings})
        out.append(
            NodeIntent(
                member.ref,
                member_node_name(member),
                dict(sorted(pool.spec.nodes.selector.items())),
                (taint,),
                None,
                others,
            )
        )
    return out
