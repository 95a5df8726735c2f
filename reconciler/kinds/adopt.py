"""Drift adopted into Git: the spec edits that give drifted fields their live values.

A drift pull request is a branch whose commit edits the specs so that merging it adopts what
changed out of band (closing it lets enforcement revert the change). This module works out that
edit; it writes no file and talks to no Git server (`reconciler.source.git.commit_files` and
`push_branch` take what it returns):

    edits = adopt_drift(snapshot, revision, drifted_fields(plan))
    commit = commit_files(location, revision.commit, edits.files, ...)

Each kind says where its plan fields live in its spec (`Kind.adopt`):

| kind | plan field | spec field |
|---|---|---|
| Machine | `power`, `bootDevice`, `bootPersistent` | `spec.` the same |
| VirtualMachine | `host`, `power` (on/off), `vcpus`, `memory`, `autostart` | `spec.` the same |
| Cluster | `node/NAME`: label values | `spec.members[i].labels.KEY` |
| Cluster | `node/NAME`: a cordon fleet set, lifted | `spec.members[i].cordon` |
| Cluster | `KEY PATH` of an object of `spec.objects` | `spec.objects[j].PATH` (one value) |
| SparkPool | quota, limits, priority, Volcano queue | see `reconciler.kinds.sparkpool` |

Memory and other quantities are written in the unit the spec already uses when that is exact.

Never adopted, each with a one-line reason for the PR's body: a VM's disks and networks, the
configuration (Ansible) findings, Node taints, a pool's node labels (its selector), objects fleet
renders from several fields (namespaces, RBAC, pod templates, YuniKorn queues), Secrets, domains
fleet did not make, addresses no spec declares, and any field or value named like a credential.

`reconciler.spec.edit` writes the values so that only the lines of the drifted fields change;
each change is checked against the kind's model first, and the edited repo then goes through the
one loader (`load_revision`) again: a change that would make the repo invalid is refused with the
loader's diagnostic, so what this returns always passes `fleet validate`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from reconciler.errors import PermanentError
from reconciler.kinds import kind_of
from reconciler.kinds.base import Inexpressible, SpecChange
from reconciler.kinds.config import CONFIG_NOT_ADOPTABLE, is_config_field
from reconciler.plan.model import Finding, Plan
from reconciler.source.snapshot import Snapshot, SourceFile
from reconciler.source.worktree import git_blob_id
from reconciler.spec import models
from reconciler.spec.cache import SpecCache
from reconciler.spec.diagnostics import Diagnostic, YamlPath
from reconciler.spec.edit import REMOVE, EditedText, FieldEdit, edit_spec_text, show_path
from reconciler.spec.loader import InvalidRevision, LoadedDocument, LoadedRevision, load_revision
from reconciler.spec.secrets import find_literal_secrets, is_secret_key
from reconciler.spec.yamlload import Limits, decode

_BOM = "\ufeff"
_FIELD_WORDS = re.compile(r"[\s./=:]+")


@dataclasses.dataclass(frozen=True, slots=True)
class DriftedField:
    """One field of one resource whose live value differs from its spec: the `address`
    (`machine/nyc1-r01-02`), the `field` as plans name it (`power`, `node/NAME`, `KEY PATH`) and
    its `live` value, a JSON value. `finding` is the plan finding it came from."""

    address: str
    field: str
    live: Any
    finding: Finding = Finding.DRIFT


@dataclasses.dataclass(frozen=True, slots=True)
class AdoptedField:
    """A drifted value written into the spec: the file, the 1-based line in the new text, the
    field's path in its document, the value written (None for a key removed) and which part of
    the plan field it is (`label zone`; "" for all of it)."""

    drifted: DriftedField
    path: str
    line: int
    field_path: YamlPath
    value: Any
    what: str = ""

    @property
    def spec_field(self) -> str:
        """The field as diagnostics write it: `spec.members[3].labels.zone`."""
        return show_path(self.field_path)


@dataclasses.dataclass(frozen=True, slots=True)
class NotAdopted:
    """A drifted value no spec edit expresses, and the one-line reason a drift PR lists."""

    drifted: DriftedField
    reason: str
    what: str = ""


@dataclasses.dataclass(frozen=True)
class SpecEdits:
    """What adopting drift changes: the new text of each changed file (paths as the snapshot
    names them, relative to the fleet repo), what was written where, and what was not."""

    files: dict[str, str]
    adopted: tuple[AdoptedField, ...]
    not_adopted: tuple[NotAdopted, ...]


def drifted_fields(plan: Plan, findings: Collection[Finding] = (Finding.DRIFT,)) -> list[DriftedField]:
    """The drifted fields of a plan's entries with one of `findings`, each with its live value:
    a drift entry's `after`; an observe-only or unmanaged entry's `before`."""
    out: list[DriftedField] = []
    for entry in plan.entries:
        if entry.finding not in findings:
            continue
        live_is_before = entry.finding in (Finding.OBSERVE_ONLY, Finding.UNMANAGED)
        for diff in entry.fields:
            live = diff.before if live_is_before else diff.after
            out.append(DriftedField(entry.address, diff.field, live, entry.finding))
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class _Planned:
    drifted: DriftedField
    change: SpecChange
    loaded: LoadedDocument


def adopt_drift(
    snapshot: Snapshot,
    revision: LoadedRevision,
    drifted: Sequence[DriftedField],
    *,
    cache: SpecCache | None = None,
    workers: int = 1,
) -> SpecEdits:
    """The spec edits that give each drifted field its live value; see the module docstring.

    `revision` is `snapshot` loaded with its documents, and must be valid (a drift PR is built on
    a revision fleet acts on). `cache` and `workers` are the loader's, for loading the edited repo
    again (only the changed files are parsed when the cache knows the others)."""
    if revision.errors:
        raise InvalidRevision(
            revision, message=f"{revision.source} is invalid; drift is adopted only into a valid revision"
        )
    documents = {d.document.address: d for d in revision.documents if d.document.kind_name != "Fleet"}
    if sum(revision.counts.values()) > 1 and not documents:
        raise PermanentError(
            f"{revision.source} was loaded without its documents",
            hint="load the revision with documents=True to adopt drift into it",
        )
    planned: list[_Planned] = []
    refused: list[NotAdopted] = []
    for item in drifted:
        for outcome in _adoptions(item, documents):
            if isinstance(outcome, _Planned):
                planned.append(outcome)
            else:
                refused.append(outcome)
    planned = _model_checked(planned, refused)
    by_file = {f.path: f for f in snapshot.files}
    while True:  # each pass refuses at least one change, and no change at all is always valid
        files, adopted, failed = _write(snapshot, by_file, planned)
        refused.extend(failed)
        adopted_ids = {id(p) for p, _ in adopted}
        planned = [p for p in planned if id(p) in adopted_ids]
        errors = _new_errors(snapshot, files, cache, workers)
        if not errors:
            return SpecEdits(
                {path: text for path, text in sorted(files.items())},
                tuple(result for _, result in adopted),
                tuple(refused),
            )
        planned = _without_invalid(planned, errors, refused)


# --- from drifted fields to spec changes -------------------------------------------------------


def _adoptions(
    item: DriftedField, documents: Mapping[str, LoadedDocument]
) -> Iterator[_Planned | NotAdopted]:
    if item.finding is Finding.UNMANAGED:
        yield NotAdopted(
            item,
            "fleet did not make it and never touches it; to manage it, write a spec and add fleet's"
            " ownership to it by hand",
        )
        return
    loaded = documents.get(item.address)
    if loaded is None:
        yield NotAdopted(item, f"no spec in the repo declares {item.address}; write one by hand to adopt it")
        return
    if _named_like_a_secret(item.field):
        yield NotAdopted(
            item, "the field is named like a credential: secrets are never written into the fleet repo"
        )
        return
    document = loaded.document
    if is_config_field(item.field) and isinstance(document, models.Machine | models.VirtualMachine):
        yield NotAdopted(item, CONFIG_NOT_ADOPTABLE)
        return
    for adoption in kind_of(document).adopt(document, item.field, item.live):
        if isinstance(adoption, Inexpressible):
            yield NotAdopted(item, adoption.reason, adoption.what)
        elif _secret_in(adoption):
            yield NotAdopted(
                item,
                f"{show_path(adoption.path)} is named like a credential or holds a private key: secrets are"
                " never written into the fleet repo",
                adoption.what,
            )
        else:
            yield _Planned(item, adoption, loaded)


def _named_like_a_secret(field: str) -> bool:
    return any(is_secret_key(word) for word in _FIELD_WORDS.split(field) if word)


def _secret_in(change: SpecChange) -> bool:
    if any(isinstance(part, str) and _named_like_a_secret(part) for part in change.path):
        return True
    name = str(change.path[-1]) if change.path else "value"
    return change.value is not REMOVE and any(find_literal_secrets({name: change.value}))


def _model_checked(planned: list[_Planned], refused: list[NotAdopted]) -> list[_Planned]:
    """Changes whose documents still satisfy their model: one by one, then together."""
    kept: list[_Planned] = []
    for item in planned:
        problem = _model_problem(item.loaded.document, [item.change])
        if problem is None:
            kept.append(item)
        else:
            refused.append(NotAdopted(item.drifted, problem, item.change.what))
    by_document: dict[str, list[_Planned]] = {}
    for item in kept:
        by_document.setdefault(item.loaded.document.address, []).append(item)
    out: list[_Planned] = []
    for items in by_document.values():
        problem = _model_problem(items[0].loaded.document, [i.change for i in items])
        if problem is None:
            out.extend(items)
        else:
            refused.extend(
                NotAdopted(i.drifted, f"together with the other drifted fields: {problem}") for i in items
            )
    return out


def _model_problem(document: models.Document, changes: Sequence[SpecChange]) -> str | None:
    data: Any = document.model_dump(mode="json", by_alias=True)
    for change in changes:
        target = data
        for part in change.path[:-1]:
            target = target[part]
        if change.value is REMOVE:
            target.pop(change.path[-1], None)
        else:
            target[change.path[-1]] = change.value
    try:
        type(document).model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = show_path(tuple(p for p in first["loc"] if isinstance(p, str | int)))
        return f"the spec cannot hold the live value: {where}: {first['msg']}"
    return None


def _siblings(document: models.Document, path: YamlPath) -> tuple[str, ...]:
    """The keys of the mapping a change writes into, in the order its model declares them."""
    parent: Any = document
    for part in path[:-1]:
        if isinstance(parent, BaseModel) and isinstance(part, str):
            parent = getattr(parent, part, None)
        elif isinstance(parent, Mapping):
            parent = parent.get(part)
        elif isinstance(parent, list) and isinstance(part, int) and 0 <= part < len(parent):
            parent = parent[part]
        else:
            return ()
    if isinstance(parent, BaseModel):
        return tuple(field.alias or name for name, field in type(parent).model_fields.items())
    return ()


# --- writing the files -------------------------------------------------------------------------


def _write(
    snapshot: Snapshot, by_file: Mapping[str, SourceFile], planned: Sequence[_Planned]
) -> tuple[dict[str, str], list[tuple[_Planned, AdoptedField]], list[NotAdopted]]:
    """Each file's new text, the changes written (with their lines) and those refused."""
    grouped: dict[str, list[_Planned]] = {}
    for item in planned:
        grouped.setdefault(item.loaded.path, []).append(item)
    files: dict[str, str] = {}
    adopted: list[tuple[_Planned, AdoptedField]] = []
    refused: list[NotAdopted] = []
    for path, items in sorted(grouped.items()):
        entry = by_file.get(path)
        if entry is None:
            refused.extend(
                NotAdopted(i.drifted, f"{path} is not a file of {snapshot.description}") for i in items
            )
            continue
        data = snapshot.read(entry)
        text, problems = decode(path, data, Limits(max_file_bytes=max(len(data), 1)))
        if text is None:
            reason = f"{path} cannot be read: {problems[0].message}" if problems else f"{path} cannot be read"
            refused.extend(NotAdopted(i.drifted, reason) for i in items)
            continue
        unique, same, conflicts = _distinct(items)
        refused.extend(conflicts)
        edited = edit_spec_text(
            path,
            text,
            [
                FieldEdit(
                    i.loaded.index,
                    i.change.path,
                    i.change.value,
                    i.change.quantity,
                    _siblings(i.loaded.document, i.change.path),
                )
                for i in unique
            ],
        )
        adopted.extend(_results(path, unique, same, edited, refused))
        # A live value the spec already holds (`262144Mi` where it says `256Gi`) changes nothing.
        if edited.text != text:
            files[path] = (_BOM if data.startswith(_BOM.encode()) else "") + edited.text
    return files, adopted, refused


def _distinct(items: list[_Planned]) -> tuple[list[_Planned], list[tuple[_Planned, int]], list[NotAdopted]]:
    """The changes of one file once each. Two drifted fields writing the same value to the same
    place are one edit (the second is returned with the position of the first); two writing
    different values there are both refused."""
    first: dict[tuple[int, YamlPath], _Planned] = {}
    repeats: list[tuple[_Planned, _Planned]] = []
    clashing: set[tuple[int, YamlPath]] = set()
    for item in items:
        key = (item.loaded.index, item.change.path)
        other = first.setdefault(key, item)
        if other is item:
            continue
        if type(other.change.value) is type(item.change.value) and other.change.value == item.change.value:
            repeats.append((item, other))
        else:
            clashing.add(key)
    conflicts = [
        NotAdopted(
            i.drifted, "two drifted fields ask for different values here; edit it by hand", i.change.what
        )
        for i in items
        if (i.loaded.index, i.change.path) in clashing
    ]
    unique = [i for key, i in first.items() if key not in clashing]
    position = {id(item): number for number, item in enumerate(unique)}
    same = [(item, position[id(other)]) for item, other in repeats if id(other) in position]
    return unique, same, conflicts


def _results(
    path: str,
    unique: list[_Planned],
    same: list[tuple[_Planned, int]],
    edited: EditedText,
    refused: list[NotAdopted],
) -> Iterator[tuple[_Planned, AdoptedField]]:
    for number, item in enumerate(unique):
        if number in edited.refused:
            refused.append(NotAdopted(item.drifted, edited.refused[number], item.change.what))
        else:
            yield item, _adopted(path, item, edited.lines[number])
    for item, number in same:
        if number in edited.refused:
            refused.append(NotAdopted(item.drifted, edited.refused[number], item.change.what))
        else:
            yield item, _adopted(path, item, edited.lines[number])


def _adopted(path: str, item: _Planned, line: int) -> AdoptedField:
    change = item.change
    value = None if change.value is REMOVE else change.value
    return AdoptedField(item.drifted, path, line, change.path, value, change.what)


# --- loading the edited repo again -------------------------------------------------------------


def _new_errors(
    snapshot: Snapshot, files: Mapping[str, str], cache: SpecCache | None, workers: int
) -> list[Diagnostic]:
    """The errors of the repo with `files` replaced (none when nothing changed)."""
    if not files:
        return []
    contents = {path: text.encode("utf-8") for path, text in files.items()}
    entries = tuple(
        dataclasses.replace(f, blob_id=git_blob_id(contents[f.path]), size=len(contents[f.path]))
        if f.path in contents
        else f
        for f in snapshot.files
    )
    originals = {f.path: f for f in snapshot.files}

    def read(entry: SourceFile) -> bytes:
        if entry.path in contents:
            return contents[entry.path]
        return snapshot.read(originals[entry.path])

    edited = Snapshot(f"{snapshot.description} with drift adopted", entries, snapshot.problems, read)
    return load_revision(edited, cache, workers, documents=False).errors


def _without_invalid(
    planned: list[_Planned], errors: Sequence[Diagnostic], refused: list[NotAdopted]
) -> list[_Planned]:
    """Refuse the changes of the documents (or else the files) the errors name."""
    by_address = {e.address: e for e in reversed(errors) if e.address}
    by_path = {e.path: e for e in reversed(errors)}
    kept: list[_Planned] = []
    for item in planned:
        error = by_address.get(item.loaded.document.address)
        if error is None and not by_address:
            error = by_path.get(item.loaded.path)
        if error is None:
            kept.append(item)
            continue
        refused.append(
            NotAdopted(
                item.drifted,
                f"the edited repo would not validate: {error.path}:{error.line}:{error.col}: {error.message}",
                item.change.what,
            )
        )
    if len(kept) == len(planned):  # errors nobody's change explains: refuse them all, write nothing
        first = errors[0]
        reason = f"the edited repo would not validate: {first.path}:{first.line}:{first.col}: {first.message}"
        refused.extend(NotAdopted(i.drifted, reason, i.change.what) for i in planned)
        return []
    return kept
