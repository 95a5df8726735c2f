"""Cross-document checks: names, references, sites and racks, shared BMCs, capacity.

Runs over the compact `Facts` of every document. The checks are split into units, each a
function of a few of the index's entries: the declarations of one (kind, name), one Machine,
one BMC endpoint, one VirtualMachine, one hypervisor's guests, one Cluster and the SparkPools of
one Cluster, and the Fleet. `CrossIndex` keeps the facts of every file, the indexes the units
read (which declaration of a name counts, who uses a BMC, a host's guests, who claims a cluster
member, a cluster's pools) and each unit's diagnostics. Replacing some files' facts re-runs only
the units those facts touch, so a one-file change costs what it touches; checking a whole
revision is the same replacement on an empty index, so both run the same checks and report the
same diagnostics. Every problem is reported, each on the document and field that should change.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

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
    """Every cross-document diagnostic of a revision whose files have these facts."""
    index = CrossIndex(fleet, fleet_path)
    index.replace({path: facts for path, facts in files})
    return index.diagnostics()


def _address(kind: str, name: str) -> str:
    return f"{kind.lower()}/{name}"


# A declaration: (path, position among the file's facts, facts). The first by (path, position)
# is the one that counts; the others are duplicates.
_Declaration = tuple[str, int, Facts]
_Winner = tuple[str, Facts]


def _position(declaration: _Declaration) -> tuple[str, int]:
    return declaration[0], declaration[1]


class _Dirty:
    """The units to check again after a replacement."""

    def __init__(self) -> None:
        self.names: set[tuple[str, str]] = set()
        self.machines: set[str] = set()
        self.bmcs: set[tuple[str, int]] = set()
        self.vms: set[str] = set()
        self.hosts: set[str] = set()
        self.clusters: set[str] = set()
        self.pools: set[str] = set()  # the SparkPools of these clusters


class CrossIndex:
    """The cross-document state of one revision, kept up to date file by file (see the module's
    docstring). Owned by one load at a time: `replace` changes it in place."""

    def __init__(self, fleet: models.Fleet | None, fleet_path: str | None) -> None:
        self.fleet = fleet
        self.fleet_path = fleet_path
        self.sites: dict[str, set[str]] = {}
        self.credentials: set[str] = set()
        if fleet is not None:
            self.sites = {s.name: {r.name for r in s.racks} for s in fleet.spec.sites}
            self.credentials = set(fleet.spec.credentials)
        self.files: dict[str, tuple[Facts, ...]] = {}
        self.declared: dict[tuple[str, str], list[_Declaration]] = {}
        self.winners: dict[str, dict[str, _Winner]] = defaultdict(dict)
        self.fleet_facts: dict[str, list[Facts]] = {}  # the Fleet documents of each file
        self.bmc_users: dict[tuple[str, int], set[str]] = defaultdict(set)
        self.guests: dict[str, set[str]] = defaultdict(set)  # host name -> VM names
        self.claims: dict[str, set[tuple[str, int]]] = defaultdict(set)  # member ref -> (cluster, position)
        self.referrers: dict[tuple[str, str], set[str]] = defaultdict(set)  # (kind, name) -> clusters
        self.pools_of: dict[str, set[str]] = defaultdict(set)  # cluster name -> SparkPool names
        # cluster name -> the labels of its nodes, and whether some are not known
        self.nodes: dict[str, tuple[list[dict[str, str]], bool]] = {}
        self.found: dict[tuple[str, object], list[Diagnostic]] = {}
        # kind -> the units that report a reference to a missing document of that kind
        self.unresolved: dict[str, set[tuple[str, str]]] = defaultdict(set)
        self._unresolved_units: set[tuple[str, str]] = set()
        self._hypervisor_names: list[str] | None = None

    # --- keeping the index ----------------------------------------------------------------------

    def replace(self, files: Mapping[str, Sequence[Facts] | None]) -> None:
        """Put these files' facts in place of what the index had of them (None: the file is gone),
        and check again every unit they touch."""
        if not self.files and not self.declared:
            self._build(files)
            return
        touched: set[tuple[str, str]] = set()
        for path, facts in files.items():
            for position, fact in enumerate(self.files.pop(path, ())):
                self._undeclare(path, position, fact, touched)
            if facts is not None:
                self.files[path] = tuple(facts)
                for position, fact in enumerate(facts):
                    self._declare(path, position, fact, touched)
        dirty = _Dirty()
        dirty.names = touched
        changed_kinds: set[str] = set()
        for kind, name in touched:
            declarations = self.declared.get((kind, name))
            new = (declarations[0][0], declarations[0][2]) if declarations else None
            old = self.winners[kind].get(name)
            if old != new:
                self._rewin(kind, name, old, new, dirty)
                changed_kinds.add(kind)
        # A reference that resolves to nothing suggests the closest name of its kind: any change
        # among those names may change the suggestion.
        for kind in changed_kinds:
            for unit, name in self.unresolved.get(kind, ()):
                {"vm": dirty.vms, "cluster": dirty.clusters, "pools": dirty.pools}[unit].add(name)
        self._check(dirty)

    def _build(self, files: Mapping[str, Sequence[Facts] | None]) -> None:
        """`replace` on an empty index: the same indexes and units, made in bulk (a whole
        revision's 100,000 documents), leaving out only the units that cannot find anything: a
        name declared once, a BMC one Machine uses, a Machine that hosts no VM."""
        declared = self.declared
        fleet_facts = self.fleet_facts
        for path in sorted(p for p, facts in files.items() if facts is not None):
            facts = tuple(files[path] or ())
            self.files[path] = facts
            for position, fact in enumerate(facts):
                if fact[0] == "Fleet":
                    fleet_facts.setdefault(path, []).append(fact)
                else:
                    declared.setdefault((fact[0], fact[1]), []).append((path, position, fact))
        dirty = _Dirty()
        winners = self.winners
        for key, declarations in declared.items():
            path, _, fact = declarations[0]
            winners[key[0]][key[1]] = (path, fact)
            if len(declarations) > 1:
                dirty.names.add(key)
        for name, (_, fact) in winners["Machine"].items():
            detail = fact[4]
            if detail is not None:
                self.bmc_users[(detail[3], detail[4])].add(name)
        dirty.machines = set(winners["Machine"])
        dirty.bmcs = {key for key, users in self.bmc_users.items() if len(users) > 1}
        for name, (_, fact) in winners["VirtualMachine"].items():
            if fact[4] is not None:
                self.guests[fact[4][0]].add(name)
        dirty.vms = set(winners["VirtualMachine"])
        dirty.hosts = set(self.guests)
        for name, (_, fact) in winners["Cluster"].items():
            if fact[4] is not None:
                for position, (ref, _labels) in enumerate(fact[4][1]):
                    self.claims[ref].add((name, position))
                    self.referrers[_target(ref)].add(name)
        dirty.clusters = set(winners["Cluster"])
        for name, (_, fact) in winners["SparkPool"].items():
            if fact[4] is not None:
                self.pools_of[fact[4][0]].add(name)
        dirty.pools = set(self.pools_of)
        self._check(dirty)

    def _declare(self, path: str, position: int, fact: Facts, touched: set[tuple[str, str]]) -> None:
        if fact[0] == "Fleet":
            self.fleet_facts.setdefault(path, []).append(fact)
            return
        key = (fact[0], fact[1])
        bisect.insort(self.declared.setdefault(key, []), (path, position, fact), key=_position)
        touched.add(key)

    def _undeclare(self, path: str, position: int, fact: Facts, touched: set[tuple[str, str]]) -> None:
        if fact[0] == "Fleet":
            self.fleet_facts.pop(path, None)
            return
        key = (fact[0], fact[1])
        declarations = self.declared[key]
        declarations.pop(bisect.bisect_left(declarations, (path, position), key=_position))
        if not declarations:
            del self.declared[key]
        touched.add(key)

    def _rewin(self, kind: str, name: str, old: _Winner | None, new: _Winner | None, dirty: _Dirty) -> None:
        """The declaration of `kind`/`name` that counts changed from `old` to `new`: move the
        indexes that follow it, and mark what reads them."""
        before = old[1][4] if old is not None else None
        after = new[1][4] if new is not None else None
        if kind == "Machine":
            dirty.machines.add(name)
            if name in self.guests or ("host", name) in self.found:
                dirty.hosts.add(name)
            for detail, sign in ((before, -1), (after, 1)):
                if detail is not None:
                    key = (detail[3], detail[4])
                    self._move(self.bmc_users, key, name, sign)
                    dirty.bmcs.add(key)
        elif kind == "VirtualMachine":
            dirty.vms.add(name)
            for detail, sign in ((before, -1), (after, 1)):
                if detail is not None:
                    self._move(self.guests, detail[0], name, sign)
                    dirty.hosts.add(detail[0])
        elif kind == "Cluster":
            dirty.clusters.add(name)
            for detail, sign in ((before, -1), (after, 1)):
                if detail is not None:
                    for position, (ref, _labels) in enumerate(detail[1]):
                        self._move(self.claims, ref, (name, position), sign)
                        self._move(self.referrers, _target(ref), name, sign)
                        dirty.clusters.update(cluster for cluster, _ in self.claims.get(ref, ()))
        elif kind == "SparkPool":
            for detail, sign in ((before, -1), (after, 1)):
                if detail is not None:
                    self._move(self.pools_of, detail[0], name, sign)
                    dirty.pools.add(detail[0])
        if new is None:
            del self.winners[kind][name]
        else:
            self.winners[kind][name] = new
        if kind == "Machine":
            guests = self.guests.get(name)
            if guests:
                dirty.vms.update(guests)
        if kind in ("Machine", "VirtualMachine"):
            referrers = self.referrers.get((kind, name))
            if referrers:
                dirty.clusters.update(referrers)

    @staticmethod
    def _move(index: dict[Any, set[Any]], key: Any, value: Any, sign: int) -> None:
        if sign > 0:
            index[key].add(value)
            return
        values = index.get(key)
        if values is not None:
            values.discard(value)
            if not values:
                del index[key]

    def _check(self, dirty: _Dirty) -> None:
        """Run the units again; clusters before their pools, which read the clusters' nodes."""
        self._hypervisor_names = None
        found = self.found
        for key in dirty.names:
            unit = ("name", key)
            declarations = self.declared.get(key)
            if declarations is not None and len(declarations) > 1:
                found[unit] = self._names(key)
            elif unit in found:
                del found[unit]
        for bmc in dirty.bmcs:
            self._keep(("bmc", bmc), self._bmc(bmc))
        for name in dirty.machines:
            problems = self._machine(name)
            if problems:
                found[("machine", name)] = problems
            elif ("machine", name) in found:
                del found[("machine", name)]
        for name in dirty.hosts:
            self._keep(("host", name), self._host(name))
        for unit_name, names, check in (
            ("vm", dirty.vms, self._virtual_machine),
            ("cluster", dirty.clusters, self._cluster),
        ):
            for name in names:
                self._keep_referring(unit_name, name, check(name))
        dirty.pools.update(dirty.clusters)
        for cluster in dirty.pools:
            self._keep_referring("pools", cluster, self._pools(cluster))
        self._keep(("fleet", None), self._fleet())

    def _keep(self, unit: tuple[str, object], found: list[Diagnostic]) -> None:
        if found:
            self.found[unit] = found
        elif unit in self.found:
            del self.found[unit]

    def _keep_referring(self, unit: str, name: str, found: list[Diagnostic]) -> None:
        """Keep a unit that refers to other documents by name, and whether one is missing."""
        self._keep((unit, name), found)
        named = (unit, name)
        unresolved = any(d.code == "unresolved-reference" for d in found)
        if unresolved:
            self._unresolved_units.add(named)
        elif named not in self._unresolved_units:
            return
        else:
            self._unresolved_units.discard(named)
        for kind in _REFERRED[unit]:
            self._move(self.unresolved, kind, named, 1 if unresolved else -1)

    def diagnostics(self) -> list[Diagnostic]:
        return [d for found in self.found.values() for d in found]

    # --- the units ------------------------------------------------------------------------------

    def _names(self, key: tuple[str, str]) -> list[Diagnostic]:
        """Names are unique per kind: every declaration after the first is a duplicate."""
        declarations = self.declared.get(key, [])
        kind, name = key
        return [
            error(
                "duplicate-name",
                f"{kind} {name!r} is already defined in {declarations[0][0]}",
                path,
                address=_address(kind, name),
                doc_index=fact[2],
                field_path=("metadata", "name"),
                hint="names are unique per kind; rename one of them",
            )
            for path, _, fact in declarations[1:]
        ]

    def _credential(
        self, out: list[Diagnostic], path: str, fact: Facts, name: str | None, field: tuple[str | int, ...]
    ) -> None:
        if name is not None and self.fleet is not None and name not in self.credentials:
            out.append(
                error(
                    "unknown-credential",
                    f"credentialsRef {name!r} is not defined in fleet.yaml",
                    path,
                    address=_address(fact[0], fact[1]),
                    doc_index=fact[2],
                    field_path=field,
                    hint=_hint("add it under spec.credentials in fleet.yaml", name, self.credentials),
                )
            )

    def _config_credentials(
        self, out: list[Diagnostic], path: str, fact: Facts, secrets: Sequence[tuple[str, str]]
    ) -> None:
        for variable, credential in secrets:
            self._credential(
                out, path, fact, credential, ("spec", "config", "vars", variable, "credentialsRef")
            )

    def _machine(self, name: str) -> list[Diagnostic]:
        """A Machine's site, rack and credentials."""
        winner = self.winners["Machine"].get(name)
        detail = winner[1][4] if winner is not None else None
        if winner is None or detail is None:
            return []
        path, fact = winner
        site, rack, _role, _bmc_address, _bmc_port, credential, _cpus, _memory, secrets = detail
        here = _address("Machine", name)
        out: list[Diagnostic] = []
        self._config_credentials(out, path, fact, secrets)
        if self.fleet is not None:
            sites = self.sites
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
        self._credential(out, path, fact, credential, ("spec", "bmc", "credentialsRef"))
        return out

    def _bmc(self, key: tuple[str, int]) -> list[Diagnostic]:
        """No two Machines share a BMC: the first by name has it, the others are told."""
        users = sorted(self.bmc_users.get(key, ()))
        machines = self.winners["Machine"]
        out: list[Diagnostic] = []
        for name in users[1:]:
            path, fact = machines[name]
            out.append(
                error(
                    "bmc-conflict",
                    f"BMC {_endpoint(*key)} is also the BMC of machine {users[0]!r}",
                    path,
                    address=_address("Machine", name),
                    doc_index=fact[2],
                    field_path=("spec", "bmc", "address"),
                    hint="each Machine has its own BMC; fix the address or the port",
                )
            )
        return out

    def _hypervisors(self) -> list[str]:
        """The hypervisors' names, for a hint; worked out once per check."""
        if self._hypervisor_names is None:
            self._hypervisor_names = [
                n
                for n, (_, f) in self.winners["Machine"].items()
                if f[4] is not None and f[4][2] == "hypervisor"
            ]
        return self._hypervisor_names

    def _virtual_machine(self, name: str) -> list[Diagnostic]:
        """A VM's credentials, and that its host is a hypervisor Machine."""
        winner = self.winners["VirtualMachine"].get(name)
        detail = winner[1][4] if winner is not None else None
        if winner is None or detail is None:
            return []
        path, fact = winner
        host = detail[0]
        here = _address("VirtualMachine", name)
        out: list[Diagnostic] = []
        self._config_credentials(out, path, fact, detail[4])
        machines = self.winners["Machine"]
        if host not in machines:
            out.append(
                error(
                    "unresolved-reference",
                    f"host {host!r} is not a Machine of this repo",
                    path,
                    address=here,
                    doc_index=fact[2],
                    field_path=("spec", "host"),
                    hint=_hint("name a Machine whose role is hypervisor", host, self._hypervisors()),
                )
            )
            return out
        host_detail = machines[host][1][4]
        if host_detail is not None and host_detail[2] != "hypervisor":
            out.append(
                error(
                    "host-not-hypervisor",
                    f"host {host!r} has role {host_detail[2]!r}, not hypervisor",
                    path,
                    address=here,
                    doc_index=fact[2],
                    field_path=("spec", "host"),
                    hint="move the VM to a hypervisor, or set the Machine's role to hypervisor",
                )
            )
        return out

    def _host(self, host: str) -> list[Diagnostic]:
        """The VMs on a hypervisor fit it (a warning on the last of them by name)."""
        winner = self.winners["Machine"].get(host)
        if winner is None or winner[1][4] is None or winner[1][4][2] != "hypervisor":
            return []
        names = self.guests.get(host)
        if not names:
            return []
        vms = self.winners["VirtualMachine"]
        guests = [vms[n] for n in sorted(names)]
        host_detail = winner[1][4]
        cpus, memory = host_detail[6], host_detail[7]
        want_cpus = sum(f[4][1] for _, f in guests if f[4] is not None)
        want_memory = sum(quantity_value(f[4][2]) for _, f in guests if f[4] is not None)
        over = []
        if cpus is not None and want_cpus > cpus:
            over.append(f"{want_cpus} vCPUs on {cpus} CPUs")
        if memory is not None and want_memory > quantity_value(memory):
            over.append(f"more memory than its {memory}")
        if not over:
            return []
        path, fact = guests[-1]
        return [
            warning(
                "host-overcommitted",
                f"VMs on host {host!r} ask for {' and '.join(over)}",
                path,
                address=_address("VirtualMachine", fact[1]),
                doc_index=fact[2],
                field_path=("spec", "host"),
                hint="move VMs to another hypervisor or shrink them; plans on this host will fail",
            )
        ]

    def _cluster(self, name: str) -> list[Diagnostic]:
        """A Cluster's credentials and members (each exists, and belongs to one cluster: the first
        by cluster name and position); keeps the labels of its nodes for its pools."""
        winner = self.winners["Cluster"].get(name)
        if winner is None:
            self.nodes.pop(name, None)
            return []
        path, fact = winner
        if fact[4] is None:
            self.nodes[name] = ([], True)
            return []
        credential, members, _scheduler, _fallback, _in_secret = fact[4]
        here = _address("Cluster", name)
        out: list[Diagnostic] = []
        self._credential(out, path, fact, credential, ("spec", "credentialsRef"))
        labels_of_nodes: list[dict[str, str]] = []
        unknown = False
        for position, (ref, labels) in enumerate(members):
            kind, target = _target(ref)
            table = self.winners[kind]
            if target not in table:
                out.append(
                    error(
                        "unresolved-reference",
                        f"member {ref!r} does not exist",
                        path,
                        address=here,
                        doc_index=fact[2],
                        field_path=("spec", "members", position, "ref"),
                        hint=_hint(f"name an existing {kind}", target, table),
                    )
                )
                continue
            first = min(self.claims[ref])
            if first != (name, position):
                out.append(
                    error(
                        "member-conflict",
                        f"{ref} is already a member of cluster {first[0]!r}",
                        path,
                        address=here,
                        doc_index=fact[2],
                        field_path=("spec", "members", position, "ref"),
                        hint="a node belongs to one cluster; remove it from one of them",
                    )
                )
                continue
            if table[target][1][4] is None:
                unknown = True
            merged = dict(table[target][1][3])
            merged.update(dict(labels))
            labels_of_nodes.append(merged)
        self.nodes[name] = (labels_of_nodes, unknown)
        return out

    def _pools(self, cluster: str) -> list[Diagnostic]:
        """The SparkPools of one cluster: it exists, and its pools' images, queues, selectors,
        taints and namespaces agree with it and with each other (the first pool by name keeps a
        queue or a namespace)."""
        out: list[Diagnostic] = []
        names = sorted(self.pools_of.get(cluster, ()))
        if not names:
            return out
        pools = self.winners["SparkPool"]
        clusters = self.winners["Cluster"]
        fleet = self.fleet
        node_labels, labels_unknown = self.nodes.get(cluster, ([], False))
        namespaces: dict[str, str] = {}
        queues: dict[str, str] = {}
        # (member index, taint key, effect) -> (value, pool): a Node holds one value there.
        node_taints: dict[tuple[int, str, str], tuple[str, str]] = {}
        for name in names:
            path, fact = pools[name]
            assert fact[4] is not None
            _cluster, selector, namespace, taint, has_image, has_deserved, queue = fact[4]
            here = _address("SparkPool", name)
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
                        "the pool names no Spark image and the Fleet has no default, so Spark cannot"
                        " start a driver (spark.kubernetes.container.image is required)",
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
                        f"queue.deserved is a Volcano setting; cluster {cluster!r} runs the"
                        f" {cluster_detail[2]} scheduler, which ignores it",
                        path,
                        address=here,
                        doc_index=fact[2],
                        field_path=("spec", "queue", "deserved"),
                        hint="remove deserved, or move the pool to a Volcano cluster",
                    )
                )
            queue_problem = _queue_problem(queue, cluster_detail, queues.get(queue))
            if queue_problem is not None:
                out.append(
                    error(
                        "queue-conflict",
                        queue_problem,
                        path,
                        address=here,
                        doc_index=fact[2],
                        field_path=("spec", "queue", "name"),
                        hint="give the pool a queue of its own: not another pool's,"
                        " not under root.namespaces",
                    )
                )
            queues.setdefault(queue, name)
            wanted = dict(selector)
            if not labels_unknown and not any(
                all(labels.get(k) == v for k, v in wanted.items()) for labels in node_labels
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
            for index, labels in enumerate(node_labels):
                if all(labels.get(k) == v for k, v in wanted.items()):
                    holder = node_taints.setdefault((index, key, effect), (value, name))
                    if holder[0] != value and clash is None:
                        clash = holder[1]
            if clash is not None:
                out.append(
                    error(
                        "pool-taint-conflict",
                        f"pools {clash!r} and {name!r} both select nodes of cluster {cluster!r} and taint"
                        f" them {key}:{effect} with different values; a node holds one value per key and"
                        " effect",
                        path,
                        address=here,
                        doc_index=fact[2],
                        field_path=("spec", "nodes", "taint"),
                        hint="give pools that share nodes the same taint, or select different nodes",
                    )
                )
            other = namespaces.get(namespace)
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
                namespaces[namespace] = name
        return out

    def _fleet(self) -> list[Diagnostic]:
        """fleet.yaml holds exactly one Fleet document and nothing else, no other file holds one,
        and what the Fleet names (its credentials cluster, the controller's secrets) exists."""
        out: list[Diagnostic] = []
        fleet = self.fleet
        for path, facts in sorted(self.fleet_facts.items()):
            if path == FLEET_FILE:
                continue
            for fact in facts:
                out.append(
                    error(
                        "fleet-misplaced",
                        "a Fleet document may only live in fleet.yaml at the repo root",
                        path,
                        address=_address("Fleet", fact[1]),
                        doc_index=fact[2],
                        hint="move it to fleet.yaml, or remove it",
                    )
                )
        root_fleets = self.fleet_facts.get(FLEET_FILE, [])
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
        if self.fleet_path is not None and not root_fleets:
            out.append(
                error(
                    "fleet-missing",
                    "fleet.yaml holds no Fleet document",
                    FLEET_FILE,
                    line=1,
                    col=1,
                    hint="put the Fleet document of the repo in fleet.yaml"
                    " (see fleet-repo-example/fleet.yaml)",
                )
            )
        for fact in self.files.get(FLEET_FILE, ()):
            if fact[0] != "Fleet":
                out.append(
                    error(
                        "fleet-extra-document",
                        f"fleet.yaml holds a {fact[0]}; it may hold only the Fleet document",
                        FLEET_FILE,
                        address=_address(fact[0], fact[1]),
                        doc_index=fact[2],
                        hint="move the document to a file of its own",
                    )
                )
        if fleet is None and self.fleet_path is None:
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
        if fleet is not None and root_fleets:
            clusters = self.winners["Cluster"]
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
                self._credential(
                    out, FLEET_FILE, root_fleets[0], credential_name, ("spec", "controller", *field)
                )
        return out


# The kinds each unit refers to by name (and whose names its hints suggest).
_REFERRED = {"vm": ("Machine",), "cluster": ("Machine", "VirtualMachine"), "pools": ("Cluster",)}


def _target(ref: str) -> tuple[str, str]:
    """The (kind, name) a cluster member's ref names: `machine/NAME`, or else a VirtualMachine."""
    kind, _, target = ref.partition("/")
    return ("Machine" if kind == "machine" else "VirtualMachine"), target


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
