"""The run pipeline shared by the CLI, the controller and the PR job (see `pipeline.py`)."""

from reconciler.apply.cancel import CancelToken
from reconciler.engine.pipeline import (
    DriftResult,
    Engine,
    PlannedRun,
    RunOptions,
    RunResult,
    Selected,
    Selection,
    SyncResult,
    open_engine,
)
from reconciler.engine.untrusted import DEFERRED_NOTE, UntrustedReport, UntrustedSource
from reconciler.source import SourceRef

__all__ = [
    "DEFERRED_NOTE",
    "CancelToken",
    "DriftResult",
    "Engine",
    "PlannedRun",
    "RunOptions",
    "RunResult",
    "Selected",
    "Selection",
    "SourceRef",
    "SyncResult",
    "UntrustedReport",
    "UntrustedSource",
    "open_engine",
]
