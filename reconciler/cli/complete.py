"""Shell completion of what people type most: kinds, addresses and label keys of the fleet repo
in the current directory. Completion must never print, fail or take long: anything that goes
wrong completes nothing."""

from __future__ import annotations

from pathlib import Path

from reconciler.kinds import KINDS, kind_names


def kinds(incomplete: str) -> list[str]:
    managed = [kind for kind in KINDS.values() if kind.name != "Fleet"]
    names = [name for kind in managed for name in (kind.name.lower(), *kind.short_names)]
    return [name for name in names if name.lower().startswith(incomplete.lower())]


def _documents() -> list[tuple[str, dict[str, str]]]:
    """(address, labels) of the valid documents of the working tree in the current directory."""
    if not Path("fleet.yaml").is_file():
        return []
    try:
        from reconciler.source.worktree import read_worktree
        from reconciler.spec.loader import load_revision

        revision = load_revision(read_worktree(Path(".")))
        return [
            (d.document.address, dict(d.document.metadata.labels))
            for d in revision.documents
            if d.document.kind_name != "Fleet"
        ]
    except Exception:  # completion completes nothing rather than break the shell's line
        return []


def addresses(incomplete: str) -> list[str]:
    return sorted(address for address, _ in _documents() if address.startswith(incomplete))


def label_keys(incomplete: str) -> list[str]:
    """`key=` for every label key of the repo, after whatever the selector already holds."""
    done, _, current = incomplete.rpartition(",")
    prefix = f"{done}," if done else ""
    keys = sorted({key for _, labels in _documents() for key in labels})
    return [f"{prefix}{key}=" for key in keys if key.startswith(current)]


__all__ = ["addresses", "kind_names", "kinds", "label_keys"]
