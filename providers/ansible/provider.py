"""The Ansible provider: a Machine's or VirtualMachine's `spec.config` as observed, enforced state.

`observe` runs the spec's playbooks and roles in check mode with diffs, one ansible-runner run per
distinct set of playbooks and roles (all hosts of a set at once), and reports per host the tasks
that would change it, the tasks that failed and the tasks check mode could not evaluate. A host is
in sync only when there is nothing of the three: a task Ansible could not verify is never taken
for one that holds. `apply` runs the playbooks for real on the change's host, and `apply_many`
on several hosts with one run limited to them; Ansible's own idempotence makes a repeated apply
harmless. Secrets named by `credentialsRef` host variables are
read at the moment of the run and never appear in an observation, a message or a file left behind.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from providers.access import Access
from providers.ansible.inventory import Inventory, build_inventory, credential_vars, host_names, select_hosts
from providers.ansible.runner import HostReport, RunResult, RunSettings, run_playbooks
from providers.base import (
    Action,
    ApplyResult,
    Change,
    Observation,
    Observed,
    RevisionInputs,
    UnknownReason,
    apply_result,
)
from providers.credentials import Secret
from reconciler.errors import FleetError, PermanentError, TemporaryError
from reconciler.spec import models

Configured = models.Machine | models.VirtualMachine


def config_fields(report: HostReport) -> dict[str, Any]:
    """The observed fields of one host, the contract with the engine's plan.

    {"config": {"changes": [{task, module, diff}], "failed": [{task, module, message}],
    "notVerifiable": [{task, module, why}], "coverage": {"verified": n, "total": m}, "inSync": bool}}.
    `changes` are tasks check mode says would change the host, `diff` their unified diff
    ("(no_log)" for tasks that hide their output). `notVerifiable` are tasks check mode could not
    evaluate: skipped for check mode, modules without check-mode support, ignored errors, and
    skips whose reason no_log hides; a task skipped because its `when` was false counts as
    verified. `coverage` counts the task results the host got (tasks after a failure never run).
    `inSync` holds only when there are no changes, no failures and nothing not verifiable.
    """
    return {
        "config": {
            "changes": [{"task": c.task, "module": c.module, "diff": c.diff} for c in report.changes],
            "failed": [{"task": f.task, "module": f.module, "message": f.message} for f in report.failed],
            "notVerifiable": [
                {"task": u.task, "module": u.module, "why": u.why} for u in report.not_verifiable
            ],
            "coverage": {"verified": report.verified, "total": report.total},
            "inSync": report.in_sync,
        }
    }


class _NotRunnable(PermanentError):
    """A host fleet cannot even try to configure (no config, no address, no credentials)."""

    def __init__(self, message: str, reason: UnknownReason, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class _Target:
    document: Configured
    host: str
    config: models.AnsibleConfig
    secrets: dict[str, Secret]

    @property
    def playbook_set(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return tuple(self.config.playbooks), tuple(self.config.roles)


class _Progress:
    """The tasks an apply already changed, for the message when a later task fails."""

    def __init__(self) -> None:
        self.tasks: list[str] = []

    @property
    def changed(self) -> bool:
        return bool(self.tasks)

    def failed(self, message: str) -> str:
        if not self.tasks:
            return message
        return f"{message}; changed before that: {', '.join(self.tasks)}"


class AnsibleProvider:
    """Operating-system configuration of Machines and VirtualMachines with Ansible.

    The revision's `playbook_root` is a directory holding the fleet repo's files at the planned
    revision (the engine exports it from Git); `spec.config.playbooks` and path-like roles are
    relative to it. The revision's `trusted_vars`, when given, names the host variables Ansible
    may render as templates; every other one is handed to it as data (`!unsafe`). The endpoint
    map's `ansible_hosts` maps an inventory host name to host variables that beat the specs (a
    lab's {"ansible_connection": "local"}, or ssh host, port, user and key). Thread-safe: no state
    is kept between calls.
    """

    kind: ClassVar[str] = "AnsibleConfig"

    def __init__(
        self,
        access: Access,
        *,
        settings: RunSettings | None = None,
        artifacts_dir: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.access = access
        self.connection_overrides = {h: dict(v) for h, v in access.endpoints.ansible_hosts.items()}
        self.settings = settings or RunSettings()
        self.artifacts_dir = artifacts_dir
        self._clock = clock

    # --- targets ------------------------------------------------------------------------

    @staticmethod
    def _documents(specs: Iterable[models.Document], inputs: RevisionInputs) -> dict[str, models.Document]:
        documents = dict(inputs.documents)
        documents.update({spec.address: spec for spec in specs})
        return documents

    def _inventory(self, documents: Mapping[str, models.Document], inputs: RevisionInputs) -> Inventory:
        return build_inventory(
            documents.values(),
            inputs.fleet,
            connection_overrides=self.connection_overrides,
            trusted_vars=inputs.trusted_vars,
        )

    def _target(
        self, spec: models.Document, names: Mapping[str, str], inventory: Inventory, inputs: RevisionInputs
    ) -> _Target:
        if not isinstance(spec, Configured):
            raise _NotRunnable(
                f"{spec.address}: the Ansible provider configures Machines and VirtualMachines",
                UnknownReason.NOT_ATTEMPTED,
            )
        config = spec.spec.config
        if config is None:
            raise _NotRunnable(
                f"{spec.address} has no spec.config: fleet does not configure its operating system",
                UnknownReason.NOT_ATTEMPTED,
            )
        if inputs.playbook_root is None:
            raise _NotRunnable(
                "no playbook directory was given to the Ansible provider",
                UnknownReason.NOT_ATTEMPTED,
                hint="pass the fleet repo exported at the planned revision as playbook_root",
            )
        host = names[spec.address]
        hostvars = inventory["_meta"]["hostvars"][host]
        if "ansible_host" not in hostvars and hostvars.get("ansible_connection") != "local":
            raise _NotRunnable(
                f"{spec.address} has no spec.address, so Ansible cannot reach it",
                UnknownReason.NOT_ATTEMPTED,
                hint="set spec.address to the operating system's management address",
            )
        secrets: dict[str, Secret] = {}
        try:
            refs = credential_vars(config)
        except ValueError as exc:
            raise _NotRunnable(f"{spec.address}: {exc}", UnknownReason.CREDENTIALS_MISSING) from None
        for name, ref in sorted(refs.items()):
            try:
                secrets[name] = self.access.credentials.secret(ref, inputs)
            except FleetError as exc:  # a Secret's API server may be down too
                raise _NotRunnable(
                    f"{spec.address}: spec.config.vars.{name}: {exc.message}",
                    UnknownReason.CREDENTIALS_MISSING,
                    hint=exc.hint,
                ) from None
        return _Target(spec, host, config, secrets)

    def _run(
        self,
        targets: Sequence[_Target],
        inventory: Inventory,
        inputs: RevisionInputs,
        *,
        check: bool,
        settings: RunSettings | None = None,
    ) -> RunResult:
        assert inputs.playbook_root is not None
        playbooks, roles = targets[0].playbook_set
        inline_env = [
            ref.env
            for t in targets
            for ref in credential_vars(t.config).values()
            if isinstance(ref, models.CredentialSource) and ref.env is not None
        ]
        return run_playbooks(
            playbook_root=inputs.playbook_root,
            playbooks=playbooks,
            roles=roles,
            inventory=select_hosts(inventory, [t.host for t in targets]),
            secret_vars={t.host: t.secrets for t in targets},
            check=check,
            settings=settings or self.settings,
            # Environment variables credentials are read from never reach Ansible's environment.
            drop_env=[*self.access.credentials.environment_names(inputs.fleet), *inline_env],
            clock=self._clock,
        )

    # --- observe ------------------------------------------------------------------------

    def observe(self, specs: Sequence[models.Document], inputs: RevisionInputs) -> Observed:
        documents = self._documents(specs, inputs)
        inventory = self._inventory(documents, inputs)
        names = host_names(documents.values())
        results: list[Observation] = []
        groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[_Target]] = defaultdict(list)
        for spec in specs:
            try:
                target = self._target(spec, names, inventory, inputs)
            except _NotRunnable as exc:
                results.append(Observation.unknown(spec.address, exc.reason, str(exc)))
                continue
            groups[target.playbook_set].append(target)
        for _, targets in sorted(groups.items()):
            try:
                run = self._run(targets, inventory, inputs, check=True)
            except PermanentError as exc:
                results.extend(
                    Observation.unknown(t.document.address, UnknownReason.NOT_ATTEMPTED, str(exc))
                    for t in targets
                )
                continue
            results.extend(self._observation(t, run) for t in targets)
        return Observed(tuple(results))

    @staticmethod
    def _observation(target: _Target, run: RunResult) -> Observation:
        address = target.document.address
        report = run.report(target.host)
        if report is None:
            if run.status == "timeout":
                return Observation.unknown(address, UnknownReason.TIMEOUT, run.error)
            detail = (
                run.error or f"ansible-playbook ended ({run.status}, rc {run.rc}) before reaching the host"
            )
            return Observation.unknown(address, UnknownReason.NOT_ATTEMPTED, detail)
        if report.unreachable is not None:
            return Observation.unknown(address, UnknownReason.UNREACHABLE, report.unreachable)
        if run.status == "timeout":
            return Observation.unknown(address, UnknownReason.TIMEOUT, run.error)
        warnings = []
        if report.total == 0:
            warnings.append("no task of spec.config ran on this host: do its plays target it?")
        return Observation.observed(address, config_fields(report), warnings=warnings)

    # --- apply --------------------------------------------------------------------------

    def apply(self, change: Change, inputs: RevisionInputs) -> ApplyResult:
        (result,) = self.apply_many([change], inputs)
        if isinstance(result, TemporaryError):
            raise result
        return result

    def apply_many(
        self, changes: Sequence[Change], inputs: RevisionInputs
    ) -> list[ApplyResult | TemporaryError]:
        """Configure several hosts with one ansible-playbook run per set of playbooks (`--limit`ed
        to these hosts, `forks` at a time) instead of a process per host. One result per change,
        in order: an ApplyResult, or the TemporaryError (unreachable, timed out) to retry it with."""
        results: dict[int, ApplyResult | TemporaryError] = {}
        groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[tuple[int, _Target]]] = defaultdict(list)
        # One inventory (of the whole fleet, for its groups) serves every change and every run.
        documents = self._documents((c.desired for c in changes if c.desired is not None), inputs)
        inventory = self._inventory(documents, inputs)
        names = host_names(documents.values())
        for index, change in enumerate(changes):
            try:
                target = self._apply_target(change, names, inventory, inputs)
            except PermanentError as exc:
                results[index] = ApplyResult(change.address, change.action, False, False, str(exc))
                continue
            groups[target.playbook_set].append((index, target))
        for _, members in sorted(groups.items()):
            started = self._clock()
            try:
                run: RunResult | PermanentError = self._apply_run([t for _, t in members], inventory, inputs)
            except PermanentError as exc:
                run = exc
            for index, target in members:
                change = changes[index]
                progress = _Progress()
                try:
                    result = apply_result(
                        change,
                        progress,
                        self._clock,
                        functools.partial(self._outcome, change, target, run, progress),
                    )
                except TemporaryError as exc:
                    results[index] = exc
                    continue
                results[index] = dataclasses.replace(result, seconds=self._clock() - started)
        return [results[i] for i in range(len(changes))]

    def _apply_target(
        self, change: Change, names: Mapping[str, str], inventory: Inventory, inputs: RevisionInputs
    ) -> _Target:
        if change.action is not Action.CONFIGURE:
            raise PermanentError(
                f"{change.address}: the Ansible provider only configures hosts, it cannot {change.action}"
            )
        if change.desired is None:
            raise PermanentError(f"{change.address}: no desired spec to configure the host from")
        try:
            return self._target(change.desired, names, inventory, inputs)
        except _NotRunnable as exc:
            raise PermanentError(exc.message, hint=exc.hint) from None

    @staticmethod
    def _outcome(
        change: Change, target: _Target, run: RunResult | PermanentError, progress: _Progress
    ) -> tuple[bool, str]:
        """What the run did to one host: (changed, message), or the error it ended in."""
        if isinstance(run, PermanentError):
            raise run
        where = f" (artifacts: {run.artifacts})" if run.artifacts is not None else ""
        report = run.report(target.host)
        if report is not None:
            progress.tasks.extend(c.task for c in report.changes)
        if report is not None and report.unreachable is not None:
            raise TemporaryError(f"{change.address} is unreachable: {report.unreachable}", delay=30.0)
        if report is not None and report.failed:
            first = report.failed[0]
            more = f" (and {len(report.failed) - 1} more failed tasks)" if len(report.failed) > 1 else ""
            raise PermanentError(f"task {first.task!r} ({first.module}) failed: {first.message}{more}{where}")
        if run.status == "timeout":
            raise TemporaryError(f"{change.address}: {run.error}", delay=60.0)
        if report is None:
            raise PermanentError(
                f"{change.address}: {run.error or f'ansible-playbook ended ({run.status}, rc {run.rc})'}"
            )
        if report.total == 0:
            return False, f"no task of spec.config ran on this host: do its plays target it?{where}"
        if not report.changes:
            return False, f"no task changed anything ({report.total} tasks ran){where}"
        return (
            True,
            f"changed {len(report.changes)} of {report.total} tasks: {', '.join(progress.tasks)}{where}",
        )

    def _apply_run(
        self, targets: Sequence[_Target], inventory: Inventory, inputs: RevisionInputs
    ) -> RunResult:
        """One real run for every host of a batch. Its artifacts (events and output, secrets
        masked) are kept where the store's record of each action says."""
        kept = (
            dataclasses.replace(self.settings, keep_artifacts=True, temp_dir=self.artifacts_dir)
            if self.artifacts_dir is not None
            else None
        )
        return self._run(targets, inventory, inputs, check=False, settings=kept)

    def close(self) -> None:
        """Nothing to release: every run has its own process and directory."""

    def __enter__(self) -> AnsibleProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
