"""The operating-system configuration of Machines and VirtualMachines (`spec.config`): an
aspect of those kinds, observed by Ansible's check mode and applied by the `configure` action.

The Ansible provider reports per host the tasks that would change it (with their diffs), the
tasks that failed in check mode, and the tasks check mode could not evaluate. A host with
changes or failures is planned as `configure`. Tasks that could not be verified are reported as
`not-verifiable`, never as in sync. Drift is a change under a configuration fleet already
applied: the same spec and the same playbook and role files (the configuration's version), yet
check mode finds work to do, so something changed on the host behind fleet's back.

Pure functions over values: the version of a configuration is computed from the digests of the
directories it reads, which the engine takes of the files at the planned revision. A plan of a
revision fleet does not trust yet (a pull request) compares each configuration with the base
revision's (`compare_with_base`): what may be evaluated with the base revision's playbooks, and
which of its variables Ansible must take as data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from providers.base import Action, Observation, ObservationState
from reconciler.kinds import kind_of
from reconciler.plan.findings import KindDiff, enforcement_mode, index_observations, unknown_entry
from reconciler.plan.model import FieldDiff, Finding, ObservedState, PlanEntry
from reconciler.spec import models

Configured = models.Machine | models.VirtualMachine

VERSION_FIELD = "config.version"
"""The plan field that carries a configuration's version when it changes (recorded as applied)."""

CONFIG_NOT_ADOPTABLE = (
    "configuration drift is a change on the host itself (files, packages, services); adopt it by"
    " changing the playbooks, roles or spec.config.vars by hand"
)
"""Why no spec edit adopts a configuration finding (`config`, `config/TASK`, `config.version`)."""


def is_config_field(field: str) -> bool:
    """Whether a plan field is one of the configuration's rather than the resource's own."""
    return field in ("config", VERSION_FIELD) or field.startswith("config/")


_MAX_DIFF_LINES = 30  # per task: a new file's whole content is its diff
_MAX_DETAIL_LINES = 200


def configured(documents: Iterable[models.Document]) -> list[Configured]:
    """The Machines and VirtualMachines whose operating system fleet configures."""
    return [d for d in documents if isinstance(d, Configured) and d.spec.config is not None]


def config_directories(config: models.AnsibleConfig) -> list[str]:
    """The repo directories a run of `config` reads ("" is the whole repo): `roles/`, the
    directory of each playbook (with the roles beside it) and every role given as a path."""
    return sorted(
        {"roles", *(posixpath.dirname(p) for p in config.playbooks), *(r for r in config.roles if "/" in r)}
    )


def config_version(config: models.AnsibleConfig, digests: Mapping[str, str]) -> str:
    """A short hash of the configuration: the spec's `config` and the digest of every directory
    of its `config_directories` (`digests`, by directory, taken of the files at the revision).

    Equal versions mean a run would be given exactly the same input, so check-mode changes under
    an applied version are drift, and under a new version they are the change itself.
    """
    digest = hashlib.sha256(json.dumps(config.model_dump(mode="json"), sort_keys=True).encode())
    for directory in config_directories(config):
        digest.update(f"{directory}\0{digests[directory]}\0".encode())
    return "sha256:" + digest.hexdigest()[:16]


CONNECTION_VAR_PREFIX = "ansible_"
"""Host variables that say how Ansible reaches and runs on a host (`ansible_host`, `ansible_port`,
`ansible_ssh_common_args`, `ansible_python_interpreter`, `ansible_become_exe`, ...): commands and
addresses, not data."""


@dataclasses.dataclass(frozen=True)
class BaseComparison:
    """A configuration of an untrusted revision against the same resource's at the base revision.

    `deferred` says why it must not be evaluated before the revision is trusted (None: it may be,
    with the base revision's playbooks). `trusted_vars` are the variables equal to the base
    revision's, which Ansible may render as templates as it does at the base revision; `unsafe_vars`
    are the other variables, which it must take as data (`!unsafe`)."""

    deferred: str | None
    trusted_vars: frozenset[str] = frozenset()
    unsafe_vars: tuple[str, ...] = ()


def compare_with_base(document: Configured, base: models.Document | None) -> BaseComparison:
    """Compare `document` (with `spec.config`, of an untrusted revision) with the document of the
    same address at the base revision (None: it has none).

    A configuration is deferred when evaluating it would hand the revision's author more than
    data: a host the base revision does not configure, or another `spec.address` (fleet would log
    in where the author says), changed connection variables (`ansible_*`: ProxyCommand, the
    interpreter, become commands all run commands, some on the controller), changed secret
    variables (they would read a credential the base revision never hands to this host). Every
    other variable that differs from the base revision is unsafe: Ansible gets it, but never as a
    template. Only variables that differ are, so that trusted templates still render as at the
    base revision and the plan shows the drift of what is already trusted, not noise; a trusted
    template that refers to an unsafe variable gets its value as data, never rendered further.
    """
    config = document.spec.config
    assert config is not None
    if not isinstance(base, Configured) or base.kind_name != document.kind_name or base.spec.config is None:
        return BaseComparison("it is not configured at the base revision")
    if document.spec.address != base.spec.address:
        return BaseComparison("the pull request changes its spec.address")
    before = base.spec.config.vars
    differ = sorted(
        name
        for name in {*config.vars, *before}
        if name not in config.vars or name not in before or not _same(config.vars[name], before[name])
    )
    connection = [name for name in differ if name.startswith(CONNECTION_VAR_PREFIX)]
    if connection:
        return BaseComparison(f"the pull request changes its connection variables {', '.join(connection)}")
    secrets = [name for name in differ if _is_secret(config.vars.get(name)) or _is_secret(before.get(name))]
    if secrets:
        return BaseComparison(f"the pull request changes its secret variables {', '.join(secrets)}")
    return BaseComparison(
        None,
        frozenset(name for name in config.vars if name not in differ),
        tuple(name for name in differ if name in config.vars),
    )


def _is_secret(value: Any) -> bool:
    return isinstance(value, Mapping) and "credentialsRef" in value


def _same(a: Any, b: Any) -> bool:
    """Equal values of equal types, mappings in the same order (1 is not true, nor 1.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, Mapping):
        return len(a) == len(b) and all(
            type(ka) is type(kb) and ka == kb and _same(va, vb)
            for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True)
        )
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def applied_config(entry: PlanEntry) -> dict[str, Any]:
    """What a `configure` entry applied: the configuration's version, when it changed (a
    repaired drift keeps the one applied)."""
    versions = [f.after for f in entry.fields if f.field == VERSION_FIELD]
    return {"config": versions[0]} if versions else {}


def converged_config(live: Mapping[str, Any]) -> dict[str, Any]:
    """A configuration check mode fully verified as in sync counts as applied at its version."""
    config = live.get("config", {})
    if config.get("inSync") and not config.get("notVerifiable") and config.get("version"):
        return {"config": config["version"]}
    return {}


def observed_config(observation: Observation, version: str) -> ObservedState:
    """What a plan rests on for one host's configuration: counts, coverage and version (the
    task names and diffs are in the entries)."""
    if observation.state is not ObservationState.OBSERVED:
        return ObservedState(observation.address, observation.state)
    config = observation.fields.get("config", {})
    summary = {
        "version": version,
        "inSync": bool(config.get("inSync")),
        "changes": len(config.get("changes", ())),
        "failed": len(config.get("failed", ())),
        "notVerifiable": len(config.get("notVerifiable", ())),
        "coverage": config.get("coverage", {"verified": 0, "total": 0}),
    }
    return ObservedState(observation.address, observation.state, (("config", summary),))


def diff_config(
    documents: Sequence[Configured],
    observations: Iterable[Observation],
    versions: Mapping[str, str],
    applied: Mapping[str, Mapping[str, Any]],
    policies: models.Policies,
    machines: Mapping[str, models.Machine],
    *,
    drift_first_seen: Mapping[tuple[str, str], datetime] | None = None,
) -> KindDiff:
    """Entries for the configuration of every document given (all have `spec.config`).

    `versions` maps an address to its configuration's version at the planned revision,
    `applied` to the fields fleet last applied there (its `config` is the version applied).
    """
    by_address = index_observations(observations)
    first_seen = drift_first_seen or {}
    entries: list[PlanEntry] = []
    observed: list[ObservedState] = []
    for document in documents:
        address = document.address
        observation = by_address.get(address)
        version = versions[address]
        if observation is not None:
            observed.append(observed_config(observation, version))
        if observation is None or observation.state is not ObservationState.OBSERVED:
            entry = unknown_entry(address, document.kind_name, observation)
            entries.append(
                PlanEntry(
                    address,
                    entry.kind,
                    Finding.UNKNOWN,
                    fields=(FieldDiff("config", None, None),),
                    reason=f"config-{entry.reason}",
                    detail=f"the configuration could not be checked: {entry.detail}",
                )
            )
            continue
        entries.extend(
            _entries(
                document,
                observation,
                version,
                applied.get(address, {}).get("config"),
                enforcement_mode(policies, "config", kind_of(document).site(document, machines)) == "enforce",
                first_seen,
            )
        )
    return KindDiff(tuple(entries), tuple(observed))


def _entries(
    document: Configured,
    observation: Observation,
    version: str,
    applied_version: Any,
    enforced: bool,
    first_seen: Mapping[tuple[str, str], datetime],
) -> list[PlanEntry]:
    address, kind = document.address, document.kind_name
    config = observation.fields.get("config", {})
    changes = list(config.get("changes", ()))
    changed_tasks = _unique(changes)
    failed = list(config.get("failed", ()))
    unverified = list(config.get("notVerifiable", ()))
    coverage = config.get("coverage", {})
    entries: list[PlanEntry] = []
    if unverified:
        entries.append(
            PlanEntry(
                address,
                kind,
                Finding.NOT_VERIFIABLE,
                fields=tuple(FieldDiff(f"config/{u['task']}", None, u["why"]) for u in _unique(unverified)),
                reason="check-mode",
                detail=f"check mode verified {coverage.get('verified', 0)} of {coverage.get('total', 0)} "
                "tasks; the others are neither in sync nor drifted",
            )
        )
    if not changes and not failed:
        return entries
    fields = [FieldDiff(f"config/{c['task']}", "differs", "as specified") for c in changed_tasks]
    fields.extend(
        FieldDiff(f"config/{f['task']}", "failed in check mode", f["message"]) for f in _unique(failed)
    )
    detail = _detail(changes, failed)
    if applied_version == version and changes:
        # The same configuration was applied, yet a run would change the host: edited behind fleet's back.
        entries.extend(
            PlanEntry(
                address,
                kind,
                Finding.DRIFT,
                fields=(FieldDiff(f"config/{c['task']}", "as applied", "changed"),),
                reason="out-of-band",
                detail="changed on the host since fleet applied its configuration",
                first_seen=first_seen.get((address, f"config/{c['task']}"), observation.observed_at),
            )
            for c in changed_tasks
        )
    if applied_version != version:
        fields.insert(0, FieldDiff(VERSION_FIELD, applied_version, version))
    if enforced:
        entries.append(
            PlanEntry(address, kind, Finding.CHANGE, Action.CONFIGURE, tuple(fields), detail=detail)
        )
    else:
        entries.append(
            PlanEntry(
                address,
                kind,
                Finding.OBSERVE_ONLY,
                fields=tuple(fields),
                reason="policy=observe",
                detail="the enforcement policy only observes config here; " + detail,
            )
        )
    return entries


def _unique(items: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """One item per task name (a task looping over items reports once per item)."""
    seen: dict[str, Mapping[str, Any]] = {}
    for item in items:
        seen.setdefault(str(item["task"]), item)
    return list(seen.values())


def _detail(changes: Sequence[Mapping[str, Any]], failed: Sequence[Mapping[str, Any]]) -> str:
    """The diffs of the tasks that would change the host, and why tasks failed, for reviewers."""
    lines: list[str] = []
    for change in changes:
        lines.append(f"{change['task']} ({change['module']}) would change:")
        diff = str(change.get("diff") or "(no diff)").splitlines()
        lines.extend(f"  {line}" for line in diff[:_MAX_DIFF_LINES])
        if len(diff) > _MAX_DIFF_LINES:
            lines.append(f"  ... {len(diff) - _MAX_DIFF_LINES} more lines of this diff")
    for failure in failed:
        lines.append(f"{failure['task']} ({failure['module']}) failed in check mode: {failure['message']}")
    if len(lines) > _MAX_DETAIL_LINES:
        lines = [*lines[:_MAX_DETAIL_LINES], f"... {len(lines) - _MAX_DETAIL_LINES} more lines"]
    return "\n".join(lines)
