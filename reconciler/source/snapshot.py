"""The value every source returns: a listing of YAML files and a way to read them."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from reconciler.errors import SourceError


@dataclasses.dataclass(frozen=True, slots=True)
class SourceFile:
    """One YAML file of the repo. `blob_id` is the Git blob id of its content."""

    path: str
    blob_id: str
    size: int


@dataclasses.dataclass(frozen=True, slots=True)
class SourceProblem:
    """A file the source refuses to read (e.g. a symlink that leaves the repo)."""

    path: str
    code: str
    message: str
    hint: str


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """The fleet repo at one revision (or the working tree as it is now)."""

    description: str
    files: tuple[SourceFile, ...]
    problems: tuple[SourceProblem, ...]
    read: Callable[[SourceFile], bytes]
    commit: str | None = None
    root: str | None = None
    # Writes the repo's files under some directories (all of them for "") into a directory:
    # the playbooks and roles Ansible runs, exactly as they are at this revision.
    export: Callable[[Path, Sequence[str]], None] | None = None


def under(path: str, prefixes: Sequence[str]) -> bool:
    """Whether a repo path lies in one of the directories `prefixes` ("" is the whole repo)."""
    return any(not p or path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)


def is_yaml_path(path: str) -> bool:
    if not path.endswith((".yaml", ".yml")):
        return False
    return not any(part.startswith(".") for part in path.split("/"))


def stat_named(path: Path, missing: str, hint: str) -> os.stat_result:
    """stat() a path a user named. A missing one is `missing` (a message); one that cannot be
    read (a name too long, a loop of links, no permission) says why. Both are SourceErrors."""
    try:
        return path.stat()
    except FileNotFoundError:
        raise SourceError(missing, hint=hint) from None
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}", hint=hint) from None
