"""Plans of a revision fleet does not trust yet (a pull request from someone `is_trusted` does not
name): its specs are planned, but nothing of it runs as code.

Even in check mode Ansible runs code on the controller: playbooks (a task may leave check mode),
roles, plugins beside them (`filter_plugins/`, `library/`, `lookup_plugins/`, ...), collections,
vars files, and every Jinja template it renders, lookups included. So the specs come from the
pull request's head revision, but every file Ansible reads (whatever lies under the directories
the configurations read) comes from the base revision's export, and the variables that differ
from the base revision reach Ansible as data it never renders (`!unsafe`). Configurations that
would hand the author more than that (a new host, another address, changed connection or
secret variables, a playbook the base revision does not have) are not evaluated at all: they
wait until the pull request is trusted, and the plan says so.

What stays possible: values the author chose reach the base revision's playbooks as data. A
base playbook that uses a variable as a path or command on the controller (`template: src=`,
`lookup('file', ...)`, `lookup('pipe', ...)`) reads or runs what the value says; write trusted
playbooks so that such variables are not host variables.
"""

from __future__ import annotations

import contextlib
import dataclasses
import posixpath
from collections.abc import Mapping, Sequence, Sized
from pathlib import Path

from providers.base import Observation, UnknownReason
from reconciler.kinds.config import Configured, compare_with_base, config_directories, config_version
from reconciler.source import SourceRef
from reconciler.source.export import changed_files, directory_digest, exported
from reconciler.source.snapshot import Snapshot
from reconciler.spec import models
from reconciler.spec.loader import LoadedRevision

DEFERRED_NOTE = "configuration drift of the changed playbooks is evaluated once the PR is trusted"
"""What a plan says when the pull request changes files its configurations read."""


@dataclasses.dataclass(frozen=True)
class UntrustedSource:
    """`Engine.plan`'s option for a revision fleet does not trust: its specs are planned, with the
    playbooks, roles and plugins of `base` (the revision the pull request targets)."""

    base: SourceRef


@dataclasses.dataclass(frozen=True)
class UntrustedReport:
    """What a plan of an untrusted revision did instead of running its code, for the PR comment.

    `evaluated`: resources whose configuration check mode evaluated with the base revision's
    playbooks. `deferred`: resources whose configuration waits until the pull request is trusted,
    with why (also unknown entries of the plan). `unsafe_vars`: per resource, the variables that
    differ from the base revision, given to Ansible as data. `changed_files`: files under the
    configurations' directories that the pull request changes (their effect is not in the plan).
    """

    base: str
    evaluated: tuple[str, ...] = ()
    deferred: Mapping[str, str] = dataclasses.field(default_factory=dict)
    unsafe_vars: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    changed_files: tuple[str, ...] = ()

    @property
    def playbooks_changed(self) -> bool:
        return bool(self.changed_files)

    def notes(self) -> tuple[str, ...]:
        """Lines for people, short whatever the number of resources: what was evaluated how, and
        what waits until the pull request is trusted (resources grouped by why)."""
        lines: list[str] = []
        if self.evaluated:
            lines.append(
                f"configuration of {_count(self.evaluated, 'resource')} evaluated with the playbooks "
                f"of the base revision {self.base}: {_few(self.evaluated)}"
            )
        if self.unsafe_vars:
            changed = sum(len(names) for names in self.unsafe_vars.values())
            lines.append(
                f"{changed} changed variable{'s' if changed != 1 else ''} of "
                f"{_count(self.unsafe_vars, 'resource')} given to Ansible as text, never as templates"
            )
        if self.changed_files:
            lines.append(f"{DEFERRED_NOTE} ({_few(self.changed_files)})")
        waiting: dict[str, list[str]] = {}
        for address, why in self.deferred.items():
            waiting.setdefault(why, []).append(address)
        lines.extend(
            f"configuration not evaluated until the PR is trusted ({why}): {_few(addresses)}"
            for why, addresses in sorted(waiting.items())
        )
        return tuple(lines)


def _count(items: Sized, noun: str) -> str:
    return f"{len(items)} {noun}{'s' if len(items) != 1 else ''}"


def _few(items: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return f"{shown} and {len(items) - limit} more" if len(items) > limit else shown


@dataclasses.dataclass(frozen=True)
class UntrustedConfig:
    """What `Engine.plan` observes of an untrusted revision's configuration: the documents to
    check, with the base revision's files (`root`), Fleet and trusted variables; what it must not
    check (unknown observations); versions; and the report."""

    evaluated: tuple[Configured, ...]
    root: Path | None
    fleet: models.Fleet | None
    trusted_vars: Mapping[str, frozenset[str]]
    deferred: tuple[Observation, ...]
    versions: Mapping[str, str]
    report: UntrustedReport


def untrusted_config(
    scope: contextlib.ExitStack,
    head: Snapshot,
    base: Snapshot,
    base_revision: LoadedRevision,
    checked: Sequence[Configured],
) -> UntrustedConfig:
    """Compare every configuration of `checked` (head documents) with the base revision, export
    the base revision's files they read into a directory that lives as long as `scope`, and say
    what may be evaluated. The head revision's files are exported only to hash them."""
    directories = sorted({d for c in checked if c.spec.config for d in config_directories(c.spec.config)})
    before = {loaded.document.address: loaded.document for loaded in base_revision.documents}
    root = scope.enter_context(exported(base, directories)) if checked else None
    with exported(head, directories) as head_root:
        changed = changed_files(root, head_root, directories) if root and head_root else []
        versions = _versions(checked, head_root)
    deferred: dict[str, str] = {}
    trusted: dict[str, frozenset[str]] = {}
    unsafe: dict[str, tuple[str, ...]] = {}
    evaluated: list[Configured] = []
    for document in checked:
        comparison = compare_with_base(document, before.get(document.address))
        why = comparison.deferred
        if why is None and base_revision.fleet is None:
            why = "the base revision has no valid fleet.yaml"
        if why is None:
            why = _missing_at_base(document, root)
        if why is not None:
            deferred[document.address] = why
            continue
        evaluated.append(document)
        trusted[document.address] = comparison.trusted_vars
        if comparison.unsafe_vars:
            unsafe[document.address] = comparison.unsafe_vars
    if root is not None:
        # What check mode sees is the base revision's files: the version says so, so that
        # changes under the version fleet applied are drift, as at the base revision.
        digests = {d: directory_digest(root, d) for d in directories}
        for document in evaluated:
            assert document.spec.config is not None
            versions[document.address] = config_version(document.spec.config, digests)
    report = UntrustedReport(
        base.description,
        tuple(d.address for d in evaluated),
        dict(sorted(deferred.items())),
        dict(sorted(unsafe.items())),
        tuple(changed),
    )
    return UntrustedConfig(
        tuple(evaluated),
        root,
        base_revision.fleet,
        trusted,
        tuple(
            Observation.unknown(
                address,
                UnknownReason.NOT_ATTEMPTED,
                f"evaluated once the pull request is trusted: {why}",
            )
            for address, why in sorted(deferred.items())
        ),
        versions,
        report,
    )


def _versions(checked: Sequence[Configured], root: Path | None) -> dict[str, str]:
    """The versions of the configurations with the head revision's files (under `root`)."""
    digests: dict[str, str] = {}
    found: dict[str, str] = {}
    for document in checked:
        config = document.spec.config
        assert config is not None
        for directory in config_directories(config):
            if directory not in digests:
                digests[directory] = directory_digest(root, directory) if root is not None else ""
        found[document.address] = config_version(config, digests)
    return found


def _missing_at_base(document: Configured, root: Path | None) -> str | None:
    """Why the base revision cannot run this configuration: a playbook or role path it lacks."""
    config = document.spec.config
    assert config is not None
    if root is None:
        return "the base revision's files cannot be exported"
    for playbook in config.playbooks:
        if not _inside(root, playbook).is_file():
            return f"playbook {playbook} is not in the base revision"
    for role in config.roles:
        if "/" in role and not _inside(root, role).is_dir():
            return f"role {role} is not in the base revision"
    return None


def _inside(root: Path, relative: str) -> Path:
    """`root/relative` when it stays inside `root`; `root/.missing` (nothing) otherwise."""
    normal = posixpath.normpath(relative)
    if normal.startswith("/") or normal == ".." or normal.startswith("../"):
        return root / ".missing"
    return root / normal
