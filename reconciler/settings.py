"""Where fleet's files live on this machine, for conventions that production code and the lab share.

A running `fleet lab` keeps its state in `lab_directory()`, with the override file that `--lab`
hands to the providers (`lab_overrides_path()`). The lab writes them there; production only
reads the override file, and never imports the lab to find it.
"""

from __future__ import annotations

import os
from pathlib import Path


def lab_directory() -> Path:
    """FLEET_LAB_DIR, else $XDG_STATE_HOME/fleet/lab, else ~/.local/state/fleet/lab."""
    explicit = os.environ.get("FLEET_LAB_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "fleet" / "lab"


def lab_overrides_path(directory: Path | None = None) -> Path:
    """The override file of the lab kept in `directory` (default: `lab_directory()`)."""
    return (directory if directory is not None else lab_directory()) / "overrides.json"
