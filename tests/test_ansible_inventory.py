"""The Ansible inventory fleet derives from the example repo: hosts, groups, host variables, and
the INI and YAML forms as Ansible's own `ansible-inventory` reads them back."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
from fleet_testing import ansible_inventory_list, example_documents

from providers.ansible.inventory import (
    build_inventory,
    credential_vars,
    host_names,
    render_ini,
    select_hosts,
    to_yaml_inventory,
)
from reconciler.spec import models


@pytest.fixture(scope="module")
def documents() -> list[models.Document]:
    return example_documents()


@pytest.fixture(scope="module")
def fleet(documents: list[models.Document]) -> models.Fleet:
    return next(d for d in documents if isinstance(d, models.Fleet))


@pytest.fixture(scope="module")
def inventory(documents: list[models.Document], fleet: models.Fleet) -> dict[str, Any]:
    return build_inventory(documents, fleet)


def _machine(name: str, config: dict[str, Any] | None, **spec: Any) -> models.Machine:
    body: dict[str, Any] = {
        "site": "nyc1",
        "rack": "r01",
        "address": "10.0.0.1",
        "bmc": {"address": "10.1.0.1", "credentialsRef": "bmc-nyc1"},
        **spec,
    }
    if config is not None:
        body["config"] = config
    return models.Machine.model_validate(
        {"apiVersion": "fleet/v1alpha1", "kind": "Machine", "metadata": {"name": name}, "spec": body}
    )


# --- hosts and groups ------------------------------------------------------------------


def test_every_machine_and_vm_with_config_is_a_host_and_no_other(
    documents: list[models.Document], inventory: dict[str, Any]
) -> None:
    configured = {
        d.metadata.name
        for d in documents
        if isinstance(d, models.Machine | models.VirtualMachine) and d.spec.config is not None
    }
    assert set(inventory["_meta"]["hostvars"]) == configured
    assert "ldn1-r02-06" not in configured  # the storage host cephadm manages has no config
    grouped = {host for group in inventory["all"]["children"] for host in inventory[group]["hosts"]}
    assert grouped == configured


@pytest.mark.parametrize(
    ("group", "members"),
    [
        pytest.param(
            "sparkpool_etl",
            {"nyc1-r03-02", "nyc1-r03-03", "nyc1-r03-04", "nyc1-r03-05"},
            id="pool-nodes-are-cluster-members-matching-its-selector",
        ),
        pytest.param(
            "sparkpool_ml_gpu",
            {"nyc1-r04-01", "nyc1-r04-02", "nyc1-r04-03", "nyc1-r04-04"},
            id="dashes-in-a-pool-name-become-underscores",
        ),
        pytest.param(
            "role_hypervisor",
            {"nyc1-r01-01", "nyc1-r02-01", "nyc1-r03-01", "ldn1-r01-01", "ldn1-r02-01", "ldn1-r03-01"},
            id="role",
        ),
        pytest.param("role_storage", {"nyc1-r02-05"}, id="storage-without-config-is-left-out"),
        pytest.param(
            "rack_nyc1_r04", {"nyc1-r04-01", "nyc1-r04-02", "nyc1-r04-03", "nyc1-r04-04"}, id="rack-by-site"
        ),
    ],
)
def test_groups_have_exactly_their_members(inventory: dict[str, Any], group: str, members: set[str]) -> None:
    assert set(inventory[group]["hosts"]) == members


@pytest.mark.parametrize(
    ("host", "groups"),
    [
        pytest.param(
            "nyc1-r01-02",
            {"site_nyc1", "rack_nyc1_r01", "role_kubernetes_node", "cluster_k8s_nyc1"},
            id="kubernetes-node",
        ),
        pytest.param(
            "k8s-nyc1-cp-1",
            {"site_nyc1", "rack_nyc1_r01", "cluster_k8s_nyc1"},
            id="vm-takes-site-and-rack-of-its-hypervisor",
        ),
        pytest.param("nyc1-bastion-1", {"site_nyc1", "rack_nyc1_r01"}, id="vm-outside-any-cluster"),
        pytest.param(
            "ldn1-r02-03",
            {"site_ldn1", "rack_ldn1_r02", "role_spark_node", "cluster_k8s_ldn1", "sparkpool_adhoc"},
            id="dedicated-spark-node",
        ),
    ],
)
def test_hosts_are_in_the_groups_of_their_specs(
    inventory: dict[str, Any], host: str, groups: set[str]
) -> None:
    member_of = {g for g in inventory["all"]["children"] if host in inventory[g]["hosts"]}
    assert member_of == groups


def test_group_names_are_valid_ansible_identifiers(inventory: dict[str, Any]) -> None:
    for group in inventory["all"]["children"]:
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", group), group
    assert inventory["site_nyc1"]["vars"] == {"fleet_region": "us-east"}


def test_host_vars_come_from_the_spec(inventory: dict[str, Any]) -> None:
    hostvars = inventory["_meta"]["hostvars"]
    assert hostvars["nyc1-r01-01"] == {
        "ansible_host": "10.20.1.11",
        "fleet_address": "machine/nyc1-r01-01",
        "baseline_motd_message": "Hypervisor. Guests are declared in virtual-machines/ of the fleet repo;"
        " do not change them with virsh.",
        "baseline_motd_owner": "platform-infra",
        "baseline_motd_role": "hypervisor",
        "baseline_ntp_servers": ["ntp1.nyc1.acme.internal", "ntp2.nyc1.acme.internal"],
        "baseline_sysctl": {"vm.swappiness": 1, "kernel.numa_balancing": 0, "net.ipv4.ip_forward": 1},
    }
    assert hostvars["nyc1-bastion-1"]["fleet_address"] == "virtualmachine/nyc1-bastion-1"
    assert hostvars["nyc1-bastion-1"]["ansible_host"] == "10.20.10.21"


def test_the_inventory_does_not_depend_on_document_order(
    documents: list[models.Document], fleet: models.Fleet, inventory: dict[str, Any]
) -> None:
    shuffled = list(documents)
    random.Random(7).shuffle(shuffled)
    again = build_inventory(shuffled, fleet)
    assert json.dumps(again) == json.dumps(inventory)
    assert render_ini(again) == render_ini(inventory)


def test_select_hosts_keeps_their_groups_only(inventory: dict[str, Any]) -> None:
    part = select_hosts(inventory, ["nyc1-r03-02", "ldn1-r01-01"])
    assert set(part["_meta"]["hostvars"]) == {"nyc1-r03-02", "ldn1-r01-01"}
    assert "sparkpool_etl" in part["all"]["children"]
    assert "role_gateway" not in part
    assert part["site_ldn1"] == {"hosts": ["ldn1-r01-01"], "vars": {"fleet_region": "eu-west"}}


# --- connection overrides, secrets, names ----------------------------------------------


def test_connection_overrides_beat_the_spec(documents: list[models.Document], fleet: models.Fleet) -> None:
    overrides = {"nyc1-r01-01": {"ansible_host": "127.0.0.1", "ansible_port": "2222", "ansible_user": "lab"}}
    hostvars = build_inventory(documents, fleet, connection_overrides=overrides)["_meta"]["hostvars"]
    assert hostvars["nyc1-r01-01"]["ansible_host"] == "127.0.0.1"
    assert hostvars["nyc1-r01-01"]["ansible_port"] == "2222"
    assert hostvars["nyc1-r01-02"]["ansible_host"] == "10.20.1.12"


def test_credential_vars_stay_out_of_the_inventory(fleet: models.Fleet) -> None:
    config = {
        "playbooks": ["playbooks/site.yml"],
        "vars": {
            "db_password": {"credentialsRef": "bmc-nyc1"},
            "api_token": {"credentialsRef": {"env": "API_TOKEN"}},
            "motd": "hello",
        },
    }
    machine = _machine("db-1", config)
    hostvars = build_inventory([machine], fleet)["_meta"]["hostvars"]["db-1"]
    assert hostvars == {"ansible_host": "10.0.0.1", "fleet_address": "machine/db-1", "motd": "hello"}
    assert machine.spec.config is not None
    assert credential_vars(machine.spec.config) == {
        "api_token": models.CredentialSource(env="API_TOKEN"),
        "db_password": "bmc-nyc1",
    }


@pytest.mark.parametrize(
    "ref",
    [
        pytest.param({"env": "A", "file": "/b"}, id="two-sources"),
        pytest.param("Not_A_Name", id="not-a-dns-label"),
        pytest.param(["x"], id="a-list"),
    ],
)
def test_a_malformed_credentials_ref_is_an_error_naming_the_variable(ref: Any) -> None:
    with pytest.raises(ValueError, match=r"(?s)vars\.db_password.*credentialsRef is neither"):
        _machine("db-1", {"vars": {"db_password": {"credentialsRef": ref}}})


def test_a_secret_variable_holds_nothing_but_its_reference() -> None:
    with pytest.raises(ValueError, match=r"(?s)vars\.db_password.*holds only credentialsRef"):
        _machine("db-1", {"vars": {"db_password": {"credentialsRef": "db", "default": "x"}}})


def test_a_vm_named_like_a_machine_gets_its_own_host_name(fleet: models.Fleet) -> None:
    machine = _machine("app-1", {"vars": {}})
    vm = models.VirtualMachine.model_validate(
        {
            "apiVersion": "fleet/v1alpha1",
            "kind": "VirtualMachine",
            "metadata": {"name": "app-1"},
            "spec": {"host": "app-1", "vcpus": 1, "memory": "1Gi", "address": "10.0.0.2", "config": {}},
        }
    )
    assert host_names([vm, machine]) == {"machine/app-1": "app-1", "virtualmachine/app-1": "app-1.vm"}
    inventory = build_inventory([vm, machine], fleet)
    assert inventory["_meta"]["hostvars"]["app-1.vm"]["fleet_address"] == "virtualmachine/app-1"


# --- the forms Ansible reads -----------------------------------------------------------


def test_ini_writes_host_vars_once_and_quotes_what_needs_it(inventory: dict[str, Any]) -> None:
    ini = render_ini(inventory)
    lines = ini.splitlines()
    assert "[sparkpool_etl]" in lines
    assert "[site_nyc1:vars]" in lines and "fleet_region=us-east" in lines
    defined = [line for line in lines if line.startswith("nyc1-r03-02 ")]
    assert len(defined) == 1  # its variables are written once, in its first group
    assert "baseline_motd_role=spark-node" in defined[0]
    assert "baseline_ntp_servers=\"['ntp1.nyc1.acme.internal', 'ntp2.nyc1.acme.internal']\"" in defined[0]
    assert lines.count("nyc1-r03-02") == 4  # bare in its other groups


def _listed(path: Path, home: Path) -> dict[str, Any]:
    return ansible_inventory_list(path, home)


@pytest.mark.parametrize("form", ["ini", "yaml"])
def test_ansible_reads_back_the_same_inventory(inventory: dict[str, Any], tmp_path: Path, form: str) -> None:
    if form == "ini":
        path = tmp_path / "hosts.ini"
        path.write_text(render_ini(inventory))
    else:
        path = tmp_path / "hosts.json"  # JSON is YAML: the runner writes this form
        path.write_text(json.dumps(to_yaml_inventory(inventory)))
    listed = _listed(path, tmp_path)
    for group in inventory["all"]["children"]:
        assert listed[group]["hosts"] == inventory[group]["hosts"], group
    for host, variables in inventory["_meta"]["hostvars"].items():
        site = next(
            g for g in inventory["all"]["children"] if g.startswith("site_") and host in inventory[g]["hosts"]
        )
        # ansible-inventory merges group vars into each host's.
        assert listed["_meta"]["hostvars"][host] == {**inventory[site].get("vars", {}), **variables}, host
