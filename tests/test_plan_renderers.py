"""The three renderers of a Plan (text, markdown, JSON) against golden files, the plan schema and size limits.

One realistic plan (two sites, an observe-only site, drift, unknown BMCs, an orphan,
VMs and a Spark pool in dependency order) is rendered by each renderer and compared
with tests/golden/. Run with FLEET_UPDATE_GOLDEN=1 to rewrite the golden files (and
schemas/plan.schema.json) after a deliberate change, then review the diff.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import io
import json
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fleet_testing import ROOT
from jsonschema import Draft202012Validator
from rich.console import Console

from providers.base import Action, Observation, UnknownReason
from reconciler.errors import PermanentError
from reconciler.kinds.machine import diff_machines
from reconciler.kinds.planning import order
from reconciler.plan.model import FieldDiff, Finding, Plan, PlanEntry, Suspended
from reconciler.report import (
    plan_from_dict,
    plan_text,
    plan_to_dict,
    render_json,
    render_markdown,
    render_text,
)
from reconciler.report.plan_json import SCHEMA_FILE, schema_text
from reconciler.spec import models

GOLDEN = Path(__file__).parent / "golden"
SCHEMA_PATH = ROOT / "schemas" / SCHEMA_FILE
UPDATE = os.environ.get("FLEET_UPDATE_GOLDEN") == "1"
T0 = datetime(2025, 3, 4, 9, 30, tzinfo=UTC)


def _doc(kind: str, name: str, spec: dict[str, Any]) -> Any:
    return models.KINDS[kind].model_validate(
        {"apiVersion": "fleet/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}
    )


def _machine(name: str, role: str = "kubernetes-node", **spec: Any) -> models.Machine:
    site, rack = name.split("-")[:2]
    bmc = {"address": f"10.{len(name)}.0.{sum(map(ord, name)) % 250}", "credentialsRef": f"bmc-{site}"}
    machine: models.Machine = _doc(
        "Machine", name, {"site": site, "rack": rack, "role": role, "bmc": bmc, **spec}
    )
    return machine


def _observed(name: str, **fields: Any) -> Observation:
    live = {"power": "on", "bootDevice": "disk", "bootPersistent": True, "reachable": True, **fields}
    return Observation.observed(f"machine/{name}", {**live, "inventory": {"serial": name.upper()}}, at=T0)


def realistic_plan() -> Plan:
    machines = [
        _machine("nyc1-r01-01", role="hypervisor"),
        _machine("nyc1-r01-02"),
        _machine("nyc1-r01-03"),
        _machine("nyc1-r02-01", role="hypervisor", power="off"),
        _machine("nyc1-r02-02", role="storage"),
        _machine("ldn1-r01-01"),
        _machine("ldn1-r01-02"),
    ]
    observations = [
        _observed("nyc1-r01-01", power="off"),  # someone powered it off by hand
        _observed("nyc1-r01-02", bootDevice="network", bootPersistent=False),
        _observed("nyc1-r01-03"),
        _observed("nyc1-r02-01"),
        Observation.unknown(
            "machine/nyc1-r02-02", UnknownReason.TIMEOUT, "no answer from 10.128.2.12:623 in 10s", at=T0
        ),
        _observed("ldn1-r01-01", power="off"),
        Observation.unknown(
            "machine/ldn1-r01-02", UnknownReason.AUTH_FAILURE, "the BMC rejected the password", at=T0
        ),
    ]
    applied = {"power": "on", "bootDevice": "disk", "bootPersistent": True}
    last_applied = {
        "machine/nyc1-r01-01": applied,
        "machine/nyc1-r01-03": applied,
        "machine/nyc1-r03-09": applied,
    }
    fleet_policies = models.Policies.model_validate(
        {
            "enforcement": [
                {"field": "power", "mode": "enforce", "sites": ["nyc1"]},
                {"field": "power", "mode": "observe", "sites": ["ldn1"]},
            ],
            "orphans": "report",
        }
    )
    found = diff_machines(
        machines,
        observations,
        last_applied,
        fleet_policies,
        drift_first_seen={("machine/nyc1-r01-01", "power"): T0 - timedelta(minutes=45)},
    )
    documents: list[models.Document] = [
        *machines,
        _doc("VirtualMachine", "nyc1-ci-runner-1", {"host": "nyc1-r01-01", "vcpus": 8, "memory": "32Gi"}),
        _doc("VirtualMachine", "nyc1-db-1", {"host": "nyc1-r01-01", "vcpus": 4, "memory": "16Gi"}),
        _doc(
            "VirtualMachine",
            "nyc1-old-build-1",
            {"host": "nyc1-r02-01", "vcpus": 2, "memory": "4Gi", "power": "off"},
        ),
        _doc(
            "Cluster",
            "k8s-nyc1",
            {
                "apiServer": "https://k8s-nyc1.acme.internal:6443",
                "credentialsRef": "kubeconfig-k8s-nyc1",
                "members": [
                    {"ref": "machine/nyc1-r01-02"},
                    {"ref": "machine/nyc1-r01-03"},
                    {"ref": "virtualmachine/nyc1-ci-runner-1"},
                ],
            },
        ),
        _doc(
            "SparkPool",
            "spark-nyc1",
            {
                "cluster": "k8s-nyc1",
                "namespace": "spark",
                "queue": {"name": "spark"},
                "quota": {"cpu": "96"},
                "nodes": {"selector": {"pool": "spark"}},
            },
        ),
    ]
    # What the VM, Cluster and SparkPool diffs (not built yet) will produce, written by hand.
    other_kinds = [
        PlanEntry(
            "virtualmachine/nyc1-ci-runner-1",
            "VirtualMachine",
            Finding.CHANGE,
            Action.CREATE,
            (FieldDiff("vcpus", None, 8), FieldDiff("memory", None, "32Gi")),
        ),
        PlanEntry(
            "virtualmachine/nyc1-db-1",
            "VirtualMachine",
            Finding.CHANGE,
            Action.REPLACE,
            (FieldDiff("disks[0].image", "debian-11", "debian-12"),),
        ),
        PlanEntry(
            "virtualmachine/nyc1-old-build-1",
            "VirtualMachine",
            Finding.CHANGE,
            Action.POWER_OFF,
            (FieldDiff("power", "on", "off"),),
        ),
        PlanEntry(
            "cluster/k8s-nyc1",
            "Cluster",
            Finding.CHANGE,
            Action.UPDATE,
            (FieldDiff("members[2].ref", None, "virtualmachine/nyc1-ci-runner-1"),),
        ),
        PlanEntry(
            "sparkpool/spark-nyc1",
            "SparkPool",
            Finding.CHANGE,
            Action.UPDATE,
            (FieldDiff("quota.cpu", "64", "96"),),
        ),
    ]
    entries, planned_waves = order({d.address: d for d in documents}, [*found.entries, *other_kinds])
    # A VM someone suspended: its creation is held, and so are the Cluster membership and the
    # SparkPool that wait for it.
    suspended = (
        Suspended("virtualmachine/nyc1-ci-runner-1", "image rebuild", "alice", T0 - timedelta(hours=2)),
    )
    return Plan("9c1e4b7d2f0a", T0, entries, found.observed, planned_waves, suspended)


def check_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(actual)
        return
    expected = path.read_text() if path.exists() else ""
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(expected.splitlines(True), actual.splitlines(True), name, "actual")
        )
        pytest.fail(f"{name} differs from the renderer's output (FLEET_UPDATE_GOLDEN=1 rewrites it):\n{diff}")


RENDERERS: dict[str, Callable[[Plan], str]] = {
    "plan.txt": plan_text,
    "plan.md": render_markdown,
    "plan.json": render_json,
}


@pytest.mark.parametrize("name", sorted(RENDERERS))
def test_renderer_matches_its_golden_file(name: str) -> None:
    check_golden(name, RENDERERS[name](realistic_plan()))


@pytest.mark.parametrize("name", sorted(RENDERERS))
def test_renderers_are_deterministic_and_leave_the_plan_unchanged(name: str) -> None:
    plan = realistic_plan()
    before = copy.deepcopy(plan)
    first = RENDERERS[name](plan)
    assert RENDERERS[name](realistic_plan()) == first
    assert plan == before


@pytest.mark.parametrize("name", sorted(RENDERERS))
def test_every_renderer_shows_the_same_summary_line(name: str) -> None:
    plan = realistic_plan()
    assert plan.summary_line() == (
        "Plan: incomplete: 2 of 13 resources not observed (1 auth-failure, 1 timeout); 1 to create, "
        "2 to update, 1 to replace, 1 to power on, 2 to power off, 1 to set boot device, "
        "1 observe-only, 1 drifted, 1 orphaned; 3 skipped (suspended)."
    )
    assert plan.summary_line() in RENDERERS[name](plan)


def test_a_suspension_holds_its_changes_and_what_waits_for_them_and_nothing_else() -> None:
    plan = realistic_plan()
    assert plan.held() == {
        "cluster/k8s-nyc1": "skipped: waits for virtualmachine/nyc1-ci-runner-1 (suspended)",
        "sparkpool/spark-nyc1": "skipped: waits for cluster/k8s-nyc1 (held back)",
        "virtualmachine/nyc1-ci-runner-1": (
            "skipped: suspended by alice since 2025-03-04T07:30:00Z: image rebuild"
        ),
    }
    runnable = plan.without_held()
    assert {e.address for e in runnable.changes()} == {e.address for e in plan.changes()} - set(plan.held())
    assert all(set(wave).isdisjoint(plan.held()) for wave in runnable.waves)
    assert runnable.with_finding(Finding.DRIFT) == plan.with_finding(Finding.DRIFT)  # still reported
    # Which resources are suspended is part of what a saved plan promises.
    assert plan.fingerprint() != dataclasses.replace(plan, suspended=()).fingerprint()
    assert plan_from_dict(json.loads(render_json(plan))).suspended == plan.suspended


def test_the_realistic_plan_applies_in_dependency_waves() -> None:
    assert realistic_plan().waves == (
        ("machine/nyc1-r01-01", "machine/nyc1-r01-02", "virtualmachine/nyc1-old-build-1"),
        ("machine/nyc1-r02-01", "virtualmachine/nyc1-ci-runner-1", "virtualmachine/nyc1-db-1"),
        ("cluster/k8s-nyc1",),
        ("sparkpool/spark-nyc1",),
    )


# --- JSON and its schema ---------------------------------------------------------------


def test_schema_file_is_up_to_date_and_a_valid_2020_12_schema() -> None:
    if UPDATE:
        SCHEMA_PATH.write_text(schema_text())
    assert SCHEMA_PATH.read_text() == schema_text(), "FLEET_UPDATE_GOLDEN=1 rewrites schemas/plan.schema.json"
    Draft202012Validator.check_schema(json.loads(SCHEMA_PATH.read_text()))


@pytest.mark.parametrize(
    "plan",
    [
        pytest.param(realistic_plan(), id="realistic"),
        pytest.param(Plan("0" * 40, T0), id="empty"),
    ],
)
def test_rendered_json_is_valid_against_the_schema_file(plan: Plan) -> None:
    validator = Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))
    document = json.loads(render_json(plan))
    assert sorted(e.message for e in validator.iter_errors(document)) == []
    assert document == plan_to_dict(plan)


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        pytest.param(
            lambda d: d["entries"][0].update(action="explode"), "is not one of", id="unknown-action"
        ),
        pytest.param(
            lambda d: d.pop("fingerprint"), "'fingerprint' is a required property", id="no-fingerprint"
        ),
        pytest.param(
            lambda d: d["entries"][-1].update(finding="unknown", action="power-on"),
            "None was expected",
            id="unknown-entry-with-an-action",
        ),
    ],
)
def test_schema_rejects_broken_plans(edit: Callable[[dict[str, Any]], Any], why: str) -> None:
    document = plan_to_dict(realistic_plan())
    edit(document)
    with pytest.raises(PermanentError, match="not a valid saved plan") as caught:
        plan_from_dict(document)
    assert why in caught.value.message


def test_a_saved_plan_loads_back_equal() -> None:
    plan = realistic_plan()
    loaded = plan_from_dict(json.loads(render_json(plan)))
    assert loaded == plan
    assert loaded.fingerprint() == plan.fingerprint()


def test_an_edited_saved_plan_is_refused() -> None:
    document = plan_to_dict(realistic_plan())
    document["observed"][0]["fields"]["power"] = "on"
    with pytest.raises(PermanentError, match="fingerprint does not match"):
        plan_from_dict(document)


# --- text: colour ----------------------------------------------------------------------


def _console_output(**options: Any) -> str:
    buffer = io.StringIO()
    render_text(realistic_plan(), Console(file=buffer, width=100, force_terminal=True, **options))
    return buffer.getvalue()


def test_text_is_coloured_on_a_colour_terminal() -> None:
    assert "\x1b[33m" in _console_output(color_system="standard")  # yellow ~


def test_text_has_no_colour_when_the_console_says_so() -> None:
    output = _console_output(color_system="standard", no_color=True)
    assert not any(code in output for code in ("\x1b[31m", "\x1b[32m", "\x1b[33m", "\x1b[35m", "\x1b[36m"))
    # Bold and dim stay (they are not colour); without them the words are the plain text's.
    assert re.sub(r"\x1b\[[0-9;]*m", "", output) == plan_text(realistic_plan())


# --- markdown: size limit --------------------------------------------------------------


def _big_plan(count: int) -> Plan:
    entries = [
        PlanEntry(
            f"machine/node-{i:05d}",
            "Machine",
            Finding.CHANGE,
            Action.POWER_ON,
            (FieldDiff("power", "off", "on"),),
        )
        for i in range(count)
    ]
    entries += [
        PlanEntry(f"machine/dark-{i:05d}", "Machine", Finding.UNKNOWN, reason="timeout") for i in range(50)
    ]
    return Plan("9c1e4b7d2f0a", T0, tuple(entries))


@pytest.mark.parametrize("limit", [700, 1_000, 4_096, 65_536])
def test_markdown_stays_within_the_size_limit(limit: int) -> None:
    plan = _big_plan(3_000)
    comment = render_markdown(plan, max_chars=limit)
    assert len(comment) <= limit
    assert comment.index(plan.summary_line()) < comment.find("<details>") or "<details>" not in comment
    assert "entries are not shown" in comment
    assert plan.fingerprint() in comment


def test_markdown_that_fits_is_not_truncated() -> None:
    comment = render_markdown(_big_plan(10), max_chars=65_536)
    assert "not shown" not in comment
    assert comment.count("machine/node-") == 10


def test_markdown_limit_too_small_for_the_summary_is_an_error() -> None:
    with pytest.raises(ValueError, match="cannot hold"):
        render_markdown(_big_plan(10), max_chars=100)
