"""The plan layer for operating-system configuration: what Ansible's check mode reported per host
against the configuration version fleet last applied there.

Pure functions of values, plus the parts around them: the version of a configuration, the
fields the executor records, converged state, the renderers and the plan schema, and the
export of playbooks from Git at a revision.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
from fleet_testing import commit_all, git_init
from test_plan import T0, machine, rows, vm

from providers.base import Action, Observation, UnknownReason
from providers.registry import CONFIG as CONFIG_PROVIDER
from reconciler.apply.executor import provider_key
from reconciler.apply.record import applied_fields, record_drift
from reconciler.kinds.config import (
    VERSION_FIELD,
    config_directories,
    config_version,
    configured,
    converged_config,
    diff_config,
)
from reconciler.kinds.machine import MACHINE_FIELDS
from reconciler.kinds.planning import order
from reconciler.plan.model import FieldDiff, Finding, ObservedState, Plan, PlanEntry
from reconciler.report.markdown import render_markdown
from reconciler.report.plan_json import plan_schema, plan_to_dict
from reconciler.report.text import plan_text
from reconciler.source.export import directory_digest
from reconciler.source.git import read_revision
from reconciler.source.worktree import read_worktree
from reconciler.spec import models
from reconciler.state import open_store

CONFIG = {"playbooks": ["playbooks/site.yml"], "vars": {"motd": "hello"}}
M = "machine/web-1"
V1, V2 = "sha256:1111111111111111", "sha256:2222222222222222"
MOTD = {
    "task": "Write the message of the day",
    "module": "ansible.builtin.template",
    "diff": "--- before: /etc/motd\n+++ after: /etc/motd\n@@ -1 +1 @@\n-edited\n+hello",
}

SHELL = {"task": "Rebuild the initramfs", "module": "ansible.builtin.command", "why": "skipped in check mode"}


def host(name: str = "web-1", site: str = "nyc1", **config: Any) -> models.Machine:
    return machine(name, site=site, address="10.0.0.9", config={**CONFIG, **config})


def policies(**extra: Any) -> models.Policies:
    return models.Policies.model_validate(extra)


def checked(
    address: str = M,
    *,
    changes: list[dict[str, str]] | None = None,
    failed: list[dict[str, str]] | None = None,
    unverified: list[dict[str, str]] | None = None,
    total: int = 7,
) -> Observation:
    """What the Ansible provider reports for one host (its `config_fields` shape)."""
    changes, failed, unverified = changes or [], failed or [], unverified or []
    return Observation.observed(
        address,
        {
            "config": {
                "changes": changes,
                "failed": failed,
                "notVerifiable": unverified,
                "coverage": {"verified": total - len(unverified), "total": total},
                "inSync": not (changes or failed or unverified),
            }
        },
        at=T0,
    )


def diff(
    documents: list[models.Machine | models.VirtualMachine],
    observations: list[Observation],
    applied: dict[str, dict[str, Any]] | None = None,
    policy: models.Policies | None = None,
    version: str = V2,
) -> list[Any]:
    found = diff_config(
        documents,
        observations,
        {d.address: version for d in documents},
        applied or {},
        policy or policies(),
        {"hv1": machine("hv1", role="hypervisor", site="ldn1")},
    )
    return list(found.entries)


def test_a_host_that_check_mode_would_change_is_configured_with_the_new_version() -> None:
    (entry,) = diff([host()], [checked(changes=[MOTD])])
    assert rows([entry]) == [
        (
            M,
            Finding.CHANGE,
            Action.CONFIGURE,
            ((VERSION_FIELD, None, V2), ("config/Write the message of the day", "differs", "as specified")),
        )
    ]
    assert "Write the message of the day (ansible.builtin.template) would change:" in entry.detail
    assert "  +hello" in entry.detail.splitlines()


def test_a_host_in_sync_gives_no_entry() -> None:
    assert diff([host()], [checked()], {M: {"config": V2}}) == []


def test_changes_under_the_applied_version_are_drift_and_the_change_puts_them_back() -> None:
    found = diff([host()], [checked(changes=[MOTD])], {M: {"config": V2, "power": "on"}})
    assert rows(found) == [
        (M, Finding.DRIFT, None, (("config/Write the message of the day", "as applied", "changed"),)),
        (
            M,
            Finding.CHANGE,
            Action.CONFIGURE,
            (("config/Write the message of the day", "differs", "as specified"),),
        ),
    ]
    assert found[0].first_seen == T0 and found[0].reason == "out-of-band"


def test_changes_under_a_new_version_are_the_change_not_drift() -> None:
    found = diff([host()], [checked(changes=[MOTD])], {M: {"config": V1}})
    assert [e.finding for e in found] == [Finding.CHANGE]
    assert found[0].fields[0] == FieldDiff(VERSION_FIELD, V1, V2)


def test_tasks_check_mode_cannot_evaluate_are_not_verifiable_never_in_sync() -> None:
    shell = {
        "task": "Rebuild the initramfs",
        "module": "ansible.builtin.command",
        "why": "skipped in check mode",
    }
    (entry,) = diff([host()], [checked(unverified=[shell])], {M: {"config": V2}})
    assert rows([entry]) == [
        (M, Finding.NOT_VERIFIABLE, None, (("config/Rebuild the initramfs", None, "skipped in check mode"),))
    ]
    assert "verified 6 of 7 tasks" in entry.detail


def test_a_task_failing_in_check_mode_is_planned_with_its_message() -> None:
    failure = {"task": "Install chrony", "module": "ansible.builtin.package", "message": "No package chrony"}
    (entry,) = diff([host()], [checked(failed=[failure])], {M: {"config": V2}})
    assert rows([entry]) == [
        (
            M,
            Finding.CHANGE,
            Action.CONFIGURE,
            (("config/Install chrony", "failed in check mode", "No package chrony"),),
        )
    ]


def test_an_unreachable_host_is_unknown_and_nothing_is_planned() -> None:
    gone = Observation.unknown(M, UnknownReason.UNREACHABLE, "ssh: connect to host 10.0.0.9 port 22: refused")
    (entry,) = diff([host()], [gone], {M: {"config": V2}})
    assert (entry.finding, entry.action, entry.reason) == (Finding.UNKNOWN, None, "config-unreachable")
    assert "refused" in entry.detail


def test_the_enforcement_policy_can_only_observe_config_per_site() -> None:
    observe = policies(enforcement=[{"field": "config", "mode": "observe", "sites": ["ldn1"]}])
    guest = vm("db-1", "hv1", address="10.0.1.1", config=CONFIG)
    found = diff(
        [host(), guest],
        [checked(changes=[MOTD]), checked("virtualmachine/db-1", changes=[MOTD])],
        policy=observe,
    )
    assert [(e.address, e.finding, e.action) for e in found] == [
        (M, Finding.CHANGE, Action.CONFIGURE),
        ("virtualmachine/db-1", Finding.OBSERVE_ONLY, None),  # its host is in ldn1
    ]


def test_a_looping_task_is_one_field() -> None:
    twice = [MOTD, {**MOTD, "diff": "other item"}]
    (entry,) = diff([host()], [checked(changes=twice)], {M: {"config": V1}})
    assert [f.field for f in entry.fields] == [VERSION_FIELD, "config/Write the message of the day"]


def test_configure_comes_after_the_power_on_of_the_same_machine() -> None:
    power = PlanEntry(M, "Machine", Finding.CHANGE, Action.POWER_ON, (FieldDiff("power", "off", "on"),))
    (configure,) = diff([host()], [checked(changes=[MOTD])])
    plan = Plan("rev", T0, (configure, power), waves=order({host().address: host()}, [configure, power])[1])
    assert [e.action for e in plan.changes()] == [Action.POWER_ON, Action.CONFIGURE]
    assert plan.summary()["configure"] == 1
    assert "1 to configure" in plan.summary_line()


def test_the_executor_records_only_the_version_and_sends_configure_to_ansible() -> None:
    document = host()
    (entry,) = diff([document], [checked(changes=[MOTD])], {M: {"config": V1}})
    assert applied_fields(document, entry) == {"config": V2}
    assert provider_key(entry) == CONFIG_PROVIDER
    (repair,) = [
        e for e in diff([document], [checked(changes=[MOTD])], {M: {"config": V2}}) if e.action is not None
    ]
    assert applied_fields(document, repair) == {}  # a repaired drift keeps the version applied


def test_only_a_fully_verified_host_in_sync_counts_as_converged() -> None:
    summary = {"version": V2, "inSync": True, "changes": 0, "failed": 0, "notVerifiable": 0}
    assert converged_config({"config": summary}) == {"config": V2}
    assert converged_config({"config": {**summary, "notVerifiable": 1}}) == {}
    assert converged_config({"config": {**summary, "inSync": False}}) == {}


def test_renderers_show_diffs_and_not_verifiable_tasks_and_json_matches_the_schema() -> None:
    shell = {
        "task": "Rebuild the initramfs",
        "module": "ansible.builtin.command",
        "why": "skipped in check mode",
    }
    entries = diff([host()], [checked(changes=[MOTD], unverified=[shell])])
    plan = Plan("rev", T0, tuple(entries))
    text = plan_text(plan)
    assert "~ machine/web-1  configure" in text
    assert "          +hello" in text  # the diff, indented under its entry
    assert "^ machine/web-1" in text and "Not verifiable" in text
    markdown = render_markdown(plan)
    assert "Not verifiable: configuration check mode cannot evaluate" in markdown
    assert "    Write the message of the day (ansible.builtin.template) would change:" in markdown
    data = plan_to_dict(plan)
    jsonschema.validate(data, plan_schema())
    assert data["summary"]["counts"]["not-verifiable"] == 1


def version_at(config: models.AnsibleConfig, root: Path) -> str:
    """The version the engine gives `config` with the repo's files exported at `root`."""
    return config_version(config, {d: directory_digest(root, d) for d in config_directories(config)})


def test_the_version_changes_with_the_role_files_and_the_spec_only(tmp_path: Path) -> None:
    (tmp_path / "playbooks/roles/base/tasks").mkdir(parents=True)
    (tmp_path / "playbooks/site.yml").write_text("- hosts: all\n  roles: [base]\n")
    tasks = tmp_path / "playbooks/roles/base/tasks/main.yml"
    tasks.write_text("- ansible.builtin.ping:\n")
    (tmp_path / "machines").mkdir()
    config = models.AnsibleConfig.model_validate(CONFIG)
    first = version_at(config, tmp_path)
    (tmp_path / "machines/other.yaml").write_text("unrelated: spec\n")
    assert version_at(config, tmp_path) == first
    tasks.write_text("- ansible.builtin.ping: {data: x}\n")
    second = version_at(config, tmp_path)
    assert second != first and second.startswith("sha256:")
    assert version_at(models.AnsibleConfig.model_validate({**CONFIG, "vars": {}}), tmp_path) != second
    assert configured([host(), machine("bare")]) == [host()]


def test_playbooks_are_exported_from_git_at_the_revision_not_the_working_tree(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "playbooks/roles/base/tasks").mkdir(parents=True)
    (repo / "playbooks/site.yml").write_text("- hosts: all\n")
    (repo / "playbooks/roles/base/tasks/main.yml").write_text("- ansible.builtin.ping:\n")
    (repo / "machines").mkdir()
    (repo / "machines/a.yaml").write_text("kind: Machine\n")
    (repo / "playbooks/run.sh").write_text("#!/bin/sh\n")
    (repo / "playbooks/run.sh").chmod(0o755)
    git_init(repo)
    revision = commit_all(repo, "playbooks")
    (repo / "playbooks/site.yml").write_text("- hosts: none  # edited, not committed\n")
    snapshot = read_revision(str(repo), revision, tmp_path / "cache")
    assert snapshot.export is not None
    snapshot.export(tmp_path / "out", ["playbooks"])
    exported = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.*"))
    assert exported == ["playbooks/roles/base/tasks/main.yml", "playbooks/run.sh", "playbooks/site.yml"]
    assert (tmp_path / "out/playbooks/site.yml").read_text() == "- hosts: all\n"
    assert (tmp_path / "out/playbooks/run.sh").stat().st_mode & 0o111
    tree = read_worktree(repo)
    assert tree.export is not None
    tree.export(tmp_path / "tree", ["playbooks"])
    assert "edited" in (tmp_path / "tree/playbooks/site.yml").read_text()
    assert not (tmp_path / "tree/machines").exists()


def test_config_drift_stays_open_while_only_the_bmc_answers_and_closes_once_checked_in_sync(
    tmp_path: Path,
) -> None:
    document = host()
    bmc = Observation.observed(M, {"power": "on", "bootDevice": "disk", "bootPersistent": True}, at=T0)

    def plan_of(config: Observation) -> Plan:
        found = diff_config([document], [config], {M: V2}, {M: {"config": V2}}, policies(), {})
        return Plan("rev", T0, found.entries, (ObservedState.of(bmc, MACHINE_FIELDS), *found.observed))

    with open_store(f"sqlite:///{tmp_path / 'state.db'}") as store:
        record_drift(plan_of(checked(changes=[MOTD])), store, T0)
        assert [(d.address, d.field) for d in store.open_drift()] == [(M, "config/" + MOTD["task"])]
        gone = Observation.unknown(M, UnknownReason.UNREACHABLE, "ssh: refused", at=T0)
        record_drift(plan_of(gone), store, T0)
        assert len(store.open_drift()) == 1  # unknown is never "no longer drifted"
        record_drift(plan_of(checked()), store, T0)
        assert store.open_drift() == []
