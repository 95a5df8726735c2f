"""Cross-document checks: names, references, sites and racks, shared BMCs, capacity.

Runs over the compact `Facts` of every valid document, so a one-file change
re-checks the whole repo without re-parsing it. Every problem is reported, each
on the document and field that should change.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from reconciler.spec import models
from reconciler.spec.diagnostics import Diagnostic, closest, error, warning
from reconciler.spec.quantity import quantity_value
from reconciler.spec.results import FLEET_FILE, Facts


def _suggest(name: str, candidates: Iterable[str]) -> str:
    close = closest(name, candidates)
    return f"did you mean {close!r}?" if close is not None else ""


def _hint(base: str, name: str, candidates: Iterable[str]) -> str:
    suggestion = _suggest(name, candidates)
    return f"{suggestion} {base}".strip() if suggestion else base


def _endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _queue_problem(queue: str, cluster: tuple[object, ...] | None, other_pool: str | None) -> str | None:
    """Two pools cannot share a queue, and a queue cannot be where the Cluster's YuniKorn
    fallback puts namespaces (`root.namespaces`, a parent queue)."""
    if other_pool is not None:
        return f"queue {queue!r} is already the queue of pool {other_pool!r} in this cluster"
    fallback = cluster is not None and cluster[2] == "yunikorn" and cluster[3] == "namespace"
    if fallback and queue.split(".")[0] == "namespaces":
        return (
            f"queue {queue!r} is under root.namespaces, where the Cluster's YuniKorn fallback"
            " puts a queue per namespace"
        )
    return None


def check_references(
    fleet: models.Fleet | None, fleet_path: str | None, files: Sequence[tuple[str, Sequence[Facts]]]
) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    by_kind: dict[str, dict[str, tuple[str, Facts]]] = defaultdict(dict)

    def address(kind: str, name: str) -> str:
        return f"{kind.lower()}/{name}"

    fleet_documents: list[tuple[str, Facts]] = []
    for path, facts in sorted(files, key=lambda item: item[0]):
        for fact in facts:
            kind, name, index = fact[0], fact[1], fact[2]
            if kind == "Fleet":
                fleet_documents.append((path, fact))
                continue
            seen = by_kind[kind].get(name)
            if seen is not None:
                out.append(
                    error(
                        "duplicate-name",
                        f"{kind} {name!r} is already defined in {seen[0]}",
                        path,
                        address=address(kind, name),
                        doc_index=index,
                        field_path=("metadata", "name"),
                        hint="names are unique per kind; rename one of them",
                    )
                )
            else:
                by_kind[kind][name] = (path, fact)

    for path, fact in fleet_documents:
        if path != FLEET_FILE:
            out.append(
                error(
                    "fleet-misplaced",
                    "a Fleet document may only live in fleet.yaml at the repo root",
                    path,
                    address=address("Fleet", fact[1]),
                    doc_index=fact[2],
                    hint="move it to fleet.yaml, or remove it",
                )
            )
    root_fleets = [f for p, f in fleet_documents if p == FLEET_FILE]
    if len(root_fleets) > 1:
        for fact in root_fleets[1:]:
            out.append(
                error(
                    "fleet-duplicate",
                    "fleet.yaml holds more than one Fleet document",
                    FLEET_FILE,
                    doc_index=fact[2],
                    hint="keep exactly one Fleet document",
                )
            )
    if fleet_path is not None and not root_fleets:
        out.append(
            error(
                "fleet-missing",
                "fleet.yaml holds no Fleet document",
                FLEET_FILE,
                line=1,
                col=1,
                hint="put the Fleet document of the repo in fleet.yaml (see fleet-repo-example/fleet.yaml)",
            )
        )
    for path, facts in files:
        if path == FLEET_FILE:
            for fact in facts:
                if fact[0] != "Fleet":
                    out.append(
                        error(
                            "fleet-extra-document",
                            f"fleet.yaml holds a {fact[0]}; it may hold only the Fleet document",
                            FLEET_FILE,
                            address=address(fact[0], fact[1]),
                            doc_index=fact[2],
                            hint="move the document to a file of its own",
                        )
                    )
    if fleet is None and fleet_path is None:
        out.append(
            error(
                "fleet-missing",
                "the repo has no fleet.yaml at its root",
                FLEET_FILE,
                line=1,
                col=1,
                hint="create fleet.yaml with one Fleet document (see fleet-repo-example/fleet.yaml)",
            )
        )

    sites: dict[str, set[str]] = {}
    credentials: set[str] = set()
    if fleet is not None:
        sites = {s.name: {r.name for r in s.racks} for s in fleet.spec.sites}
        credentials = set(fleet.spec.credentials)

    def check_credential(path: str, fact: Facts, name: str | None, field: tuple[str | int, ...]) -> None:
        if name is not None and fleet is not None and name not in credentials:
            out.append(
                error(
                    "unknown-credential",
                    f"credentialsRef {name!r} is not defined in fleet.yaml",
                    path,
                    address=address(fact[0], fact[1]),
                    doc_index=fact[2],
                    field_path=field,
                    hint=_hint("add it under spec.credentials in fleet.yaml", name, credentials),
                )
            )

    def check_config_credentials(path: str, fact: Facts, secrets: Sequence[tuple[str, str]]) -> None:
        for variable, credential in secrets:
            check_credential(path, fact, credential, ("spec", "config", "vars", variable, "credentialsRef"))

    machines = by_kind["Machine"]
    bmcs: dict[tuple[str, int], str] = {}
    for name, (path, fact) in sorted(machines.items()):
        if fact[4] is None:
            continue
        site, rack, _role, bmc_address, bmc_port, credential, _cpus, _memory, secrets = fact[4]
        here = address("Machine", name)
        check_config_credentials(path, fact, secrets)
        if fleet is not None:
            if site not in sites:
                out.append(
                    error(
                        "unknown-site",
                        f"site {site!r} is not defined in fleet.yaml",
                        path,
                        address=here,
                        doc_index=fact[2],
                        field_path=("spec", "site"),
                        hint=_hint("add it under spec.sites in fleet.yaml", site, sites),
                    )
                )
            elif rack not in sites[site]:
                out.append(
                    error(
                        "unknown-rack",
                        f"rack {rack!r} is not defined in site {site!r}",
                        path,
                        address=here,
                        doc_index=fact[2],
                        field_path=("spec", "rack"),
                        hint=_hint(
                            f"add it under the racks of site {site!r} in fleet.yaml", rack, sites[site]
                        ),
                    )
                )
        key = (bmc_address, bmc_port)
        if key in bmcs:
            out.append(
                error(
                    "bmc-conflict",
                    f"BMC {_endpoint(bmc_address, bmc_port)} is also the BMC of machine {bmcs[key]!r}",
                    path,
                    address=here,
                    doc_index=fact[2],
                    field_path=("spec", "bmc", "address"),
                    hint="each Machine has its own BMC; fix the address or the port",
                )
            )
        else:
            bmcs[key] = name
        check_credential(path, fact, credential, ("spec", "bmc", "credentialsRef"))

    vms = by_kind["VirtualMachine"]
    hypervisors = [n for n, (_, f) in machines.items() if f[4] is not None and f[4][2] == "hypervisor"]
    load: dict[str, list[tuple[str, Facts]]] = defaultdict(list)
    for name, (path, fact) in sorted(vms.items()):
        if fact[4] is None:
            continue
        host = fact[4][0]
        here = address("VirtualMachine", name)
        check_config_credentials(path, fact, fact[4][4])
        if host not in machines:
            out.append(
                error(
                    "unresolved-reference",
                    f"host {host!r} is not a Machine of this repo",
                    path,
                    address=here,
                    doc_index=fact[2],
                    field_path=("spec", "host"),
                    hint=_hint("name a Machine whose role is hypervisor", host, hypervisors),
                )
            )
            continue
        host_detail = machines[host][1][4]
        if host_detail is None:
            continue
        role = host_detail[2]
        if role != "hypervisor":
            out.append(
                error(
                    "host-not-hypervisor",
                    f"host {host!r} has role {role!r}, not hypervisor",
                    path,
                    address=here,
                    doc_index=fact[2],
                    field_path=("spec", "host"),
                    hint="move the VM to a hypervisor, or set the Machine's role to hypervisor",
                )
            )
            continue
        load[host].append((path, fact))
    for host, guests in sorted(load.items()):
        host_detail = machines[host][1][4]
        assert host_detail is not None
        cpus, memory = host_detail[6], host_detail[7]
        want_cpus = sum(f[4][1] for _, f in guests if f[4] is not None)
        want_memory = sum(quantity_value(f[4][2]) for _, f in guests if f[4] is not None)
        over = []
        if cpus is not None and want_cpus > cpus:
            over.append(f"{want_cpus} vCPUs on {cpus} CPUs")
        if memory is not None and want_memory > quantity_value(memory):
            over.append(f"more memory than its {memory}")
        if over:
            path, fact = guests[-1]
            out.append(
                warning(
                    "host-overcommitted",
                    f"VMs on host {host!r} ask for {' and '.join(over)}",
                    path,
                    address=address("VirtualMachine", fact[1]),
                    doc_index=fact[2],
                    field_path=("spec", "host"),
                    hint="move VMs to another hypervisor or shrink them; plans on this host will fail",
                )
            )

    clusters = by_kind["Cluster"]
    member_of: dict[str, str] = {}
    node_labels: dict[str, list[dict[str, str]]] = defaultdict(list)
    labels_unknown: set[str] = set()
    for name, (path, fact) in sorted(clusters.items()):
        if fact[4] is None:
            labels_unknown.add(name)
            continue
        credential, members, _scheduler, _fallback, _in_secret = fact[4]
        here = address("Cluster", name)
        check_credential(path, fact, credential, ("spec", "credentialsRef"))
        for position, (ref, labels) in enumerate(members):
            kind, _, target = ref.partition("/")
            table = machines if kind == "machine" else vms
            if target not in table:
                out.append(
                    error(
                        "unresolved-reference",
                        f"member {ref!r} does not exist",
                        path,
                        address=here,
                        doc_index=fact[2],
                        field_path=("spec", "members", position, "ref"),
                        hint=_hint(
                            f"name an existing {'Machine' if kind == 'machine' else 'VirtualMachine'}",
                            target,
                            table,
                        ),
                    )
                )
                continue
            if ref in member_of:
                out.append(
                    error(
                        "member-conflict",
                        f"{ref} is already a member of cluster {member_of[ref]!r}",
                        path,
                        address=here,
                        doc_index=fact[2],
                        field_path=("spec", "members", position, "ref"),
                        hint="a node belongs to one cluster; remove it from one of them",
                    )
                )
                continue
            member_of[ref] = name
            if table[target][1][4] is None:
                labels_unknown.add(name)
            merged = dict(table[target][1][3])
            merged.update(dict(labels))
            node_labels[name].append(merged)

    namespaces: dict[tuple[str, str], str] = {}
    queues: dict[tuple[str, str], str] = {}
    # (cluster, member index, taint key, effect) -> (value, pool): a Node holds one value there.
    node_taints: dict[tuple[str, int, str, str], tuple[str, str]] = {}
    for name, (path, fact) in sorted(by_kind["SparkPool"].items()):
        if fact[4] is None:
            continue
        cluster, selector, namespace, taint, has_image, has_deserved, queue = fact[4]
        here = address("SparkPool", name)
        if cluster not in clusters:
            out.append(
                error(
                    "unresolved-reference",
                    f"cluster {cluster!r} is not a Cluster of this repo",
                    path,
                    address=here,
                    doc_index=fact[2],
                    field_path=("spec", "cluster"),
                    hint=_hint("name an existing Cluster", cluster, clusters),
                )
            )
            continue
        if not has_image and fleet is not None and fleet.spec.spark.image is None:
            out.append(
                error(
                    "no-spark-image",
                    "the pool names no Spark image and the Fleet has no default, so Spark cannot start"
                    " a driver (spark.kubernetes.container.image is required)",
                    path,
                    address=here,
                    doc_index=fact[2],
                    field_path=("spec",),
                    hint="set spec.image on the pool, or spec.spark.image on the Fleet for every pool",
                )
            )
        cluster_detail = clusters[cluster][1][4]
        if has_deserved and cluster_detail is not None and cluster_detail[2] != "volcano":
            out.append(
                warning(
                    "deserved-not-used",
                    f"queue.deserved is a Volcano setting; cluster {cluster!r} runs the {cluster_detail[2]}"
                    " scheduler, which ignores it",
                    path,
                    address=here,
                    doc_index=fact[2],
                    field_path=("spec", "queue", "deserved"),
                    hint="remove deserved, or move the pool to a Volcano cluster",
                )
            )
        queue_problem = _queue_problem(queue, cluster_detail, queues.get((cluster, queue)))
        if queue_problem is not None:
            out.append(
                error(
                    "queue-conflict",
                    queue_problem,
                    path,
                    address=here,
                    doc_index=fact[2],
                    field_path=("spec", "queue", "name"),
                    hint="give the pool a queue of its own: not another pool's, not under root.namespaces",
                )
            )
        queues.setdefault((cluster, queue), name)
        wanted = dict(selector)
        if cluster not in labels_unknown and not any(
            all(labels.get(k) == v for k, v in wanted.items()) for labels in node_labels[cluster]
        ):
            shown = ",".join(f"{k}={v}" for k, v in sorted(wanted.items()))
            out.append(
                error(
                    "selector-matches-nothing",
                    f"node selector {shown} matches no member of cluster {cluster!r}",
                    path,
                    address=here,
                    doc_index=fact[2],
                    field_path=("spec", "nodes", "selector"),
                    hint="label some members of the Cluster with these labels, or fix the selector",
                )
            )
        key, value, effect = taint
        clash = None
        for index, labels in enumerate(node_labels[cluster]):
            if all(labels.get(k) == v for k, v in wanted.items()):
                holder = node_taints.setdefault((cluster, index, key, effect), (value, name))
                if holder[0] != value and clash is None:
                    clash = holder[1]
        if clash is not None:
            out.append(
                error(
                    "pool-taint-conflict",
                    f"pools {clash!r} and {name!r} both select nodes of cluster {cluster!r} and taint them"
                    f" {key}:{effect} with different values; a node holds one value per key and effect",
                    path,
                    address=here,
                    doc_index=fact[2],
                    field_path=("spec", "nodes", "taint"),
                    hint="give pools that share nodes the same taint, or select different nodes",
                )
            )
        other = namespaces.get((cluster, namespace))
        if other is not None:
            out.append(
                error(
                    "namespace-conflict",
                    f"namespace {namespace!r} is already used by pool {other!r} in cluster {cluster!r}",
                    path,
                    address=here,
                    doc_index=fact[2],
                    field_path=("spec", "namespace"),
                    hint="give each SparkPool of a cluster its own namespace",
                )
            )
        else:
            namespaces[(cluster, namespace)] = name
    if fleet is not None and root_fleets:
        if fleet.spec.credentialsCluster is not None:
            out += _credentials_cluster_problems(fleet, root_fleets[0], clusters)
        controller = fleet.spec.controller
        named: list[tuple[str | None, tuple[str | int, ...]]] = [
            (_name_of(controller.webhooks.githubSecretRef), ("webhooks", "githubSecretRef")),
            (_name_of(controller.webhooks.gitlabTokenRef), ("webhooks", "gitlabTokenRef")),
            *(
                (_name_of(token.credentialsRef), ("apiTokens", position, "credentialsRef"))
                for position, token in enumerate(controller.apiTokens)
            ),
        ]
        for credential_name, field in named:
            check_credential(FLEET_FILE, root_fleets[0], credential_name, ("spec", "controller", *field))
    return out


def _name_of(ref: models.CredentialSource | str | None) -> str | None:
    return ref if isinstance(ref, str) else None


def _credentials_cluster_problems(
    fleet: models.Fleet, fact: Facts, clusters: Mapping[str, tuple[str, Facts]]
) -> list[Diagnostic]:
    """The Cluster that kubernetesSecret credentials are read through exists, and its own
    credentials are not a Secret in itself (which could never be read)."""
    name = fleet.spec.credentialsCluster
    assert name is not None
    if name not in clusters:
        return [
            error(
                "unresolved-reference",
                f"credentialsCluster {name!r} is not a Cluster of this repo",
                FLEET_FILE,
                address=f"fleet/{fact[1]}",
                doc_index=fact[2],
                field_path=("spec", "credentialsCluster"),
                hint=_hint("name the Cluster whose API server holds the Secrets", name, clusters),
            )
        ]
    detail = clusters[name][1][4]
    if detail is None:
        return []
    credential, in_secret = detail[0], detail[4]
    source = fleet.spec.credentials.get(credential) if credential is not None else None
    if in_secret or (source is not None and source.kubernetesSecret is not None):
        return [
            error(
                "credentials-cluster-in-secret",
                f"the credentials of cluster {name!r} are themselves a Kubernetes Secret, which fleet"
                " would have to read through that cluster",
                FLEET_FILE,
                address=f"fleet/{fact[1]}",
                doc_index=fact[2],
                field_path=("spec", "credentialsCluster"),
                hint=f"give cluster {name!r} an env or file credentialsRef, or name another one",
            )
        ]
    return []
