"""The plan layer for Clusters and SparkPools: create, update, drift (spec unchanged since
fleet applied it), prune from fleet's inventory only, conflicts, unknown and orphans.

Pure functions of values: what the Kubernetes provider reported and what fleet last
applied, with the entries they must give.
"""

from __future__ import annotations

from typing import Any

from test_plan import T0, policies, spark_pool

from providers.base import Action, Observation, ObservationState, UnknownReason
from reconciler.apply.record import applied_fields
from reconciler.kinds.kubernetes import converged_kube_fields, diff_kubernetes
from reconciler.plan.model import FieldDiff, Finding, PlanEntry, spec_hash
from reconciler.spec import models

POOL = spark_pool("etl", "k8s")
QUOTA = "v1/ResourceQuota/etl/spark-quota"
NAMESPACE = "v1/Namespace/_/etl"


def seen(
    *objects: dict[str, Any], state: ObservationState = ObservationState.OBSERVED, **fields: Any
) -> Observation:
    body = {"cluster": "k8s", "objects": list(objects), "conflicts": [], "nodes": [], "owned": [], **fields}
    return Observation(POOL.address, state, T0, body)


def in_sync(key: str) -> dict[str, Any]:
    return {"key": key, "state": "in-sync", "diff": []}


def differs(key: str, path: str, live: Any, desired: Any) -> dict[str, Any]:
    return {"key": key, "state": "differs", "diff": [{"path": path, "live": live, "desired": desired}]}


def plan(
    observation: Observation, applied: dict[str, tuple[str, dict[str, Any]]] | None = None, **kw: Any
) -> list[PlanEntry]:
    whole_fleet = kw.pop("whole_fleet", True)
    documents = kw.pop("documents", [POOL])
    found = diff_kubernetes(
        "SparkPool", documents, [observation], applied or {}, policies(**kw), whole_fleet=whole_fleet
    )
    return list(found.entries)


def applied_as(document: models.Document, *keys: str) -> dict[str, tuple[str, dict[str, Any]]]:
    return {document.address: (spec_hash(document), {"cluster": "k8s", "objects": sorted(keys)})}


def test_a_pool_with_nothing_live_is_created_and_its_inventory_recorded() -> None:
    missing = [{"key": k, "state": "missing", "diff": []} for k in (NAMESPACE, QUOTA)]
    (entry,) = plan(seen(*missing, state=ObservationState.ABSENT))
    assert (entry.finding, entry.action) == (Finding.CHANGE, Action.CREATE)
    assert entry.fields[0] == FieldDiff("objects", None, [NAMESPACE, QUOTA])
    assert applied_fields(POOL, entry) == {"cluster": "k8s", "objects": [NAMESPACE, QUOTA]}


def test_in_sync_and_applied_is_an_empty_plan_and_counts_as_converged() -> None:
    observation = seen(in_sync(NAMESPACE), in_sync(QUOTA))
    assert plan(observation, applied_as(POOL, NAMESPACE, QUOTA)) == []
    assert converged_kube_fields(observation.fields) == {"cluster": "k8s", "objects": [NAMESPACE, QUOTA]}
    assert converged_kube_fields(seen(differs(QUOTA, "spec.hard.pods", "7", "200")).fields) == {}


def test_a_difference_under_an_unchanged_spec_is_drift_and_is_planned_back() -> None:
    observation = seen(in_sync(NAMESPACE), differs(QUOTA, "spec.hard.pods", "7", "200"))
    entries = plan(observation, applied_as(POOL, NAMESPACE, QUOTA))
    assert [(e.finding, e.action) for e in entries] == [
        (Finding.DRIFT, None),
        (Finding.CHANGE, Action.UPDATE),
    ]
    assert entries[0].fields == (FieldDiff(f"{QUOTA} spec.hard.pods", "200", "7"),)
    assert entries[1].fields == (FieldDiff(f"{QUOTA} spec.hard.pods", "7", "200"),)


def test_a_difference_after_the_spec_changed_is_a_change_not_drift() -> None:
    observation = seen(in_sync(NAMESPACE), differs(QUOTA, "spec.hard.pods", "200", "300"))
    stale = {POOL.address: ("0" * 64, {"cluster": "k8s", "objects": [NAMESPACE, QUOTA]})}
    entries = plan(observation, stale)
    assert [(e.finding, e.action) for e in entries] == [(Finding.CHANGE, Action.UPDATE)]


def test_prune_is_what_fleet_applied_and_no_longer_renders() -> None:
    old = "scheduling.k8s.io/v1/PriorityClass/_/etl"
    (entry,) = plan(seen(in_sync(NAMESPACE), in_sync(QUOTA)), applied_as(POOL, NAMESPACE, QUOTA, old))
    assert FieldDiff("prune", [old], None) in entry.fields
    assert FieldDiff("objects", sorted([NAMESPACE, old, QUOTA]), [NAMESPACE, QUOTA]) in entry.fields
    assert applied_fields(POOL, entry)["objects"] == [NAMESPACE, QUOTA]


def test_fields_other_managers_own_are_named_in_the_plan() -> None:
    conflicts = [{"key": QUOTA, "path": ".spec.hard.pods", "manager": "ops"}]
    observation = seen(differs(QUOTA, "spec.hard.pods", "9", "200"), conflicts=conflicts)
    (entry,) = plan(observation, {POOL.address: ("x", {"cluster": "k8s", "objects": [QUOTA]})})
    assert entry.reason == "conflicts" and ".spec.hard.pods from ops" in entry.detail


def test_nodes_out_of_sync_are_planned_with_what_is_wrong() -> None:
    node = {
        "name": "n1",
        "present": True,
        "inSync": False,
        "missingTaints": ["fleet.acme.io/pool:NoSchedule"],
    }
    entries = plan(seen(in_sync(QUOTA), nodes=[node]), applied_as(POOL, QUOTA))
    drift = next(e for e in entries if e.finding is Finding.DRIFT)
    assert drift.fields == (
        FieldDiff("node/n1", "as specified", {"missingTaints": ["fleet.acme.io/pool:NoSchedule"]}),
    )


def test_an_unreachable_cluster_is_unknown_and_nothing_is_planned() -> None:
    observation = Observation.unknown(
        POOL.address, UnknownReason.UNREACHABLE, "k8s: connection refused", at=T0
    )
    entries = plan(observation, applied_as(POOL, QUOTA))
    assert [(e.finding, e.action, e.reason) for e in entries] == [(Finding.UNKNOWN, None, "unreachable")]


def test_a_removed_pool_is_deleted_only_with_the_delete_policy_and_only_what_fleet_applied() -> None:
    applied = applied_as(POOL, NAMESPACE, QUOTA)
    (reported,) = plan(seen(), applied, documents=[])
    assert (reported.finding, reported.action) == (Finding.ORPHANED, None)
    (deleted,) = plan(seen(), applied, documents=[], orphans="delete")
    assert deleted.action is Action.DELETE
    assert deleted.fields == (FieldDiff("cluster", "k8s", None), FieldDiff("prune", [NAMESPACE, QUOTA], None))
    assert plan(seen(), applied, documents=[], orphans="delete", whole_fleet=False) == []
