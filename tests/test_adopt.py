"""Drift PRs' building blocks: spec edits that adopt live values, and a commit on a branch.

The edits run on a copy of the example repo, with drifted fields taken from a real plan (the
kinds' own diffs over observations of live values): only the drifted fields' lines may change,
the edited repo must pass `fleet validate`, and planning it again against the same live state
must find nothing left to change. The commits are written into real Git repositories (a bare
one by path, one by file:// URL, one served over smart HTTP by `git http-backend` behind Basic
authentication) and read back with the `git` command.
"""

from __future__ import annotations

import base64
import difflib
import http.server
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fleet_testing import copy_example, git, git_init, run_cli

from providers.base import Observation, Observed
from reconciler.errors import FleetError, PermanentError, SourceError
from reconciler.kinds import KINDS, DiffInputs
from reconciler.kinds.adopt import DriftedField, SpecEdits, adopt_drift, drifted_fields
from reconciler.kinds.planning import Observations, make_plan
from reconciler.kinds.virtualmachine import desired_fields
from reconciler.plan.model import Finding, Plan, spec_hash
from reconciler.source.git import GitCredentials, commit_files, push_branch
from reconciler.source.worktree import read_worktree
from reconciler.spec import models
from reconciler.spec.edit import REMOVE, FieldEdit, edit_spec_text
from reconciler.spec.loader import LoadedRevision, load_revision, require_valid
from reconciler.state import Applied

T0 = datetime(2026, 1, 20, 10, 0, tzinfo=UTC)
SECRET = "s3cr3t-Token-value"

# --- live state: what the providers would report, changed out of band --------------------------

MACHINES_LIVE = {
    "machine/nyc1-r01-02": {"power": "off", "bootDevice": "network"},  # both written in the spec
    "machine/nyc1-r01-03": {"bootPersistent": False},  # left at its default: inserted
    "machine/ldn1-r02-02": {"power": "off"},
}
VMS_LIVE = {
    "virtualmachine/k8s-ldn1-cp-1": {"vcpus": 12, "memory": "48Gi"},
    "virtualmachine/k8s-ldn1-cp-2": {"autostart": False},
}
CLUSTER = "cluster/k8s-ldn1"
NAMESPACE_KEY = "v1/Namespace/_/monitoring"
POOL = "sparkpool/etl"
QUOTA_KEY = "v1/ResourceQuota/spark-etl/spark-quota"
PRIORITY_KEY = "scheduling.k8s.io/v1/PriorityClass/_/spark-etl"


def _node(name: str, member: str, labels: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {
        "name": name,
        "member": member,
        "present": True,
        "ready": True,
        "labels": labels,
        "missingTaints": [],
        "staleTaints": [],
        "staleLabels": [],
        "unschedulable": False,
        "inSync": False,
        **more,
    }


def _kube_observation(
    document: models.Document, objects: list[dict[str, Any]], nodes: list[Any]
) -> Observation:
    cluster = document.metadata.name if isinstance(document, models.Cluster) else "k8s-nyc1"
    return Observation.observed(
        document.address, {"cluster": cluster, "objects": objects, "nodes": nodes}, at=T0
    )


def observations(revision: LoadedRevision) -> tuple[Observations, dict[str, Applied]]:
    """Live state for the drifted resources, and what fleet last applied there (the old spec)."""
    documents = {d.document.address: d.document for d in revision.documents}
    by_kind: dict[str, list[Observation]] = {}
    applied: dict[str, Applied] = {}
    for address, changed in MACHINES_LIVE.items():
        machine = documents[address]
        fields = KINDS["Machine"].applied_fields(machine, None)
        by_kind.setdefault("Machine", []).append(Observation.observed(address, {**fields, **changed}, at=T0))
        applied[address] = Applied(address, "r1", spec_hash(machine), fields, T0, 1)
    for address, changed in VMS_LIVE.items():
        vm = documents[address]
        assert isinstance(vm, models.VirtualMachine)
        fields = desired_fields(vm)
        live = {**fields, "owned": True, "uuid": "u-" + address, **changed}
        by_kind.setdefault("VirtualMachine", []).append(Observation.observed(address, live, at=T0))
        applied[address] = Applied(address, "r1", spec_hash(vm), fields, T0, 1)
    cluster = documents[CLUSTER]
    cluster_objects = [
        {
            "key": NAMESPACE_KEY,
            "state": "differs",
            "diff": [
                {
                    "path": "metadata.labels.pod-security.kubernetes.io/enforce",
                    "live": "restricted",
                    "desired": "baseline",
                },
                {"path": "metadata.labels.team", "live": None, "desired": "observability"},
            ],
        },
        {
            "key": "v1/ConfigMap/volcano-system/x",
            "state": "differs",
            "diff": [{"path": "data.k", "live": "a", "desired": "b"}],
        },
    ]
    zone = "topology.kubernetes.io/zone"
    worker = {"node-role.kubernetes.io/worker": "", "topology.kubernetes.io/region": "eu-west"}
    cluster_nodes = [
        _node(
            "ldn1-r01-02",
            "machine/ldn1-r01-02",
            {**worker, zone: "ldn1-r09"},
            missingTaints=["gpu=a100:NoSchedule"],
        ),
        _node("ldn1-r03-03", "machine/ldn1-r03-03", {**worker, zone: "ldn1-r03"}, cordon=True),
    ]
    by_kind["Cluster"] = [_kube_observation(cluster, cluster_objects, cluster_nodes)]
    keys = sorted([NAMESPACE_KEY, "v1/ConfigMap/volcano-system/x"])
    applied[CLUSTER] = Applied(
        CLUSTER, "r1", spec_hash(cluster), {"cluster": "k8s-ldn1", "objects": keys}, T0, 1
    )
    pool = documents[POOL]
    pool_objects = [
        {
            "key": QUOTA_KEY,
            "state": "differs",
            "diff": [
                {"path": "spec.hard.requests.cpu", "live": "500", "desired": "480"},
                {"path": "spec.hard.limits.memory", "live": "2000Gi", "desired": "1920Gi"},
            ],
        },
        {
            "key": "v1/LimitRange/spark-etl/spark-defaults",
            "state": "differs",
            "diff": [
                {
                    "path": "spec.limits",
                    "live": [
                        {
                            "type": "Container",
                            "default": {"cpu": "3", "memory": "4Gi"},
                            "defaultRequest": {"cpu": "500m", "memory": "1Gi"},
                        }
                    ],
                    "desired": [],
                }
            ],
        },
        {
            "key": PRIORITY_KEY,
            "state": "differs",
            "diff": [{"path": "value", "live": 200000, "desired": 100000}],
        },
        {
            "key": "v1/ConfigMap/spark-etl/spark-pod-templates",
            "state": "differs",
            "diff": [{"path": "data.x", "live": "a", "desired": "b"}],
        },
    ]
    pool_nodes = [_node("nyc1-r03-02", "machine/nyc1-r03-02", {"fleet.acme.io/pool": "other"})]
    by_kind["SparkPool"] = [_kube_observation(pool, pool_objects, pool_nodes)]
    pool_keys = sorted(str(o["key"]) for o in pool_objects)
    applied[POOL] = Applied(POOL, "r1", spec_hash(pool), {"cluster": "k8s-nyc1", "objects": pool_keys}, T0, 1)
    stray = Observation.observed(
        "virtualmachine/stray", {"host": "ldn1-r01-01", "owned": False, "power": "on"}, at=T0
    )
    observed = {kind: Observed(tuple(found)) for kind, found in by_kind.items()}
    observed["VirtualMachine"] = Observed(observed["VirtualMachine"].observations, (stray,))
    return Observations(observed), applied


def plan_of(revision: LoadedRevision) -> Plan:
    assert revision.fleet is not None
    documents = {
        d.document.address: d.document for d in revision.documents if d.document.kind_name != "Fleet"
    }
    found, applied = observations(revision)
    inputs = DiffInputs(revision.fleet, documents, applied, {}, whole_fleet=False)
    return make_plan(revision.revision, T0, list(documents.values()), found, inputs)


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return copy_example(tmp_path / "fleet")


def loaded(path: Path) -> tuple[Any, LoadedRevision]:
    snapshot = read_worktree(path)
    return snapshot, require_valid(load_revision(snapshot))


def write(path: Path, edits: SpecEdits) -> None:
    for name, text in edits.files.items():
        (path / name).write_text(text)


@pytest.fixture
def adopted(repo: Path) -> tuple[Path, dict[str, str], SpecEdits, list[DriftedField]]:
    snapshot, revision = loaded(repo)
    plan = plan_of(revision)
    drifted = drifted_fields(plan, (Finding.DRIFT, Finding.UNMANAGED))
    before = {path: (repo / path).read_text() for path in {d.path for d in revision.documents}}
    edits = adopt_drift(snapshot, revision, drifted)
    write(repo, edits)
    return repo, before, edits, drifted


# --- the plan names the drift, the edit adopts it ------------------------------------------------

ADOPTED = {
    # (address, spec field path): value written
    ("machine/nyc1-r01-02", "spec.power"): "off",
    ("machine/nyc1-r01-02", "spec.bootDevice"): "network",
    ("machine/nyc1-r01-03", "spec.bootPersistent"): False,
    ("machine/ldn1-r02-02", "spec.power"): "off",
    ("virtualmachine/k8s-ldn1-cp-1", "spec.vcpus"): 12,
    ("virtualmachine/k8s-ldn1-cp-1", "spec.memory"): "48Gi",
    ("virtualmachine/k8s-ldn1-cp-2", "spec.autostart"): False,
    (CLUSTER, "spec.members[3].labels.topology.kubernetes.io/zone"): "ldn1-r09",
    (CLUSTER, "spec.members[7].cordon"): False,
    (CLUSTER, "spec.objects[0].metadata.labels.pod-security.kubernetes.io/enforce"): "restricted",
    (CLUSTER, "spec.objects[0].metadata.labels.team"): None,  # removed live: the key is removed
    (POOL, "spec.quota.requests.cpu"): "500",
    (POOL, "spec.quota.limits.memory"): "2000Gi",
    (POOL, "spec.limits.default.cpu"): "3",
    (POOL, "spec.priorityClass.value"): 200000,
}


def test_the_plan_names_every_drifted_field(adopted: Any) -> None:
    _, _, edits, drifted = adopted
    got = {(a.drifted.address, a.spec_field): a.value for a in edits.adopted}
    assert got == ADOPTED
    assert {d.address for d in drifted} >= {"machine/nyc1-r01-02", CLUSTER, POOL, "virtualmachine/stray"}


def _changed_lines(old: str, new: str) -> tuple[list[int], list[str]]:
    """New-file line numbers of changed or inserted lines (a removed line counts at its place),
    and the old lines that changed or went."""
    changed: list[int] = []
    gone: list[str] = []
    old_lines, new_lines = old.splitlines(), new.splitlines()
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(
        None, old_lines, new_lines, autojunk=False
    ).get_opcodes():
        if tag == "equal":
            continue
        gone.extend(old_lines[i1:i2])
        added = j2 - j1
        for k in range(max(i2 - i1, added)):  # a removed line counts at the place it was
            changed.append(j1 + 1 + (min(k, added - 1) if added else 0))
    return changed, gone


def test_only_the_drifted_fields_lines_change(adopted: Any) -> None:
    _, before, edits, _ = adopted
    assert sorted(edits.files) == [
        "clusters/k8s-ldn1.yaml",
        "machines/ldn1/r02.yaml",
        "machines/nyc1/r01.yaml",
        "spark-pools/etl.yaml",
        "virtual-machines/k8s-ldn1-control-plane.yaml",
    ]
    for path, new in edits.files.items():
        old = before[path]
        changed, gone = _changed_lines(old, new)
        lines = sorted(a.line for a in edits.adopted if a.path == path)
        # Exactly one changed line per drifted scalar field, at the line the result names.
        assert sorted(changed) == lines, path
        assert not any(line.lstrip().startswith("#") for line in gone), path
        assert [c for c in old.splitlines() if c.lstrip().startswith("#")] == [
            c for c in new.splitlines() if c.lstrip().startswith("#")
        ], path
        assert old.count("\n---\n") == new.count("\n---\n")
        for adoption in (a for a in edits.adopted if a.path == path and a.value is not None):
            key = new.splitlines()[adoption.line - 1].split(": ")[0].strip()
            assert adoption.field_path[-1] == key, (path, key, adoption)


def test_the_edits_keep_the_files_style(adopted: Any) -> None:
    repo, _, _, _ = adopted
    rack = (repo / "machines/nyc1/r01.yaml").read_text()
    # The second document of the file (nyc1-r01-02) keeps the plain style of `power: on`.
    second = rack.split("\n---\n")[2]
    assert "\n  power: off\n  bootDevice: network\n" in second
    # A defaulted field goes into its own mapping, after the key before it in the model.
    third = rack.split("\n---\n")[3]
    assert "\n  bootDevice: disk\n  bootPersistent: false\n  hardware:\n" in third
    pool = (repo / "spark-pools/etl.yaml").read_text()
    assert "\n    requests.cpu: 500\n" in pool  # an integer stays an integer, as written
    assert "\n      cpu: 3\n      memory: 4Gi\n" in pool
    cluster = (repo / "clusters/k8s-ldn1.yaml").read_text()
    assert "        pod-security.kubernetes.io/enforce: restricted\n" in cluster
    assert "team: observability" not in cluster


def test_the_edited_repo_passes_validate(adopted: Any) -> None:
    repo, _, _, _ = adopted
    code, output = run_cli("validate", str(repo))
    assert code == 0, output
    assert "valid (0 errors" in output


def test_planning_again_finds_the_spec_as_live(adopted: Any) -> None:
    repo, _, edits, _ = adopted
    _, revision = loaded(repo)
    plan = plan_of(revision)
    machines_and_vms = set(MACHINES_LIVE) | set(VMS_LIVE)
    left = [
        e
        for e in plan.entries
        if e.address in machines_and_vms and e.finding in (Finding.CHANGE, Finding.OBSERVE_ONLY)
    ]
    assert left == []
    documents = {d.document.address: d.document for d in revision.documents}
    for adoption in edits.adopted:
        value: Any = documents[adoption.drifted.address].model_dump(mode="json")
        *parents, last = adoption.field_path
        for part in parents:
            value = value[part]
        if adoption.value is None:
            assert last not in value, adoption  # a value gone live is gone from the spec
        else:
            assert value[last] == adoption.value, adoption


# --- what no spec edit expresses -----------------------------------------------------------------


def test_inexpressible_fields_come_back_with_reasons(adopted: Any) -> None:
    _, _, edits, _ = adopted
    reasons = {
        (n.drifted.address, n.drifted.field.split(" ")[-1], n.what): n.reason for n in edits.not_adopted
    }
    assert "never touches it" in reasons[("virtualmachine/stray", "host", "")]
    assert (
        "cannot tell a removed taint" in reasons[(CLUSTER, "node/ldn1-r01-02", "taint gpu=a100:NoSchedule")]
    )
    assert "rendered by fleet" in reasons[(CLUSTER, "data.k", "")]
    assert "pool's node selector" in reasons[(POOL, "node/nyc1-r03-02", "label fleet.acme.io/pool")]
    assert "rendered by fleet from the pool's spec" in reasons[(POOL, "data.x", "data.x")]
    for reason in reasons.values():
        assert "\n" not in reason and len(reason) < 300


@pytest.mark.parametrize(
    ("field", "live", "why"),
    [
        pytest.param(
            "disks", [{"name": "root", "pool": "default"}], "edit spec.disks by hand", id="vm-disks-lack-size"
        ),
        pytest.param("networks", [], "edit spec.networks by hand", id="vm-networks"),
        pytest.param("power", "paused", "decide which by hand", id="vm-paused-is-no-spec-state"),
        pytest.param("config/baseline : motd", "changed", "playbooks", id="config-drift-is-on-the-host"),
        pytest.param("host", "nyc1-r01-02", "would not validate", id="vm-moved-to-a-non-hypervisor"),
        pytest.param("vcpus", 5000, "cannot hold the live value", id="vm-value-out-of-range"),
        pytest.param("apiToken", "x", "named like a credential", id="credential-named-field"),
    ],
)
def test_a_vm_field_no_edit_expresses(repo: Path, field: str, live: Any, why: str) -> None:
    snapshot, revision = loaded(repo)
    drifted = [
        DriftedField("virtualmachine/k8s-ldn1-cp-1", field, live),
        DriftedField("virtualmachine/k8s-ldn1-cp-2", "vcpus", 6),  # still adopted beside it
    ]
    edits = adopt_drift(snapshot, revision, drifted)
    assert [n.drifted.field for n in edits.not_adopted] == [field]
    assert why in edits.not_adopted[0].reason
    assert [a.spec_field for a in edits.adopted] == ["spec.vcpus"]
    assert edits.adopted[0].drifted.address == "virtualmachine/k8s-ldn1-cp-2"


def test_a_secret_is_never_written(repo: Path) -> None:
    snapshot, revision = loaded(repo)
    drifted = [
        DriftedField(CLUSTER, f"{NAMESPACE_KEY} metadata.labels.fleet.acme.io/api-key", SECRET),
        DriftedField(CLUSTER, "v1/Secret/ns/creds data.password", "(hidden)"),
        DriftedField(CLUSTER, f"{NAMESPACE_KEY} metadata.labels.team", "-----BEGIN RSA PRIVATE KEY-----x"),
        DriftedField("machine/nope", "power", "on"),
    ]
    edits = adopt_drift(snapshot, revision, drifted)
    assert edits.files == {} and edits.adopted == ()
    reasons = [n.reason for n in edits.not_adopted]
    assert "named like a credential" in reasons[0]
    assert "named like a credential" in reasons[1]  # a Secret's key names it one
    assert "private key" in reasons[2]
    assert "no spec in the repo declares machine/nope" in reasons[3]


def test_an_invalid_revision_is_refused(repo: Path) -> None:
    rack = repo / "machines/nyc1/r01.yaml"
    rack.write_text(rack.read_text().replace("bootDevice: disk", "bootDevice: dsik", 1))
    snapshot = read_worktree(repo)
    with pytest.raises(PermanentError, match="adopted only into a valid revision"):
        adopt_drift(snapshot, load_revision(snapshot), [DriftedField("machine/nyc1-r01-02", "power", "off")])


def test_a_volcano_queue_and_a_pools_priority(repo: Path) -> None:
    snapshot, revision = loaded(repo)
    queue = "scheduling.volcano.sh/v1beta1/Queue/_/adhoc"
    drifted = [
        DriftedField("sparkpool/adhoc", f"{queue} spec.capability.cpu", "500"),
        DriftedField("sparkpool/adhoc", f"{queue} spec.guarantee.resource.memory", "327680Mi"),
        DriftedField("sparkpool/adhoc", f"{queue} spec.deserved.memory", "1Ti"),
        DriftedField("sparkpool/adhoc", f"{queue} spec.weight", 2),
        DriftedField(
            "sparkpool/adhoc",
            "scheduling.k8s.io/v1/PriorityClass/_/spark-adhoc preemptionPolicy",
            "Sometimes",
        ),
    ]
    edits = adopt_drift(snapshot, revision, drifted)
    assert {a.spec_field: a.value for a in edits.adopted} == {
        "spec.queue.max.cpu": "500",
        "spec.queue.guaranteed.memory": "327680Mi",
        "spec.queue.deserved.memory": "1Ti",
    }
    text = edits.files["spark-pools/adhoc.yaml"]
    assert "\n      cpu: 500\n" in text  # an integer, as the spec writes it
    assert "\n      memory: 320Gi\n" in text  # in the spec's unit
    assert "\n      memory: 1024Gi\n" in text
    reasons = [n.reason for n in edits.not_adopted]
    assert "rendered by fleet from the pool's spec" in reasons[0]
    assert "cannot hold the live value" in reasons[1] and "preemptionPolicy" in reasons[1]

    # A live value the spec already holds, in another unit, changes no file.
    same = adopt_drift(
        snapshot, revision, [DriftedField("sparkpool/adhoc", f"{queue} spec.capability.memory", "1835008Mi")]
    )
    assert same.files == {} and len(same.adopted) == 1


def test_a_quantity_keeps_the_specs_unit(repo: Path) -> None:
    path = repo / "virtual-machines/k8s-ldn1-control-plane.yaml"
    path.write_text(path.read_text().replace("memory: 32Gi", "memory: 32768Mi", 1))
    snapshot, revision = loaded(repo)
    drifted = [DriftedField("virtualmachine/k8s-ldn1-cp-1", "memory", "48Gi")]
    edits = adopt_drift(snapshot, revision, drifted)
    assert "\n  memory: 49152Mi\n" in edits.files["virtual-machines/k8s-ldn1-control-plane.yaml"]


# --- the editor alone: styles and what it refuses ------------------------------------------------

STYLED = """\
# a comment that stays
p: on
a: &shared 1
b: *shared
q: "quoted"
s: 'single'
flow: {x: 1, y: two}
block: |
  text
m:
  k: v   # why v
  l: w
"""


@pytest.mark.parametrize(
    ("path", "value", "line"),
    [
        pytest.param(("q",), "true", 'q: "true"', id="double-quotes-kept"),
        pytest.param(("s",), "it's", "s: 'it''s'", id="single-quotes-kept"),
        pytest.param(("m", "k"), "123", 'k: "123"   # why v', id="a-number-string-is-quoted-comment-kept"),
        pytest.param(("m", "k"), "yes", 'k: "yes"   # why v', id="a-yaml-1.1-boolean-is-quoted"),
        pytest.param(("p",), "off", "p: off", id="unless-the-file-writes-such-words-plain"),
        pytest.param(("m", "k"), "010", 'k: "010"   # why v', id="a-yaml-1.1-octal-is-quoted"),
        pytest.param(("m", "k"), "null", 'k: "null"   # why v', id="null-string-quoted"),
        pytest.param(("m", "k"), "a: b", 'k: "a: b"   # why v', id="colon-space-quoted"),
        pytest.param(("flow", "y"), "x, z", 'flow: {x: 1, y: "x, z"}', id="flow-context-quoted"),
        pytest.param(("m", "o2"), 7, "  o2: 7", id="insert-at-the-mappings-indentation"),
        pytest.param(("m", "n"), 7, '  "n": 7', id="an-inserted-key-yaml-1.1-reads-as-a-boolean-is-quoted"),
    ],
)
def test_scalars_are_written_in_the_files_style(path: tuple[str, ...], value: Any, line: str) -> None:
    edited = edit_spec_text("f.yaml", STYLED, [FieldEdit(0, path, value)])
    assert edited.refused == {}
    changed, _ = _changed_lines(STYLED, edited.text)
    assert len(changed) == 1
    assert edited.text.splitlines()[changed[0] - 1].strip() == line.strip()


@pytest.mark.parametrize(
    ("path", "value", "why"),
    [
        pytest.param(("a",), 2, "anchor &shared", id="anchored-value"),
        pytest.param(("block",), "x", "block scalar", id="block-scalar"),
        pytest.param(("m",), "x", "list or mapping", id="a-mapping-is-not-a-value"),
        pytest.param(("flow", "z"), 1, "flow style", id="insert-into-a-flow-mapping"),
        pytest.param(("nope", "x"), 1, "has no nope", id="missing-parent"),
        pytest.param(("m", "zz"), REMOVE, "nothing to remove", id="remove-what-is-not-there"),
    ],
)
def test_the_editor_refuses_what_it_cannot_write_safely(path: tuple[str, ...], value: Any, why: str) -> None:
    edited = edit_spec_text("f.yaml", STYLED, [FieldEdit(0, path, value), FieldEdit(0, ("q",), "new")])
    assert why in edited.refused[0]
    assert 1 in edited.lines and 0 not in edited.lines
    assert edited.text == STYLED.replace('q: "quoted"', 'q: "new"')


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("a: 1\n---\nb: 2\n---\n# c\nc: 3\n", id="a-first-document-without-marker"),
        pytest.param("# head\n---\na: 1\n---\n---\nc: 3\n", id="an-empty-document-counts"),
        pytest.param("--- {a: 1}\n--- # x\nb: 2\n---\nc: 3\n...\n", id="document-end-marker-composes-whole"),
        pytest.param("%YAML 1.2\n---\na: 1\n---\nb: 2\n---\nc: 3\n", id="a-directive-composes-whole"),
    ],
)
def test_only_the_edited_documents_are_composed_yet_the_right_one_is_edited(text: str) -> None:
    edited = edit_spec_text("f.yaml", text, [FieldEdit(2, ("c",), 4)])
    assert edited.refused == {}
    assert edited.text == text.replace("c: 3", "c: 4")
    assert edited.text.splitlines()[edited.lines[0] - 1] == "c: 4"


def test_a_flow_collection_over_several_lines_is_a_flow_context() -> None:
    text = "m: {\n  a: x,\n  b: y }\n"
    edited = edit_spec_text("f.yaml", text, [FieldEdit(0, ("m", "a"), "p, q")])
    assert edited.text == 'm: {\n  a: "p, q",\n  b: y }\n'


def test_crlf_and_a_last_line_without_newline_are_kept() -> None:
    text = "a: 1\r\nm:\r\n  k: v"
    edited = edit_spec_text("f.yaml", text, [FieldEdit(0, ("a",), 2), FieldEdit(0, ("m", "j"), "x")])
    assert edited.text == "a: 2\r\nm:\r\n  k: v\r\n  j: x\r\n"


# --- a commit on a branch ------------------------------------------------------------------------


@pytest.fixture
def remote(tmp_path: Path) -> tuple[Path, str]:
    """A bare repository holding the example at `main`, and that commit."""
    work = copy_example(tmp_path / "work")
    base = git_init(work)
    bare = tmp_path / "remote.git"
    bare.mkdir()
    git(bare, "init", "-q", "--bare", "-b", "main")
    git(work, "push", "-q", str(bare), "main")
    return bare, base


def _drift_edits(base_dir: Path, power: str) -> dict[str, str | None]:
    snapshot, revision = loaded(base_dir)
    edits = adopt_drift(snapshot, revision, [DriftedField("machine/nyc1-r01-02", "power", power)])
    return dict(edits.files)


def test_commit_and_push_to_a_bare_repository(remote: tuple[Path, str], tmp_path: Path) -> None:
    bare, base = remote
    cache = tmp_path / "cache"
    files = _drift_edits(tmp_path / "work", "off")
    files["README.md"] = None  # a deletion rides along
    commit = commit_files(
        str(bare), "main", files, "fleet: adopt drift", "fleet", "fleet@example.invalid", cache
    )
    push_branch(str(bare), "fleet/drift/nyc1", commit, force=False, cache_dir=cache)
    assert git(bare, "rev-parse", "refs/heads/fleet/drift/nyc1") == commit
    assert git(bare, "rev-parse", f"{commit}^") == base
    assert git(bare, "diff", "--name-only", base, "fleet/drift/nyc1").splitlines() == [
        "README.md",
        "machines/nyc1/r01.yaml",
    ]
    assert (
        git(bare, "log", "-1", "--format=%an <%ae> %s", commit)
        == "fleet <fleet@example.invalid> fleet: adopt drift"
    )
    assert git(bare, "rev-parse", "main") == base  # nothing else moved

    # The drift changed again: a new commit on base. Without force it is no fast-forward.
    again = commit_files(str(bare), base, _drift_edits(tmp_path / "work", "on"), "m", "fleet", "f@x", cache)
    assert again != commit
    with pytest.raises(PermanentError, match="moved on"):
        push_branch(str(bare), "fleet/drift/nyc1", again, force=False, cache_dir=cache)
    push_branch(str(bare), "fleet/drift/nyc1", again, force=True, cache_dir=cache)
    assert git(bare, "rev-parse", "fleet/drift/nyc1") == again
    assert git(bare, "rev-parse", f"{again}^") == base


def test_commit_and_push_through_a_file_url(remote: tuple[Path, str], tmp_path: Path) -> None:
    bare, base = remote
    url = f"file://{bare}"
    cache = tmp_path / "cache"
    files = _drift_edits(tmp_path / "work", "off")
    commit = commit_files(url, "main", files, "adopt", "fleet", "f@x", cache)
    push_branch(url, "fleet/drift/nyc1", commit, force=True, cache_dir=cache)
    assert git(bare, "rev-parse", "fleet/drift/nyc1") == commit
    assert git(bare, "diff", "--name-only", base, commit).splitlines() == ["machines/nyc1/r01.yaml"]
    shown = git(bare, "show", f"{commit}:machines/nyc1/r01.yaml")
    assert shown + "\n" == files["machines/nyc1/r01.yaml"]
    second = commit_files(url, "main", _drift_edits(tmp_path / "work", "on"), "again", "fleet", "f@x", cache)
    push_branch(url, "fleet/drift/nyc1", second, force=True, cache_dir=cache)
    assert git(bare, "rev-parse", "fleet/drift/nyc1") == second
    with pytest.raises(PermanentError, match="moved on"):
        push_branch(url, "fleet/drift/nyc1", commit, force=False, cache_dir=cache)


def test_a_monorepo_directory(tmp_path: Path) -> None:
    work = tmp_path / "mono"
    copy_example(work / "infra" / "fleet")
    (work / "other.txt").write_text("not fleet's\n")
    base = git_init(work)
    cache = tmp_path / "cache"
    files = {"machines/nyc1/r01.yaml": "changed: true\n"}
    commit = commit_files(str(work), base, files, "m", "fleet", "f@x", cache, directory="infra/fleet")
    assert git(work, "diff", "--name-only", base, commit) == "infra/fleet/machines/nyc1/r01.yaml"
    with pytest.raises(FleetError, match="not a file path"):
        commit_files(str(work), base, {"../x": "y"}, "m", "fleet", "f@x", cache, directory="infra/fleet")
    with pytest.raises(PermanentError, match="is a directory"):
        commit_files(str(work), base, {"machines": "y"}, "m", "fleet", "f@x", cache, directory="infra/fleet")
    with pytest.raises(PermanentError, match="no such file"):
        commit_files(
            str(work), base, {"nope.yaml": None}, "m", "fleet", "f@x", cache, directory="infra/fleet"
        )
    with pytest.raises(PermanentError, match="checked out"):
        push_branch(str(work), "main", commit, force=True, cache_dir=cache)


# --- over HTTP, behind authentication ------------------------------------------------------------


class _GitHttp(http.server.BaseHTTPRequestHandler):
    """Git's smart HTTP protocol from `git http-backend` (CGI), behind HTTP Basic authentication."""

    root: Path
    password: str

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _serve(self) -> None:
        body = self._body()
        expected = "Basic " + base64.b64encode(f"fleet:{self.password}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        env = {
            "PATH": os.environ["PATH"],
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REMOTE_USER": "fleet",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
        }
        done = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, check=False)
        head, _, payload = done.stdout.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(": ")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def http_remote(remote: tuple[Path, str]) -> Iterator[tuple[str, Path, str]]:
    bare, base = remote
    git(bare, "config", "http.receivepack", "true")
    handler = type("Handler", (_GitHttp,), {"root": bare.parent, "password": SECRET})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{bare.name}", bare, base
    finally:
        server.shutdown()
        server.server_close()


def test_push_over_http_with_credentials(http_remote: tuple[str, Path, str], tmp_path: Path) -> None:
    url, bare, base = http_remote
    cache = tmp_path / "cache"
    good = GitCredentials("fleet", SECRET)
    assert SECRET not in repr(good)
    commit = commit_files(
        url, "main", _drift_edits(tmp_path / "work", "off"), "adopt", "fleet", "f@x", cache, credentials=good
    )
    push_branch(url, "fleet/drift/nyc1", commit, force=True, credentials=good, cache_dir=cache)
    assert git(bare, "rev-parse", "fleet/drift/nyc1") == commit
    assert git(bare, "rev-parse", f"{commit}^") == base


def test_bad_credentials_fail_cleanly_without_the_secret(
    http_remote: tuple[str, Path, str], tmp_path: Path
) -> None:
    url, bare, _ = http_remote
    cache = tmp_path / "cache"
    wrong = GitCredentials("fleet", SECRET + "-wrong")
    with pytest.raises(SourceError) as fetching:
        commit_files(url, "main", {"x.yaml": "a: 1\n"}, "m", "fleet", "f@x", cache, credentials=wrong)
    assert SECRET not in str(fetching.value)
    with pytest.raises(SourceError) as anonymous:
        commit_files(url, "main", {"x.yaml": "a: 1\n"}, "m", "fleet", "f@x", cache)
    assert "none were given" in str(anonymous.value)

    # The commit is built with good credentials; pushing it with wrong ones is refused.
    good = GitCredentials("fleet", SECRET)
    commit = commit_files(url, "main", {"x.yaml": "a: 1\n"}, "m", "fleet", "f@x", cache, credentials=good)
    with pytest.raises(PermanentError) as pushing:
        push_branch(url, "fleet/drift/x", commit, force=True, credentials=wrong, cache_dir=cache)
    message = str(pushing.value)
    assert "refused the credentials" in message and SECRET not in message
    with pytest.raises(subprocess.CalledProcessError):
        git(bare, "rev-parse", "--verify", "-q", "refs/heads/fleet/drift/x")

    # A secret embedded in the URL is never shown either.
    embedded = url.replace("http://", f"http://fleet:{SECRET}-wrong@")
    with pytest.raises(SourceError) as in_url:
        commit_files(embedded, "main", {"x.yaml": "a: 1\n"}, "m", "fleet", "f@x", tmp_path / "cache2")
    assert SECRET not in str(in_url.value) and "***@" in str(in_url.value)


def test_an_unreachable_remote_is_temporary(remote: tuple[Path, str], tmp_path: Path) -> None:
    from reconciler.errors import TemporaryError

    bare, _ = remote
    url = f"file://{bare}"
    cache = tmp_path / "cache"
    commit = commit_files(url, "main", {"x.yaml": "a: 1\n"}, "m", "fleet", "f@x", cache)
    # The copy in the cache now points at a port where nothing listens.
    git(next((cache / "repos").glob("*.git")), "remote", "set-url", "origin", "http://127.0.0.1:9/r.git")
    with pytest.raises(TemporaryError, match="tried again"):
        push_branch(url, "fleet/drift/x", commit, force=True, cache_dir=cache)
    shutil.rmtree(cache)
    with pytest.raises(PermanentError, match="commit_files"):
        push_branch(url, "fleet/drift/x", commit, force=True, cache_dir=cache)
