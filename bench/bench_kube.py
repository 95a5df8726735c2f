"""Benchmark: a no-op reconcile of 2,000 SparkPools (about 16,000 Kubernetes objects) with fleet's
Kubernetes provider, and `kubectl apply --server-side` of the same objects, against one API server.

The server is fleet's Kubernetes API test server (lab/apiserver/server.py) in its own
process, started as `python -m lab.apiserver.server serve --self-signed-tls DIR
--seed FILE --ready-file PATH`: HTTPS with a certificate made for 127.0.0.1, seeded with the
`yunikorn` Namespace and a Ready Node for every member of the Cluster. Fleet and kubectl share one
kubeconfig that trusts that certificate (`certificate-authority`, no insecure-skip-tls-verify);
fleet reaches the server through an endpoint map and a credential source, as `fleet lab`
does. Request counts come from the server's `GET /debug/fleet/stats` (an endpoint of the test
server only, admin token), read before and after each step.

Built in memory (`model_validate`): a Fleet, one Cluster (scheduler yunikorn) of --members
Machines in node groups, and --pools SparkPools, each with a queue, quota, limits, a
PriorityClass and a node selector matching one node group. A pool renders 8 objects (Namespace,
PriorityClass, ServiceAccount, Role, RoleBinding, ResourceQuota, LimitRange, ConfigMap), the
Cluster 3 (two cluster-wide objects and the yunikorn-configs ConfigMap with every pool's queue),
and every pool labels and taints the Nodes of its group (pools sharing a group share its taint,
`fleet.example/node-group=<group>:NoSchedule`: a Node holds one taint per key and effect, so
the default `dedicated=<pool>:NoSchedule` of two pools on one Node would replace each other).

1. steady state: KubernetesProvider applies the Cluster, then every pool (--processes worker
   processes, --threads pools at a time in each); seconds and objects.
2. fleet's no-op reconcile, measured: fresh providers observe all pools and the Cluster (one
   server-side-apply dry run per object), then apply any address the observation shows out of
   sync (none expected); seconds, requests, and writes (write requests that were not dry runs:
   printed as "writes: 0", with a WARNING line if it is not 0) and changes the server stored.
3. kubectl: the same rendered objects in one multi-document YAML file,
   `kubectl apply --server-side --field-manager=fleet --force-conflicts -f FILE`, a no-op too
   (same manager, same fields, so the server stores nothing, though each object is one real
   apply PATCH, counted as a write); seconds, requests, writes, stored changes.

Then the figures side by side and the ratio of kubectl's seconds to fleet's. CPU seconds of the
server process are shown per step: client and server share the machine's cores. Figures are
printed, never asserted.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import resource
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from providers.access import Access, EndpointMap
from providers.base import Action, ApplyResult, Change, Endpoint, ObservationState, RevisionInputs
from providers.credentials import Credentials
from providers.kubernetes.provider import KubernetesProvider
from providers.kubernetes.render import render_cluster, render_spark_pool, yaml_text
from reconciler.errors import TemporaryError
from reconciler.kinds.kubernetes import converged_kube_fields
from reconciler.spec import models

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-admin-token-4c1e"
CLUSTER = "k8s-bench"
API_HOST, API_PORT = "k8s-bench.example.net", 6443
CREDENTIALS = "kubeconfig-k8s-bench"
GROUP_LABEL = "fleet.example/node-group"
RACKS = 4
APPLY_ATTEMPTS = 3

Obj = dict[str, Any]


# --- the specs ---------------------------------------------------------------------------


def _fleet() -> models.Fleet:
    return models.Fleet.model_validate(
        {
            "apiVersion": "fleet/v1alpha1",
            "kind": "Fleet",
            "metadata": {"name": "bench"},
            "spec": {
                "sites": [{"name": "lab", "racks": [{"name": f"r{i:02d}"} for i in range(RACKS)]}],
                "credentials": {
                    "bmc": {"env": "BENCH_BMC"},
                    CREDENTIALS: {"file": "/etc/fleet/kubeconfig-k8s-bench"},
                },
            },
        }
    )


def _machine(index: int) -> models.Machine:
    return models.Machine.model_validate(
        {
            "apiVersion": "fleet/v1alpha1",
            "kind": "Machine",
            "metadata": {"name": f"node-{index:03d}"},
            "spec": {
                "site": "lab",
                "rack": f"r{index % RACKS:02d}",
                "role": "spark-node",
                "bmc": {"address": f"10.0.{index // 250}.{1 + index % 250}", "credentialsRef": "bmc"},
            },
        }
    )


def _cluster(machines: list[models.Machine], groups: int) -> models.Cluster:
    members = [
        {
            "ref": f"machine/{machine.metadata.name}",
            "labels": {
                "topology.kubernetes.io/zone": f"lab-{machine.spec.rack}",
                GROUP_LABEL: f"ng{index % groups:03d}",
            },
        }
        for index, machine in enumerate(machines)
    ]
    return models.Cluster.model_validate(
        {
            "apiVersion": "fleet/v1alpha1",
            "kind": "Cluster",
            "metadata": {"name": CLUSTER},
            "spec": {
                "apiServer": f"https://{API_HOST}:{API_PORT}",
                "credentialsRef": CREDENTIALS,
                "scheduler": "yunikorn",
                "members": members,
                "objects": [
                    {
                        "apiVersion": "v1",
                        "kind": "Namespace",
                        "metadata": {"name": "monitoring", "labels": {"team": "observability"}},
                    },
                    {
                        "apiVersion": "scheduling.k8s.io/v1",
                        "kind": "PriorityClass",
                        "metadata": {"name": "platform-critical"},
                        "value": 100000,
                        "globalDefault": False,
                        "description": "System services run by the platform team.",
                    },
                ],
            },
        }
    )


def _pool(index: int, groups: int) -> models.SparkPool:
    name, group = f"pool-{index:04d}", f"ng{index % groups:03d}"
    return models.SparkPool.model_validate(
        {
            "apiVersion": "fleet/v1alpha1",
            "kind": "SparkPool",
            "metadata": {"name": name, "labels": {"team": "data"}},
            "spec": {
                "cluster": CLUSTER,
                "namespace": f"spark-{name}",
                "queue": {
                    "name": name,
                    "guaranteed": {"cpu": 16, "memory": "64Gi"},
                    "max": {"cpu": 64, "memory": "256Gi"},
                },
                "quota": {
                    "requests.cpu": 64,
                    "requests.memory": "256Gi",
                    "limits.memory": "256Gi",
                    "pods": 500,
                },
                "limits": {
                    "defaultRequest": {"cpu": "500m", "memory": "1Gi"},
                    "default": {"cpu": 2, "memory": "4Gi"},
                },
                "priorityClass": {"name": f"spark-{name}", "value": 1000 + index},
                # Pools sharing a node group share its taint: a Node holds one taint per
                # key:effect, so their default taints (dedicated=<pool>) would replace each other.
                "nodes": {
                    "selector": {GROUP_LABEL: group},
                    "taint": {"key": GROUP_LABEL, "value": group, "effect": "NoSchedule"},
                },
                "spark": {
                    "executor": {"cores": 4, "memory": "16Gi"},
                    "dynamicAllocation": {"maxExecutors": 40},
                    "defaults": {"spark.sql.shuffle.partitions": "320"},
                },
            },
        }
    )


def _seed(machines: list[models.Machine]) -> list[Obj]:
    nodes = [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": machine.metadata.name,
                "labels": {"kubernetes.io/hostname": machine.metadata.name, "kubernetes.io/os": "linux"},
            },
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                "nodeInfo": {"kubeletVersion": "v1.32.0"},
            },
        }
        for machine in machines
    ]
    return [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "yunikorn"}}, *nodes]


# --- the server --------------------------------------------------------------------------


def _start_server(workdir: Path, seed: list[Obj]) -> tuple[subprocess.Popen[bytes], Obj]:
    seed_file, ready_file = workdir / "seed.json", workdir / "ready.json"
    seed_file.write_text(json.dumps(seed))
    log = open(workdir / "apiserver.log", "wb")  # noqa: SIM115 - lives as long as the server
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "lab.apiserver.server", "serve", "--token", TOKEN),
            *("--self-signed-tls", str(workdir / "tls"), "--seed", str(seed_file)),
            *("--ready-file", str(ready_file)),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    deadline = time.monotonic() + 60
    while not ready_file.exists():
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise SystemExit(f"the API server did not start:\n{(workdir / 'apiserver.log').read_text()}")
        time.sleep(0.05)
    ready: Obj = json.loads(ready_file.read_text())
    return server, ready


class StatsReader:
    """GET /debug/fleet/stats of the test server, verifying its certificate."""

    def __init__(self, url: str, ca: str) -> None:
        host, port = url.removeprefix("https://").rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.context = ssl.create_default_context(cafile=ca)

    def read(self) -> Obj:
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=30)
        try:
            conn.request("GET", "/debug/fleet/stats", headers={"Authorization": f"Bearer {TOKEN}"})
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if response.status != 200:
            raise SystemExit(f"GET /debug/fleet/stats answered {response.status}: {body[:200]!r}")
        stats: Obj = json.loads(body)
        return stats


def _delta(after: Obj, before: Obj) -> Obj:
    out: Obj = {
        key: after[key] - before[key] for key in ("requests", "writes", "dry_run_writes", "stored_changes")
    }
    verbs = {
        verb: after["by_verb"].get(verb, 0) - before["by_verb"].get(verb, 0) for verb in after["by_verb"]
    }
    out["by_verb"] = {verb: n for verb, n in sorted(verbs.items(), key=lambda kv: -kv[1]) if n}
    return out


def _cpu_seconds(pid: int) -> float:
    """User+system CPU time of a running process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu(who: tuple[int, ...]) -> float:
    """CPU of this process (RUSAGE_SELF) and/or of its children that ended (RUSAGE_CHILDREN)."""
    usages = [resource.getrusage(w) for w in who]
    return sum(u.ru_utime + u.ru_stime for u in usages)


class Step:
    """Seconds, the server's request counters and CPU of both sides over one step."""

    def __init__(self, stats: StatsReader, server_pid: int, *client: int) -> None:
        self.stats, self.server_pid, self.client = stats, server_pid, client

    def __enter__(self) -> Step:
        self.before = self.stats.read()
        self.server_cpu = _cpu_seconds(self.server_pid)
        self.client_cpu = _own_cpu(self.client)
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self.started
        self.client_cpu = _own_cpu(self.client) - self.client_cpu
        self.server_cpu = _cpu_seconds(self.server_pid) - self.server_cpu
        self.counts = _delta(self.stats.read(), self.before)

    def line(self) -> str:
        c = self.counts
        verbs = ", ".join(f"{verb} {n:,}" for verb, n in c["by_verb"].items())
        return (
            f"{self.seconds:.1f} s, {c['requests']:,} requests ({verbs}); "
            f"CPU: client {self.client_cpu:.1f} s, server {self.server_cpu:.1f} s"
        )


# --- the steps ---------------------------------------------------------------------------


def _apply(
    provider: KubernetesProvider,
    spec: models.Cluster | models.SparkPool,
    action: Action,
    inputs: RevisionInputs,
) -> ApplyResult:
    for attempt in range(APPLY_ATTEMPTS):
        try:
            return provider.apply(Change(spec.address, action, spec), inputs)
        except TemporaryError as exc:
            if attempt == APPLY_ATTEMPTS - 1:
                return ApplyResult(
                    spec.address, action, False, False, f"{exc} (after {APPLY_ATTEMPTS} attempts)"
                )
            time.sleep(exc.delay or 0.5)
    raise AssertionError("unreachable")


def _in_parallel(work: Callable[[Any], ApplyResult], items: list[Any], threads: int) -> list[ApplyResult]:
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bench-apply") as pool:
        return list(pool.map(work, items))


# What the steady state's worker processes work on: inherited through fork, not pickled.
_WORKER: dict[str, Any] = {}


def _apply_slice(bounds: tuple[int, int]) -> list[tuple[str, bool, str]]:
    """In a worker process: apply pools[start:stop] with a provider of its own."""
    access, inputs = _WORKER["access"], _WORKER["inputs"]
    pools, threads = _WORKER["pools"], _WORKER["threads"]
    with KubernetesProvider(access, "SparkPool") as provider:
        results = _in_parallel(
            lambda pool: _apply(provider, pool, Action.CREATE, inputs), pools[bounds[0] : bounds[1]], threads
        )
    return [(r.address, r.ok, r.message) for r in results]


def _steady_state(
    access: Access,
    inputs: RevisionInputs,
    cluster: models.Cluster,
    pools: list[models.SparkPool],
    processes: int,
    threads: int,
) -> list[tuple[str, bool, str]]:
    """The Cluster, then every pool, in `processes` worker processes of `threads` threads each:
    the provider is bound by the client's CPU (one Python process uses one core)."""
    _WORKER.update(access=access, inputs=inputs, pools=pools, threads=threads)
    slices = processes * 4
    bounds = [(len(pools) * i // slices, len(pools) * (i + 1) // slices) for i in range(slices)]
    # Fork the workers before this process has threads of its own.
    with multiprocessing.get_context("fork").Pool(processes) as workers:
        with KubernetesProvider(access, "Cluster") as provider:
            result = _apply(provider, cluster, Action.CREATE, inputs)
        results = [(result.address, result.ok, result.message)]
        for part in workers.imap(_apply_slice, bounds):
            results += part
        workers.close()
        workers.join()
    return results


def _reconcile(
    access: Access, inputs: RevisionInputs, cluster: models.Cluster, pools: list[models.SparkPool]
) -> tuple[int, list[str]]:
    """Observe everything with fresh providers, apply what is not in sync: (addresses applied, notes)."""
    specs: dict[str, models.Cluster | models.SparkPool] = {p.address: p for p in pools}
    specs[cluster.address] = cluster
    notes: list[str] = []
    with (
        KubernetesProvider(access, "SparkPool") as pool_provider,
        KubernetesProvider(access, "Cluster") as cluster_provider,
    ):
        observations = [
            *pool_provider.observe(pools, inputs).observations,
            *cluster_provider.observe([cluster], inputs).observations,
        ]
        todo = []
        for observation in observations:
            if observation.state is ObservationState.UNKNOWN:
                notes.append(f"{observation.address} unknown: {observation.detail}")
            elif observation.state is ObservationState.ABSENT or not converged_kube_fields(
                observation.fields
            ):
                todo.append(specs[observation.address])
        for spec in todo:
            provider = cluster_provider if isinstance(spec, models.Cluster) else pool_provider
            result = _apply(provider, spec, Action.UPDATE, inputs)
            notes.append(f"{spec.address} was not in sync; apply: {result.message}")
    return len(todo), notes


def _kubectl_config(path: Path, url: str, ca: str) -> None:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": CLUSTER, "cluster": {"server": url, "certificate-authority": ca}}],
                "users": [{"name": "bench-admin", "user": {"token": TOKEN}}],
                "contexts": [{"name": CLUSTER, "context": {"cluster": CLUSTER, "user": "bench-admin"}}],
                "current-context": CLUSTER,
            },
            indent=2,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pools", type=int, default=2000)
    parser.add_argument("--members", type=int, default=40)
    parser.add_argument(
        "--processes", type=int, default=2, help="worker processes applying pools for the steady state"
    )
    parser.add_argument("--threads", type=int, default=4, help="pools applied at a time by each of them")
    parser.add_argument("--kubectl", default=shutil.which("kubectl") or "kubectl")
    args = parser.parse_args()
    if args.pools < 1 or args.members < 1:
        parser.error("--pools and --members are at least 1")
    if shutil.which(args.kubectl) is None:
        parser.error(
            f"no kubectl at {args.kubectl!r}: it is the client fleet is compared with (--kubectl PATH)"
        )

    started = time.monotonic()
    groups = min(args.pools, args.members)
    machines = [_machine(i) for i in range(args.members)]
    cluster = _cluster(machines, groups)
    pools = [_pool(i, groups) for i in range(args.pools)]
    rendered = [obj for pool in pools for obj in render_spark_pool(pool, cluster, pools)]
    rendered += render_cluster(cluster, pools)
    print(
        f"specs: 1 Cluster ({args.members} members, {groups} node groups, yunikorn),"
        f" {args.pools:,} SparkPools -> {len(rendered):,} objects,"
        f" built and rendered in {time.monotonic() - started:.1f} s; cores: {os.cpu_count()}"
    )

    with tempfile.TemporaryDirectory(prefix="fleet-bench-kube-") as scratch:
        workdir = Path(scratch)
        server, ready = _start_server(workdir, _seed(machines))
        try:
            url, ca = str(ready["url"]), str(ready["ca"])
            print(f"API server (test server, pid {server.pid}) at {url}, CA {Path(ca).name}")
            kubeconfig = workdir / "kubeconfig"
            _kubectl_config(kubeconfig, url, ca)
            access = Access(
                EndpointMap({f"{API_HOST}:{API_PORT}": Endpoint("127.0.0.1", int(url.rsplit(":", 1)[1]))}),
                Credentials(sources={CREDENTIALS: models.CredentialSource(file=str(kubeconfig))}),
            )
            inputs = RevisionInputs.of(_fleet(), [cluster, *machines, *pools])
            stats = StatsReader(url, ca)

            # 1. the steady state
            with Step(stats, server.pid, resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN) as steady:
                results = _steady_state(access, inputs, cluster, pools, args.processes, args.threads)
            failed = [(address, message) for address, ok, message in results if not ok]
            if failed:
                raise SystemExit(f"{len(failed)} applies failed, e.g. {failed[0][0]}: {failed[0][1]}")
            print(
                f"1. steady state: {len(results):,} addresses applied ({len(rendered):,} objects,"
                f" {steady.counts['stored_changes']:,} stored changes) in {steady.line()}"
            )

            # 2. fleet's no-op reconcile
            with Step(stats, server.pid, resource.RUSAGE_SELF) as fleet:
                applied, notes = _reconcile(access, inputs, cluster, pools)
            fleet_writes = fleet.counts["writes"]
            print(
                f"2. fleet no-op reconcile (observe {args.pools + 1:,} addresses, apply {applied}):"
                f" {fleet.line()}"
            )
            print(f"   writes: {fleet_writes}, stored changes: {fleet.counts['stored_changes']}")
            if fleet_writes or fleet.counts["stored_changes"] or applied or notes:
                print(
                    f"   WARNING: the no-op reconcile was not a no-op: {fleet_writes} writes,"
                    f" {fleet.counts['stored_changes']} stored changes, {applied} addresses applied"
                )
                for note in notes[:10]:
                    print(f"   WARNING: {note}")

            # 3. kubectl over the same objects
            manifest = workdir / "objects.yaml"
            manifest.write_text("".join("---\n" + yaml_text(obj) for obj in rendered))
            command = [
                args.kubectl,
                *("--kubeconfig", str(kubeconfig), "--cache-dir", str(workdir / "kubectl-cache")),
                *(
                    "apply",
                    "--server-side",
                    "--field-manager=fleet",
                    "--force-conflicts",
                    "-f",
                    str(manifest),
                ),
            ]
            with Step(stats, server.pid, resource.RUSAGE_CHILDREN) as kubectl:
                done = subprocess.run(
                    command, capture_output=True, text=True, env={**os.environ, "KUBECONFIG": ""}, check=False
                )
            lines = done.stdout.splitlines()
            print(
                f"3. kubectl apply --server-side ({manifest.stat().st_size / 1e6:.1f} MB YAML,"
                f" {len(lines):,} objects reported): {kubectl.line()}"
            )
            print(
                f"   writes: {kubectl.counts['writes']:,}, stored changes: {kubectl.counts['stored_changes']}"
            )
            if done.returncode != 0:
                print(f"   WARNING: kubectl exited {done.returncode}: {done.stderr.strip()[-500:]}")
            throttled = done.stderr.count("client-side throttling")
            if throttled:
                print(f"   note: kubectl waited for its client-side rate limiter {throttled} times")
        finally:
            server.terminate()
            server.wait(timeout=30)

    print()
    print(f"objects:  {len(rendered):,} ({args.pools:,} SparkPools, 1 Cluster, {args.members} Nodes)")
    for name, step in (("fleet", fleet), ("kubectl", kubectl)):
        c = step.counts
        print(
            f"{name:8s}  {step.seconds:7.1f} s  {c['requests']:7,} requests  writes: {c['writes']:,}"
            f"  (dry-run writes {c['dry_run_writes']:,}, stored changes {c['stored_changes']:,})"
        )
    print(f"ratio kubectl/fleet seconds: {kubectl.seconds / fleet.seconds:.2f}x")


if __name__ == "__main__":
    main()
