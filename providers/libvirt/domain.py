"""Domain XML: what fleet writes for a VirtualMachine, and what it reads back from a hypervisor.

Generation builds the XML with ElementTree from the spec alone (plus the UUID and MAC addresses
the hypervisor already gave the domain), so no spec value is ever spliced into markup. Parsing is
lenient because a domain fleet did not make may lack any element and must still be reported.
Nothing here talks to a hypervisor.
"""

from __future__ import annotations

import dataclasses
import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from decimal import Decimal

from reconciler.spec import models
from reconciler.spec.quantity import canonical_quantity, quantity_value

# Fleet marks the domains it made with <owner xmlns=OWNER_NAMESPACE><address>virtualmachine/NAME
# </address></owner> in <metadata>; nothing else counts as ownership. Any prefix reads the same.
OWNER_NAMESPACE = "https://fleet.invalid/xmlns/libvirt/owner/v1"
OWNER_PREFIX = "fleet"  # the key `virsh metadata` needs to write the element

_OWNER = f"{{{OWNER_NAMESPACE}}}owner"
_OWNER_ADDRESS = f"{{{OWNER_NAMESPACE}}}address"
_UNIT_BYTES = {
    "b": 1,
    "bytes": 1,
    "kb": 1000,
    "k": 1024,
    "kib": 1024,
    "mb": 1000**2,
    "m": 1024**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "g": 1024**3,
    "gib": 1024**3,
    "tb": 1000**4,
    "t": 1024**4,
    "tib": 1024**4,
}


class DomainXmlError(ValueError):
    """A hypervisor returned something that is not domain XML."""


@dataclasses.dataclass(frozen=True, slots=True)
class DiskDevice:
    target: str
    pool: str  # "" unless the source is a storage pool volume
    volume: str  # the pool volume, or the file or block device path


@dataclasses.dataclass(frozen=True, slots=True)
class NicDevice:
    network: str
    mac: str  # "" when the hypervisor is to generate one
    model: str


@dataclasses.dataclass(frozen=True, slots=True)
class DomainDefinition:
    """The parts of a domain definition fleet manages or reports."""

    name: str
    uuid: str
    type: str
    owner: str | None  # the address in fleet's ownership element, if any
    max_memory_kib: int
    memory_kib: int
    max_vcpus: int
    vcpus: int
    disks: tuple[DiskDevice, ...]
    nics: tuple[NicDevice, ...]

    def owned_as(self, address: str) -> bool:
        return self.owner == address


def owner_address(name: str) -> str:
    return f"virtualmachine/{name}"


def volume_name(vm_name: str, disk_name: str) -> str:
    return f"{vm_name}-{disk_name}"


def disk_target(index: int) -> str:
    """vda, vdb, ..., vdz, vdaa, ... as libvirt and the Linux kernel count them."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return f"vd{letters}"


def _target_order(target: str) -> tuple[int, str]:
    return (len(target), target)


def memory_kib(quantity: str) -> int:
    """KiB as libvirt counts memory; a quantity that is no whole KiB is rounded up."""
    return math.ceil(quantity_value(quantity) / 1024)


def size_bytes(quantity: str) -> int:
    return math.ceil(quantity_value(quantity))


def kib_quantity(kib: int) -> str:
    return canonical_quantity(f"{kib}Ki")


def _kib(element: ET.Element | None) -> int:
    text = (element.text or "").strip() if element is not None else ""
    if element is None or not text.isdigit():
        return 0
    factor = _UNIT_BYTES.get((element.get("unit") or "KiB").lower(), 1024)
    return math.ceil(Decimal(text) * factor / 1024)


def _int(text: str | None, default: int = 0) -> int:
    try:
        return int((text or "").strip())
    except ValueError:
        return default


def parse_domain(xml: str) -> DomainDefinition:
    """Read a domain's XML (live or persistent) into the fields fleet looks at."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise DomainXmlError(f"unreadable domain XML: {exc}") from None
    if root.tag != "domain":
        raise DomainXmlError(f"expected a <domain> element, found <{root.tag}>")
    owner = None
    metadata = root.find("metadata")
    if metadata is not None:
        element = metadata.find(_OWNER)
        if element is not None:
            owner = (element.findtext(_OWNER_ADDRESS) or "").strip()
    max_memory = _kib(root.find("memory"))
    current_memory = root.find("currentMemory")
    vcpu = root.find("vcpu")
    max_vcpus = _int(vcpu.text if vcpu is not None else None, 1)
    vcpus = _int(vcpu.get("current") if vcpu is not None else None, max_vcpus)
    disks: list[DiskDevice] = []
    nics: list[NicDevice] = []
    devices = root.find("devices")
    if devices is not None:
        for disk in devices.findall("disk"):
            if disk.get("device", "disk") != "disk":
                continue  # cdroms and floppies are not storage fleet manages
            source = disk.find("source")
            target = disk.find("target")
            attrs: dict[str, str] = dict(source.attrib) if source is not None else {}
            if disk.get("type") == "volume":
                pool, volume = attrs.get("pool", ""), attrs.get("volume", "")
            else:
                pool = ""
                volume = attrs.get("file") or attrs.get("dev") or attrs.get("name") or ""
            disks.append(DiskDevice(target.get("dev", "") if target is not None else "", pool, volume))
        for interface in devices.findall("interface"):
            source = interface.find("source")
            attrs = dict(source.attrib) if source is not None else {}
            network = attrs.get("network") or attrs.get("bridge") or attrs.get("dev") or ""
            mac = interface.find("mac")
            model = interface.find("model")
            nics.append(
                NicDevice(
                    network,
                    (mac.get("address", "") if mac is not None else "").lower(),
                    model.get("type", "") if model is not None else "",
                )
            )
    return DomainDefinition(
        name=(root.findtext("name") or "").strip(),
        uuid=(root.findtext("uuid") or "").strip(),
        type=root.get("type", ""),
        owner=owner,
        max_memory_kib=max_memory,
        memory_kib=_kib(current_memory) if current_memory is not None else max_memory,
        max_vcpus=max_vcpus,
        vcpus=vcpus,
        disks=tuple(sorted(disks, key=lambda d: _target_order(d.target))),
        nics=tuple(nics),
    )


def kept_macs(vm: models.VirtualMachine, current: DomainDefinition | None) -> list[str]:
    """Per interface: the spec's MAC, else the one the hypervisor generated for that position."""
    have = current.nics if current is not None else ()
    macs = []
    for index, nic in enumerate(vm.spec.networks):
        if nic.mac:
            macs.append(nic.mac)
        elif index < len(have):
            macs.append(have[index].mac)
        else:
            macs.append("")
    return macs


def desired_definition(
    vm: models.VirtualMachine, *, domain_type: str, uuid: str = "", macs: Sequence[str] | None = None
) -> DomainDefinition:
    """The definition fleet writes for `vm`; an empty UUID or MAC is the hypervisor's to pick.
    `macs` defaults to the spec's own (see `kept_macs` for a domain that exists)."""
    spec = vm.spec
    if macs is None:
        macs = kept_macs(vm, None)
    name = vm.metadata.name
    memory = memory_kib(spec.memory)
    return DomainDefinition(
        name=name,
        uuid=uuid,
        type=domain_type,
        owner=owner_address(name),
        max_memory_kib=memory,
        memory_kib=memory,
        max_vcpus=spec.vcpus,
        vcpus=spec.vcpus,
        disks=tuple(
            DiskDevice(disk_target(i), d.pool, volume_name(name, d.name)) for i, d in enumerate(spec.disks)
        ),
        nics=tuple(
            NicDevice(n.network, macs[i] if i < len(macs) else "", n.model)
            for i, n in enumerate(spec.networks)
        ),
    )


def _same_nics(current: Sequence[NicDevice], desired: Sequence[NicDevice]) -> bool:
    if len(current) != len(desired):
        return False
    return all(
        have.network == want.network and have.model == want.model and (not want.mac or have.mac == want.mac)
        for have, want in zip(current, desired, strict=True)
    )


def differences(current: DomainDefinition, desired: DomainDefinition) -> list[str]:
    """Names of the managed parts in which a persistent definition differs from the desired one."""
    found = []
    if current.owner != desired.owner:
        found.append("ownership")
    if (current.max_vcpus, current.vcpus) != (desired.max_vcpus, desired.vcpus):
        found.append("vcpus")
    if (current.max_memory_kib, current.memory_kib) != (desired.max_memory_kib, desired.memory_kib):
        found.append("memory")
    if current.disks != desired.disks:
        found.append("disks")
    if not _same_nics(current.nics, desired.nics):
        found.append("networks")
    return found


def device_differences(live: DomainDefinition, desired: DomainDefinition) -> list[str]:
    """Device changes a running domain cannot take (fleet does not hot-plug)."""
    found = []
    if live.disks != desired.disks:
        found.append("disks")
    if not _same_nics(live.nics, desired.nics):
        found.append("networks")
    return found


def domain_xml(definition: DomainDefinition) -> str:
    """The XML libvirt's defineXML takes for `definition`."""
    root = ET.Element("domain", type=definition.type)
    ET.SubElement(root, "name").text = definition.name
    if definition.uuid:
        ET.SubElement(root, "uuid").text = definition.uuid
    if definition.owner is not None:
        metadata = ET.SubElement(root, "metadata")
        # A default namespace on the element, written as an attribute: ElementTree would invent
        # an "ns0:" prefix, and registering one would change every ElementTree user in the process.
        owner = ET.SubElement(metadata, "owner", xmlns=OWNER_NAMESPACE)
        ET.SubElement(owner, "address").text = definition.owner
    ET.SubElement(root, "memory", unit="KiB").text = str(definition.max_memory_kib)
    ET.SubElement(root, "currentMemory", unit="KiB").text = str(definition.memory_kib)
    ET.SubElement(root, "vcpu", placement="static", current=str(definition.vcpus)).text = str(
        definition.max_vcpus
    )
    os_element = ET.SubElement(root, "os")
    ET.SubElement(os_element, "type").text = "hvm"
    ET.SubElement(os_element, "boot", dev="hd")
    ET.SubElement(root, "on_poweroff").text = "destroy"
    ET.SubElement(root, "on_reboot").text = "restart"
    ET.SubElement(root, "on_crash").text = "destroy"
    devices = ET.SubElement(root, "devices")
    for disk in definition.disks:
        element = ET.SubElement(devices, "disk", type="volume", device="disk")
        ET.SubElement(element, "source", pool=disk.pool, volume=disk.volume)
        ET.SubElement(element, "target", dev=disk.target, bus="virtio")
    for nic in definition.nics:
        element = ET.SubElement(devices, "interface", type="network")
        if nic.mac:
            ET.SubElement(element, "mac", address=nic.mac)
        ET.SubElement(element, "source", network=nic.network)
        ET.SubElement(element, "model", type=nic.model)
    return ET.tostring(root, encoding="unicode")


def volume_xml(name: str, capacity_bytes: int) -> str:
    """A thin volume (allocation 0), as virt-install makes them: a full allocation would write
    every byte of a new raw disk before the VM could start."""
    root = ET.Element("volume")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "capacity", unit="bytes").text = str(capacity_bytes)
    ET.SubElement(root, "allocation", unit="bytes").text = "0"
    return ET.tostring(root, encoding="unicode")


def observed_disks(definition: DomainDefinition) -> list[dict[str, str]]:
    """Disks fleet generated by disk name and pool; any other disk by its target device."""
    prefix = f"{definition.name}-"
    disks = []
    for disk in definition.disks:
        if disk.pool and disk.volume.startswith(prefix) and len(disk.volume) > len(prefix):
            disks.append({"name": disk.volume[len(prefix) :], "pool": disk.pool})
        else:
            disks.append({"name": disk.target, "pool": ""})
    return disks


def observed_networks(definition: DomainDefinition) -> list[dict[str, str]]:
    return [{"network": n.network, "mac": n.mac, "model": n.model} for n in definition.nics]


def adopt_command(name: str, uri: str) -> str:
    """The virsh command that marks an existing domain as fleet's (`uri` must be password-free)."""
    return (
        f"virsh -c '{uri}' metadata {name} --uri {OWNER_NAMESPACE} --key {OWNER_PREFIX}"
        f" --set '<owner><address>{owner_address(name)}</address></owner>' --config"
    )
