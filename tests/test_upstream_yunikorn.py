"""The YuniKorn checkers in upstream/yunikorn.py fail where yunikorn-core fails, and place where it places.

The expected values come from yunikorn-core v1.8.0 (see the module docstring): its quantity tests
(pkg/common/resources/quantity_test.go), its placement tests (pkg/scheduler/placement/placement_test.go
TestForcePlaceApp) and the rules read in configvalidator.go and the placement rules.
"""

from __future__ import annotations

import json

import pytest
from upstream import yunikorn
from upstream.yunikorn import ConfigError, config_problems, parse_config, place, resources_in_base_units


def _config(queues: str, rules: str = "", root_extra: str = "        submitacl: '*'\n") -> str:
    """A default partition with a root queue; ``queues`` is the YAML list under root (8+ spaces deep)."""
    text = "partitions:\n  - name: default\n"
    if rules:
        text += "    placementrules:\n" + rules
    text += "    queues:\n      - name: root\n" + root_extra
    if queues:
        text += "        queues:\n" + queues
    return text


SPARK_QUEUES = """\
          - name: etl
            resources:
              guaranteed: {vcore: "64", memory: 256Gi}
              max: {vcore: "128", memory: 512Gi}
          - name: adhoc
            resources:
              max: {vcore: "32", memory: 128Gi}
"""

PROVIDED_ONLY = "      - name: provided\n"
PROVIDED_THEN_FIXED_DEFAULT = """\
      - name: provided
        create: false
      - name: fixed
        value: root.default
"""
PROVIDED_THEN_TAG_NAMESPACE = """\
      - name: provided
        create: false
      - name: tag
        value: namespace
        create: true
"""


def _rules_of(problems: list[str]) -> list[str]:
    return [problem.split(":", 1)[0] for problem in problems]


def test_version_is_a_release() -> None:
    assert yunikorn.YUNIKORN_VERSION == "1.8.0"
    assert len(yunikorn.YUNIKORN_CORE_COMMIT) == 40


# --- parsing: strict keys and go-yaml v3 types --------------------------------------------------------


def test_a_valid_config_parses_and_has_no_problems() -> None:
    text = _config(SPARK_QUEUES, PROVIDED_THEN_TAG_NAMESPACE)
    assert config_problems(text) == []
    etl = parse_config(text)["partitions"][0]["queues"][0]["queues"][0]
    assert etl["name"] == "etl"
    assert etl["resources"]["guaranteed"] == {"vcore": "64", "memory": "256Gi"}
    assert etl["maxapplications"] == 0 and etl["properties"] is None and etl["queues"] is None


@pytest.mark.parametrize(
    ("snippet", "key", "struct"),
    [
        ("            maxapps: 3\n", "maxapps", "configs.QueueConfig"),
        ("            maxApplications: 3\n", "maxApplications", "configs.QueueConfig"),
        ("            resources:\n              min: {vcore: '1'}\n", "min", "configs.Resources"),
        ("            submitAcl: '*'\n", "submitAcl", "configs.QueueConfig"),
    ],
)
def test_an_unknown_key_is_refused_with_its_path(snippet: str, key: str, struct: str) -> None:
    text = _config("          - name: etl\n" + snippet)
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    message = str(caught.value)
    assert f"field {key} not found in type {struct}" in message
    assert "partitions[0].queues[0].queues[0]" in message
    assert _rules_of(config_problems(text)) == ["parse"]


def test_camel_case_partition_keys_are_unknown() -> None:
    text = "partitions:\n  - name: default\n    placementRules: []\n    queues: [{name: root}]\n"
    with pytest.raises(ConfigError, match=r"field placementRules not found in type configs\.PartitionConfig"):
        parse_config(text)


def test_unknown_top_level_key_and_duplicate_key_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"field partition not found in type configs\.SchedulerConfig"):
        parse_config("partition: []\n")
    with pytest.raises(ConfigError, match='mapping key "name" already defined'):
        parse_config("partitions:\n  - {name: default, name: other, queues: [{name: root}]}\n")


def test_typed_fields_follow_go_yaml_v3() -> None:
    base = "partitions:\n  - name: default\n    queues:\n      - name: root\n"
    # bool: YAML 1.1 words are accepted (even quoted), the quoted string "true" is not.
    assert parse_config(base + "        parent: yes\n")["partitions"][0]["queues"][0]["parent"] is True
    assert parse_config(base + "        parent: 'on'\n")["partitions"][0]["queues"][0]["parent"] is True
    with pytest.raises(ConfigError, match="cannot unmarshal !!str `true` into bool"):
        parse_config(base + "        parent: 'true'\n")
    # uint64: no negatives, no quoted numbers.
    with pytest.raises(ConfigError, match="cannot unmarshal !!int `-1` into uint64"):
        parse_config(base + "        maxapplications: -1\n")
    with pytest.raises(ConfigError, match="into uint64"):
        parse_config(base + "        maxapplications: '5'\n")
    # a string field takes any scalar as written; a map does not fit a string.
    assert parse_config(base + "        submitacl: 007\n")["partitions"][0]["queues"][0]["submitacl"] == "007"
    with pytest.raises(ConfigError, match="cannot unmarshal !!map into string"):
        parse_config(base + "        submitacl: {a: b}\n")


def test_nil_and_empty_maps_differ_as_in_go() -> None:
    base = "partitions:\n  - name: default\n    queues:\n      - name: root\n        resources:\n"
    assert parse_config(base + "          guaranteed: ~\n")["partitions"][0]["queues"][0]["resources"] == {
        "guaranteed": None,
        "max": None,
    }
    # A non-nil (even empty) map on root is "resource limits set" (checkQueuesStructure).
    assert config_problems(base + "          guaranteed: ~\n") == []
    assert _rules_of(config_problems(base + "          guaranteed: {}\n")) == ["root-no-resources"]


def test_empty_or_comment_only_text_parses_to_no_partitions() -> None:
    assert parse_config("") == {"partitions": None, "checksum": ""}
    assert config_problems("# nothing\n") == []


def test_yaml_syntax_error_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="yaml"):
        parse_config("partitions: [\n")


# --- quantities ----------------------------------------------------------------------------------------


def test_vcore_string_256_is_256_cores_in_millicores() -> None:
    assert resources_in_base_units({"vcore": "256"}) == {"vcore": 256_000}


def test_vcore_yaml_int_256000_is_read_as_256000_cores() -> None:
    text = _config("          - name: etl\n            resources:\n              max: {vcore: 256000}\n")
    max_conf = parse_config(text)["partitions"][0]["queues"][0]["queues"][0]["resources"]["max"]
    assert max_conf == {"vcore": "256000"}  # go-yaml gives a string field the scalar's text
    assert resources_in_base_units(max_conf) == {"vcore": 256_000_000}
    assert resources_in_base_units({"vcore": 256000}) == {"vcore": 256_000_000}


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        ({"vcore": "100m"}, {"vcore": 100}),
        ({"vcore": "1"}, {"vcore": 1000}),
        ({"vcore": " 2 "}, {"vcore": 2000}),
        ({"memory": "1024"}, {"memory": 1024}),
        ({"memory": "512Mi"}, {"memory": 512 * 2**20}),
        ({"memory": "256Gi"}, {"memory": 256 * 2**30}),
        ({"memory": "1G"}, {"memory": 10**9}),
        ({"memory": "4 Ti"}, {"memory": 4 * 2**40}),
        ({"nvidia.com/gpu": "2"}, {"nvidia.com/gpu": 2}),
        ({"pods": "1k"}, {"pods": 1000}),
    ],
)
def test_accepted_quantities(resources: dict[str, str], expected: dict[str, int]) -> None:
    assert resources_in_base_units(resources) == expected


@pytest.mark.parametrize(
    "resources",
    [
        {"vcore": "1.5"},  # no fractions
        {"vcore": "0.5"},
        {"vcore": "-1"},  # no sign
        {"vcore": "1 cpu"},
        {"memory": "100m"},  # milli only for vcore
        {"memory": "1.5Gi"},
        {"memory": "1GB"},
        {"memory": "1gi"},
        {"memory": "1K"},  # kilo is a lower-case k
        {"memory": "8e9"},  # no exponents
        {"memory": ""},
        {"memory": "9223372036854775808"},  # int64 overflow
        {"memory": "8Ei"},  # overflow after scaling
        {"vcore": "9223372036854776"},  # overflow after * 1000
    ],
)
def test_refused_quantities(resources: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        resources_in_base_units(resources)


# pkg/common/resources/quantity_test.go TestParseQuantity and TestParseVCore, v1.8.0.
UPSTREAM_QUANTITY = {
    "0": 0,
    "1": 1,
    " 25k ": 25_000,
    " 25  k ": 25_000,
    "9223372036854775807": 9223372036854775807,
    "9223372036854775808": None,
    "1000E": None,
    "5X": None,
    "500m": None,
    "-1": None,
    "7E": 7 * 10**18,
    "2Ki": 2048,
    "7Ei": 7 * 2**60,
}
UPSTREAM_VCORE = {
    "0": 0,
    "1": 1000,
    " 25k ": 25_000_000,
    "9223372036854775": 9223372036854775000,
    "9223372036854776": None,
    "1000P": None,
    "5X": None,
    "500m": 500,
    "-1": None,
    "6P": 6 * 10**18,
    "7E": None,
    "2Ki": 2 * 1000 * 1024,
    "6Pi": 6 * 1000 * 2**50,
    "7Ei": None,
}


@pytest.mark.parametrize(("text", "expected"), sorted(UPSTREAM_QUANTITY.items()))
def test_upstream_parse_quantity_vectors(text: str, expected: int | None) -> None:
    if expected is None:
        with pytest.raises(ConfigError):
            yunikorn.parse_quantity(text)
    else:
        assert yunikorn.parse_quantity(text) == expected


@pytest.mark.parametrize(("text", "expected"), sorted(UPSTREAM_VCORE.items()))
def test_upstream_parse_vcore_vectors(text: str, expected: int | None) -> None:
    if expected is None:
        with pytest.raises(ConfigError):
            yunikorn.parse_vcore(text)
    else:
        assert yunikorn.parse_vcore(text) == expected


def test_an_unparseable_quantity_in_queues_yaml_is_a_problem() -> None:
    text = _config("          - name: etl\n            resources:\n              max: {memory: 1.5Gi}\n")
    assert _rules_of(config_problems(text)) == ["resource-quantity"]


# --- queue resource rules (configvalidator.go checkQueueResource) ----------------------------------------


def test_child_guaranteed_above_parent_max_is_refused() -> None:
    text = _config(
        """\
          - name: spark
            parent: true
            resources:
              max: {vcore: "100", memory: 100Gi}
            queues:
              - name: etl
                resources:
                  guaranteed: {vcore: "200"}
"""
    )
    assert "children-guaranteed-le-parent-max" in _rules_of(config_problems(text))


def test_child_max_above_parent_max_is_refused() -> None:
    text = _config(
        """\
          - name: spark
            resources:
              max: {vcore: "100"}
            queues:
              - name: etl
                resources:
                  max: {vcore: "101"}
"""
    )
    assert _rules_of(config_problems(text)) == ["child-max-le-parent-max"]


def test_child_max_above_grandparent_max_is_refused() -> None:
    text = _config(
        """\
          - name: spark
            resources:
              max: {memory: 10Gi}
            queues:
              - name: team
                queues:
                  - name: etl
                    resources:
                      max: {memory: 11Gi}
"""
    )
    assert _rules_of(config_problems(text)) == ["child-max-le-parent-max"]


def test_guaranteed_above_own_max_is_refused() -> None:
    text = _config(
        "          - name: etl\n            resources:\n"
        "              guaranteed: {vcore: '10'}\n              max: {vcore: '9'}\n"
    )
    assert _rules_of(config_problems(text)) == ["guaranteed-le-max"]


def test_sum_of_children_guaranteed_above_parent_guaranteed_is_refused() -> None:
    text = _config(
        """\
          - name: spark
            resources:
              guaranteed: {vcore: "10"}
            queues:
              - name: a
                resources:
                  guaranteed: {vcore: "6"}
              - name: b
                resources:
                  guaranteed: {vcore: "5"}
"""
    )
    assert _rules_of(config_problems(text)) == ["children-guaranteed-le-parent-guaranteed"]


def test_children_guaranteed_only_count_for_types_the_parent_guarantees() -> None:
    text = _config(
        """\
          - name: spark
            resources:
              guaranteed: {vcore: "10"}
            queues:
              - name: a
                resources:
                  guaranteed: {vcore: "5", memory: 1Ti}
              - name: b
                resources:
                  guaranteed: {vcore: "5", memory: 1Ti}
"""
    )
    assert config_problems(text) == []


def test_a_parent_without_guaranteed_passes_the_childrens_sum_up() -> None:
    text = _config(
        """\
          - name: spark
            resources:
              guaranteed: {vcore: "10"}
            queues:
              - name: team
                queues:
                  - name: a
                    resources:
                      guaranteed: {vcore: "8"}
                  - name: b
                    resources:
                      guaranteed: {vcore: "8"}
"""
    )
    assert _rules_of(config_problems(text)) == ["children-guaranteed-le-parent-guaranteed"]


def test_root_must_not_have_resources() -> None:
    text = _config("", root_extra="        submitacl: '*'\n        resources:\n          max: {vcore: '1'}\n")
    assert _rules_of(config_problems(text)) == ["root-no-resources"]


# --- names, structure, ACLs, limits --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["spark etl", "spark.etl", "", "x" * 65, "é"])
def test_invalid_queue_name_is_refused(name: str) -> None:
    text = _config(f"          - name: '{name}'\n")
    assert "queue-name" in _rules_of(config_problems(text))


@pytest.mark.parametrize("name", ["spark-etl", "spark_etl", "Team:1", "a@b", "x" * 64])
def test_valid_queue_names(name: str) -> None:
    assert config_problems(_config(f"          - name: '{name}'\n")) == []


def test_duplicate_sibling_names_are_refused_case_insensitively() -> None:
    text = _config("          - name: etl\n          - name: ETL\n")
    assert _rules_of(config_problems(text)) == ["queue-name-unique"]


def test_root_is_inserted_when_the_top_level_is_not_one_root_queue() -> None:
    text = "partitions:\n  - name: default\n    queues:\n      - name: a\n      - name: b\n"
    assert config_problems(text) == []
    (partition,) = yunikorn.validated_partitions(text)
    root = partition["queues"][0]
    assert root["name"] == "root" and root["parent"] is True
    assert [queue["name"] for queue in root["queues"]] == ["a", "b"]


def test_root_in_other_case_passes_the_validator_but_not_partition_creation() -> None:
    text = "partitions:\n  - name: default\n    queues:\n      - name: ROOT\n"
    assert _rules_of(config_problems(text)) == ["root-name-exact"]


def test_partition_without_queues_and_duplicate_partitions_are_refused() -> None:
    assert _rules_of(config_problems("partitions:\n  - name: default\n")) == ["queues-set"]
    text = "partitions:\n  - {queues: [{name: root}]}\n  - {name: Default, queues: [{name: root}]}\n"
    assert _rules_of(config_problems(text)) == ["partition-unique"]


def test_acl_with_three_parts_is_refused_even_when_trimming_hides_it() -> None:
    assert _rules_of(config_problems(_config("", root_extra="        submitacl: 'a b c'\n"))) == [
        "acl-syntax"
    ]
    assert _rules_of(config_problems(_config("", root_extra="        submitacl: 'alice spark '\n"))) == [
        "acl-single-space"
    ]
    assert config_problems(_config("", root_extra="        submitacl: 'alice,bob spark'\n")) == []


def test_max_applications_rules() -> None:
    text = _config(
        "          - name: etl\n            maxapplications: 5\n",
        root_extra="        submitacl: '*'\n        maxapplications: 4\n",
    )
    assert _rules_of(config_problems(text)) == ["maxapplications"]
    text = _config(
        "          - name: etl\n", root_extra="        submitacl: '*'\n        maxapplications: 4\n"
    )
    assert _rules_of(config_problems(text)) == ["maxapplications"]


def test_limit_rules() -> None:
    limit = "            limits:\n              - limit: one\n                users: [alice]\n"
    assert _rules_of(config_problems(_config("          - name: etl\n" + limit))) == ["limit"]
    limit += "                maxapplications: 2\n"
    assert config_problems(_config("          - name: etl\n" + limit)) == []
    child = (
        "          - name: spark\n"
        "            limits: [{limit: outer, users: [alice], maxresources: {vcore: '10'}}]\n"
        "            queues:\n"
        "              - name: etl\n"
        "                limits: [{limit: inner, users: [alice], maxresources: {vcore: '11'}}]\n"
    )
    assert _rules_of(config_problems(_config(child))) == ["limit-resource"]


def test_node_sort_policy_must_be_known() -> None:
    text = (
        "partitions:\n  - name: default\n    nodesortpolicy: {type: binpacking}\n    queues: [{name: root}]\n"
    )
    assert config_problems(text) == []
    assert _rules_of(config_problems(text.replace("binpacking", "BinPacking"))) == ["nodesortpolicy"]


def test_child_template_resources_must_parse_on_parent_queues() -> None:
    text = _config(
        "          - name: tenants\n            parent: true\n"
        "            childtemplate:\n              resources:\n                max: {vcore: '1.5'}\n"
    )
    assert _rules_of(config_problems(text)) == ["childtemplate-resources"]


# --- placement rule validation ---------------------------------------------------------------------------


def test_unknown_placement_rule_is_refused() -> None:
    text = _config("", "      - name: namespace\n")
    assert _rules_of(config_problems(text)) == ["placement-rule-build"]
    assert _rules_of(config_problems(_config("", "      - name: 'tag-rule'\n        value: x\n"))) == [
        "placement-rule-name",
        "placement-rule-build",
    ]


def test_fixed_rule_must_point_at_an_existing_leaf_unless_create() -> None:
    assert _rules_of(config_problems(_config("", PROVIDED_THEN_FIXED_DEFAULT))) == ["placement-static-path"]
    assert config_problems(_config("          - name: default\n", PROVIDED_THEN_FIXED_DEFAULT)) == []
    parent = "          - name: default\n            parent: true\n"
    assert _rules_of(config_problems(_config(parent, PROVIDED_THEN_FIXED_DEFAULT))) == [
        "placement-static-path"
    ]


def test_tag_and_fixed_rules_need_values() -> None:
    assert _rules_of(config_problems(_config("", "      - name: tag\n"))) == ["placement-rule-build"]
    assert _rules_of(config_problems(_config("", "      - name: fixed\n        create: true\n"))) == [
        "placement-rule-build"
    ]


def test_dynamic_rule_under_a_fixed_parent_needs_parent_true() -> None:
    rules = """\
      - name: tag
        value: namespace
        create: true
        parent:
          name: fixed
          value: root.spark
"""
    with_children = "          - name: spark\n            queues:\n              - name: etl\n"
    assert _rules_of(config_problems(_config(with_children, rules))) == ["placement-static-path"]
    assert config_problems(_config("          - name: spark\n            parent: true\n", rules)) == []


# --- placement ---------------------------------------------------------------------------------------------


def test_provided_only_without_queue_label_is_rejected() -> None:
    text = _config(SPARK_QUEUES, PROVIDED_ONLY)
    assert place(text, queue_label=None, namespace="spark-jobs") is None
    # no rules at all is an implicit provided rule (placement.go buildRules)
    assert place(_config(SPARK_QUEUES), queue_label=None, namespace="spark-jobs") is None


def test_provided_only_falls_back_to_an_existing_root_default() -> None:
    # placement.go PlaceApplication: after the last rule, root.default if it exists (YUNIKORN-2703, 1.6.0).
    text = _config(SPARK_QUEUES + "          - name: default\n", PROVIDED_ONLY)
    assert place(text, queue_label=None, namespace="spark-jobs") == "root.default"


def test_fixed_root_default_fallback_places_unlabelled_pods() -> None:
    text = _config(SPARK_QUEUES + "          - name: default\n", PROVIDED_THEN_FIXED_DEFAULT)
    assert config_problems(text) == []
    assert place(text, queue_label=None, namespace="spark-jobs") == "root.default"
    assert place(text, queue_label="no-such-queue", namespace="spark-jobs") == "root.default"
    assert place(text, queue_label="etl", namespace="spark-jobs") == "root.etl"


def test_tag_namespace_fallback_creates_a_queue_per_namespace() -> None:
    text = _config(SPARK_QUEUES, PROVIDED_THEN_TAG_NAMESPACE)
    assert place(text, queue_label=None, namespace="spark-jobs") == "root.spark-jobs"
    assert place(text, queue_label="typo", namespace="spark-jobs") == "root.spark-jobs"
    assert place(text, queue_label="adhoc", namespace="spark-jobs") == "root.adhoc"


def test_tag_namespace_without_create_only_uses_existing_queues() -> None:
    rules = "      - name: tag\n        value: namespace\n"
    text = _config(SPARK_QUEUES, rules)
    assert place(text, queue_label=None, namespace="etl") == "root.etl"
    assert place(text, queue_label=None, namespace="spark-jobs") is None


@pytest.mark.parametrize("label", ["etl", "root.etl", "ETL", "root.ETL"])
def test_queue_label_forms_land_in_the_same_leaf(label: str) -> None:
    text = _config(SPARK_QUEUES, PROVIDED_ONLY)
    assert place(text, queue_label=label, namespace="spark-jobs") == "root.etl"


def test_provided_rule_with_a_parent_rule_only_prefixes_unqualified_labels() -> None:
    rules = "      - name: provided\n        parent:\n          name: fixed\n          value: root.spark\n"
    queues = (
        "          - name: spark\n            parent: true\n            queues:\n              - name: etl\n"
    )
    queues += "          - name: etl\n"
    text = _config(queues, rules)
    assert config_problems(text) == []
    assert place(text, queue_label="etl", namespace="ns") == "root.spark.etl"
    assert place(text, queue_label="root.etl", namespace="ns") == "root.etl"


def test_provided_create_true_makes_a_queue_for_any_label() -> None:
    text = _config(SPARK_QUEUES, "      - name: provided\n        create: true\n")
    assert place(text, queue_label="etl2", namespace="ns") == "root.etl2"
    # a label below an existing leaf is placed, then queue creation fails: rejected, no fallback
    text = _config(
        SPARK_QUEUES + "          - name: default\n", "      - name: provided\n        create: true\n"
    )
    assert place(text, queue_label="root.etl.sub", namespace="ns") is None


def test_label_naming_a_parent_queue_moves_on_to_the_next_rule() -> None:
    queues = "          - name: spark\n            parent: true\n          - name: default\n"
    text = _config(queues, PROVIDED_THEN_FIXED_DEFAULT)
    assert place(text, queue_label="root.spark", namespace="ns") == "root.default"


def test_an_invalid_queue_label_rejects_even_with_a_fallback() -> None:
    text = _config(SPARK_QUEUES + "          - name: default\n", PROVIDED_THEN_FIXED_DEFAULT)
    assert place(text, queue_label="root..etl", namespace="ns") is None
    assert place(text, queue_label="bad name", namespace="ns") is None


def test_without_a_submit_acl_every_application_is_rejected() -> None:
    text = _config(SPARK_QUEUES + "          - name: default\n", PROVIDED_THEN_FIXED_DEFAULT, root_extra="")
    assert config_problems(text) == []
    assert place(text, queue_label="etl", namespace="ns") is None
    assert place(text, queue_label=None, namespace="ns") is None


def test_empty_config_text_runs_the_default_config() -> None:
    assert place("", queue_label=None, namespace="spark-jobs") == "root.spark-jobs"


def test_unknown_partition_rejects() -> None:
    text = _config(SPARK_QUEUES, PROVIDED_THEN_TAG_NAMESPACE)
    assert place(text, queue_label=None, namespace="ns", partition="gpu") is None


def test_place_refuses_an_invalid_config() -> None:
    with pytest.raises(ConfigError):
        place(_config("          - name: 'a b'\n"), queue_label=None, namespace="ns")


# pkg/scheduler/placement/placement_test.go TestForcePlaceApp (v1.8.0), the non-forced cases.
FORCE_PLACE_QUEUES = """\
partitions:
  - name: default
    placementrules:
      - name: provided
        create: false
      - name: tag
        value: namespace
        create: true
    queues:
      - name: root
        submitacl: "any-user"
        queues:
{default}\
          - name: provided
            submitacl: "*"
          - name: acldeny
            submitacl: " "
          - name: parent
            parent: true
            submitacl: "*"
"""
DEFAULT_QUEUE = '          - name: default\n            submitacl: "*"\n'


@pytest.mark.parametrize(
    ("with_default", "queue", "namespace", "user", "placed"),
    [
        (False, "", None, "any-user", None),
        (False, "provided", None, "any-user", "root.provided"),
        (False, "root.provided", None, "any-user", "root.provided"),
        (False, "unknown", None, "any-user", None),
        (False, "root.parent", None, "any-user", None),
        (False, "root.acldeny", None, "deny-user", None),
        (False, "unknown", "namespace", "any-user", "root.namespace"),
        (False, "unknown", "namespace", "deny-user", None),
        (True, "", None, "any-user", "root.default"),
        (True, "provided", None, "any-user", "root.provided"),
        (True, "root.default", None, "any-user", "root.default"),
        (True, "unknown", None, "any-user", "root.default"),
        (True, "root.parent", None, "any-user", "root.default"),
        (True, "root.acldeny", None, "deny-user", "root.default"),
        (True, "unknown", "namespace", "any-user", "root.namespace"),
        (True, "unknown", "namespace", "deny-user", "root.default"),
    ],
)
def test_upstream_force_place_app_table(
    with_default: bool, queue: str, namespace: str | None, user: str, placed: str | None
) -> None:
    text = FORCE_PLACE_QUEUES.format(default=DEFAULT_QUEUE if with_default else "")
    # upstream's table passes no namespace tag for most rows (namespace=None here)
    assert place(text, queue_label=queue, namespace=namespace, user=user, groups=[]) == placed


# pkg/common/configs/configvalidator_test.go (v1.8.0) TestCheckResourceConfigurationsForQueue: each case's
# queue tree, put under root (JSON is YAML), and whether checkQueueResource errors.
NEGATIVE = {"memory": "-50", "vcores": "33"}
SYNTAX_ERROR = {"memory": "ten", "vcores": ""}
HIGHER = {"memory": "50", "vcores": "33"}
UNDEFINED_VCORES = {"memory": "20"}
LOWER = {"memory": "10", "vcores": "30"}


def _q(
    name: str, guaranteed: object = None, maximum: object = None, *children: dict[str, object]
) -> dict[str, object]:
    queue: dict[str, object] = {"name": name, "resources": {"guaranteed": guaranteed, "max": maximum}}
    if children:
        queue["queues"] = list(children)
    return queue


UPSTREAM_RESOURCE_CASES = {
    "Negative guaranteed resource": ([_q("q", NEGATIVE)], True),
    "Negative max resource": ([_q("q", None, NEGATIVE)], True),
    "Nil guaranteed resource": ([_q("q", None, LOWER)], False),
    "Nil max resource": ([_q("q", LOWER)], False),
    "Syntax error in guaranteed resource": ([_q("q", SYNTAX_ERROR)], True),
    "Syntax error in max resource": ([_q("q", None, SYNTAX_ERROR)], True),
    "Higher guaranteed resource in child queues": ([_q("q", LOWER, None, _q("c", HIGHER))], True),
    "Higher sum of guaranteed than the parent's guaranteed": (
        [_q("q", LOWER, HIGHER, _q("c1", LOWER, LOWER), _q("c2", LOWER, LOWER))],
        True,
    ),
    "Higher sum of guaranteed than the parent's Max when guaranteed is undefined": (
        [_q("q", UNDEFINED_VCORES, HIGHER, _q("c1", LOWER, LOWER), _q("c2", LOWER, LOWER))],
        True,
    ),
    "Higher max resource in child queues": ([_q("q", None, LOWER, _q("c", None, HIGHER))], True),
    "Higher guaranteed than max resource": ([_q("q", HIGHER, LOWER)], True),
    "Valid configuration": ([_q("q", LOWER, HIGHER)], False),
    "One level skipped while setting max resource": (
        [
            _q(
                "parent",
                None,
                {"memory": "100"},
                _q("parent1", None, None, _q("child1", None, {"memory": "150"})),
            )
        ],
        True,
    ),
    "Sum of child guaranteed higher than parent max": (
        [
            _q(
                "parent",
                None,
                {"memory": "100"},
                _q("parent1", None, {"memory": "80"}, _q("c1", {"memory": "50"}), _q("c2", {"memory": "40"})),
            )
        ],
        True,
    ),
    "One level skipped while setting guaranteed resource": (
        [_q("parent", {"memory": "100"}, None, _q("parent1", None, None, _q("child1", {"memory": "150"})))],
        True,
    ),
    "Parent with undefined guaranteed resources": (
        [
            _q(
                "parent",
                {"memory": "100"},
                {"memory": "100", "vcores": "100"},
                _q("child1", {"memory": "50", "vcores": "50"}, {"memory": "80", "vcores": "80"}),
                _q("child2", {"memory": "50", "vcores": "50"}, {"memory": "80", "vcores": "80"}),
            )
        ],
        False,
    ),
    "Nil guaranteed resources for both parent and child": (
        [_q("q", None, HIGHER, _q("c", None, LOWER))],
        False,
    ),
    "Empty guaranteed resources for both parent and child": (
        [_q("q", {}, HIGHER, _q("c", {}, LOWER))],
        False,
    ),
}


@pytest.mark.parametrize("case", sorted(UPSTREAM_RESOURCE_CASES))
def test_upstream_check_queue_resource_table(case: str) -> None:
    queues, error_expected = UPSTREAM_RESOURCE_CASES[case]
    text = json.dumps({"partitions": [{"name": "default", "queues": [{"name": "root", "queues": queues}]}]})
    problems = config_problems(text)
    assert bool(problems) is error_expected, problems


# configvalidator_test.go TestCheckQueueMaxApplicationsForQueue: root, parent, parent1, child1.
@pytest.mark.parametrize(
    ("limits", "error_expected"),
    [((1, 2, 3, 4), True), ((4, 3, 2, 1), False), ((0, 3, 2, 1), False), ((4, 3, 2, 0), True)],
)
def test_upstream_max_applications_table(limits: tuple[int, int, int, int], error_expected: bool) -> None:
    child1 = {"name": "child1", "maxapplications": limits[3], "resources": {"guaranteed": {"memory": "50"}}}
    parent1 = {"name": "parent1", "maxapplications": limits[2], "queues": [child1]}
    parent = {
        "name": "parent",
        "maxapplications": limits[1],
        "resources": {"guaranteed": {"memory": "100"}},
        "queues": [parent1],
    }
    root = {"name": "root", "maxapplications": limits[0], "queues": [parent]}
    problems = config_problems(json.dumps({"partitions": [{"name": "default", "queues": [root]}]}))
    assert bool(problems) is error_expected, problems
