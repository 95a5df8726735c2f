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
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from reconciler.spec import models, spark
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
TEMPLATE_KEYS = {"driver": DRIVER_TEMPLATE_KEY, "executor": EXECUTOR_TEMPLATE_KEY}
PODGROUP_TEMPLATE_KEY = "podgroup-template.yaml"
SPARK_DEFAULTS_KEY = "spark-defaults.conf"
# Where a submitter mounts the ConfigMap: spark-submit reads spark-defaults.conf from SPARK_CONF_DIR.
SPARK_CONF_DIR = "/opt/spark/conf"
QUOTA_NAME = "spark-quota"
LIMIT_RANGE_NAME = "spark-defaults"
YUNIKORN_NAMESPACE = "yunikorn"
YUNIKORN_CONFIGMAP = "yunikorn-configs"
YUNIKORN_QUEUES_KEY = "queues.yaml"
VOLCANO_API_GROUP = "scheduling.volcano.sh"
VOLCANO_API_VERSION = f"{VOLCANO_API_GROUP}/v1beta1"
VOLCANO_QUEUE_ANNOTATION = "scheduling.volcano.sh/queue-name"
YUNIKORN_QUEUE_LABEL = "queue"
YUNIKORN_DEFAULT_QUEUE = "default"
YUNIKORN_NAMESPACES_QUEUE = "namespaces"
RBAC_GROUP = "rbac.authorization.k8s.io"
RBAC_API_VERSION = f"{RBAC_GROUP}/v1"
SUBMITTER_ROLE = "spark-submitter"
_ALL = ("create", "delete", "deletecollection", "get", "list", "watch")
# What the Spark driver does in its namespace, by resource (tests check it against Spark's code).
SPARK_DRIVER_RULES: dict[str, tuple[str, ...]] = {
    "configmaps": _ALL,
    "persistentvolumeclaims": _ALL,
    "pods": (*_ALL, "patch", "update"),
    "services": _ALL,
}
# With `spark.kubernetes.allocation.pods.allocator=statefulset` the driver runs its executors as
# a StatefulSet (StatefulSetPodsAllocator) and scales it.
SPARK_STATEFULSET_RULES: dict[str, tuple[str, ...]] = {
    "statefulsets": ("create", "delete", "get"),
    "statefulsets/scale": ("get", "update"),
}
# What spark-submit does in cluster mode: create the driver pod and, by server-side apply (create
# and patch), what it needs (ConfigMaps, the driver Service, Secrets, PVCs); follow, list and stop
# drivers (--status, --kill); clean up after a failed submission.
_APPLIED = ("create", "delete", "get", "list", "patch")
SPARK_SUBMITTER_RULES: dict[str, tuple[str, ...]] = {
    "configmaps": _APPLIED,
    "persistentvolumeclaims": _APPLIED,
    "pods": ("create", "delete", "get", "list", "watch"),
    "pods/log": ("get",),
    "secrets": ("create", "delete", "patch"),
    "services": _APPLIED,
}
SPARK_SUBMITTER_PODGROUP_VERBS = _APPLIED

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


def _yunikorn_quantity(name: str, value: str) -> str:
    """YuniKorn's parser (`resources.ParseQuantity`, `ParseVCore`) takes whole numbers with an
    optional k/M/G/T/P/E or Ki..Ei suffix, and `m` for vcore only: a fraction is rounded up to
    the next millicore of vcore, or the next whole unit of anything else."""
    text = canonical_quantity(value)
    if text[-1:] not in ("n", "u", "m"):
        return text
    amount = quantity_value(value)
    if name == "vcore":
        return canonical_quantity(f"{math.ceil(amount * 1000)}m")
    return str(math.ceil(amount))


def yunikorn_resources(resources: Mapping[str, str]) -> dict[str, str]:
    """A resource list as YuniKorn's configuration takes it: quantities, with cpu named `vcore`.
    Since YuniKorn 1.0 (YUNIKORN-1120) a plain vcore figure is in cores ("256" is 256 cores,
    "500m" half a core) and memory a quantity of bytes ("1Ti")."""
    out: dict[str, str] = {}
    for name, value in resources.items():
        key = "vcore" if name == "cpu" else name
        out[key] = _yunikorn_quantity(key, value)
    return dict(sorted(out.items()))


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


def pool_image(pool: models.SparkPool, fleet: models.Fleet | None) -> str | None:
    """The pool's Spark image, or the Fleet's default (validation refuses a pool with neither)."""
    return pool.spec.image or (fleet.spec.spark.image if fleet is not None else None)


def spark_master(cluster: models.Cluster) -> str:
    """`k8s://https://host:port`, the master URL spark-submit takes for the Cluster."""
    return f"k8s://{cluster.spec.apiServer.rstrip('/')}"


def _toleration(taint: models.Taint) -> Obj:
    if taint.value:
        return {"effect": taint.effect, "key": taint.key, "operator": "Equal", "value": taint.value}
    return {"effect": taint.effect, "key": taint.key, "operator": "Exists"}


def _pod_template(pool: models.SparkPool, cluster: models.Cluster, role: spark.Role) -> str:
    """A whole Pod (Spark takes what it needs; editors and schema checks need a valid one) whose
    one container Spark fills in, found by `spark.kubernetes.<role>.podTemplateContainerName`."""
    spec = pool.spec
    metadata: Obj = {}
    pod_spec: Obj = {
        "containers": [{"name": spark.CONTAINER_NAMES[role]}],
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


def _podgroup_template(pool: models.SparkPool) -> str:
    """What Spark's VolcanoFeatureStep starts its PodGroup from: the pool's queue (the PodGroup
    would otherwise land in Volcano's `default` queue), its priority, and the driver's resources
    as the minimum the group needs to start."""
    spec: Obj = {
        "minMember": 1,
        "minResources": spark.driver_min_resources(pool),
        "queue": pool.spec.queue.name,
    }
    if pool.spec.priorityClass is not None:
        spec["priorityClassName"] = pool.spec.priorityClass.name
    return yaml_text({"apiVersion": VOLCANO_API_VERSION, "kind": "PodGroup", "spec": spec})


def spark_defaults(
    pool: models.SparkPool, cluster: models.Cluster, fleet: models.Fleet | None = None
) -> dict[str, str]:
    """spark-defaults.conf entries: what fleet derives from the specs (`spark.FLEET_KEYS`, which
    validation keeps out of the pool's `spark.defaults`) and the pool's own `spark.defaults`."""
    spec, settings = pool.spec, pool.spec.spark
    scaling = settings.dynamicAllocation
    conf = {
        "spark.master": spark_master(cluster),
        "spark.kubernetes.namespace": spec.namespace,
        "spark.kubernetes.authenticate.driver.serviceAccountName": spec.serviceAccount,
        "spark.kubernetes.authenticate.executor.serviceAccountName": spec.executorServiceAccount,
        "spark.driver.cores": str(settings.driver.cores),
        "spark.driver.memory": spark.spark_memory(settings.driver.memory),
        "spark.executor.cores": str(settings.executor.cores),
        "spark.executor.memory": spark.spark_memory(settings.executor.memory),
        "spark.dynamicAllocation.enabled": str(scaling.enabled).lower(),
        "spark.dynamicAllocation.shuffleTracking.enabled": str(scaling.shuffleTracking).lower(),
        "spark.dynamicAllocation.minExecutors": str(scaling.minExecutors),
        "spark.dynamicAllocation.maxExecutors": str(scaling.maxExecutors),
    }
    roles: tuple[spark.Role, ...] = ("driver", "executor")
    for role in roles:
        conf[f"spark.kubernetes.{role}.podTemplateFile"] = f"{SPARK_CONF_DIR}/{TEMPLATE_KEYS[role]}"
        conf[f"spark.kubernetes.{role}.podTemplateContainerName"] = spark.CONTAINER_NAMES[role]
    image = pool_image(pool, fleet)
    if image is not None:
        conf["spark.kubernetes.container.image"] = image
    scheduler = cluster.spec.scheduler
    if scheduler != "default":
        conf["spark.kubernetes.scheduler.name"] = scheduler
    if scheduler == "yunikorn":  # as Spark's "Using Apache YuniKorn as customized scheduler" says
        for role in ("driver", "executor"):
            conf[f"spark.kubernetes.{role}.label.queue"] = f"root.{spec.queue.name}"
            conf[f"spark.kubernetes.{role}.annotation.yunikorn.apache.org/app-id"] = "{{APP_ID}}"
    if scheduler == "volcano":  # as Spark's "Using Volcano as customized scheduler" says
        conf["spark.kubernetes.scheduler.volcano.podGroupTemplateFile"] = (
            f"{SPARK_CONF_DIR}/{PODGROUP_TEMPLATE_KEY}"
        )
        for role in ("driver", "executor"):
            conf[f"spark.kubernetes.{role}.pod.featureSteps"] = spark.VOLCANO_FEATURE_STEP
    conf.update(settings.defaults)
    return dict(sorted(conf.items()))


def _spark_defaults_text(pool: models.SparkPool, cluster: models.Cluster, fleet: models.Fleet | None) -> str:
    pairs = spark_defaults(pool, cluster, fleet).items()
    return "".join(f"{key} {_property(value)}\n" for key, value in pairs)


def _rule(groups: Sequence[str], resources: Sequence[str], verbs: Sequence[str]) -> Obj:
    return {"apiGroups": list(groups), "resources": sorted(resources), "verbs": sorted(verbs)}


def driver_rules(pool: models.SparkPool) -> list[Obj]:
    """What the Spark driver does in its namespace: creates, watches, patches and deletes its
    executor pods (patch when `spark.kubernetes.executor.deleteOnTermination=false` and when it
    labels decommissioning executors), and creates and deletes their ConfigMaps and PVCs; with
    the StatefulSet allocator, its executors' StatefulSet."""
    rules = [_rule([""], [resource], verbs) for resource, verbs in sorted(SPARK_DRIVER_RULES.items())]
    allocator = pool.spec.spark.defaults.get("spark.kubernetes.allocation.pods.allocator", "direct")
    if allocator.strip().lower() == "statefulset":
        rules += [_rule(["apps"], [r], verbs) for r, verbs in sorted(SPARK_STATEFULSET_RULES.items())]
    return rules


def submitter_rules(cluster: models.Cluster) -> list[Obj]:
    """What spark-submit does in cluster mode: creates the driver pod and, before it, the
    driver's Service, ConfigMaps and Secrets (and for Volcano the PodGroup); watches the driver;
    stops it."""
    rules = [_rule([""], [resource], verbs) for resource, verbs in sorted(SPARK_SUBMITTER_RULES.items())]
    if cluster.spec.scheduler == "volcano":
        rules.append(_rule([VOLCANO_API_GROUP], ["podgroups"], SPARK_SUBMITTER_PODGROUP_VERBS))
    return rules


def _role_objects(name: str, ns: str, rules: list[Obj], subjects: list[Obj]) -> list[Obj]:
    objects: list[Obj] = [
        {
            "apiVersion": RBAC_API_VERSION,
            "kind": "Role",
            "metadata": {"name": name, "namespace": ns},
            "rules": rules,
        }
    ]
    if subjects:
        objects.append(
            {
                "apiVersion": RBAC_API_VERSION,
                "kind": "RoleBinding",
                "metadata": {"name": name, "namespace": ns},
                "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": name},
                "subjects": subjects,
            }
        )
    return objects


def _volcano_queue(queue: models.Queue) -> Obj:
    """A Volcano Queue: capability from max, guarantee from guaranteed, and deserved (which
    Volcano's admission requires beside a guarantee) from the spec or else the guarantee."""
    spec: Obj = {"weight": 1}
    if queue.max:
        spec["capability"] = _quantities(queue.max)
    if queue.guaranteed:
        spec["guarantee"] = {"resource": _quantities(queue.guaranteed)}
    deserved = queue.deserved if queue.deserved is not None else queue.guaranteed
    if deserved:
        spec["deserved"] = _quantities(deserved)
    return {
        "apiVersion": VOLCANO_API_VERSION,
        "kind": "Queue",
        "metadata": {"name": queue.name},
        "spec": spec,
    }


def render_spark_pool(
    pool: models.SparkPool,
    cluster: models.Cluster,
    pools_of_cluster: Sequence[models.SparkPool],
    fleet: models.Fleet | None = None,
) -> list[Obj]:
    """The objects of one SparkPool, in dependency order.

    `pools_of_cluster` are all pools of `cluster` (this one included); nothing a pool renders
    depends on its siblings today, but the signature matches `render_cluster` so that callers
    hand both the same view of the repo. `fleet` gives the default Spark image.
    """
    del pools_of_cluster  # see the docstring
    spec, address, ns = pool.spec, pool.address, pool.spec.namespace
    scheduler = cluster.spec.scheduler
    namespace: Obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
    if scheduler == "volcano":  # where Volcano puts a PodGroup that names no queue
        namespace["metadata"]["annotations"] = {VOLCANO_QUEUE_ANNOTATION: spec.queue.name}
    objects: list[Obj] = [namespace]
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
    if scheduler == "volcano":
        objects.append(_volcano_queue(spec.queue))
    driver, executor = spec.serviceAccount, spec.executorServiceAccount
    objects.append(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": driver, "namespace": ns}}
    )
    objects.append(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": executor, "namespace": ns},
            "automountServiceAccountToken": False,
        }
    )
    objects += _role_objects(
        driver, ns, driver_rules(pool), [{"kind": "ServiceAccount", "name": driver, "namespace": ns}]
    )
    submitters = [
        *(
            {"apiGroup": RBAC_GROUP, "kind": "Group", "name": name}
            for name in sorted(set(spec.submitters.groups))
        ),
        *(
            {"apiGroup": RBAC_GROUP, "kind": "User", "name": name}
            for name in sorted(set(spec.submitters.users))
        ),
    ]
    objects += _role_objects(SUBMITTER_ROLE, ns, submitter_rules(cluster), submitters)
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
    roles: tuple[spark.Role, ...] = ("driver", "executor")
    data = {TEMPLATE_KEYS[role]: _pod_template(pool, cluster, role) for role in roles}
    data[SPARK_DEFAULTS_KEY] = _spark_defaults_text(pool, cluster, fleet)
    if scheduler == "volcano":
        data[PODGROUP_TEMPLATE_KEY] = _podgroup_template(pool)
    objects.append(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": POD_TEMPLATES_CONFIGMAP, "namespace": ns},
            "data": dict(sorted(data.items())),
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


def yunikorn_queues(cluster: models.Cluster, pools: Iterable[models.SparkPool]) -> str:
    """queues.yaml of the `yunikorn-configs` ConfigMap: every pool's queue as a child of root.

    Spark pods name their queue with the `queue: root.<name>` label, which the `provided` rule
    places. A pod that names no queue (or one that does not exist) falls through to the
    Cluster's fallback: the `root.default` queue, or a queue per namespace made on demand under
    `root.namespaces`. With `provided` alone and no `root.default`, YuniKorn would reject such
    pods ("no placement rule matched"); every queue sits under root, whose `submitacl: "*"`
    lets anyone submit (with no ACL anywhere, YuniKorn rejects every application)."""
    queues = _queue_tree(pools)
    rules: list[Obj] = [{"name": "provided", "create": False}]
    if cluster.spec.yunikorn.fallback == "namespace":
        # Under a parent of their own, so that a namespace named like a pool's parent queue
        # cannot land on that parent (which holds no applications) and be rejected.
        parent = {"name": "fixed", "value": f"root.{YUNIKORN_NAMESPACES_QUEUE}"}
        rules.append({"name": "tag", "value": "namespace", "create": True, "parent": parent})
        queues = sorted(
            [*queues, {"name": YUNIKORN_NAMESPACES_QUEUE, "parent": True}], key=lambda q: str(q["name"])
        )
    else:
        rules.append({"name": "fixed", "value": f"root.{YUNIKORN_DEFAULT_QUEUE}", "create": False})
        if all(queue["name"] != YUNIKORN_DEFAULT_QUEUE for queue in queues):
            queues = sorted([*queues, {"name": YUNIKORN_DEFAULT_QUEUE}], key=lambda q: str(q["name"]))
    config = {
        "partitions": [
            {
                "name": "default",
                "placementrules": rules,
                "queues": [{"name": "root", "submitacl": "*", "queues": queues}],
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
                "data": {YUNIKORN_QUEUES_KEY: yunikorn_queues(cluster, pools_of_cluster)},
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
