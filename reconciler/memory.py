"""Bulk work over a whole fleet's documents without the garbage collector in the way.

Loading or planning 100,000s of documents makes millions of small objects; with the cyclic
collector on, every few thousand allocations it scans all of them again, which costs more than
the work itself. fleet's documents, plans and observations form no reference cycles (reference
counting frees them), so the collector is paused for such a step. A loaded revision lives on:
its objects are moved out of the collector's sight for good (`gc.freeze`) instead of being
scanned again and again; they are still freed, by reference counting, once nothing uses them.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator


class _Pause:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.resume = False
        self.freeze = False


_PAUSE = _Pause()


@contextlib.contextmanager
def collector_paused(*, keep: bool = False) -> Iterator[None]:
    """Pause the cyclic garbage collector for the block; with `keep`, what the block made is
    long-lived and is frozen when the collector resumes. Nested and concurrent blocks are
    counted: the collector resumes when the last one ends, if it was running before the first."""
    with _PAUSE.lock:
        if _PAUSE.depth == 0:
            _PAUSE.resume = gc.isenabled()
            _PAUSE.freeze = False
            gc.disable()
        _PAUSE.depth += 1
        _PAUSE.freeze = _PAUSE.freeze or keep
    try:
        yield
    finally:
        with _PAUSE.lock:
            _PAUSE.depth -= 1
            if _PAUSE.depth == 0:
                if _PAUSE.freeze:
                    gc.freeze()
                if _PAUSE.resume:
                    gc.enable()
