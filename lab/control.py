"""`fleet lab`: a simulated lab for a fleet repo, on this machine's loopback addresses.

`up` starts one BMC simulator process serving every Machine of the repo (real
IPMI over UDP), gives each its own loopback endpoint and generated credentials,
and, when the repo has hypervisors, one libvirtd per hypervisor Machine running
libvirt's test driver (real libvirt RPC over a unix socket), and an sshd for every
Machine and VirtualMachine with `spec.config` and `spec.address` (real SSH with key-only
login, for Ansible). It writes an override file that maps the repo's real BMC addresses,
credential references, hypervisor URIs and Ansible hosts to them. Providers read that
file only when told to (`--lab` or FLEET_LAB_OVERRIDES); production never has one.
`down` stops what `up` started and removes the lab directory, leaving nothing behind.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lab.serving import process_running, reap
from providers.credentials import reference_key
from providers.registry import ansible_host_names
from reconciler.errors import PermanentError, UsageError
from reconciler.settings import lab_overrides_path
from reconciler.spec import models

READY_TIMEOUT = 120.0
LAB_USER = "admin"
# Simulated SSH hosts listen here, on addresses of their own after the BMCs' and API servers'.
SSH_PORT = 2222


DEFAULT_SUBNET = 60


def loopback_address(index: int, subnet: int = DEFAULT_SUBNET) -> str:
    """127.60.0.1, 127.60.0.2, ...: one address per BMC, all on the loopback interface."""
    return f"127.{subnet + index // (254 * 254)}.{(index // 254) % 254}.{1 + index % 254}"


@dataclasses.dataclass(frozen=True)
class LabInfo:
    directory: Path
    pid: int  # the BMC simulator
    repo: str
    machines: int
    overrides: Path
    hypervisor_pid: int | None = None  # the process holding the simulated hypervisors
    hypervisors: int = 0
    apiserver_pids: tuple[int, ...] = ()  # one Kubernetes API test server per Cluster
    ssh_pid: int | None = None  # the process holding the simulated SSH hosts
    ssh_hosts: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "pid": self.pid,
            "repo": self.repo,
            "machines": self.machines,
            "overrides": str(self.overrides),
            "hypervisorPid": self.hypervisor_pid,
            "hypervisors": self.hypervisors,
            "apiserverPids": list(self.apiserver_pids),
            "sshPid": self.ssh_pid,
            "sshHosts": self.ssh_hosts,
        }

    @property
    def pids(self) -> list[int]:
        hypervisors = [self.hypervisor_pid] if self.hypervisor_pid is not None else []
        ssh = [self.ssh_pid] if self.ssh_pid is not None else []
        return [self.pid, *hypervisors, *self.apiserver_pids, *ssh]


def read_lab(directory: Path) -> LabInfo | None:
    try:
        data = json.loads((directory / "lab.json").read_text())
        hypervisor_pid = data.get("hypervisorPid")
        ssh_pid = data.get("sshPid")
        return LabInfo(
            Path(data["directory"]),
            int(data["pid"]),
            data["repo"],
            int(data["machines"]),
            Path(data["overrides"]),
            int(hypervisor_pid) if hypervisor_pid is not None else None,
            int(data.get("hypervisors", 0)),
            tuple(int(pid) for pid in data.get("apiserverPids", ())),
            int(ssh_pid) if ssh_pid is not None else None,
            int(data.get("sshHosts", 0)),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)


def _memory_mib(hardware: models.Hardware | None) -> int:
    from reconciler.spec.quantity import quantity_value

    if hardware is None or hardware.memory is None:
        return 0
    return int(quantity_value(hardware.memory) / (1024 * 1024))


def lab_up(
    repo: str,
    machines: Sequence[models.Machine],
    directory: Path,
    *,
    transition_seconds: float = 0.3,
    cold: bool = True,
    subnet: int = DEFAULT_SUBNET,
    vms: Sequence[models.VirtualMachine] = (),
    clusters: Sequence[models.Cluster] = (),
    fleet: models.Fleet | None = None,
) -> LabInfo:
    """Start BMC simulators for `machines`, a simulated hypervisor for every Machine of role
    hypervisor, an API test server per Cluster and an SSH host for every Machine and
    VirtualMachine Ansible configures. A cold lab starts every machine powered off; every
    hypervisor starts with only the test driver's own `test` domain, which fleet did not make
    and leaves alone. The SSH hosts come up while the other simulators start."""
    running = read_lab(directory)
    if running is not None and any(process_running(pid) for pid in running.pids):
        raise UsageError(
            f"a lab is already running from {directory} (pid {running.pid})",
            hint="run `fleet lab down` first",
        )
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    # After the BMCs' and the API servers' addresses, on the same loopback subnet.
    ssh_table = _ssh_table(machines, vms, len(machines) + len(clusters), subnet)
    ssh = _launch_ssh_hosts(directory / "ssh", ssh_table) if ssh_table else None
    started: list[int] = [ssh.pid] if ssh is not None else []
    try:
        return _start_simulators(
            repo, machines, directory, transition_seconds, cold, subnet, vms, clusters, ssh, started, fleet
        )
    except BaseException:
        _stop(*started)
        raise


def _start_simulators(
    repo: str,
    machines: Sequence[models.Machine],
    directory: Path,
    transition_seconds: float,
    cold: bool,
    subnet: int,
    vms: Sequence[models.VirtualMachine],
    clusters: Sequence[models.Cluster],
    ssh: subprocess.Popen[bytes] | None,
    started: list[int],
    fleet: models.Fleet | None = None,
) -> LabInfo:
    """The rest of `lab_up`; every process it starts goes into `started`, for stopping on failure.

    A BMC credential the repo keeps in a Kubernetes Secret is served as that Secret by the API
    server of the Cluster the Fleet names as its credentialsCluster, and fleet reads it through
    that Cluster as a deployment outside a pod does. Without a credentialsCluster, such a
    credential is written to a file like the others."""
    credentials: dict[str, tuple[str, str]] = {}
    bmcs: list[dict[str, Any]] = []
    endpoints: dict[str, str] = {}
    for index, machine in enumerate(sorted(machines, key=lambda m: m.metadata.name)):
        ref = reference_key(machine.spec.bmc.credentialsRef)
        if ref not in credentials:
            credentials[ref] = (LAB_USER, secrets.token_urlsafe(12))
        username, password = credentials[ref]
        address = loopback_address(index, subnet)
        hardware = machine.spec.hardware
        bmcs.append(
            {
                "name": machine.metadata.name,
                "address": address,
                "port": 623,
                "username": username,
                "password": password,
                "power": "off" if cold else machine.spec.power,
                "boot_device": "disk" if cold else machine.spec.bootDevice,
                "boot_persistent": True if cold else machine.spec.bootPersistent,
                "product": hardware.product if hardware and hardware.product else "Simulated Server",
                "serial": hardware.serial if hardware and hardware.serial else f"SIM{index:06d}",
                "cpus": hardware.cpus if hardware and hardware.cpus else 0,
                "memory_mib": _memory_mib(hardware),
                "group": f"{machine.spec.site}/{machine.spec.rack}",
            }
        )
        written = machine.spec.bmc.address
        written = f"[{written}]" if ":" in written else written
        endpoints[f"{written}:{machine.spec.bmc.port}"] = f"{address}:623"
    credential_files: dict[str, dict[str, str]] = {}
    in_secrets: list[dict[str, Any]] = []
    secrets_cluster = fleet.spec.credentialsCluster if fleet is not None else None
    if secrets_cluster not in {c.metadata.name for c in clusters}:
        secrets_cluster = None
    for position, (ref, (username, password)) in enumerate(sorted(credentials.items())):
        secret = _kubernetes_secret(ref, fleet) if secrets_cluster else None
        if secret is not None:
            in_secrets += _secret_objects(secret, f"{username}:{password}")
            continue
        path = directory / "credentials" / f"credential-{position}"
        _write_private(path, f"{username}:{password}\n")
        credential_files[ref] = {"file": str(path)}
    config = directory / "bmcs.json"
    _write_private(config, json.dumps({"transition_seconds": transition_seconds, "bmcs": bmcs}))
    overrides = lab_overrides_path(directory)
    process = _spawn(
        [
            "-m",
            "lab.bmc",
            "serve",
            "--config",
            str(config),
            "--control",
            str(directory / "bmc.sock"),
        ],
        directory / "simulator.log",
        lambda text: any(line.startswith("ready ") for line in text.splitlines()),
        "the BMC simulator",
        started,
    )
    hypervisors = sorted(m.metadata.name for m in machines if m.spec.role == "hypervisor")
    uris: dict[str, str] = {}
    hypervisor_pid = None
    if hypervisors:
        hypervisor_pid, uris = _start_hypervisors(directory / "hypervisors", hypervisors, vms, started)
    apiservers: list[int] = []
    for index, cluster in enumerate(sorted(clusters, key=lambda c: c.metadata.name)):
        # After the BMCs' addresses, on the same loopback subnet.
        host = loopback_address(len(bmcs) + index, subnet)
        extra = in_secrets if cluster.metadata.name == secrets_cluster else []
        pid, written, actual, kubeconfig = _start_apiserver(
            directory / "clusters", cluster, host, started, extra
        )
        apiservers.append(pid)
        endpoints[written] = actual
        credential_files[reference_key(cluster.spec.credentialsRef)] = {"file": str(kubeconfig)}
    ansible_hosts = _await_ssh_hosts(directory / "ssh", ssh) if ssh is not None else {}
    # Simulators do not crash when hammered: the lab spaces IPMI commands 0.1 s apart, not 5 s,
    # and the test driver shuts a domain down at once, so nothing needs two minutes' grace.
    settings = {
        "ipmi": {"minCommandIntervalSeconds": 0.1, "softPowerOffGraceSeconds": 2.0},
        "libvirt": {"shutdownTimeoutSeconds": 5.0, "timeoutSeconds": 10.0},
        # The artifacts of the lab's Ansible runs stay in the lab (and go with `fleet lab down`).
        "ansible": {"artifactsDir": str(directory / "ansible-artifacts")},
    }
    _write_private(
        overrides,
        json.dumps(
            {
                "endpoints": endpoints,
                "credentials": credential_files,
                "hypervisors": uris,
                "ansibleHosts": ansible_hosts,
                "settings": settings,
            },
            indent=2,
        ),
    )
    info = LabInfo(
        directory,
        process.pid,
        repo,
        len(bmcs),
        overrides,
        hypervisor_pid,
        len(uris),
        tuple(apiservers),
        ssh.pid if ssh is not None else None,
        len(ansible_hosts),
    )
    _write_private(directory / "lab.json", json.dumps(info.as_json(), indent=2))
    return info


def _spawn(
    arguments: list[str], log: Path, ready: Callable[[str], bool], what: str, started: list[int] | None = None
) -> subprocess.Popen[bytes]:
    """Start `python ARGUMENTS` in its own session (its pid goes into `started`) and wait until
    `ready(log text)`."""
    process = _launch(arguments, log)
    if started is not None:
        started.append(process.pid)
    _await_ready(process, log, ready, what)
    return process


def _launch(arguments: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start `python ARGUMENTS` in its own session, its output going to `log`. With -P, `-m lab.x`
    imports the installed lab, never a directory of the working directory that has its name (such
    as a lab's own state directory, `./lab`)."""
    with open(log, "wb") as output:
        return subprocess.Popen(
            [sys.executable, "-P", *arguments],
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _await_ready(
    process: subprocess.Popen[bytes], log: Path, ready: Callable[[str], bool], what: str
) -> None:
    """Wait until `ready(log text)`; kill the process and raise if it ends or takes too long."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        text = log.read_text(errors="replace")
        if ready(text):
            return
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                process.kill()
            tail = "\n".join(text.splitlines()[-5:])
            raise PermanentError(f"{what} did not start: {tail or 'no output'}", hint=f"see {log}")
        time.sleep(0.05)


def _start_hypervisors(
    directory: Path, names: Sequence[str], vms: Sequence[models.VirtualMachine], started: list[int]
) -> tuple[int, dict[str, str]]:
    """One libvirtd (test driver) per hypervisor, with the pools, networks and base images
    the repo's VirtualMachines name, so that they can be defined there as in production."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    arguments = ["-m", "lab.hypervisors", "serve", "--dir", str(directory)]
    for name in names:
        arguments += ["--hypervisor", name]
    pools = sorted({d.pool for vm in vms for d in vm.spec.disks})
    images = sorted({f"{d.pool}/{d.image}" for vm in vms for d in vm.spec.disks if d.image})
    networks = sorted({n.network for vm in vms for n in vm.spec.networks})
    for pool in pools:
        arguments += ["--pool", pool]
    for network in networks:
        arguments += ["--network", network]
    for image in images:
        arguments += ["--image", image]
    table = directory / "hypervisors.json"
    process = _spawn(
        arguments, directory.parent / "hypervisors.log", lambda _: table.exists(), "libvirtd", started
    )
    document = json.loads(table.read_text())
    return process.pid, {name: str(entry["uri"]) for name, entry in document["hypervisors"].items()}


def _kubernetes_secret(ref: str, fleet: models.Fleet | None) -> models.KubernetesSecretRef | None:
    """The Kubernetes Secret a named credentialsRef is kept in, if the Fleet says so."""
    if fleet is None or ref.startswith(("env:", "file:", "secret:")):
        return None
    source = fleet.spec.credentials.get(ref)
    return source.kubernetesSecret if source is not None else None


def _secret_objects(secret: models.KubernetesSecretRef, value: str) -> list[dict[str, Any]]:
    encoded = base64.b64encode(value.encode()).decode()
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": secret.namespace}},
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": secret.name, "namespace": secret.namespace},
            "type": "Opaque",
            "data": {secret.key or "credential": encoded},
        },
    ]


def _start_apiserver(
    directory: Path,
    cluster: models.Cluster,
    host: str,
    started: list[int],
    extra: Sequence[dict[str, Any]] = (),
) -> tuple[int, str, str, Path]:
    """A Kubernetes API test server for `cluster` (HTTPS, a token of its own, a Node per member,
    and what its batch scheduler would have installed), and a kubeconfig for it.
    Returns (pid, "host:port" of spec.apiServer, where it really listens, kubeconfig path)."""
    from urllib.parse import urlsplit

    name = cluster.metadata.name
    home = directory / name
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    seed: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": member.ref.partition("/")[2],
                "labels": {"kubernetes.io/hostname": member.ref.partition("/")[2]},
            },
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]},
        }
        for member in cluster.spec.members
    ]
    if cluster.spec.scheduler == "yunikorn":
        seed.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "yunikorn"}})
    if cluster.spec.scheduler == "volcano":
        seed.append(_VOLCANO_QUEUE_CRD)
    namespaces = {o["metadata"]["name"] for o in seed if o["kind"] == "Namespace"}
    for obj in extra:  # Secrets the lab serves for credentials, each namespace once
        if obj["kind"] == "Namespace":
            if obj["metadata"]["name"] in namespaces:
                continue
            namespaces.add(obj["metadata"]["name"])
        seed.append(dict(obj))
    _write_private(home / "seed.json", json.dumps(seed))
    token = secrets.token_hex(24)
    _write_private(home / "token", token)
    ready = home / "ready.json"
    process = _spawn(
        [
            "-m",
            "lab.apiserver.server",
            "serve",
            "--host",
            host,
            "--port",
            "6443",
            f"--token={token}",  # one argument even if it began with "-"
            "--self-signed-tls",
            str(home / "tls"),
            "--seed",
            str(home / "seed.json"),
            "--ready-file",
            str(ready),
        ],
        home / "apiserver.log",
        lambda _: ready.exists(),
        f"the API server of cluster {name}",
        started,
    )
    info = json.loads(ready.read_text())
    url = urlsplit(cluster.spec.apiServer)
    written = f"{url.hostname}:{url.port or 443}"
    actual = urlsplit(str(info["url"]))
    kubeconfig = home / "kubeconfig"
    _write_private(
        kubeconfig,
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": name, "cluster": {"server": info["url"], "certificate-authority": info["ca"]}}
                ],
                "users": [{"name": "fleet", "user": {"token": token}}],
                "contexts": [{"name": name, "context": {"cluster": name, "user": "fleet"}}],
                "current-context": name,
            },
            indent=2,
        ),
    )
    return process.pid, written, f"{actual.hostname}:{actual.port}", kubeconfig


def _ssh_table(
    machines: Sequence[models.Machine], vms: Sequence[models.VirtualMachine], first: int, subnet: int
) -> list[dict[str, Any]]:
    """An SSH host for every Machine and VirtualMachine Ansible configures and could reach
    (`spec.config` and `spec.address`), named as in the inventory, on loopback addresses from
    index `first` on."""
    configured: list[models.Machine | models.VirtualMachine] = [*machines, *vms]
    names = ansible_host_names(configured)
    reachable = sorted(names[d.address] for d in configured if d.address in names and d.spec.address)
    return [
        {"name": name, "address": loopback_address(first + index, subnet), "port": SSH_PORT}
        for index, name in enumerate(reachable)
    ]


def _launch_ssh_hosts(directory: Path, table: list[dict[str, Any]]) -> subprocess.Popen[bytes]:
    """Start the process that runs an sshd per entry of `table`; `_await_ssh_hosts` waits for it."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write_private(directory / "hosts.json", json.dumps({"hosts": table}, indent=2))
    arguments = ["-m", "lab.sshd", "serve", "--dir", str(directory)]
    arguments += ["--table", str(directory / "hosts.json"), "--ready-file", str(directory / "ready.json")]
    return _launch(arguments, directory.parent / "ssh.log")


def _await_ssh_hosts(directory: Path, process: subprocess.Popen[bytes]) -> dict[str, dict[str, str]]:
    """Wait until every SSH host answers; returns the Ansible host variables per inventory host."""
    ready = directory / "ready.json"
    _await_ready(process, directory.parent / "ssh.log", lambda _: ready.exists(), "the simulated SSH hosts")
    document = json.loads(ready.read_text())
    return {
        str(name): {str(k): str(v) for k, v in entry["ansibleVars"].items()}
        for name, entry in document["hosts"].items()
    }


# Volcano's Queue CRD, as a cluster with Volcano installed serves it (the schema is left open).
_VOLCANO_QUEUE_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "queues.scheduling.volcano.sh"},
    "spec": {
        "group": "scheduling.volcano.sh",
        "names": {"kind": "Queue", "listKind": "QueueList", "plural": "queues", "singular": "queue"},
        "scope": "Cluster",
        "versions": [
            {
                "name": "v1beta1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
                "subresources": {"status": {}},
            }
        ],
    },
}


def lab_status(directory: Path) -> dict[str, Any]:
    info = read_lab(directory)
    if info is None:
        return {"running": False, "directory": str(directory)}
    return {**info.as_json(), "running": all(process_running(pid) for pid in info.pids)}


def lab_hypervisors(directory: Path) -> dict[str, str]:
    try:
        document = json.loads((lab_overrides_path(directory)).read_text())
        return dict(document.get("hypervisors", {}))
    except (OSError, ValueError):
        return {}


def lab_endpoints(directory: Path) -> dict[str, str]:
    try:
        document = json.loads((lab_overrides_path(directory)).read_text())
        return dict(document.get("endpoints", {}))
    except (OSError, ValueError):
        return {}


def _stop(*pids: int, timeout: float = 15.0) -> None:
    """SIGTERM every process group at once, then SIGKILL what is left after `timeout`."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(process_running(pid) for pid in pids) and time.monotonic() < deadline:
        for pid in pids:
            reap(pid)
        time.sleep(0.05)
    for pid in pids:
        if process_running(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            reap(pid)


def lab_down(directory: Path, timeout: float = 15.0) -> bool:
    """Stop the lab's processes and remove its directory. True if something was running."""
    info = read_lab(directory)
    running = [pid for pid in (info.pids if info is not None else []) if process_running(pid)]
    _stop(*running, timeout=timeout)
    if directory.exists():
        for path in sorted(directory.rglob("*"), reverse=True):
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
            else:
                path.unlink()
        directory.rmdir()
    return bool(running)
