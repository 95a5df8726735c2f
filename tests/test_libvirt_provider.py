"""The libvirt provider against real libvirt daemons (test driver), checked with Debian's virsh.

Every call goes over libvirt's RPC to a libvirtd of the hypervisor farm; virsh is the independent
client that makes out-of-band changes and confirms what the provider did. Nothing is mocked.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fleet_testing import lab_access

from lab.hypervisors import HypervisorFarm
from providers.base import (
    Action,
    ApplyResult,
    Change,
    FieldChange,
    Observation,
    ObservationState,
    RevisionInputs,
    UnknownReason,
)
from providers.libvirt.connections import shown_uri
from providers.libvirt.domain import (
    OWNER_NAMESPACE,
    desired_definition,
    disk_target,
    domain_xml,
    parse_domain,
)
from providers.libvirt.provider import LibvirtProvider
from reconciler.errors import FleetError, TemporaryError
from reconciler.spec import models

HOSTS = ("hv-a", "hv-b", "hv-c")
FAST = models.LibvirtSettings(timeoutSeconds=3.0, shutdownTimeoutSeconds=0.5, maxConcurrent=4)


def fleet(vm_restarts: str = "never", **providers: Any) -> models.Fleet:
    return models.Fleet.model_validate(
        {
            "apiVersion": "fleet/v1alpha1",
            "kind": "Fleet",
            "metadata": {"name": "test"},
            "spec": {
                "sites": [{"name": "lab", "racks": [{"name": "r1"}]}],
                "credentials": {"bmc": {"env": "TEST_BMC"}, "libvirt": {"env": "TEST_LIBVIRT"}},
                "policies": {"vmRestarts": vm_restarts},
                "providers": providers,
            },
        }
    )


def hypervisor(name: str, role: str = "hypervisor", **spec: Any) -> models.Machine:
    return models.Machine.model_validate(
        {
            "apiVersion": "fleet/v1alpha1",
            "kind": "Machine",
            "metadata": {"name": name},
            "spec": {
                "site": "lab",
                "rack": "r1",
                "role": role,
                "bmc": {"address": "10.0.0.1", "credentialsRef": "bmc"},
                **spec,
            },
        }
    )


def vm(name: str, host: str, **spec: Any) -> models.VirtualMachine:
    document = {
        "apiVersion": "fleet/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {"host": host, "vcpus": 2, "memory": "1Gi", **spec},
    }
    return models.VirtualMachine.model_validate(document)


def moved(machine: models.VirtualMachine, **spec: Any) -> models.VirtualMachine:
    return machine.model_copy(update={"spec": machine.spec.model_copy(update=spec)})


def provider_for(
    uris: dict[str, str],
    *,
    settings: models.LibvirtSettings = FAST,
    environment: dict[str, str] | None = None,
) -> LibvirtProvider:
    """A provider that reaches the hypervisors at `uris` (a lab's URIs, beating the specs)."""
    return LibvirtProvider(settings, lab_access(environment, hypervisors=uris))


def inputs_for(
    hosts: Iterable[str] = (),
    *,
    vm_restarts: str = "never",
    machines: Iterable[models.Machine] | None = None,
    scan_all_hosts: bool = False,
) -> RevisionInputs:
    """A revision whose Machines are a hypervisor per name in `hosts` (or `machines`)."""
    documents = list(machines) if machines is not None else [hypervisor(name) for name in hosts]
    return RevisionInputs.of(fleet(vm_restarts), documents, scan_all_hosts=scan_all_hosts)


# The revision the farm's tests plan: its three hypervisors.
INPUTS = inputs_for(HOSTS)


def virsh(uri: str, *args: str, check: bool = True) -> str:
    done = subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True, timeout=30)
    if check:
        assert done.returncode == 0, done.stderr
    return done.stdout


def dominfo(uri: str, name: str) -> dict[str, str]:
    rows = (line.partition(":") for line in virsh(uri, "dominfo", name).splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, _, value in rows}


def observe(
    provider: LibvirtProvider, *specs: models.VirtualMachine, inputs: RevisionInputs = INPUTS
) -> dict[str, Observation]:
    return {o.address: o for o in provider.observe(list(specs), inputs).observations}


def apply(
    provider: LibvirtProvider,
    action: Action,
    document: models.VirtualMachine,
    *fields: FieldChange,
    inputs: RevisionInputs = INPUTS,
) -> ApplyResult:
    return provider.apply(Change(document.address, action, document, tuple(fields)), inputs)


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HypervisorFarm]:
    with HypervisorFarm(
        tmp_path_factory.mktemp("libvirt"),
        HOSTS,
        pools=["default"],
        networks=["default", "lan"],
        images=["default/debian-12"],
    ) as farm:
        yield farm


@pytest.fixture()
def provider(farm: HypervisorFarm) -> Iterator[LibvirtProvider]:
    with provider_for(farm.uris) as provider:
        yield provider


def test_create_then_observe_reports_every_field(farm: HypervisorFarm, provider: LibvirtProvider) -> None:
    web = vm(
        "web-1",
        "hv-a",
        disks=[{"name": "root", "size": "10Gi", "image": "debian-12"}, {"name": "data", "size": "2Gi"}],
        networks=[{"network": "default"}, {"network": "lan", "mac": "52:54:00:aa:bb:01", "model": "e1000"}],
    )
    assert observe(provider, web)[web.address].state is ObservationState.ABSENT

    result = apply(provider, Action.CREATE, web)
    assert result.ok and result.changed, result.message
    assert result.message == "defined and started on machine/hv-a"

    observation = observe(provider, web)[web.address]
    assert observation.state is ObservationState.OBSERVED
    fields = dict(observation.fields)
    generated_mac = fields["networks"][0].pop("mac")
    assert re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", generated_mac)
    uri = farm.uri("hv-a")
    assert fields == {
        "host": "hv-a",
        "uuid": virsh(uri, "domuuid", "web-1").strip(),
        "owned": True,
        "power": "on",
        "vcpus": 2,
        "maxVcpus": 2,
        "configVcpus": 2,
        "liveMaxVcpus": 2,
        "memory": "1Gi",
        "maxMemory": "1Gi",
        "configMemory": "1Gi",
        "liveMaxMemory": "1Gi",
        "autostart": True,
        "disks": [{"name": "root", "pool": "default"}, {"name": "data", "pool": "default"}],
        "networks": [
            {"network": "default", "model": "virtio"},
            {"network": "lan", "mac": "52:54:00:aa:bb:01", "model": "e1000"},
        ],
    }
    info = dominfo(uri, "web-1")
    assert (info["State"], info["CPU(s)"], info["Max memory"], info["Autostart"]) == (
        "running",
        "2",
        "1048576 KiB",
        "enable",
    )
    xml = virsh(uri, "dumpxml", "web-1", "--inactive")
    assert f'<owner xmlns="{OWNER_NAMESPACE}">' in xml
    assert "<address>virtualmachine/web-1</address>" in xml
    volumes = virsh(uri, "vol-list", "default")
    assert "web-1-root" in volumes and "web-1-data" in volumes
    assert "10.00 GiB" in virsh(uri, "vol-info", "web-1-root", "--pool", "default")

    again = apply(provider, Action.CREATE, web)
    assert again.ok and not again.changed, again.message


def test_update_within_the_live_maximum_changes_the_running_domain(
    farm: HypervisorFarm, provider: LibvirtProvider
) -> None:
    big = vm("live-1", "hv-b", vcpus=4, memory="2Gi", networks=[{"network": "lan"}])
    assert apply(provider, Action.CREATE, big).ok
    mac = observe(provider, big)[big.address].fields["networks"][0]["mac"]

    small = moved(big, vcpus=2, memory="1Gi")
    result = apply(
        provider, Action.UPDATE, small, FieldChange("vcpus", 4, 2), FieldChange("memory", "2Gi", "1Gi")
    )
    assert result.ok and result.changed, result.message
    assert "vcpus 4->2 live" in result.message and "memory 2Gi->1Gi live" in result.message
    fields = observe(provider, small)[small.address].fields
    assert (fields["vcpus"], fields["memory"], fields["power"]) == (2, "1Gi", "on")
    assert (fields["configVcpus"], fields["maxVcpus"], fields["liveMaxVcpus"]) == (2, 2, 4)
    assert fields["networks"][0]["mac"] == mac  # the generated MAC survives the redefinition
    assert dominfo(farm.uri("hv-b"), "live-1")["CPU(s)"] == "2"

    three = moved(big, vcpus=3, memory="1Gi")
    result = apply(provider, Action.UPDATE, three, FieldChange("vcpus", 2, 3))
    assert result.ok and "vcpus 2->3 live" in result.message, result.message
    assert dominfo(farm.uri("hv-b"), "live-1")["CPU(s)"] == "3"

    repeat = apply(provider, Action.UPDATE, three, FieldChange("vcpus", 2, 3))
    assert repeat.ok and not repeat.changed, repeat.message


def test_growth_past_the_maximum_waits_for_a_restart_when_restarts_are_never(
    farm: HypervisorFarm, provider: LibvirtProvider
) -> None:
    small = vm("grow-1", "hv-a")
    assert apply(provider, Action.CREATE, small).ok
    uuid = observe(provider, small)[small.address].fields["uuid"]
    bigger = moved(small, vcpus=6, memory="2Gi")

    result = apply(
        provider, Action.UPDATE, bigger, FieldChange("vcpus", 2, 6), FieldChange("memory", "1Gi", "2Gi")
    )
    assert result.ok, result.message
    assert "restart needed for vcpus 2->6, memory 1Gi->2Gi (policies.vmRestarts is never)" in result.message
    assert "persistent definition updated" in result.message
    fields = observe(provider, bigger)[bigger.address].fields
    assert (fields["power"], fields["vcpus"], fields["memory"]) == ("on", 2, "1Gi")
    assert (fields["configVcpus"], fields["maxVcpus"], fields["configMemory"]) == (6, 6, "2Gi")
    assert fields["uuid"] == uuid
    assert "<vcpu placement='static'>6</vcpu>" in virsh(farm.uri("hv-a"), "dumpxml", "grow-1", "--inactive")


def test_growth_past_the_maximum_restarts_when_restarts_are_allowed(farm: HypervisorFarm) -> None:
    small = vm("grow-2", "hv-a", networks=[{"network": "default"}])
    allowed = inputs_for(HOSTS, vm_restarts="allowed")
    with provider_for(farm.uris) as provider:
        assert apply(provider, Action.CREATE, small, inputs=allowed).ok
        before = observe(provider, small, inputs=allowed)[small.address].fields
        bigger = moved(small, vcpus=6)
        result = apply(provider, Action.UPDATE, bigger, FieldChange("vcpus", 2, 6), inputs=allowed)
        assert result.ok and result.changed, result.message
        assert result.message.startswith("restarted for vcpus 2->6 (shut down gracefully)"), result.message
        after = observe(provider, bigger, inputs=allowed)[bigger.address].fields
    assert (after["power"], after["vcpus"], after["liveMaxVcpus"]) == ("on", 6, 6)
    assert after["uuid"] == before["uuid"] and after["networks"] == before["networks"]
    assert dominfo(farm.uri("hv-a"), "grow-2")["CPU(s)"] == "6"


def test_power_off_is_graceful_and_power_on_starts_and_both_repeat_safely(
    farm: HypervisorFarm, provider: LibvirtProvider
) -> None:
    guest = vm("power-1", "hv-c")
    assert apply(provider, Action.CREATE, guest).ok
    off = apply(provider, Action.POWER_OFF, moved(guest, power="off"))
    assert off.ok and off.changed and off.message == "shut down gracefully on machine/hv-c", off.message
    assert dominfo(farm.uri("hv-c"), "power-1")["State"] == "shut off"
    again = apply(provider, Action.POWER_OFF, moved(guest, power="off"))
    assert again.ok and not again.changed

    on = apply(provider, Action.POWER_ON, guest)
    assert on.ok and on.changed and on.message == "started on machine/hv-c", on.message
    assert dominfo(farm.uri("hv-c"), "power-1")["State"] == "running"
    assert not apply(provider, Action.POWER_ON, guest).changed


def test_out_of_band_changes_show_in_the_next_observe(
    farm: HypervisorFarm, provider: LibvirtProvider
) -> None:
    guest = vm("drift-1", "hv-b", vcpus=3)
    assert apply(provider, Action.CREATE, guest).ok
    uri = farm.uri("hv-b")
    virsh(uri, "setvcpus", "drift-1", "1", "--live")
    assert observe(provider, guest)[guest.address].fields["vcpus"] == 1
    virsh(uri, "destroy", "drift-1")
    fields = observe(provider, guest)[guest.address].fields
    assert (fields["power"], fields["vcpus"]) == ("off", 3)  # a stopped domain reports its definition
    virsh(uri, "undefine", "drift-1")
    assert observe(provider, guest)[guest.address].state is ObservationState.ABSENT


def test_domains_fleet_did_not_make_are_reported_and_never_changed(
    farm: HypervisorFarm, provider: LibvirtProvider, tmp_path: Path
) -> None:
    uri_b = farm.uri("hv-b")
    definition = tmp_path / "intruder.xml"
    definition.write_text(
        "<domain type='test'><name>intruder</name><memory unit='KiB'>524288</memory>"
        "<vcpu>1</vcpu><os><type>hvm</type></os></domain>"
    )
    virsh(uri_b, "define", str(definition))
    virsh(uri_b, "start", "intruder")
    sample = vm("test", "hv-a")
    intruder = vm("intruder", "hv-b", vcpus=4)
    observed = observe(provider, sample, intruder)
    assert observed[sample.address].fields["owned"] is False
    assert observed[sample.address].fields["power"] == "on"
    assert observed[sample.address].fields["memory"] == "2Gi"  # the test driver's own domain
    assert observed[intruder.address].fields["owned"] is False

    attempts = [
        (Action.CREATE, intruder, ()),
        (Action.UPDATE, intruder, (FieldChange("vcpus", 1, 4),)),
        (Action.POWER_OFF, moved(intruder, power="off"), ()),
        (Action.POWER_ON, intruder, ()),
        (Action.REPLACE, moved(intruder, host="hv-c"), (FieldChange("host", "hv-b", "hv-c"),)),
        (Action.DELETE, None, (FieldChange("host", "hv-b", None),)),
        (Action.POWER_OFF, None, (FieldChange("host", "hv-b", None),)),
    ]
    for action, document, fields in attempts:
        result = provider.apply(Change(intruder.address, action, document, fields), INPUTS)
        assert not result.ok, (action, result.message)
        assert "domain intruder on machine/hv-b was not made by fleet" in result.message, result.message
        assert "metadata intruder" in result.message and "--config" in result.message
    result = apply(provider, Action.POWER_OFF, moved(sample, power="off"))
    assert not result.ok and "domain test on machine/hv-a" in result.message
    assert dominfo(uri_b, "intruder")["State"] == "running"
    assert dominfo(uri_b, "intruder")["CPU(s)"] == "1"
    assert dominfo(farm.uri("hv-a"), "test")["State"] == "running"
    assert "intruder" not in virsh(farm.uri("hv-c"), "list", "--all")

    seen = provider.observe([vm("someone-else", "hv-b")], INPUTS)
    strays = {(o.address, o.fields["host"]): o.fields["owned"] for o in seen.unmatched}
    assert strays[("virtualmachine/intruder", "hv-b")] is False
    assert strays[("virtualmachine/test", "hv-b")] is False

    # Adopting is one command (the one the refusal names); then fleet manages it.
    adopt = re.search(r"run: (virsh .*--config)", apply(provider, Action.POWER_ON, intruder).message)
    assert adopt is not None
    subprocess.run(adopt.group(1), shell=True, check=True, capture_output=True)
    assert observe(provider, intruder)[intruder.address].fields["owned"] is True
    update = apply(provider, Action.UPDATE, intruder, FieldChange("vcpus", 1, 4))
    assert update.ok and "restart needed for vcpus 1->4" in update.message, update.message
    virsh(uri_b, "destroy", "intruder")
    virsh(uri_b, "undefine", "intruder")


def test_a_whole_fleet_scan_reports_every_domain(farm: HypervisorFarm) -> None:
    with provider_for(farm.uris) as provider:
        seen = provider.observe([], inputs_for(HOSTS, scan_all_hosts=True))
        assert list(seen.observations) == []
        strays = {(o.address, o.fields["host"]) for o in seen.unmatched}
    assert {("virtualmachine/test", host) for host in HOSTS} <= strays


def test_a_moved_vm_is_found_on_its_old_host_and_replaced_in_the_safe_order(
    farm: HypervisorFarm, provider: LibvirtProvider
) -> None:
    mover = vm("mover-1", "hv-a", disks=[{"name": "root", "size": "1Gi"}], networks=[{"network": "lan"}])
    assert apply(provider, Action.CREATE, mover).ok
    there = moved(mover, host="hv-b")
    observation = observe(provider, there)[there.address]
    assert observation.state is ObservationState.OBSERVED
    assert observation.fields["host"] == "hv-a" and observation.fields["owned"] is True

    result = apply(provider, Action.REPLACE, there, FieldChange("host", "hv-a", "hv-b"))
    assert result.ok and result.changed, result.message
    assert result.message == (
        "shut down gracefully on machine/hv-a; defined and started on machine/hv-b;"
        " undefined on machine/hv-a (its volumes are kept)"
    )
    assert "mover-1" not in virsh(farm.uri("hv-a"), "list", "--all")
    assert "mover-1-root" in virsh(farm.uri("hv-a"), "vol-list", "default")
    assert dominfo(farm.uri("hv-b"), "mover-1")["State"] == "running"
    assert observe(provider, there)[there.address].fields["host"] == "hv-b"

    # Found by ownership when the plan does not say where it was; nothing left to move.
    repeat = apply(provider, Action.REPLACE, there)
    assert repeat.ok and not repeat.changed, repeat.message


def test_a_replace_the_new_host_cannot_take_restarts_the_old_copy(
    farm: HypervisorFarm, provider: LibvirtProvider
) -> None:
    stuck = vm("stuck-1", "hv-a")
    assert apply(provider, Action.CREATE, stuck).ok
    there = moved(stuck, host="hv-c", disks=[models.Disk(name="root", size="1Gi", pool="no-such-pool")])
    result = apply(provider, Action.REPLACE, there, FieldChange("host", "hv-a", "hv-c"))
    assert not result.ok, result.message
    assert "no storage pool no-such-pool" in result.message and "restarted on machine/hv-a" in result.message
    assert dominfo(farm.uri("hv-a"), "stuck-1")["State"] == "running"
    assert "stuck-1" not in virsh(farm.uri("hv-c"), "list", "--all")


def test_an_orphan_is_stopped_and_undefined_and_its_volumes_are_kept(
    farm: HypervisorFarm, provider: LibvirtProvider
) -> None:
    leftover = vm("leftover-1", "hv-c", disks=[{"name": "root", "size": "1Gi"}])
    assert apply(provider, Action.CREATE, leftover).ok
    gone = FieldChange("host", "hv-c", None)
    result = provider.apply(Change(leftover.address, Action.DELETE, None, (gone,)), INPUTS)
    assert result.ok and result.changed, result.message
    assert result.message == "shut down gracefully and undefined on machine/hv-c (its volumes are kept)"
    assert "leftover-1 " not in virsh(farm.uri("hv-c"), "list", "--all")
    assert "leftover-1-root" in virsh(farm.uri("hv-c"), "vol-list", "default")
    again = provider.apply(Change(leftover.address, Action.DELETE, None, ()), INPUTS)  # searched by ownership
    assert again.ok and not again.changed, again.message


def test_a_missing_image_fails_before_anything_is_created(
    farm: HypervisorFarm, provider: LibvirtProvider
) -> None:
    guest = vm(
        "imageless-1",
        "hv-a",
        disks=[{"name": "data", "size": "1Gi"}, {"name": "root", "size": "1Gi", "image": "no-such-image"}],
    )
    result = apply(provider, Action.CREATE, guest)
    assert not result.ok and not result.changed
    assert "no image volume no-such-image in storage pool default" in result.message
    assert "machine/hv-a" in result.message
    assert "imageless-1" not in virsh(farm.uri("hv-a"), "vol-list", "default")
    assert "imageless-1" not in virsh(farm.uri("hv-a"), "list", "--all")


def test_a_dead_hypervisor_makes_only_its_vms_unknown_and_a_restarted_one_is_reconnected(
    tmp_path: Path,
) -> None:
    with HypervisorFarm(tmp_path, ["hv-x", "hv-y"], pools=["default"]) as farm:
        on_x, on_y = vm("on-x", "hv-x"), vm("on-y", "hv-y")
        inputs = inputs_for(farm.uris)
        with provider_for(farm.uris) as provider:
            assert (
                apply(provider, Action.CREATE, on_x, inputs=inputs).ok
                and apply(provider, Action.CREATE, on_y, inputs=inputs).ok
            )
            farm.kill("hv-x")
            observed = observe(provider, on_x, on_y, inputs=inputs)
            lost = observed[on_x.address]
            assert lost.state is ObservationState.UNKNOWN and lost.reason is UnknownReason.UNREACHABLE
            assert "machine/hv-x" in lost.detail and farm.uri("hv-x") in lost.detail
            assert observed[on_y.address].state is ObservationState.OBSERVED
            for action in (Action.POWER_OFF, Action.UPDATE, Action.CREATE):
                try:
                    result = apply(provider, action, on_x, inputs=inputs)
                except FleetError as exc:
                    assert isinstance(exc, TemporaryError) and "machine/hv-x" in str(exc)
                else:
                    assert not result.ok

            farm.restart("hv-x")  # a fresh daemon on the same socket: the provider reconnects
            assert observe(provider, on_x, inputs=inputs)[on_x.address].state is ObservationState.ABSENT
            assert apply(provider, Action.CREATE, on_x, inputs=inputs).ok

            # A connection dropped between two calls is reopened: the state is gone, not unknown.
            farm.restart("hv-y")
            assert observe(provider, on_y, inputs=inputs)[on_y.address].state is ObservationState.ABSENT


def test_a_hung_hypervisor_times_out_without_holding_up_the_others(tmp_path: Path) -> None:
    settings = models.LibvirtSettings(timeoutSeconds=1.0, shutdownTimeoutSeconds=0.5)
    with (
        HypervisorFarm(tmp_path, ["hv-x", "hv-y"]) as farm,
        provider_for(farm.uris, settings=settings) as provider,
    ):
        inputs = inputs_for(farm.uris)
        if True:
            on_x, on_y = vm("test", "hv-x"), vm("test", "hv-y")
            assert observe(provider, on_x, inputs=inputs)[on_x.address].state is ObservationState.OBSERVED
            farm.pause("hv-x")
            try:
                hung = observe(provider, on_x, inputs=inputs)[on_x.address]
                assert hung.state is ObservationState.UNKNOWN and hung.reason is UnknownReason.TIMEOUT
                assert "machine/hv-x" in hung.detail
                assert observe(provider, on_y, inputs=inputs)[on_y.address].state is ObservationState.OBSERVED
            finally:
                farm.resume("hv-x")
            assert observe(provider, on_x, inputs=inputs)[on_x.address].state is ObservationState.OBSERVED


def test_credentials_log_in_and_never_show(tmp_path: Path) -> None:
    node = tmp_path / "node.xml"
    node.write_text("<node><auth><user password='s3cret-canary'>fleet</user></auth></node>")
    access = {"uri": f"test://{node}", "credentialsRef": "libvirt"}
    machines = {"hv-auth": hypervisor("hv-auth", hypervisor=access)}
    guest = vm("guest", "hv-auth")

    inputs = inputs_for(machines=machines.values())

    def observed(environment: dict[str, str]) -> Observation:
        with provider_for({}, environment=environment) as provider:
            observation = observe(provider, guest, inputs=inputs)[guest.address]
            result = apply(provider, Action.POWER_ON, guest, inputs=inputs)
        assert "canary" not in repr(observation) + repr(result), (observation, result)
        return observation

    assert observed({"TEST_LIBVIRT": "fleet:s3cret-canary"}).state is ObservationState.ABSENT
    wrong = observed({"TEST_LIBVIRT": "fleet:wrong-canary"})
    assert wrong.reason is UnknownReason.AUTH_FAILURE and "wrong-canary" not in wrong.detail
    missing = observed({})
    assert missing.reason is UnknownReason.CREDENTIALS_MISSING and "TEST_LIBVIRT" in missing.detail


def test_where_a_hypervisor_is_comes_from_the_lab_the_machine_or_the_template() -> None:
    machines = {
        "no-address": hypervisor("no-address"),
        "templated": hypervisor("templated", address="10.0.0.9"),
        "not-a-hypervisor": hypervisor("not-a-hypervisor", role="generic"),
    }
    settings = models.LibvirtSettings(uriTemplate="test+unix:///default?socket=/nonexistent/{address}.sock")
    specs = [
        vm("a", "no-address"),
        vm("b", "templated"),
        vm("c", "not-a-hypervisor"),
        vm("d", "unknown-host"),
    ]
    with provider_for({}, settings=settings) as provider:
        observed = observe(provider, *specs, inputs=inputs_for(machines=machines.values()))
    assert observed["virtualmachine/a"].reason is UnknownReason.NOT_ATTEMPTED
    assert "neither spec.address nor spec.hypervisor.uri" in observed["virtualmachine/a"].detail
    assert observed["virtualmachine/b"].reason is UnknownReason.UNREACHABLE
    assert "/nonexistent/10.0.0.9.sock" in observed["virtualmachine/b"].detail
    assert "role generic" in observed["virtualmachine/c"].detail
    assert "machine/unknown-host is not in the fleet repo" in observed["virtualmachine/d"].detail


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("qemu+ssh://root:hunter2@10.0.0.1/system", "qemu+ssh://root@10.0.0.1/system"),
        ("qemu+tcp://:hunter2@[fd00::1]:16509/system", "qemu+tcp://[fd00::1]:16509/system"),
        ("qemu+ssh://root@10.0.0.1/system?keyfile=/k", "qemu+ssh://root@10.0.0.1/system?keyfile=/k"),
    ],
    ids=["user-and-password", "password-only-ipv6", "no-password-unchanged"],
)
def test_uris_in_messages_never_carry_a_password(uri: str, shown: str) -> None:
    assert shown_uri(uri) == shown


def test_generated_xml_reads_back_as_the_definition_it_came_from() -> None:
    guest = vm(
        "xml-1",
        "hv-a",
        vcpus=3,
        memory="1536Mi",
        disks=[{"name": "root", "size": "1Gi", "pool": "fast"}],
        networks=[{"network": "lan", "mac": "52:54:00:00:00:01", "model": "rtl8139"}],
    )
    definition = desired_definition(guest, domain_type="kvm", uuid="6e1c0b9a-0000-4000-8000-000000000001")
    assert parse_domain(domain_xml(definition)) == definition
    assert [disk_target(i) for i in (0, 1, 25, 26, 27)] == ["vda", "vdb", "vdz", "vdaa", "vdab"]
