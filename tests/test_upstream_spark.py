"""The Spark upstream checkers in tests/upstream/spark.py can fail, and say what upstream says."""

from __future__ import annotations

import pytest

from tests.upstream import spark
from tests.upstream.spark import (
    DRIVER_POD_API_CALLS,
    DYNAMIC_ALLOCATION_REFUSAL,
    SPARK_DEFAULT_CONTAINER_NAMES,
    SPARK_VERSIONS,
    SUBMITTER_API_CALLS,
    documented_keys,
    dynamic_allocation_refused,
    key_owner,
    memory_overhead_mib,
    undocumented_keys,
    verbs_by_resource,
)


def test_versions_have_data_files_with_provenance_headers() -> None:
    assert SPARK_VERSIONS == ("v3.5.9", "v4.0.4", "v4.1.3")
    for version in SPARK_VERSIONS:
        text = spark.data_file(version).read_text(encoding="utf-8")
        assert text.startswith(f"# apache/spark {version} ")
        for path, commit in spark.DOCS_SOURCE[version].items():
            assert f"{commit}:{path}" in text
        keys = [line for line in text.splitlines() if line and not line.startswith("#")]
        assert keys == sorted(set(keys))
        assert all(key.startswith("spark.") for key in keys)


def test_made_up_key_is_undocumented_everywhere() -> None:
    assert undocumented_keys(["spark.kubernetes.nonsense"]) == {
        "spark.kubernetes.nonsense": list(SPARK_VERSIONS)
    }


@pytest.mark.parametrize(
    "key",
    [
        "spark.kubernetes.driver.podTemplateContainerName",
        "spark.kubernetes.executor.podTemplateContainerName",
        "spark.kubernetes.authenticate.executor.serviceAccountName",
        "spark.kubernetes.driver.label.queue",
        "spark.kubernetes.executor.label.queue",
        "spark.kubernetes.driver.annotation.yunikorn.apache.org/app-id",
        "spark.kubernetes.driver.pod.featureSteps",
        "spark.kubernetes.executor.pod.featureSteps",
        "spark.kubernetes.scheduler.name",
        "spark.kubernetes.executor.volumes.persistentVolumeClaim.data.options.claimName",
        "spark.executor.resource.gpu.amount",
        "spark.driver.rpc.io.serverThreads",
        "spark.dynamicAllocation.shuffleTracking.enabled",
        "spark.eventLog.enabled",
        "spark.sql.adaptive.enabled",
    ],
)
def test_keys_documented_in_every_version(key: str) -> None:
    assert undocumented_keys([key]) == {key: []}


def test_volcano_podgroup_template_key_is_in_no_property_table() -> None:
    # running-on-kubernetes explains it only in the Volcano prose sections, in every version of the range
    key = "spark.kubernetes.scheduler.volcano.podGroupTemplateFile"
    assert undocumented_keys([key]) == {key: list(SPARK_VERSIONS)}
    assert undocumented_keys([key], include_prose=True) == {key: []}
    assert spark.KEY_FIRST_APPEARED[key] == "3.3.0"


def test_keys_that_appear_or_vanish_within_the_range() -> None:
    result = undocumented_keys(
        [
            "spark.driver.minMemoryOverhead",
            "spark.kubernetes.executor.terminationGracePeriodSeconds",
            "spark.kubernetes.pyspark.pythonVersion",
            "spark.deploy.recoveryMode",
        ]
    )
    assert result == {
        "spark.driver.minMemoryOverhead": ["v3.5.9"],
        "spark.kubernetes.executor.terminationGracePeriodSeconds": ["v3.5.9", "v4.0.4"],
        "spark.kubernetes.pyspark.pythonVersion": ["v4.1.3"],
        "spark.deploy.recoveryMode": ["v4.0.4", "v4.1.3"],
    }


def test_templates_do_not_swallow_other_keys() -> None:
    keys = documented_keys("v4.1.3")
    assert keys.match("spark.kubernetes.driver.label.queue") == "spark.kubernetes.driver.label.[LabelName]"
    # a volume name is one segment
    assert keys.match("spark.kubernetes.driver.volumes.nfs.mount.path") is None
    assert keys.match("spark.executor.resource.gpu.nvidia.amount") is None
    assert keys.match("spark.kubernetes.driver.labels.queue") is None


def test_non_spark_prefixes() -> None:
    assert key_owner("spark.hadoop.fs.s3a.endpoint") == "hadoop"
    assert key_owner("spark.hive.metastore.uris") == "hive"
    assert key_owner("spark.rapids.sql.enabled") == "rapids"
    assert key_owner("spark.hadoop.cloneConf") == "spark"  # Spark documents it itself
    assert key_owner("spark.kubernetes.nonsense") == "spark"
    assert undocumented_keys(["spark.hadoop.fs.s3a.endpoint", "spark.rapids.sql.enabled"]) == {
        "spark.hadoop.fs.s3a.endpoint": [],
        "spark.rapids.sql.enabled": [],
    }


def test_default_dynamic_allocation_is_accepted_because_shuffle_tracking_defaults_to_true() -> None:
    for version in SPARK_VERSIONS:
        assert (
            spark.DYNAMIC_ALLOCATION_DEFAULTS[version]["spark.dynamicAllocation.shuffleTracking.enabled"]
            == "true"
        )
        assert (
            dynamic_allocation_refused({"spark.dynamicAllocation.enabled": "true"}, version=version) is None
        )


def test_dynamic_allocation_refused_without_any_shuffle_keeper() -> None:
    conf = {
        "spark.dynamicAllocation.enabled": "true",
        "spark.dynamicAllocation.shuffleTracking.enabled": "false",
    }
    for version in SPARK_VERSIONS:
        assert dynamic_allocation_refused(conf, version=version) == DYNAMIC_ALLOCATION_REFUSAL
    assert dynamic_allocation_refused({**conf, "spark.shuffle.service.enabled": "true"}) is None
    assert dynamic_allocation_refused({**conf, "spark.decommission.enabled": "true"}) is None
    assert (
        dynamic_allocation_refused(
            {
                **conf,
                "spark.decommission.enabled": "true",
                "spark.storage.decommission.shuffleBlocks.enabled": "false",
            }
        )
        == DYNAMIC_ALLOCATION_REFUSAL
    )
    plugin = {**conf, "spark.shuffle.sort.io.plugin.class": "org.example.RemoteShuffleDataIO"}
    assert dynamic_allocation_refused(plugin) == DYNAMIC_ALLOCATION_REFUSAL
    assert (
        dynamic_allocation_refused(plugin, reliable_shuffle_plugins={"org.example.RemoteShuffleDataIO"})
        is None
    )
    assert dynamic_allocation_refused({**conf, "spark.master": "local[4]"}) is None
    assert dynamic_allocation_refused({**conf, "spark.dynamicAllocation.enabled": "false"}) is None
    with pytest.raises(ValueError, match="should be boolean"):
        dynamic_allocation_refused({"spark.dynamicAllocation.enabled": "yes"})


def test_driver_role_verbs() -> None:
    verbs = verbs_by_resource(DRIVER_POD_API_CALLS)
    assert verbs[("", "pods")] == {"create", "get", "list", "watch", "delete", "deletecollection", "patch"}
    assert verbs[("", "configmaps")] == {"create", "deletecollection"}
    assert verbs[("", "services")] == {"deletecollection"}
    assert verbs[("", "persistentvolumeclaims")] == {"create", "list", "deletecollection"}
    assert verbs[("apps", "statefulsets")] == {"create", "delete", "get"}
    assert verbs[("apps", "statefulsets/scale")] == {"get", "update"}
    assert "update" not in verbs[("", "pods")]  # fabric8 edit() is a PATCH
    assert {version for versions in spark.CALL_VERSIONS.values() for version in versions} <= set(
        SPARK_VERSIONS
    )


def test_submitter_role_verbs() -> None:
    verbs = verbs_by_resource(SUBMITTER_API_CALLS)
    assert verbs[("scheduling.volcano.sh", "podgroups")] == {"patch", "create", "delete"}
    assert verbs[("", "pods")] == {"create", "delete", "watch", "get", "list"}
    for resource in ("configmaps", "services", "secrets", "persistentvolumeclaims"):
        assert verbs[("", resource)] == {"patch", "create"}


def test_container_names_and_memory_overhead() -> None:
    assert SPARK_DEFAULT_CONTAINER_NAMES == {
        "driver": "spark-kubernetes-driver",
        "executor": "spark-kubernetes-executor",
    }
    assert memory_overhead_mib({"spark.driver.memory": "1g"}, "driver") == 384
    assert memory_overhead_mib({"spark.executor.memory": "8g"}, "executor") == 819
    assert memory_overhead_mib({"spark.executor.memory": "8g"}, "executor", non_jvm=True) == 3276
    assert (
        memory_overhead_mib(
            {"spark.executor.memory": "8g", "spark.executor.memoryOverhead": "1g"}, "executor"
        )
        == 1024
    )
    low_floor = {"spark.driver.memory": "1g", "spark.driver.minMemoryOverhead": "100m"}
    assert memory_overhead_mib(low_floor, "driver", version="v4.0.4") == 102
    assert memory_overhead_mib(low_floor, "driver", version="v3.5.9") == 384  # no such key before 4.0
