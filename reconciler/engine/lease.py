"""A run's hold on the resources it changes: leases with a short TTL, renewed while the run lives.

A lease lasts `ttl` seconds unless renewed; a run renews all of its leases every third of that,
from a thread of its own. A run that crashes (or is killed) holds its targets for at most one
TTL. A run that loses a lease (it expired while the run was stalled, or someone broke it) is
cancelled with the reason, and every action it records as started is checked against its lease
token in the same transaction (the fencing check), so it stops before its next action.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from types import TracebackType

from reconciler.apply.cancel import CancelToken
from reconciler.errors import FleetError
from reconciler.state import LockHolder, LockLost, LockSet, StateStore
from reconciler.state.locks import WaitCallback


class Lease:
    """Use as a context manager: acquires on entry (waiting up to `wait_seconds`), renews while
    inside, releases on exit."""

    def __init__(
        self,
        store: StateStore,
        addresses: Sequence[str],
        owner: str,
        run_id: int,
        cancel: CancelToken,
        *,
        ttl: float,
        wait_seconds: float = 0.0,
        break_lock: bool = False,
        on_wait: WaitCallback | None = None,
    ) -> None:
        self._store = store
        self._addresses = list(addresses)
        self._owner = owner
        self._run_id = run_id
        self._cancel = cancel
        self._ttl = ttl
        self._wait_seconds = wait_seconds
        self._break_lock = break_lock
        self._on_wait = on_wait
        self._stop = threading.Event()
        self._set: LockSet | None = None
        self._thread: threading.Thread | None = None

    @property
    def token(self) -> str:
        """What the fencing check compares: the token of this run's lease set."""
        assert self._set is not None, "the lease is not held"
        return self._set.token

    @property
    def broken(self) -> tuple[LockHolder, ...]:
        """The live leases of others this run took over (`break_lock`), for the audit."""
        return self._set.broken if self._set is not None else ()

    def __enter__(self) -> Lease:
        self._set = self._store.acquire_locks(
            self._addresses,
            self._owner,
            self._run_id,
            self._ttl,
            wait_seconds=self._wait_seconds,
            break_lock=self._break_lock,
            on_wait=self._on_wait,
        )
        self._thread = threading.Thread(target=self._renew, name="fleet-lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._set is not None:
            self._set.release()

    def _renew(self) -> None:
        assert self._set is not None
        while not self._stop.wait(self._ttl / 3):
            try:
                self._set.renew(self._ttl)
            except LockLost as exc:
                self._cancel.cancel(str(exc))
                return
            except FleetError:
                continue  # the store hiccuped: try again at the next tick; fencing guards meanwhile
