"""What fleet renders for Spark pools, checked against upstream's own rules rather than ours.

The lab's API server has no YuniKorn, no Volcano admission and no Spark, so these tests hold the
rendered objects to what those projects publish and enforce:

- every Kubernetes object (the pod templates included, as Pods) validates in strict mode against
  the OpenAPI schemas of Kubernetes 1.29 to the newest `kubernetes-validate` ships;
- the Volcano Queue and the PodGroup template validate against Volcano's CRD schemas and its
  queue admission rules (`upstream/volcano.py`);
- `queues.yaml` is parsed and validated as yunikorn-core does, and every Spark pod is placed in a
  queue, never rejected (`upstream/yunikorn.py`);
- every `spark.*` key written is documented by Spark for the supported versions, or is a
  plugin's, and the driver's and submitters' Roles grant every verb Spark's code uses
  (`upstream/spark.py`).
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import kubernetes_validate
import pytest
from fleet_testing import example_documents
from ruamel.yaml import YAML
from upstream import spark as upstream_spark
from upstream import volcano, yunikorn

from providers.kubernetes import render
from reconciler.spec import models, spark

Obj = dict[str, Any]
KUBERNETES_VERSIONS = [
    f"1.{minor}.0" for minor in range(29, int(kubernetes_validate.latest_version().split(".")[1]) + 1)
]


def _load(text: str) -> Any:
    return YAML(typ="safe", pure=True).load(text)


@pytest.fixture(scope="module")
def docs() -> dict[str, models.Document]:
    return {d.address: d for d in example_documents()}


def _fleet(docs: dict[str, models.Document]) -> models.Fleet:
    (fleet,) = (d for d in docs.values() if isinstance(d, models.Fleet))
    return fleet


def _pools(docs: dict[str, models.Document], cluster: str) -> list[models.SparkPool]:
    return [d for d in docs.values() if isinstance(d, models.SparkPool) and d.spec.cluster == cluster]


def _cluster(docs: dict[str, models.Document], name: str) -> models.Cluster:
    cluster = docs[f"cluster/{name}"]
    assert isinstance(cluster, models.Cluster)
    return cluster


def _variant_cluster(docs: dict[str, models.Document], name: str, **spec: Any) -> models.Cluster:
    raw = _cluster(docs, name).model_dump(mode="json", by_alias=True)
    raw["spec"].update(spec)
    return models.Cluster.model_validate(raw)


def _rendered(docs: dict[str, models.Document]) -> Iterator[tuple[str, Obj]]:
    """Every object of the example's pools and clusters, and of variants that render otherwise
    (the default scheduler, a pool with no guarantee or priority, YuniKorn's namespace fallback)."""
    fleet = _fleet(docs)
    clusters = [d for d in docs.values() if isinstance(d, models.Cluster)]
    plain = models.SparkPool.model_validate(
        {
            "apiVersion": "fleet/v1alpha1",
            "kind": "SparkPool",
            "metadata": {"name": "plain"},
            "spec": {
                "cluster": "k8s-nyc1",
                "namespace": "spark-plain",
                "queue": {"name": "plain"},
                "nodes": {"selector": {"fleet.acme.io/pool": "etl"}},
            },
        }
    )
    for cluster in [
        *clusters,
        _variant_cluster(docs, "k8s-nyc1", yunikorn={"fallback": "namespace"}),
        _variant_cluster(docs, "k8s-nyc1", scheduler="default"),
        _variant_cluster(docs, "k8s-nyc1", scheduler="volcano"),
    ]:
        pools = (
            [*_pools(docs, cluster.metadata.name), plain]
            if cluster.metadata.name == "k8s-nyc1"
            else (_pools(docs, cluster.metadata.name))
        )
        label = f"{cluster.metadata.name}/{cluster.spec.scheduler}"
        for obj in render.render_cluster(cluster, pools):
            yield label, obj
        for pool in pools:
            for obj in render.render_spark_pool(pool, cluster, pools, fleet):
                yield f"{label}/{pool.metadata.name}", obj


def _core(obj: Obj) -> bool:
    group = str(obj["apiVersion"])
    return "/" not in group or group.split("/")[0].endswith(".k8s.io")


def _pods(obj: Obj) -> Iterator[tuple[str, Obj]]:
    if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == render.POD_TEMPLATES_CONFIGMAP:
        for key in (render.DRIVER_TEMPLATE_KEY, render.EXECUTOR_TEMPLATE_KEY):
            yield key, _load(obj["data"][key])


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_core_object_and_pod_template_is_valid_in_strict_mode(
    docs: dict[str, models.Document], version: str
) -> None:
    checked = 0
    problems = []
    for where, obj in _rendered(docs):
        candidates = [(object_name(obj), obj)] if _core(obj) else []
        candidates += [(f"{object_name(obj)}:{key}", pod) for key, pod in _pods(obj)]
        for name, candidate in candidates:
            checked += 1
            try:
                kubernetes_validate.validate(candidate, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                problems.append(f"{where} {name}: {exc.message} at {list(exc.path)}")
    assert not problems, "\n".join(problems)
    assert checked > 50


def test_strict_validation_would_catch_a_template_without_containers() -> None:
    # The check above is worth something only if a pod template like the old ones is refused.
    old = {"apiVersion": "v1", "kind": "Pod", "spec": {"nodeSelector": {"a": "b"}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(old, KUBERNETES_VERSIONS[-1], strict=True)
    typo = {"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [{"name": "x"}], "nodeSelektor": {}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, KUBERNETES_VERSIONS[0], strict=True)


def object_name(obj: Obj) -> str:
    return render.object_key(obj)


def test_volcano_queues_pass_the_crd_schema_and_admission(docs: dict[str, models.Document]) -> None:
    queues = [obj for _, obj in _rendered(docs) if obj["kind"] == "Queue"]
    assert {q["metadata"]["name"] for q in queues} >= {"adhoc", "etl", "ml-gpu", "plain"}
    for queue in queues:
        assert volcano.queue_problems(queue) == [], queue


def test_the_old_volcano_queue_is_refused_by_admission() -> None:
    # What fleet rendered before: a guarantee and no deserved, which Volcano 1.14.2+ refuses.
    old = {
        "apiVersion": "scheduling.volcano.sh/v1beta1",
        "kind": "Queue",
        "metadata": {"name": "adhoc"},
        "spec": {
            "weight": 1,
            "capability": {"cpu": "448", "memory": "1792Gi"},
            "guarantee": {"resource": {"cpu": "64", "memory": "256Gi"}},
        },
    }
    assert any("deserved" in problem for problem in volcano.queue_problems(old))


def test_podgroup_templates_pass_the_crd_schema_and_name_the_pools_queue(
    docs: dict[str, models.Document],
) -> None:
    templates = 0
    for where, obj in _rendered(docs):
        if obj["kind"] != "ConfigMap" or render.PODGROUP_TEMPLATE_KEY not in obj.get("data", {}):
            continue
        templates += 1
        podgroup = _load(obj["data"][render.PODGROUP_TEMPLATE_KEY])
        assert volcano.podgroup_problems(podgroup) == [], where
        namespace = obj["metadata"]["namespace"]
        pool = (
            next(
                d for d in docs.values() if isinstance(d, models.SparkPool) and d.spec.namespace == namespace
            )
            if namespace != "spark-plain"
            else None
        )
        if pool is not None:
            assert podgroup["spec"]["queue"] == pool.spec.queue.name
            driver = spark.pod_size(pool, "driver")
            assert volcano.parse_quantity(podgroup["spec"]["minResources"]["memory"]) == driver.memory
            assert volcano.parse_quantity(podgroup["spec"]["minResources"]["cpu"]) == driver.cores
    assert templates >= 4  # adhoc on ldn1, and the nyc1 pools on the Volcano variant


def _queues_yaml(objects: list[Obj]) -> str:
    (configmap,) = [o for o in objects if o["metadata"]["name"] == render.YUNIKORN_CONFIGMAP]
    return str(configmap["data"][render.YUNIKORN_QUEUES_KEY])


@pytest.mark.parametrize("fallback", ["default-queue", "namespace"])
def test_yunikorn_parses_and_validates_the_queues_and_places_every_pod(
    docs: dict[str, models.Document], fallback: str
) -> None:
    cluster = _variant_cluster(docs, "k8s-nyc1", yunikorn={"fallback": fallback})
    pools = _pools(docs, "k8s-nyc1")
    text = _queues_yaml(render.render_cluster(cluster, pools))
    yunikorn.parse_config(text)
    assert yunikorn.config_problems(text) == []
    for pool in pools:
        # Spark's pods carry the queue label the pool's templates and spark-defaults give them.
        label = render.spark_defaults(pool, cluster)["spark.kubernetes.driver.label.queue"]
        assert (
            yunikorn.place(text, queue_label=label, namespace=pool.spec.namespace)
            == f"root.{pool.spec.queue.name}"
        )
    # Pods of other namespaces, or naming a queue that does not exist, still find a queue.
    elsewhere = yunikorn.place(text, queue_label=None, namespace="monitoring")
    wrong = yunikorn.place(text, queue_label="root.nonexistent", namespace="monitoring")
    expected = "root.default" if fallback == "default-queue" else "root.namespaces.monitoring"
    assert (elsewhere, wrong) == (expected, expected)


def test_yunikorn_reads_the_queue_figures_in_the_pools_units(docs: dict[str, models.Document]) -> None:
    cluster = _cluster(docs, "k8s-nyc1")
    config = _load(_queues_yaml(render.render_cluster(cluster, _pools(docs, "k8s-nyc1"))))
    etl = next(q for q in config["partitions"][0]["queues"][0]["queues"] if q["name"] == "etl")
    # 256 cores are 256000 millicores inside YuniKorn (ParseVCore); 1Ti is 2**40 bytes.
    assert yunikorn.resources_in_base_units(etl["resources"]["guaranteed"]) == {
        "memory": 1024**4,
        "vcore": 256_000,
    }
    assert yunikorn.resources_in_base_units(etl["resources"]["max"])["vcore"] == 480_000


def test_the_old_yunikorn_figures_and_placement_are_caught() -> None:
    old = """partitions:
  - name: default
    placementrules:
      - name: provided
        create: false
    queues:
      - name: root
        submitacl: "*"
        queues:
          - name: etl
            resources:
              guaranteed: {memory: 1099511627776, vcore: 256000}
              max: {memory: 2061584302080, vcore: 480000}
"""
    # A plain vcore figure is cores: fleet's old millicores were a thousand times too many.
    assert yunikorn.resources_in_base_units({"vcore": 256000})["vcore"] == 256_000_000
    assert yunikorn.place(old, queue_label=None, namespace="monitoring") is None


def _spark_keys(docs: dict[str, models.Document]) -> dict[str, str]:
    keys: dict[str, str] = {}
    for where, obj in _rendered(docs):
        if obj["kind"] == "ConfigMap" and render.SPARK_DEFAULTS_KEY in obj.get("data", {}):
            for line in obj["data"][render.SPARK_DEFAULTS_KEY].splitlines():
                keys.setdefault(line.split(" ", 1)[0], where)
    return keys


def test_every_spark_key_written_is_documented_or_a_plugins(docs: dict[str, models.Document]) -> None:
    keys = _spark_keys(docs)
    assert "spark.kubernetes.scheduler.volcano.podGroupTemplateFile" in keys
    # Documented in the property tables of every supported Spark version, except the Volcano
    # template file, which Spark documents only in the prose of "Using Volcano" (since 3.3.0), and
    # spark.plugins (the RAPIDS pool's), explained in "Advanced Instrumentation".
    undocumented = {k: v for k, v in upstream_spark.undocumented_keys(keys).items() if v}
    assert set(undocumented) == {"spark.kubernetes.scheduler.volcano.podGroupTemplateFile", "spark.plugins"}
    assert not any(upstream_spark.undocumented_keys(keys, include_prose=True).values())
    owners = {key: upstream_spark.key_owner(key) for key in keys}
    assert {owners[k] for k in keys if k.startswith("spark.rapids.")} == {"rapids"}
    assert {owners[k] for k in keys if k.startswith("spark.hadoop.fs.")} == {"hadoop"}
    assert {owners[k] for k in spark.FLEET_KEYS if k in keys} == {"spark"}


def test_the_key_check_catches_a_key_spark_does_not_have() -> None:
    typo = "spark.kubernetes.driver.podTemplateContainerNam"
    assert upstream_spark.undocumented_keys([typo])[typo] == list(upstream_spark.SPARK_VERSIONS)


def _granted(rules: list[Obj]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def _needed(calls: tuple[upstream_spark.ApiCall, ...]) -> set[tuple[str, str, str]]:
    return {(call.api_group, call.resource, call.verb) for call in calls}


@pytest.mark.parametrize("allocator", ["direct", "statefulset"])
def test_the_driver_role_grants_every_verb_sparks_driver_uses(
    docs: dict[str, models.Document], allocator: str
) -> None:
    raw = docs["sparkpool/etl"].model_dump(mode="json", by_alias=True)
    raw["spec"]["spark"]["defaults"]["spark.kubernetes.allocation.pods.allocator"] = allocator
    pool = models.SparkPool.model_validate(raw)
    calls = tuple(
        call
        for call in upstream_spark.DRIVER_POD_API_CALLS
        if allocator == "statefulset" or not call.spark_source_path.endswith("StatefulSetPodsAllocator.scala")
    )
    granted = _granted(render.driver_rules(pool))
    assert _needed(calls) - granted == set()
    assert ("apps", "statefulsets", "create") in granted or allocator == "direct"


@pytest.mark.parametrize("scheduler", ["yunikorn", "volcano", "default"])
def test_the_submitter_role_grants_every_verb_spark_submit_uses(
    docs: dict[str, models.Document], scheduler: str
) -> None:
    cluster = _variant_cluster(docs, "k8s-nyc1", scheduler=scheduler)
    granted = _granted(render.submitter_rules(cluster))
    calls = tuple(
        call
        for call in upstream_spark.SUBMITTER_API_CALLS
        if call.api_group != render.VOLCANO_API_GROUP or scheduler == "volcano"
    )
    assert _needed(calls) - granted == set()
    assert any(group == render.VOLCANO_API_GROUP for group, _, _ in granted) == (scheduler == "volcano")


def test_pod_sizes_follow_sparks_overhead_rule(docs: dict[str, models.Document]) -> None:
    etl = docs["sparkpool/etl"]
    assert isinstance(etl, models.SparkPool)
    executor = spark.pod_size(etl, "executor")
    # 14g heap, overhead max(0.1 x 14336 MiB, 384 MiB) = 1433 MiB.
    assert executor.memory == (14 * 1024 + 1433) * 1024**2
    assert executor.cores == Decimal(4)
    assert spark.CONTAINER_NAMES == upstream_spark.SPARK_DEFAULT_CONTAINER_NAMES
    assert spark.MIN_OVERHEAD_MIB == upstream_spark.MIN_MEMORY_OVERHEAD_MIB
    assert float(spark.OVERHEAD_FACTOR) == upstream_spark.DEFAULT_MEMORY_OVERHEAD_FACTOR
    fleet = _fleet(docs)
    for pool in (d for d in docs.values() if isinstance(d, models.SparkPool)):
        conf = render.spark_defaults(pool, _cluster(docs, pool.spec.cluster), fleet)
        for role in ("driver", "executor"):
            expected = upstream_spark.memory_overhead_mib(conf, role)
            assert spark.pod_size(pool, role).overhead == expected * 1024**2, (pool.address, role)
