"""The IPMI provider against the BMC simulator farm: observe, apply, faults, budgets, sessions.

Everything goes over real IPMI/RMCP+ on loopback addresses; nothing is mocked.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fleet_testing import lab_access

from lab.bmc import MAX_SESSIONS_PER_BMC, BmcConfig, BmcFarm
from providers.access import Access
from providers.base import Action, Change, Endpoint, ObservationState, RevisionInputs, UnknownReason
from providers.credentials import Credentials
from providers.ipmi.provider import IpmiProvider, Timing
from reconciler.spec import models

# Each xdist worker gets its own range of loopback subnets, so farms never collide.
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
_subnets = itertools.count(1 + 40 * (_WORKER % 6))
FAST = Timing(
    min_interval=0.05, timeout=3.0, retries=1, backoff=0.05, soft_off_grace=0.5, transition_timeout=5.0
)


def _fleet(rack_budget: int | None = None, *, site: dict[str, Any] | None = None) -> models.Fleet:
    racks = [{"name": "r1", **({"maxConcurrent": rack_budget} if rack_budget else {})}, {"name": "r2"}]
    return models.Fleet.model_validate(
        {
            "apiVersion": "fleet/v1alpha1",
            "kind": "Fleet",
            "metadata": {"name": "test"},
            "spec": {
                "sites": [site or {"name": "lab", "racks": racks}],
                "credentials": {"bmc": {"env": "TEST_BMC"}},
            },
        }
    )


def _machine(name: str, address: str, rack: str = "r1", **spec: Any) -> models.Machine:
    """A Machine whose BMC the spec names at `address`; the lab's endpoint map sends it to the
    simulator. Each machine needs an address of its own, as validation requires of a fleet."""
    return models.Machine.model_validate(
        {
            "apiVersion": "fleet/v1alpha1",
            "kind": "Machine",
            "metadata": {"name": name},
            "spec": {
                "site": "lab",
                "rack": rack,
                "bmc": {"address": address, "credentialsRef": "bmc"},
                **spec,
            },
        }
    )


def _provider(access: Access, inputs: RevisionInputs, *, workers: int, timing: Timing) -> IpmiProvider:
    """A provider made as the pool makes it: with the fleet's IPMI settings and the lab's access."""
    return IpmiProvider(inputs.fleet.spec.providers.ipmi, access, workers=workers, timing=timing)


class Lab:
    """A farm plus the matching specs, the access that reaches it and the revision's inputs."""

    def __init__(self, count: int, *, rack_budget: int | None = None, **config: Any) -> None:
        subnet = next(_subnets)
        self.machines = [
            _machine(f"m{i}", f"10.0.{i // 250}.{i % 250 + 1}", rack="r1" if i % 2 == 0 else "r2")
            for i in range(count)
        ]
        self.configs = [
            BmcConfig(
                name=m.metadata.name,
                address=f"127.91.{subnet}.{i + 1}",
                port=623,
                username="admin",
                password="s3cret-canary",
                group=m.spec.rack,
                **config,
            )
            for i, m in enumerate(self.machines)
        ]
        self.farm = BmcFarm(self.configs, transition_seconds=0.2)
        self.access = lab_access(
            {"TEST_BMC": "admin:s3cret-canary"},
            endpoints={
                f"{m.spec.bmc.address}:623": Endpoint(c.address, 623)
                for m, c in zip(self.machines, self.configs, strict=True)
            },
        )
        self.inputs = RevisionInputs.of(_fleet(rack_budget), self.machines)

    def provider(self, *, workers: int, timing: Timing) -> IpmiProvider:
        return _provider(self.access, self.inputs, workers=workers, timing=timing)


@pytest.fixture()
def lab() -> Iterator[Lab]:
    lab = Lab(4, product="PowerEdge R650", cpus=64, memory_mib=512 * 1024)
    lab.farm.start()
    try:
        yield lab
    finally:
        lab.farm.stop()


def test_observe_reports_power_boot_device_and_inventory(lab: Lab) -> None:
    lab.farm.set_power("m1", "off")
    with lab.provider(workers=2, timing=FAST) as provider:
        observations = {o.address: o for o in provider.observe(lab.machines, lab.inputs).observations}
    assert set(observations) == {m.address for m in lab.machines}
    assert all(o.state is ObservationState.OBSERVED for o in observations.values())
    assert observations["machine/m0"].fields["power"] == "on"
    assert observations["machine/m1"].fields["power"] == "off"
    assert observations["machine/m0"].fields["bootDevice"] == "disk"
    assert observations["machine/m0"].fields["inventory"]["product"] == "PowerEdge R650"


def test_expected_hardware_is_a_warning_never_enforced(lab: Lab) -> None:
    machine = lab.machines[0].model_copy(
        update={
            "spec": lab.machines[0].spec.model_copy(update={"hardware": models.Hardware(product="Other Box")})
        }
    )
    with lab.provider(workers=1, timing=FAST) as provider:
        (observation,) = provider.observe([machine], lab.inputs).observations
    assert observation.state is ObservationState.OBSERVED
    assert any("Other Box" in w for w in observation.warnings)


def test_apply_power_and_boot_device_and_repeat_changes_nothing(lab: Lab) -> None:
    machine = lab.machines[2]
    lab.farm.set_power("m2", "off")
    with lab.provider(workers=2, timing=FAST) as provider:
        first = provider.apply(Change(machine.address, Action.POWER_ON, machine), lab.inputs)
        assert first.ok and first.changed, first.message
        assert lab.farm.state("m2")["power"] == "on"
        again = provider.apply(Change(machine.address, Action.POWER_ON, machine), lab.inputs)
        assert again.ok and not again.changed

        network = machine.model_copy(
            update={"spec": machine.spec.model_copy(update={"bootDevice": "network"})}
        )
        boot = provider.apply(Change(machine.address, Action.BOOT_DEVICE, network), lab.inputs)
        assert boot.ok and boot.changed, boot.message
        assert lab.farm.state("m2")["boot_device"] == "network"
        assert not provider.apply(Change(machine.address, Action.BOOT_DEVICE, network), lab.inputs).changed

        off = provider.apply(Change(machine.address, Action.POWER_OFF, machine), lab.inputs)
        assert off.ok and off.changed, off.message
        assert lab.farm.state("m2")["power"] == "off"


@pytest.mark.parametrize(
    "fault, reason",
    [
        ("silent", UnknownReason.TIMEOUT),
        ("reject-auth", UnknownReason.AUTH_FAILURE),
    ],
    ids=["bmc-never-answers", "bmc-rejects-credentials"],
)
def test_a_faulty_bmc_is_unknown_and_never_holds_up_the_rest(
    lab: Lab, fault: str, reason: UnknownReason
) -> None:
    lab.farm.set_faults("m3", [fault])
    with lab.provider(workers=2, timing=FAST) as provider:
        observations = {o.address: o for o in provider.observe(lab.machines, lab.inputs).observations}
    bad = observations["machine/m3"]
    assert bad.state is ObservationState.UNKNOWN and bad.reason is reason, bad
    assert "s3cret-canary" not in bad.detail
    assert all(o.state is ObservationState.OBSERVED for a, o in observations.items() if a != "machine/m3")


def test_refused_power_on_is_a_clear_failure(lab: Lab) -> None:
    lab.farm.set_power("m0", "off")
    lab.farm.set_faults("m0", ["refuse-power-on"])
    machine = lab.machines[0]
    with lab.provider(workers=1, timing=FAST) as provider:
        result = provider.apply(Change(machine.address, Action.POWER_ON, machine), lab.inputs)
        assert not result.ok and result.message.endswith(
            "refused the request: Command not supported in present state (completion code D5h)"
        ), result.message
        assert lab.farm.state("m0")["power"] == "off"
        # The BMC answered, so its session is sound: the next command goes through on it.
        lab.farm.set_faults("m0", [])
        again = provider.apply(Change(machine.address, Action.POWER_ON, machine), lab.inputs)
    assert again.ok and lab.farm.state("m0")["power"] == "on", again.message
    assert lab.farm.stats()["bmcs"]["m0"]["sessions_opened"] == 1


def test_unreachable_endpoint_is_unknown_not_an_exception() -> None:
    machine = _machine("ghost", "10.255.0.1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    access = lab_access(
        {"TEST_BMC": "admin:x"},
        endpoints={f"{machine.spec.bmc.address}:623": Endpoint("127.0.0.1", free_port)},
    )
    inputs = RevisionInputs.of(_fleet(), [machine])
    with _provider(access, inputs, workers=1, timing=FAST) as provider:
        (observation,) = provider.observe([machine], inputs).observations
        result = provider.apply(Change(machine.address, Action.POWER_ON, machine), inputs)
    assert observation.state is ObservationState.UNKNOWN
    assert observation.reason in (UnknownReason.TIMEOUT, UnknownReason.UNREACHABLE)
    assert not result.ok


def test_missing_credentials_are_unknown_and_name_the_variable(lab: Lab) -> None:
    access = Access(lab.access.endpoints)  # no environment: TEST_BMC is not set
    with _provider(access, lab.inputs, workers=1, timing=FAST) as provider:
        observations = provider.observe(lab.machines[:1], lab.inputs).observations
    assert observations[0].reason is UnknownReason.CREDENTIALS_MISSING
    assert "TEST_BMC" in observations[0].detail


def test_minimum_interval_between_commands_to_one_bmc(lab: Lab) -> None:
    # A provider command is a short burst of IPMI requests (as one ipmitool call is): get power
    # ends with Get Chassis Status (00/01), get boot device is Get Boot Options (00/09), and the
    # inventory read follows. The interval runs from the end of one command, as Ironic's does.
    timing = Timing(min_interval=0.3, timeout=3.0, retries=0, backoff=0.05)
    with lab.provider(workers=2, timing=timing) as provider:
        provider.observe(lab.machines, lab.inputs)
    for name, bmc in lab.farm.stats()["bmcs"].items():
        log = sorted(bmc["log"])
        power = next(t for t, command in log if command == "00/01")
        boot = next(t for t, command in log if command == "00/09")
        inventory = next(t for t, _ in log if t > boot)
        assert boot - power >= 0.28 and inventory - boot >= 0.28, (name, log)


def test_sessions_are_reused_across_passes(lab: Lab) -> None:
    with lab.provider(workers=1, timing=FAST) as provider:
        provider.observe(lab.machines, lab.inputs)
        logins = {name: bmc["sessions_opened"] for name, bmc in lab.farm.stats()["bmcs"].items()}
        assert all(count >= 1 for count in logins.values())
        provider.observe(lab.machines, lab.inputs)
        provider.observe(lab.machines, lab.inputs)
        assert {name: bmc["sessions_opened"] for name, bmc in lab.farm.stats()["bmcs"].items()} == logins


def test_a_bmc_keeps_its_worker_so_a_run_logs_in_once(lab: Lab) -> None:
    # As many workers as BMCs: each BMC's worker is free whenever that BMC's next command is due,
    # so every command goes over the session its first one opened.
    with lab.provider(workers=len(lab.machines), timing=FAST) as provider:
        for _ in range(3):
            observed = provider.observe(lab.machines, lab.inputs).observations
            assert {o.state for o in observed} == {ObservationState.OBSERVED}
        logins = {name: bmc["sessions_opened"] for name, bmc in lab.farm.stats()["bmcs"].items()}
    assert logins == {m.metadata.name: 1 for m in lab.machines}


def test_a_session_idle_past_the_limit_is_opened_again_before_it_is_used(lab: Lab) -> None:
    # BMCs drop a session after a minute of silence and an idle worker sends no keepalive: a pass
    # after a long pause logs in again at once instead of timing out on a dead session.
    keeps = dataclasses.replace(FAST, session_idle=60.0)
    lapses = dataclasses.replace(FAST, session_idle=0.2)
    for timing, logins in ((keeps, 1), (lapses, 2)):
        lab.farm.reset_stats()
        with lab.provider(workers=len(lab.machines), timing=timing) as provider:
            for _ in range(2):
                observed = provider.observe(lab.machines, lab.inputs).observations
                assert {o.state for o in observed} == {ObservationState.OBSERVED}
                time.sleep(0.5)
            opened = {name: bmc["sessions_opened"] for name, bmc in lab.farm.stats()["bmcs"].items()}
        assert opened.keys() == {m.metadata.name for m in lab.machines}, opened
        if logins == 1:  # kept: one login for both passes
            assert set(opened.values()) == {1}, (timing, opened)
        else:  # lapsed in the pause: logged in again (a loaded machine may lapse one more time)
            assert all(n >= logins for n in opened.values()), (timing, opened)


def test_sessions_are_logged_out_so_repeated_runs_never_exhaust_a_bmc(lab: Lab) -> None:
    # A BMC keeps an abandoned session for a minute and holds only a few (the simulator 32):
    # runs that left theirs open would be refused after a handful, which fleet reads as a timeout.
    for _ in range(MAX_SESSIONS_PER_BMC + 2):
        with lab.provider(workers=2, timing=FAST) as provider:
            observations = provider.observe(lab.machines, lab.inputs).observations
        assert {o.state for o in observations} == {ObservationState.OBSERVED}, observations
        # Close Session is sent without waiting for the answer; the farm handles it on its own thread.
        deadline = time.monotonic() + 10
        while _open_sessions(lab) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _open_sessions(lab) == 0


def test_each_bmc_gets_one_session_however_many_workers_serve_the_passes() -> None:
    """A BMC's commands go to the worker holding its session, so passes of one provider with
    several workers log in to each BMC once and hold one session each (BMCs have few slots)."""
    lab = Lab(12)
    lab.farm.start()
    try:
        with lab.provider(workers=4, timing=FAST) as provider:
            for _ in range(5):
                observations = provider.observe(lab.machines, lab.inputs).observations
                assert {o.state for o in observations} == {ObservationState.OBSERVED}, observations
            logins = {name: bmc["sessions_opened"] for name, bmc in lab.farm.stats()["bmcs"].items()}
            held = {m.metadata.name: lab.farm.state(m.metadata.name)["sessions"] for m in lab.machines}
    finally:
        lab.farm.stop()
    assert set(logins.values()) == {1}, logins
    assert set(held.values()) == {1}, held


def _open_sessions(lab: Lab) -> int:
    return sum(lab.farm.state(m.metadata.name)["sessions"] for m in lab.machines)


def test_rack_budget_limits_concurrent_bmcs() -> None:
    lab = Lab(8, rack_budget=1, faults=frozenset({"slow"}), slow_seconds=0.1)
    lab.farm.start()
    try:
        with lab.provider(workers=4, timing=FAST) as provider:
            observations = provider.observe(lab.machines, lab.inputs).observations
            stats = lab.farm.stats()  # before the closing logouts, which no budget holds back
    finally:
        lab.farm.stop()
    assert all(o.state is ObservationState.OBSERVED for o in observations)
    assert stats["groups"]["r1"]["max_inflight"] == 1, stats["groups"]
    assert stats["groups"]["r2"]["max_inflight"] > 1, stats["groups"]


def test_inventory_is_read_once_not_every_pass(lab: Lab) -> None:
    with lab.provider(workers=1, timing=FAST) as provider:
        first = provider.observe(lab.machines, lab.inputs).observations
        second = provider.observe(lab.machines, lab.inputs).observations
    assert [o.fields["inventory"] for o in first] == [o.fields["inventory"] for o in second]
    assert all(bmc["by_command"].get("3a/01") == 1 for bmc in lab.farm.stats()["bmcs"].values())


class _GarbageResponder:
    """A UDP peer that answers every datagram with bytes that are not IPMI."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.running:
            try:
                _, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.sock.sendto(b"\x06\x00\xff\x07" + b"\xde\xad\xbe\xef" * 8, peer)

    def close(self) -> None:
        self.running = False
        self.thread.join(timeout=2)
        self.sock.close()


def test_no_pyghmi_or_socket_exception_escapes_the_provider() -> None:
    # m2 answers 8 s late, well past the hard timeout below, which leaves the others room to
    # answer on a busy machine.
    lab = Lab(4, slow_seconds=8.0)
    lab.farm.start()
    garbage = _GarbageResponder()
    ghost = _machine("ghost-garbage", "10.255.0.2")
    lab.farm.set_faults("m1", ["flap"])
    lab.farm.set_faults("m2", ["slow"])
    access = lab_access(
        lab.access.credentials.environment,
        endpoints={
            **lab.access.endpoints.endpoints,
            f"{ghost.spec.bmc.address}:623": Endpoint("127.0.0.1", garbage.port),
        },
    )
    inputs = RevisionInputs.of(lab.inputs.fleet, [*lab.machines, ghost])
    timing = Timing(
        min_interval=0.05, timeout=3.0, retries=1, backoff=0.05, soft_off_grace=0.2, transition_timeout=2.0
    )
    try:
        with _provider(access, inputs, workers=2, timing=timing) as provider:
            observations = {
                o.address: o for o in provider.observe([*lab.machines, ghost], inputs).observations
            }
            results = [
                provider.apply(Change(m.address, Action.POWER_CYCLE, m), inputs)
                for m in (ghost, lab.machines[2])
            ]
    finally:
        garbage.close()
        lab.farm.stop()
    assert observations["machine/ghost-garbage"].state is ObservationState.UNKNOWN
    assert observations["machine/m2"].reason is UnknownReason.TIMEOUT
    assert observations["machine/m0"].state is ObservationState.OBSERVED
    assert not results[0].ok and results[0].message
    assert all(type(r).__name__ == "ApplyResult" for r in results)


@pytest.mark.parametrize(
    "exc, reason, temporary",
    [
        (socket.gaierror(-2, "Name or service not known"), UnknownReason.UNREACHABLE, True),
        (ConnectionRefusedError(111, "Connection refused"), UnknownReason.UNREACHABLE, True),
        (RuntimeError("Incorrect password provided"), UnknownReason.AUTH_FAILURE, False),
        (RuntimeError("timeout"), UnknownReason.TIMEOUT, True),
        (struct.error("pack expected 32 items"), UnknownReason.PROTOCOL_ERROR, True),
    ],
    ids=["dns", "refused", "bad-password", "timeout", "pyghmi-internal-error"],
)
def test_every_client_error_is_mapped(exc: BaseException, reason: UnknownReason, temporary: bool) -> None:
    from providers.ipmi.client import classify

    mapped = classify(exc, "10.0.0.1:623")
    assert (mapped.reason, mapped.temporary) == (reason, temporary)
    assert "10.0.0.1:623" in mapped.message


@pytest.mark.parametrize(
    "text, code, temporary, reason",
    [
        ("Node Busy", 0xC0, True, UnknownReason.PROTOCOL_ERROR),
        ("BMC initialization in progress", 0xD2, True, UnknownReason.PROTOCOL_ERROR),
        ("Command not supported in present state", 0xD5, False, UnknownReason.PROTOCOL_ERROR),
        ("Insufficient privilege level or firmware firewall", 0xD4, False, UnknownReason.AUTH_FAILURE),
    ],
    ids=["busy", "initialising", "refused", "privilege"],
)
def test_a_completion_code_is_an_answer_retried_only_when_it_says_not_now(
    text: str, code: int, temporary: bool, reason: UnknownReason
) -> None:
    """pyghmi raises a BMC's completion code as its text (set_power, set_bootdev) or with the code."""
    from pyghmi.exceptions import IpmiException

    from providers.ipmi.client import classify

    for exc in (IpmiException(text), IpmiException(text, code)):
        mapped = classify(exc, "10.0.0.1:623")
        assert (mapped.temporary, mapped.reason, mapped.answered) == (temporary, reason, True)
        assert mapped.message == f"BMC 10.0.0.1:623 refused the request: {text} (completion code {code:02X}h)"
    # pyghmi's own "Timeout" is no answer: the session is dropped.
    assert not classify(IpmiException("Timeout", 0xFFFF), "10.0.0.1:623").answered


def test_credentials_never_show_in_reprs_or_messages() -> None:
    from providers.credentials import Secret

    fleet = _fleet()
    credentials = Credentials({"TEST_BMC": "admin:canary-pw-991"}).user_password("bmc", RevisionInputs(fleet))
    assert credentials.password.reveal() == "canary-pw-991"
    for shown in (repr(credentials), str(credentials), repr(credentials.password), f"{credentials.password}"):
        assert "canary-pw-991" not in shown
    assert Secret("x") == Secret("x")
    with pytest.raises(Exception, match="username:password") as error:
        Credentials({"TEST_BMC": "canary-no-colon"}).user_password("bmc", RevisionInputs(fleet))
    assert "canary-no-colon" not in str(error.value)


def test_a_flapping_bmc_is_retried_with_backoff() -> None:
    lab = Lab(1, faults=frozenset({"flap"}), flap_seconds=0.6)
    lab.farm.start()
    timing = Timing(min_interval=0.05, timeout=4.0, retries=4, backoff=0.3)
    try:
        with lab.provider(workers=1, timing=timing) as provider:
            observations = [provider.observe(lab.machines, lab.inputs).observations[0] for _ in range(3)]
    finally:
        lab.farm.stop()
    assert all(o.state is ObservationState.OBSERVED for o in observations), observations


def test_power_domain_budget_limits_concurrent_bmcs() -> None:
    lab = Lab(6, faults=frozenset({"slow"}), slow_seconds=0.1)
    fleet = _fleet(
        site={
            "name": "lab",
            "powerDomains": [{"name": "feed-a", "maxConcurrent": 1}],
            "racks": [{"name": "r1", "powerDomain": "feed-a"}, {"name": "r2", "powerDomain": "feed-a"}],
        }
    )
    inputs = RevisionInputs.of(fleet, lab.machines)
    lab.farm.start()
    try:
        with _provider(lab.access, inputs, workers=4, timing=FAST) as provider:
            observations = provider.observe(lab.machines, inputs).observations
            stats = lab.farm.stats()  # before the closing logouts, which no budget holds back
    finally:
        lab.farm.stop()
    assert all(o.state is ObservationState.OBSERVED for o in observations)
    assert stats["farm"]["max_inflight"] == 1, stats["farm"]


def test_power_off_is_soft_first_and_hard_after_the_grace(lab: Lab) -> None:
    machine = lab.machines[1]
    # A grace the simulated OS's 0.2 s shutdown fits in, however busy the machine.
    timing = dataclasses.replace(FAST, soft_off_grace=2.0)
    with lab.provider(workers=1, timing=timing) as provider:
        soft = provider.apply(Change(machine.address, Action.POWER_OFF, machine), lab.inputs)
        assert soft.ok and "shut down by the operating system" in soft.message, soft.message
        provider.apply(Change(machine.address, Action.POWER_ON, machine), lab.inputs)
        lab.farm.set_faults("m1", ["ignore-soft-off"])  # the operating system hangs
        hard = provider.apply(Change(machine.address, Action.POWER_OFF, machine), lab.inputs)
    assert hard.ok and "hard" in hard.message, hard.message
    assert hard.seconds >= timing.soft_off_grace
    assert lab.farm.state("m1")["power"] == "off"
    log = [command for _, command in lab.farm.stats()["bmcs"]["m1"]["log"]]
    assert log.count("00/02") >= 4  # chassis control: soft off, on, soft off, hard off
