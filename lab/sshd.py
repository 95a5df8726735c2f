"""Simulated SSH hosts for tests and `fleet lab`: one Debian sshd per host, each on its own loopback address.

Every daemon runs from a directory of its own (host key, sshd_config, authorized key, pid file,
log) and gives its host a `root` directory that playbooks write into instead of `/`, because all
hosts share this machine. Login is by key only, with a client key made for the run, and the host
keys go into a known_hosts file so that clients keep checking them. It never touches the system's
sshd, /etc/ssh or root's authorized_keys, and it stops every daemon it started together with the
connections they serve.

Command line: `python -m lab.sshd serve --dir DIR --table FILE --ready-file FILE`
starts a host for every entry of the table ({"hosts": [{"name", "address", "port"}]}), writes the
ready file atomically ({"clientKey", "knownHosts", "hosts": {NAME: {"pid", "root", "ansibleVars"}}}),
prints "ready N ssh hosts" and runs until SIGTERM or SIGINT, then stops them all.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import json
import os
import pwd
import re
import shlex
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lab.serving import process_running, reap, stop_signals, write_json_atomically

SSHD = Path("/usr/sbin/sshd")
SETPRIV = Path("/usr/bin/setpriv")
# sshd's privilege-separation directory: it refuses to start as root without it.
PRIVSEP_DIR = Path("/run/sshd")
REMOTE_PYTHON = "/usr/bin/python3"
READY_TIMEOUT = 15.0
_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_PR_SET_CHILD_SUBREAPER = 36


class SshHostError(RuntimeError):
    """A simulated host could not be made or started; the message names the host and why."""


@dataclasses.dataclass(frozen=True)
class SshHost:
    """A running sshd: where it listens, its process, the directory playbooks write into instead
    of `/`, and its line for a known_hosts file (`[address]:port ssh-ed25519 AAAA...`)."""

    name: str
    address: str
    port: int
    pid: int
    root: Path
    known_host: str


# --- keys --------------------------------------------------------------------------------


def _write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read (created so, never widened)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


def _key_pair(private: Path, comment: str) -> str:
    """An ed25519 key pair in OpenSSH's formats: `private` (0600) and `private`.pub; returns the
    public line."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    line = f"{public.decode()} {comment}"
    _write_private(private, pem)
    private.with_name(private.name + ".pub").write_text(line + "\n")
    return line


def make_client_key(directory: Path) -> Path:
    """A fresh ed25519 client key pair for this run: `directory`/client_ed25519 (0600) and .pub."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / "client_ed25519"
    _key_pair(path, "fleet-lab-client")
    return path


def _known_host_line(address: str, port: int, public_line: str) -> str:
    kind, key = public_line.split()[:2]
    where = address if port == 22 else f"[{address}]:{port}"
    return f"{where} {kind} {key}"


def known_hosts(directory: Path, hosts: Sequence[SshHost]) -> Path:
    """`directory`/known_hosts with every host's key, so clients can leave host key checking on."""
    path = directory / "known_hosts"
    path.write_text("".join(f"{host.known_host}\n" for host in hosts))
    return path


# --- daemons -----------------------------------------------------------------------------


def _quoted(value: str) -> str:
    if '"' in value or "\n" in value:
        raise SshHostError(f"{value!r} cannot be written into an sshd_config")
    return f'"{value}"'


def _sshd_config(home: Path, address: str, port: int) -> str:
    settings = [
        ("ListenAddress", f"{address}:{port}"),
        ("HostKey", _quoted(str(home / "ssh_host_ed25519_key"))),
        ("PidFile", _quoted(str(home / "sshd.pid"))),
        ("AuthorizedKeysFile", _quoted(str(home / "authorized_keys"))),
        ("PubkeyAuthentication", "yes"),
        ("PasswordAuthentication", "no"),
        ("KbdInteractiveAuthentication", "no"),
        ("UsePAM", "no"),
        ("PermitRootLogin", "prohibit-password"),
        # The host directories live under a temporary directory that others may write to.
        ("StrictModes", "no"),
        ("Subsystem", "sftp internal-sftp"),
        ("X11Forwarding", "no"),
        ("AllowTcpForwarding", "no"),
        ("PrintMotd", "no"),
        ("PrintLastLog", "no"),
        # Ansible opens a connection per fork and host at once.
        ("MaxStartups", "100:30:200"),
        ("MaxSessions", "50"),
        ("LogLevel", "INFO"),
    ]
    return "".join(f"{key} {value}\n" for key, value in settings)


def _prepare(directory: Path, name: str, address: str, port: int, authorized: str) -> tuple[Path, str]:
    """Lay out one host's directory; returns its sshd_config and its known_hosts line."""
    if not _NAME.match(name):
        raise SshHostError(f"host name {name!r} is not a simple name (letters, digits, '-', '_', '.')")
    home = directory.resolve() / name
    (home / "root").mkdir(parents=True, exist_ok=True)
    public = _key_pair(home / "ssh_host_ed25519_key", f"fleet-lab-{name}")
    (home / "authorized_keys").write_text(authorized)
    config = home / "sshd_config"
    config.write_text(_sshd_config(home, address, port))
    return config, _known_host_line(address, port, public)


def _check_installed(sshd: Path) -> None:
    if not (sshd.is_file() and os.access(sshd, os.X_OK)):
        raise SshHostError(
            f"sshd is not installed at {sshd}: install Debian's openssh-server"
            " (apt-get install openssh-server)"
        )
    if os.geteuid() == 0:
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)


def _launch(sshd: Path, config: Path) -> int:
    """Start sshd in a session of its own, its output going to its log; returns its pid. A bare
    pid, not a Popen: `stop_hosts` reaps the daemons by pid."""
    command = [str(sshd), "-D", "-e", "-f", str(config)]
    if SETPRIV.exists():
        # The daemon gets SIGTERM when the thread that started it ends: a crashed test or lab
        # process leaves no sshd behind. setpriv execs, so the pid stays sshd's.
        command = [str(SETPRIV), "--pdeathsig", "TERM", *command]
    log = os.open(config.parent / "sshd.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        return os.posix_spawn(
            command[0],
            command,
            dict(os.environ),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, log, 1),
                (os.POSIX_SPAWN_DUP2, log, 2),
            ],
            setsid=True,
        )
    finally:
        os.close(log)


def _exit_status(pid: int) -> int | None:
    """The exit status of a daemon that ended (reaping it), None while it runs."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return -1
    return os.waitstatus_to_exitcode(status) if done else None


def _answers_ssh(address: str, port: int) -> bool:
    """True once something at address:port accepts a connection and sends an SSH banner."""
    try:
        with socket.create_connection((address, port), timeout=0.5) as connection:
            return connection.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def _log_tail(home: Path) -> str:
    try:
        lines = (home / "sshd.log").read_text(errors="replace").splitlines()
    except OSError:
        return "no output"
    return " | ".join(line.strip() for line in lines[-5:] if line.strip()) or "no output"


def start_hosts(
    directory: Path,
    hosts: Sequence[tuple[str, str, int]],
    client_public_key: Path,
    *,
    timeout: float = READY_TIMEOUT,
    sshd: Path = SSHD,
) -> list[SshHost]:
    """Start an sshd for every (name, loopback address, port) at once and wait until each sends
    its banner. Each gets `directory`/NAME (host key, config, log) and `directory`/NAME/root.
    Call it from a thread that outlives the hosts (see `_launch`). If one fails, every daemon
    started is stopped and SshHostError names the host and what sshd said."""
    _check_installed(sshd)
    if len({name for name, _, _ in hosts}) != len(hosts):
        raise SshHostError("host names must be unique")
    if len({(address, port) for _, address, port in hosts}) != len(hosts):
        raise SshHostError("two hosts cannot listen on one address and port")
    authorized = client_public_key.read_text()
    prepared = [
        (name, address, port, *_prepare(directory, name, address, port, authorized))
        for name, address, port in hosts
    ]
    pids: dict[str, int] = {}
    try:
        for name, _, _, config, _ in prepared:
            pids[name] = _launch(sshd, config)
        pending = {name: (address, port, config.parent) for name, address, port, config, _ in prepared}
        deadline = time.monotonic() + timeout
        while pending:
            for name, (address, port, home) in list(pending.items()):
                status = _exit_status(pids[name])
                if status is not None:
                    raise SshHostError(
                        f"sshd for host {name} ({address}:{port}) exited with status {status}:"
                        f" {_log_tail(home)}"
                    )
                if _answers_ssh(address, port):
                    del pending[name]
            if pending and time.monotonic() > deadline:
                name, (address, port, home) = next(iter(pending.items()))
                raise SshHostError(
                    f"sshd for host {name} ({address}:{port}) did not answer within {timeout:g} s:"
                    f" {_log_tail(home)}"
                )
            if pending:
                time.sleep(0.02)
    except BaseException:
        stop_hosts(pids.values())
        raise
    return [
        SshHost(name, address, port, pids[name], config.parent / "root", line)
        for name, address, port, config, line in prepared
    ]


def ansible_vars(host: SshHost, client_key: Path, known_hosts: Path) -> dict[str, str]:
    """Inventory host variables that reach `host` over SSH with host key checking on, as the user
    running this (root: the hosts' sshd lets root in by key only). There is no sudo: `become` is
    off whatever a play says, and the example's baseline role writes under the host's root
    directory and leaves services alone. All values are strings, as override files hold them."""
    common = f"-o UserKnownHostsFile={shlex.quote(str(known_hosts))} -o IdentitiesOnly=yes"
    return {
        "ansible_connection": "ssh",
        "ansible_host": host.address,
        "ansible_port": str(host.port),
        "ansible_user": pwd.getpwuid(os.geteuid()).pw_name,
        "ansible_ssh_private_key_file": str(client_key),
        "ansible_ssh_common_args": common,
        "ansible_become": "false",
        # No sudo and no requiretty: modules go through the connection's stdin, a round trip less.
        "ansible_pipelining": "true",
        "ansible_python_interpreter": REMOTE_PYTHON,
        # The hosts share this machine: Ansible's files on "the host" stay in its directory
        # instead of the login user's ~/.ansible/tmp.
        "ansible_remote_tmp": str(host.root.parent / "remote-tmp"),
        "baseline_root": str(host.root),
        "baseline_manage_services": "false",
    }


# --- stopping ----------------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    """Every process's children, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name in parentheses may hold spaces and parentheses: split after the last ")".
        fields = stat[stat.rfind(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def descendants(pids: Iterable[int]) -> list[int]:
    """`pids` and everything they started that still runs (an sshd's connections and sessions)."""
    children = _children()
    found: list[int] = []
    stack = list(pids)
    while stack:
        pid = stack.pop()
        if pid in found:
            continue
        found.append(pid)
        stack.extend(children.get(pid, ()))
    return found


def stop_hosts(pids: Iterable[int], *, timeout: float = 5.0) -> None:
    """Stop the sshd daemons `pids` and every connection and session they serve: SIGTERM, then
    SIGKILL after `timeout`. Connections go first, while their daemon is there to reap them.
    Daemons already gone are skipped."""
    given = list(pids)
    for pid in given:
        reap(pid)  # one that was killed on purpose
    daemons = [pid for pid in given if process_running(pid)]
    _terminate([pid for pid in descendants(daemons) if pid not in daemons], timeout)
    _terminate(daemons, timeout)


def _terminate(pids: Sequence[int], timeout: float) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while True:
        for pid in pids:
            reap(pid)
        left = [pid for pid in pids if process_running(pid)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:
        reap(pid, block=True)  # every one has ended (or was killed just now)


# --- command line ------------------------------------------------------------------------


def _read_table(path: Path) -> list[tuple[str, str, int]]:
    try:
        document = json.loads(path.read_text())
        return [(str(h["name"]), str(h["address"]), int(h["port"])) for h in document["hosts"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SshHostError(f"cannot read the host table {path}: {exc}") from None


def ready_document(hosts: Sequence[SshHost], client_key: Path, known_hosts_file: Path) -> dict[str, Any]:
    """The content of the ready file."""
    return {
        "clientKey": str(client_key),
        "knownHosts": str(known_hosts_file),
        "hosts": {
            host.name: {
                "pid": host.pid,
                "root": str(host.root),
                "ansibleVars": ansible_vars(host, client_key, known_hosts_file),
            }
            for host in hosts
        },
    }


def _become_subreaper() -> None:
    """Make connections whose daemon died this process's children, so that stopping finds them."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lab.sshd", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run simulated SSH hosts until SIGTERM or SIGINT")
    serve.add_argument(
        "--dir", required=True, type=Path, help="directory for the hosts, keys and known_hosts"
    )
    serve.add_argument("--table", required=True, type=Path, help='JSON: {"hosts": [{name, address, port}]}')
    serve.add_argument("--ready-file", required=True, type=Path, help="written once every host answers")
    return parser.parse_args(argv)


def serve(directory: Path, table: Path, ready_file: Path, stop: threading.Event) -> int:
    """Run the hosts of `table` until `stop` is set, then stop them and whatever they left
    running; 1 if they could not start (the reason goes to stderr)."""
    with contextlib.suppress(FileNotFoundError):
        ready_file.unlink()  # one left by a killed server must not look like this one's
    _become_subreaper()
    started: list[SshHost] = []
    try:
        wanted = _read_table(table)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        client_key = make_client_key(directory)
        started = start_hosts(directory, wanted, client_key.with_name(client_key.name + ".pub"))
        known = known_hosts(directory, started)
        write_json_atomically(ready_file, ready_document(started, client_key, known))
        print(f"ready {len(started)} ssh hosts ({ready_file})", flush=True)
        reported: set[str] = set()
        while not stop.wait(0.5):
            for host in started:
                reap(host.pid)
                if host.name not in reported and not process_running(host.pid):
                    reported.add(host.name)
                    print(f"ssh host {host.name} stopped; it is not restarted", flush=True)
    except SshHostError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        stop_hosts([host.pid for host in started])
        stop_hosts(pid for pid in descendants([os.getpid()]) if pid != os.getpid())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    with stop_signals() as stop:
        return serve(args.dir, args.table, args.ready_file, stop)


if __name__ == "__main__":
    sys.exit(main())
