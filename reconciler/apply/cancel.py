"""How a caller stops a run: a cancellation token, set from any thread.

Once it is set, no new action starts; running ones finish or time out, and the rest are
recorded as interrupted with the token's reason. The CLI sets it on Ctrl-C, the controller on
shutdown, and a run sets it itself when it loses a lease. Nothing here installs a signal handler.
"""

from __future__ import annotations

import threading


class CancelToken:
    """Set once, with the reason that wins (the first); never unset."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._reason = ""

    def cancel(self, reason: str = "cancelled") -> None:
        with self._lock:
            if not self._event.is_set():
                self._reason = reason
                self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    @property
    def reason(self) -> str:
        return self._reason

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep up to `timeout` seconds, waking early when cancelled; True when cancelled."""
        return self._event.wait(timeout)
