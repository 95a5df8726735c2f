"""Connections to libvirt daemons, one per hypervisor, and the one place libvirt errors become fleet errors.

A connection is opened on first use, reused by later observe and apply calls, and reopened once
when the daemon dropped it. Every call runs on a bounded set of daemon threads under a deadline:
a hypervisor that does not answer in time is reported as timed out and its thread is abandoned,
never joined. No libvirt exception, and no password, ever leaves this module.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import queue
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import libvirt  # type: ignore[import-untyped]

from providers.base import UnknownReason
from providers.credentials import UserPassword
from reconciler.errors import FleetError, PermanentError, TemporaryError

T = TypeVar("T")


def _ignore_libvirt_error(_context: object, _error: object) -> None:
    """libvirt prints every error to stderr unless a handler is set; fleet reports them itself."""


libvirt.registerErrorHandler(_ignore_libvirt_error, None)

POWER_BY_STATE: dict[int, str] = {
    libvirt.VIR_DOMAIN_NOSTATE: "off",
    libvirt.VIR_DOMAIN_RUNNING: "on",
    libvirt.VIR_DOMAIN_BLOCKED: "on",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "off",
    libvirt.VIR_DOMAIN_SHUTOFF: "off",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "paused",
}
# A domain in these states has a live definition (vCPUs, memory, devices) besides its persistent one.
_ACTIVE_STATES = frozenset(
    {
        libvirt.VIR_DOMAIN_RUNNING,
        libvirt.VIR_DOMAIN_BLOCKED,
        libvirt.VIR_DOMAIN_PAUSED,
        libvirt.VIR_DOMAIN_SHUTDOWN,
        libvirt.VIR_DOMAIN_CRASHED,
        libvirt.VIR_DOMAIN_PMSUSPENDED,
    }
)
_AUTH_CODES = frozenset(
    {libvirt.VIR_ERR_AUTH_FAILED, libvirt.VIR_ERR_AUTH_CANCELLED, libvirt.VIR_ERR_AUTH_UNAVAILABLE}
)
_DROP_CODES = frozenset({libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_RPC, libvirt.VIR_ERR_INVALID_CONN})
# These two also mean "the socket is gone" -- but only when the connection says it is dead.
_MAYBE_DROP_CODES = frozenset({libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_INTERNAL_ERROR})
_TEMPORARY_CODES = frozenset(
    {
        libvirt.VIR_ERR_OPERATION_TIMEOUT,
        libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
        libvirt.VIR_ERR_RESOURCE_BUSY,
        libvirt.VIR_ERR_OPERATION_ABORTED,
    }
)
_UNSUPPORTED_CODES = frozenset(
    {libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED}
)
_UNDEFINE_KEEPING_STORAGE = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM
)
# Waiting for a slot held by another caller is polled: a slot frees at a call's end or deadline.
_SLOT_POLL_SECONDS = 0.02


def shown_uri(uri: str) -> str:
    """The URI without any password in it, for messages and logs."""
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        return "<unparsable libvirt URI>"
    if parts.password is None:
        return uri
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}@{host}" if user else host))


class HypervisorUnavailable(TemporaryError):
    """The hypervisor could not be reached, or did not answer in time."""

    def __init__(self, message: str, *, reason: UnknownReason, hint: str | None = None) -> None:
        super().__init__(message, delay=5.0, hint=hint)
        self.reason = reason


class HypervisorAuthFailed(PermanentError):
    reason = UnknownReason.AUTH_FAILURE


class _ConnectionDropped(TemporaryError):
    """The daemon went away under a call; the connection is reopened once."""


@dataclasses.dataclass(frozen=True)
class Hypervisor:
    """Where one hypervisor Machine's libvirt daemon is, and how to log in to it."""

    name: str  # the Machine's name
    uri: str
    credentials: UserPassword | None = None

    @property
    def shown_uri(self) -> str:
        return shown_uri(self.uri)

    def __str__(self) -> str:
        return f"machine/{self.name} ({self.shown_uri})"

    def __repr__(self) -> str:
        return f"Hypervisor({self.name!r}, {self.shown_uri!r})"


@dataclasses.dataclass(frozen=True, slots=True)
class DomainState:
    power: str  # on, off, paused, crashed
    active: bool


@dataclasses.dataclass(frozen=True, slots=True)
class DomainRecord:
    """One domain as a bulk scan of a hypervisor saw it."""

    name: str
    uuid: str
    state: DomainState
    autostart: bool
    config_xml: str  # the persistent definition
    live_xml: str | None  # the running one, for an active domain


def _state(code: int) -> DomainState:
    return DomainState(POWER_BY_STATE.get(code, "off"), code in _ACTIVE_STATES)


class Session:
    """One hypervisor's connection as fleet uses it: typed calls, libvirt errors mapped."""

    def __init__(self, hypervisor: Hypervisor, connection: Any) -> None:
        self.hypervisor = hypervisor
        self._connection = connection

    def call(self, what: str, method: Callable[..., Any], *args: Any) -> Any:
        try:
            return method(*args)
        except libvirt.libvirtError as exc:
            raise self.mapped(what, exc) from None

    def mapped(self, what: str, exc: Any) -> FleetError:
        code = exc.get_error_code()
        message = self.scrub(str(exc.get_error_message() or exc))
        where = f"machine/{self.hypervisor.name}"
        if code in _DROP_CODES or (code in _MAYBE_DROP_CODES and not _alive(self._connection)):
            return _ConnectionDropped(f"{where}: connection lost while {what}: {message}")
        if code in _AUTH_CODES:
            return HypervisorAuthFailed(f"{where}: authentication failed while {what}: {message}")
        if code in _TEMPORARY_CODES:
            return TemporaryError(f"{where}: {what} failed: {message}")
        return PermanentError(f"{where}: {what} failed: {message}")

    def scrub(self, message: str) -> str:
        return _scrub(message, self.hypervisor)

    def domain_type(self) -> str:
        """The domain type this hypervisor runs: kvm where QEMU offers it, else what it reports."""
        kind = str(self.call("reading the hypervisor type", self._connection.getType)).lower()
        if kind != "qemu":
            return kind
        capabilities = str(self.call("reading capabilities", self._connection.getCapabilities))
        try:
            root = ET.fromstring(capabilities)
        except ET.ParseError:
            return "qemu"
        offered = {d.get("type") for d in root.iterfind("guest/arch/domain")}
        return "kvm" if "kvm" in offered else "qemu"

    def scan(self) -> list[DomainRecord]:
        """Every domain with its state, autostart flag and definitions: a few bulk calls and one
        or two XML reads per domain (libvirt has no bulk call for definitions)."""
        connection = self._connection
        try:
            stats = connection.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, 0)
            states = [(domain, int(values.get("state.state", 0))) for domain, values in stats]
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in _UNSUPPORTED_CODES:
                raise self.mapped("listing domains", exc) from None
            domains = self.call("listing domains", connection.listAllDomains, 0)
            states = [(domain, int(self.call("reading a state", domain.state)[0])) for domain in domains]
        autostart = {
            str(domain.UUIDString())
            for domain in self.call(
                "listing autostart domains",
                connection.listAllDomains,
                libvirt.VIR_CONNECT_LIST_DOMAINS_AUTOSTART,
            )
        }
        records = []
        for domain, code in states:
            state = _state(code)
            name = str(domain.name())
            try:
                config = str(domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
                live = str(domain.XMLDesc(0)) if state.active else None
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    continue  # undefined while the scan ran: it is gone
                raise self.mapped(f"reading domain {name}", exc) from None
            uuid = str(domain.UUIDString())
            records.append(DomainRecord(name, uuid, state, uuid in autostart, config, live))
        return records

    def lookup(self, name: str) -> Domain | None:
        try:
            return Domain(self, self._connection.lookupByName(name))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise self.mapped(f"looking up domain {name}", exc) from None

    def define(self, xml: str, name: str) -> Domain:
        return Domain(self, self.call(f"defining domain {name}", self._connection.defineXML, xml))

    def pool(self, name: str) -> StoragePool | None:
        try:
            pool = self._connection.storagePoolLookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
                return None
            raise self.mapped(f"looking up storage pool {name}", exc) from None
        return StoragePool(self, pool, name)


class Domain:
    """One domain; every method is one libvirt call."""

    def __init__(self, session: Session, domain: Any) -> None:
        self._session = session
        self._domain = domain
        self.name = str(domain.name())
        self.uuid = str(domain.UUIDString())

    def _call(self, what: str, method: Callable[..., Any], *args: Any) -> Any:
        return self._session.call(f"{what} {self.name}", method, *args)

    def state(self) -> DomainState:
        return _state(int(self._call("reading the state of", self._domain.state)[0]))

    def config_xml(self) -> str:
        return str(
            self._call("reading the definition of", self._domain.XMLDesc, libvirt.VIR_DOMAIN_XML_INACTIVE)
        )

    def live_xml(self) -> str:
        return str(self._call("reading the live definition of", self._domain.XMLDesc, 0))

    def autostart(self) -> bool:
        return bool(self._call("reading autostart of", self._domain.autostart))

    def set_autostart(self, enabled: bool) -> None:
        self._call("setting autostart of", self._domain.setAutostart, 1 if enabled else 0)

    def start(self) -> None:
        self._call("starting", self._domain.create)

    def resume(self) -> None:
        self._call("resuming", self._domain.resume)

    def shutdown(self) -> None:
        self._call("shutting down", self._domain.shutdown)

    def destroy(self) -> None:
        self._call("destroying", self._domain.destroy)

    def set_live_vcpus(self, count: int) -> None:
        self._call("setting live vCPUs of", self._domain.setVcpusFlags, count, libvirt.VIR_DOMAIN_AFFECT_LIVE)

    def set_live_memory(self, kib: int) -> None:
        self._call("setting live memory of", self._domain.setMemoryFlags, kib, libvirt.VIR_DOMAIN_AFFECT_LIVE)

    def undefine(self) -> None:
        """Remove the persistent definition and nothing else: volumes and NVRAM stay."""
        try:
            self._domain.undefineFlags(_UNDEFINE_KEEPING_STORAGE)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in _UNSUPPORTED_CODES:
                raise self._session.mapped(f"undefining {self.name}", exc) from None
            self._call("undefining", self._domain.undefine)  # a driver without those flags


class StoragePool:
    def __init__(self, session: Session, pool: Any, name: str) -> None:
        self._session = session
        self._pool = pool
        self.name = name

    def active(self) -> bool:
        return bool(self._session.call(f"reading storage pool {self.name}", self._pool.isActive))

    def _volume(self, name: str) -> Any:
        try:
            return self._pool.storageVolLookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                return None
            raise self._session.mapped(f"looking up volume {name} in pool {self.name}", exc) from None

    def has_volume(self, name: str) -> bool:
        return self._volume(name) is not None

    def create_volume(self, name: str, xml: str) -> None:
        self._session.call(f"creating volume {name} in pool {self.name}", self._pool.createXML, xml, 0)

    def clone_volume(self, name: str, xml: str, source: str) -> None:
        """Create `name` as a copy of the volume `source` of this pool (which must exist)."""
        original = self._volume(source)
        if original is None:
            raise PermanentError(
                f"machine/{self._session.hypervisor.name}: no volume {source} in pool {self.name}"
            )
        self._session.call(
            f"cloning volume {source} to {name} in pool {self.name}",
            self._pool.createXMLFrom,
            xml,
            original,
            0,
        )


def _alive(connection: Any) -> bool:
    if connection is None:
        return False
    try:
        return bool(connection.isAlive() == 1)
    except libvirt.libvirtError:
        return False


def _scrub(message: str, hypervisor: Hypervisor) -> str:
    message = message.replace(hypervisor.uri, hypervisor.shown_uri)
    secrets = [urllib.parse.urlsplit(hypervisor.uri).password or ""]
    if hypervisor.credentials is not None:
        secrets.append(hypervisor.credentials.password.reveal())
    for secret in secrets:
        if secret:
            message = message.replace(secret, "***")
    return message


def _open(hypervisor: Hypervisor) -> Any:
    credentials = hypervisor.credentials

    def answer(requested: list[list[Any]], _data: object) -> int:
        assert credentials is not None
        for credential in requested:
            if credential[0] == libvirt.VIR_CRED_AUTHNAME:
                credential[4] = credentials.username
            elif credential[0] == libvirt.VIR_CRED_PASSPHRASE:
                credential[4] = credentials.password.reveal()
            else:
                return -1
        return 0

    try:
        if credentials is None:
            connection = libvirt.open(hypervisor.uri)
        else:
            auth = [[libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE], answer, None]
            connection = libvirt.openAuth(hypervisor.uri, auth, 0)
    except libvirt.libvirtError as exc:
        message = _scrub(str(exc.get_error_message() or exc), hypervisor)
        if exc.get_error_code() in _AUTH_CODES or "authentication" in message.lower():
            raise HypervisorAuthFailed(
                f"{hypervisor}: authentication failed: {message}",
                hint="check the credential named by the Machine's spec.hypervisor.credentialsRef",
            ) from None
        raise HypervisorUnavailable(
            f"{hypervisor} is unreachable: {message}", reason=UnknownReason.UNREACHABLE
        ) from None
    if connection is None:  # pragma: no cover - libvirt-python raises instead
        raise HypervisorUnavailable(f"{hypervisor} is unreachable", reason=UnknownReason.UNREACHABLE)
    return connection


@dataclasses.dataclass(eq=False)
class _Call:
    hypervisor: Hypervisor
    deadline: float
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    outcome: tuple[bool, Any] | None = None
    abandoned: bool = False
    connection: Any = None  # the connection the call uses, forgotten when it is abandoned


@dataclasses.dataclass(eq=False)
class _Held:
    hypervisor: Hypervisor
    connection: Any


class Connections:
    """One reusable connection per hypervisor, and deadline-bounded calls on them."""

    def __init__(
        self, *, timeout: float, max_concurrent: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.timeout = timeout
        self._clock = clock
        self._slots = threading.Semaphore(max_concurrent)
        self._lock = threading.Lock()
        self._held: dict[str, _Held] = {}
        self._opening: dict[str, threading.Lock] = collections.defaultdict(threading.Lock)
        self._closed = False

    def run(self, hypervisor: Hypervisor, work: Callable[[Session], T], *, timeout: float | None = None) -> T:
        """`work(session)` on the hypervisor's connection, within the deadline; raises fleet errors only."""
        outcome = self.run_each([hypervisor], work, timeout=timeout)[hypervisor.name]
        if isinstance(outcome, FleetError):
            raise outcome
        return outcome

    def run_each(
        self,
        hypervisors: Sequence[Hypervisor],
        work: Callable[[Session], T],
        *,
        timeout: float | None = None,
    ) -> dict[str, T | FleetError]:
        """`work` on every hypervisor at once (as slots allow), each under its own deadline, which
        starts when its call does. A hypervisor's result is its value or the fleet error it met."""
        limit = self.timeout if timeout is None else timeout
        finished: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        waiting = collections.deque({h.name: h for h in hypervisors}.values())
        running: dict[str, _Call] = {}
        results: dict[str, T | FleetError] = {}
        while waiting or running:
            if self._closed:
                raise PermanentError("the libvirt provider is closed")
            while waiting and self._slots.acquire(blocking=False):
                hypervisor = waiting.popleft()
                call = _Call(hypervisor, self._clock() + limit)
                running[hypervisor.name] = call
                threading.Thread(
                    target=self._execute,
                    args=(call, work, finished),
                    name=f"fleet-libvirt-{hypervisor.name}",
                    daemon=True,
                ).start()
            wait = _SLOT_POLL_SECONDS
            if running:
                wait = min(c.deadline for c in running.values()) - self._clock()
                if waiting:
                    wait = min(wait, _SLOT_POLL_SECONDS)
            try:
                done = finished.get(timeout=max(wait, 0.0005))
                while True:
                    results[done.hypervisor.name] = self._outcome(done)
                    running.pop(done.hypervisor.name, None)
                    done = finished.get_nowait()
            except queue.Empty:
                pass
            now = self._clock()
            for name, call in list(running.items()):
                if now >= call.deadline and self._abandon(call):
                    del running[name]
                    results[name] = HypervisorUnavailable(
                        f"{call.hypervisor} did not answer within {limit:g} s",
                        reason=UnknownReason.TIMEOUT,
                        hint="providers.libvirt.timeoutSeconds is the deadline for one hypervisor",
                    )
        return results

    @staticmethod
    def _outcome(call: _Call) -> Any:
        assert call.outcome is not None
        ok, value = call.outcome
        if ok or isinstance(value, FleetError):
            return value
        raise value  # not a libvirt or fleet error: a bug, which must not pass as a result

    def _abandon(self, call: _Call) -> bool:
        with call.lock:
            if call.outcome is not None:
                return False  # it finished just now; its result is on the way
            call.abandoned = True
            self._slots.release()
        self._forget(call.hypervisor.name, call.connection)
        return True

    def _execute(
        self, call: _Call, work: Callable[[Session], Any], finished: queue.SimpleQueue[_Call]
    ) -> None:
        outcome: tuple[bool, Any]
        try:
            outcome = (True, self._with_connection(call, work))
        except FleetError as exc:
            outcome = (False, exc)
        except libvirt.libvirtError as exc:  # a call that bypassed Session.call
            outcome = (False, Session(call.hypervisor, call.connection).mapped("talking to libvirt", exc))
        except BaseException as exc:
            outcome = (False, exc)
        with call.lock:
            if call.abandoned:
                return
            call.outcome = outcome
            self._slots.release()
        finished.put(call)

    def _with_connection(self, call: _Call, work: Callable[[Session], Any]) -> Any:
        for attempt in range(2):
            connection = self._connection(call)
            try:
                return work(Session(call.hypervisor, connection))
            except _ConnectionDropped as exc:
                self._forget(call.hypervisor.name, connection)
                if attempt:
                    raise HypervisorUnavailable(
                        f"{exc.message} (after reconnecting)", reason=UnknownReason.UNREACHABLE
                    ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _connection(self, call: _Call) -> Any:
        hypervisor = call.hypervisor
        cached = self._cached(hypervisor)
        if cached is None:
            with self._lock:
                opening = self._opening[hypervisor.name]
            if not opening.acquire(timeout=max(call.deadline - self._clock(), 0.001)):
                raise HypervisorUnavailable(
                    f"{hypervisor}: still connecting from an earlier call", reason=UnknownReason.TIMEOUT
                )
            try:
                cached = self._cached(hypervisor)
                if cached is None:
                    cached = _open(hypervisor)
                    with call.lock, self._lock:
                        if not call.abandoned and not self._closed:
                            self._held[hypervisor.name] = _Held(hypervisor, cached)
            finally:
                opening.release()
        call.connection = cached
        return cached

    def _cached(self, hypervisor: Hypervisor) -> Any:
        with self._lock:
            held = self._held.get(hypervisor.name)
        if held is None:
            return None
        if held.hypervisor != hypervisor or not _alive(held.connection):
            self._forget(hypervisor.name, held.connection)
            return None
        return held.connection

    def _forget(self, name: str, connection: Any) -> None:
        """Stop reusing a connection; the last thread holding it closes it (by dropping it)."""
        if connection is None:
            return
        with self._lock:
            held = self._held.get(name)
            if held is not None and held.connection is connection:
                del self._held[name]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            held, self._held = list(self._held.values()), {}
        for entry in held:
            with contextlib.suppress(libvirt.libvirtError):  # a dead connection is closed all the same
                entry.connection.close()
