"""The in-process work queue of one replica: units of work by key, a pending duplicate merged into
the one already waiting, run one at a time by a worker thread.

A key names what a job is about ("revision", "pass:machine:nyc1", ...): asking again for work
that is already waiting changes nothing, which is what makes the controller level-based (an event
only says "look again"). A job that raises is logged by the caller's `on_error` and the queue goes
on; the queue never retries by itself, the schedule does.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from collections.abc import Callable


@dataclasses.dataclass
class _Job:
    key: str
    work: Callable[[], None]
    queued_at: float


class WorkQueue:
    """Jobs by key, run in submission order by one worker thread; thread-safe."""

    def __init__(self, on_error: Callable[[str, BaseException], None]) -> None:
        self._on_error = on_error
        self._lock = threading.Condition()
        self._pending: collections.OrderedDict[str, _Job] = collections.OrderedDict()
        self._running: str | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="fleet-controller-worker", daemon=True)
        self._thread.start()

    def submit(self, key: str, work: Callable[[], None], *, first: bool = False) -> bool:
        """Queue `work` under `key` (at the head of the queue when `first`: an emergency); False
        when work of that key was already waiting (merged) or the queue is stopping."""
        with self._lock:
            if self._stopping:
                return False
            if key in self._pending:
                return False
            self._pending[key] = _Job(key, work, time.monotonic())
            if first:
                self._pending.move_to_end(key, last=False)
            self._lock.notify_all()
            return True

    @property
    def depth(self) -> int:
        """Jobs waiting (the running one not counted)."""
        with self._lock:
            return len(self._pending)

    def snapshot(self) -> tuple[str | None, list[str]]:
        """The running job's key and the waiting keys, in order."""
        with self._lock:
            return self._running, list(self._pending)

    def idle(self, timeout: float) -> bool:
        """Wait until nothing is waiting or running; False if `timeout` passed first."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._pending or self._running is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
            return True

    def stop(self, grace: float) -> bool:
        """Take no more work, drop what waits, let the running job finish within `grace` seconds.
        True when the worker ended in time."""
        with self._lock:
            self._stopping = True
            self._pending.clear()
            self._lock.notify_all()
        self._thread.join(timeout=grace)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._stopping:
                    self._lock.wait()
                if self._stopping:
                    return
                _, job = self._pending.popitem(last=False)
                self._running = job.key
            try:
                job.work()
            except BaseException as exc:  # a job's failure is reported, never the worker's end
                self._on_error(job.key, exc)
            finally:
                with self._lock:
                    self._running = None
                    self._lock.notify_all()
