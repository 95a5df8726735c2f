"""The Kubernetes API test server against real kubectl, and its HTTP API directly.

kubectl (v1.32, /usr/bin/kubectl) is the independent client: what it accepts is the bar. It never
sends a bearer token over plain HTTP, so the shared server speaks HTTPS with a self-signed
certificate and the kubeconfig skips verification. Each test works in namespaces and names of
its own, so tests share one server without seeing each other's objects.
"""

from __future__ import annotations

import http.client
import json
import os
import selectors
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.apiserver import managedfields as mf
from lab.apiserver.server import ApiServer, human_duration
from lab.apiserver.store import ApiError
from lab.apiserver.tls import self_signed_certificate, subject_alt_names

ROOT = Path(__file__).resolve().parent.parent
ADMIN = "admin-token"
READER = "reader-token"
TOKENS = {ADMIN: "admin", READER: "read-only"}
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"


def _self_signed(directory: Path) -> tuple[Path, Path]:
    return self_signed_certificate(directory, "127.0.0.1")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    cert, key = _self_signed(tmp_path_factory.mktemp("tls"))
    with ApiServer("127.0.0.1", 0, tokens=TOKENS, tls_cert=cert, tls_key=key) as api:
        yield api


class Client:
    """A keep-alive HTTPS client for the server's REST API."""

    def __init__(self, api: ApiServer, token: str | None = ADMIN) -> None:
        self.api = api
        self.token = token
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        self.conn = http.client.HTTPSConnection("127.0.0.1", api.port, context=context, timeout=10)

    def request(
        self, method: str, path: str, body: Any = None, *, content_type: str = "application/json"
    ) -> tuple[int, Any]:
        headers = {"Accept": "application/json", "User-Agent": "fleet-tests/1.0"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        payload = None
        if body is not None:
            payload = json.dumps(body)
            headers["Content-Type"] = content_type
        self.conn.request(method, path, payload, headers)
        response = self.conn.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None

    def ok(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json") -> Any:
        status, reply = self.request(method, path, body, content_type=content_type)
        assert 200 <= status < 300, (status, reply)
        return reply


@pytest.fixture
def client(server: ApiServer) -> Iterator[Client]:
    c = Client(server)
    yield c
    c.conn.close()


_namespaces = iter(range(1, 10_000))


@pytest.fixture
def namespace(client: Client) -> str:
    name = f"t{next(_namespaces)}"
    client.ok(
        "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    return name


def configmap(name: str, namespace: str, data: dict[str, str] | None = None, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, **meta},
        "data": data or {},
    }


def cm_path(namespace: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{namespace}/configmaps" + (f"/{name}" if name else "")


# ---------------------------------------------------------------------------------------------
# kubectl


@pytest.fixture(scope="module")
def kubectl_binary() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl is required: it is the independent client these tests hold the server to")
    return found


Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def kubeconfig(server: ApiServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("kube")
    path = directory / "config"
    path.write_text(server.kubeconfig(ADMIN))
    return path


@pytest.fixture(scope="module")
def kubectl(kubectl_binary: str, kubeconfig: Path) -> Kubectl:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    cache = kubeconfig.parent / "cache"

    def run(
        *args: str, stdin: str | None = None, check: bool = True, extra_env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [kubectl_binary, "--cache-dir", str(cache), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env={**env, **(extra_env or {})},
            timeout=30,
        )
        if check:
            assert done.returncode == 0, f"kubectl {' '.join(args)} failed:\n{done.stderr}"
        return done

    return run


def yaml_docs(*objects: dict[str, Any]) -> str:
    # kubectl reads a stream of JSON documents one after the other (a leading { means JSON).
    return "\n".join(json.dumps(o) for o in objects)


def managers(obj: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    """(manager, operation) -> the owned paths, as upstream prints them."""
    out: dict[tuple[str, str], set[str]] = {}
    for entry in obj["metadata"].get("managedFields", []):
        paths = mf.from_fields_v1(entry["fieldsV1"])
        out[(entry["manager"], entry["operation"])] = {mf.path_string(p) for p in paths}
    return out


def test_kubectl_discovers_builtin_and_scopes(kubectl: Kubectl) -> None:
    out = kubectl("api-resources", "--no-headers").stdout
    rows = {line.split()[0]: line.split() for line in out.splitlines()}
    expected = {
        "configmaps": "true",
        "secrets": "true",
        "serviceaccounts": "true",
        "resourcequotas": "true",
        "limitranges": "true",
        "pods": "true",
        "namespaces": "false",
        "nodes": "false",
        "roles": "true",
        "rolebindings": "true",
        "clusterroles": "false",
        "clusterrolebindings": "false",
        "priorityclasses": "false",
        "customresourcedefinitions": "false",
    }
    for resource, namespaced in expected.items():
        assert resource in rows, resource
        assert namespaced in rows[resource], rows[resource]
    assert rows["customresourcedefinitions"][1] == "crd,crds"


def test_kubectl_server_side_apply_creates_then_noop_then_changes(kubectl: Kubectl, namespace: str) -> None:
    manifest = configmap("settings", namespace, {"mode": "a"}, labels={"app": "web"})
    assert (
        "configmap/settings serverside-applied"
        in kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(manifest)).stdout
    )
    first = json.loads(kubectl("get", "cm", "settings", "-n", namespace, "-o", "json").stdout)
    kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(manifest))
    again = json.loads(kubectl("get", "cm", "settings", "-n", namespace, "-o", "json").stdout)
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    manifest["data"] = {"mode": "b"}
    kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(manifest))
    changed = json.loads(
        kubectl("get", "cm", "settings", "-n", namespace, "-o", "json", "--show-managed-fields").stdout
    )
    assert changed["data"] == {"mode": "b"}
    # Upstream keeps no generation for ConfigMaps (only for CRs, CRDs and workloads).
    assert "generation" not in changed["metadata"]
    assert int(changed["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    assert managers(changed) == {("kubectl", "Apply"): {".data.mode", ".metadata.labels.app"}}


def test_kubectl_apply_conflict_between_managers_and_force(kubectl: Kubectl, namespace: str) -> None:
    manifest = configmap("shared", namespace, {"key": "from-a", "a-only": "1"})
    kubectl("apply", "--server-side", "--field-manager=a", "-f", "-", stdin=json.dumps(manifest))
    theirs = configmap("shared", namespace, {"key": "from-b"})
    refused = kubectl(
        "apply", "--server-side", "--field-manager=b", "-f", "-", stdin=json.dumps(theirs), check=False
    )
    assert refused.returncode != 0
    assert 'Apply failed with 1 conflict: conflict with "a": .data.key' in refused.stderr
    kubectl(
        "apply",
        "--server-side",
        "--field-manager=b",
        "--force-conflicts",
        "-f",
        "-",
        stdin=json.dumps(theirs),
    )
    obj = json.loads(
        kubectl("get", "cm", "shared", "-n", namespace, "-o", "json", "--show-managed-fields").stdout
    )
    assert obj["data"] == {"key": "from-b", "a-only": "1"}
    assert managers(obj) == {("a", "Apply"): {".data.a-only"}, ("b", "Apply"): {".data.key"}}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("tier=web", {"web-prod", "web-dev"}),
        ("tier==web,env!=prod", {"web-dev"}),
        ("tier in (web,db)", {"web-prod", "web-dev", "db-prod"}),
        ("tier notin (web)", {"db-prod", "plain"}),
        ("env", {"web-prod", "web-dev", "db-prod"}),
        ("!env", {"plain"}),
    ],
    ids=["equals", "double-equals-and-not-equals", "in", "notin", "exists", "does-not-exist"],
)
def test_kubectl_get_with_label_selector(
    kubectl: Kubectl, server: ApiServer, selector: str, expected: set[str]
) -> None:
    namespace = "selectors"
    if server.get("v1", "Namespace", namespace) is None:
        server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        for name, labels in {
            "web-prod": {"tier": "web", "env": "prod"},
            "web-dev": {"tier": "web", "env": "dev"},
            "db-prod": {"tier": "db", "env": "prod"},
            "plain": {},
        }.items():
            server.create(configmap(name, namespace, labels=labels))
    listed = json.loads(kubectl("get", "cm", "-n", namespace, "-l", selector, "-o", "json").stdout)
    assert listed["kind"] == "List"
    assert {item["metadata"]["name"] for item in listed["items"]} == expected


def test_kubectl_label_records_its_manager(kubectl: Kubectl, client: Client, namespace: str) -> None:
    client.ok("POST", cm_path(namespace), configmap("labelled", namespace, {"a": "1"}))
    assert "labeled" in kubectl("label", "cm", "labelled", "-n", namespace, "tier=backend").stdout
    obj = client.ok("GET", cm_path(namespace, "labelled"))
    assert obj["metadata"]["labels"] == {"tier": "backend"}
    assert managers(obj)[("kubectl-label", "Update")] == {".metadata.labels", ".metadata.labels.tier"}
    kubectl("label", "cm", "labelled", "-n", namespace, "tier-")
    assert "labels" not in client.ok("GET", cm_path(namespace, "labelled"))["metadata"]


def test_kubectl_taint_and_cordon_a_node(kubectl: Kubectl, server: ApiServer) -> None:
    server.create(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "worker-taints", "labels": {"node-role.kubernetes.io/worker": ""}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        }
    )
    kubectl("taint", "nodes", "worker-taints", "gpu=true:NoSchedule")
    kubectl("taint", "nodes", "worker-taints", "maintenance=yes:NoExecute")
    node = server.get("v1", "Node", "worker-taints")
    assert node is not None
    # kubectl puts the new taint first; the server keeps the list it was sent (taints are atomic).
    assert node["spec"]["taints"] == [
        {"effect": "NoExecute", "key": "maintenance", "value": "yes"},
        {"effect": "NoSchedule", "key": "gpu", "value": "true"},
    ]
    kubectl("taint", "nodes", "worker-taints", "gpu:NoSchedule-")
    kubectl("cordon", "worker-taints")
    node = server.get("v1", "Node", "worker-taints")
    assert node is not None
    assert node["spec"]["taints"] == [{"key": "maintenance", "value": "yes", "effect": "NoExecute"}]
    assert node["spec"]["unschedulable"] is True
    owners = managers(node)
    assert owners[("kubectl-taint", "Update")] == {".spec.taints"}
    assert owners[("kubectl", "Update")] == {".spec.unschedulable"}
    table = kubectl("get", "node", "worker-taints", "--no-headers").stdout.split()
    assert table[:3] == ["worker-taints", "Ready,SchedulingDisabled", "worker"]
    kubectl("uncordon", "worker-taints")
    node = server.get("v1", "Node", "worker-taints")
    assert node is not None
    assert "unschedulable" not in node["spec"]


def test_kubectl_edit_sends_a_strategic_patch(
    kubectl: Kubectl, client: Client, namespace: str, tmp_path: Path
) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "web", "image": "nginx:1"},
                        {"name": "sidecar", "image": "envoy:1"},
                    ]
                },
            },
        },
    }
    kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(deployment))
    editor = tmp_path / "editor.sh"
    editor.write_text('#!/bin/sh\nsed -i "s/nginx:1/nginx:2/" "$1"\n')
    editor.chmod(0o755)
    assert (
        "edited"
        in kubectl("edit", "deployment", "web", "-n", namespace, extra_env={"EDITOR": str(editor)}).stdout
    )
    obj = client.ok("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/web")
    assert [c["image"] for c in obj["spec"]["template"]["spec"]["containers"]] == ["nginx:2", "envoy:1"]
    assert obj["metadata"]["generation"] == 2
    owners = managers(obj)
    assert owners[("kubectl-edit", "Update")] == {'.spec.template.spec.containers[name="web"].image'}
    assert '.spec.template.spec.containers[name="web"].image' not in owners[("kubectl", "Apply")]


@pytest.mark.parametrize(
    ("args", "path", "expected"),
    [
        (
            ("create", "namespace", "gen-ns"),
            "/api/v1/namespaces/gen-ns",
            {"spec": {"finalizers": ["kubernetes"]}},
        ),
        (
            ("create", "configmap", "gen-cm", "-n", "default", "--from-literal=a=1", "--from-literal=empty="),
            "/api/v1/namespaces/default/configmaps/gen-cm",
            {"data": {"a": "1", "empty": ""}},
        ),
        (
            ("create", "secret", "generic", "gen-secret", "-n", "default", "--from-literal=p=q"),
            "/api/v1/namespaces/default/secrets/gen-secret",
            {"data": {"p": "cQ=="}, "type": "Opaque"},
        ),
        (
            (
                "create",
                "deployment",
                "gen-deploy",
                "-n",
                "default",
                "--image=nginx",
                "--replicas=2",
                "--port=80",
            ),
            "/apis/apps/v1/namespaces/default/deployments/gen-deploy",
            {
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": "gen-deploy"}},
                    "template": {
                        "metadata": {"labels": {"app": "gen-deploy"}},
                        "spec": {
                            "containers": [
                                {"image": "nginx", "name": "nginx", "ports": [{"containerPort": 80}]}
                            ]
                        },
                    },
                }
            },
        ),
        (
            ("create", "clusterrole", "gen-role", "--verb=get,list", "--resource=pods"),
            "/apis/rbac.authorization.k8s.io/v1/clusterroles/gen-role",
            {"rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]},
        ),
    ],
    ids=["namespace", "configmap", "secret", "deployment", "clusterrole"],
)
def test_kubectl_create_generators_send_protobuf(
    kubectl: Kubectl, client: Client, args: tuple[str, ...], path: str, expected: dict[str, Any]
) -> None:
    assert "created" in kubectl(*args).stdout
    obj = client.ok("GET", path)
    assert {k: obj.get(k) for k in expected} == expected


def test_kubectl_delete_a_configmap(kubectl: Kubectl, client: Client, namespace: str) -> None:
    client.ok("POST", cm_path(namespace), configmap("doomed", namespace))
    assert 'configmap "doomed" deleted' in kubectl("delete", "cm", "doomed", "-n", namespace).stdout
    status, reply = client.request("GET", cm_path(namespace, "doomed"))
    assert (status, reply["reason"]) == (404, "NotFound")


def test_kubectl_delete_namespace_terminates_then_goes_with_its_contents(
    kubectl: Kubectl, client: Client
) -> None:
    kubectl(
        "apply",
        "--server-side",
        "-f",
        "-",
        stdin=yaml_docs(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "doomed-ns"}},
            configmap("plain", "doomed-ns", {"a": "1"}),
            configmap("held", "doomed-ns", finalizers=["example.com/hold"]),
        ),
    )
    kubectl("delete", "namespace", "doomed-ns", "--wait=false")
    assert kubectl("get", "ns", "doomed-ns", "-o", "jsonpath={.status.phase}").stdout == "Terminating"
    assert kubectl("get", "cm", "-n", "doomed-ns", "-o", "name").stdout.split() == ["configmap/held"]
    held = client.ok("GET", cm_path("doomed-ns", "held"))
    assert held["metadata"]["deletionTimestamp"]
    status, reply = client.request("POST", cm_path("doomed-ns"), configmap("late", "doomed-ns"))
    assert (status, reply["reason"]) == (403, "Forbidden")
    kubectl(
        "patch",
        "cm",
        "held",
        "-n",
        "doomed-ns",
        "--type=json",
        "-p",
        '[{"op":"remove","path":"/metadata/finalizers"}]',
    )
    gone = kubectl("get", "ns", "doomed-ns", check=False)
    assert gone.returncode != 0
    assert 'namespaces "doomed-ns" not found' in gone.stderr
    # With nothing holding it, kubectl's own wait for the deletion returns.
    kubectl(
        "apply",
        "--server-side",
        "-f",
        "-",
        stdin=yaml_docs(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "doomed-fast"}},
            configmap("plain", "doomed-fast"),
        ),
    )
    kubectl("delete", "namespace", "doomed-fast", "--timeout=10s")
    assert client.request("GET", "/api/v1/namespaces/doomed-fast")[0] == 404


def test_kubectl_watch_sees_events(
    kubectl_binary: str, kubeconfig: Path, server: ApiServer, namespace: str
) -> None:
    command = [kubectl_binary, "--cache-dir", str(kubeconfig.parent / "cache"), "get", "cm", "-n", namespace]
    watcher = subprocess.Popen(
        [*command, "--watch", "-o", "json", "--output-watch-events"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
    )
    try:
        seen: list[tuple[str, str]] = []
        decoder = json.JSONDecoder()
        buffer = ""
        selector = selectors.DefaultSelector()
        assert watcher.stdout is not None
        os.set_blocking(watcher.stdout.fileno(), False)
        selector.register(watcher.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 15
        time.sleep(0.5)
        server.apply(configmap("watched", namespace, {"a": "1"}), manager="test")
        server.apply(configmap("watched", namespace, {"a": "2"}), manager="test")
        server.delete("v1", "ConfigMap", "watched", namespace)
        while len(seen) < 3 and time.monotonic() < deadline:
            if selector.select(timeout=0.5):
                buffer += watcher.stdout.read() or ""
            while buffer.strip():
                try:
                    event, end = decoder.raw_decode(buffer.lstrip())
                except ValueError:
                    break
                buffer = buffer.lstrip()[end:]
                seen.append((event["type"], event["object"]["metadata"]["name"]))
        assert seen == [("ADDED", "watched"), ("MODIFIED", "watched"), ("DELETED", "watched")]
    finally:
        watcher.send_signal(signal.SIGTERM)
        watcher.communicate(timeout=10)


def test_kubectl_server_dry_run_stores_nothing(
    kubectl: Kubectl, server: ApiServer, client: Client, namespace: str
) -> None:
    before = server.store.rv
    out = kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "-f",
        "-",
        stdin=json.dumps(configmap("dry", namespace, {"a": "1"})),
    ).stdout
    assert "configmap/dry serverside-applied (server dry run)" in out
    assert client.request("GET", cm_path(namespace, "dry"))[0] == 404
    assert server.store.rv == before


CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "machines.fleet.example.com"},
    "spec": {
        "group": "fleet.example.com",
        "scope": "Namespaced",
        "names": {"plural": "machines", "singular": "machine", "kind": "Machine", "shortNames": ["mach"]},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [{"name": "Power", "type": "string", "jsonPath": ".spec.power"}],
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "power": {"type": "string"},
                                    "nics": {
                                        "type": "array",
                                        "x-kubernetes-list-type": "map",
                                        "x-kubernetes-list-map-keys": ["mac"],
                                        "items": {
                                            "type": "object",
                                            "properties": {"mac": {"type": "string"}},
                                        },
                                    },
                                },
                            },
                            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        },
                    }
                },
            }
        ],
    },
}


def test_kubectl_crd_then_custom_resources(kubectl: Kubectl, client: Client, namespace: str) -> None:
    kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(CRD))
    kubectl("wait", "--for=condition=Established", "crd/machines.fleet.example.com", "--timeout=10s")
    machine = {
        "apiVersion": "fleet.example.com/v1",
        "kind": "Machine",
        "metadata": {"name": "m1", "namespace": namespace},
        "spec": {"power": "on", "nics": [{"mac": "aa:bb", "vlan": 10}]},
        "status": {"ignored": "by the main resource"},
    }
    assert (
        "machine.fleet.example.com/m1 serverside-applied"
        in kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(machine)).stdout
    )
    listed = json.loads(kubectl("get", "machines", "-n", namespace, "-o", "json").stdout)
    assert [(m["metadata"]["name"], m["spec"]["power"], "status" in m) for m in listed["items"]] == [
        ("m1", "on", False)
    ]
    assert kubectl("get", "mach", "-n", namespace, "--no-headers").stdout.split()[:2] == ["m1", "on"]
    applied = client.ok("GET", f"/apis/fleet.example.com/v1/namespaces/{namespace}/machines/m1")
    assert managers(applied)[("kubectl", "Apply")] == {
        ".spec.power",
        '.spec.nics[mac="aa:bb"]',
        '.spec.nics[mac="aa:bb"].mac',
        '.spec.nics[mac="aa:bb"].vlan',
    }
    client.ok("DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/machines.fleet.example.com")
    status, _ = client.request("GET", f"/apis/fleet.example.com/v1/namespaces/{namespace}/machines/m1")
    assert status == 404
    assert "machines" not in kubectl("api-resources", "--no-headers").stdout.split()


# ---------------------------------------------------------------------------------------------
# HTTP


@pytest.mark.parametrize(
    ("token", "method", "suffix", "expected"),
    [
        (None, "GET", "", (401, "Unauthorized")),
        ("wrong", "GET", "", (401, "Unauthorized")),
        (READER, "GET", "", (200, None)),
        (READER, "POST", "", (403, "Forbidden")),
        (READER, "POST", "?dryRun=All", (403, "Forbidden")),
        (ADMIN, "POST", "", (201, None)),
    ],
    ids=["no-token", "unknown-token", "reader-reads", "reader-writes", "reader-dry-run", "admin-writes"],
)
def test_authentication_and_roles(
    server: ApiServer,
    namespace: str,
    token: str | None,
    method: str,
    suffix: str,
    expected: tuple[int, str | None],
) -> None:
    client = Client(server, token)
    body = configmap(f"auth-{expected[0]}", namespace) if method == "POST" else None
    status, reply = client.request(method, cm_path(namespace) + suffix, body)
    assert status == expected[0]
    if expected[1] is not None:
        assert (reply["kind"], reply["status"], reply["reason"], reply["code"]) == (
            "Status",
            "Failure",
            expected[1],
            status,
        )
    if expected[1] == "Forbidden":
        assert reply["message"] == (
            f'configmaps is forbidden: User "read-only" cannot create resource "configmaps" in API group "" '
            f'in the namespace "{namespace}"'
        )
    assert Client(server, None).request("GET", "/version")[0] == 200


def test_create_twice_is_already_exists(client: Client, namespace: str) -> None:
    client.ok("POST", cm_path(namespace), configmap("once", namespace))
    status, reply = client.request("POST", cm_path(namespace), configmap("once", namespace))
    assert status == 409
    assert reply["reason"] == "AlreadyExists"
    assert reply["message"] == 'configmaps "once" already exists'
    assert reply["details"] == {"name": "once", "kind": "configmaps"}


def test_update_with_stale_resource_version_conflicts(client: Client, namespace: str) -> None:
    created = client.ok("POST", cm_path(namespace), configmap("cas", namespace, {"v": "1"}))
    first = dict(created, data={"v": "2"})
    updated = client.ok("PUT", cm_path(namespace, "cas"), first)
    assert int(updated["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    stale = dict(created, data={"v": "3"})
    status, reply = client.request("PUT", cm_path(namespace, "cas"), stale)
    assert status == 409
    assert reply["reason"] == "Conflict"
    assert reply["message"] == (
        'Operation cannot be fulfilled on configmaps "cas": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    assert client.ok("GET", cm_path(namespace, "cas"))["data"] == {"v": "2"}


@pytest.mark.parametrize(
    ("method", "content_type", "body"),
    [
        ("PUT", "application/json", None),
        ("PATCH", MERGE, {"data": {"k": "v"}}),
        ("PATCH", STRATEGIC, {"metadata": {"labels": {"app": "x"}}}),
        ("PATCH", JSON_PATCH, [{"op": "replace", "path": "/data/k", "value": "v"}]),
        ("PATCH", APPLY, "same-config"),
    ],
    ids=[
        "put-unchanged",
        "merge-patch-same-value",
        "strategic-patch-same-label",
        "json-patch-same-value",
        "apply-again",
    ],
)
def test_noop_writes_keep_the_resource_version(
    server: ApiServer, client: Client, namespace: str, method: str, content_type: str, body: Any
) -> None:
    config = configmap("steady", namespace, {"k": "v"}, labels={"app": "x"})
    created = client.ok(
        "PATCH", cm_path(namespace, "steady") + "?fieldManager=seed", config, content_type=APPLY
    )
    before = server.store.rv
    if body is None:
        body = created
    elif body == "same-config":
        body = config
    query = "?fieldManager=seed" if content_type == APPLY else ""
    after = client.ok(method, cm_path(namespace, "steady") + query, body, content_type=content_type)
    assert after["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    assert after["metadata"]["managedFields"] == created["metadata"]["managedFields"]
    assert server.store.rv == before


@pytest.mark.parametrize(
    ("path_suffix", "content_type", "patch", "generation"),
    [
        ("", MERGE, {"metadata": {"labels": {"new": "label"}}}, 1),
        ("", MERGE, {"spec": {"replicas": 3}}, 2),
        ("", MERGE, {"status": {"replicas": 9}}, 1),
        ("/status", MERGE, {"status": {"replicas": 9}}, 1),
        ("/status", MERGE, {"spec": {"replicas": 5}}, 1),
    ],
    ids=[
        "label-change",
        "spec-change",
        "status-on-main-resource",
        "status-subresource",
        "spec-through-status",
    ],
)
def test_generation_counts_spec_changes_only(
    client: Client, namespace: str, path_suffix: str, content_type: str, patch: Any, generation: int
) -> None:
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/gen"
    client.ok(
        "POST",
        f"/apis/apps/v1/namespaces/{namespace}/deployments",
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "gen"}, "spec": {"replicas": 1}},
    )
    changed = client.ok("PATCH", path + path_suffix, patch, content_type=content_type)
    assert changed["metadata"]["generation"] == generation
    stored = client.ok("GET", path)
    assert stored["spec"]["replicas"] == (3 if patch == {"spec": {"replicas": 3}} else 1)
    assert stored["status"].get("replicas") == (9 if path_suffix == "/status" and "status" in patch else None)


def test_list_pages_with_limit_and_continue(client: Client, namespace: str) -> None:
    for i in range(7):
        client.ok("POST", cm_path(namespace), configmap(f"page-{i}", namespace))
    pages: list[list[str]] = []
    token = ""
    first_rv = None
    while True:
        query = "?limit=3" + (f"&continue={token}" if token else "")
        page = client.ok("GET", cm_path(namespace) + query)
        pages.append([item["metadata"]["name"] for item in page["items"]])
        first_rv = first_rv or page["metadata"]["resourceVersion"]
        assert page["metadata"]["resourceVersion"] == first_rv
        token = page["metadata"].get("continue", "")
        if not token:
            assert "remainingItemCount" not in page["metadata"]
            break
        assert page["metadata"]["remainingItemCount"] == 7 - sum(map(len, pages))
        if len(pages) == 1:
            # The pages are a snapshot: what is created meanwhile is not in them.
            client.ok("POST", cm_path(namespace), configmap("page-late", namespace))
    assert pages == [["page-0", "page-1", "page-2"], ["page-3", "page-4", "page-5"], ["page-6"]]
    status, reply = client.request("GET", cm_path(namespace) + "?limit=3&continue=not-a-token")
    assert (status, reply["reason"]) == (400, "BadRequest")


def test_field_selectors(client: Client, namespace: str) -> None:
    for name in ("alpha", "beta"):
        client.ok("POST", cm_path(namespace), configmap(name, namespace))

    def names(query: str) -> list[str]:
        return [i["metadata"]["name"] for i in client.ok("GET", cm_path(namespace) + query)["items"]]

    assert names("?fieldSelector=metadata.name%3Dbeta") == ["beta"]
    assert names("?fieldSelector=metadata.name!%3Dbeta") == ["alpha"]
    everywhere = client.ok("GET", f"/api/v1/configmaps?fieldSelector=metadata.namespace%3D{namespace}")
    assert [i["metadata"]["name"] for i in everywhere["items"]] == ["alpha", "beta"]
    status, reply = client.request("GET", cm_path(namespace) + "?fieldSelector=data.x%3Dy")
    assert (status, reply["message"]) == (400, "field label not supported: data.x")


def _watch_lines(api: ApiServer, path: str, limit: int) -> list[dict[str, Any]]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    conn = (
        http.client.HTTPSConnection("127.0.0.1", api.port, context=context, timeout=10)
        if api.tls_cert
        else http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    )
    conn.request("GET", path, headers={"Authorization": f"Bearer {ADMIN}"})
    response = conn.getresponse()
    assert response.status == 200
    events = []
    while len(events) < limit:
        line = response.readline()
        if not line:
            break
        events.append(json.loads(line))
    conn.close()
    return events


def test_watch_from_a_version_streams_changes_and_selector_transitions(
    server: ApiServer, client: Client, namespace: str
) -> None:
    created = client.ok("POST", cm_path(namespace), configmap("w", namespace, labels={"watch": "yes"}))
    rv = created["metadata"]["resourceVersion"]
    client.ok("PATCH", cm_path(namespace, "w"), {"data": {"a": "1"}}, content_type=MERGE)
    client.ok("PATCH", cm_path(namespace, "w"), {"metadata": {"labels": {"watch": "no"}}}, content_type=MERGE)
    client.ok("DELETE", cm_path(namespace, "w"))
    all_events = _watch_lines(
        server, cm_path(namespace) + f"?watch=1&resourceVersion={rv}&timeoutSeconds=2", 3
    )
    assert [e["type"] for e in all_events] == ["MODIFIED", "MODIFIED", "DELETED"]
    assert [int(e["object"]["metadata"]["resourceVersion"]) for e in all_events] == sorted(
        int(e["object"]["metadata"]["resourceVersion"]) for e in all_events
    )
    selected = _watch_lines(
        server,
        cm_path(namespace) + f"?watch=true&resourceVersion={rv}&labelSelector=watch%3Dyes&timeoutSeconds=1",
        5,
    )
    # Leaving the selection reads as a deletion to the watcher.
    assert [e["type"] for e in selected] == ["MODIFIED", "DELETED"]
    # The server ends a quiet watch after timeoutSeconds: the stream closes (the client's own
    # 10 s read timeout would raise instead) and holds no event.
    assert (
        _watch_lines(
            server, cm_path(namespace) + f"?watch=1&resourceVersion={server.store.rv}&timeoutSeconds=1", 1
        )
        == []
    )


def test_watch_from_a_version_older_than_history_is_gone() -> None:
    with ApiServer(tokens=TOKENS, history_size=5) as api:
        for i in range(12):
            api.create(configmap(f"churn-{i}", "default"))
        events = _watch_lines(api, "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=2", 2)
        assert len(events) == 1
        assert events[0]["type"] == "ERROR"
        status = events[0]["object"]
        assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired")
        assert status["message"].startswith("too old resource version: 2 (")
        fresh = _watch_lines(api, "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1", 20)
        assert [e["type"] for e in fresh] == ["ADDED"] * 12


def test_apply_removes_fields_a_manager_dropped_unless_another_owns_them(
    client: Client, namespace: str
) -> None:
    path = cm_path(namespace, "owned")
    client.ok(
        "PATCH",
        path + "?fieldManager=a",
        configmap("owned", namespace, {"a1": "x", "shared": "s"}, labels={"team": "a"}),
        content_type=APPLY,
    )
    client.ok(
        "PATCH",
        path + "?fieldManager=b",
        configmap("owned", namespace, {"shared": "s", "b1": "y"}),
        content_type=APPLY,
    )
    both = client.ok("GET", path)
    assert managers(both)[("a", "Apply")] >= {".data.shared"}
    assert managers(both)[("b", "Apply")] == {".data.shared", ".data.b1"}
    after = client.ok("PATCH", path + "?fieldManager=a", configmap("owned", namespace), content_type=APPLY)
    assert after["data"] == {"shared": "s", "b1": "y"}
    assert "labels" not in after["metadata"]
    assert ("a", "Apply") not in managers(after)
    client.ok(
        "PATCH", path + "?fieldManager=b", configmap("owned", namespace, {"b1": "y"}), content_type=APPLY
    )
    assert client.ok("GET", path)["data"] == {"b1": "y"}


def test_apply_conflict_status_names_each_field_and_manager(client: Client, namespace: str) -> None:
    path = cm_path(namespace, "contested")
    client.ok(
        "POST",
        cm_path(namespace) + "?fieldManager=creator",
        configmap("contested", namespace, {"x": "1", "y": "1"}),
    )
    status, reply = client.request(
        "PATCH",
        path + "?fieldManager=applier",
        configmap("contested", namespace, {"x": "2", "y": "2"}),
        content_type=APPLY,
    )
    assert (status, reply["reason"]) == (409, "Conflict")
    assert reply["message"] == (
        'Apply failed with 2 conflicts: conflicts with "creator" using v1:\n- .data.x\n- .data.y'
    )
    assert reply["details"]["causes"] == [
        {"reason": "FieldManagerConflict", "message": 'conflict with "creator" using v1', "field": ".data.x"},
        {"reason": "FieldManagerConflict", "message": 'conflict with "creator" using v1', "field": ".data.y"},
    ]
    # Upstream's StatusCause keys exactly (metav1.StatusCause): no "type".
    assert all(set(cause) == {"reason", "message", "field"} for cause in reply["details"]["causes"])
    forced = client.ok(
        "PATCH",
        path + "?fieldManager=applier&force=true",
        configmap("contested", namespace, {"x": "2", "y": "2"}),
        content_type=APPLY,
    )
    assert forced["data"] == {"x": "2", "y": "2"}
    # The creator keeps the map it created, as upstream: only its keys changed hands.
    assert managers(forced) == {
        ("applier", "Apply"): {".data.x", ".data.y"},
        ("creator", "Update"): {".data"},
    }


@pytest.mark.parametrize(
    ("query", "content_type", "expected"),
    [
        ("", APPLY, (422, "fieldManager: Required value: is required for apply patch")),
        (
            "?fieldManager=m&force=true",
            MERGE,
            (422, "force: Forbidden: may not be specified for non-apply patch"),
        ),
        ("?dryRun=Some", MERGE, (400, 'dryRun: Unsupported value: "Some": supported values: "All"')),
        ("?fieldManager=m", "application/yaml", (415, "the body of the request was in an unknown format")),
    ],
    ids=["apply-without-manager", "force-without-apply", "bad-dry-run", "unknown-patch-type"],
)
def test_bad_write_options(
    client: Client, namespace: str, query: str, content_type: str, expected: tuple[int, str]
) -> None:
    client.ok("POST", cm_path(namespace), configmap("opts", namespace))
    status, reply = client.request(
        "PATCH", cm_path(namespace, "opts") + query, configmap("opts", namespace), content_type=content_type
    )
    assert status == expected[0]
    assert expected[1] in reply["message"]


def test_dry_run_on_every_write_verb(server: ApiServer, client: Client, namespace: str) -> None:
    client.ok("POST", cm_path(namespace), configmap("real", namespace, {"v": "1"}))
    before = server.store.rv
    created = client.ok("POST", cm_path(namespace) + "?dryRun=All", configmap("imaginary", namespace))
    assert created["metadata"]["name"] == "imaginary"
    current = client.ok("GET", cm_path(namespace, "real"))
    assert client.ok("PUT", cm_path(namespace, "real") + "?dryRun=All", dict(current, data={"v": "2"}))[
        "data"
    ] == {"v": "2"}
    assert client.ok(
        "PATCH", cm_path(namespace, "real") + "?dryRun=All", {"data": {"v": "3"}}, content_type=MERGE
    )["data"] == {"v": "3"}
    applied = client.ok(
        "PATCH",
        cm_path(namespace, "real") + "?dryRun=All&fieldManager=m&force=true",
        configmap("real", namespace, {"v": "4"}),
        content_type=APPLY,
    )
    assert applied["data"] == {"v": "4"}
    client.ok("DELETE", cm_path(namespace, "real") + "?dryRun=All")
    assert server.store.rv == before
    assert client.ok("GET", cm_path(namespace, "real"))["data"] == {"v": "1"}
    assert client.request("GET", cm_path(namespace, "imaginary"))[0] == 404


def test_finalizers_hold_a_deleted_object_until_removed(
    server: ApiServer, client: Client, namespace: str
) -> None:
    client.ok(
        "POST",
        cm_path(namespace),
        configmap("held", namespace, finalizers=["example.com/a", "example.com/b"]),
    )
    deleted = client.ok("DELETE", cm_path(namespace, "held"))
    assert deleted["metadata"]["deletionTimestamp"]
    assert client.ok("GET", cm_path(namespace, "held"))["metadata"]["finalizers"] == [
        "example.com/a",
        "example.com/b",
    ]
    status, reply = client.request(
        "PATCH",
        cm_path(namespace, "held"),
        {"metadata": {"finalizers": ["example.com/a", "example.com/b", "example.com/c"]}},
        content_type=MERGE,
    )
    assert (status, reply["reason"]) == (422, "Invalid")
    rv = server.store.rv
    client.ok(
        "PATCH",
        cm_path(namespace, "held"),
        [{"op": "remove", "path": "/metadata/finalizers/0"}],
        content_type=JSON_PATCH,
    )
    assert client.ok("GET", cm_path(namespace, "held"))["metadata"]["finalizers"] == ["example.com/b"]
    client.ok("PATCH", cm_path(namespace, "held"), {"metadata": {"finalizers": None}}, content_type=MERGE)
    assert client.request("GET", cm_path(namespace, "held"))[0] == 404
    events = _watch_lines(server, cm_path(namespace) + f"?watch=1&resourceVersion={rv}&timeoutSeconds=1", 5)
    assert [e["type"] for e in events] == ["MODIFIED", "DELETED"]


def test_strategic_merge_patch_merges_lists_by_key(client: Client, namespace: str) -> None:
    base = f"/api/v1/namespaces/{namespace}/pods"
    client.ok(
        "POST",
        base,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "finalizers": ["a"]},
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": "app:1",
                        "env": [{"name": "A", "value": "1"}],
                        "ports": [{"containerPort": 80}],
                    },
                    {"name": "log", "image": "log:1"},
                ],
                "tolerations": [{"key": "t1", "operator": "Exists"}],
            },
        },
    )
    patched = client.ok(
        "PATCH",
        f"{base}/p",
        {
            "metadata": {"finalizers": ["b"]},
            "spec": {
                "containers": [
                    {"name": "app", "image": "app:2", "env": [{"name": "B", "value": "2"}]},
                    {"name": "log", "$patch": "delete"},
                ],
                "tolerations": [{"key": "t2", "operator": "Exists"}],
            },
        },
        content_type=STRATEGIC,
    )
    assert patched["metadata"]["finalizers"] == ["a", "b"]
    assert patched["spec"]["containers"] == [
        {
            "name": "app",
            "image": "app:2",
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
            "ports": [{"containerPort": 80}],
        }
    ]
    assert patched["spec"]["tolerations"] == [{"key": "t2", "operator": "Exists"}]
    owners = managers(patched)[("fleet-tests", "Update")]
    assert '.spec.containers[name="app"].env[name="B"].value' in owners
    assert '.spec.containers[name="app"].ports[containerPort=80,protocol="TCP"].containerPort' in owners


def test_status_subresource_writes_only_status(client: Client, namespace: str) -> None:
    base = f"/apis/apps/v1/namespaces/{namespace}/statefulsets"
    created = client.ok(
        "POST",
        base,
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "s"},
            "spec": {"replicas": 1},
            "status": {"replicas": 7},
        },
    )
    assert created["status"] == {}
    status_update = dict(created, spec={"replicas": 4}, status={"replicas": 1, "readyReplicas": 1})
    updated = client.ok("PUT", f"{base}/s/status", status_update)
    assert (updated["spec"], updated["status"]) == ({"replicas": 1}, {"replicas": 1, "readyReplicas": 1})
    entry = next(e for e in updated["metadata"]["managedFields"] if e.get("subresource") == "status")
    assert (entry["manager"], entry["operation"]) == ("fleet-tests", "Update")


def test_discovery_formats(server: ApiServer) -> None:
    client = Client(server)
    client.conn.request(
        "GET",
        "/apis",
        headers={
            "Authorization": f"Bearer {ADMIN}",
            "Accept": "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
        },
    )
    response = client.conn.getresponse()
    aggregated = json.loads(response.read())
    assert (
        response.getheader("Content-Type")
        == "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    )
    groups = {item["metadata"]["name"]: item for item in aggregated["items"]}
    assert {"apps", "rbac.authorization.k8s.io", "scheduling.k8s.io", "apiextensions.k8s.io"} <= set(groups)
    crds = groups["apiextensions.k8s.io"]["versions"][0]["resources"][0]
    assert (crds["resource"], crds["scope"], crds["subresources"][0]["subresource"]) == (
        "customresourcedefinitions",
        "Cluster",
        "status",
    )
    legacy = client.ok("GET", "/api/v1")
    by_name = {r["name"]: r for r in legacy["resources"]}
    assert by_name["configmaps"]["namespaced"] is True
    assert by_name["nodes"]["namespaced"] is False
    assert by_name["nodes/status"]["verbs"] == ["get", "patch", "update"]
    assert (
        client.ok("GET", "/apis/rbac.authorization.k8s.io")["preferredVersion"]["groupVersion"]
        == "rbac.authorization.k8s.io/v1"
    )
    openapi = client.ok("GET", "/openapi/v3")
    document = client.ok("GET", openapi["paths"]["api/v1"]["serverRelativeURL"])
    patch = document["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {"group": "", "kind": "ConfigMap", "version": "v1"}
    assert "fieldValidation" in [p["name"] for p in patch["parameters"]]


def test_request_stats_count_verbs_and_writes(client: Client, server: ApiServer, namespace: str) -> None:
    server.reset_stats()
    client.ok("POST", cm_path(namespace), configmap("counted", namespace))
    client.ok("GET", cm_path(namespace, "counted"))
    client.ok("GET", cm_path(namespace))
    client.ok(
        "PATCH",
        cm_path(namespace, "counted") + "?fieldManager=m&dryRun=All",
        configmap("counted", namespace, {"a": "b"}),
        content_type=APPLY,
    )
    stats = server.stats()
    assert stats.requests == 4
    assert stats.by_verb == {"create": 1, "get": 1, "list": 1, "apply": 1}
    assert (stats.writes, stats.dry_run_writes, stats.stored_changes) == (1, 1, 1)
    assert stats.by_method == {"POST": 1, "GET": 2, "PATCH": 1}


def test_cli_serves_until_sigterm_and_keeps_state(tmp_path: Path) -> None:
    state = tmp_path / "state.json"

    def serve() -> tuple[subprocess.Popen[str], str]:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lab.apiserver.server",
                "serve",
                "--port",
                "0",
                "--token",
                "t",
                "--read-only-token",
                "r",
                "--state-file",
                str(state),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), process.stderr.read() if process.stderr else url
        return process, url

    def call(url: str, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        host, port = url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request(
            method,
            path,
            json.dumps(body) if body else None,
            {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        status, raw = response.status, response.read()
        conn.close()
        return status, json.loads(raw)

    process, url = serve()
    try:
        assert call(url, "POST", cm_path("default"), "r", configmap("kept", "default"))[0] == 403
        assert call(url, "POST", cm_path("default"), "t", configmap("kept", "default", {"a": "1"}))[0] == 201
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    assert any(o["metadata"]["name"] == "kept" for o in json.loads(state.read_text())["objects"])
    process, url = serve()
    try:
        status, kept = call(url, "GET", cm_path("default", "kept"), "r")
        assert (status, kept["data"]) == (200, {"a": "1"})
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0


def _ready(path: Path, process: subprocess.Popen[str], timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(
                f"the server exited {process.returncode}: {process.stderr.read() if process.stderr else ''}"
            )
        if time.monotonic() > deadline:
            pytest.fail(f"no ready file {path} after {timeout:g} s")
        time.sleep(0.05)
    ready: dict[str, Any] = json.loads(path.read_text())
    return ready


def test_cli_self_signed_tls_seed_and_ready_file(tmp_path: Path, kubectl_binary: str) -> None:
    """The options a benchmark or lab uses to run the server in its own process, and kubectl
    trusting it through the CA the ready file names (no insecure-skip-tls-verify)."""
    nodes = [f"seed-node-{i}" for i in range(3)]
    seed = tmp_path / "seed.json"
    seed.write_text(
        json.dumps(
            [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "yunikorn"}},
                *(
                    {
                        "apiVersion": "v1",
                        "kind": "Node",
                        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
                    }
                    for name in nodes
                ),
            ]
        )
    )
    tls, ready_file = tmp_path / "tls", tmp_path / "ready.json"
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "lab.apiserver.server", "serve"),
            *("--token", ADMIN, "--read-only-token", READER),
            *("--self-signed-tls", str(tls), "--seed", str(seed), "--ready-file", str(ready_file)),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = _ready(ready_file, process)
        assert ready["pid"] == process.pid
        assert ready["url"].startswith("https://127.0.0.1:")
        assert ready["ca"] == str((tls / "tls.crt").resolve())
        assert (tls / "tls.key").stat().st_mode & 0o777 == 0o600
        kubeconfig = tmp_path / "config"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "c",
                            "cluster": {"server": ready["url"], "certificate-authority": ready["ca"]},
                        }
                    ],
                    "users": [{"name": "u", "user": {"token": ADMIN}}],
                    "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                    "current-context": "c",
                }
            )
        )

        def kubectl(*args: str) -> str:
            done = subprocess.run(
                [
                    kubectl_binary,
                    "--kubeconfig",
                    str(kubeconfig),
                    "--cache-dir",
                    str(tmp_path / "cache"),
                    *args,
                ],
                capture_output=True,
                text=True,
                timeout=30,
                env={**os.environ, "KUBECONFIG": ""},
            )
            assert done.returncode == 0, done.stderr
            return done.stdout

        rows = [line.split() for line in kubectl("get", "nodes", "--no-headers").splitlines()]
        assert [(row[0], row[1]) for row in rows] == [(name, "Ready") for name in nodes]
        assert kubectl("get", "namespace", "yunikorn", "-o", "name").strip() == "namespace/yunikorn"

        # Python's TLS verifies it too, strictly, with the host name checked.
        context = ssl.create_default_context(cafile=ready["ca"])
        context.verify_flags |= ssl.VERIFY_X509_STRICT
        port = int(ready["url"].rsplit(":", 1)[1])

        def stats(token: str | None) -> tuple[int, Any]:
            conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
            conn.request(
                "GET", "/debug/fleet/stats", headers={"Authorization": f"Bearer {token}"} if token else {}
            )
            response = conn.getresponse()
            status, raw = response.status, response.read()
            conn.close()
            return status, json.loads(raw)

        assert stats(None)[0] == 401
        status, refused = stats(READER)
        assert (status, refused["reason"]) == (403, "Forbidden")
        status, counted = stats(ADMIN)
        assert status == 200
        assert set(counted) == {
            "requests",
            "writes",
            "dry_run_writes",
            "stored_changes",
            "by_verb",
            "by_method",
            "by_code",
        }
        assert counted["by_verb"]["list"] == 1 and counted["by_verb"]["get"] == 1
        assert counted["writes"] == 0
        assert stats(ADMIN)[1] == counted  # reading the counters is not counted
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    assert not ready_file.exists()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_self_signed_certificate_names_the_host(tmp_path: Path, host: str) -> None:
    cert, key = self_signed_certificate(tmp_path / "tls", host)
    assert (cert.name, key.name) == ("tls.crt", "tls.key")
    assert key.stat().st_mode & 0o777 == 0o600
    assert subject_alt_names(host) == (["IP:127.0.0.1"] if host == "127.0.0.1" else ["DNS:localhost"])
    assert subject_alt_names("0.0.0.0") == ["IP:127.0.0.1", "IP:::1", "DNS:localhost"]
    with ApiServer(host, 0, tls_cert=cert, tls_key=key) as api:
        context = ssl.create_default_context(cafile=str(cert))
        context.verify_flags |= ssl.VERIFY_X509_STRICT
        conn = http.client.HTTPSConnection(host, api.port, context=context, timeout=10)
        conn.request("GET", "/version")
        assert conn.getresponse().status == 200
        conn.close()
        wrong = ssl.create_default_context(cafile=str(cert))
        other = "localhost" if host == "127.0.0.1" else "127.0.0.1"
        conn = http.client.HTTPSConnection(other, api.port, context=wrong, timeout=10)
        with pytest.raises(ssl.SSLCertVerificationError):
            conn.request("GET", "/version")
        conn.close()


def test_stats_endpoint_is_for_admins_and_uncounted(server: ApiServer, client: Client) -> None:
    assert Client(server, None).request("GET", "/debug/fleet/stats")[0] == 401
    assert Client(server, READER).request("GET", "/debug/fleet/stats")[0] == 403
    assert client.request("POST", "/debug/fleet/stats", {})[0] == 405
    before = server.stats()
    reply = client.ok("GET", "/debug/fleet/stats")
    assert reply["requests"] == before.requests == server.stats().requests
    assert reply["writes"] == before.writes


# ---------------------------------------------------------------------------------------------
# Pieces


def test_fields_v1_round_trip_and_printing() -> None:
    tree = {
        "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
        "f:spec": {"f:containers": {'k:{"name":"web"}': {".": {}, "f:image": {}, "f:name": {}}}},
        "f:metadata2": {"f:finalizers": {'v:"example.com/x"': {}}},
    }
    paths = mf.from_fields_v1(tree)
    assert mf.to_fields_v1(paths) == tree
    assert sorted(mf.path_string(p) for p in paths) == [
        ".metadata.labels",
        ".metadata.labels.app",
        '.metadata2.finalizers[="example.com/x"]',
        '.spec.containers[name="web"]',
        '.spec.containers[name="web"].image',
        '.spec.containers[name="web"].name',
    ]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (5, "5s"),
        (119, "119s"),
        (150, "2m30s"),
        (600, "10m"),
        (3 * 3600 + 60, "3h1m"),
        (50 * 3600, "2d2h"),
        (400 * 86400, "400d"),
    ],
    ids=["seconds", "under-two-minutes", "minutes-seconds", "minutes", "hours-minutes", "days-hours", "days"],
)
def test_age_column_matches_kubectl(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


def test_direct_api_errors_are_statuses(server: ApiServer) -> None:
    with pytest.raises(ApiError) as raised:
        server.create(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "nowhere"}}
        )
    assert (raised.value.code, raised.value.status()["message"]) == (404, 'namespaces "nowhere" not found')
