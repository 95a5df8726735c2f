"""Benchmark: observe 2,000 domains on 20 simulated hypervisors with fleet's libvirt provider,
and with a `virsh dominfo` loop over the same domains, in the same run.

The hypervisors are Debian's libvirtd with the test driver, one daemon per hypervisor
(`lab.hypervisors.HypervisorFarm`), talked to over real libvirt RPC on unix
sockets. The domains are defined (half of them started) by the provider itself, so they
carry fleet's ownership metadata, then:

1. fleet: full observe passes over all VirtualMachine specs (first pass opens the
   connections; later passes reuse them): seconds per pass and domains per second;
2. `virsh -c URI dominfo NAME` for every domain, one process each: seconds, per second;

and the ratio. Figures are printed, never asserted. Run as root (libvirtd).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab.hypervisors import HypervisorFarm
from providers.access import Access, EndpointMap
from providers.base import Action, Change, ObservationState, RevisionInputs
from providers.libvirt.provider import LibvirtProvider
from reconciler.spec import models


def _fleet() -> models.Fleet:
    return models.Fleet.model_validate(
        {
            "apiVersion": "fleet/v1alpha1",
            "kind": "Fleet",
            "metadata": {"name": "bench"},
            "spec": {
                "sites": [{"name": "lab", "racks": [{"name": "r1"}]}],
                "credentials": {"bmc": {"env": "BENCH_BMC"}},
            },
        }
    )


def _hypervisor(name: str) -> models.Machine:
    return models.Machine.model_validate(
        {
            "apiVersion": "fleet/v1alpha1",
            "kind": "Machine",
            "metadata": {"name": name},
            "spec": {
                "site": "lab",
                "rack": "r1",
                "role": "hypervisor",
                "bmc": {"address": "10.0.0.1", "credentialsRef": "bmc"},
            },
        }
    )


def _vm(name: str, host: str, power: str) -> models.VirtualMachine:
    return models.VirtualMachine.model_validate(
        {
            "apiVersion": "fleet/v1alpha1",
            "kind": "VirtualMachine",
            "metadata": {"name": name},
            "spec": {
                "host": host,
                "vcpus": 2,
                "memory": "1Gi",
                "power": power,
                "disks": [{"name": "root", "size": "10Gi"}],
                "networks": [{"network": "default"}],
            },
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hypervisors", type=int, default=20)
    parser.add_argument("--domains", type=int, default=2000)
    parser.add_argument("--passes", type=int, default=5)
    arguments = parser.parse_args()

    names = [f"hv{i:02d}" for i in range(arguments.hypervisors)]
    per_host = arguments.domains // len(names)
    vms = [
        _vm(f"vm-{host}-{i:03d}", host, "on" if i % 2 == 0 else "off")
        for host in names
        for i in range(per_host)
    ]
    with tempfile.TemporaryDirectory(prefix="fleet-bench-libvirt-") as scratch:
        started = time.monotonic()
        with HypervisorFarm(Path(scratch), names, pools=["default"], sample_domain=False) as farm:
            print(f"{len(names)} libvirtd (test driver) started in {time.monotonic() - started:.2f} s")
            fleet = _fleet()
            access = Access(EndpointMap(hypervisor_uris=farm.uris))
            inputs = RevisionInputs.of(fleet, [*(_hypervisor(name) for name in names), *vms])
            settings = fleet.spec.providers.libvirt
            with LibvirtProvider(settings, access) as provider:
                started = time.monotonic()
                with ThreadPoolExecutor(max_workers=len(names)) as pool:
                    results = list(
                        pool.map(
                            lambda vm: provider.apply(Change(vm.address, Action.CREATE, vm), inputs), vms
                        )
                    )
                failed = [r for r in results if not r.ok]
                if failed:
                    raise SystemExit(f"defining domains failed: {failed[0].message}")
                print(f"{len(vms)} domains defined by the provider in {time.monotonic() - started:.1f} s")

            passes = []
            for index in range(arguments.passes + 1):
                # A fresh provider for the first pass measures connecting too.
                if index == 0:
                    provider = LibvirtProvider(settings, access)
                began = time.monotonic()
                observations = provider.observe(vms, inputs).observations
                seconds = time.monotonic() - began
                seen = sum(1 for o in observations if o.state is ObservationState.OBSERVED)
                if seen != len(vms):
                    raise SystemExit(f"observed {seen} of {len(vms)} domains")
                passes.append(seconds)
            provider.close()
            cold, warm = passes[0], passes[1:]
            print(
                f"fleet observe, cold (connects):  {cold:.2f} s for {len(vms)} domains"
                f" ({len(vms) / cold:,.0f} domains/s)"
            )
            print(
                f"fleet observe, warm (median of {len(warm)}): {statistics.median(warm):.2f} s"
                f" ({len(vms) / statistics.median(warm):,.0f} domains/s)"
            )

            uris = farm.uris
            began = time.monotonic()
            for vm in vms:
                done = subprocess.run(
                    ["virsh", "-c", uris[vm.spec.host], "dominfo", vm.metadata.name],
                    capture_output=True,
                    text=True,
                )
                if done.returncode != 0:
                    raise SystemExit(f"virsh dominfo failed: {done.stderr.strip()}")
            virsh = time.monotonic() - began
            print(
                f"virsh dominfo loop:              {virsh:.2f} s for {len(vms)} domains"
                f" ({len(vms) / virsh:,.0f} domains/s)"
            )
            ratio_warm, ratio_cold = virsh / statistics.median(warm), virsh / cold
            print(f"ratio virsh/fleet (warm): {ratio_warm:.0f}x, (cold): {ratio_cold:.0f}x")


if __name__ == "__main__":
    main()
