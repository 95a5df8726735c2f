"""Checks every value on its way into the state store: plain JSON only, aware timestamps, no secrets.

Callers are expected to pass only non-secret fields; as a second line of defence the store
refuses (PermanentError) any text or JSON string that contains a value registered with
`StateStore.forbid_values`, e.g. the BMC passwords a run has resolved. Error messages name where
the offending value sits, never the value itself; nothing here may log or echo a payload.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from reconciler.errors import PermanentError

MAX_DEPTH = 64
MIN_SECRET_LENGTH = 4


class ValueGuard:
    def __init__(self) -> None:
        self._forbidden: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def forbid(self, values: Iterable[str]) -> None:
        """Thread-safe: a run's providers hand out secrets from their own threads."""
        with self._lock:
            # Shorter values would match inside ordinary words ("on", an address) and refuse every
            # write; they are not secrets anyone could find in a row either.
            fresh = {v for v in values if len(v) >= MIN_SECRET_LENGTH} - self._forbidden
            if not fresh:
                return
            self._forbidden.update(fresh)
            # Longest first, so that one regex pass finds any of them inside a longer string.
            alternatives = sorted(self._forbidden, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in alternatives))

    def text(self, value: str | None, what: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise PermanentError(f"{what} must be a string, not {type(value).__name__}")
        self._check_string(value, what)
        return str.__str__(value)

    def json(self, value: Any, what: str) -> Any:
        """A plain copy of `value` (dicts, lists, str, int, float, bool, None), checked for secrets."""
        return self._plain(value, what, "$", 0)

    def _check_string(self, value: str, where: str) -> None:
        if self._pattern is not None and self._pattern.search(value):
            raise PermanentError(
                f"refusing to store a secret: {where} contains a value registered as secret",
                hint="pass only non-secret fields to the state store",
            )

    def _plain(self, value: Any, what: str, path: str, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise PermanentError(f"{what} nests deeper than {MAX_DEPTH} levels at {path}")
        if value is None or isinstance(value, bool | int):
            return value if value is None or isinstance(value, bool) else int(value)
        if isinstance(value, float):
            if not math.isfinite(value):
                raise PermanentError(f"{what} holds a non-finite number at {path}; JSON cannot store it")
            return float(value)
        if isinstance(value, str):
            self._check_string(value, f"{what} at {path}")
            return str.__str__(value)
        if isinstance(value, Mapping):
            plain: dict[str, Any] = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    raise PermanentError(f"{what} has a non-string key at {path}; JSON keys are strings")
                self._check_string(key, f"{what}, a key at {path}")
                plain[str.__str__(key)] = self._plain(item, what, f"{path}.{key}", depth + 1)
            return plain
        if isinstance(value, list | tuple):
            return [self._plain(item, what, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
        # Anything else (a credentials wrapper, a datetime, a model) is not plain JSON; refusing it
        # also keeps a Secret object from being stored through its repr.
        raise PermanentError(
            f"{what} holds a {type(value).__name__} at {path}; the state store takes plain JSON values only"
        )


def utc(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise PermanentError(f"{what} must be a timezone-aware datetime")
    return value.astimezone(UTC)


def one_of(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise PermanentError(f"{what} must be one of {', '.join(allowed)}, not {value!r}")
    return str.__str__(value)
