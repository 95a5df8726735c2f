"""The BMC simulator farm against real IPMI clients: Debian's ipmitool and pyghmi's client.

pyghmi's client keeps process-global state (and deadlocks across threads), so it only runs
in subprocesses here; the farm runs in-process. Each test gets fresh loopback endpoints, per
xdist worker, so tests never share a BMC.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.bmc import (
    BmcConfig,
    BmcFarm,
    BmcFarmError,
    build_fru,
    build_inventory_reply,
    control_reply,
    load_farm,
)

REPO = Path(__file__).resolve().parents[1]
# Debian's ipmitool is the independent client; scripts/bootstrap.sh installs it.
IPMITOOL = shutil.which("ipmitool")
# 623 needs root; elsewhere the same loopback addresses serve on a high port.
PORT = 623 if os.geteuid() == 0 else 16623
WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
_addresses = itertools.count()


def next_address() -> str:
    """A loopback address no other test (or xdist worker) uses: 127.77.<worker block>.<n>."""
    n = next(_addresses)
    return f"127.77.{WORKER * 16 + n // 250}.{1 + n % 250}"


def bmc(name: str, **fields: Any) -> BmcConfig:
    fields.setdefault("address", next_address())
    fields.setdefault("port", PORT)
    return BmcConfig(name=name, **fields)


@pytest.fixture
def farms() -> Iterator[Callable[..., BmcFarm]]:
    started: list[BmcFarm] = []

    def make(*configs: BmcConfig, **settings: Any) -> BmcFarm:
        farm = BmcFarm(configs, **settings)
        farm.start()
        started.append(farm)
        return farm

    yield make
    for farm in started:
        farm.stop()


def ipmitool_command(
    config: BmcConfig,
    *args: str,
    password: str | None = None,
    user: str | None = None,
    wait: int = 1,
    retries: int = 3,
) -> list[str]:
    assert IPMITOOL is not None, "ipmitool is missing: run scripts/bootstrap.sh"
    command = [IPMITOOL, "-I", "lanplus", "-H", config.address, "-p", str(config.port)]
    command += ["-U", user or config.username, "-P", config.password if password is None else password]
    return [*command, "-N", str(wait), "-R", str(retries), *args]


def ipmitool(config: BmcConfig, *args: str, **options: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ipmitool_command(config, *args, **options), capture_output=True, text=True, timeout=120
    )


def power_status(config: BmcConfig) -> str:
    result = ipmitool(config, "chassis", "power", "status")
    assert result.returncode == 0, result.stderr
    match = re.search(r"Chassis Power is (on|off)", result.stdout)
    assert match, result.stdout
    return match.group(1)


PYGHMI_CLIENT = r"""
import json, sys, time
from pyghmi.ipmi import command

def run(c, step):
    op = step["op"]
    if op == "login":
        return True
    if op == "get_power":
        return c.get_power()["powerstate"]
    if op == "set_power":
        return c.set_power(step["state"], wait=step.get("wait", False))
    if op == "get_bootdev":
        return c.get_bootdev()
    if op == "set_bootdev":
        return c.set_bootdev(step["device"], persist=step.get("persist", False))
    if op == "inventory":
        return c.get_inventory_of_component("System")
    if op == "raw":
        response = c.raw_command(netfn=step["netfn"], command=step["command"], data=step.get("data", []))
        return {"code": response.get("code"), "data": list(response.get("data", b""))}
    if op == "rate":
        count, start = 0, time.monotonic()
        while time.monotonic() - start < step["seconds"]:
            c.get_power()
            count += 1
        return count / (time.monotonic() - start)
    raise ValueError(op)

sessions, results = {}, []
for step in json.load(sys.stdin):
    try:
        key = (step["host"], step["port"])
        if key not in sessions:
            sessions[key] = command.Command(
                bmc=step["host"], port=step["port"], userid=step["user"], password=step["password"])
        results.append({"ok": True, "value": run(sessions[key], step)})
    except Exception as exc:
        results.append({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
print(json.dumps(results, default=str))
"""


def pyghmi_steps(
    config: BmcConfig, *steps: dict[str, Any], password: str | None = None
) -> list[dict[str, Any]]:
    where = {"host": config.address, "port": config.port, "user": config.username}
    where["password"] = config.password if password is None else password
    return [{**where, **step} for step in steps]


def start_pyghmi(steps: list[dict[str, Any]]) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", PYGHMI_CLIENT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None
    process.stdin.write(json.dumps(steps))
    process.stdin.close()
    return process


def finish_pyghmi(process: subprocess.Popen[str], timeout: float = 120) -> list[dict[str, Any]]:
    assert process.stdout is not None and process.stderr is not None
    out = process.stdout.read()
    err = process.stderr.read()
    assert process.wait(timeout) == 0, err
    results: list[dict[str, Any]] = json.loads(out)
    return results


def run_pyghmi(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return finish_pyghmi(start_pyghmi(steps))


def values(results: list[dict[str, Any]]) -> list[Any]:
    assert all(result["ok"] for result in results), results
    return [result["value"] for result in results]


def endpoint_is_free(config: BmcConfig) -> bool:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind((config.address, config.port))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def auth_capabilities_request() -> bytes:
    """Get Channel Authentication Capabilities, IPMI 1.5 framing, no session."""
    body = bytes([0x81, 0x00, 0x38, 0x8E, 0x04])
    message = bytes([0x20, 0x18, -(0x20 + 0x18) & 0xFF]) + body + bytes([-sum(body) & 0xFF])
    return b"\x06\x00\xff\x07" + b"\x00" + bytes(8) + bytes([len(message)]) + message


# -- configuration ------------------------------------------------------------------------------


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        BmcConfig(name="x", address="127.0.0.1", faults=frozenset({"explode"}))
    with pytest.raises(ValueError, match="boot_device"):
        BmcConfig(name="x", address="127.0.0.1", boot_device="floppy")
    with pytest.raises(ValueError, match="not an IP address"):
        BmcConfig(name="x", address="bmc.example")
    with pytest.raises(ValueError, match="unknown field"):
        BmcConfig.from_dict({"name": "x", "address": "127.0.0.1", "colour": "red"})
    one = BmcConfig(name="a", address="127.0.0.1", port=10000)
    with pytest.raises(ValueError, match="two BMCs are named"):
        BmcFarm([one, BmcConfig(name="a", address="127.0.0.2")])
    with pytest.raises(ValueError, match="share endpoint"):
        BmcFarm([one, BmcConfig(name="b", address="127.0.0.1", port=10000)])
    parsed = BmcConfig.from_dict({"name": "x", "address": "127.0.0.1", "faults": ["slow", "flap"]})
    assert parsed.faults == frozenset({"slow", "flap"})


def test_serve_config_accepts_a_list_or_an_object(tmp_path: Path) -> None:
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([{"name": "a", "address": "127.0.0.1", "port": 10001}]))
    assert len(load_farm(listed)) == 1
    described = tmp_path / "object.json"
    bmcs = [{"name": "a", "address": "127.0.0.1"}, {"name": "b", "address": "127.0.0.2"}]
    described.write_text(json.dumps({"transition_seconds": 2.5, "latency_seconds": 0, "bmcs": bmcs}))
    farm = load_farm(described)
    assert (len(farm), farm.transition_seconds, farm.latency_seconds) == (2, 2.5, 0.0)
    control = control_reply(farm, b'{"op": "state", "name": "b"}')
    assert control == {"ok": True, "result": farm.state("b")}
    assert control_reply(farm, b'{"op": "state", "name": "zz"}') == {
        "ok": False,
        "error": "no BMC named 'zz'",
    }
    assert not control_reply(farm, b"not json")["ok"]


def test_fru_image_is_well_formed_and_pyghmi_parses_it() -> None:
    from pyghmi.ipmi import fru  # type: ignore[import-untyped]

    config = BmcConfig(name="m1", address="127.0.0.1", product="PowerEdge R650", serial="X", cpus=2)
    image = build_fru(config)
    assert sum(image[:8]) % 256 == 0
    for offset in (image[3] * 8, image[4] * 8):
        assert sum(image[offset : offset + image[offset + 1] * 8]) % 256 == 0
    info = fru.FRU(rawdata=image).info
    # A one-character field gets a trailing blank: C1h alone would mean "end of fields".
    assert (info["Product name"], info["Serial Number"], info["Asset Number"]) == (
        "PowerEdge R650",
        "X",
        "m1",
    )
    assert info["product_extra"] == ["cpus=2", "memory_mib=0"]
    reply = build_inventory_reply(config)
    assert struct.unpack_from("<HI", reply) == (2, 0)
    assert reply[6:] == b"\x0ePowerEdge R650\x01X"


# -- ipmitool ------------------------------------------------------------------------------------


def test_power_on_and_off_take_the_transition_time(farms: Callable[..., BmcFarm]) -> None:
    transition = 1.0
    config = bmc("power", power="off")
    farm = farms(config, transition_seconds=transition)
    assert power_status(config) == "off"
    started = time.monotonic()
    result = ipmitool(config, "chassis", "power", "on")
    assert result.returncode == 0 and "Up/On" in result.stdout, result
    status = power_status(config)
    if time.monotonic() < started + transition:
        # Answered before the transition could have ended: the BMC must still say off.
        assert status == "off"
        assert farm.state("power")["transition"]["target"] == "on"
    deadline = started + transition + 15
    while power_status(config) != "on":
        assert time.monotonic() < deadline, "power never came on"
        time.sleep(0.1)
    assert time.monotonic() - started >= transition
    assert farm.state("power")["boots"] == 1
    assert ipmitool(config, "chassis", "power", "off").returncode == 0
    while farm.state("power")["power"] != "off":
        assert time.monotonic() < deadline + transition, "power never went off"
        time.sleep(0.05)
    assert farm.stats(["power"])["groups"] == {}
    assert farm.stats(["power"])["farm"]["max_transitioning"] == 1


def test_boot_device_and_persistence(farms: Callable[..., BmcFarm]) -> None:
    config = bmc("boot", boot_device="disk", boot_persistent=True)
    farm = farms(config)
    assert ipmitool(config, "chassis", "bootdev", "pxe").returncode == 0
    state = farm.state("boot")
    assert (state["boot_device"], state["boot_persistent"]) == ("network", False)
    shown = ipmitool(config, "chassis", "bootparam", "get", "5").stdout
    assert "Force PXE" in shown and "Options apply to only next boot" in shown
    assert ipmitool(config, "chassis", "bootdev", "disk", "options=persistent").returncode == 0
    state = farm.state("boot")
    assert (state["boot_device"], state["boot_persistent"]) == ("disk", True)
    shown = ipmitool(config, "chassis", "bootparam", "get", "5").stdout
    assert "Force Boot from default Hard-Drive" in shown and "all future boots" in shown
    for ipmitool_name, ours in (("bios", "bios"), ("cdrom", "cdrom")):
        assert ipmitool(config, "chassis", "bootdev", ipmitool_name).returncode == 0
        assert farm.state("boot")["boot_device"] == ours


def test_inventory_through_fru_and_the_oem_request(farms: Callable[..., BmcFarm]) -> None:
    config = bmc("inv", product="ProLiant DL380 Gen10", serial="CZ2345", cpus=64, memory_mib=524288)
    farms(config)
    fru = ipmitool(config, "fru", "print")
    assert fru.returncode == 0, fru.stderr
    assert re.search(r"Product Name\s+: ProLiant DL380 Gen10", fru.stdout)
    assert re.search(r"Product Serial\s+: CZ2345", fru.stdout)
    assert "cpus=64" in fru.stdout and "memory_mib=524288" in fru.stdout
    raw = ipmitool(config, "raw", "0x3a", "0x01")
    assert raw.returncode == 0, raw.stderr
    data = bytes(int(byte, 16) for byte in raw.stdout.split())
    assert struct.unpack_from("<HI", data) == (64, 524288)
    product = data[7 : 7 + data[6]]
    serial = data[8 + len(product) : 8 + len(product) + data[7 + len(product)]]
    assert (product, serial) == (b"ProLiant DL380 Gen10", b"CZ2345")


def test_wrong_credentials_are_rejected(farms: Callable[..., BmcFarm]) -> None:
    config = bmc("creds", username="root", password="calvin")
    farms(config)
    wrong = ipmitool(config, "chassis", "power", "status", password="hunter2")
    assert wrong.returncode != 0 and "Unable to establish" in wrong.stderr
    stranger = ipmitool(config, "chassis", "power", "status", user="admin")
    assert stranger.returncode != 0
    assert power_status(config) == "on"


def test_reject_auth_fault_rejects_the_right_password(farms: Callable[..., BmcFarm]) -> None:
    config = bmc("locked", faults=frozenset({"reject-auth"}))
    farm = farms(config)
    assert ipmitool(config, "chassis", "power", "status").returncode != 0
    farm.set_faults("locked", [])
    assert power_status(config) == "on"
    farm.set_faults("locked", ["reject-auth"])
    assert ipmitool(config, "chassis", "power", "status").returncode != 0


def test_silent_bmc_times_out_until_the_fault_is_cleared(farms: Callable[..., BmcFarm]) -> None:
    config = bmc("mute", faults=frozenset({"silent"}))
    farm = farms(config)
    result = ipmitool(config, "chassis", "power", "status", wait=1, retries=1)
    assert result.returncode != 0
    assert farm.stats(["mute"])["bmcs"]["mute"]["dropped"] >= 1
    farm.set_faults("mute", [])
    assert power_status(config) == "on"


def test_refuse_power_on_leaves_the_power_off(farms: Callable[..., BmcFarm]) -> None:
    config = bmc("stuck", power="off", faults=frozenset({"refuse-power-on"}))
    farm = farms(config, transition_seconds=0.2)
    result = ipmitool(config, "chassis", "power", "on")
    assert result.returncode != 0 and "not supported in present state" in result.stderr
    time.sleep(0.5)
    assert power_status(config) == "off"
    assert farm.state("stuck")["transition"] is None
    assert farm.stats(["stuck"])["bmcs"]["stuck"]["by_command"]["00/02"] == 1


def test_slow_bmcs_answer_late_and_show_overlapping_requests(farms: Callable[..., BmcFarm]) -> None:
    # ipmitool sends about seven requests per session, each answered `slow` seconds late.
    slow = 0.25
    configs = [
        bmc(f"slow{i}", group="rack-1", faults=frozenset({"slow"}), slow_seconds=slow) for i in range(3)
    ]
    farm = farms(*configs)
    # One client at a time: requests to the rack never overlap.
    for config in configs[:2]:
        started = time.monotonic()
        assert power_status(config) == "on"
        assert time.monotonic() - started >= slow
    assert farm.stats()["groups"]["rack-1"]["max_inflight"] == 1
    farm.reset_stats()
    assert farm.stats()["groups"]["rack-1"]["max_inflight"] == 0
    # Three clients at once, each with a request held most of the time: all three overlap.
    status = ("chassis", "power", "status")
    processes = [
        subprocess.Popen(ipmitool_command(c, *status, wait=5, retries=1), text=True) for c in configs
    ]
    assert all(process.wait(60) == 0 for process in processes)
    stats = farm.stats()
    assert stats["groups"]["rack-1"]["max_inflight"] == 3
    assert stats["groups"]["rack-1"]["inflight"] == 0
    assert stats["groups"]["rack-1"]["max_sessions"] == 3
    # Each client waits for an answer before its next request, so its commands are >= slow apart.
    assert all(stats["bmcs"][c.name]["min_gap"] >= slow for c in configs)


def test_flapping_bmc_alternately_answers_and_drops(farms: Callable[..., BmcFarm]) -> None:
    config = bmc("flappy", faults=frozenset({"flap"}), flap_seconds=0.4)
    farm = farms(config)
    farm.set_faults("flappy", [])
    farm.set_faults("flappy", ["flap"])  # restarts the cycle now
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.settimeout(0.1)
    outcomes: list[bool] = []
    try:
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            probe.sendto(auth_capabilities_request(), (config.address, config.port))
            try:
                probe.recvfrom(512)
                outcomes.append(True)
                time.sleep(0.1)
            except TimeoutError:
                outcomes.append(False)
    finally:
        probe.close()
    assert outcomes.count(True) >= 2 and outcomes.count(False) >= 2, outcomes
    assert outcomes[0], "a flap starts with an answering period"


def test_garbage_datagrams_do_not_kill_the_farm(farms: Callable[..., BmcFarm]) -> None:
    config = bmc("target")
    farm = farms(config)
    rng = random.Random(623)
    rmcp = b"\x06\x00\xff\x07"
    # Sessionless, netfn 6, command 38h, but two bytes short: pyghmi's parser raises on it.
    overread = bytearray(22)
    overread[0:6], overread[17], overread[21] = rmcp + b"\x06\x00", 0x18, 0x38
    junk = [bytes(overread), b"", b"\x06", rmcp, rmcp + b"\x06"]
    junk += [rng.randbytes(rng.randrange(1, 300)) for _ in range(200)]
    junk += [rmcp + bytes([0x06, ptype]) + rng.randbytes(rng.randrange(0, 60)) for ptype in range(0x40)]
    opening = rmcp + b"\x06\x10" + bytes(8) + b"\x20\x00" + bytes([1, 0, 0, 0]) + b"\x01\x02\x03\x04"
    junk += [opening + bytes(24), opening + rng.randbytes(24)]
    junk += [rmcp + b"\x00" + bytes(8) + rng.randbytes(rng.randrange(1, 40)) for _ in range(50)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for index, packet in enumerate(junk):
            sender.sendto(packet, (config.address, config.port))
            if index % 20 == 0:
                time.sleep(0.002)  # stay within the socket's receive buffer
    assert power_status(config) == "on"
    assert farm.running
    assert farm.stats(["target"])["bmcs"]["target"]["errors"] >= 1


def test_distinct_ports_on_one_address(farms: Callable[..., BmcFarm]) -> None:
    ports = []
    for _ in range(2):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    first = BmcConfig(name="p1", address="127.0.0.1", port=ports[0], password="one", power="off")
    second = BmcConfig(name="p2", address="127.0.0.1", port=ports[1], password="two", power="on")
    farms(first, second)
    assert (power_status(first), power_status(second)) == ("off", "on")
    assert ipmitool(first, "chassis", "power", "status", password="two").returncode != 0


def test_start_names_a_taken_endpoint_and_binds_nothing(farms: Callable[..., BmcFarm]) -> None:
    free, taken = bmc("free"), bmc("taken")
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind((taken.address, taken.port))
    try:
        with pytest.raises(
            BmcFarmError, match=rf"'taken' cannot listen on {re.escape(taken.endpoint)}: .*taken"
        ):
            farms(free, taken)
        assert endpoint_is_free(free)
    finally:
        squatter.close()


# -- pyghmi --------------------------------------------------------------------------------------


def test_pyghmi_client_logs_in_with_sha1_and_drives_the_bmc(farms: Callable[..., BmcFarm]) -> None:
    config = bmc("pyg", power="off", product="ThinkSystem SR650", serial="J300ABCD", cpus=2, memory_mib=65536)
    farm = farms(config, transition_seconds=0.3)
    steps = pyghmi_steps(
        config,
        {"op": "get_power"},
        {"op": "set_power", "state": "on", "wait": 10},
        {"op": "get_power"},
        {"op": "get_bootdev"},
        {"op": "set_bootdev", "device": "network", "persist": True},
        {"op": "get_bootdev"},
        {"op": "inventory"},
        {"op": "raw", "netfn": 0x3A, "command": 0x01},
    )
    before, turned_on, after, boot, _, boot_after, inventory, raw = values(run_pyghmi(steps))
    assert (before, turned_on, after) == ("off", {"powerstate": "on"}, "on")
    assert boot == {"bootdev": "hd", "persistent": True, "uefimode": False}
    assert boot_after == {"bootdev": "network", "persistent": True, "uefimode": False}
    assert (inventory["Product name"], inventory["Serial Number"]) == ("ThinkSystem SR650", "J300ABCD")
    assert inventory["product_extra"] == ["cpus=2", "memory_mib=65536"]
    assert raw["code"] == 0 and struct.unpack_from("<HI", bytes(raw["data"])) == (2, 65536)
    state = farm.state("pyg")
    assert (state["power"], state["boot_device"], state["boot_persistent"]) == ("on", "network", True)


def test_pyghmi_client_sees_a_wrong_password(farms: Callable[..., BmcFarm]) -> None:
    config = bmc("pyg-auth")
    farms(config)
    (result,) = run_pyghmi(pyghmi_steps(config, {"op": "login"}, password="wrong"))
    assert not result["ok"] and "password" in result["error"].lower()


def test_one_process_serves_a_thousand_bmcs(farms: Callable[..., BmcFarm]) -> None:
    configs = [
        BmcConfig(
            name=f"node{i:04d}",
            address=f"127.78.{WORKER * 4 + i // 250}.{1 + i % 250}",
            port=PORT,
            password=f"pw{i}",
            power="on" if i % 2 else "off",
            group=f"rack{i // 40}",
        )
        for i in range(1000)
    ]
    farm = farms(*configs)
    # Every BMC answers a real login and a power query: four pyghmi processes, 250 BMCs each.
    clients = [
        start_pyghmi([s for c in configs[k::4] for s in pyghmi_steps(c, {"op": "get_power"})])
        for k in range(4)
    ]
    answers = [finish_pyghmi(client) for client in clients]
    for k, results in enumerate(answers):
        assert values(results) == [c.power for c in configs[k::4]]
    # One open session, sequential commands: the rate a single client gets.
    (rate,) = values(run_pyghmi(pyghmi_steps(configs[500], {"op": "rate", "seconds": 1.0})))
    print(f"\npyghmi get_power on one open session against a 1,000-BMC farm: {rate:.0f}/s")
    assert rate > 20
    for config in (configs[0], configs[499], configs[999]):
        assert power_status(config) == config.power
    stats = farm.stats(times=False)
    assert all(stats["bmcs"][c.name]["commands"] >= 1 for c in configs)
    assert stats["farm"]["max_sessions"] >= 250
    assert len(stats["groups"]) == 25


# -- command line --------------------------------------------------------------------------------


def control(path: Path, request: dict[str, Any]) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(10)
        client.connect(str(path))
        client.sendall(json.dumps(request).encode() + b"\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = client.recv(65536)
            assert chunk, "the control socket closed without answering"
            reply += chunk
    answer: dict[str, Any] = json.loads(reply)
    return answer


def test_serve_command_with_control_socket(tmp_path: Path) -> None:
    configs = [bmc("cli-a", power="off", group="r1"), bmc("cli-b", group="r1"), bmc("cli-c")]
    config_file = tmp_path / "bmcs.json"
    bmcs = [
        {"name": c.name, "address": c.address, "port": c.port, "power": c.power, "group": c.group}
        for c in configs
    ]
    config_file.write_text(json.dumps({"transition_seconds": 0.2, "bmcs": bmcs}))
    socket_path = tmp_path / "bmc.sock"
    command = [sys.executable, "-m", "lab.bmc", "serve", "--config", str(config_file)]
    process = subprocess.Popen(
        [*command, "--control", str(socket_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        readable, _, _ = select.select([process.stdout], [], [], 60)
        assert readable, "the simulator never said it was ready"
        assert process.stdout.readline().strip() == "ready 3 BMCs"

        assert control(socket_path, {"op": "ping"}) == {"ok": True, "result": {"bmcs": 3}}
        assert control(socket_path, {"op": "state", "name": "cli-a"})["result"]["power"] == "off"
        assert power_status(configs[0]) == "off"
        assert control(socket_path, {"op": "set_power", "name": "cli-a", "power": "on"})["ok"]
        assert power_status(configs[0]) == "on"
        assert control(socket_path, {"op": "set_faults", "name": "cli-b", "faults": ["silent"]})["ok"]
        assert ipmitool(configs[1], "chassis", "power", "status", retries=1).returncode != 0
        stats = control(socket_path, {"op": "stats", "names": ["cli-a", "cli-b"]})["result"]
        assert stats["bmcs"]["cli-a"]["by_command"]["00/01"] == 2
        assert len(stats["bmcs"]["cli-a"]["times"]) == stats["bmcs"]["cli-a"]["commands"]
        assert stats["bmcs"]["cli-b"]["dropped"] >= 1
        assert stats["groups"]["r1"]["bmcs"] == 2
        assert control(socket_path, {"op": "set_faults", "name": "cli-b", "faults": ["bogus"]})["ok"] is False
        assert control(socket_path, {"op": "launch"})["ok"] is False
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    assert not socket_path.exists()
    assert all(endpoint_is_free(config) for config in configs)
