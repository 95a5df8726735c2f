"""Clusters and SparkPools end to end: `fleet plan/apply/drift --lab` against the lab's
Kubernetes API test servers (one per Cluster, HTTPS with a token, a Node per member),
checked and disturbed with the real `kubectl`, as an operator would.

The lab's machines start as specified and its VMs are created by the first apply, so
what later plans find is the clusters'.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fleet_testing import EXAMPLE, entries_by_address, lab_environment, lab_fleet, lab_plan, run_fleet
from ruamel.yaml import YAML

pytestmark = pytest.mark.slow  # a lab suite: left out of `make test-quick`

ETL = "sparkpool/etl"


# Most steps select the Kubernetes side only: the Machines and VMs are covered elsewhere, and
# not observing 35 BMCs keeps each step to a second or two. Orphans need a whole-fleet pass.
# (Each example pool lives in a file named after it.)
def _kube_targets(repo: Path) -> list[str]:
    pools = sorted(f"sparkpool/{path.stem}" for path in (repo / "spark-pools").glob("*.yaml"))
    return ["cluster/k8s-nyc1", "cluster/k8s-ldn1", *pools]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    directory = tmp_path_factory.mktemp("kube-lab")
    repo = directory / "repo"
    shutil.copytree(EXAMPLE, repo)
    _edit_fleet(repo, changeWindows=[])
    env = lab_environment(directory, REPO=str(repo), FLEET_STATE=str(directory / "state.db"))
    up = run_fleet("lab", "up", str(repo), "--subnet", "71", "--as-specified", env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "2 Kubernetes API test servers" in up.stdout
    try:
        yield env
    finally:
        down = run_fleet("lab", "down", env=env)
        assert down.returncode == 0, down.stderr


def _edit_fleet(repo: Path, **policies: Any) -> None:
    yaml = YAML()
    path = repo / "fleet.yaml"
    fleet = yaml.load(path.read_text())
    fleet["spec"]["policies"].update(policies)
    with path.open("w") as handle:
        yaml.dump(fleet, handle)


def kubectl(env: dict[str, str], cluster: str, *args: str, check: bool = True) -> str:
    kubeconfig = Path(env["FLEET_LAB_DIR"]) / "clusters" / cluster / "kubeconfig"
    done = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True, timeout=60
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done.stdout


def _targets(env: dict[str, str], whole_fleet: bool) -> list[str]:
    return [] if whole_fleet else _kube_targets(Path(env["REPO"]))


def _fleet(env: dict[str, str], *args: str, whole_fleet: bool = False) -> subprocess.CompletedProcess[str]:
    return lab_fleet(env, _targets(env, whole_fleet), *args)


def _plan(env: dict[str, str], *, whole_fleet: bool = False) -> dict[str, Any]:
    return lab_plan(env, _targets(env, whole_fleet))


_by = entries_by_address


def _apply(env: dict[str, str], *extra: str, whole_fleet: bool = False) -> None:
    done = _fleet(env, "apply", "--yes", *extra, whole_fleet=whole_fleet)
    assert done.returncode == 0, done.stdout + done.stderr


def _quota(env: dict[str, str]) -> dict[str, Any]:
    quota: dict[str, Any] = json.loads(
        kubectl(
            env, "k8s-nyc1", "get", "resourcequota", "-n", "spark-etl", "-o", "json", "--show-managed-fields"
        )
    )["items"][0]
    return quota


def test_spark_pools_are_created_from_nothing_and_a_second_plan_is_empty(lab: dict[str, str]) -> None:
    plan = _plan(lab)
    creates = {e["address"] for e in plan["entries"] if e["action"] == "create"}
    assert {"sparkpool/etl", "sparkpool/ml-gpu", "sparkpool/adhoc"} <= creates
    _apply(lab)

    quota = _quota(lab)
    assert quota["metadata"]["labels"]["fleet.dev/owner"] == "sparkpool.etl"
    assert any(
        m["manager"] == "fleet" and m["operation"] == "Apply" for m in quota["metadata"]["managedFields"]
    )
    templates = json.loads(
        kubectl(lab, "k8s-nyc1", "get", "configmap", "spark-pod-templates", "-n", "spark-etl", "-o", "json")
    )
    assert "spark.dynamicAllocation.shuffleTracking.enabled" in templates["data"]["spark-defaults.conf"]
    queues = json.loads(
        kubectl(lab, "k8s-nyc1", "get", "configmap", "yunikorn-configs", "-n", "yunikorn", "-o", "json")
    )
    assert "etl" in queues["data"]["queues.yaml"] and "ml-gpu" in queues["data"]["queues.yaml"]
    volcano = json.loads(kubectl(lab, "k8s-ldn1", "get", "queues.scheduling.volcano.sh", "-o", "json"))
    assert [q["metadata"]["name"] for q in volcano["items"]] == ["adhoc"]
    assert volcano["items"][0]["spec"]["deserved"] == {"cpu": "128", "memory": "512Gi"}
    adhoc = json.loads(kubectl(lab, "k8s-ldn1", "get", "namespace", "spark-adhoc", "-o", "json"))
    assert adhoc["metadata"]["annotations"]["scheduling.volcano.sh/queue-name"] == "adhoc"
    adhoc_templates = json.loads(
        kubectl(lab, "k8s-ldn1", "get", "configmap", "spark-pod-templates", "-n", "spark-adhoc", "-o", "json")
    )
    assert "queue: adhoc" in adhoc_templates["data"]["podgroup-template.yaml"]
    executor = json.loads(
        kubectl(
            lab, "k8s-nyc1", "get", "serviceaccount", "spark-etl-executor", "-n", "spark-etl", "-o", "json"
        )
    )
    assert executor["automountServiceAccountToken"] is False
    submitters = json.loads(
        kubectl(lab, "k8s-nyc1", "get", "rolebinding", "spark-submitter", "-n", "spark-etl", "-o", "json")
    )
    assert {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "data-platform"} in (
        submitters["subjects"]
    )
    tainted = json.loads(
        kubectl(lab, "k8s-nyc1", "get", "nodes", "-l", "fleet.acme.io/pool=etl", "-o", "json")
    )
    assert tainted["items"], "the pool's nodes carry its label"
    assert all(
        {"key": "fleet.acme.io/pool", "value": "etl", "effect": "NoSchedule"} in n["spec"].get("taints", [])
        for n in tainted["items"]
    )

    again = _fleet(lab, "plan", "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr


def test_kubectl_edits_are_drift_and_apply_restores_the_spec(lab: dict[str, str]) -> None:
    kubectl(
        lab,
        "k8s-nyc1",
        "patch",
        "resourcequota",
        "spark-quota",
        "-n",
        "spark-etl",
        "--type",
        "merge",
        "-p",
        '{"spec": {"hard": {"pods": "7"}}}',
    )
    node = json.loads(kubectl(lab, "k8s-nyc1", "get", "nodes", "-l", "fleet.acme.io/pool=etl", "-o", "json"))[
        "items"
    ][0]["metadata"]["name"]
    kubectl(lab, "k8s-nyc1", "taint", "nodes", node, "fleet.acme.io/pool:NoSchedule-")

    drift = _fleet(lab, "drift", "--detailed-exitcode")
    assert drift.returncode == 2, drift.stdout + drift.stderr
    drifted = {
        f["field"]
        for e in _plan(lab)["entries"]
        if e["finding"] == "drift" and e["address"] == ETL
        for f in e["fields"]
    }
    assert any(field.endswith("spec.hard.pods") for field in drifted), drifted
    assert f"node/{node}" in drifted

    _apply(lab)
    assert _quota(lab)["spec"]["hard"]["pods"] != "7"
    taints = json.loads(kubectl(lab, "k8s-nyc1", "get", "node", node, "-o", "json"))["spec"]["taints"]
    assert {"key": "fleet.acme.io/pool", "value": "etl", "effect": "NoSchedule"} in taints
    assert _fleet(lab, "plan", "--detailed-exitcode").returncode == 0


def test_a_field_another_manager_owns_is_taken_over_and_the_plan_says_from_whom(
    lab: dict[str, str], tmp_path: Path
) -> None:
    quota = _quota(lab)
    manifest = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "spark-quota", "namespace": "spark-etl"},
        "spec": {"hard": {"pods": "9"}},
    }
    (tmp_path / "quota.json").write_text(json.dumps(manifest))
    refused = subprocess.run(
        [
            "kubectl",
            "--kubeconfig",
            str(Path(lab["FLEET_LAB_DIR"]) / "clusters" / "k8s-nyc1" / "kubeconfig"),
            "apply",
            "--server-side",
            "--field-manager=ops",
            "-f",
            str(tmp_path / "quota.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert (
        refused.returncode != 0 and "conflict" in refused.stderr.lower()
    )  # fleet owns it: 409 without force
    kubectl(
        lab,
        "k8s-nyc1",
        "apply",
        "--server-side",
        "--field-manager=ops",
        "--force-conflicts",
        "-f",
        str(tmp_path / "quota.json"),
    )

    update = next(e for e in _plan(lab)["entries"] if e["address"] == ETL and e["finding"] == "change")
    assert update["reason"] == "conflicts" and "from ops" in update["detail"]
    _apply(lab)
    assert _quota(lab)["spec"]["hard"]["pods"] == quota["spec"]["hard"]["pods"]


def test_objects_that_leave_the_spec_are_pruned_from_fleets_inventory_only(lab: dict[str, str]) -> None:
    kubectl(lab, "k8s-nyc1", "create", "configmap", "not-fleets", "-n", "spark-etl")
    path = Path(lab["REPO"]) / "spark-pools" / "etl.yaml"
    yaml = YAML()
    pool = yaml.load(path.read_text())
    del pool["spec"]["priorityClass"]
    with path.open("w") as handle:
        yaml.dump(pool, handle)

    update = next(e for e in _plan(lab)["entries"] if e["address"] == ETL and e["action"])
    prune = next(f for f in update["fields"] if f["field"] == "prune")
    assert prune["before"] == ["scheduling.k8s.io/v1/PriorityClass/_/spark-etl"]
    _apply(lab)
    assert "spark-etl" not in kubectl(lab, "k8s-nyc1", "get", "priorityclasses", "-o", "name")
    assert "not-fleets" in kubectl(lab, "k8s-nyc1", "get", "configmaps", "-n", "spark-etl", "-o", "name")


def test_a_removed_pool_is_an_orphan_deleted_only_when_the_policy_says_so(lab: dict[str, str]) -> None:
    (Path(lab["REPO"]) / "spark-pools" / "adhoc.yaml").unlink()
    orphan = _by(_plan(lab, whole_fleet=True), "orphaned")["sparkpool/adhoc"]
    assert orphan["action"] is None
    _edit_fleet(Path(lab["REPO"]), orphans="delete")
    # Only the orphan: the rest of the fleet (VMs to create, say) is not this test's business.
    done = run_fleet("apply", lab["REPO"], "--lab", "--yes", "--allow-destructive", env=lab)
    assert "sparkpool/adhoc  delete: succeeded" in done.stdout, done.stdout + done.stderr
    namespaces = kubectl(lab, "k8s-ldn1", "get", "namespaces", "-o", "name")
    assert "namespace/spark-adhoc" not in namespaces
    assert "sparkpool/adhoc" not in _by(_plan(lab, whole_fleet=True), "orphaned")


def test_a_rejected_token_is_a_clear_unknown_naming_the_cluster(lab: dict[str, str]) -> None:
    kubeconfig = Path(lab["FLEET_LAB_DIR"]) / "clusters" / "k8s-ldn1" / "kubeconfig"
    original = kubeconfig.read_text()
    config = json.loads(original)
    config["users"][0]["user"]["token"] = "not-the-token-0123456789"
    kubeconfig.write_text(json.dumps(config))
    try:
        done = _fleet(lab, "plan", "--format", "json")
        assert done.returncode == 0, done.stderr
        unknown = _by(json.loads(done.stdout), "unknown")
        assert unknown["cluster/k8s-ldn1"]["reason"] == "auth-failure"
        assert "k8s-ldn1" in unknown["cluster/k8s-ldn1"]["detail"]
        assert "not-the-token" not in done.stdout + done.stderr
    finally:
        kubeconfig.write_text(original)


def test_a_stopped_api_server_makes_its_cluster_unknown(lab: dict[str, str]) -> None:
    ready = json.loads((Path(lab["FLEET_LAB_DIR"]) / "clusters" / "k8s-ldn1" / "ready.json").read_text())
    os.kill(int(ready["pid"]), signal.SIGKILL)
    time.sleep(0.2)
    plan = _plan(lab)
    unknown = _by(plan, "unknown")
    assert unknown["cluster/k8s-ldn1"]["reason"] in ("unreachable", "timeout")
    assert "sparkpool/etl" not in unknown  # the other cluster still answers
