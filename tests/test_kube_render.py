"""What fleet renders for Kubernetes from the example repo's SparkPools and Clusters.

Pure: no server. The objects are what `kubectl get -o yaml` would show once applied, so the
assertions read like the objects themselves; determinism is checked by rendering twice and in
another order.
"""

from __future__ import annotations

import json

import pytest
from fleet_testing import example_documents
from ruamel.yaml import YAML

from providers.kubernetes import render
from reconciler.spec import models, spark

Docs = dict[str, models.Document]


@pytest.fixture(scope="module")
def docs() -> Docs:
    return {document.address: document for document in example_documents()}


def _pools(docs: Docs, cluster: str) -> list[models.SparkPool]:
    return [d for d in docs.values() if isinstance(d, models.SparkPool) and d.spec.cluster == cluster]


def _pool(docs: Docs, name: str) -> models.SparkPool:
    pool = docs[f"sparkpool/{name}"]
    assert isinstance(pool, models.SparkPool)
    return pool


def _cluster(docs: Docs, name: str) -> models.Cluster:
    cluster = docs[f"cluster/{name}"]
    assert isinstance(cluster, models.Cluster)
    return cluster


def _fleet(docs: Docs) -> models.Fleet:
    (fleet,) = (d for d in docs.values() if isinstance(d, models.Fleet))
    return fleet


def _render_pool(docs: Docs, name: str) -> dict[str, dict]:
    pool = _pool(docs, name)
    cluster = _cluster(docs, pool.spec.cluster)
    return {
        render.object_key(o): o
        for o in render.render_spark_pool(pool, cluster, _pools(docs, cluster.metadata.name), _fleet(docs))
    }


def _load(text: str) -> object:
    return YAML(typ="safe", pure=True).load(text)


def test_a_pool_renders_its_objects_in_dependency_order(docs: Docs) -> None:
    pool = _pool(docs, "etl")
    objects = render.render_spark_pool(pool, _cluster(docs, "k8s-nyc1"), _pools(docs, "k8s-nyc1"))
    assert [render.object_key(o) for o in objects] == [
        "v1/Namespace/_/spark-etl",
        "scheduling.k8s.io/v1/PriorityClass/_/spark-etl",
        "v1/ServiceAccount/spark-etl/spark-etl-driver",
        "v1/ServiceAccount/spark-etl/spark-etl-executor",
        "rbac.authorization.k8s.io/v1/Role/spark-etl/spark-etl-driver",
        "rbac.authorization.k8s.io/v1/RoleBinding/spark-etl/spark-etl-driver",
        "rbac.authorization.k8s.io/v1/Role/spark-etl/spark-submitter",
        "rbac.authorization.k8s.io/v1/RoleBinding/spark-etl/spark-submitter",
        "v1/ResourceQuota/spark-etl/spark-quota",
        "v1/LimitRange/spark-etl/spark-defaults",
        "v1/ConfigMap/spark-etl/spark-pod-templates",
    ]
    for obj in objects:
        assert obj["metadata"]["labels"][render.OWNER_LABEL] == "sparkpool.etl"
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "fleet"
        assert obj["metadata"]["annotations"] == {render.ADDRESS_ANNOTATION: "sparkpool/etl"}


def test_quota_limits_priority_and_rbac(docs: Docs) -> None:
    objects = _render_pool(docs, "etl")
    assert objects["v1/ResourceQuota/spark-etl/spark-quota"]["spec"] == {
        # Canonical Kubernetes quantities, as the API server stores them.
        "hard": {"limits.memory": "1920Gi", "pods": "1k", "requests.cpu": "480", "requests.memory": "1920Gi"}
    }
    assert objects["v1/LimitRange/spark-etl/spark-defaults"]["spec"] == {
        "limits": [
            {
                "type": "Container",
                "default": {"cpu": "2", "memory": "4Gi"},
                "defaultRequest": {"cpu": "500m", "memory": "1Gi"},
            }
        ]
    }
    priority = objects["scheduling.k8s.io/v1/PriorityClass/_/spark-etl"]
    assert (priority["value"], priority["preemptionPolicy"], priority["globalDefault"]) == (
        100000,
        "PreemptLowerPriority",
        False,
    )
    role = objects["rbac.authorization.k8s.io/v1/Role/spark-etl/spark-etl-driver"]
    every = ["create", "delete", "deletecollection", "get", "list", "watch"]
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": every},
        {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": every},
        # The driver patches executor pods (deleteOnTermination=false, decommissioning labels).
        {"apiGroups": [""], "resources": ["pods"], "verbs": sorted([*every, "patch", "update"])},
        {"apiGroups": [""], "resources": ["services"], "verbs": every},
    ]
    binding = objects["rbac.authorization.k8s.io/v1/RoleBinding/spark-etl/spark-etl-driver"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "spark-etl-driver",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "spark-etl-driver", "namespace": "spark-etl"}
    ]
    # Executors run as an account of their own, with no rights and no API token.
    executor = objects["v1/ServiceAccount/spark-etl/spark-etl-executor"]
    assert executor["automountServiceAccountToken"] is False
    assert not any(
        s.get("name") == "spark-etl-executor" for o in objects.values() for s in o.get("subjects", [])
    )
    submitters = objects["rbac.authorization.k8s.io/v1/RoleBinding/spark-etl/spark-submitter"]
    assert submitters["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "data-platform"},
        {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "User",
            "name": "system:serviceaccount:airflow:airflow-worker",
        },
    ]
    submit = objects["rbac.authorization.k8s.io/v1/Role/spark-etl/spark-submitter"]
    assert {
        "apiGroups": [""],
        "resources": ["pods"],
        "verbs": ["create", "delete", "get", "list", "watch"],
    } in (submit["rules"])
    assert not any("scheduling.volcano.sh" in rule["apiGroups"] for rule in submit["rules"])


def test_a_pool_without_submitters_gets_the_role_but_no_binding(docs: Docs) -> None:
    raw = _pool(docs, "etl").model_dump(mode="json")
    raw["spec"].pop("submitters")
    pool = models.SparkPool.model_validate(raw)
    keys = [render.object_key(o) for o in render.render_spark_pool(pool, _cluster(docs, "k8s-nyc1"), [pool])]
    assert "rbac.authorization.k8s.io/v1/Role/spark-etl/spark-submitter" in keys
    assert "rbac.authorization.k8s.io/v1/RoleBinding/spark-etl/spark-submitter" not in keys


def test_gpu_quota_keeps_the_extended_resource_as_written(docs: Docs) -> None:
    hard = _render_pool(docs, "ml-gpu")["v1/ResourceQuota/spark-ml-gpu/spark-quota"]["spec"]["hard"]
    assert hard["requests.nvidia.com/gpu"] == "32"
    assert hard["pods"] == "200"


def test_pod_templates_on_yunikorn(docs: Docs) -> None:
    data = _render_pool(docs, "ml-gpu")["v1/ConfigMap/spark-ml-gpu/spark-pod-templates"]["data"]
    assert sorted(data) == ["driver-pod-template.yaml", "executor-pod-template.yaml", "spark-defaults.conf"]
    template = _load(data["executor-pod-template.yaml"])
    assert template == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"labels": {"queue": "root.ml-gpu"}},
        "spec": {
            # A valid Pod: Spark fills in the container it finds by podTemplateContainerName.
            "containers": [{"name": "spark-kubernetes-executor"}],
            "nodeSelector": {"fleet.acme.io/accelerator": "nvidia-l40s", "fleet.acme.io/pool": "ml-gpu"},
            "priorityClassName": "spark-ml-gpu",
            "schedulerName": "yunikorn",
            "tolerations": [
                {"effect": "NoSchedule", "key": "fleet.acme.io/pool", "operator": "Equal", "value": "ml-gpu"}
            ],
        },
    }
    driver = _load(data["driver-pod-template.yaml"])
    assert driver["spec"]["containers"] == [{"name": "spark-kubernetes-driver"}]
    driver["spec"]["containers"] = template["spec"]["containers"]
    assert driver == template


def test_spark_defaults(docs: Docs) -> None:
    text = _render_pool(docs, "etl")["v1/ConfigMap/spark-etl/spark-pod-templates"]["data"][
        "spark-defaults.conf"
    ]
    lines = text.splitlines()
    assert lines == sorted(lines)
    conf = dict(line.split(" ", 1) for line in lines)
    assert {
        "spark.kubernetes.namespace": "spark-etl",
        "spark.kubernetes.authenticate.driver.serviceAccountName": "spark-etl-driver",
        "spark.driver.cores": "2",
        "spark.driver.memory": "8g",
        "spark.executor.cores": "4",
        "spark.executor.memory": "14g",
        "spark.dynamicAllocation.enabled": "true",
        "spark.dynamicAllocation.shuffleTracking.enabled": "true",
        "spark.dynamicAllocation.minExecutors": "2",
        "spark.dynamicAllocation.maxExecutors": "110",
        "spark.kubernetes.driver.podTemplateFile": "/opt/spark/conf/driver-pod-template.yaml",
        "spark.kubernetes.executor.podTemplateFile": "/opt/spark/conf/executor-pod-template.yaml",
        "spark.kubernetes.scheduler.name": "yunikorn",
        "spark.kubernetes.driver.label.queue": "root.etl",
        "spark.kubernetes.executor.label.queue": "root.etl",
        "spark.kubernetes.driver.podTemplateContainerName": "spark-kubernetes-driver",
        "spark.kubernetes.executor.podTemplateContainerName": "spark-kubernetes-executor",
        "spark.kubernetes.authenticate.executor.serviceAccountName": "spark-etl-executor",
        # What spark-submit needs besides: the master and the image (the Fleet's default here).
        "spark.master": "k8s://https://10.20.10.10:6443",
        "spark.kubernetes.container.image": "registry.acme.internal/spark/spark:3.5.5-scala2.12-java17",
        # From the pool's spark.defaults:
        "spark.sql.shuffle.partitions": "800",
        "spark.serializer": "org.apache.spark.serializer.KryoSerializer",
    }.items() <= conf.items()


def test_yunikorn_queues_hold_every_pool_of_the_cluster(docs: Docs) -> None:
    cluster = _cluster(docs, "k8s-nyc1")
    objects = render.render_cluster(cluster, _pools(docs, "k8s-nyc1"))
    assert [render.object_key(o) for o in objects] == [
        "v1/Namespace/_/monitoring",
        "scheduling.k8s.io/v1/PriorityClass/_/platform-critical",
        "v1/ConfigMap/yunikorn/yunikorn-configs",
    ]
    configmap = objects[-1]
    # The ConfigMap belongs to the YuniKorn installation: fleet owns one key and never prunes it.
    assert configmap["metadata"]["annotations"][render.PRUNE_ANNOTATION] == "disabled"
    assert list(configmap["data"]) == ["queues.yaml"]
    config = _load(configmap["data"]["queues.yaml"])
    (partition,) = config["partitions"]
    (root,) = partition["queues"]
    assert root["name"] == "root"
    # Kubernetes quantities: YuniKorn reads a plain vcore figure as cores (YUNIKORN-1120).
    assert root["queues"] == [
        {"name": "default"},
        {
            "name": "etl",
            "resources": {
                "guaranteed": {"memory": "1Ti", "vcore": "256"},
                "max": {"memory": "1920Gi", "vcore": "480"},
            },
        },
        {
            "name": "ml-gpu",
            "resources": {
                "guaranteed": {"memory": "2Ti", "nvidia.com/gpu": "16", "vcore": "192"},
                "max": {"memory": "3840Gi", "nvidia.com/gpu": "32", "vcore": "368"},
            },
        },
    ]
    # A pod that names no pool queue lands in root.default instead of being rejected.
    assert partition["placementrules"] == [
        {"create": False, "name": "provided"},
        {"create": False, "name": "fixed", "value": "root.default"},
    ]
    assert objects[0]["metadata"]["labels"]["team"] == "observability"  # spec.objects as written


def test_volcano_cluster_gets_a_queue_object_and_no_yunikorn_config(docs: Docs) -> None:
    objects = _render_pool(docs, "adhoc")
    queue = objects["scheduling.volcano.sh/v1beta1/Queue/_/adhoc"]
    assert queue["spec"] == {
        "weight": 1,
        "capability": {"cpu": "448", "memory": "1792Gi"},
        "deserved": {"cpu": "128", "memory": "512Gi"},
        "guarantee": {"resource": {"cpu": "64", "memory": "256Gi"}},
    }
    data = objects["v1/ConfigMap/spark-adhoc/spark-pod-templates"]["data"]
    template = _load(data["driver-pod-template.yaml"])
    assert template["spec"]["schedulerName"] == "volcano"
    assert template["metadata"] == {"annotations": {"scheduling.volcano.sh/queue-name": "adhoc"}}
    # Gang scheduling: Spark's VolcanoFeatureStep makes each application's PodGroup from this
    # template, in the pool's queue, needing at least the driver (1 core, 4Gi + 409Mi overhead).
    assert _load(data["podgroup-template.yaml"]) == {
        "apiVersion": "scheduling.volcano.sh/v1beta1",
        "kind": "PodGroup",
        "spec": {
            "minMember": 1,
            "minResources": {"cpu": "1", "memory": "4505Mi"},
            "priorityClassName": "spark-adhoc",
            "queue": "adhoc",
        },
    }
    conf = dict(line.split(" ", 1) for line in data["spark-defaults.conf"].splitlines())
    step = "org.apache.spark.deploy.k8s.features.VolcanoFeatureStep"
    assert (
        conf["spark.kubernetes.scheduler.volcano.podGroupTemplateFile"]
        == "/opt/spark/conf/podgroup-template.yaml"
    )
    assert conf["spark.kubernetes.driver.pod.featureSteps"] == step
    assert conf["spark.kubernetes.executor.pod.featureSteps"] == step
    assert conf["spark.master"] == "k8s://https://10.40.10.10:6443"
    # A PodGroup made without the template still lands in the pool's queue, not Volcano's default.
    namespace = objects["v1/Namespace/_/spark-adhoc"]
    assert namespace["metadata"]["annotations"]["scheduling.volcano.sh/queue-name"] == "adhoc"
    submit = objects["rbac.authorization.k8s.io/v1/Role/spark-adhoc/spark-submitter"]
    assert {
        "apiGroups": ["scheduling.volcano.sh"],
        "resources": ["podgroups"],
        "verbs": ["create", "delete", "get", "list", "patch"],
    } in submit["rules"]
    cluster = _cluster(docs, "k8s-ldn1")
    assert [render.object_key(o) for o in render.render_cluster(cluster, _pools(docs, "k8s-ldn1"))] == [
        "v1/Namespace/_/monitoring"
    ]


def test_a_pool_without_a_taint_tolerates_the_default_one(docs: Docs) -> None:
    raw = _pool(docs, "etl").model_dump(mode="json")
    raw["spec"]["nodes"].pop("taint")
    raw["metadata"]["name"] = "nightly"
    pool = models.SparkPool.model_validate(raw)
    assert render.taint_text(render.pool_taint(pool)) == "dedicated=nightly:NoSchedule"
    objects = render.render_spark_pool(pool, _cluster(docs, "k8s-nyc1"), [pool])
    template = _load(objects[-1]["data"]["driver-pod-template.yaml"])
    assert template["spec"]["tolerations"] == [
        {"effect": "NoSchedule", "key": "dedicated", "operator": "Equal", "value": "nightly"}
    ]


def test_rendering_is_deterministic(docs: Docs) -> None:
    cluster = _cluster(docs, "k8s-nyc1")
    pools = _pools(docs, "k8s-nyc1")

    def dump(objects: list[dict]) -> str:
        return json.dumps(objects)  # key order matters here too: same input, same bytes

    assert dump(render.render_cluster(cluster, pools)) == dump(render.render_cluster(cluster, pools[::-1]))
    for pool in pools:
        first = render.render_spark_pool(pool, cluster, pools)
        assert dump(first) == dump(render.render_spark_pool(pool, cluster, pools[::-1]))


def test_node_intents_split_between_the_cluster_and_its_pools(docs: Docs) -> None:
    cluster = _cluster(docs, "k8s-nyc1")
    pools = _pools(docs, "k8s-nyc1")
    mine = {i.node: i for i in render.cluster_node_intents(cluster, pools)}
    assert mine["nyc1-r02-04"].cordon is True and mine["nyc1-r01-02"].cordon is False
    assert [render.taint_text(t) for t in mine["k8s-nyc1-cp-1"].taints] == [
        "node-role.kubernetes.io/control-plane:NoSchedule"
    ]
    # The pool's taint is the pool's: the Cluster only knows not to remove it.
    assert mine["nyc1-r04-01"].taints == () and mine["nyc1-r04-01"].others == {
        "fleet.acme.io/pool:NoSchedule"
    }
    gpu = render.pool_node_intents(_pool(docs, "ml-gpu"), cluster, pools)
    assert [i.node for i in gpu] == ["nyc1-r04-01", "nyc1-r04-02", "nyc1-r04-03", "nyc1-r04-04"]
    assert gpu[0].labels == {"fleet.acme.io/accelerator": "nvidia-l40s", "fleet.acme.io/pool": "ml-gpu"}
    assert gpu[0].cordon is None


@pytest.mark.parametrize(
    ("key", "ref"),
    [
        pytest.param(
            "v1/ConfigMap/spark-etl/spark-pod-templates", ("v1", "ConfigMap", "spark-etl"), id="core"
        ),
        pytest.param(
            "scheduling.k8s.io/v1/PriorityClass/_/spark-etl",
            ("scheduling.k8s.io/v1", "PriorityClass", None),
            id="grouped-cluster-scoped",
        ),
    ],
)
def test_object_keys_round_trip(key: str, ref: tuple[str, str, str | None]) -> None:
    parsed = render.parse_key(key)
    assert (parsed.api_version, parsed.kind, parsed.namespace) == ref
    assert parsed.key == key


@pytest.mark.parametrize(
    "bad", ["v1/ConfigMap/x", "a/b/c/d/e/f", "v1//ns/x"], ids=["short", "long", "empty-part"]
)
def test_malformed_keys_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        render.parse_key(bad)


def test_a_long_owner_label_value_stays_a_valid_label() -> None:
    long = "sparkpool/" + "p" * 63
    value = render.owner_value(long)
    assert len(value) <= 63 and value != render.owner_value("sparkpool/" + "p" * 62 + "q")


@pytest.mark.parametrize(
    ("quantity", "size"),
    [("28Gi", "28g"), ("1Ti", "1t"), ("1536Mi", "1536m"), ("8G", "7812500k"), ("100", "100b")],
    ids=["gibibytes", "tebibyte", "mebibytes", "decimal-gigabytes", "bytes"],
)
def test_spark_memory_sizes_are_exact(quantity: str, size: str) -> None:
    assert spark.spark_memory(quantity) == size


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(
            {"a": "yes", "b": "1", "c": "", "d": "null", "e": "on"}, id="strings-that-look-like-others"
        ),
        pytest.param({"k": "a: b", "l": "*", "m": "- x", "n": "#c", "o": "{x}"}, id="yaml-syntax-in-strings"),
        pytest.param(
            {"u": "façade", "q": 'say "hi"\nbye', "t": True, "i": 7, "z": None}, id="unicode-quotes-scalars"
        ),
        pytest.param({"l": [[1, 2], {"a": {}}, [], {}], "e": {}, "f": []}, id="nested-and-empty"),
    ],
)
def test_yaml_text_reads_back_as_the_value(value: dict) -> None:
    assert _load(render.yaml_text(value)) == value


def test_example_pools_all_render(docs: Docs) -> None:
    for pool in (d for d in docs.values() if isinstance(d, models.SparkPool)):
        objects = render.render_spark_pool(pool, _cluster(docs, pool.spec.cluster), [pool])
        assert len({render.object_key(o) for o in objects}) == len(objects)
