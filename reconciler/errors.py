"""The one exception tree of fleet.

Every error fleet raises on purpose derives from `FleetError`. Providers and the
Git source map third-party exceptions into this tree at their boundary, so no
SDK exception type ever reaches the engine or a user. `TemporaryError` is worth
retrying; `PermanentError` is not.
"""

from __future__ import annotations


class FleetError(Exception):
    """Base of every error fleet raises; its message is meant for a person."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class TemporaryError(FleetError):
    """A failure that may go away by itself: retry after `delay` seconds."""

    def __init__(self, message: str, *, delay: float = 1.0, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.delay = delay


class PermanentError(FleetError):
    """A failure that retrying cannot fix."""


class UsageError(PermanentError):
    """The command line asked for something that cannot be done (exit code 2)."""


class SourceError(PermanentError):
    """The fleet repo cannot be read: no such path, repository or revision (exit code 2)."""


class StoreError(FleetError):
    """The state store cannot be used: an infrastructure error (exit code 2, as a missing path)."""


class StoreUnavailable(StoreError, TemporaryError):
    """The state store does not answer now (a connection refused or lost, a lock held too long)."""


class StoreFailure(StoreError, PermanentError):
    """The state store is unusable until someone acts: damaged, foreign, too new, read-only."""
