"""A farm of simulated BMCs speaking real IPMI 2.0 (RMCP+) over UDP, for tests and `fleet lab`.

One process serves thousands of BMCs, each on its own endpoint with its own credentials, power
state, boot device, inventory and injected faults, so IPMI clients can be tested against real
protocol traffic. It must never listen anywhere but the endpoints its config names, never
stand in for a real BMC, and never let one bad packet, slow BMC or full socket stall the others.

Design. One thread waits on every BMC socket at once (`selectors`, epoll on Linux: `select()`
stops at 1,024 descriptors) and handles each datagram as it arrives. pyghmi's `Bmc` and
`ServerSession` do the RMCP+ work (RAKP, HMAC-SHA1, AES); the farm routes datagrams itself,
by BMC socket and managed session ID, instead of through pyghmi's process-global table keyed
by client address and port, where two BMCs sharing a port overwrite each other. pyghmi's
client IO thread and socket pool are never started. Time-driven work runs from a timer heap
on the same thread: power transitions, session expiry, and in-session requests, which are
answered `latency_seconds` (default 1 ms) after they arrive, or `slow_seconds` for a `slow`
BMC. Real BMCs take milliseconds; pyghmi's client has a wakeup race that sub-millisecond
answers hit, after which each of its commands waits out a ~1 s retry timer.

Protocol. Sessionless: Get Channel Authentication Capabilities, Get Channel Cipher Suites
(suite 3 only). Open Session accepts only RAKP-HMAC-SHA1 / HMAC-SHA1-96 / AES-CBC-128 and
answers any other proposal with RMCP+ status 04h, 05h or 10h (invalid authentication,
integrity or confidentiality algorithm); pyghmi's client proposes SHA-256 first and retries
with SHA-1 only when refused. An unknown user gets RAKP2 status 0Dh. In a session: Get Device
ID, Get System GUID, Set Session Privilege, Close Session, Get Chassis Status, Chassis Control,
Set/Get System Boot Options (parameter 5 carries device and persistence), FRU and inventory,
and an SDR repository holding one record (the BMC's own MC Device Locator), which ipmitool's
`fru print` and `sdr list` walk.

Inventory. FRU device 0 (netfn 0Ah: 10h Get FRU Inventory Area Info, 11h Read FRU Data) holds
a Board and a Product area; the product area has the product name, serial number, the BMC
name as asset tag and two custom fields "cpus=N" and "memory_mib=M", so `ipmitool fru print 0`
and pyghmi's `get_inventory_of_component("System")` show them ("Product name", "Serial
Number", "product_extra"). Text fields are Latin-1, cut at 63 bytes. The OEM request netfn
3Ah, command 01h, no request data, answers all four:
    completion code 00h, CPU count (u16 LE), memory in MiB (u32 LE),
    product length (u8) + product (UTF-8), serial length (u8) + serial (UTF-8)
e.g. `ipmitool raw 0x3a 0x01` prints "02 00 00 00 01 00 ..." for 2 CPUs and 65536 MiB.

Faults (per BMC, in the config or at runtime): `silent` drops every datagram, in and out
(counted as `dropped`); `slow` handles each in-session request `slow_seconds` after it
arrived (session setup stays prompt); `reject-auth` answers RAKP as if the password were
different and ends open sessions when set; `flap` answers for `flap_seconds`, then drops like
`silent` for `flap_seconds`, and so on, from when the fault is set or the farm starts;
`refuse-power-on` fails power on and power cycle with completion code D5h (not supported in
present state) and leaves the power off; `ignore-soft-off` accepts a soft shutdown and stays
on, as a hung operating system does.

Counters (`BmcFarm.stats`). A command is an in-session request other than Set Session
Privilege and Close Session, clients' own probes included (ipmitool sends Get Device ID and
group-extension probes, netfn 2Ch, in every session; `by_command` tells them apart). It is
timed when its datagram arrived (`time.monotonic()`, comparable across processes on one Linux
host); per BMC: count, the smallest gap between consecutive commands, the last 1,000
timestamps and a count per netfn/command. Per group label (and for the whole farm) three
gauges with their peaks since start or `reset_stats`: `inflight`, BMCs with a request
received and not yet answered, i.e. BMCs whose request handling overlaps in time (each
request is held for the latency, so give the BMCs `slow` with a noticeable `slow_seconds` to
measure a client's concurrency: a client that keeps at most N requests outstanding per group
never shows more than N); `sessions`, BMCs with at least one authenticated session open
(closed by Close Session or after 60 s idle); `transitioning`, BMCs in a power transition.

Command line: `python -m lab.bmc serve --config FILE [--control SOCKET]`.
FILE is JSON: a list of BmcConfig objects, or {"bmcs": [...], "transition_seconds": 0.5,
"latency_seconds": 0.001} (both settings optional). The process prints "ready <n> BMCs" once
listening and runs until SIGTERM or SIGINT (exit 0, every socket closed). The control socket
takes one JSON object per line and answers one per line, {"ok": true,
"result": ...} or {"ok": false, "error": "..."}; ops: {"op": "ping"}, {"op": "state", "name"},
{"op": "set_faults", "name", "faults"}, {"op": "set_power", "name", "power"}, {"op": "stats",
"names"?, "times"?}, {"op": "reset_stats"}.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import errno
import hashlib
import heapq
import hmac
import ipaddress
import itertools
import json
import logging
import os
import resource
import selectors
import signal
import socket
import socketserver
import stat
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from pyghmi.ipmi import bmc as pyghmi_bmc  # type: ignore[import-untyped]
from pyghmi.ipmi.private import constants as pyghmi_constants  # type: ignore[import-untyped]
from pyghmi.ipmi.private import serversession as pyghmi_serversession  # type: ignore[import-untyped,unused-ignore]

LOG = logging.getLogger("lab.bmc")

FAULTS = frozenset({"silent", "slow", "reject-auth", "flap", "refuse-power-on", "ignore-soft-off"})
POWER_STATES = ("on", "off")
# Boot device names <-> the device selector, bits 5:2 of boot flags data byte 2. "default"
# is "no override": the firmware's own order.
BOOT_SELECTORS = {"default": 0x0, "network": 0x1, "disk": 0x2, "cdrom": 0x5, "bios": 0x6}
SELECTOR_BOOT = {selector: name for name, selector in BOOT_SELECTORS.items()}

INVENTORY_NETFN = 0x3A
INVENTORY_COMMAND = 0x01

CC_INVALID_COMMAND = 0xC1
CC_REQUEST_LENGTH = 0xC7
CC_OUT_OF_RANGE = 0xC9
CC_NOT_PRESENT = 0xCB
CC_INVALID_FIELD = 0xCC
CC_NOT_IN_PRESENT_STATE = 0xD5
CC_UNSPECIFIED = 0xFF
CC_BOOT_PARAMETER_UNSUPPORTED = 0x80
CC_PRIVILEGE_UNAVAILABLE = 0x81

RMCP_NO_RESOURCES = 0x01
RMCP_BAD_AUTH_ALGORITHM = 0x04
RMCP_BAD_INTEGRITY_ALGORITHM = 0x05
RMCP_BAD_NAME_LENGTH = 0x0C
RMCP_UNAUTHORIZED_NAME = 0x0D
RMCP_BAD_INTEGRITY_CHECK = 0x0F
RMCP_BAD_CONFIDENTIALITY_ALGORITHM = 0x10
RMCP_ILLEGAL_PARAMETER = 0x12

PAYLOAD = pyghmi_constants.payload_types
# SDR record 1: Management Controller Device Locator (type 12h) for the BMC at 20h, "BMC".
SDR_BMC_LOCATOR = bytes([0x01, 0x00, 0x51, 0x12, 14, 0x20, 0, 0, 0x00, 0, 0, 0, 0x07, 0x01, 0, 0xC3]) + b"BMC"
SESSION_IDLE_SECONDS = 60.0
HANDSHAKE_SECONDS = 10.0
MAX_SESSIONS_PER_BMC = 32
RECENT_COMMANDS = 1000
# Bounded so one flooded socket cannot starve the others within a wakeup.
DATAGRAMS_PER_WAKEUP = 64
MAX_FRU_READ = 224
# Real BMCs take milliseconds to answer. pyghmi's client has a wakeup race that an answer
# arriving within a few hundred microseconds can hit, after which its commands each wait
# out a ~1 s retry timer; a millisecond of latency keeps clear of it.
DEFAULT_LATENCY_SECONDS = 0.001
FRU_TEXT_MAX = 63


class BmcFarmError(RuntimeError):
    """The farm cannot start or serve as configured (e.g. an endpoint is taken)."""


class UnknownBmcError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown BMC"


def _check_faults(faults: Iterable[str]) -> frozenset[str]:
    if isinstance(faults, str):
        raise ValueError(f"faults must be a list of names, not the string {faults!r}")
    chosen = frozenset(faults)
    unknown = sorted(str(fault) for fault in chosen - FAULTS)
    if unknown:
        raise ValueError(f"unknown fault(s) {', '.join(unknown)}; known: {', '.join(sorted(FAULTS))}")
    return chosen


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclasses.dataclass
class BmcConfig:
    """One simulated BMC: its endpoint, credentials, initial state, inventory and faults."""

    name: str
    address: str
    port: int = 623
    username: str = "admin"
    password: str = "password"
    power: str = "on"
    boot_device: str = "disk"
    boot_persistent: bool = True
    product: str = "Simulated Server"
    serial: str = ""
    cpus: int = 0
    memory_mib: int = 0
    group: str | None = None
    faults: frozenset[str] = frozenset()
    slow_seconds: float = 2.0
    flap_seconds: float = 1.0

    def __post_init__(self) -> None:
        problems: list[str] = []
        try:
            self.faults = _check_faults(self.faults)
        except (TypeError, ValueError) as exc:
            problems.append(str(exc))
        if not isinstance(self.name, str) or not self.name:
            problems.append("name must be a non-empty string")
        try:
            ipaddress.ip_address(self.address)
        except ValueError:
            problems.append(f"address {self.address!r} is not an IP address")
        if not _is_int(self.port) or not 0 < self.port < 65536:
            problems.append(f"port {self.port!r} is not 1-65535")
        if not isinstance(self.username, str) or not 0 < len(self.username.encode()) <= 16:
            problems.append("username must be 1-16 bytes (an IPMI limit)")
        if not isinstance(self.password, str) or len(self.password.encode()) > 20:
            problems.append("password must be at most 20 bytes (an IPMI 2.0 limit)")
        if self.power not in POWER_STATES:
            problems.append(f"power {self.power!r} is not one of {', '.join(POWER_STATES)}")
        if self.boot_device not in BOOT_SELECTORS:
            problems.append(f"boot_device {self.boot_device!r} is not one of {', '.join(BOOT_SELECTORS)}")
        if not isinstance(self.boot_persistent, bool):
            problems.append("boot_persistent must be true or false")
        for field in ("product", "serial"):
            if not isinstance(getattr(self, field), str):
                problems.append(f"{field} must be a string")
        if not _is_int(self.cpus) or not 0 <= self.cpus < 1 << 16:
            problems.append(f"cpus {self.cpus!r} is not 0-65535")
        if not _is_int(self.memory_mib) or not 0 <= self.memory_mib < 1 << 32:
            problems.append(f"memory_mib {self.memory_mib!r} is not 0-4294967295")
        if self.group is not None and not isinstance(self.group, str):
            problems.append("group must be a string or null")
        if not _is_number(self.slow_seconds) or self.slow_seconds < 0:
            problems.append("slow_seconds must be a number >= 0")
        if not _is_number(self.flap_seconds) or self.flap_seconds <= 0:
            problems.append("flap_seconds must be a number > 0")
        if problems:
            raise ValueError(f"BMC {self.name!r}: " + "; ".join(problems))

    @property
    def endpoint(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BmcConfig:
        if not isinstance(data, Mapping):
            raise ValueError(f"a BMC config is a JSON object, not {type(data).__name__}")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"BMC {data.get('name')!r}: unknown field(s) {', '.join(unknown)}")
        missing = sorted(name for name in ("name", "address") if name not in data)
        if missing:
            raise ValueError(f"BMC config without {', '.join(missing)}")
        values = dict(data)
        if "faults" in values:
            try:
                values["faults"] = _check_faults(values["faults"] or ())
            except (TypeError, ValueError) as exc:
                raise ValueError(f"BMC {data.get('name')!r}: {exc}") from None
        return cls(**values)


class _Gauge:
    """A current count and its peak since the last reset."""

    __slots__ = ("current", "peak")

    def __init__(self) -> None:
        self.current = 0
        self.peak = 0

    def up(self) -> None:
        self.current += 1
        self.peak = max(self.peak, self.current)

    def down(self) -> None:
        self.current -= 1

    def reset(self) -> None:
        self.peak = self.current


class _Group:
    def __init__(self) -> None:
        self.members = 0
        self.inflight = _Gauge()
        self.sessions = _Gauge()
        self.transitioning = _Gauge()

    def report(self) -> dict[str, int]:
        return {
            "bmcs": self.members,
            "max_inflight": self.inflight.peak,
            "max_sessions": self.sessions.peak,
            "max_transitioning": self.transitioning.peak,
            "inflight": self.inflight.current,
            "sessions": self.sessions.current,
            "transitioning": self.transitioning.current,
        }

    def reset(self) -> None:
        for gauge in (self.inflight, self.sessions, self.transitioning):
            gauge.reset()


class _BmcStats:
    def __init__(self) -> None:
        self.commands = 0
        self.last: float | None = None
        self.min_gap: float | None = None
        self.recent: collections.deque[tuple[float, int, int]] = collections.deque(maxlen=RECENT_COMMANDS)
        self.by_command: collections.Counter[str] = collections.Counter()
        self.datagrams = 0
        self.dropped = 0
        self.errors = 0
        self.send_errors = 0
        self.sessions_opened = 0

    def note(self, arrival: float, netfn: int, command: int) -> None:
        self.commands += 1
        if self.last is not None:
            # Requests are handled in arrival order unless `slow` was switched meanwhile.
            gap = abs(arrival - self.last)
            if self.min_gap is None or gap < self.min_gap:
                self.min_gap = gap
        self.last = max(arrival, self.last or arrival)
        self.recent.append((arrival, netfn, command))
        self.by_command[f"{netfn:02x}/{command:02x}"] += 1

    def report(self, times: bool) -> dict[str, Any]:
        found: dict[str, Any] = {
            "commands": self.commands,
            "min_gap": self.min_gap,
            "by_command": dict(self.by_command),
            "datagrams": self.datagrams,
            "dropped": self.dropped,
            "errors": self.errors,
            "send_errors": self.send_errors,
            "sessions_opened": self.sessions_opened,
        }
        if times:
            found["times"] = [entry[0] for entry in self.recent]
            found["log"] = [[entry[0], f"{entry[1]:02x}/{entry[2]:02x}"] for entry in self.recent]
        return found


def _fru_text(value: str) -> bytes:
    raw = value.encode("latin-1", "replace")[:FRU_TEXT_MAX]
    if len(raw) == 1:
        # Type/length C1h, a one-byte text field, is also the end-of-fields marker.
        raw += b" "
    return bytes([0xC0 | len(raw)]) + raw


def _fru_area(prefix: bytes, fields: Sequence[str]) -> bytes:
    body = bytearray(prefix) + b"".join(_fru_text(field) for field in fields) + b"\xc1"
    total = (len(body) + 1 + 7) // 8 * 8
    body += bytes(total - len(body) - 1)
    body[1] = total // 8
    body.append(-sum(body) & 0xFF)
    return bytes(body)


def build_fru(config: BmcConfig) -> bytes:
    """FRU device 0: common header, Board area, Product area (FRU Information Storage v1.0)."""
    board = _fru_area(b"\x01\x00\x00\x00\x00\x00", ["Fleet Simulator", config.product, config.serial, "", ""])
    extras = [f"cpus={config.cpus}", f"memory_mib={config.memory_mib}"]
    product = _fru_area(
        b"\x01\x00\x00", ["Fleet Simulator", config.product, "", "", config.serial, config.name, "", *extras]
    )
    header = bytearray([0x01, 0, 0, 1, 1 + len(board) // 8, 0, 0])
    header.append(-sum(header) & 0xFF)
    return bytes(header) + board + product


def _utf8_prefix(value: str, limit: int = FRU_TEXT_MAX) -> bytes:
    raw = value.encode()[:limit]
    return raw.decode(errors="ignore").encode()


def build_inventory_reply(config: BmcConfig) -> bytes:
    """Data of the OEM inventory response (netfn 3Ah, command 01h), after the completion code."""
    product, serial = _utf8_prefix(config.product), _utf8_prefix(config.serial)
    return (
        struct.pack("<HI", config.cpus, config.memory_mib)
        + bytes([len(product)])
        + product
        + bytes([len(serial)])
        + serial
    )


class _Endpoint:
    """The object pyghmi's server code is given as its socket."""

    def __init__(self, sock: socket.socket, bmc: SimulatedBmc) -> None:
        self.sock = sock
        self._bmc = bmc

    def setblocking(self, flag: bool) -> None:
        # pyghmi switches the socket to blocking before every send; a blocking send on the one
        # serving thread would let a single full buffer stall every BMC, so this is ignored.
        return

    def sendto(self, packet: bytes, address: Any) -> int:
        if not self._bmc.answering(time.monotonic()):
            # An answer to a request accepted before the BMC went silent (or flapped) is lost too.
            self._bmc.stats.dropped += 1
            return 0
        try:
            return self.sock.sendto(packet, address)
        except OSError as exc:
            # UDP semantics: a reply that cannot be sent now is lost, as on a real network.
            self._bmc.stats.send_errors += 1
            LOG.debug("send to %s failed: %s", address, exc)
            return 0

    def getsockname(self) -> Any:
        return self.sock.getsockname()


def _proposal_status(request: bytes) -> int:
    """RMCP+ status for an Open Session Request's algorithm proposals (0 when acceptable)."""
    if len(request) < 32:
        return RMCP_ILLEGAL_PARAMETER
    checks = ((8, 0, RMCP_BAD_AUTH_ALGORITHM), (16, 1, RMCP_BAD_INTEGRITY_ALGORITHM))
    for offset, kind, refusal in (*checks, (24, 2, RMCP_BAD_CONFIDENTIALITY_ALGORITHM)):
        if request[offset] != kind:
            return RMCP_ILLEGAL_PARAMETER
        # A zero payload length is a wildcard: the BMC picks, and it only knows algorithm 1.
        if request[offset + 3] != 0 and request[offset + 4] & 0x3F != 1:
            return refusal
    return 0


class _SimSession(pyghmi_serversession.ServerSession):  # type: ignore[misc]
    """One RMCP+ session to one simulated BMC; pyghmi does the framing and the crypto."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _SimSession:
        # pyghmi's Session.__new__ hands out shared objects per BMC address; a server session
        # must always be a new object.
        return object.__new__(cls)

    def __init__(
        self, bmc: SimulatedBmc, client: Any, client_sid: bytes, managed_sid: bytes, now: float
    ) -> None:
        # Deliberately not ServerSession.__init__: it files the session in pyghmi's
        # process-global table by client address and port, which the farm does not use.
        self.bmc = bmc
        self.uuid = bmc.uuid
        self.currhashlib = hashlib.sha1
        self.currhashlen = 12
        self.rqaddr = pyghmi_constants.IPMI_BMC_ADDRESS
        self.authdata = bmc.authdata
        self.servermode = True
        self.ipmiversion = 2.0
        self.sequencenumber = 0
        self.sessionid = 0
        self.lastpayload = None
        self.rqlun = 0
        self.broken = False
        self.authtype = 6
        self.integrityalgo = 0
        self.confalgo = 0
        self.kg: bytes | None = bmc.kg
        self.k1: bytes | None = None
        self.kuid = b""
        self.socket = bmc.serversocket
        self.sockaddr = client
        self.pendingpayloads: collections.deque[Any] = collections.deque()
        self.pktqueue: collections.deque[Any] = collections.deque()
        self._customkeepalives = None
        self.clientsessionid = bytearray(client_sid)
        self.managedsessionid = bytearray(managed_sid)
        self.localsid = struct.unpack("<I", managed_sid)[0]
        self.privlevel = 4
        self.maxpriv = 4
        self.clientpriv = 4
        self.Rc: bytes | None = None
        self.established = False
        self.last_activity = now
        self.arrival = now

    def _send_rakp_error(self, payload_type: int, tag: int, status: int) -> None:
        self.send_payload(bytearray([tag, status, 0, 0]) + self.clientsessionid, payload_type, retry=False)

    def _got_rakp1(self, data: bytearray) -> None:
        if len(data) < 28 or self.established:
            return
        tag, namelen = data[0], data[27]
        username = bytes(data[28 : 28 + namelen])
        if namelen > 16 or len(username) != namelen:
            self._send_rakp_error(PAYLOAD["rakp2"], tag, RMCP_BAD_NAME_LENGTH)
            return
        try:
            password = self.authdata.get(username.decode()) if username else None
        except UnicodeDecodeError:
            password = None
        if password is None:
            self._send_rakp_error(PAYLOAD["rakp2"], tag, RMCP_UNAUTHORIZED_NAME)
            self.bmc.forget_session(self)
            return
        self.Rm = bytes(data[8:24])
        self.rolem = data[24]
        # Role 0 is reserved; treat it as "as much as the channel allows".
        self.maxpriv = (self.rolem & 0x0F) or 4
        self.clientpriv = self.maxpriv
        self.username = username
        # With reject-auth the BMC keys its answer with a secret nobody knows, which to a
        # client is exactly a wrong password.
        self.kuid = os.urandom(20) if "reject-auth" in self.bmc.faults else password.encode()
        self.kg = self.kg or self.kuid
        self.Rc = os.urandom(16)
        self.uuiddata = self.uuid.bytes
        hmacdata = (
            bytes(self.clientsessionid + self.managedsessionid)
            + self.Rm
            + self.Rc
            + self.uuiddata
            + bytes([self.rolem, len(username)])
            + username
        )
        authcode = hmac.new(self.kuid, hmacdata, hashlib.sha1).digest()
        reply = bytearray([tag, 0, 0, 0]) + self.clientsessionid + self.Rc + self.uuiddata + authcode
        self.send_payload(reply, PAYLOAD["rakp2"], retry=False)

    def _got_rakp3(self, data: bytearray) -> None:
        if self.Rc is None or len(data) < 8:
            return
        tag = data[0]
        if data[1] != 0:
            # The client gave up on this exchange (e.g. our RAKP2 did not match its password).
            self.bmc.forget_session(self)
            return
        namebits = bytes([self.rolem, len(self.username)]) + self.username
        expected = hmac.new(
            self.kuid, self.Rc + bytes(self.clientsessionid) + namebits, hashlib.sha1
        ).digest()
        if not hmac.compare_digest(expected, bytes(data[8:])):
            # pyghmi's server stays silent here; a real BMC says why, and clients fail faster.
            self._send_rakp_error(PAYLOAD["rakp4"], tag, RMCP_BAD_INTEGRITY_CHECK)
            self.bmc.forget_session(self)
            return
        self.sik = hmac.new(self.kg or self.kuid, self.Rm + self.Rc + namebits, hashlib.sha1).digest()
        self.k1 = hmac.new(self.sik, b"\x01" * 20, hashlib.sha1).digest()
        self.k2 = hmac.new(self.sik, b"\x02" * 20, hashlib.sha1).digest()
        self.aeskey = self.k2[:16]
        self.ipmicallback = self.handle_client_request
        # Counted before the answer, so that a client that has its session sees it counted.
        self.bmc.session_established(self)
        self._send_rakp4(tag, 0)

    def handle_client_request(self, request: dict[str, Any]) -> None:
        self.last_activity = time.monotonic()
        netfn, command, data = request["netfn"], request["command"], request["data"]
        if netfn == 0x06 and command == 0x3B:
            wanted = data[0] & 0x0F if data else 0
            if wanted > self.maxpriv:
                self.send_ipmi_response(code=CC_PRIVILEGE_UNAVAILABLE)
                return
            if wanted:
                self.clientpriv = wanted
            self.send_ipmi_response(data=[self.clientpriv])
        elif netfn == 0x06 and command == 0x3C:
            self.send_ipmi_response()
            self.bmc.forget_session(self)
        else:
            self.bmc.stats.note(self.arrival, netfn, command)
            self.bmc.handle_raw_request(request, self)


class SimulatedBmc(pyghmi_bmc.Bmc):  # type: ignore[misc]
    """One BMC of a farm. Only the farm's thread (or a caller holding the farm's lock) uses it."""

    def __init__(self, farm: BmcFarm, config: BmcConfig, groups: Sequence[_Group]) -> None:
        # Deliberately not IpmiServer.__init__: it binds through pyghmi's process-global socket
        # pool and starts pyghmi's client IO thread; the farm binds and reads its own sockets.
        self.farm = farm
        self.config = config
        self.name = config.name
        self.revision = 0
        self.deviceid = 0x20
        self.firmwaremajor = 1
        self.firmwareminor = 0
        self.ipmiversion = 2
        # Additional device support: chassis (bit 7), FRU inventory (bit 3), SDR repository
        # (bit 1); ipmitool reads FRU 0 only when the FRU bit is set.
        self.additionaldevices = 0x8A
        self.mfgid = 0
        self.prodid = 0
        self.pktqueue: collections.deque[Any] = collections.deque()
        self.uuid = uuid.uuid5(uuid.NAMESPACE_URL, f"fleet-bmc-simulator:{config.name}")
        self.authdata = {config.username: config.password}
        self.authcap = struct.pack("9B", 0, 1, 0b10000000, 0b00000100, 0b00000010, 0, 0, 0, 0)
        self.kg = None
        self.timeout = 60
        self.port = config.port
        self.sock: socket.socket | None = None
        self.serversocket: _Endpoint | None = None
        self.groups = groups
        self.stats = _BmcStats()
        self.sessions: dict[int, _SimSession] = {}
        self.established = 0
        self.inflight = 0
        self.power = config.power
        self.boot_device = config.boot_device
        self.boot_persistent = config.boot_persistent
        self.boot_efi = False
        self.boot_parameters: dict[int, bytes] = {
            0: b"\x00",
            1: b"\x00",
            2: b"\x00",
            3: b"\x00",
            4: b"\x00\x00",
        }
        self.transition: tuple[str, float] | None = None
        self.boots = 0
        self.last_boot_device: str | None = None
        self.faults = config.faults
        self.flap_epoch = time.monotonic()
        self.fru = build_fru(config)
        self.inventory = build_inventory_reply(config)

    # -- sockets and sessions ---------------------------------------------------------------

    def attach(self, sock: socket.socket) -> None:
        self.sock = sock
        self.serversocket = _Endpoint(sock, self)

    def detach(self) -> None:
        for session in list(self.sessions.values()):
            self.forget_session(session)
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self.serversocket = None

    def answering(self, now: float) -> bool:
        if "silent" in self.faults:
            return False
        if "flap" in self.faults:
            return int((now - self.flap_epoch) / self.config.flap_seconds) % 2 == 0
        return True

    def open_session(self, request: bytearray, client: Any, now: float) -> None:
        if len(request) < 8:
            return
        tag, client_sid = request[0], bytes(request[4:8])
        status = _proposal_status(bytes(request))
        if not status and len(self.sessions) >= MAX_SESSIONS_PER_BMC:
            self.expire_sessions(now)
            if len(self.sessions) >= MAX_SESSIONS_PER_BMC:
                status = RMCP_NO_RESOURCES
        managed = 0
        while managed == 0 or managed in self.sessions:
            managed = int.from_bytes(os.urandom(4), "little")
        session = _SimSession(self, client, client_sid, struct.pack("<I", managed), now)
        if status:
            reply = bytearray([tag, status, 0, 0]) + client_sid
        else:
            algorithms = bytes([0, 0, 0, 8, 1, 0, 0, 0, 1, 0, 0, 8, 1, 0, 0, 0, 2, 0, 0, 8, 1, 0, 0, 0])
            reply = (
                bytearray([tag, 0, session.privlevel, 0])
                + client_sid
                + struct.pack("<I", managed)
                + algorithms
            )
            self.sessions[managed] = session
        session.send_payload(reply, PAYLOAD["rmcpplusopenresponse"], retry=False)

    def session_established(self, session: _SimSession) -> None:
        session.last_activity = time.monotonic()
        if session.established:
            return
        session.established = True
        self.stats.sessions_opened += 1
        self.established += 1
        if self.established == 1:
            for group in self.groups:
                group.sessions.up()

    def forget_session(self, session: _SimSession) -> None:
        if self.sessions.get(session.localsid) is not session:
            return
        del self.sessions[session.localsid]
        if session.established:
            session.established = False
            self.established -= 1
            if self.established == 0:
                for group in self.groups:
                    group.sessions.down()

    def expire_sessions(self, now: float) -> None:
        for session in list(self.sessions.values()):
            limit = SESSION_IDLE_SECONDS if session.established else HANDSHAKE_SECONDS
            if now - session.last_activity > limit:
                self.forget_session(session)

    def begin_request(self) -> None:
        self.inflight += 1
        if self.inflight == 1:
            for group in self.groups:
                group.inflight.up()

    def end_request(self) -> None:
        self.inflight -= 1
        if self.inflight == 0:
            for group in self.groups:
                group.inflight.down()

    # -- power --------------------------------------------------------------------------------

    def settle(self, now: float) -> None:
        if self.transition is not None and now >= self.transition[1]:
            self._apply_power(self.transition[0])
            self._end_transition()

    def _apply_power(self, power: str) -> None:
        if power == "on" and self.power == "off":
            self.boots += 1
            self.last_boot_device = self.boot_device
        self.power = power

    def _end_transition(self) -> None:
        if self.transition is not None:
            self.transition = None
            for group in self.groups:
                group.transitioning.down()

    def _begin_transition(self, target: str, now: float) -> None:
        if self.transition is None:
            for group in self.groups:
                group.transitioning.up()
        due = now + self.farm.transition_seconds
        self.transition = (target, due)
        self.farm.call_at(due, lambda: self.settle(time.monotonic()))

    def request_power(self, target: str) -> None:
        now = time.monotonic()
        self.settle(now)
        if self.transition is not None and self.transition[0] == target:
            return
        if self.power == target:
            self._end_transition()
        elif self.farm.transition_seconds <= 0:
            self._end_transition()
            self._apply_power(target)
        else:
            self._begin_transition(target, now)

    def set_power_now(self, power: str) -> None:
        self._end_transition()
        self._apply_power(power)

    def get_power_state(self) -> str:
        self.settle(time.monotonic())
        return self.power

    def power_on(self) -> int:
        if "refuse-power-on" in self.faults:
            return CC_NOT_IN_PRESENT_STATE
        self.request_power("on")
        return 0

    def power_off(self) -> int:
        self.request_power("off")
        return 0

    def power_shutdown(self) -> int:
        # The simulated OS honours a soft shutdown, unless it "hangs" (ignore-soft-off): then
        # the request is accepted and nothing happens, as with a wedged operating system.
        if "ignore-soft-off" not in self.faults:
            self.request_power("off")
        return 0

    def power_cycle(self) -> int:
        # IPMI recommends D5h for a cycle while off.
        if self.get_power_state() == "off" or "refuse-power-on" in self.faults:
            return CC_NOT_IN_PRESENT_STATE
        self.set_power_now("off")
        self.request_power("on")
        return 0

    def power_reset(self) -> int:
        if self.get_power_state() == "off":
            return CC_NOT_IN_PRESENT_STATE
        self.boots += 1
        self.last_boot_device = self.boot_device
        return 0

    def pulse_diag(self) -> int:
        return 0 if self.get_power_state() == "on" else CC_NOT_IN_PRESENT_STATE

    def get_system_guid(self) -> uuid.UUID:
        return self.uuid

    # -- commands -----------------------------------------------------------------------------

    def handle_raw_request(self, request: dict[str, Any], session: _SimSession) -> None:
        netfn, command, data = request["netfn"], request["command"], bytes(request["data"])
        try:
            handler = self._HANDLERS.get((netfn, command))
            if handler is None:
                session.send_ipmi_response(code=CC_INVALID_COMMAND)
            else:
                handler(self, data, session)
        except Exception:
            # A bug here must cost one answer, not the session or the farm.
            self.stats.errors += 1
            LOG.exception("BMC %s: netfn %02x command %02x failed", self.name, netfn, command)
            session.send_ipmi_response(code=CC_UNSPECIFIED)

    def _device_id(self, data: bytes, session: _SimSession) -> None:
        self.send_device_id(session)

    def _system_guid(self, data: bytes, session: _SimSession) -> None:
        session.send_ipmi_response(data=self.uuid.bytes_le)

    def _chassis_status(self, data: bytes, session: _SimSession) -> None:
        self.get_chassis_status(session)

    def _chassis_control(self, data: bytes, session: _SimSession) -> None:
        if not data:
            session.send_ipmi_response(code=CC_REQUEST_LENGTH)
            return
        actions: dict[int, Callable[[], int]] = {
            0: self.power_off,
            1: self.power_on,
            2: self.power_cycle,
            3: self.power_reset,
            4: self.pulse_diag,
            5: self.power_shutdown,
        }
        action = actions.get(data[0] & 0x0F)
        session.send_ipmi_response(code=CC_INVALID_FIELD if action is None else action())

    def _set_boot_options(self, data: bytes, session: _SimSession) -> None:
        if not data:
            session.send_ipmi_response(code=CC_REQUEST_LENGTH)
            return
        parameter = data[0] & 0x7F
        if parameter == 5:
            if len(data) < 3:
                session.send_ipmi_response(code=CC_REQUEST_LENGTH)
                return
            flags, selector = data[1], (data[2] >> 2) & 0x0F
            if not flags & 0x80:
                # "Boot flags valid" clear: drop any override.
                device: str | None = "default"
            else:
                device = SELECTOR_BOOT.get(selector)
            if device is None:
                session.send_ipmi_response(code=CC_INVALID_FIELD)
                return
            self.boot_device = device
            self.boot_persistent = device == "default" or bool(flags & 0x40)
            self.boot_efi = bool(flags & 0x20)
        elif parameter in self.boot_parameters:
            size = len(self.boot_parameters[parameter])
            if len(data) < 1 + size:
                session.send_ipmi_response(code=CC_REQUEST_LENGTH)
                return
            self.boot_parameters[parameter] = bytes(data[1 : 1 + size])
        else:
            session.send_ipmi_response(code=CC_BOOT_PARAMETER_UNSUPPORTED)
            return
        session.send_ipmi_response()

    def _get_boot_options(self, data: bytes, session: _SimSession) -> None:
        if not data:
            session.send_ipmi_response(code=CC_REQUEST_LENGTH)
            return
        parameter = data[0] & 0x7F
        if parameter == 5:
            if self.boot_device == "default":
                flags = 0x00
            else:
                flags = 0x80 | (0x40 if self.boot_persistent else 0) | (0x20 if self.boot_efi else 0)
            value = bytes([flags, BOOT_SELECTORS[self.boot_device] << 2, 0, 0, 0])
        elif parameter in self.boot_parameters:
            value = self.boot_parameters[parameter]
        else:
            session.send_ipmi_response(code=CC_BOOT_PARAMETER_UNSUPPORTED)
            return
        session.send_ipmi_response(data=bytes([0x01, parameter]) + value)

    def _fru_info(self, data: bytes, session: _SimSession) -> None:
        if not data:
            session.send_ipmi_response(code=CC_REQUEST_LENGTH)
        elif data[0] != 0:
            session.send_ipmi_response(code=CC_NOT_PRESENT)
        else:
            session.send_ipmi_response(data=struct.pack("<HB", len(self.fru), 0))

    def _fru_read(self, data: bytes, session: _SimSession) -> None:
        if len(data) < 4:
            session.send_ipmi_response(code=CC_REQUEST_LENGTH)
            return
        if data[0] != 0:
            session.send_ipmi_response(code=CC_NOT_PRESENT)
            return
        offset = data[1] | data[2] << 8
        if offset > len(self.fru):
            session.send_ipmi_response(code=CC_OUT_OF_RANGE)
            return
        chunk = self.fru[offset : offset + min(data[3], MAX_FRU_READ)]
        session.send_ipmi_response(data=bytes([len(chunk)]) + chunk)

    def _inventory(self, data: bytes, session: _SimSession) -> None:
        session.send_ipmi_response(data=self.inventory)

    def _sdr_repository_info(self, data: bytes, session: _SimSession) -> None:
        # ipmitool's `fru print` walks the SDR repository after FRU 0; with no repository it
        # fails, and with an empty one it tries to rebuild it. One record, the BMC itself.
        info = struct.pack("<BHHII", 0x51, 1, 0, 0, 0) + b"\x22"
        session.send_ipmi_response(data=info)

    def _sdr_reserve(self, data: bytes, session: _SimSession) -> None:
        session.send_ipmi_response(data=b"\x01\x00")

    def _sdr_get(self, data: bytes, session: _SimSession) -> None:
        if len(data) < 6:
            session.send_ipmi_response(code=CC_REQUEST_LENGTH)
            return
        if (data[2] | data[3] << 8) not in (0x0000, 0x0001):
            session.send_ipmi_response(code=CC_NOT_PRESENT)
            return
        offset, count = data[4], data[5]
        session.send_ipmi_response(data=b"\xff\xff" + SDR_BMC_LOCATOR[offset : offset + count])

    _HANDLERS: dict[tuple[int, int], Callable[[SimulatedBmc, bytes, _SimSession], None]] = {
        (0x06, 0x01): _device_id,
        (0x06, 0x37): _system_guid,
        (0x00, 0x01): _chassis_status,
        (0x00, 0x02): _chassis_control,
        (0x00, 0x08): _set_boot_options,
        (0x00, 0x09): _get_boot_options,
        (0x0A, 0x10): _fru_info,
        (0x0A, 0x11): _fru_read,
        (0x0A, 0x20): _sdr_repository_info,
        (0x0A, 0x22): _sdr_reserve,
        (0x0A, 0x23): _sdr_get,
        (INVENTORY_NETFN, INVENTORY_COMMAND): _inventory,
    }

    def state(self) -> dict[str, Any]:
        now = time.monotonic()
        self.settle(now)
        transition = None
        if self.transition is not None:
            transition = {"target": self.transition[0], "remaining": max(0.0, self.transition[1] - now)}
        return {
            "power": self.power,
            "boot_device": self.boot_device,
            "boot_persistent": self.boot_persistent,
            "transition": transition,
            "boots": self.boots,
            "last_boot_device": self.last_boot_device,
            "faults": sorted(self.faults),
            "sessions": self.established,
        }


def _ensure_descriptors(extra: int) -> None:
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:
        in_use = 64
    needed = in_use + extra + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        raise BmcFarmError(f"{extra} BMCs need about {needed} file descriptors; the hard limit is {hard}")


def _bind(config: BmcConfig) -> socket.socket:
    family = socket.AF_INET6 if ":" in config.address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        # No SO_REUSEADDR: for UDP it would let two farms share an endpoint silently.
        sock.setblocking(False)
        sock.bind((config.address, config.port))
    except OSError as exc:
        sock.close()
        reasons = {
            errno.EADDRINUSE: "the endpoint is taken by another socket",
            errno.EADDRNOTAVAIL: "the address is not on this machine",
            errno.EACCES: "ports below 1024 need root or CAP_NET_BIND_SERVICE",
        }
        reason = reasons.get(exc.errno or 0, exc.strerror or str(exc))
        raise BmcFarmError(f"BMC {config.name!r} cannot listen on {config.endpoint}: {reason}") from None
    return sock


class BmcFarm:
    """Many simulated BMCs served by one thread. Methods are safe to call from any thread."""

    def __init__(
        self,
        bmcs: Sequence[BmcConfig],
        *,
        transition_seconds: float = 0.5,
        latency_seconds: float = DEFAULT_LATENCY_SECONDS,
    ) -> None:
        for label, value in (
            ("transition_seconds", transition_seconds),
            ("latency_seconds", latency_seconds),
        ):
            if not _is_number(value) or value < 0:
                raise ValueError(f"{label} must be a number >= 0")
        self.transition_seconds = float(transition_seconds)
        self.latency_seconds = float(latency_seconds)
        self._lock = threading.RLock()
        self._totals = _Group()
        self._groups: dict[str, _Group] = {}
        self._bmcs: dict[str, SimulatedBmc] = {}
        endpoints: dict[tuple[str, int], str] = {}
        for config in bmcs:
            if config.name in self._bmcs:
                raise ValueError(f"two BMCs are named {config.name!r}")
            key = (str(ipaddress.ip_address(config.address)), config.port)
            if key in endpoints:
                raise ValueError(
                    f"BMCs {endpoints[key]!r} and {config.name!r} share endpoint {config.endpoint}"
                )
            endpoints[key] = config.name
            groups = [self._totals]
            if config.group is not None:
                groups.append(self._groups.setdefault(config.group, _Group()))
            for group in groups:
                group.members += 1
            self._bmcs[config.name] = SimulatedBmc(self, config, groups)
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_order = itertools.count()
        self._selector: selectors.BaseSelector | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._next_sweep = 0.0

    def __len__(self) -> int:
        return len(self._bmcs)

    def __enter__(self) -> BmcFarm:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Bind every endpoint, then serve from a background thread. Binds all or none."""
        with self._lock:
            if self._thread is not None:
                raise BmcFarmError("this farm is running; stop it before starting it again")
            _ensure_descriptors(len(self._bmcs))
            selector = selectors.DefaultSelector()
            wake = socket.socketpair()
            bound: list[SimulatedBmc] = []
            try:
                for endpoint in wake:
                    endpoint.setblocking(False)
                selector.register(wake[0], selectors.EVENT_READ, None)
                for bmc in self._bmcs.values():
                    sock = _bind(bmc.config)
                    bmc.attach(sock)
                    bound.append(bmc)
                    selector.register(sock, selectors.EVENT_READ, bmc)
            except BaseException:
                for bmc in bound:
                    bmc.detach()
                for endpoint in wake:
                    endpoint.close()
                selector.close()
                raise
            self._selector, self._wake, self._stopping = selector, wake, False
            now = time.monotonic()
            for bmc in self._bmcs.values():
                bmc.flap_epoch = now
            self._thread = threading.Thread(target=self._serve, name="bmc-farm", daemon=True)
            self._thread.start()
            LOG.info("serving %d BMCs", len(self._bmcs))

    def stop(self) -> None:
        """Stop serving and close every socket. Safe to call twice."""
        thread = self._thread
        if thread is None:
            return
        self._stopping = True
        if self._wake is not None:
            with contextlib.suppress(OSError):
                self._wake[1].send(b"\0")
        thread.join(timeout=30)
        if thread.is_alive():
            LOG.error("the serving thread did not stop within 30 s; closing its sockets anyway")
        with self._lock:
            for bmc in self._bmcs.values():
                bmc.detach()
                bmc.inflight = 0
            for group in (self._totals, *self._groups.values()):
                group.inflight.current = 0
            if self._selector is not None:
                self._selector.close()
            for endpoint in self._wake or ():
                endpoint.close()
            self._selector, self._wake, self._thread = None, None, None
            self._timers.clear()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the serving thread -------------------------------------------------------------------

    def call_at(self, due: float, action: Callable[[], None]) -> None:
        """Run `action` on the serving thread at monotonic time `due` (caller holds the lock)."""
        heapq.heappush(self._timers, (due, next(self._timer_order), action))

    def _serve(self) -> None:
        selector = self._selector
        assert selector is not None
        while not self._stopping:
            try:
                with self._lock:
                    timeout = 1.0
                    if self._timers:
                        timeout = min(timeout, max(0.0, self._timers[0][0] - time.monotonic()))
                events = selector.select(timeout)
                with self._lock:
                    if self._stopping:
                        break
                    for key, _mask in events:
                        if key.data is None:
                            self._drain_wake()
                        else:
                            self._receive(key.data)
                    self._run_timers()
            except Exception:
                # The loop is the farm: log and keep serving whatever went wrong.
                LOG.exception("BMC farm loop error")
                time.sleep(0.01)

    def _drain_wake(self) -> None:
        assert self._wake is not None
        with contextlib.suppress(OSError):
            while self._wake[0].recv(512):
                pass

    def _receive(self, bmc: SimulatedBmc) -> None:
        sock = bmc.sock
        if sock is None:
            return
        for _ in range(DATAGRAMS_PER_WAKEUP):
            try:
                data, client = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                LOG.debug("BMC %s: receive failed: %s", bmc.name, exc)
                return
            self._datagram(bmc, data, client)

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _due, _order, action = heapq.heappop(self._timers)
            try:
                action()
            except Exception:
                LOG.exception("BMC farm timer failed")
        if now >= self._next_sweep:
            self._next_sweep = now + 1.0
            for bmc in self._bmcs.values():
                if bmc.sessions:
                    bmc.expire_sessions(now)

    def _datagram(self, bmc: SimulatedBmc, data: bytes, client: Any) -> None:
        now = time.monotonic()
        bmc.stats.datagrams += 1
        if not bmc.answering(now):
            bmc.stats.dropped += 1
            return
        try:
            self._dispatch(bmc, bytearray(data), client, now)
        except Exception as exc:
            # pyghmi's parsers index freely into whatever arrives; a malformed datagram may
            # raise anywhere in them and must only cost itself.
            bmc.stats.errors += 1
            log = LOG.warning if bmc.stats.errors <= 3 else LOG.debug
            log("BMC %s: dropped a bad datagram from %s (%s: %s)", bmc.name, client, type(exc).__name__, exc)

    def _dispatch(self, bmc: SimulatedBmc, data: bytearray, client: Any, now: float) -> None:
        # RMCP header: version 6, reserved, sequence FFh (no ACK), class 7 (IPMI).
        if len(data) < 14 or data[0] != 6 or data[2:4] != b"\xff\x07":
            return
        if data[4] != 6:
            # IPMI 1.5 framing: only sessionless requests (session ID 0) are served.
            if data[9:13] == b"\0\0\0\0":
                bmc.sessionless_data(data, client)
            return
        if len(data) < 16:
            return
        payload_type = data[5] & 0x3F
        session_id = struct.unpack_from("<I", data, 6)[0]
        if payload_type == PAYLOAD["rmcpplusopenreq"]:
            bmc.open_session(data[16:], client, now)
        elif payload_type in (PAYLOAD["rakp1"], PAYLOAD["rakp3"]):
            session = bmc.sessions.get(struct.unpack_from("<I", data, 20)[0]) if len(data) >= 24 else None
            if session is not None and session.sockaddr == client:
                session.last_activity = now
                session._handle_ipmi2_packet(data)
        elif payload_type == PAYLOAD["ipmi"] and session_id == 0:
            bmc.sessionless_data(data, client)
        elif payload_type == PAYLOAD["ipmi"]:
            session = bmc.sessions.get(session_id)
            if session is None or not session.established or session.sockaddr != client:
                return
            bmc.begin_request()
            delay = bmc.config.slow_seconds if "slow" in bmc.faults else self.latency_seconds
            if delay > 0:
                self.call_at(now + delay, lambda: self._request(bmc, session_id, data, now))
            else:
                self._request(bmc, session_id, data, now)

    def _request(self, bmc: SimulatedBmc, session_id: int, data: bytearray, arrival: float) -> None:
        try:
            session = bmc.sessions.get(session_id)
            if session is not None and bmc.sock is not None:
                session.arrival = arrival
                session._handle_ipmi2_packet(data)
        except Exception as exc:
            bmc.stats.errors += 1
            LOG.warning("BMC %s: dropped a bad request (%s: %s)", bmc.name, type(exc).__name__, exc)
        finally:
            bmc.end_request()

    # -- control ------------------------------------------------------------------------------

    def _bmc(self, name: str) -> SimulatedBmc:
        try:
            return self._bmcs[name]
        except KeyError:
            raise UnknownBmcError(f"no BMC named {name!r}") from None

    @property
    def names(self) -> list[str]:
        return list(self._bmcs)

    def config(self, name: str) -> BmcConfig:
        return self._bmc(name).config

    def state(self, name: str) -> dict[str, Any]:
        """Power, boot device and persistence, plus any transition in progress and faults."""
        with self._lock:
            return self._bmc(name).state()

    def set_faults(self, name: str, faults: Iterable[str]) -> None:
        chosen = _check_faults(faults)
        with self._lock:
            bmc = self._bmc(name)
            if "flap" in chosen and "flap" not in bmc.faults:
                bmc.flap_epoch = time.monotonic()
            if "reject-auth" in chosen and "reject-auth" not in bmc.faults:
                # The new credentials take effect now, as after a BMC reset: clients must log in again.
                for session in list(bmc.sessions.values()):
                    bmc.forget_session(session)
            bmc.faults = chosen

    def set_power(self, name: str, power: str) -> None:
        """Change the power state out of band (no IPMI), cancelling any transition."""
        if power not in POWER_STATES:
            raise ValueError(f"power {power!r} is not one of {', '.join(POWER_STATES)}")
        with self._lock:
            self._bmc(name).set_power_now(power)

    def stats(self, names: Iterable[str] | None = None, *, times: bool = True) -> dict[str, Any]:
        """Per-BMC command counters and per-group concurrency peaks (see the module docstring)."""
        with self._lock:
            chosen = list(self._bmcs) if names is None else list(names)
            bmcs = {name: self._bmc(name).stats.report(times) for name in chosen}
            return {
                "bmcs": bmcs,
                "groups": {name: group.report() for name, group in sorted(self._groups.items())},
                "farm": self._totals.report(),
            }

    def reset_stats(self) -> None:
        """Zero the per-BMC counters and restart every peak from the current values."""
        with self._lock:
            for bmc in self._bmcs.values():
                bmc.stats = _BmcStats()
            for group in (self._totals, *self._groups.values()):
                group.reset()


# -- command line -----------------------------------------------------------------------------


def load_farm(path: Path) -> BmcFarm:
    """Read a serve config: a list of BMC objects, or an object with "bmcs" and farm settings."""
    document = json.loads(path.read_text())
    settings: dict[str, Any] = {}
    if isinstance(document, dict):
        unknown = sorted(set(document) - {"bmcs", "transition_seconds", "latency_seconds"})
        if unknown:
            raise ValueError(f"unknown config field(s) {', '.join(unknown)}")
        settings = {key: value for key, value in document.items() if key != "bmcs"}
        document = document.get("bmcs")
    if not isinstance(document, list):
        raise ValueError('the config is a list of BMCs or an object with a "bmcs" list')
    return BmcFarm([BmcConfig.from_dict(item) for item in document], **settings)


def _text(request: Mapping[str, Any], key: str) -> str:
    value = request.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{key!r} must be a string")
    return value


def control_reply(farm: BmcFarm, line: bytes) -> dict[str, Any]:
    """Answer one control-protocol request line."""
    try:
        request = json.loads(line)
        if not isinstance(request, dict):
            raise ValueError("a request is a JSON object")
        op = request.get("op")
        result: Any
        if op == "ping":
            result = {"bmcs": len(farm)}
        elif op == "state":
            result = farm.state(_text(request, "name"))
        elif op == "set_faults":
            faults = request.get("faults")
            if not isinstance(faults, list):
                raise ValueError("'faults' must be a list")
            farm.set_faults(_text(request, "name"), faults)
            result = farm.state(_text(request, "name"))
        elif op == "set_power":
            farm.set_power(_text(request, "name"), _text(request, "power"))
            result = farm.state(_text(request, "name"))
        elif op == "stats":
            names = request.get("names")
            if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
                raise ValueError("'names' must be a list of BMC names")
            result = farm.stats(names, times=bool(request.get("times", True)))
        elif op == "reset_stats":
            farm.reset_stats()
            result = {}
        else:
            raise ValueError(
                f"unknown op {op!r}; ops: ping, state, set_faults, set_power, stats, reset_stats"
            )
        return {"ok": True, "result": result}
    except (ValueError, TypeError, UnknownBmcError) as exc:
        return {"ok": False, "error": str(exc)}


class _ControlHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        server = self.server
        assert isinstance(server, _ControlServer)
        for line in self.rfile:
            if line.strip():
                self.wfile.write(json.dumps(control_reply(server.farm, line)).encode() + b"\n")
                self.wfile.flush()


class _ControlServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, path: Path, farm: BmcFarm) -> None:
        self.farm = farm
        self.path = path
        _claim_socket_path(path)
        super().__init__(str(path), _ControlHandler)
        os.chmod(path, 0o600)

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def _claim_socket_path(path: Path) -> None:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise BmcFarmError(f"control socket path {path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()  # a previous run's leftover: nobody is listening
        return
    finally:
        probe.close()
    raise BmcFarmError(f"control socket {path} is in use by another process")


def serve(config_path: Path, control_path: Path | None) -> int:
    try:
        farm = load_farm(config_path)
    except (OSError, ValueError) as exc:
        print(f"bmc simulator: bad config {config_path}: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda _signum, _frame: stop.set())
    control: _ControlServer | None = None
    try:
        farm.start()
        if control_path is not None:
            control = _ControlServer(control_path, farm)
            threading.Thread(target=control.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    except (OSError, BmcFarmError) as exc:
        farm.stop()
        print(f"bmc simulator: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"ready {len(farm)} BMCs", flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        if control is not None:
            control.close()
        farm.stop()
    LOG.info("stopped; every socket closed")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.bmc", description="Simulated BMCs.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="serve the BMCs of a config until SIGTERM/SIGINT")
    serve_parser.add_argument("--config", required=True, type=Path, help="JSON list of BMC configs")
    serve_parser.add_argument("--control", type=Path, help="Unix socket for the JSON-lines control protocol")
    serve_parser.add_argument("--log-level", default="INFO", help="logging level for stderr (default INFO)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=str(args.log_level).upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    return serve(args.config, args.control)


if __name__ == "__main__":
    sys.exit(main())
