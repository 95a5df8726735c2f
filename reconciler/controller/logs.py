"""The controller's structured log: one JSON object per line on stderr, each naming the replica,
and the run, address and revision where the event has them. Secrets are never passed to it."""

from __future__ import annotations

import sys
from typing import Any

import structlog


def json_logger(replica: str) -> Any:
    """A logger whose `info(event, **fields)` writes one JSON line to stderr."""
    logger = structlog.wrap_logger(
        structlog.PrintLogger(sys.stderr),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.EventRenamer("message"),
            structlog.processors.JSONRenderer(sort_keys=False),
        ],
    )
    return logger.bind(replica=replica)
