"""The Kubernetes provider against the test API server over HTTPS, with real kubectl as the other hand.

One server plays both example clusters (k8s-nyc1 with YuniKorn, k8s-ldn1 with Volcano): their
API addresses are overridden to it, as the lab does, and it holds a Node for every member (one
registered under another name with a matching hostname label, one missing). Drift is made with
kubectl, the way an operator would; `server.stats()` counts what fleet sent.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fleet_testing import example_documents, lab_access
from test_kube_apiserver import _self_signed

from lab.apiserver.server import ApiServer
from providers.access import Access
from providers.base import (
    Action,
    Change,
    Endpoint,
    FieldChange,
    Observation,
    ObservationState,
    RevisionInputs,
    UnknownReason,
)
from providers.kubernetes.provider import KubernetesProvider, object_diff
from reconciler.errors import FleetError, PermanentError, TemporaryError
from reconciler.spec import models

ADMIN = "fleet-admin-token-7f3a"
READER = "fleet-reader-token-91c2"
NYC1 = "10.20.10.10:6443"
LDN1 = "10.40.10.10:6443"
RENAMED_NODE = (
    "nyc1-r01-03.acme.internal"  # registered under its FQDN; kubernetes.io/hostname says nyc1-r01-03
)
MISSING_NODE = "nyc1-r04-04"
VOLCANO_QUEUE_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "queues.scheduling.volcano.sh"},
    "spec": {
        "group": "scheduling.volcano.sh",
        "names": {"kind": "Queue", "plural": "queues", "singular": "queue", "shortNames": ["q"]},
        "scope": "Cluster",
        "versions": [
            {
                "name": "v1beta1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
            }
        ],
    },
}

Docs = dict[str, models.Document]

# client.py silences these at import, but pytest restores the warning filters after collecting:
# the kubernetes client's own use of urllib3 2, and the self-signed server's skipped verification.
pytestmark = [
    pytest.mark.filterwarnings("ignore:HTTPResponse.getheaders:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),
]


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def docs() -> Docs:
    return {document.address: document for document in example_documents()}


def _node(name: str, hostname: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": hostname}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def server(tls: tuple[Path, Path], docs: Docs) -> Iterator[ApiServer]:
    cert, key = tls
    with ApiServer(
        "127.0.0.1", 0, tokens={ADMIN: "admin", READER: "read-only"}, tls_cert=cert, tls_key=key
    ) as api:
        for cluster in (d for d in docs.values() if isinstance(d, models.Cluster)):
            for member in cluster.spec.members:
                name = member.ref.split("/", 1)[1]
                if name == MISSING_NODE:
                    continue
                api.create(_node(RENAMED_NODE if RENAMED_NODE.startswith(name + ".") else name, name))
        api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "yunikorn"}})
        api.create(VOLCANO_QUEUE_CRD)
        yield api


@pytest.fixture(scope="module")
def kubeconfigs(server: ApiServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("kubeconfigs")
    out = {}
    for name, token in (("admin", ADMIN), ("reader", READER), ("rejected", "not-a-valid-token-5e1d")):
        path = directory / name
        path.write_text(server.kubeconfig(token))
        out[name] = path
    return out


def _access(kubeconfig: Path, port: int) -> Access:
    """Both clusters' API servers at the test server on `port`, both read with `kubeconfig`."""
    source = models.CredentialSource(file=str(kubeconfig))
    return lab_access(
        endpoints={NYC1: Endpoint("127.0.0.1", port), LDN1: Endpoint("127.0.0.1", port)},
        credentials={"kubeconfig-k8s-nyc1": source, "kubeconfig-k8s-ldn1": source},
    )


def _inputs(docs: Docs, **replaced: models.Document) -> RevisionInputs:
    """The example repo's revision, with `replaced` documents added or in place of theirs."""
    documents = {**docs, **{doc.address: doc for doc in replaced.values()}}
    fleet = next(doc for doc in docs.values() if isinstance(doc, models.Fleet))
    return RevisionInputs.of(fleet, documents.values())


@pytest.fixture(scope="module")
def access(kubeconfigs: dict[str, Path], server: ApiServer) -> Access:
    return _access(kubeconfigs["admin"], server.port)


@pytest.fixture(scope="module")
def inputs(docs: Docs) -> RevisionInputs:
    return _inputs(docs)


@pytest.fixture(scope="module")
def pools(access: Access) -> Iterator[KubernetesProvider]:
    with KubernetesProvider(access, "SparkPool") as provider:
        yield provider


@pytest.fixture(scope="module")
def clusters(access: Access) -> Iterator[KubernetesProvider]:
    with KubernetesProvider(access, "Cluster") as provider:
        yield provider


Kubectl = Callable[..., str]


@pytest.fixture(scope="module")
def kubectl(kubeconfigs: dict[str, Path]) -> Kubectl:
    binary = shutil.which("kubectl")
    if binary is None:
        pytest.fail("kubectl is required: it makes the drift these tests observe")
    cache = kubeconfigs["admin"].parent / "cache"

    def run(*args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [binary, "--kubeconfig", str(kubeconfigs["admin"]), "--cache-dir", str(cache), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "KUBECONFIG": ""},
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    return run


def _spec(docs: Docs, address: str) -> Any:
    return docs[address]


@pytest.fixture
def etl(docs: Docs, pools: KubernetesProvider, inputs: RevisionInputs) -> models.SparkPool:
    """The etl pool, applied (idempotently) before the test."""
    pool = _spec(docs, "sparkpool/etl")
    assert pools.apply(Change(pool.address, Action.UPDATE, pool), inputs).ok
    return pool


def _observe(provider: KubernetesProvider, spec: models.Document, inputs: RevisionInputs) -> Observation:
    (observation,) = provider.observe([spec], inputs).observations
    return observation


def _object(observation: Observation, key: str) -> dict[str, Any]:
    return next(o for o in observation.fields["objects"] if o["key"] == key)


def _node_entry(observation: Observation, name: str) -> dict[str, Any]:
    return next(n for n in observation.fields["nodes"] if n["name"] == name)


def _taints(server: ApiServer, node: str) -> list[str]:
    live = server.get("v1", "Node", node) or {}
    return sorted(f"{t['key']}={t.get('value', '')}:{t['effect']}" for t in live["spec"].get("taints", []))


def _all_in_sync(observation: Observation) -> bool:
    objects = all(o["state"] == "in-sync" for o in observation.fields["objects"])
    return objects and all(n["inSync"] for n in observation.fields["nodes"])


# --- a pool from nothing, and again ------------------------------------------------------


def test_a_pool_is_applied_from_nothing(
    docs: Docs, pools: KubernetesProvider, server: ApiServer, inputs: RevisionInputs
) -> None:
    pool = _spec(docs, "sparkpool/ml-gpu")
    before = _observe(pools, pool, inputs)
    assert before.state is ObservationState.ABSENT
    assert {o["state"] for o in before.fields["objects"]} == {"missing"}

    result = pools.apply(Change(pool.address, Action.CREATE, pool), inputs)
    assert result.ok and result.changed, result.message
    assert result.message.startswith("applied 11 objects, 3 nodes labelled, 3 nodes tainted")
    assert "no Node for nyc1-r04-04" in result.message

    quota = server.get("v1", "ResourceQuota", "spark-quota", "spark-ml-gpu")
    assert quota is not None and quota["spec"]["hard"]["requests.nvidia.com/gpu"] == "32"
    assert quota["metadata"]["labels"]["fleet.dev/owner"] == "sparkpool.ml-gpu"
    node = server.get("v1", "Node", "nyc1-r04-01")
    assert node is not None
    assert node["metadata"]["labels"]["fleet.acme.io/accelerator"] == "nvidia-l40s"
    assert _taints(server, "nyc1-r04-01") == ["fleet.acme.io/pool=ml-gpu:NoSchedule"]
    assert node["metadata"]["annotations"]["fleet.dev/taints"] == '["fleet.acme.io/pool:NoSchedule"]'
    assert "fleet.acme.io/pool=ml-gpu:NoSchedule" not in _taints(server, "nyc1-r03-02")  # not selected

    after = _observe(pools, pool, inputs)
    assert after.state is ObservationState.OBSERVED and _all_in_sync(after)
    missing = _node_entry(after, MISSING_NODE)
    assert (missing["present"], missing["inSync"]) == (False, True)
    assert sorted(after.fields["owned"]) == sorted(o["key"] for o in after.fields["objects"])


def test_a_no_op_pass_reads_little_and_writes_nothing(
    etl: models.SparkPool, pools: KubernetesProvider, server: ApiServer, inputs: RevisionInputs
) -> None:
    server.reset_stats()
    observation = _observe(pools, etl, inputs)
    stats = server.stats()
    assert _all_in_sync(observation) and observation.fields["conflicts"] == []
    # One list per kind fleet renders for a pool, one dry-run apply per object, and the nodes.
    assert stats.by_verb == {"list": 9, "apply": 11}, stats.by_verb
    assert (stats.writes, stats.dry_run_writes) == (0, 11)

    server.reset_stats()
    result = pools.apply(Change(etl.address, Action.UPDATE, etl), inputs)
    assert result.ok and not result.changed
    assert result.message == "no changes: 11 objects and 4 nodes in sync"
    assert server.stats().writes == 0


# --- drift made with kubectl -------------------------------------------------------------


def test_a_quota_edited_with_kubectl_differs_and_apply_restores_it(
    etl: models.SparkPool,
    pools: KubernetesProvider,
    server: ApiServer,
    kubectl: Kubectl,
    inputs: RevisionInputs,
) -> None:
    kubectl("-n", "spark-etl", "patch", "resourcequota", "spark-quota", "--type=merge",
            "-p", '{"spec":{"hard":{"requests.cpu":"999"}}}')  # fmt: skip
    key = "v1/ResourceQuota/spark-etl/spark-quota"
    quota = _object(_observe(pools, etl, inputs), key)
    assert quota["state"] == "differs"
    assert quota["diff"] == [{"path": "spec.hard.requests.cpu", "live": "999", "desired": "480"}]

    result = pools.apply(Change(etl.address, Action.UPDATE, etl), inputs)
    assert result.ok and result.message == "applied 1 object"
    assert (
        server.get("v1", "ResourceQuota", "spark-quota", "spark-etl")["spec"]["hard"]["requests.cpu"] == "480"
    )
    assert _all_in_sync(_observe(pools, etl, inputs))


def test_a_pool_taint_removed_with_kubectl_is_put_back(
    etl: models.SparkPool,
    pools: KubernetesProvider,
    server: ApiServer,
    kubectl: Kubectl,
    inputs: RevisionInputs,
) -> None:
    kubectl("taint", "nodes", "nyc1-r03-03", "fleet.acme.io/pool=etl:NoSchedule-")
    entry = _node_entry(_observe(pools, etl, inputs), "nyc1-r03-03")
    assert entry["missingTaints"] == ["fleet.acme.io/pool=etl:NoSchedule"] and not entry["inSync"]

    server.reset_stats()
    result = pools.apply(Change(etl.address, Action.UPDATE, etl), inputs)
    assert result.ok and result.message == "1 node tainted"
    assert server.stats().by_verb.get("update") == 1
    assert _taints(server, "nyc1-r03-03") == ["fleet.acme.io/pool=etl:NoSchedule"]


def test_a_field_another_manager_took_is_a_conflict_that_apply_takes_back(
    etl: models.SparkPool,
    pools: KubernetesProvider,
    server: ApiServer,
    kubectl: Kubectl,
    inputs: RevisionInputs,
) -> None:
    ops = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "spark-quota", "namespace": "spark-etl"},
        "spec": {"hard": {"requests.memory": "4Ti"}},
    }
    kubectl(
        "apply", "--server-side", "--field-manager=ops", "--force-conflicts", "-f", "-", stdin=json.dumps(ops)
    )
    key = "v1/ResourceQuota/spark-etl/spark-quota"
    observation = _observe(pools, etl, inputs)
    assert _object(observation, key)["diff"] == [
        {"path": "spec.hard.requests.memory", "live": "4Ti", "desired": "1920Gi"}
    ]
    assert observation.fields["conflicts"] == [
        {"key": key, "path": "spec.hard.requests.memory", "manager": "ops"}
    ]

    assert pools.apply(Change(etl.address, Action.UPDATE, etl), inputs).message == "applied 1 object"
    live = server.get("v1", "ResourceQuota", "spark-quota", "spark-etl")
    assert live is not None and live["spec"]["hard"]["requests.memory"] == "1920Gi"
    owners = {e["manager"]: e["fieldsV1"] for e in live["metadata"]["managedFields"]}
    assert "f:requests.memory" in json.dumps(owners["fleet"])
    assert "f:requests.memory" not in json.dumps(owners.get("ops", {}))
    assert _observe(pools, etl, inputs).fields["conflicts"] == []


def test_a_taint_someone_else_set_survives_fleets_taint_update(
    etl: models.SparkPool,
    pools: KubernetesProvider,
    server: ApiServer,
    kubectl: Kubectl,
    inputs: RevisionInputs,
) -> None:
    kubectl("taint", "nodes", "nyc1-r03-04", "node.kubernetes.io/unreachable:NoExecute")
    kubectl("taint", "nodes", "nyc1-r03-04", "fleet.acme.io/pool=etl:NoSchedule-")
    try:
        assert pools.apply(Change(etl.address, Action.UPDATE, etl), inputs).message == "1 node tainted"
        assert _taints(server, "nyc1-r03-04") == [
            "fleet.acme.io/pool=etl:NoSchedule",
            "node.kubernetes.io/unreachable=:NoExecute",
        ]
        node = server.get("v1", "Node", "nyc1-r03-04")
        assert node is not None and node["metadata"]["annotations"]["fleet.dev/taints"] == (
            '["fleet.acme.io/pool:NoSchedule"]'
        )
    finally:
        kubectl("taint", "nodes", "nyc1-r03-04", "node.kubernetes.io/unreachable:NoExecute-")


# --- prune -------------------------------------------------------------------------------


def _configmap(name: str, owner: str | None, **annotations: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "spark-etl", "annotations": annotations}
    if owner:
        meta["labels"] = {"fleet.dev/owner": owner}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": "v"}}


def test_prune_deletes_what_fleet_made_and_keeps_what_it_must(
    etl: models.SparkPool, pools: KubernetesProvider, server: ApiServer, inputs: RevisionInputs
) -> None:
    server.create(_configmap("old-templates", "sparkpool.etl"))
    server.create(_configmap("kept-templates", "sparkpool.etl", **{"fleet.dev/prune": "disabled"}))
    server.create(_configmap("someone-elses", None))
    keys = [f"v1/ConfigMap/spark-etl/{name}" for name in ("old-templates", "kept-templates", "someone-elses")]
    observation = _observe(pools, etl, inputs)
    assert {keys[0], keys[1]} <= set(observation.fields["owned"]) and keys[2] not in observation.fields[
        "owned"
    ]

    server.reset_stats()
    change = Change(
        etl.address, Action.UPDATE, etl, (FieldChange("prune", [*keys, "v1/ConfigMap/spark-etl/gone"], []),)
    )
    result = pools.apply(change, inputs)
    assert result.ok and result.changed
    assert result.message == (
        f"pruned 1; kept {keys[1]} (fleet.dev/prune: disabled);"
        f" did not prune {keys[2]}: not owned by sparkpool/etl"
    )
    assert server.stats().writes == 1  # the delete: nothing in sync was rewritten
    assert server.get("v1", "ConfigMap", "old-templates", "spark-etl") is None
    assert server.get("v1", "ConfigMap", "kept-templates", "spark-etl") is not None
    assert server.get("v1", "ConfigMap", "someone-elses", "spark-etl") is not None
    assert pools.apply(change, inputs).message.startswith("no changes")  # prune is idempotent


def test_an_orphaned_pool_is_deleted_with_its_node_settings(
    docs: Docs, kubeconfigs: dict[str, Path], server: ApiServer
) -> None:
    raw = _spec(docs, "sparkpool/etl").model_dump(mode="json")
    raw["metadata"]["name"] = "scratch"
    raw["spec"].update(namespace="spark-scratch", serviceAccount="scratch-driver", priorityClass=None)
    raw["spec"]["queue"]["name"] = "scratch"
    raw["spec"]["nodes"] = {"selector": {"topology.kubernetes.io/zone": "nyc1-r01"}}  # default taint
    scratch = models.SparkPool.model_validate(raw)
    with_scratch = _inputs(docs, scratch=scratch)
    with KubernetesProvider(_access(kubeconfigs["admin"], server.port), "SparkPool") as p:
        result = p.apply(Change(scratch.address, Action.CREATE, scratch), with_scratch)
        assert result.ok, result.message
        # machine/nyc1-r01-03 is the Node registered under its FQDN, found by its hostname label.
        assert _taints(server, RENAMED_NODE) == ["dedicated=scratch:NoSchedule"]
        keys = [o["key"] for o in _observe(p, scratch, with_scratch).fields["objects"]]
    with KubernetesProvider(_access(kubeconfigs["admin"], server.port), "SparkPool") as p:
        fields = (FieldChange("prune", keys, None), FieldChange("cluster", "k8s-nyc1", None))
        result = p.apply(Change(scratch.address, Action.DELETE, None, fields), _inputs(docs))
    assert result.ok, result.message
    assert result.message == "pruned 10, 4 nodes cleaned"  # the zone holds k8s-nyc1-cp-1 too
    assert server.get("v1", "ConfigMap", "spark-pod-templates", "spark-scratch") is None
    assert _taints(server, RENAMED_NODE) == []
    node = server.get("v1", "Node", RENAMED_NODE)
    assert node is not None and "fleet.dev/taints" not in node["metadata"].get("annotations", {})


# --- Clusters: objects, queues, cordons --------------------------------------------------


def test_a_cluster_applies_its_objects_and_the_yunikorn_queues_beside_the_installs_keys(
    docs: Docs, clusters: KubernetesProvider, server: ApiServer, inputs: RevisionInputs
) -> None:
    server.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "yunikorn-configs", "namespace": "yunikorn"},
            "data": {"log.level": "info"},
        },
        manager="helm",
    )
    cluster = _spec(docs, "cluster/k8s-nyc1")
    result = clusters.apply(Change(cluster.address, Action.UPDATE, cluster), inputs)
    assert result.ok, result.message
    configmap = server.get("v1", "ConfigMap", "yunikorn-configs", "yunikorn")
    assert configmap is not None and configmap["data"]["log.level"] == "info"
    assert "- name: ml-gpu" in configmap["data"]["queues.yaml"]
    assert server.get("scheduling.k8s.io/v1", "PriorityClass", "platform-critical")["value"] == 900000000
    control_plane = server.get("v1", "Node", "k8s-nyc1-cp-2")
    assert control_plane is not None
    assert control_plane["metadata"]["labels"]["topology.kubernetes.io/zone"] == "nyc1-r02"
    assert _taints(server, "k8s-nyc1-cp-2") == ["node-role.kubernetes.io/control-plane=:NoSchedule"]
    assert _all_in_sync(_observe(clusters, cluster, inputs))


def test_cordon_on_and_off_and_a_persons_cordon_is_left_alone(
    docs: Docs,
    clusters: KubernetesProvider,
    kubeconfigs: dict[str, Path],
    server: ApiServer,
    kubectl: Kubectl,
    inputs: RevisionInputs,
) -> None:
    cluster = _spec(docs, "cluster/k8s-nyc1")
    assert clusters.apply(Change(cluster.address, Action.UPDATE, cluster), inputs).ok
    cordoned = server.get("v1", "Node", "nyc1-r02-04")
    assert cordoned is not None and cordoned["spec"]["unschedulable"] is True
    assert cordoned["metadata"]["annotations"]["fleet.dev/cordoned"] == "true"
    assert "SchedulingDisabled" in kubectl("get", "node", "nyc1-r02-04")

    kubectl("cordon", "nyc1-r02-03")  # a person's cordon, for maintenance fleet knows nothing of
    raw = cluster.model_dump(mode="json")
    for member in raw["spec"]["members"]:
        member["cordon"] = False
    uncordoned = models.Cluster.model_validate(raw)
    with_uncordoned = _inputs(docs, cluster=uncordoned)
    with KubernetesProvider(_access(kubeconfigs["admin"], server.port), "Cluster") as p:
        entry = _node_entry(_observe(p, uncordoned, with_uncordoned), "nyc1-r02-04")
        assert (entry["unschedulable"], entry["cordon"], entry["inSync"]) == (True, False, False)
        result = p.apply(Change(uncordoned.address, Action.UPDATE, uncordoned), with_uncordoned)
        assert result.ok and result.message.startswith("1 node uncordoned; no Node for nyc1-r04-04")
        node = server.get("v1", "Node", "nyc1-r02-04")
        assert node is not None and not node["spec"].get("unschedulable")
        assert "fleet.dev/cordoned" not in node["metadata"].get("annotations", {})
        assert server.get("v1", "Node", "nyc1-r02-03")["spec"]["unschedulable"] is True
        assert _all_in_sync(_observe(p, uncordoned, with_uncordoned))
    kubectl("uncordon", "nyc1-r02-03")
    assert clusters.apply(Change(cluster.address, Action.UPDATE, cluster), inputs).message.startswith(
        "1 node cordoned"
    )


def test_a_volcano_pool_gets_its_queue(
    docs: Docs, pools: KubernetesProvider, server: ApiServer, inputs: RevisionInputs
) -> None:
    pool = _spec(docs, "sparkpool/adhoc")
    assert pools.apply(Change(pool.address, Action.CREATE, pool), inputs).ok
    queue = server.get("scheduling.volcano.sh/v1beta1", "Queue", "adhoc")
    assert queue is not None and queue["spec"]["capability"] == {"cpu": "448", "memory": "1792Gi"}
    assert _all_in_sync(_observe(pools, pool, inputs))


# --- when the cluster cannot be read -----------------------------------------------------


def test_a_stopped_server_is_unknown_never_absent(
    docs: Docs, kubeconfigs: dict[str, Path], tmp_path: Path
) -> None:
    cert, key = _self_signed(tmp_path)
    with ApiServer("127.0.0.1", 0, tokens={ADMIN: "admin"}, tls_cert=cert, tls_key=key) as stopped:
        port = stopped.port
    inputs = _inputs(docs)
    with KubernetesProvider(_access(kubeconfigs["admin"], port), "SparkPool") as provider:
        specs = [_spec(docs, "sparkpool/etl"), _spec(docs, "sparkpool/ml-gpu")]
        observations = list(provider.observe(specs, inputs).observations)
        assert [(o.state, o.reason) for o in observations] == [
            (ObservationState.UNKNOWN, UnknownReason.UNREACHABLE)
        ] * 2
        assert "the API server of cluster k8s-nyc1 (https://10.20.10.10:6443) refused the connection" in (
            observations[0].detail
        )
        with pytest.raises(TemporaryError):
            provider.apply(Change(specs[0].address, Action.UPDATE, specs[0]), inputs)


def test_a_server_that_never_answers_times_out(docs: Docs, kubeconfigs: dict[str, Path]) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts connections (the kernel does) but never answers them
        port = silent.getsockname()[1]
        access = _access(kubeconfigs["admin"], port)
        with KubernetesProvider(access, "SparkPool", timeout=(0.3, 0.3)) as provider:
            (observation,) = provider.observe([_spec(docs, "sparkpool/etl")], _inputs(docs)).observations
    assert (observation.state, observation.reason) == (ObservationState.UNKNOWN, UnknownReason.TIMEOUT)


@pytest.mark.parametrize(
    ("kubeconfig", "status", "secret"),
    [
        pytest.param("rejected", "(401)", "not-a-valid-token-5e1d", id="unknown-token"),
        pytest.param("reader", "(403)", READER, id="read-only-token-cannot-dry-run"),
    ],
)
def test_rejected_credentials_are_an_auth_failure_that_names_the_cluster_not_the_token(
    docs: Docs,
    etl: models.SparkPool,  # applied: a read-only token can list and read; it fails at the dry runs
    kubeconfigs: dict[str, Path],
    server: ApiServer,
    kubeconfig: str,
    status: str,
    secret: str,
) -> None:
    inputs = _inputs(docs)
    with KubernetesProvider(_access(kubeconfigs[kubeconfig], server.port), "SparkPool") as provider:
        (observation,) = provider.observe([etl], inputs).observations
        result = provider.apply(Change(etl.address, Action.UPDATE, etl), inputs)
    assert (observation.state, observation.reason) == (ObservationState.UNKNOWN, UnknownReason.AUTH_FAILURE)
    assert observation.detail.startswith(
        "the API server of cluster k8s-nyc1 (https://10.20.10.10:6443) "
        + ("rejected the credentials from kubeconfig-k8s-nyc1 (401)" if status == "(401)" else "refused ")
    )
    assert status in observation.detail
    assert not result.ok and status in result.message
    for text in (observation.detail, result.message, repr(observation), repr(result)):
        assert secret not in text


def test_observe_and_apply_are_safe_to_run_at_once(
    etl: models.SparkPool, pools: KubernetesProvider, server: ApiServer, inputs: RevisionInputs
) -> None:
    errors: list[BaseException] = []

    def observe() -> None:
        try:
            for _ in range(5):
                assert _all_in_sync(_observe(pools, etl, inputs))
        except BaseException as exc:  # handed to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=observe) for _ in range(4)]
    for thread in threads:
        thread.start()
    assert not pools.apply(Change(etl.address, Action.UPDATE, etl), inputs).changed
    for thread in threads:
        thread.join()
    assert errors == []


def test_a_secrets_values_never_appear_in_a_diff() -> None:
    def secret(value: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"password": value}}

    assert object_diff(secret("aHVudGVyMg=="), secret("c3dvcmRmaXNo")) == [
        {"path": "data.password", "live": "(hidden)", "desired": "(hidden)"}
    ]


def _kubeconfig_with_ca(server: ApiServer, ca: Path) -> str:
    config = json.loads(server.kubeconfig(ADMIN, insecure=False))
    config["clusters"][0]["cluster"]["certificate-authority-data"] = base64.b64encode(
        ca.read_bytes()
    ).decode()
    return json.dumps(config)


@pytest.mark.parametrize(
    ("secret", "state", "reason", "detail"),
    [
        pytest.param("kubeconfig-with-ca", ObservationState.OBSERVED, None, "", id="kubeconfig-ca-verified"),
        pytest.param(
            "bare-token",
            ObservationState.UNKNOWN,
            UnknownReason.PROTOCOL_ERROR,
            "TLS failed",
            id="token-system-cas",
        ),
        pytest.param(
            "not: [a kubeconfig",
            ObservationState.UNKNOWN,
            UnknownReason.CREDENTIALS_MISSING,
            "holds neither a kubeconfig nor a bearer token",
            id="garbage",
        ),
    ],
)
def test_credential_forms(
    docs: Docs,
    server: ApiServer,
    tls: tuple[Path, Path],
    tmp_path: Path,
    secret: str,
    state: ObservationState,
    reason: UnknownReason | None,
    detail: str,
) -> None:
    text = {"kubeconfig-with-ca": _kubeconfig_with_ca(server, tls[0]), "bare-token": ADMIN}.get(
        secret, secret
    )
    path = tmp_path / "credential"
    path.write_text(text)
    with KubernetesProvider(_access(path, server.port), "SparkPool") as provider:
        (observation,) = provider.observe([_spec(docs, "sparkpool/adhoc")], _inputs(docs)).observations
    readable = {ObservationState.OBSERVED, ObservationState.ABSENT}  # absent until adhoc was applied
    if state is ObservationState.OBSERVED:
        assert observation.state in readable, observation.detail
    else:
        assert (observation.state, observation.reason) == (state, reason), observation.detail
    assert detail in observation.detail and ADMIN not in observation.detail


def test_no_credentials_over_plain_http(docs: Docs, kubeconfigs: dict[str, Path]) -> None:
    with ApiServer("127.0.0.1", 0, tokens={ADMIN: "admin"}) as plain:
        access = _access(kubeconfigs["admin"], plain.port)
        raw = _spec(docs, "cluster/k8s-nyc1").model_dump(mode="json")
        raw["spec"]["apiServer"] = "http://10.20.10.10:6443"
        cluster = models.Cluster.model_validate(raw)
        with KubernetesProvider(access, "Cluster") as provider:
            (observation,) = provider.observe([cluster], _inputs(docs)).observations
        assert plain.stats().by_code.get(401, 0) >= 1
    assert observation.reason is UnknownReason.AUTH_FAILURE
    assert "which fleet does not send over plain http" in observation.detail


# --- credentials kept in Kubernetes Secrets -------------------------------------------------


def _bmc_fleet(
    docs: Docs, secret: dict[str, Any], credentials_cluster: str | None = None, **credentials: Any
) -> models.Fleet:
    """The example's Fleet with bmc-ldn1-r03 in `secret`, read through `credentials_cluster`."""
    fleet = next(doc for doc in docs.values() if isinstance(doc, models.Fleet))
    raw = fleet.model_dump(mode="json", by_alias=True)
    raw["spec"]["credentials"]["bmc-ldn1-r03"] = {"kubernetesSecret": secret}
    raw["spec"]["credentials"].update(credentials)
    raw["spec"]["credentialsCluster"] = credentials_cluster
    return models.Fleet.model_validate(raw)


def test_kubernetes_secret_credentials_are_read_through_a_kubeconfig(
    server: ApiServer, kubeconfigs: dict[str, Path], docs: Docs
) -> None:
    from providers.access import load_access

    value = "ilo-admin:canary-s3cr3t-value-123"
    server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "fleet-system"}})
    server.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "bmc-ldn1-r03", "namespace": "fleet-system"},
            "data": {"password": base64.b64encode(value.encode()).decode(), "note": "eA=="},
        }
    )
    environment = {"FLEET_KUBECONFIG": str(kubeconfigs["admin"])}
    access = load_access(None, environment)
    fleet = _bmc_fleet(docs, {"namespace": "fleet-system", "name": "bmc-ldn1-r03", "key": "password"})
    server.reset_stats()
    found = access.credentials.user_password("bmc-ldn1-r03", RevisionInputs(fleet))
    assert (found.username, found.password.reveal()) == ("ilo-admin", "canary-s3cr3t-value-123")
    access.credentials.user_password("bmc-ldn1-r03", RevisionInputs(fleet))
    assert server.stats().by_verb == {"get": 1}, "a Secret read is kept for a minute"
    # What goes wrong names the Secret and the key, never a value.
    for secret, message in (
        (
            {"namespace": "fleet-system", "name": "nope", "key": "password"},
            "fleet-system/nope does not exist",
        ),
        (
            {"namespace": "fleet-system", "name": "bmc-ldn1-r03", "key": "pw"},
            "has no key 'pw' (its keys: note, password)",
        ),
        ({"namespace": "fleet-system", "name": "bmc-ldn1-r03"}, "has 2 keys (note, password), not one"),
    ):
        with pytest.raises(PermanentError) as failed:
            access.credentials.user_password("bmc-ldn1-r03", RevisionInputs(_bmc_fleet(docs, secret)))
        assert message in str(failed.value) and "canary" not in str(failed.value)
    # A kubeconfig whose user may not read Secrets: refused, said so.
    with pytest.raises(FleetError) as refused:
        load_access(None, {"FLEET_KUBECONFIG": str(kubeconfigs["rejected"])}).credentials.user_password(
            "bmc-ldn1-r03", RevisionInputs(fleet)
        )
    assert "401" in str(refused.value) and "canary" not in str(refused.value)


def test_in_a_pod_secret_credentials_are_read_with_its_service_account(
    server: ApiServer, tls: tuple[Path, Path], tmp_path: Path
) -> None:
    from providers.kubernetes.secrets import SecretReader

    account = tmp_path / "serviceaccount"  # what the kubelet mounts at /var/run/secrets/...
    account.mkdir()
    (account / "token").write_text(ADMIN + "\n")
    shutil.copy(tls[0], account / "ca.crt")
    server.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "in-pod", "namespace": "default"},
            "data": {"only": base64.b64encode(b"admin:pod-s3cr3t").decode()},
        }
    )
    environment = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(server.port)}
    reader = SecretReader.in_pod(environment, service_account=account)
    assert reader("default", "in-pod", None) == "admin:pod-s3cr3t"  # the only key, when none is named
    assert SecretReader.of({}) is None  # neither a pod nor FLEET_KUBECONFIG


def test_secret_credentials_are_read_through_the_fleets_credentials_cluster(
    server: ApiServer, kubeconfigs: dict[str, Path], docs: Docs
) -> None:
    """Outside a pod and without FLEET_KUBECONFIG, a Secret is read through the Cluster the Fleet
    names as credentialsCluster: its API server as the endpoint map reaches it, its own
    credentialsRef. FLEET_KUBECONFIG, when set, beats it."""
    value = "ilo-admin:canary-through-cluster-77"
    server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "colo-creds"}})
    server.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "bmc-ldn1-r03", "namespace": "colo-creds"},
            "data": {"password": base64.b64encode(value.encode()).decode()},
        }
    )
    secret = {"namespace": "colo-creds", "name": "bmc-ldn1-r03", "key": "password"}
    revision = RevisionInputs.of(_bmc_fleet(docs, secret, "k8s-ldn1"), docs.values())
    access = _access(kubeconfigs["admin"], server.port)  # k8s-ldn1's API server: the test server
    server.reset_stats()
    found = access.credentials.user_password("bmc-ldn1-r03", revision)
    assert (found.username, found.password.reveal()) == ("ilo-admin", "canary-through-cluster-77")
    access.credentials.user_password("bmc-ldn1-r03", revision)
    assert server.stats().by_verb == {"get": 1}, "the reader through the cluster keeps its values too"

    # FLEET_KUBECONFIG beats the Fleet's choice: here its user is refused, and that is what is said.
    source = models.CredentialSource(file=str(kubeconfigs["admin"]))
    overridden = lab_access(
        {"FLEET_KUBECONFIG": str(kubeconfigs["rejected"])},
        endpoints={LDN1: Endpoint("127.0.0.1", server.port)},
        credentials={"kubeconfig-k8s-ldn1": source},
    )
    with pytest.raises(FleetError) as refused:
        overridden.credentials.user_password("bmc-ldn1-r03", revision)
    assert "401" in str(refused.value) and "canary" not in str(refused.value)

    # A credentials cluster whose own kubeconfig is a Secret could never be read: said so.
    circular = RevisionInputs.of(
        _bmc_fleet(
            docs,
            secret,
            "k8s-ldn1",
            **{"kubeconfig-k8s-ldn1": {"kubernetesSecret": {"namespace": "colo-creds", "name": "kube"}}},
        ),
        docs.values(),
    )
    with pytest.raises(PermanentError) as failed:
        lab_access().credentials.user_password("bmc-ldn1-r03", circular)
    assert "that cluster's own credentials are Kubernetes Secret colo-creds/kube" in str(failed.value)

    # A credentials cluster that cannot be reached: an error that names it, for the resource to be unknown.
    unreachable = lab_access(
        endpoints={LDN1: Endpoint("127.0.0.1", 9)}, credentials={"kubeconfig-k8s-ldn1": source}
    )
    with pytest.raises(FleetError) as down:
        unreachable.credentials.user_password("bmc-ldn1-r03", revision)
    assert "k8s-ldn1" in str(down.value) and "canary" not in str(down.value)


def test_without_a_way_to_a_cluster_a_secret_credential_says_what_to_do(docs: Docs) -> None:
    from providers.access import load_access

    fleet = _bmc_fleet(docs, {"namespace": "fleet-system", "name": "bmc-ldn1-r03", "key": "password"})
    with pytest.raises(PermanentError) as failed:
        load_access(None, {}).credentials.user_password("bmc-ldn1-r03", RevisionInputs(fleet))
    assert (
        "fleet runs neither in a pod of a cluster nor with FLEET_KUBECONFIG, and fleet.yaml names no"
        " credentialsCluster" in str(failed.value)
    )
