"""The one module that drives pyghmi's IPMI client, inside a worker process.

pyghmi keeps process-global session state and its locks deadlock when several
threads use it, so fleet runs it single-threaded in worker processes (see
`workers.py`) and only through `BmcClient.run`. Every pyghmi or socket exception
is mapped here to `BmcError` (temporary or permanent, with an `UnknownReason`);
passwords never appear in a message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
from typing import Any

from pyghmi import exceptions as pyghmi_exceptions  # type: ignore[import-untyped]
from pyghmi.ipmi import command as pyghmi_command  # type: ignore[import-untyped]
from pyghmi.ipmi.private import constants as pyghmi_constants  # type: ignore[import-untyped]

from providers.base import UnknownReason

# fleet's names for boot devices <-> IPMI's (as pyghmi spells them).
BOOT_TO_IPMI = {"disk": "hd", "network": "network", "cdrom": "optical", "bios": "setup"}
IPMI_TO_BOOT = {value: key for key, value in BOOT_TO_IPMI.items()} | {"default": "disk", "pxe": "network"}

# Inventory: fleet's simulator and many BMCs answer the standard FRU read; product and
# serial come from the FRU's product area. CPUs and memory are read with an OEM request
# documented in lab/bmc.py; a BMC that does not know it simply reports none.
INVENTORY_NETFN = 0x3A
INVENTORY_COMMAND = 0x01


# pyghmi raises a completion code as its text: the texts it uses, back to their codes.
_NO_ANSWER = 0xFFFF  # pyghmi's "Timeout": no answer came, so it is no completion code
COMPLETION_CODES: dict[str, int] = {
    text: code
    for table in (
        pyghmi_constants.ipmi_completion_codes,
        *pyghmi_constants.command_completion_codes.values(),
    )
    for code, text in table.items()
    if code not in (0, _NO_ANSWER)
}
# The BMC answered "not now" (IPMI 2.0 table 5-2): busy, timed out inside, duplicate request,
# firmware update or initialisation in progress, destination unavailable. Others are refusals.
BUSY_CODES = frozenset({0xC0, 0xC3, 0xCE, 0xCF, 0xD1, 0xD2, 0xD3})
INSUFFICIENT_PRIVILEGE = 0xD4


@dataclasses.dataclass
class BmcError(Exception):
    temporary: bool
    reason: UnknownReason
    message: str
    # The BMC answered (with a completion code): the session is sound and is kept.
    answered: bool = False

    def __str__(self) -> str:
        return self.message


def completion_code(exc: BaseException) -> int | None:
    """The completion code a BMC answered with, when `exc` carries one."""
    if not isinstance(exc, pyghmi_exceptions.IpmiException):
        return None
    code = getattr(exc, "ipmicode", 0)
    if isinstance(code, int) and code not in (0, _NO_ANSWER):
        return code
    return COMPLETION_CODES.get(str(exc))


def classify(exc: BaseException, endpoint: str) -> BmcError:
    """Map anything pyghmi or the socket layer raises to a BmcError."""
    text = str(exc) or type(exc).__name__
    lowered = text.lower()
    code = completion_code(exc)
    if code is not None:
        return BmcError(
            code in BUSY_CODES,
            UnknownReason.AUTH_FAILURE if code == INSUFFICIENT_PRIVILEGE else UnknownReason.PROTOCOL_ERROR,
            f"BMC {endpoint} refused the request: {text[:200]} (completion code {code:02X}h)",
            answered=True,
        )
    if isinstance(exc, socket.gaierror):
        return BmcError(True, UnknownReason.UNREACHABLE, f"BMC {endpoint}: cannot resolve its address")
    if isinstance(exc, OSError):
        return BmcError(True, UnknownReason.UNREACHABLE, f"BMC {endpoint}: {exc.strerror or text}")
    if any(word in lowered for word in ("password", "unauthorized", "authentication", "privilege", "rakp")):
        return BmcError(False, UnknownReason.AUTH_FAILURE, f"BMC {endpoint} rejected the credentials")
    if any(word in lowered for word in ("timeout", "timed out", "no longer connected", "unreachable")):
        return BmcError(True, UnknownReason.TIMEOUT, f"BMC {endpoint} did not answer in time")
    return BmcError(True, UnknownReason.PROTOCOL_ERROR, f"BMC {endpoint}: {text[:200]}")


class BmcClient:
    """One IPMI session to one BMC, reused for every command until it fails."""

    def __init__(self, host: str, port: int, username: str, password: str) -> None:
        self.endpoint = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            self._command = pyghmi_command.Command(bmc=host, userid=username, password=password, port=port)
        except Exception as exc:
            raise classify(exc, self.endpoint) from None

    def close(self) -> None:
        """Log the session out, so the BMC's few session slots are free for the next run.

        The Close Session request is sent without waiting for its answer: a BMC that has gone
        away meanwhile costs nothing, and its slot expires on its own."""
        with contextlib.suppress(Exception):
            self._command.ipmi_session.logout()

    def run(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        try:
            return self._run(op, args)
        except BmcError:
            raise
        except Exception as exc:
            raise classify(exc, self.endpoint) from None

    def _run(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        if op == "power":
            state = self._command.get_power()
            return {"power": str(state.get("powerstate", "unknown"))}
        if op == "bootdev":
            boot = self._command.get_bootdev()
            device = str(boot.get("bootdev", "default"))
            return {
                "bootDevice": IPMI_TO_BOOT.get(device, device),
                "bootPersistent": bool(boot.get("persistent")),
            }
        if op == "set_power":
            self._command.set_power(args["state"], wait=False)
            return {}
        if op == "set_bootdev":
            self._command.set_bootdev(BOOT_TO_IPMI[args["device"]], persist=bool(args["persistent"]))
            return {}
        if op == "inventory":
            return self._inventory()
        raise BmcError(False, UnknownReason.PROTOCOL_ERROR, f"unknown BMC operation {op!r}")

    def _inventory(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        try:
            fru = self._command.get_inventory_of_component("System")
        except pyghmi_exceptions.IpmiException:
            fru = None
        if isinstance(fru, dict):
            for key, field in (
                ("Product name", "product"),
                ("Serial Number", "serial"),
                ("Product Serial", "serial"),
                ("Board product name", "product"),
            ):
                value = fru.get(key)
                if isinstance(value, str) and value.strip() and field not in found:
                    found[field] = value.strip()
        try:
            response = self._command.raw_command(netfn=INVENTORY_NETFN, command=INVENTORY_COMMAND)
        except pyghmi_exceptions.IpmiException:
            return found
        data = bytes(response.get("data", b""))
        if len(data) >= 6:
            found["cpus"] = int.from_bytes(data[0:2], "little")
            found["memoryMiB"] = int.from_bytes(data[2:6], "little")
        return found
