"""The plan layer for VirtualMachines: create, update (live or at a restart), power, replace on a
host move, drift, orphans, unmanaged domains, host capacity and the order against hosts.

Pure functions of values: each case is a spec, what the hypervisor reported and what
fleet last applied, with the entries they must give.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import jsonschema
import pytest
from test_plan import T0, machine, rows, vm

from providers.base import Action, Observation, UnknownReason
from reconciler.apply.record import applied_fields
from reconciler.errors import PermanentError
from reconciler.kinds.planning import order
from reconciler.kinds.virtualmachine import check_host_capacity, converged_vm_fields, diff_virtual_machines
from reconciler.plan.model import FieldDiff, Finding, Plan, PlanEntry
from reconciler.report.markdown import render_markdown
from reconciler.report.plan_json import plan_schema, plan_to_dict
from reconciler.report.text import plan_text
from reconciler.spec import models

HOSTS = {
    "hv1": machine("hv1", role="hypervisor", hardware={"cpus": 8, "memory": "32Gi"}),
    "hv2": machine("hv2", role="hypervisor", site="ldn1"),
}
A = "virtualmachine/a"


def fleet(**policies: Any) -> models.Fleet:
    return models.Fleet.model_validate(
        {
            "apiVersion": "fleet/v1alpha1",
            "kind": "Fleet",
            "metadata": {"name": "test"},
            "spec": {
                "sites": [
                    {"name": "nyc1", "racks": [{"name": "r01"}]},
                    {"name": "ldn1", "racks": [{"name": "r01"}]},
                ],
                "credentials": {"bmc": {"env": "TEST_BMC"}},
                "policies": policies,
            },
        }
    )


def live(address: str = A, **fields: Any) -> Observation:
    """A running domain fleet owns, as the spec `vm("a", "hv1")` wants it."""
    base: dict[str, Any] = {
        "host": "hv1",
        "uuid": "6e1c0b9a-0000-4000-8000-000000000001",
        "owned": True,
        "power": "on",
        "vcpus": 2,
        "maxVcpus": 2,
        "configVcpus": 2,
        "memory": "4Gi",
        "maxMemory": "4Gi",
        "configMemory": "4Gi",
        "autostart": True,
        "disks": [],
        "networks": [],
    }
    return Observation.observed(address, {**base, **fields}, at=T0)


def diff(
    specs: list[models.VirtualMachine],
    observations: list[Observation],
    *,
    unmatched: list[Observation] | None = None,
    applied: dict[str, dict[str, Any]] | None = None,
    whole_fleet: bool = True,
    **policies: Any,
) -> list[PlanEntry]:
    found = diff_virtual_machines(
        specs,
        observations,
        unmatched or [],
        applied or {},
        fleet(**policies),
        HOSTS,
        whole_fleet=whole_fleet,
    )
    return list(found.entries)


@pytest.mark.parametrize(
    ("spec", "observation", "policies", "expected"),
    [
        pytest.param(vm("a", "hv1"), live(), {}, [], id="in-sync-nothing-planned"),
        pytest.param(
            vm("a", "hv1"),
            Observation.absent(A, at=T0),
            {},
            [
                (
                    A,
                    Finding.CHANGE,
                    Action.CREATE,
                    (
                        ("host", None, "hv1"),
                        ("power", None, "on"),
                        ("vcpus", None, 2),
                        ("memory", None, "4Gi"),
                        ("autostart", None, True),
                        ("disks", None, []),
                        ("networks", None, []),
                    ),
                )
            ],
            id="absent-is-created",
        ),
        pytest.param(
            vm("a", "hv1", vcpus=1, memory="2Gi"),
            live(),
            {},
            [(A, Finding.CHANGE, Action.UPDATE, (("vcpus", 2, 1), ("memory", "4Gi", "2Gi")))],
            id="shrink-live",
        ),
        pytest.param(
            vm("a", "hv1"),
            live(power="off"),
            {},
            [(A, Finding.CHANGE, Action.POWER_ON, (("power", "off", "on"),))],
            id="stopped-is-started",
        ),
        pytest.param(
            vm("a", "hv1", power="off"),
            live(),
            {},
            [(A, Finding.CHANGE, Action.POWER_OFF, (("power", "on", "off"),))],
            id="running-is-stopped",
        ),
        pytest.param(
            vm("a", "hv1", vcpus=4),
            live(power="off"),
            {},
            [(A, Finding.CHANGE, Action.UPDATE, (("vcpus", 2, 4), ("power", "off", "on")))],
            id="stopped-grows-in-one-update-with-its-start",
        ),
        pytest.param(
            vm("a", "hv2"),
            live(),
            {},
            [(A, Finding.CHANGE, Action.REPLACE, (("host", "hv1", "hv2"),))],
            id="host-moved-is-replaced",
        ),
        pytest.param(
            vm("a", "hv1"),
            Observation.unknown(A, UnknownReason.UNREACHABLE, "hv1 is down", at=T0),
            {},
            [(A, Finding.UNKNOWN, None, ())],
            id="dead-hypervisor-is-unknown-never-absent",
        ),
        pytest.param(
            vm("a", "hv1"),
            live(owned=False, vcpus=8),
            {},
            [(A, Finding.UNMANAGED, None, (("host", "hv1", None),))],
            id="same-name-not-owned-is-left-alone",
        ),
        pytest.param(
            vm("a", "hv2", power="off"),
            live(host="hv2"),
            {"enforcement": [{"field": "power", "mode": "observe", "sites": ["ldn1"]}]},
            [(A, Finding.OBSERVE_ONLY, None, (("power", "on", "off"),))],
            id="observe-policy-of-the-host-site",
        ),
    ],
)
def test_vm_diff(
    spec: models.VirtualMachine, observation: Observation, policies: dict[str, Any], expected: list[Any]
) -> None:
    assert rows(diff([spec], [observation], **policies)) == expected


def test_growth_past_the_maximum_needs_a_restart_that_only_the_policy_allows() -> None:
    grown = vm("a", "hv1", vcpus=4)
    never = diff([grown], [live()])
    assert rows(never) == [(A, Finding.CHANGE, Action.UPDATE, (("vcpus", 2, 4),))]
    assert never[0].reason == "restart-needed"
    assert "next restart" in never[0].detail
    allowed = diff([grown], [live()], vmRestarts="allowed")
    assert allowed[0].reason == "restart"
    # The definition now says 4, the running domain still has 2: waiting for a restart, not a change.
    pending = diff([grown], [live(configVcpus=4, maxVcpus=4, liveMaxVcpus=2)])
    assert rows(pending) == [(A, Finding.OBSERVE_ONLY, None, (("vcpus", 2, 4),))]
    assert pending[0].reason == "restart-pending"
    # Growth within the maximum happens live.
    within = diff([grown], [live(maxVcpus=8)])
    assert within[0].action is Action.UPDATE and within[0].reason == ""


def test_what_a_restart_needed_update_applied_leaves_out_the_fields_still_waiting() -> None:
    grown = vm("a", "hv1", vcpus=4, autostart=False)
    (update,) = diff([grown], [live()])
    assert applied_fields(grown, update) == {"autostart": False}
    (live_update,) = diff([grown], [live(maxVcpus=8)])
    assert applied_fields(grown, live_update) == {"vcpus": 4, "autostart": False}


def test_network_mac_left_open_is_whatever_the_hypervisor_generated() -> None:
    spec = vm("a", "hv1", networks=[{"network": "mgmt"}])
    generated = [{"network": "mgmt", "mac": "52:54:00:aa:bb:cc", "model": "virtio"}]
    assert diff([spec], [live(networks=generated)]) == []
    other = [{"network": "storage", "mac": "52:54:00:aa:bb:cc", "model": "virtio"}]
    (update,) = diff([spec], [live(networks=other)])
    assert update.action is Action.UPDATE and update.reason == "restart-needed"


def test_drift_is_live_moving_away_from_what_fleet_applied() -> None:
    spec = vm("a", "hv1")
    applied = {A: converged_vm_fields(spec, live().fields, fleet().spec.policies, "nyc1")}
    assert applied[A]["vcpus"] == 2 and applied[A]["host"] == "hv1"
    found = diff([spec], [live(vcpus=1, power="off")], applied=applied)
    drift = [(e.finding, e.fields) for e in found if e.finding is Finding.DRIFT]
    assert drift == [
        (Finding.DRIFT, (FieldDiff("power", "on", "off"),)),
        (Finding.DRIFT, (FieldDiff("vcpus", 2, 1),)),
    ]
    # ...and the spec still wins: fleet plans to put it back.
    assert {e.action for e in found if e.finding is Finding.CHANGE} == {Action.UPDATE}


def test_domains_no_spec_names_are_orphans_when_fleet_owns_them_and_unmanaged_otherwise() -> None:
    strays = [
        live("virtualmachine/old", host="hv2"),
        live("virtualmachine/test", owned=False, host="hv1"),
    ]
    report = diff([], [], unmatched=strays)
    assert [(e.address, e.finding, e.action) for e in report] == [
        ("virtualmachine/test", Finding.UNMANAGED, None),
        ("virtualmachine/old", Finding.ORPHANED, None),
    ]
    deleted = diff([], [], unmatched=strays, orphans="delete")
    orphan = next(e for e in deleted if e.finding is Finding.ORPHANED)
    assert orphan.action is Action.DELETE and orphan.fields == (FieldDiff("host", "hv2", None),)
    stopped = diff([], [], unmatched=strays, orphans="powerOff")
    assert next(e for e in stopped if e.finding is Finding.ORPHANED).action is Action.POWER_OFF
    # A selection is not the whole fleet: what it did not select is nobody's orphan.
    partial = diff([], [], unmatched=strays, whole_fleet=False, orphans="delete")
    assert [e.finding for e in partial] == [Finding.UNMANAGED]


def test_an_orphan_that_cannot_be_observed_is_never_acted_on() -> None:
    applied = {"virtualmachine/gone": {"power": "on"}}
    found = diff([], [], applied=applied, orphans="delete")
    assert [(e.address, e.finding, e.action) for e in found] == [
        ("virtualmachine/gone", Finding.ORPHANED, None)
    ]
    assert "not observed" in found[0].detail


def test_a_plan_that_over_commits_a_hypervisor_is_refused() -> None:
    small = [vm(f"v{i}", "hv1", vcpus=2, memory="8Gi") for i in range(4)]
    check_host_capacity(small, HOSTS, ["hv1"])  # 8 vCPUs, 32 GiB: exactly full
    with pytest.raises(PermanentError, match=r"machine/hv1 would be over-committed: 10 vCPUs on 8 CPUs"):
        check_host_capacity([*small, vm("v9", "hv1", vcpus=2, memory="1Gi")], HOSTS, ["hv1"])
    # Stopped guests use nothing; a host without stated hardware is not checked.
    check_host_capacity([*small, vm("v9", "hv1", vcpus=2, power="off")], HOSTS, ["hv1"])
    check_host_capacity([vm("big", "hv2", vcpus=512)], HOSTS, ["hv2"])


def test_a_replaced_vm_leaves_its_old_host_before_that_host_powers_off() -> None:
    documents = [HOSTS["hv1"], HOSTS["hv2"], vm("a", "hv2")]
    entries = [
        PlanEntry(A, "VirtualMachine", Finding.CHANGE, Action.REPLACE, (FieldDiff("host", "hv1", "hv2"),)),
        PlanEntry("machine/hv1", "Machine", Finding.CHANGE, Action.POWER_OFF),
        PlanEntry("machine/hv2", "Machine", Finding.CHANGE, Action.POWER_ON),
    ]
    _, waves = order({d.address: d for d in documents}, entries)
    assert waves == (("machine/hv2",), (A,), ("machine/hv1",))


def test_an_orphan_stops_before_its_host_powers_off() -> None:
    entries = [
        PlanEntry(
            "virtualmachine/old",
            "VirtualMachine",
            Finding.ORPHANED,
            Action.POWER_OFF,
            (FieldDiff("host", "hv1", None), FieldDiff("power", "on", "off")),
        ),
        PlanEntry("machine/hv1", "Machine", Finding.CHANGE, Action.POWER_OFF),
    ]
    _, waves = order({HOSTS["hv1"].address: HOSTS["hv1"]}, entries)
    assert waves == (("virtualmachine/old",), ("machine/hv1",))


def test_a_vm_is_never_started_on_a_host_the_plan_powers_off() -> None:
    documents = [HOSTS["hv1"], vm("a", "hv1")]
    entries = [
        PlanEntry(A, "VirtualMachine", Finding.CHANGE, Action.CREATE),
        PlanEntry("machine/hv1", "Machine", Finding.CHANGE, Action.POWER_OFF),
    ]
    with pytest.raises(PermanentError, match="would create virtualmachine/a on machine/hv1"):
        order({d.address: d for d in documents}, entries)


def test_every_renderer_shows_vm_findings_and_why() -> None:
    strays = [live("virtualmachine/test", owned=False, host="hv1")]
    entries = diff([vm("a", "hv1", vcpus=4)], [live()], unmatched=strays)
    plan = Plan("abc123", datetime(2025, 3, 4, tzinfo=UTC), tuple(entries))
    assert plan.summary()["unmanaged"] == 1
    markdown = render_markdown(plan)
    assert "| unmanaged | 1 |" in markdown and "next restart" in markdown
    text = plan_text(plan)
    assert "Unmanaged" in text and "virtualmachine/test" in text and "next restart" in text
    jsonschema.validate(plan_to_dict(plan), plan_schema())
