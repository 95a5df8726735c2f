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
from reconciler.source import SourceRef

__all__ = [
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
    "open_engine",
]
