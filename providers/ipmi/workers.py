"""Worker processes that each drive pyghmi single-threaded, and the pool that feeds them.

A worker keeps one IPMI session per BMC it has served and reuses it across
commands and passes, and logs them all out when it stops, or when it has been idle long
enough for the BMCs to drop them (a fresh worker takes its place when one is needed). It runs one command at
a time; the scheduler hands a command to the worker that already holds the BMC's
session when it is idle, else to the BMC's home worker, else to any idle worker,
so a BMC that hangs ties up one worker, never the pass. A worker stuck past the
hard timeout is killed and replaced.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import zlib
from collections.abc import Iterator
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

from providers.base import UnknownReason

if TYPE_CHECKING:
    from providers.ipmi.client import BmcClient

STARTUP_TIMEOUT = 60.0
Request = tuple[int, str, int, str, str, str, dict[str, Any]]
# (request id, ok, result) or (request id, False, (temporary, reason, message))
Reply = tuple[int, bool, Any]


def _worker_main(connection: Connection, session_idle: float) -> None:
    """A BMC drops a session nobody used for a while (IPMI's default is 60 s of inactivity), and an
    idle worker sends no keepalive. A worker that holds sessions and hears nothing for
    `session_idle` seconds logs them out and ends (pyghmi cannot open a session to a BMC again in
    the process that logged one out); the pool starts a fresh one when it is needed, instead of a
    pass timing out on dead sessions."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    clients: dict[tuple[str, int, str], BmcClient] = {}
    try:
        connection.send("ready")  # start-up (a fresh interpreter, pyghmi) never counts against a BMC
    except (BrokenPipeError, OSError):
        return
    try:
        _serve(connection, clients, session_idle)
    finally:
        # BMCs hold only a few sessions each (often 4 to 16) and keep an abandoned one for about
        # a minute: every session this worker opened is logged out when it stops.
        for client in clients.values():
            client.close()


def _serve(
    connection: Connection, clients: dict[tuple[str, int, str], BmcClient], session_idle: float
) -> None:
    # Imported here: only worker processes ever load pyghmi.
    from providers.ipmi.client import BmcClient, BmcError

    while True:
        try:
            if clients and not connection.poll(session_idle):
                return  # idle: the sessions would be dead by the next pass
            message = connection.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        request_id, host, port, username, password, op, args = message
        key = (host, port, username)
        try:
            client = clients.get(key)
            if client is None:
                client = BmcClient(host, port, username, password)
                clients[key] = client
            reply: Reply = (request_id, True, client.run(op, args))
        except BmcError as exc:
            # A BMC that answered (with a completion code) keeps its session: pyghmi would hang
            # opening a second one to it. A failed session is dropped, never logged out (pyghmi
            # cannot reopen after logout).
            if not exc.answered:
                clients.pop(key, None)
            reply = (request_id, False, (exc.temporary, exc.reason.value, exc.message))
        except Exception as exc:
            clients.pop(key, None)
            reply = (request_id, False, (True, UnknownReason.PROTOCOL_ERROR.value, f"{type(exc).__name__}"))
        try:
            connection.send(reply)
        except (BrokenPipeError, OSError):
            return


_MAIN_LOCK = threading.Lock()


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """While a worker is started, the program's main module (the `fleet` CLI, a test runner, a
    benchmark) is not named to it: multiprocessing would have the fork server's child run it
    again (CPython gh-126631), which costs each worker a second of imports it never uses."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    with _MAIN_LOCK:
        saved = {name: main.__dict__[name] for name in ("__file__", "__spec__") if name in main.__dict__}
        main.__dict__.pop("__file__", None)
        main.__dict__["__spec__"] = None
        try:
            yield
        finally:
            main.__dict__.pop("__spec__", None)
            main.__dict__.update(saved)


@dataclasses.dataclass
class Worker:
    process: BaseProcess
    connection: Connection
    busy_with: int | None = None
    busy_since: float = 0.0


class WorkerPool:
    """N worker processes; `submit` to an idle one, `replies` to collect answers."""

    def __init__(self, size: int, *, session_idle: float = 30.0) -> None:
        self._session_idle = session_idle
        # A fork server that has imported pyghmi once forks every worker: a worker then starts
        # in milliseconds, not a fresh interpreter's second (and without re-importing the
        # CLI that started it), and is still forked from a process with no threads.
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(["providers.ipmi.client"])
        self.workers: list[Worker] = [self._start() for _ in range(max(1, size))]
        for worker in self.workers:
            self._await_ready(worker)

    def _start(self) -> Worker:
        parent, child = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=_worker_main, args=(child, self._session_idle), daemon=True, name="fleet-ipmi-worker"
        )
        with _main_module_hidden():
            process.start()
        child.close()
        return Worker(process, parent)

    @staticmethod
    def _await_ready(worker: Worker) -> None:
        """Wait until a worker can take a request, so its start-up (a fresh interpreter, pyghmi)
        is never charged to the first BMC it serves, which would then look hung under load."""
        if worker.connection.poll(STARTUP_TIMEOUT):
            with contextlib.suppress(EOFError, OSError):
                worker.connection.recv()

    def home(self, key: str) -> int:
        return zlib.crc32(key.encode()) % len(self.workers)

    def busy_since(self, index: int) -> float:
        """When worker `index` took its current request (monotonic seconds)."""
        return self.workers[index].busy_since

    def idle(self) -> list[int]:
        return [i for i, w in enumerate(self.workers) if w.busy_with is None]

    def submit(self, index: int, request: Request, now: float) -> bool:
        """Hand a request to a worker; False (and a fresh worker) if that one had died."""
        worker = self.workers[index]
        try:
            worker.connection.send(request)
        except (BrokenPipeError, OSError):
            self.replace(index)
            return False
        worker.busy_with = request[0]
        worker.busy_since = now
        return True

    def wait(self, timeout: float) -> list[Reply]:
        busy = {w.connection: w for w in self.workers if w.busy_with is not None}
        if not busy:
            return []
        ready = multiprocessing.connection.wait(list(busy), timeout=max(0.0, timeout))
        replies: list[Reply] = []
        for connection in ready:
            worker = busy[connection]  # type: ignore[index]
            try:
                reply: Reply = worker.connection.recv()
            except (EOFError, OSError):
                request_id = worker.busy_with
                self.replace(self.workers.index(worker))
                if request_id is not None:
                    replies.append(
                        (request_id, False, (True, UnknownReason.PROTOCOL_ERROR.value, "worker died"))
                    )
                continue
            worker.busy_with = None
            replies.append(reply)
        return replies

    def stuck(self, now: float, hard_timeout: float) -> list[tuple[int, int]]:
        """(worker index, request id) of workers busy for longer than the hard timeout."""
        return [
            (i, w.busy_with)
            for i, w in enumerate(self.workers)
            if w.busy_with is not None and now - w.busy_since > hard_timeout
        ]

    def replace(self, index: int) -> None:
        worker = self.workers[index]
        if worker.process.is_alive() and worker.process.pid is not None:
            os.kill(worker.process.pid, signal.SIGKILL)
        worker.process.join(timeout=5)
        worker.connection.close()
        self.workers[index] = self._start()
        self._await_ready(self.workers[index])

    def close(self) -> None:
        for worker in self.workers:
            with contextlib.suppress(BrokenPipeError, OSError):
                worker.connection.send(None)
        for worker in self.workers:
            worker.process.join(timeout=2)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=2)
            worker.connection.close()
        self.workers = []
