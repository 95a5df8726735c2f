"""Simulated hypervisors for tests, `fleet lab` and benchmarks: one libvirtd per name, test driver only.

Each daemon runs from its own directory with a private config, its own sockets and an empty
driver-module directory, so only libvirt's built-in test driver (and remote access) exists: no
QEMU, no system state, and many daemons side by side. The farm holds one connection to each,
because the test driver forgets its domains when its last connection closes. It never touches a
system libvirtd, never restarts a daemon that died (tests kill one on purpose), and stops every
daemon it started.

Command line: `python -m lab.hypervisors serve --dir DIR --hypervisor NAME
[--hypervisor NAME ...] [--pool POOL]... [--network NET]... [--image POOL/VOLUME]...
[--no-sample-domain]` starts the daemons (in DIR/NAME), then writes DIR/hypervisors.json =
{"hypervisors": {NAME: {"uri": ..., "pid": ..., "dir": ...}}} atomically, prints "ready N
hypervisors" and runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

import libvirt  # type: ignore[import-untyped]

from lab.serving import stop_signals, write_json_atomically

LIBVIRTD = Path("/usr/sbin/libvirtd")
SETPRIV = Path("/usr/bin/setpriv")
SOCKETS = ("libvirt-sock", "libvirt-sock-ro", "libvirt-admin-sock")
IMAGE_BYTES = 1 << 30
# The test driver starts every daemon with this running domain, which fleet does not own.
SAMPLE_DOMAIN = "test"
_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_SUN_PATH_MAX = 107  # bytes of a unix socket path, without the terminating NUL


def _ignore_libvirt_error(_context: object, _error: object) -> None:
    """libvirt prints every error to stderr unless a handler is set; the farm reports its own."""


libvirt.registerErrorHandler(_ignore_libvirt_error, None)


class HypervisorFarmError(RuntimeError):
    pass


@dataclasses.dataclass
class _Daemon:
    name: str
    directory: Path
    socket_dir: Path
    process: subprocess.Popen[bytes] | None = None
    connection: Any = None
    paused: bool = False

    @property
    def socket(self) -> Path:
        return self.socket_dir / "libvirt-sock"

    @property
    def uri(self) -> str:
        return f"test+unix:///default?socket={urllib.parse.quote(str(self.socket), safe='/')}"

    @property
    def log(self) -> Path:
        return self.directory / "libvirtd.log"


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _check_name(kind: str, name: str) -> str:
    if not _NAME.match(name):
        raise HypervisorFarmError(
            f"{kind} name {name!r} is not a simple name (letters, digits, '-', '_', '.')"
        )
    return name


class HypervisorFarm:
    """libvirtd daemons (test driver) for `names`, each with `pools`, `networks` and `images`
    ("POOL/VOLUME", 1 GiB each). Start it from a thread that outlives it: the daemons get
    SIGTERM when the thread that started them ends, so a crashed test leaves none behind."""

    def __init__(
        self,
        directory: Path | str,
        names: Sequence[str],
        *,
        pools: Sequence[str] = (),
        networks: Sequence[str] = (),
        images: Sequence[str] = (),
        sample_domain: bool = True,
        ready_timeout: float = 30.0,
        stop_grace: float = 5.0,
        libvirtd: Path = LIBVIRTD,
    ) -> None:
        if not names:
            raise HypervisorFarmError("a farm needs at least one hypervisor name")
        if len(set(names)) != len(names):
            raise HypervisorFarmError("hypervisor names must be unique")
        self.directory = Path(directory).resolve()
        self.names = [_check_name("hypervisor", n) for n in names]
        self.pools = [_check_name("pool", p) for p in dict.fromkeys(pools)]
        self.networks = [_check_name("network", n) for n in dict.fromkeys(networks)]
        self.images: list[tuple[str, str]] = []
        for image in dict.fromkeys(images):
            pool, sep, volume = image.partition("/")
            if not sep:
                raise HypervisorFarmError(f"image {image!r} is not POOL/VOLUME")
            self.images.append((_check_name("pool", pool), _check_name("volume", volume)))
        self.sample_domain = sample_domain
        self.ready_timeout = ready_timeout
        self.stop_grace = stop_grace
        self.libvirtd = Path(libvirtd)
        self._daemons: dict[str, _Daemon] = {}
        self._short_dir: Path | None = None
        self._lock = threading.Lock()

    # --- what callers read --------------------------------------------------------------

    @property
    def uris(self) -> dict[str, str]:
        return {name: d.uri for name, d in self._daemons.items()}

    @property
    def pids(self) -> dict[str, int]:
        return {name: d.process.pid for name, d in self._daemons.items() if d.process is not None}

    def uri(self, name: str) -> str:
        return self._daemon(name).uri

    def alive(self, name: str) -> bool:
        process = self._daemon(name).process
        return process is not None and process.poll() is None

    def describe(self) -> dict[str, Any]:
        """The content of hypervisors.json."""
        return {
            "hypervisors": {
                name: {"uri": d.uri, "pid": d.process.pid if d.process else None, "dir": str(d.directory)}
                for name, d in self._daemons.items()
            }
        }

    def write_table(self, path: Path) -> None:
        """Write `describe()` to `path` atomically: a reader sees all of it or nothing."""
        write_json_atomically(path, self.describe())

    # --- life cycle ---------------------------------------------------------------------

    def start(self) -> HypervisorFarm:
        if not (self.libvirtd.is_file() and os.access(self.libvirtd, os.X_OK)):
            raise HypervisorFarmError(
                f"libvirtd is not installed at {self.libvirtd}: install the Debian package libvirt-daemon"
                " (apt-get install libvirt-daemon)"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            for name in self.names:
                self._daemons[name] = self._prepare(name)
            for daemon in self._daemons.values():
                self._launch(daemon)  # from this thread: the parent-death signal follows it
            with ThreadPoolExecutor(max_workers=min(32, len(self.names))) as pool:
                for future in [pool.submit(self._bring_up, d) for d in self._daemons.values()]:
                    future.result()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every daemon this farm started (SIGTERM, then SIGKILL after the grace) and remove
        their sockets; their directories and logs stay."""
        daemons = list(self._daemons.values())
        for daemon in daemons:
            if daemon.process is not None and daemon.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    if daemon.paused:
                        daemon.process.send_signal(signal.SIGCONT)
                    daemon.process.terminate()
        deadline = time.monotonic() + self.stop_grace
        for daemon in daemons:
            self._reap(daemon, deadline)
        for daemon in daemons:
            self._release(daemon)
            for socket_name in SOCKETS:
                with contextlib.suppress(FileNotFoundError):
                    (daemon.socket_dir / socket_name).unlink()
        if self._short_dir is not None:
            shutil.rmtree(self._short_dir, ignore_errors=True)
            self._short_dir = None

    def __enter__(self) -> HypervisorFarm:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    # --- faults -------------------------------------------------------------------------

    def kill(self, name: str) -> None:
        """SIGKILL one daemon, as a crash would: it becomes unreachable and its state is lost."""
        daemon = self._daemon(name)
        if daemon.process is not None and daemon.process.poll() is None:
            if daemon.paused:
                daemon.process.send_signal(signal.SIGCONT)
            daemon.process.kill()
            daemon.process.wait()
        daemon.paused = False
        self._release(daemon)

    def pause(self, name: str) -> None:
        """SIGSTOP one daemon: it accepts connections and answers nothing, like a hung host."""
        daemon = self._daemon(name)
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.process.send_signal(signal.SIGSTOP)
            daemon.paused = True

    def resume(self, name: str) -> None:
        daemon = self._daemon(name)
        if daemon.process is not None and daemon.paused:
            daemon.process.send_signal(signal.SIGCONT)
            daemon.paused = False

    def restart(self, name: str) -> None:
        """Kill one daemon and start a fresh one in its place (empty again, same URI): clients see
        their connection drop."""
        self.kill(name)
        daemon = self._daemon(name)
        self._launch(daemon)
        try:
            self._bring_up(daemon)
        except BaseException:
            self.kill(name)
            raise

    # --- internals ----------------------------------------------------------------------

    def _daemon(self, name: str) -> _Daemon:
        try:
            return self._daemons[name]
        except KeyError:
            raise HypervisorFarmError(f"no hypervisor {name!r} in this farm") from None

    def _socket_dir(self, directory: Path, name: str) -> Path:
        if len(str(directory / "libvirt-admin-sock").encode()) <= _SUN_PATH_MAX:
            return directory
        with self._lock:
            if self._short_dir is None:
                self._short_dir = Path(tempfile.mkdtemp(prefix="fleet-hv-"))
        socket_dir = self._short_dir / name
        socket_dir.mkdir(mode=0o700, exist_ok=True)
        return socket_dir

    def _prepare(self, name: str) -> _Daemon:
        directory = self.directory / name
        (directory / "drivers").mkdir(parents=True, exist_ok=True)
        daemon = _Daemon(name, directory, self._socket_dir(directory, name))
        settings = {
            "unix_sock_dir": _quoted(str(daemon.socket_dir)),
            "unix_sock_rw_perms": '"0700"',
            "unix_sock_ro_perms": '"0700"',
            "unix_sock_admin_perms": '"0700"',
            "auth_unix_rw": '"none"',
            "auth_unix_ro": '"none"',
            "log_outputs": _quoted(f"3:file:{daemon.log}"),
        }
        if os.geteuid() == 0:
            settings["unix_sock_group"] = '"root"'
        (directory / "libvirtd.conf").write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
        return daemon

    def _launch(self, daemon: _Daemon) -> None:
        command = [str(self.libvirtd), "-f", str(daemon.directory / "libvirtd.conf")]
        command += ["-p", str(daemon.directory / "libvirtd.pid")]
        if SETPRIV.exists():
            command = [str(SETPRIV), "--pdeathsig", "TERM", *command]  # setpriv execs: same pid
        for socket_name in SOCKETS:
            with contextlib.suppress(FileNotFoundError):
                (daemon.socket_dir / socket_name).unlink()  # left by a killed daemon
        with open(daemon.directory / "libvirtd.out", "ab") as output:
            daemon.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env={**os.environ, "LIBVIRT_DRIVER_DIR": str(daemon.directory / "drivers")},
            )

    def _bring_up(self, daemon: _Daemon) -> None:
        """Wait until the daemon answers, hold a connection to it, and give it its pools,
        networks and images."""
        assert daemon.process is not None
        deadline = time.monotonic() + self.ready_timeout
        while True:
            try:
                connection = libvirt.open(daemon.uri)
                break
            except libvirt.libvirtError as exc:
                if daemon.process.poll() is not None or time.monotonic() > deadline:
                    raise HypervisorFarmError(
                        f"libvirtd for {daemon.name} did not start ({exc.get_error_message()}): "
                        f"{self._tail(daemon)}"
                    ) from None
                time.sleep(0.01)
        daemon.connection = connection
        try:
            self._provision(daemon, connection)
        except libvirt.libvirtError as exc:
            raise HypervisorFarmError(
                f"cannot set up hypervisor {daemon.name}: {exc.get_error_message()}"
            ) from None

    def _provision(self, daemon: _Daemon, connection: Any) -> None:
        existing_pools = {p.name(): p for p in connection.listAllStoragePools()}
        for name in dict.fromkeys([*self.pools, *(pool for pool, _ in self.images)]):
            pool = existing_pools.get(name)
            if pool is None:
                path = daemon.directory / "pools" / name
                path.mkdir(parents=True, exist_ok=True)
                root = ET.Element("pool", type="dir")
                ET.SubElement(root, "name").text = name
                ET.SubElement(ET.SubElement(root, "target"), "path").text = str(path)
                pool = connection.storagePoolDefineXML(ET.tostring(root, encoding="unicode"), 0)
                existing_pools[name] = pool
            if not pool.isActive():
                pool.create(0)
            pool.setAutostart(1)
        existing_networks = {n.name(): n for n in connection.listAllNetworks()}
        for name in self.networks:
            network = existing_networks.get(name)
            if network is None:
                root = ET.Element("network")
                ET.SubElement(root, "name").text = name
                network = connection.networkDefineXML(ET.tostring(root, encoding="unicode"))
            if not network.isActive():
                network.create()
            network.setAutostart(1)
        for pool_name, volume in self.images:
            pool = existing_pools[pool_name]
            if volume not in pool.listVolumes():
                root = ET.Element("volume")
                ET.SubElement(root, "name").text = volume
                ET.SubElement(root, "capacity", unit="bytes").text = str(IMAGE_BYTES)
                pool.createXML(ET.tostring(root, encoding="unicode"), 0)
        if not self.sample_domain:
            for domain in connection.listAllDomains(0):
                if domain.name() == SAMPLE_DOMAIN:
                    if domain.isActive():
                        domain.destroy()
                    domain.undefine()

    @staticmethod
    def _tail(daemon: _Daemon) -> str:
        lines: list[str] = []
        for path in (daemon.directory / "libvirtd.out", daemon.log):
            with contextlib.suppress(OSError):
                lines += path.read_text(errors="replace").splitlines()[-3:]
        return " | ".join(lines) or f"no output (see {daemon.directory})"

    def _reap(self, daemon: _Daemon, deadline: float) -> None:
        process = daemon.process
        if process is None:
            return
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    @staticmethod
    def _release(daemon: _Daemon) -> None:
        connection, daemon.connection = daemon.connection, None
        if connection is not None:
            with contextlib.suppress(libvirt.libvirtError):
                connection.close()


# --- command line ------------------------------------------------------------------------


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lab.hypervisors", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run simulated hypervisors until SIGTERM or SIGINT")
    serve.add_argument(
        "--dir", required=True, type=Path, help="directory for the daemons and hypervisors.json"
    )
    serve.add_argument("--hypervisor", action="append", required=True, help="a hypervisor Machine name")
    serve.add_argument("--pool", action="append", default=[], help="a storage pool to create in each")
    serve.add_argument("--network", action="append", default=[], help="a network to create in each")
    serve.add_argument("--image", action="append", default=[], help="POOL/VOLUME: a base image volume")
    serve.add_argument(
        "--no-sample-domain",
        action="store_true",
        help=f"remove the test driver's sample domain {SAMPLE_DOMAIN!r} so each hypervisor starts empty",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    farm = HypervisorFarm(
        args.dir,
        args.hypervisor,
        pools=args.pool,
        networks=args.network,
        images=args.image,
        sample_domain=not args.no_sample_domain,
    )
    with stop_signals() as stop:
        try:
            farm.start()
        except HypervisorFarmError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        try:
            table = Path(args.dir) / "hypervisors.json"
            farm.write_table(table)
            print(f"ready {len(farm.names)} hypervisors ({table})", flush=True)
            reported: set[str] = set()
            while not stop.wait(0.5):
                for name in farm.names:
                    if name not in reported and not farm.alive(name):
                        reported.add(name)
                        print(f"hypervisor {name} stopped; it is not restarted", flush=True)
        finally:
            farm.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
