"""The Volcano checkers in tests/upstream/volcano.py accept what upstream accepts and can fail."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest
from upstream.volcano import (
    VOLCANO_VERSION,
    QuantityError,
    is_integer_resource_name,
    parse_quantity,
    podgroup_problems,
    queue_problems,
)


def _queue(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "weight": 1,
        "capability": {"cpu": "64", "memory": "256Gi"},
        "deserved": {"cpu": "16", "memory": "64Gi"},
        "guarantee": {"resource": {"cpu": "8", "memory": "32Gi"}},
    }
    base.update(spec)
    return {
        "apiVersion": "scheduling.volcano.sh/v1beta1",
        "kind": "Queue",
        "metadata": {"name": "spark-etl"},
        "spec": base,
    }


def _podgroup() -> dict[str, Any]:
    # The template of Spark's running-on-kubernetes docs, with our queue.
    return {
        "apiVersion": "scheduling.volcano.sh/v1beta1",
        "kind": "PodGroup",
        "spec": {
            "minMember": 1,
            "minResources": {"cpu": "2", "memory": "3Gi"},
            "priorityClassName": "spark-etl",
            "queue": "spark-etl",
        },
    }


def _rules(problems: list[str]) -> set[str]:
    return {problem.split(":", 1)[0] for problem in problems}


def test_version_is_a_release_tag() -> None:
    assert VOLCANO_VERSION.startswith("v1.")


def test_valid_queue_passes() -> None:
    assert queue_problems(_queue()) == []


def test_minimal_queue_passes() -> None:
    queue = _queue()
    queue["spec"] = {}
    assert queue_problems(queue) == []


def test_deserved_equal_to_guarantee_passes() -> None:
    # The sensible default: deserved = guarantee (and within capability).
    queue = _queue(deserved={"cpu": "8", "memory": "32Gi"})
    assert queue_problems(queue) == []


def test_guarantee_without_deserved_fails() -> None:
    queue = _queue()
    del queue["spec"]["deserved"]
    problems = queue_problems(queue)
    assert _rules(problems) == {"deserved-covers-guarantee"}
    assert len(problems) == 2  # cpu and memory
    assert all("validate_queue.go" in problem for problem in problems)


def test_deserved_missing_one_guaranteed_resource_fails() -> None:
    queue = _queue(deserved={"cpu": "16"})
    problems = queue_problems(queue)
    assert _rules(problems) == {"deserved-covers-guarantee"}
    assert "spec.deserved[memory]" in problems[0]


def test_deserved_below_guarantee_fails() -> None:
    problems = queue_problems(_queue(deserved={"cpu": "7999m", "memory": "64Gi"}))
    assert _rules(problems) == {"deserved-ge-guarantee"}
    assert "spec.deserved[cpu]=7999m" in problems[0]


def test_deserved_above_capability_fails() -> None:
    problems = queue_problems(_queue(deserved={"cpu": "16", "memory": "257Gi"}))
    assert _rules(problems) == {"deserved-le-capability"}


def test_quantities_compare_numerically_across_units() -> None:
    # 64Gi = 68719476736 bytes; "68.8G" is more, "68.7G" less.
    assert _rules(queue_problems(_queue(deserved={"cpu": "16", "memory": "68.8G"}))) == set()
    queue = _queue(capability={"cpu": "64", "memory": "64Gi"}, deserved={"cpu": "0.016k", "memory": "68.8G"})
    assert _rules(queue_problems(queue)) == {"deserved-le-capability"}
    queue = _queue(deserved={"cpu": "16", "memory": "34.3e9"}, guarantee={"resource": {"memory": "32Gi"}})
    assert _rules(queue_problems(queue)) == {"deserved-ge-guarantee"}


def test_scalar_resources_are_compared_and_must_be_whole() -> None:
    queue = _queue(
        capability={"nvidia.com/gpu": "4"},
        deserved={"nvidia.com/gpu": "2"},
        guarantee={"resource": {"nvidia.com/gpu": "3"}},
    )
    assert _rules(queue_problems(queue)) == {"deserved-ge-guarantee"}
    queue = _queue(capability={}, deserved={"nvidia.com/gpu": "1.5"}, guarantee={})
    assert _rules(queue_problems(queue)) == {"quantity-integer"}


def test_resource_missing_from_capability_is_unlimited() -> None:
    queue = _queue(capability={"cpu": "64"}, deserved={"cpu": "16", "memory": "1Ei"})
    assert queue_problems(queue) == []


def test_unknown_field_fails_schema() -> None:
    queue = _queue()
    queue["spec"]["guaranteed"] = {"cpu": "1"}
    problems = queue_problems(queue)
    assert _rules(problems) == {"schema"}
    assert "guaranteed" in problems[0]
    assert "scheduling.volcano.sh_queues.yaml" in problems[0]


@pytest.mark.parametrize(
    ("spec", "rule"),
    [
        ({"weight": 0}, "schema"),
        ({"weight": 65536}, "schema"),
        ({"weight": "1"}, "schema"),
        ({"reclaimable": "yes"}, "schema"),
        ({"capability": {"cpu": "1.5 cores"}}, "schema"),
        ({"capability": {"cpu": 1.5}}, "schema"),
        ({"dequeueStrategy": "lifo"}, "schema"),
        ({"parent": "Root"}, "schema"),
        ({"priority": 2**31}, "schema"),
    ],
)
def test_schema_rejects(spec: dict[str, Any], rule: str) -> None:
    assert rule in _rules(queue_problems(_queue(**spec)))


def test_negative_quantity_fails() -> None:
    queue = _queue(capability={"cpu": "-1"}, deserved={}, guarantee={})
    assert _rules(queue_problems(queue)) == {"quantity-nonnegative"}


def test_fractional_exponent_passes_schema_but_not_go_decode() -> None:
    queue = _queue(capability={"cpu": "1e1.5"}, deserved={}, guarantee={})
    assert _rules(queue_problems(queue)) == {"quantity-format"}


def test_integer_quantities_break_the_admission_policy_comparisons() -> None:
    queue = _queue(capability={"cpu": 64}, deserved={"cpu": 16}, guarantee={"resource": {"cpu": "8"}})
    assert _rules(queue_problems(queue)) == {"quantity-string-for-cel"}


def test_queue_state_and_name_and_parent() -> None:
    queue = _queue()
    queue["status"] = {"state": "Closing"}
    assert _rules(queue_problems(queue)) == {"queue-state"}
    queue = _queue(parent="spark-etl")
    assert _rules(queue_problems(queue)) == {"parent-not-self"}
    queue = _queue()
    queue["metadata"]["name"] = "spark_etl"
    assert _rules(queue_problems(queue)) == {"metadata-name"}
    queue = _queue()
    queue["kind"] = "queue"
    assert _rules(queue_problems(queue)) == {"type-meta"}


@pytest.mark.parametrize(
    ("hierarchy", "weights", "rules"),
    [
        ("root/eng/spark", "1/2/3", set()),
        ("root/eng", "1/2/3", {"hierarchy-length"}),
        ("root/eng", "1/0", {"hierarchy-weight"}),
        ("root/eng", "1/1e2", {"hierarchy-weight"}),
        ("", "1", {"hierarchy-annotations-paired"}),
    ],
)
def test_hierarchy_annotations(hierarchy: str, weights: str, rules: set[str]) -> None:
    queue = _queue()
    queue["metadata"]["annotations"] = {
        "volcano.sh/hierarchy": hierarchy,
        "volcano.sh/hierarchy-weights": weights,
    }
    assert _rules(queue_problems(queue)) == rules


def test_valid_podgroup_passes() -> None:
    assert podgroup_problems(_podgroup()) == []


def test_podgroup_wrong_type_fails() -> None:
    template = _podgroup()
    template["spec"]["minMember"] = "1"
    problems = podgroup_problems(template)
    assert _rules(problems) == {"schema"}
    assert "spec.minMember" in problems[0]


def test_podgroup_unknown_field_and_bad_queue_fail() -> None:
    template = _podgroup()
    template["spec"]["minAvailable"] = 1
    template["spec"]["queue"] = "Spark_ETL"
    problems = podgroup_problems(template)
    assert _rules(problems) == {"schema"}
    assert len(problems) == 2


def test_podgroup_network_topology_tiers_exclusive() -> None:
    template = _podgroup()
    template["spec"]["networkTopology"] = {"mode": "hard", "highestTierAllowed": 1, "highestTierName": "rack"}
    assert _rules(podgroup_problems(template)) == {"network-topology-tier"}


def test_podgroup_metadata_optional_but_checked() -> None:
    template = copy.deepcopy(_podgroup())
    template["metadata"] = {"name": "Not A Name"}
    assert _rules(podgroup_problems(template)) == {"metadata-name"}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", "0"),
        (5, "5"),
        ("100m", "0.1"),
        ("1.5", "1.5"),
        ("1Ki", "1024"),
        ("64Gi", "68719476736"),
        ("1k", "1000"),
        ("1M", "1000000"),
        ("1e3", "1000"),
        ("1E-3", "0.001"),
        ("+.5", "0.5"),
        ("-2m", "-0.002"),
        ("1.", "1"),
        ("10n", "0.00000001"),
        ("1u", "0.000001"),
        ("1E", "1000000000000000000"),
        ("1Ei", "1152921504606846976"),
        ("1.0000000001", "1.000000001"),  # rounded up to nano
        ("16Ei", str(2**63 - 1)),  # binary values cap at int64
    ],
)
def test_parse_quantity(text: str | int, value: str) -> None:
    assert parse_quantity(text) == Decimal(value)


@pytest.mark.parametrize("text", ["", "1K", "1 Gi", "1Gi\n", "1e", "1e1.5", "1.2.3", "Gi", ".", "1ki", True])
def test_parse_quantity_rejects(text: Any) -> None:
    with pytest.raises(QuantityError):
        parse_quantity(text)


def test_integer_resource_names() -> None:
    assert is_integer_resource_name("pods")
    assert is_integer_resource_name("nvidia.com/gpu")
    assert not is_integer_resource_name("cpu")
    assert not is_integer_resource_name("hugepages-2Mi")
    assert not is_integer_resource_name("kubernetes.io/foo")
