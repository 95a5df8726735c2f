"""`fleet lab`: a simulated lab for a fleet repo, on this machine's loopback addresses.

`up` starts one BMC simulator process serving every Machine of the repo (real
IPMI over UDP), gives each its own loopback endpoint and generated credentials,
and writes an override file that maps the repo's real BMC addresses and
credential references to them. Providers read that file only when told to
(`--lab` or FLEET_LAB_OVERRIDES); production never has one. `down` stops what
`up` started and removes the lab directory, leaving nothing behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from providers.base import reference_key
from reconciler.errors import PermanentError, UsageError
from reconciler.spec import models

READY_TIMEOUT = 120.0
LAB_USER = "admin"


def default_lab_dir() -> Path:
    explicit = os.environ.get("FLEET_LAB_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "fleet" / "lab"


DEFAULT_SUBNET = 60


def loopback_address(index: int, subnet: int = DEFAULT_SUBNET) -> str:
    """127.60.0.1, 127.60.0.2, ...: one address per BMC, all on the loopback interface."""
    return f"127.{subnet + index // (254 * 254)}.{(index // 254) % 254}.{1 + index % 254}"


@dataclasses.dataclass(frozen=True)
class LabInfo:
    directory: Path
    pid: int
    repo: str
    machines: int
    overrides: Path

    def as_json(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "pid": self.pid,
            "repo": self.repo,
            "machines": self.machines,
            "overrides": str(self.overrides),
        }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_lab(directory: Path) -> LabInfo | None:
    try:
        data = json.loads((directory / "lab.json").read_text())
        return LabInfo(
            Path(data["directory"]),
            int(data["pid"]),
            data["repo"],
            int(data["machines"]),
            Path(data["overrides"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)


def _memory_mib(hardware: models.Hardware | None) -> int:
    from reconciler.spec.quantity import quantity_value

    if hardware is None or hardware.memory is None:
        return 0
    return int(quantity_value(hardware.memory) / (1024 * 1024))


def lab_up(
    repo: str,
    machines: Sequence[models.Machine],
    directory: Path,
    *,
    transition_seconds: float = 0.3,
    cold: bool = True,
    subnet: int = DEFAULT_SUBNET,
) -> LabInfo:
    """Start BMC simulators for `machines`. A cold lab starts every machine powered off."""
    running = read_lab(directory)
    if running is not None and _alive(running.pid):
        raise UsageError(
            f"a lab is already running from {directory} (pid {running.pid})",
            hint="run `fleet lab down` first",
        )
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    credentials: dict[str, tuple[str, str]] = {}
    bmcs: list[dict[str, Any]] = []
    endpoints: dict[str, str] = {}
    for index, machine in enumerate(sorted(machines, key=lambda m: m.metadata.name)):
        ref = reference_key(machine.spec.bmc.credentialsRef)
        if ref not in credentials:
            credentials[ref] = (LAB_USER, secrets.token_urlsafe(12))
        username, password = credentials[ref]
        address = loopback_address(index, subnet)
        hardware = machine.spec.hardware
        bmcs.append(
            {
                "name": machine.metadata.name,
                "address": address,
                "port": 623,
                "username": username,
                "password": password,
                "power": "off" if cold else machine.spec.power,
                "boot_device": "disk" if cold else machine.spec.bootDevice,
                "boot_persistent": True if cold else machine.spec.bootPersistent,
                "product": hardware.product if hardware and hardware.product else "Simulated Server",
                "serial": hardware.serial if hardware and hardware.serial else f"SIM{index:06d}",
                "cpus": hardware.cpus if hardware and hardware.cpus else 0,
                "memory_mib": _memory_mib(hardware),
                "group": f"{machine.spec.site}/{machine.spec.rack}",
            }
        )
        written = machine.spec.bmc.address
        written = f"[{written}]" if ":" in written else written
        endpoints[f"{written}:{machine.spec.bmc.port}"] = f"{address}:623"
    credential_files: dict[str, dict[str, str]] = {}
    for position, (ref, (username, password)) in enumerate(sorted(credentials.items())):
        path = directory / "credentials" / f"credential-{position}"
        _write_private(path, f"{username}:{password}\n")
        credential_files[ref] = {"file": str(path)}
    config = directory / "bmcs.json"
    _write_private(config, json.dumps({"transition_seconds": transition_seconds, "bmcs": bmcs}))
    overrides = directory / "overrides.json"
    # Simulated BMCs do not crash when hammered: the lab spaces commands 0.1 s apart, not 5 s.
    settings = {"ipmi": {"minCommandIntervalSeconds": 0.1, "softPowerOffGraceSeconds": 2.0}}
    _write_private(
        overrides,
        json.dumps({"endpoints": endpoints, "credentials": credential_files, "settings": settings}, indent=2),
    )
    log = directory / "simulator.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "providers.ipmi.simulator",
                "serve",
                "--config",
                str(config),
                "--control",
                str(directory / "bmc.sock"),
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        text = log.read_text(errors="replace")
        if any(line.startswith("ready ") for line in text.splitlines()):
            break
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                process.kill()
            tail = "\n".join(text.splitlines()[-5:])
            raise PermanentError(f"the BMC simulator did not start: {tail or 'no output'}", hint=f"see {log}")
        time.sleep(0.05)
    info = LabInfo(directory, process.pid, repo, len(bmcs), overrides)
    _write_private(directory / "lab.json", json.dumps(info.as_json(), indent=2))
    return info


def lab_status(directory: Path) -> dict[str, Any]:
    info = read_lab(directory)
    if info is None:
        return {"running": False, "directory": str(directory)}
    return {**info.as_json(), "running": _alive(info.pid)}


def lab_endpoints(directory: Path) -> dict[str, str]:
    try:
        document = json.loads((directory / "overrides.json").read_text())
        return dict(document.get("endpoints", {}))
    except (OSError, ValueError):
        return {}


def lab_down(directory: Path, timeout: float = 15.0) -> bool:
    """Stop the lab's processes and remove its directory. True if something was running."""
    info = read_lab(directory)
    was_running = False
    if info is not None and _alive(info.pid):
        was_running = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(info.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(info.pid) and time.monotonic() < deadline:
            _reap(info.pid)
            time.sleep(0.05)
        if _alive(info.pid):
            os.killpg(info.pid, signal.SIGKILL)
            _reap(info.pid)
    if directory.exists():
        for path in sorted(directory.rglob("*"), reverse=True):
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
            else:
                path.unlink()
        directory.rmdir()
    return was_running


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
