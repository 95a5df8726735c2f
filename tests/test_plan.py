"""The plan layer: Machine diffs (changes, observe-only, drift, unknown, orphans), ordering, the Plan value.

Everything here is a pure function of values, so the cases are tables of specs,
observations and last-applied fields with the entries they must give.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from providers.base import Action, Observation, ObservationState, UnknownReason
from reconciler.errors import PermanentError
from reconciler.kinds.machine import diff_machines
from reconciler.kinds.planning import order, ordering_edges
from reconciler.plan.findings import enforcement_mode
from reconciler.plan.graph import dependencies, waves_of
from reconciler.plan.model import (
    SUMMARY_KEYS,
    FieldDiff,
    Finding,
    ObservedState,
    Plan,
    PlanEntry,
    format_value,
)
from reconciler.spec import models

T0 = datetime(2025, 3, 4, 9, 30, tzinfo=UTC)
IN_SYNC = {"power": "on", "bootDevice": "disk", "bootPersistent": True}


def machine(name: str, site: str = "nyc1", **spec: Any) -> models.Machine:
    return models.Machine.model_validate(
        {
            "apiVersion": "fleet/v1alpha1",
            "kind": "Machine",
            "metadata": {"name": name},
            "spec": {
                "site": site,
                "rack": "r01",
                "bmc": {"address": "10.0.0.1", "credentialsRef": "bmc"},
                **spec,
            },
        }
    )


def vm(name: str, host: str, **spec: Any) -> models.VirtualMachine:
    return models.VirtualMachine.model_validate(
        {
            "apiVersion": "fleet/v1alpha1",
            "kind": "VirtualMachine",
            "metadata": {"name": name},
            "spec": {"host": host, "vcpus": 2, "memory": "4Gi", **spec},
        }
    )


def cluster(name: str, members: Sequence[str]) -> models.Cluster:
    return models.Cluster.model_validate(
        {
            "apiVersion": "fleet/v1alpha1",
            "kind": "Cluster",
            "metadata": {"name": name},
            "spec": {
                "apiServer": "https://k8s.example:6443",
                "credentialsRef": "kubeconfig",
                "members": [{"ref": ref} for ref in members],
            },
        }
    )


def spark_pool(name: str, cluster_name: str) -> models.SparkPool:
    return models.SparkPool.model_validate(
        {
            "apiVersion": "fleet/v1alpha1",
            "kind": "SparkPool",
            "metadata": {"name": name},
            "spec": {
                "cluster": cluster_name,
                "namespace": name,
                "queue": {"name": name},
                "nodes": {"selector": {"pool": name}},
            },
        }
    )


def policies(*rules: tuple[str, str, list[str]], orphans: str = "report") -> models.Policies:
    return models.Policies.model_validate(
        {
            "enforcement": [{"field": f, "mode": m, "sites": sites} for f, m, sites in rules],
            "orphans": orphans,
        }
    )


def seen(address: str, **fields: Any) -> Observation:
    return Observation.observed(address, {**IN_SYNC, "inventory": {"serial": "X1"}, **fields}, at=T0)


def entry(address: str, action: Action, *, kind: str = "Machine", **kw: Any) -> PlanEntry:
    return PlanEntry(address, kind, Finding.CHANGE, action, **kw)


Row = tuple[str, Finding, Action | None, tuple[tuple[str, Any, Any], ...]]


def rows(found: Sequence[PlanEntry]) -> list[Row]:
    return [
        (e.address, e.finding, e.action, tuple((f.field, f.before, f.after) for f in e.fields)) for e in found
    ]


# --- diff_machines ---------------------------------------------------------------------

M1 = "machine/m1"
LDN = "machine/l1"

DIFF_CASES = [
    pytest.param([machine("m1")], [seen(M1)], {}, policies(), [], id="in-sync-gives-no-entry"),
    pytest.param(
        [machine("m1")],
        [seen(M1, power="off")],
        {},
        policies(),
        [(M1, Finding.CHANGE, Action.POWER_ON, (("power", "off", "on"),))],
        id="power-differs-and-is-enforced-by-default-so-power-on",
    ),
    pytest.param(
        [machine("m1", power="off")],
        [seen(M1)],
        {},
        policies(),
        [(M1, Finding.CHANGE, Action.POWER_OFF, (("power", "on", "off"),))],
        id="desired-off-gives-power-off",
    ),
    pytest.param(
        [machine("m1")],
        [seen(M1, bootDevice="network", bootPersistent=False)],
        {},
        policies(),
        [
            (
                M1,
                Finding.CHANGE,
                Action.BOOT_DEVICE,
                (("bootDevice", "network", "disk"), ("bootPersistent", False, True)),
            )
        ],
        id="boot-device-and-persistence-are-one-bmc-command-so-one-action",
    ),
    pytest.param(
        [machine("m1", power="off", bootDevice="network")],
        [seen(M1)],
        {},
        policies(),
        [
            (M1, Finding.CHANGE, Action.POWER_OFF, (("power", "on", "off"),)),
            (M1, Finding.CHANGE, Action.BOOT_DEVICE, (("bootDevice", "disk", "network"),)),
        ],
        id="two-fields-differ-gives-two-actions-in-apply-order",
    ),
    pytest.param(
        [machine("m1"), machine("l1", site="ldn1")],
        [seen(M1, power="off"), seen(LDN, power="off")],
        {},
        policies(("power", "enforce", ["nyc1"]), ("power", "observe", ["ldn1"])),
        [
            (LDN, Finding.OBSERVE_ONLY, None, (("power", "off", "on"),)),
            (M1, Finding.CHANGE, Action.POWER_ON, (("power", "off", "on"),)),
        ],
        id="observe-only-site-is-reported-not-applied",
    ),
    pytest.param(
        [machine("l1", site="ldn1", bootDevice="network")],
        [seen(LDN, power="off")],
        {},
        policies(("power", "observe", ["ldn1"])),
        [
            (LDN, Finding.CHANGE, Action.BOOT_DEVICE, (("bootDevice", "disk", "network"),)),
            (LDN, Finding.OBSERVE_ONLY, None, (("power", "off", "on"),)),
        ],
        id="observing-power-still-enforces-boot-device",
    ),
    pytest.param(
        [machine("m1")],
        [seen(M1, power="off")],
        {},
        policies(("power", "observe", []), ("power", "enforce", ["nyc1"])),
        [(M1, Finding.CHANGE, Action.POWER_ON, (("power", "off", "on"),))],
        id="a-site-rule-beats-a-fleet-wide-rule",
    ),
    pytest.param(
        [machine("m1")],
        [Observation.unknown(M1, UnknownReason.TIMEOUT, "no answer in 10s", at=T0)],
        {M1: {"power": "off"}},
        policies(),
        [(M1, Finding.UNKNOWN, None, ())],
        id="unknown-is-never-planned-and-never-drift",
    ),
    pytest.param(
        [machine("m1")], [], {}, policies(), [(M1, Finding.UNKNOWN, None, ())], id="no-observation-is-unknown"
    ),
    pytest.param(
        [machine("m1")],
        [Observation.absent(M1, at=T0)],
        {},
        policies(),
        [(M1, Finding.UNKNOWN, None, ())],
        id="absent-machine-is-not-created-fleet-never-creates-hardware",
    ),
    pytest.param(
        [machine("m1")],
        [seen(M1, power="off")],
        {M1: IN_SYNC},
        policies(),
        [
            (M1, Finding.CHANGE, Action.POWER_ON, (("power", "off", "on"),)),
            (M1, Finding.DRIFT, None, (("power", "on", "off"),)),
        ],
        id="out-of-band-power-off-is-drift-and-is-put-back",
    ),
    pytest.param(
        [machine("m1", power="off")],
        [seen(M1, power="off")],
        {M1: IN_SYNC},
        policies(),
        [(M1, Finding.DRIFT, None, (("power", "on", "off"),))],
        id="someone-did-by-hand-what-the-new-spec-wants-drift-only",
    ),
    pytest.param(
        [machine("m1", power="off")],
        [seen(M1)],
        {M1: IN_SYNC},
        policies(),
        [(M1, Finding.CHANGE, Action.POWER_OFF, (("power", "on", "off"),))],
        id="new-spec-with-live-as-last-applied-is-a-change-not-drift",
    ),
    pytest.param(
        [machine("l1", site="ldn1")],
        [seen(LDN, power="off")],
        {LDN: IN_SYNC},
        policies(("power", "observe", ["ldn1"])),
        [
            (LDN, Finding.OBSERVE_ONLY, None, (("power", "off", "on"),)),
            (LDN, Finding.DRIFT, None, (("power", "on", "off"),)),
        ],
        id="drift-on-an-observed-only-field-is-still-reported",
    ),
    pytest.param(
        [machine("m1")],
        [Observation.observed(M1, {"power": "on"}, at=T0)],
        {M1: IN_SYNC},
        policies(),
        [],
        id="fields-the-provider-did-not-report-are-not-guessed",
    ),
    pytest.param(
        [],
        [seen("machine/gone")],
        {"machine/gone": IN_SYNC},
        policies(orphans="report"),
        [("machine/gone", Finding.ORPHANED, None, ())],
        id="orphan-with-report-policy-is-never-touched",
    ),
    pytest.param(
        [],
        [seen("machine/gone")],
        {"machine/gone": IN_SYNC},
        policies(orphans="powerOff"),
        [("machine/gone", Finding.ORPHANED, Action.POWER_OFF, (("power", "on", "off"),))],
        id="orphan-with-power-off-policy-is-powered-off",
    ),
    pytest.param(
        [],
        [seen("machine/gone", power="off")],
        {"machine/gone": IN_SYNC},
        policies(orphans="powerOff"),
        [("machine/gone", Finding.ORPHANED, None, ())],
        id="orphan-already-off-needs-nothing",
    ),
    pytest.param(
        [],
        [seen("machine/gone")],
        {"machine/gone": IN_SYNC},
        policies(orphans="delete"),
        [("machine/gone", Finding.ORPHANED, Action.DELETE, ())],
        id="orphan-with-delete-policy-is-deleted",
    ),
    pytest.param(
        [],
        [Observation.unknown("machine/gone", UnknownReason.UNREACHABLE, "no route", at=T0)],
        {"machine/gone": IN_SYNC},
        policies(orphans="delete"),
        [("machine/gone", Finding.ORPHANED, None, ())],
        id="unobserved-orphan-is-never-deleted",
    ),
    pytest.param(
        [],
        [],
        {"virtualmachine/other": {"power": "on"}},
        policies(orphans="delete"),
        [],
        id="other-kinds-orphans-are-left-to-their-own-diff",
    ),
]


@pytest.mark.parametrize(("machines", "observations", "last_applied", "policy", "expected"), DIFF_CASES)
def test_diff_machines(
    machines: list[models.Machine],
    observations: list[Observation],
    last_applied: dict[str, dict[str, Any]],
    policy: models.Policies,
    expected: list[Row],
) -> None:
    result = diff_machines(machines, observations, last_applied, policy)
    assert rows(Plan("rev", T0, result.entries).entries) == expected


def test_unknown_entry_carries_the_reason_and_detail() -> None:
    result = diff_machines(
        [machine("m1")],
        [Observation.unknown(M1, UnknownReason.AUTH_FAILURE, "rejected", at=T0)],
        {},
        policies(),
    )
    (only,) = result.entries
    assert (only.reason, only.detail) == ("auth-failure", "rejected")
    assert result.observed == (ObservedState(M1, ObservationState.UNKNOWN),)


def test_drift_is_first_seen_when_observed_unless_the_store_knows_better() -> None:
    earlier = T0 - timedelta(hours=5)
    observations = [seen(M1, power="off", bootDevice="network")]
    applied = {M1: IN_SYNC}
    fresh = diff_machines([machine("m1")], observations, applied, policies())
    known = diff_machines(
        [machine("m1")], observations, applied, policies(), drift_first_seen={(M1, "power"): earlier}
    )
    first = {e.fields[0].field: e.first_seen for e in fresh.entries if e.finding is Finding.DRIFT}
    assert first == {"power": T0, "bootDevice": T0}
    first = {e.fields[0].field: e.first_seen for e in known.entries if e.finding is Finding.DRIFT}
    assert first == {"power": earlier, "bootDevice": T0}


def test_two_observations_of_one_machine_are_refused() -> None:
    with pytest.raises(ValueError, match="two observations of machine/m1"):
        diff_machines([machine("m1")], [seen(M1), seen(M1)], {}, policies())


@pytest.mark.parametrize(
    ("rules", "site", "mode"),
    [
        pytest.param((), "nyc1", "enforce", id="no-rule-enforces"),
        pytest.param((("power", "observe", []),), "nyc1", "observe", id="fleet-wide-observe"),
        pytest.param((("power", "observe", ["ldn1"]),), "nyc1", "enforce", id="other-sites-rule-ignored"),
        pytest.param((("bootDevice", "observe", []),), "nyc1", "enforce", id="other-fields-rule-ignored"),
        pytest.param(
            (("power", "enforce", ["nyc1"]), ("power", "observe", ["nyc1"])),
            "nyc1",
            "observe",
            id="equal-rules-disagree-so-the-harmless-observe-wins",
        ),
    ],
)
def test_enforcement_mode(rules: tuple[tuple[str, str, list[str]], ...], site: str, mode: str) -> None:
    assert enforcement_mode(policies(*rules), "power", site) == mode


# --- graph -----------------------------------------------------------------------------


def by_address(documents: Sequence[models.Document]) -> dict[str, models.Document]:
    return {d.address: d for d in documents}


def waves(documents: Sequence[models.Document], entries: Sequence[PlanEntry]) -> list[tuple[str, ...]]:
    """The waves the kinds' edges give a plan's entries."""
    return waves_of(dependencies(ordering_edges(by_address(documents), entries), entries))


HV = "machine/hv1"
GUEST = "virtualmachine/guest1"
NODE = "machine/node1"
K8S = "cluster/k8s"
POOL = "sparkpool/pool"
DOCUMENTS: list[models.Document] = [
    machine("hv1", role="hypervisor"),
    machine("node1", role="kubernetes-node"),
    machine("spare"),
    vm("guest1", "hv1"),
    cluster("k8s", ["machine/node1", "virtualmachine/guest1"]),
    spark_pool("pool", "k8s"),
]

GRAPH_CASES = [
    pytest.param(
        [entry(HV, Action.POWER_ON), entry(GUEST, Action.POWER_ON, kind="VirtualMachine")],
        [(HV,), (GUEST,)],
        id="hypervisor-before-its-vms",
    ),
    pytest.param(
        [entry(HV, Action.POWER_OFF), entry(GUEST, Action.POWER_OFF, kind="VirtualMachine")],
        [(GUEST,), (HV,)],
        id="vms-are-stopped-before-their-host-powers-off",
    ),
    pytest.param(
        [
            entry(NODE, Action.POWER_ON),
            entry(K8S, Action.UPDATE, kind="Cluster"),
            entry(POOL, Action.UPDATE, kind="SparkPool"),
        ],
        [(NODE,), (K8S,), (POOL,)],
        id="nodes-before-cluster-before-spark-pool",
    ),
    pytest.param(
        [entry(HV, Action.POWER_ON), entry(POOL, Action.CREATE, kind="SparkPool")],
        [(HV,), (POOL,)],
        id="dependencies-hold-through-resources-with-nothing-planned",
    ),
    pytest.param(
        [
            entry("machine/spare", Action.POWER_ON),
            entry(NODE, Action.BOOT_DEVICE),
            entry(NODE, Action.POWER_ON),
        ],
        [("machine/node1", "machine/spare")],
        id="independent-changes-share-a-wave-and-an-address-appears-once",
    ),
    pytest.param([PlanEntry(HV, "Machine", Finding.DRIFT)], [], id="nothing-planned-no-waves"),
]


@pytest.mark.parametrize(("entries", "expected"), GRAPH_CASES)
def test_waves(entries: list[PlanEntry], expected: list[tuple[str, ...]]) -> None:
    assert waves(DOCUMENTS, entries) == expected
    assert waves(DOCUMENTS, list(reversed(entries))) == expected


def test_starting_a_vm_on_a_host_being_powered_off_is_refused() -> None:
    entries = [entry(HV, Action.POWER_OFF), entry(GUEST, Action.POWER_ON, kind="VirtualMachine")]
    with pytest.raises(
        PermanentError, match="power-on virtualmachine/guest1 on machine/hv1, which it also powers off"
    ):
        waves(DOCUMENTS, entries)


def test_a_dependency_cycle_is_a_clear_permanent_error() -> None:
    entries = [
        entry("machine/a", Action.POWER_ON, depends_on=("machine/b",)),
        entry("machine/b", Action.POWER_ON, depends_on=("machine/c",)),
        entry("machine/c", Action.POWER_ON, depends_on=("machine/a",)),
    ]
    with pytest.raises(PermanentError, match="cycle: machine/") as caught:
        waves([], entries)
    assert {"machine/a", "machine/b", "machine/c"} <= set(
        caught.value.message.split(": ", 1)[1].split(" -> ")
    )


def test_order_entries_fills_depends_on_of_planned_entries_only() -> None:
    drift = PlanEntry(GUEST, "VirtualMachine", Finding.DRIFT, fields=(FieldDiff("power", "on", "off"),))
    entries = [entry(HV, Action.POWER_ON), entry(POOL, Action.CREATE, kind="SparkPool"), drift]
    ordered, planned_waves = order(by_address(DOCUMENTS), entries)
    assert {e.address: e.depends_on for e in ordered} == {HV: (), POOL: (HV,), GUEST: ()}
    assert planned_waves == ((HV,), (POOL,))
    edges = ordering_edges(by_address(DOCUMENTS), entries)
    assert dependencies(edges, entries) == {HV: frozenset(), POOL: frozenset({HV})}


# --- the Plan value --------------------------------------------------------------------


def sample_plan(**changes: Any) -> Plan:
    entries = (
        entry("machine/b", Action.POWER_ON, fields=(FieldDiff("power", "off", "on"),)),
        entry("machine/b", Action.BOOT_DEVICE, fields=(FieldDiff("bootDevice", "network", "disk"),)),
        entry("machine/a", Action.POWER_ON, fields=(FieldDiff("power", "off", "on"),)),
        PlanEntry(
            "machine/a", "Machine", Finding.DRIFT, None, (FieldDiff("power", "on", "off"),), first_seen=T0
        ),
        PlanEntry("machine/a", "Machine", Finding.DRIFT, None, (FieldDiff("bootDevice", "disk", "cdrom"),)),
        PlanEntry("machine/c", "Machine", Finding.UNKNOWN, reason="timeout", detail="10s"),
        PlanEntry("machine/d", "Machine", Finding.UNKNOWN, reason="auth-failure"),
        PlanEntry("machine/e", "Machine", Finding.ORPHANED, Action.POWER_OFF, reason="orphans=powerOff"),
    )
    observed = (
        ObservedState("machine/a", ObservationState.OBSERVED, (("power", "off"),)),
        ObservedState("machine/b", ObservationState.OBSERVED, (("power", "off"),)),
        ObservedState("machine/c", ObservationState.UNKNOWN),
    )
    base = Plan("3f2a9c1", T0, entries, observed)
    return dataclasses.replace(base, **changes)


def test_plan_is_sorted_by_address_then_apply_order_whatever_the_input_order() -> None:
    plan = sample_plan()
    shuffled = list(plan.entries)
    random.Random(7).shuffle(shuffled)
    assert Plan(plan.revision, plan.created_at, tuple(shuffled), plan.observed) == plan
    assert [(e.address, e.action) for e in plan.changes()] == [
        ("machine/a", Action.POWER_ON),
        ("machine/b", Action.BOOT_DEVICE),  # the boot device is set before the power-on uses it
        ("machine/b", Action.POWER_ON),
        ("machine/e", Action.POWER_OFF),
    ]
    assert plan.has_changes


def test_summary_counts_actions_and_resources() -> None:
    plan = sample_plan()
    counts = plan.summary()
    assert list(counts) == list(SUMMARY_KEYS)
    assert {k: v for k, v in counts.items() if v} == {
        "power-on": 2,
        "power-off": 1,
        "boot-device": 1,
        "drift": 1,  # one machine with two drifted fields
        "orphaned": 1,
        "unknown": 2,
    }
    assert plan.summary_line() == (
        "Plan: incomplete: 2 of 5 resources not observed (1 auth-failure, 1 timeout); "
        "2 to power on, 1 to power off, 1 to set boot device, 1 drifted, 1 orphaned."
    )


@pytest.mark.parametrize(
    ("entries", "line"),
    [
        pytest.param((), "Plan: no changes.", id="empty"),
        pytest.param(
            (PlanEntry("machine/c", "Machine", Finding.UNKNOWN),),
            "Plan: incomplete: 1 of 1 resource not observed (1 unknown); no changes among the rest.",
            id="unknown-is-never-no-changes-the-plan-says-it-is-incomplete",
        ),
    ],
)
def test_summary_line_without_changes(entries: tuple[PlanEntry, ...], line: str) -> None:
    plan = Plan("r", T0, entries)
    assert plan.summary_line() == line
    assert not plan.has_changes and plan.changes() == ()


def test_fingerprint_is_stable_across_time_and_wording() -> None:
    plan = sample_plan()
    later = sample_plan(created_at=T0 + timedelta(days=1))
    reworded = sample_plan(
        entries=tuple(dataclasses.replace(e, detail=e.detail + " (again)") for e in plan.entries)
    )
    assert plan.fingerprint() == later.fingerprint() == reworded.fingerprint()
    assert plan.fingerprint().startswith("sha256:") and len(plan.fingerprint()) == 7 + 64


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param(
            {"observed": (ObservedState("machine/a", ObservationState.OBSERVED, (("power", "on"),)),)},
            id="an-observation-changed",
        ),
        pytest.param({"revision": "4b5c6d7"}, id="the-revision-changed"),
        pytest.param({"entries": ()}, id="the-entries-changed"),
    ],
)
def test_fingerprint_changes_when_what_the_plan_rests_on_changes(changes: dict[str, Any]) -> None:
    assert sample_plan(**changes).fingerprint() != sample_plan().fingerprint()


def test_fingerprint_follows_observations_through_the_diff() -> None:
    def plan_for(observation: Observation) -> Plan:
        result = diff_machines([machine("m1")], [observation], {}, policies())
        return Plan("rev", T0, result.entries, result.observed)

    same = plan_for(seen(M1, inventory={"serial": "other"})).fingerprint()
    assert plan_for(seen(M1)).fingerprint() == same, "inventory is not what a plan rests on"
    again = Observation.observed(M1, {**IN_SYNC}, at=T0 + timedelta(minutes=5))
    assert plan_for(again).fingerprint() == same, "observing again later changes nothing"
    assert plan_for(seen(M1, bootPersistent=False)).fingerprint() != same


def test_an_entry_becomes_the_providers_change() -> None:
    desired = machine("m1")
    change = entry(M1, Action.POWER_ON, fields=(FieldDiff("power", "off", "on"),)).change(desired)
    assert (change.address, change.action, change.desired) == (M1, Action.POWER_ON, desired)
    assert [(f.field, f.before, f.after) for f in change.fields] == [("power", "off", "on")]
    with pytest.raises(ValueError, match="never applied"):
        PlanEntry(M1, "Machine", Finding.DRIFT).change(desired)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        Plan("r", datetime(2025, 1, 1))


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        pytest.param("on", "on", id="plain-word-bare"),
        pytest.param("true", '"true"', id="a-string-that-reads-as-json-keeps-quotes"),
        pytest.param(True, "true", id="boolean"),
        pytest.param(None, "null", id="none"),
        pytest.param("two words", '"two words"', id="spaces-quoted"),
        pytest.param(16, "16", id="number"),
    ],
)
def test_format_value(value: Any, shown: str) -> None:
    assert format_value(value) == shown
