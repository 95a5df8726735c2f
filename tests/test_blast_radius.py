"""The blast radius weighs a plan against the racks and clusters it hits, from indexes kept with
the revision: the example fleet, plans of power cycles, and each rule named when it refuses."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from fleet_testing import copy_example

from providers.base import Action
from reconciler.apply.guards import BlastIndex, BlastRadiusExceeded, check_blast_radius
from reconciler.plan.model import Finding, Plan, PlanEntry
from reconciler.source import SourceRef, open_snapshot
from reconciler.spec import models
from reconciler.spec.loader import LoadedRevision, load_revision


@pytest.fixture(scope="module")
def revision(tmp_path_factory: pytest.TempPathFactory) -> LoadedRevision:
    path = copy_example(tmp_path_factory.mktemp("blast") / "fleet")
    loaded = load_revision(open_snapshot(SourceRef(path=path), path.parent / "cache"))
    assert loaded.errors == []
    return loaded


def _cycles(*addresses: str) -> Plan:
    entries = tuple(
        PlanEntry(a, a.split("/")[0], Finding.CHANGE, Action.POWER_CYCLE) for a in sorted(addresses)
    )
    return Plan("r", datetime.now(UTC), entries)


def test_a_rack_and_a_cluster_over_their_share_are_refused_by_name(revision: LoadedRevision) -> None:
    index = BlastIndex.of(revision)
    policy = models.BlastRadius(maxPowerOffsPerRun=100, maxRackPercent=50, maxClusterNodePercent=25)
    rack = sorted(index.racks["nyc1/r01"])
    assert len(rack) >= 4 and all(a in index.documents for a in rack)
    check_blast_radius(_cycles(rack[0]), index, policy)  # one Machine of a rack: within
    with pytest.raises(BlastRadiusExceeded, match=re.escape("in rack nyc1/r01; blastRadius.maxRackPercent")):
        check_blast_radius(_cycles(*rack[: len(rack) // 2 + 1]), index, policy)
    # Nodes of k8s-nyc1, two from a rack (within each rack's share): the cluster's share refuses.
    nodes = sorted(a for a, clusters in index.clusters.items() if "cluster/k8s-nyc1" in clusters)
    by_rack: dict[str, list[str]] = {}
    for node in nodes:
        machine = index.documents[node]
        if isinstance(machine, models.Machine):
            by_rack.setdefault(machine.spec.rack, []).append(node)
    picked = [n for members in by_rack.values() for n in members[:2]][:5]
    assert len(picked) * 100 > 25 * len(nodes), (picked, nodes)
    cluster_rule = re.escape("nodes of cluster k8s-nyc1; blastRadius.maxClusterNodePercent")
    with pytest.raises(BlastRadiusExceeded, match=cluster_rule):
        check_blast_radius(_cycles(*picked), index, models.BlastRadius(maxClusterNodePercent=25))
    check_blast_radius(_cycles(*picked), index, models.BlastRadius(maxClusterNodePercent=100))
