"""Write a synthetic, valid fleet repo of any size and commit it with pygit2.

The repo holds one Fleet (`fleet.yaml`), Machines one file per rack, and
VirtualMachines, Clusters and SparkPools in small multi-document files, all
consistent with each other (racks exist, VM hosts are hypervisors with room,
Cluster members are nodes used once, SparkPool selectors match members). The
output is a pure function of the arguments, so two runs give the same commit.
Files are written from string templates: a YAML library would dominate the run
time at 100,000+ machines.

Use it from the command line (`python bench/gen_fleet.py --out DIR`) or import it
from the repo root (`from bench.gen_fleet import generate, commit_all`).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pygit2
from ruamel.yaml import YAML

SIGNATURE_NAME = "fleet-bench"
SIGNATURE_EMAIL = "bench@example.invalid"
SIGNATURE_TIME = 1_700_000_000  # fixed, so the same arguments give the same commit id

VMS_PER_FILE = 100
SPARK_POOLS_PER_FILE = 50
RACKS_PER_POWER_DOMAIN = 10
CLUSTER_MEMBERS = (24, 48)  # inclusive range of members per Cluster
HYPERVISOR_EVERY = 11  # one machine in this many is a hypervisor

SITES: tuple[tuple[str, str], ...] = (
    ("ams1", "eu-west"),
    ("fra1", "eu-central"),
    ("nyc1", "us-east"),
    ("sjc1", "us-west"),
    ("sin1", "ap-southeast"),
    ("tyo1", "ap-northeast"),
    ("gru1", "sa-east"),
    ("syd1", "ap-south"),
)

NODE_ROLES = ("kubernetes-node", "spark-node")
TEAMS = {
    "hypervisor": "virtualisation",
    "kubernetes-node": "platform",
    "spark-node": "data",
    "storage": "storage",
    "gateway": "network",
    "generic": "infra",
}
ROLE_VARS = {
    "hypervisor": "libvirt_storage_pools: [default, ssd]",
    "kubernetes-node": "kubelet_max_pods: 110",
    "spark-node": "spark_local_dirs: [/data1, /data2, /data3]",
    "storage": "zfs_pool: tank",
    "gateway": "bgp_asn: 65001",
    "generic": "tuned_profile: throughput-performance",
}


@dataclass(frozen=True)
class HardwareClass:
    name: str
    product: str
    cpus: int
    memory_gi: int
    serial_prefix: str


HARDWARE: dict[str, tuple[HardwareClass, ...]] = {
    "hypervisor": (
        HardwareClass("r760-128c-1t", "PowerEdge R760", 128, 1024, "CZ7H"),
        HardwareClass("dl385-192c-1536g", "ProLiant DL385 Gen11", 192, 1536, "MXQ3"),
    ),
    "kubernetes-node": (
        HardwareClass("r660-64c-512g", "PowerEdge R660", 64, 512, "CZ6K"),
        HardwareClass("sr645-96c-768g", "ThinkSystem SR645 V3", 96, 768, "J30A"),
    ),
    "spark-node": (
        HardwareClass("r7625-128c-1t", "PowerEdge R7625", 128, 1024, "CZ7S"),
        HardwareClass("sr665-96c-768g", "ThinkSystem SR665 V3", 96, 768, "J30S"),
    ),
    "storage": (HardwareClass("r760xd2-32c-256g", "PowerEdge R760xd2", 32, 256, "CZ7D"),),
    "gateway": (HardwareClass("r660xs-16c-128g", "PowerEdge R660xs", 16, 128, "CZ6G"),),
    "generic": (HardwareClass("r650-32c-256g", "PowerEdge R650", 32, 256, "CZ65"),),
}

# (app, vcpus, memory in GiB, data disk in GiB or 0)
VM_SHAPES: tuple[tuple[str, int, int, int], ...] = (
    ("ci-runner", 8, 32, 200),
    ("build", 16, 64, 500),
    ("web", 4, 8, 0),
    ("db", 8, 64, 1000),
    ("cache", 4, 32, 0),
    ("bastion", 2, 4, 0),
    ("monitor", 4, 16, 250),
)

SPARK_PURPOSES = ("etl", "ml", "adhoc", "reporting", "streaming", "features")

# Three /10-ish ranges of 10.0.0.0/8 so BMC, OS and guest addresses never collide.
BMC_NET, OS_NET, GUEST_NET = 0, 64, 128
ADDRESSES_PER_NET = 64 * 256 * 250


@dataclass(slots=True)
class _Machine:
    index: int
    name: str
    site: str
    rack: str
    role: str
    hardware: HardwareClass
    cluster: str | None = None
    group: int = 0


@dataclass(slots=True)
class _Cluster:
    name: str
    site: str
    scheduler: str
    members: list[_Machine]
    groups: int = 1


def _ip(net: int, index: int) -> str:
    """The index-th address of a range: host octets 1-250, so no .0 or .255."""
    block, host = divmod(index, 250)
    return f"10.{net + block // 256}.{block % 256}.{host + 1}"


def _memory(gib: int) -> str:
    return f"{gib // 1024}Ti" if gib % 1024 == 0 else f"{gib}Gi"


# --- layout ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rack:
    site: str
    name: str
    power_domain: str


def _plan_racks(machines: int, machines_per_rack: int, sites: int) -> list[_Rack]:
    """Racks numbered per site, sites taking contiguous runs of the global rack list."""
    total = -(-machines // machines_per_rack)
    site_of = [rack * sites // total for rack in range(total)]
    per_site = [site_of.count(s) for s in range(sites)]
    width = max(3, len(str(max(per_site, default=1))))
    racks: list[_Rack] = []
    local = 0
    for rack in range(total):
        local = 1 if rack == 0 or site_of[rack] != site_of[rack - 1] else local + 1
        domain = f"pd-{(local - 1) // RACKS_PER_POWER_DOMAIN + 1:02d}"
        racks.append(_Rack(SITES[site_of[rack]][0], f"r{local:0{width}d}", domain))
    return racks


def _role(index: int) -> str:
    slot = index % HYPERVISOR_EVERY
    if slot == 0:
        return "hypervisor"
    if slot <= 4:
        return "kubernetes-node"
    if slot <= 7:
        return "spark-node"
    if slot <= 9:
        return "storage"
    return "gateway" if (index // HYPERVISOR_EVERY) % 4 == 0 else "generic"


def _plan_machines(
    racks: list[_Rack], machines: int, machines_per_rack: int, rng: random.Random
) -> list[_Machine]:
    width = max(2, len(str(machines_per_rack)))
    planned: list[_Machine] = []
    for index in range(machines):
        rack = racks[index // machines_per_rack]
        slot = index % machines_per_rack + 1
        role = _role(index)
        planned.append(
            _Machine(
                index=index,
                name=f"{rack.site}-{rack.name}-{slot:0{width}d}",
                site=rack.site,
                rack=rack.name,
                role=role,
                hardware=rng.choice(HARDWARE[role]),
            )
        )
    return planned


def _plan_clusters(
    planned: list[_Machine], clusters: int, spark_pools: int, rng: random.Random
) -> list[_Cluster]:
    """Spread each Cluster over its site's racks by taking every m-th node of the site."""
    if clusters == 0:
        return []
    nodes_by_site: dict[str, list[_Machine]] = {}
    for machine in planned:
        if machine.role in NODE_ROLES:
            nodes_by_site.setdefault(machine.site, []).append(machine)
    sites = list(nodes_by_site)
    if not sites:
        raise ValueError("clusters need kubernetes-node or spark-node machines; add machines")
    clusters_in_site = {site: len(range(i, clusters, len(sites))) for i, site in enumerate(sites)}
    width = max(3, len(str(max(clusters_in_site.values()))))
    planned_clusters: list[_Cluster] = []
    for k in range(clusters):
        site = sites[k % len(sites)]
        local = k // len(sites)
        candidates = nodes_by_site[site][local :: clusters_in_site[site]]
        if not candidates:
            raise ValueError(
                f"site {site} has {len(nodes_by_site[site])} cluster nodes for "
                f"{clusters_in_site[site]} clusters; add machines or use fewer clusters"
            )
        members = candidates[: rng.randint(*CLUSTER_MEMBERS)]
        pools_here = len(range(k, spark_pools, clusters))
        cluster = _Cluster(
            name=f"{site}-k8s-{local + 1:0{width}d}",
            site=site,
            scheduler="yunikorn" if k % 3 else "volcano",
            members=members,
            groups=max(1, min(pools_here, len(members))),
        )
        for position, member in enumerate(members):
            member.cluster = cluster.name
            member.group = position % cluster.groups
        planned_clusters.append(cluster)
    return planned_clusters


# --- documents ---------------------------------------------------------------------------


def _fleet_yaml(racks: list[_Rack], sites: int) -> str:
    lines = [
        "apiVersion: fleet/v1alpha1",
        "kind: Fleet",
        "metadata:",
        "  name: bench-fleet",
        "  labels:",
        "    generator: fleet-bench",
        "spec:",
        "  sites:",
    ]
    site_names = [name for name, _ in SITES[:sites]]
    for name, region in SITES[:sites]:
        site_racks = [rack for rack in racks if rack.site == name]
        lines += [f"    - name: {name}", f"      region: {region}", "      powerDomains:"]
        domains = sorted({rack.power_domain for rack in site_racks})
        lines += [f"        - name: {d}\n          description: {name} feed {d}" for d in domains]
        if not domains:
            lines[-1] += " []"
        lines.append("      racks:" if site_racks else "      racks: []")
        lines += [f"        - name: {r.name}\n          powerDomain: {r.power_domain}" for r in site_racks]
    lines.append("  credentials:")
    lines += [f"    bmc-{name}:\n      env: FLEET_BMC_{name.upper()}" for name in site_names]
    lines += [
        "    k8s:",
        "      file: /etc/fleet/kubeconfig",
        "  providers:",
        "    ipmi:",
        "      port: 623",
        "      timeoutSeconds: 10",
        "      minCommandIntervalSeconds: 5",
        "      maxConcurrent: 256",
        "    libvirt:",
        '      uriTemplate: "qemu+ssh://root@{address}/system"',
        "  policies:",
        "    blastRadius:",
        "      maxPowerOffsPerRun: 50",
        "      maxRackPercent: 25",
        "      maxClusterNodePercent: 10",
        "    changeWindows:",
        "      - name: weeknights",
        "        days: [mon, tue, wed, thu]",
        '        start: "01:00"',
        '        end: "05:00"',
        "    enforcement:",
        "      - field: power",
        "        mode: enforce",
        "      - field: config",
        "        mode: observe",
        f"        sites: [{site_names[-1]}]",
        "    drift:",
        "      intervalMinutes: 30",
        "    orphans: report",
        "  rules:",
        "    - name: owner-team",
        "      kinds: [Machine, VirtualMachine]",
        "      message: Every machine and VM carries a team label naming its owner.",
        "      schema:",
        "        type: object",
        "        required: [metadata]",
        "        properties:",
        "          metadata:",
        "            type: object",
        "            required: [labels]",
        "            properties:",
        "              labels:",
        "                type: object",
        "                required: [team]",
        "    - name: executor-cap",
        "      kinds: [SparkPool]",
        "      severity: warning",
        "      message: Ask the data platform team before allowing more than 1000 executors.",
        "      schema:",
        "        properties:",
        "          spec:",
        "            properties:",
        "              spark:",
        "                properties:",
        "                  dynamicAllocation:",
        "                    properties:",
        "                      maxExecutors:",
        "                        maximum: 1000",
        "  spark:",
        "    image: registry.example/spark/spark:3.5.5",
        "  exclude:",
        '    - "playbooks/**"',
        "",
    ]
    return "\n".join(lines)


def _machine_doc(m: _Machine) -> str:
    hw = m.hardware
    cluster_label = f"    cluster: {m.cluster}\n" if m.cluster else ""
    power = "off" if m.index % 997 == 500 else "on"
    return f"""---
apiVersion: fleet/v1alpha1
kind: Machine
metadata:
  name: {m.name}
  labels:
    site: {m.site}
    rack: {m.rack}
    role: {m.role}
    team: {TEAMS[m.role]}
    hardware-class: {hw.name}
{cluster_label}spec:
  site: {m.site}
  rack: {m.rack}
  role: {m.role}
  address: {_ip(OS_NET, m.index)}
  power: "{power}"
  bootDevice: disk
  bmc:
    address: {_ip(BMC_NET, m.index)}
    port: 623
    credentialsRef: bmc-{m.site}
  hardware:
    product: {hw.product}
    serial: "{hw.serial_prefix}{m.index:07X}"
    cpus: {hw.cpus}
    memory: {_memory(hw.memory_gi)}
  config:
    playbooks:
      - playbooks/base.yml
      - playbooks/{m.role}.yml
    vars:
      ntp_servers: [ntp1.{m.site}.example.net, ntp2.{m.site}.example.net]
      kernel_version: "6.1.0-{28 + m.index % 3}"
      {ROLE_VARS[m.role]}
"""


def _vm_doc(index: int, width: int, shape: tuple[str, int, int, int], host: _Machine) -> str:
    app, vcpus, memory, data = shape
    team = "platform" if app in ("ci-runner", "build") else "apps"
    mac = f"{(index >> 16) & 255:02x}:{(index >> 8) & 255:02x}:{index & 255:02x}"
    data_disk = (
        f"""    - name: data
      size: {_memory(data)}
      pool: ssd
"""
        if data
        else ""
    )
    return f"""---
apiVersion: fleet/v1alpha1
kind: VirtualMachine
metadata:
  name: {app}-{index:0{width}d}
  labels:
    app: {app}
    site: {host.site}
    team: {team}
spec:
  host: {host.name}
  vcpus: {vcpus}
  memory: {_memory(memory)}
  disks:
    - name: root
      size: 40Gi
      pool: default
      image: debian-12-genericcloud-amd64.qcow2
{data_disk}  networks:
    - network: br-prod
      mac: "52:54:00:{mac}"
      model: virtio
  power: "on"
  autostart: true
  address: {_ip(GUEST_NET, index)}
  config:
    playbooks:
      - playbooks/base.yml
      - playbooks/vm-{app}.yml
    vars:
      ntp_servers: [ntp1.{host.site}.example.net]
"""


def _cluster_doc(cluster: _Cluster) -> str:
    members = "".join(
        f"""    - ref: machine/{m.name}
      labels:
        topology.kubernetes.io/zone: {m.site}-{m.rack}
        node.kubernetes.io/instance-type: {m.hardware.name}
        fleet.example/node-group: ng{m.group}
"""
        for m in cluster.members
    )
    return f"""---
apiVersion: fleet/v1alpha1
kind: Cluster
metadata:
  name: {cluster.name}
  labels:
    site: {cluster.site}
    team: platform
spec:
  apiServer: https://{cluster.name}.k8s.example.net:6443
  credentialsRef: k8s
  scheduler: {cluster.scheduler}
  members:
{members}  objects:
    - apiVersion: v1
      kind: Namespace
      metadata:
        name: monitoring
        labels:
          team: observability
    - apiVersion: scheduling.k8s.io/v1
      kind: PriorityClass
      metadata:
        name: platform-critical
      value: 100000
      globalDefault: false
      description: System services run by the platform team.
"""


def _spark_pool_doc(index: int, width: int, cluster: _Cluster, group: int) -> str:
    purpose = SPARK_PURPOSES[index % len(SPARK_PURPOSES)]
    name = f"{purpose}-{index:0{width}d}"
    nodes = [m for m in cluster.members if m.group == group]
    cpus = sum(m.hardware.cpus for m in nodes)
    memory = sum(m.hardware.memory_gi for m in nodes)
    # Executors of 4 cores and 16Gi + 1.6Gi overhead, beside a driver of 1 core and 4.4Gi.
    max_executors = max(1, min(1000, (cpus - 1) // 4, int((memory - 4.4) / 17.6)))
    return f"""---
apiVersion: fleet/v1alpha1
kind: SparkPool
metadata:
  name: {name}
  labels:
    purpose: {purpose}
    team: data
spec:
  cluster: {cluster.name}
  namespace: spark-{name}
  queue:
    name: spark-{name}
    guaranteed:
      cpu: {cpus // 4}
      memory: {_memory(memory // 4)}
    max:
      cpu: {cpus}
      memory: {_memory(memory)}
  quota:
    requests.cpu: {cpus}
    requests.memory: {_memory(memory)}
    limits.cpu: {cpus * 2}
    limits.memory: {_memory(memory)}
    pods: 2000
  limits:
    defaultRequest:
      cpu: 1
      memory: 4Gi
    default:
      cpu: 2
      memory: 8Gi
  priorityClass:
    name: spark-{name}
    value: {1000 + index % 9000}
  nodes:
    selector:
      fleet.example/node-group: ng{group}
  serviceAccount: spark-driver
  spark:
    driver:
      cores: 1
      memory: 4Gi
    executor:
      cores: 4
      memory: 16Gi
    dynamicAllocation:
      enabled: true
      minExecutors: 0
      maxExecutors: {max_executors}
      shuffleTracking: true
    defaults:
      spark.sql.shuffle.partitions: "{max_executors * 8}"
      spark.eventLog.dir: s3a://spark-history/{cluster.name}/
"""


def _playbook(role: str) -> str:
    return f"""# Applied by fleet to machines and VMs whose config lists it; excluded from the specs.
- name: {role}
  hosts: all
  become: true
  tasks:
    - name: Ensure chrony is installed
      ansible.builtin.package:
        name: chrony
        state: present
"""


README = """# Synthetic fleet repo

Written by `bench/gen_fleet.py` for benchmarks: {machines} machines in {racks} racks
over {sites} sites, {vms} virtual machines, {clusters} clusters and {pools} Spark pools.
Every name, address and serial number is made up.
"""


# --- writing -----------------------------------------------------------------------------


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)


def _place_vms(vms: int, hypervisors: list[_Machine], rng: random.Random) -> list[tuple[int, _Machine]]:
    """Pick a shape and a host for each VM, never beyond a host's CPUs or memory."""
    if vms and not hypervisors:
        raise ValueError("virtual machines need hypervisors; add machines")
    free_cpus = [h.hardware.cpus for h in hypervisors]
    free_memory = [h.hardware.memory_gi for h in hypervisors]
    placed: list[tuple[int, _Machine]] = []
    for index in range(vms):
        shape = rng.randrange(len(VM_SHAPES))
        _, vcpus, memory, _ = VM_SHAPES[shape]
        for step in range(len(hypervisors)):
            host = (index + step) % len(hypervisors)
            if free_cpus[host] >= vcpus and free_memory[host] >= memory:
                free_cpus[host] -= vcpus
                free_memory[host] -= memory
                placed.append((shape, hypervisors[host]))
                break
        else:
            raise ValueError(f"no hypervisor has room for VM {index}; add machines or use fewer VMs")
    return placed


def generate(
    out: Path,
    machines: int = 110_000,
    vms: int = 10_000,
    clusters: int = 500,
    spark_pools: int = 2_000,
    machines_per_rack: int = 40,
    seed: int = 1,
    sites: int = 4,
) -> None:
    """Write a fleet repo into `out` (which must be missing or empty) and commit it on `main`."""
    if machines < 1 or machines_per_rack < 1 or min(vms, clusters, spark_pools) < 0:
        raise ValueError("machines and machines-per-rack must be positive, the other counts not negative")
    if not 1 <= sites <= len(SITES):
        raise ValueError(f"sites must be between 1 and {len(SITES)}")
    if max(machines, vms) > ADDRESSES_PER_NET:
        raise ValueError(f"at most {ADDRESSES_PER_NET} machines and VMs fit the address plan")
    if spark_pools and not clusters:
        raise ValueError("spark pools need clusters")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty")

    rng = random.Random(seed)
    racks = _plan_racks(machines, machines_per_rack, sites)
    planned = _plan_machines(racks, machines, machines_per_rack, rng)
    planned_clusters = _plan_clusters(planned, clusters, spark_pools, rng)
    placements = _place_vms(vms, [m for m in planned if m.role == "hypervisor"], rng)

    out.mkdir(parents=True, exist_ok=True)
    _write(out / "fleet.yaml", _fleet_yaml(racks, sites))
    _write(
        out / "README.md",
        README.format(
            machines=machines, racks=len(racks), sites=sites, vms=vms, clusters=clusters, pools=spark_pools
        ),
    )
    for role in (*TEAMS, "base", *(f"vm-{app}" for app, *_ in VM_SHAPES)):
        _write(out / "playbooks" / f"{role}.yml", _playbook(role))

    for start in range(0, machines, machines_per_rack):
        rack_machines = planned[start : start + machines_per_rack]
        first = rack_machines[0]
        _write(
            out / "machines" / first.site / f"{first.rack}.yaml",
            "".join(_machine_doc(m) for m in rack_machines),
        )

    vm_width = max(5, len(str(vms)))
    for number, start in enumerate(range(0, vms, VMS_PER_FILE), 1):
        vm_docs = (
            _vm_doc(index, vm_width, VM_SHAPES[shape], host)
            for index, (shape, host) in enumerate(placements[start : start + VMS_PER_FILE], start)
        )
        _write(out / "virtual-machines" / f"vms-{number:04d}.yaml", "".join(vm_docs))

    for number, cluster in enumerate(planned_clusters, 1):
        _write(out / "clusters" / f"cluster-{number:04d}.yaml", _cluster_doc(cluster))

    pool_width = max(4, len(str(spark_pools)))
    for number, start in enumerate(range(0, spark_pools, SPARK_POOLS_PER_FILE), 1):
        pool_docs: list[str] = []
        for index in range(start, min(start + SPARK_POOLS_PER_FILE, spark_pools)):
            cluster = planned_clusters[index % clusters]
            group = (index // clusters) % cluster.groups
            pool_docs.append(_spark_pool_doc(index, pool_width, cluster, group))
        _write(out / "spark-pools" / f"pools-{number:04d}.yaml", "".join(pool_docs))

    pygit2.init_repository(str(out), initial_head="main")
    commit_all(
        out,
        f"Synthetic fleet: {machines} machines, {vms} VMs, {clusters} clusters, {spark_pools} Spark pools",
    )


def without_change_windows(repo_dir: Path) -> None:
    """Remove the generated fleet.yaml's change windows, so that what a benchmark measures does not
    depend on the time of day it runs at."""
    yaml = YAML()
    target = repo_dir / "fleet.yaml"
    document = yaml.load(target.read_text())
    document["spec"]["policies"]["changeWindows"] = []
    with target.open("w") as handle:
        yaml.dump(document, handle)


def commit_all(repo_dir: Path, message: str) -> str:
    """Stage every file of the work tree and commit it on HEAD; return the commit id."""
    repo = pygit2.Repository(str(repo_dir))
    index = repo.index
    index.add_all()
    index.write()
    tree = index.write_tree()
    signature = pygit2.Signature(SIGNATURE_NAME, SIGNATURE_EMAIL, SIGNATURE_TIME, 0)
    parents = [] if repo.head_is_unborn else [repo.head.target]
    return str(repo.create_commit("HEAD", signature, signature, message, tree, parents))


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True, help="directory to create (missing or empty)")
    parser.add_argument("--machines", type=int, default=110_000)
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--clusters", type=int, default=500)
    parser.add_argument("--spark-pools", type=int, default=2_000)
    parser.add_argument("--machines-per-rack", type=int, default=40)
    parser.add_argument("--sites", type=int, default=4, help=f"1-{len(SITES)}; default 4")
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    started = time.perf_counter()
    try:
        generate(
            args.out,
            machines=args.machines,
            vms=args.vms,
            clusters=args.clusters,
            spark_pools=args.spark_pools,
            machines_per_rack=args.machines_per_rack,
            seed=args.seed,
            sites=args.sites,
        )
    except (ValueError, FileExistsError) as exc:
        print(f"gen_fleet: {exc}", file=sys.stderr)
        return 2
    print(f"wrote and committed {args.out} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
