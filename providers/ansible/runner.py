"""Run one set of playbooks and roles with ansible-runner, and read what it did to each host.

Every run gets a fresh private data directory (nothing is carried over from an earlier run), its
own HOME and temporary directories, and an environment reduced to what Ansible needs, so the
reconciler's own environment (which holds credentials) never reaches Ansible or its artifacts.
Secret host variables reach Ansible only through a 0600 host_vars file that is deleted when the
run ends; every text read back from Ansible has the secret values masked. In check mode a task
Ansible could not really evaluate is reported as not verifiable, never as in sync. Names taken
from the specs (playbook paths, roles) are never rendered as templates by Ansible.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ansible_runner  # type: ignore[import-untyped]

from providers.ansible.inventory import Inventory, to_yaml_inventory
from providers.ansible.unsafe import Unsafe, dump_yaml
from providers.credentials import Secret
from reconciler.errors import PermanentError

MASK = "********"
NO_LOG = "(no_log)"
MAX_DIFF_CHARS = 16_000
MAX_MESSAGE_CHARS = 2_000

# What ansible-playbook needs from the reconciler's environment; everything else stays behind.
_PASSED_THROUGH = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "USER", "LOGNAME", "SSH_AUTH_SOCK")
_STATUS_LINE = re.compile(r"^(ok|changed|skipping): \[[^\]]*\](?: => (?P<result>\{.*\}))?\s*$")
_CHECK_MODE = re.compile(r"check[ _-]?mode", re.IGNORECASE)
_ERROR_LINE = re.compile(r"^\s*(\[ERROR\]:|ERROR!)")
_DEBUG_ACTIONS = frozenset({"debug", "ansible.builtin.debug", "ansible.legacy.debug"})


# --- results ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class TaskChange:
    """A task that changed the host (apply) or would have (check mode); `diff` is unified text."""

    task: str
    module: str
    diff: str


@dataclasses.dataclass(frozen=True, slots=True)
class TaskFailure:
    task: str
    module: str
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class Unverified:
    """A task check mode could not evaluate (skipped for check mode, unsupported, errors ignored)."""

    task: str
    module: str
    why: str


@dataclasses.dataclass(frozen=True)
class HostReport:
    """What one run did (or would do) on one host. `total` counts the task results the host got;
    `verified` those Ansible really evaluated (all of them outside check mode, unless failed)."""

    host: str
    changes: tuple[TaskChange, ...] = ()
    failed: tuple[TaskFailure, ...] = ()
    not_verifiable: tuple[Unverified, ...] = ()
    verified: int = 0
    total: int = 0
    unreachable: str | None = None

    @property
    def in_sync(self) -> bool:
        return not (self.changes or self.failed or self.not_verifiable or self.unreachable)


@dataclasses.dataclass(frozen=True)
class RunResult:
    """`status` is ansible-runner's (successful, failed, timeout, canceled, error); `error` says why
    Ansible stopped before or outside any task (a playbook that does not parse, say)."""

    status: str
    rc: int | None
    hosts: Mapping[str, HostReport]
    error: str
    seconds: float
    artifacts: Path | None = None

    def report(self, host: str) -> HostReport | None:
        """The host's report; None when the run stopped before it got any task result. A run that
        ended well but ran no task on the host (no play targets it) reports it with no tasks."""
        report = self.hosts.get(host)
        if report is not None and (report.total or report.unreachable is not None):
            return report
        if self.status == "successful":
            return report or HostReport(host)
        return None


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """How runs are made: parallel hosts, deadline, where private directories go, what to keep."""

    forks: int = 10
    timeout_seconds: float = 1800.0
    temp_dir: Path | None = None
    keep_artifacts: bool = False
    host_key_checking: bool = True


# --- masking ---------------------------------------------------------------------------


class Masker:
    """Replaces every secret value of a run in text (also as JSON escapes it), longest first."""

    def __init__(self, secrets: Sequence[Secret]) -> None:
        values = {s.reveal() for s in secrets if s.reveal()}
        forms = values | {json.dumps(v)[1:-1] for v in values}
        self._forms = sorted(forms, key=len, reverse=True)

    def text(self, value: str) -> str:
        for form in self._forms:
            value = value.replace(form, MASK)
        return value

    def file(self, path: Path) -> None:
        try:
            data = path.read_bytes()
        except OSError:
            return
        scrubbed = data
        for form in self._forms:
            scrubbed = scrubbed.replace(form.encode(), MASK.encode())
        if scrubbed != data:
            path.write_bytes(scrubbed)


# --- the event stream ------------------------------------------------------------------


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n... ({len(text) - limit} more characters)"


def _side(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return value.splitlines(keepends=True)
    return [line + "\n" for line in json.dumps(value, indent=2, sort_keys=True, default=str).splitlines()]


def render_diff(diff: Any) -> str:
    """Ansible's `diff` (a dict or a list of before/after dicts, or `prepared` text) as unified text."""
    entries = diff if isinstance(diff, list) else [diff]
    parts: list[str] = []
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        if "prepared" in entry:
            parts.append(str(entry["prepared"]).rstrip("\n") + "\n")
            continue
        if "before" not in entry and "after" not in entry:
            continue
        before, after = _side(entry.get("before")), _side(entry.get("after"))
        for lines in (before, after):
            if lines and not lines[-1].endswith("\n"):
                lines[-1] += "\n"
        parts.extend(
            difflib.unified_diff(
                before,
                after,
                fromfile=str(entry.get("before_header") or "before"),
                tofile=str(entry.get("after_header") or "after"),
            )
        )
    return _truncate("".join(parts), MAX_DIFF_CHARS)


def _status_result(stdout: str) -> tuple[str | None, dict[str, Any] | None]:
    """The default callback's status word (`changed: [host]`) and, at -v, its JSON result."""
    for line in stdout.splitlines():
        match = _STATUS_LINE.match(line.strip())
        if match is None:
            continue
        result = None
        if match.group("result"):
            with contextlib.suppress(ValueError):
                loaded = json.loads(match.group("result"))
                result = loaded if isinstance(loaded, dict) else None
        return match.group(1), result
    return None, None


def _censored(res: Mapping[str, Any]) -> bool:
    return "censored" in res


def _message(res: Mapping[str, Any]) -> str:
    if _censored(res):
        return f"{NO_LOG} the output is hidden"
    message = str(res.get("msg") or "").strip()
    stderr = str(res.get("stderr") or "").strip()
    if not message:
        for item in res.get("results") or []:
            if isinstance(item, Mapping) and item.get("failed"):
                return _message(item)
    if stderr and stderr not in message:
        message = f"{message}: {stderr}" if message else stderr
    return _truncate(message or "failed without a message", MAX_MESSAGE_CHARS)


def _conditional_skip(res: Mapping[str, Any]) -> bool:
    return "false_condition" in res or res.get("skip_reason") == "Conditional result was False"


@dataclasses.dataclass
class _Host:
    changes: list[TaskChange] = dataclasses.field(default_factory=list)
    failed: list[TaskFailure] = dataclasses.field(default_factory=list)
    not_verifiable: list[Unverified] = dataclasses.field(default_factory=list)
    verified: int = 0
    total: int = 0
    unreachable: str | None = None


class EventCollector:
    """Reads ansible-runner's event stream into per-host reports (used as its `event_handler`)."""

    def __init__(self, hosts: Sequence[str], *, check: bool, masker: Masker) -> None:
        self.check = check
        self._mask = masker
        self._hosts: dict[str, _Host] = {host: _Host() for host in hosts}
        self._item_changed: set[tuple[str, str]] = set()
        self._item_skips: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
        self.errors: list[str] = []

    def __call__(self, event: Mapping[str, Any]) -> bool:
        name = str(event.get("event", ""))
        data = event.get("event_data") or {}
        stdout = str(event.get("stdout") or "")
        if name in ("verbose", "error") or not data.get("host"):
            self.errors.extend(
                self._mask.text(_truncate(line.strip(), MAX_MESSAGE_CHARS))
                for line in stdout.splitlines()
                if _ERROR_LINE.match(line)
            )
            return True
        host = self._hosts.setdefault(str(data["host"]), _Host())
        task = str(data.get("task") or data.get("task_action") or "(unnamed task)")
        if data.get("role"):
            task = f"{data['role']} : {task}"
        task = self._mask.text(task)
        module = str(data.get("resolved_action") or data.get("task_action") or "")
        res = data.get("res") if isinstance(data.get("res"), Mapping) else {}
        assert isinstance(res, Mapping)
        key = (str(data["host"]), str(data.get("task_uuid")))
        if name == "runner_item_on_ok" and _status_result(stdout)[0] == "changed":
            self._item_changed.add(key)
        elif name == "runner_item_on_skipped":
            self._item_skips.setdefault(key, []).append(res)
        elif name == "runner_on_ok":
            host.total += 1
            self._ok(host, task, module, res, stdout, key in self._item_changed)
        elif name == "runner_on_skipped":
            host.total += 1
            self._skipped(host, task, module, stdout, self._item_skips.get(key, []))
        elif name == "runner_on_failed":
            host.total += 1
            message = self._mask.text(_message(res))
            if data.get("ignore_errors"):
                if self.check:
                    host.not_verifiable.append(Unverified(task, module, f"failed, errors ignored: {message}"))
                else:
                    host.verified += 1
            else:
                host.failed.append(TaskFailure(task, module, message))
        elif name == "runner_on_unreachable":
            host.unreachable = self._mask.text(_message(res))
        return True

    def _ok(
        self, host: _Host, task: str, module: str, res: Mapping[str, Any], stdout: str, item_changed: bool
    ) -> None:
        items = [r for r in res.get("results") or [] if isinstance(r, Mapping)]
        censored = _censored(res) or any(_censored(r) for r in items)
        if _censored(res):
            changed = _status_result(stdout)[0] == "changed" or item_changed
        else:
            changed = bool(res.get("changed")) or any(bool(r.get("changed")) for r in items)
        if self.check and module not in _DEBUG_ACTIONS:  # a debug message may say anything
            why = self._unverified_reason(res, items)
            if why is not None:
                host.not_verifiable.append(Unverified(task, module, why))
                return
        host.verified += 1
        if changed:
            if censored:
                diff = NO_LOG
            else:
                diffs = [res.get("diff")] + [r.get("diff") for r in items]
                diff = self._mask.text("".join(render_diff(d) for d in diffs if d))
            host.changes.append(TaskChange(task, module, diff))

    def _unverified_reason(self, res: Mapping[str, Any], items: list[Mapping[str, Any]]) -> str | None:
        for result in [res, *items]:
            message = str(result.get("msg") or "")
            if result.get("skipped") and not _conditional_skip(result):
                return self._mask.text(
                    f"skipped in check mode: {message}" if message else "skipped in check mode"
                )
            if _CHECK_MODE.search(message):
                return self._mask.text(message)
        return None

    def _skipped(
        self, host: _Host, task: str, module: str, stdout: str, item_skips: Sequence[Mapping[str, Any]]
    ) -> None:
        """A skip is verified when a `when` was false (for a loop: for every item). ansible-runner's
        event carries no result, so the reason is read from the -v status line, or for a loop from
        its items' own events."""
        _, res = _status_result(stdout)
        items = [r for r in (res or {}).get("results") or item_skips if isinstance(r, Mapping)]
        conditional = res is not None and (
            _conditional_skip(res) or (bool(items) and all(_conditional_skip(r) for r in items))
        )
        if not self.check or conditional:
            host.verified += 1
            return
        if res is None:
            why = "skipped in check mode (no reason given)"
        elif _censored(res) or any(_censored(r) for r in items):
            why = f"skipped in check mode; {NO_LOG} hides whether for check mode or a false condition"
        else:
            reasons = [str(r.get("msg") or "") for r in items if not _conditional_skip(r)]
            message = next((m for m in reasons if m), str(res.get("msg") or "")).strip()
            why = f"skipped in check mode: {message}" if message else "skipped in check mode"
        host.not_verifiable.append(Unverified(task, module, self._mask.text(why)))

    def reports(self) -> dict[str, HostReport]:
        return {
            name: HostReport(
                name,
                tuple(h.changes),
                tuple(h.failed),
                tuple(h.not_verifiable),
                h.verified,
                h.total,
                h.unreachable,
            )
            for name, h in sorted(self._hosts.items())
        }


# --- one run ---------------------------------------------------------------------------


def _ansible_playbook() -> Path:
    beside = Path(sys.executable).parent / "ansible-playbook"
    if beside.is_file():
        return beside
    found = shutil.which("ansible-playbook")
    if found is None:
        raise PermanentError(
            "ansible-playbook is not installed", hint="install ansible-core next to fleet (same environment)"
        )
    return Path(found)


def _inside(root: Path, relative: str, what: str) -> Path:
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise PermanentError(f"{what} {relative!r} points outside the playbook directory")
    return path


def wrapper_playbook(root: Path, playbooks: Sequence[str], roles: Sequence[str]) -> list[dict[str, Any]]:
    """One playbook importing the spec's playbooks (paths relative to `root`), then a play that
    applies its roles (a name found in roles/ or playbooks/roles/, or a path relative to `root`).

    Ansible renders play names, imported paths and role names as templates; these come from the
    specs, so they are marked `Unsafe`: a name is a name, never code run on the controller."""
    plays: list[dict[str, Any]] = []
    for relative in playbooks:
        path = _inside(root, relative, "playbook")
        if not path.is_file():
            raise PermanentError(f"playbook {relative!r} is not in the fleet repo at this revision")
        plays.append({"name": Unsafe(f"fleet: {relative}"), "import_playbook": Unsafe(str(path))})
    if roles:
        entries = []
        for role in roles:
            if "/" in role:
                path = _inside(root, role, "role")
                if not path.is_dir():
                    raise PermanentError(f"role {role!r} is not in the fleet repo at this revision")
                entries.append({"role": Unsafe(str(path))})
            else:
                entries.append({"role": Unsafe(role)})
        plays.append({"name": "fleet: roles", "hosts": "all", "roles": entries})
    if not plays:
        raise PermanentError("spec.config names neither playbooks nor roles")
    return plays


def _write_private(path: Path, content: str) -> None:
    """Write a file only its owner can read (created so, never widened afterwards)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(content)


def _environment(
    private: Path,
    root: Path,
    binary: Path,
    settings: RunSettings,
    inherited: Mapping[str, str],
    control: Path | None = None,
) -> dict[str, str]:
    path = os.pathsep.join([str(binary.parent), inherited.get("PATH", os.defpath)])
    roles_path = os.pathsep.join(str(p) for p in (root / "roles", root / "playbooks" / "roles"))
    return {
        "PATH": path,
        "HOME": str(private / "home"),
        "ANSIBLE_HOME": str(private / "home" / ".ansible"),
        "ANSIBLE_LOCAL_TEMP": str(private / "tmp" / "local"),
        "TMPDIR": str(private / "tmp" / "local"),
        # ANSIBLE_REMOTE_TEMP is left alone: it names a directory on the host, which the login
        # user must be able to create (Ansible's default is ~/.ansible/tmp in that user's home).
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control or private / "cp"),
        "ANSIBLE_PERSISTENT_CONTROL_PATH_DIR": str(private / "pc"),
        "ANSIBLE_ROLES_PATH": roles_path,
        "ANSIBLE_INVENTORY_ENABLED": "yaml",
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
        "ANSIBLE_HOST_KEY_CHECKING": str(settings.host_key_checking),
        "ANSIBLE_DISPLAY_ARGS_TO_STDOUT": "False",
        "ANSIBLE_NOCOLOR": "True",
        "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
        "ANSIBLE_CALLBACK_FORMAT_PRETTY": "False",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        # The roles play gathers facts unless the playbooks before it already did (or the
        # operator's environment says otherwise).
        "ANSIBLE_GATHERING": inherited.get("ANSIBLE_GATHERING", "smart"),
    }


def _reduced(
    env: Mapping[str, str], ours: Mapping[str, str], masker: Masker, drop: set[str]
) -> dict[str, str]:
    """ansible-runner seeds the job's environment with all of ours; keep what Ansible needs."""
    kept = {}
    for key, value in env.items():
        if key in drop or masker.text(value) != value:
            continue
        if key in ours or key in _PASSED_THROUGH or key.startswith(("ANSIBLE_", "AWX_", "ORIGINAL_")):
            kept[key] = value
    return kept


def _start(kwargs: Mapping[str, Any]) -> Any:
    """ansible-runner's Runner, prepared but not started (untyped: kept inside this module)."""
    return ansible_runner.interface.init_runner(**kwargs)


def _prepare(
    private: Path,
    plays: list[dict[str, Any]],
    inventory: Inventory,
    secret_vars: Mapping[str, Mapping[str, Secret]],
) -> Path:
    """Lay out the private data directory; returns the inventory file. Both files are YAML, so
    that values marked `Unsafe` reach Ansible with the `!unsafe` tag."""
    for sub in ("project", "inventory", "env", "home", "tmp/local", "cp", "pc"):
        (private / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    (private / "project" / "fleet.yml").write_text(dump_yaml(plays))
    inventory_file = private / "inventory" / "hosts.yml"
    inventory_file.write_text(dump_yaml(to_yaml_inventory(inventory)))
    for host, values in secret_vars.items():
        if values:
            content = json.dumps({name: secret.reveal() for name, secret in values.items()})
            _write_private(private / "inventory" / "host_vars" / f"{host}.json", content)
    return inventory_file


def _execute(
    private: Path,
    inventory_file: Path,
    environment: Mapping[str, str],
    collector: EventCollector,
    *,
    check: bool,
    forks: int,
    settings: RunSettings,
    drop_env: set[str],
    masker: Masker,
) -> tuple[str, int | None]:
    """Run ansible-playbook through ansible-runner; returns its status and exit code."""
    try:
        runner = _start(
            {
                "private_data_dir": str(private),
                "playbook": "fleet.yml",
                "inventory": str(inventory_file),
                "cmdline": "--check --diff -v" if check else "-v",  # diffs cost a module run per file
                "forks": forks,
                "timeout": max(1, int(settings.timeout_seconds)),
                "envvars": dict(environment),
                "event_handler": collector,
                "quiet": True,
                "suppress_env_files": True,
                # How often ansible-runner looks at the deadline while Ansible is silent.
                "settings": {"pexpect_timeout": 1},
            }
        )
        runner.config.env = _reduced(runner.config.env, environment, masker, drop_env)
        status, rc = runner.run()
    except Exception as exc:  # ansible-runner's own errors (configuration, pexpect, OS)
        raise PermanentError(f"ansible-runner could not run the playbooks: {masker.text(str(exc))}") from None
    return str(status), rc if isinstance(rc, int) else None


def _clean_up(private: Path, masker: Masker, *, keep_artifacts: bool) -> None:
    """Stop what is left running, delete the secrets file, and the directory unless it is kept
    (then with every secret value masked in it)."""
    _stop_leftovers(private)
    shutil.rmtree(private / "inventory" / "host_vars", ignore_errors=True)
    if not keep_artifacts:
        shutil.rmtree(private, ignore_errors=True)
        return
    for path in private.rglob("*"):
        if path.is_file() and not path.is_symlink():
            masker.file(path)


def run_playbooks(
    *,
    playbook_root: Path,
    playbooks: Sequence[str],
    roles: Sequence[str],
    inventory: Inventory,
    secret_vars: Mapping[str, Mapping[str, Secret]],
    check: bool,
    settings: RunSettings,
    drop_env: Sequence[str] = (),
    clock: Callable[[], float] = time.monotonic,
) -> RunResult:
    """Run `playbooks` then `roles` on every host of `inventory`: in check mode with diffs when
    `check`, for real (without diffs) otherwise. `secret_vars` are host variables (host -> name ->
    value) given to Ansible only through a 0600 host_vars file; `drop_env` names environment
    variables that must not reach Ansible (those credentials are read from). The private directory
    is removed afterwards unless `settings.keep_artifacts`; the secrets file goes either way."""
    started = clock()
    binary = _ansible_playbook()
    root = playbook_root.resolve()
    plays = wrapper_playbook(root, playbooks, roles)
    hosts = sorted(inventory["_meta"]["hostvars"])
    masker = Masker([secret for values in secret_vars.values() for secret in values.values()])
    try:
        if settings.temp_dir is not None:
            settings.temp_dir.mkdir(parents=True, exist_ok=True)
        private = Path(tempfile.mkdtemp(prefix="fleet-ansible-", dir=settings.temp_dir))
    except OSError as exc:
        raise PermanentError(f"cannot make a directory for the Ansible run: {exc.strerror}") from None
    # SSH's control sockets need a short path (a unix socket's is at most 107 bytes), which a
    # private directory deep in an artifacts tree may not have.
    control = Path(tempfile.mkdtemp(prefix="fleet-cp-", dir="/tmp" if os.path.isdir("/tmp") else None))
    try:
        try:
            inventory_file = _prepare(private, plays, inventory, secret_vars)
        except OSError as exc:
            raise PermanentError(f"cannot prepare the Ansible run in {private}: {exc.strerror}") from None
        collector = EventCollector(hosts, check=check, masker=masker)
        status, rc = _execute(
            private,
            inventory_file,
            _environment(private, root, binary, settings, os.environ, control),
            collector,
            check=check,
            forks=max(1, min(settings.forks, len(hosts))),
            settings=settings,
            drop_env=set(drop_env),
            masker=masker,
        )
        reports = collector.reports()
        errors = collector.errors
        if status not in ("successful", "timeout") and not any(r.total for r in reports.values()):
            errors = errors or _stdout_errors(private, masker)
        if status == "timeout":
            errors = [*errors, f"the run did not finish within {settings.timeout_seconds:g} s"]
        artifacts = private if settings.keep_artifacts else None
        return RunResult(status, rc, reports, "; ".join(dict.fromkeys(errors)), clock() - started, artifacts)
    finally:
        _stop_leftovers(control)  # SSH connection masters, named by their control socket
        _clean_up(private, masker, keep_artifacts=settings.keep_artifacts)
        shutil.rmtree(control, ignore_errors=True)


def _stop_leftovers(private: Path) -> None:
    """Kill what a run left running. On a timeout ansible-runner kills ansible-playbook's process
    group, but Ansible's workers run in sessions of their own (with the modules they started);
    their command lines name the run's private directory, which no other process's does."""
    proc = Path("/proc")
    if not proc.is_dir():
        return
    marker = str(private).encode()
    own_group = os.getpgid(0)
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker not in (entry / "cmdline").read_bytes():
                continue
            group = os.getpgid(int(entry.name))
            if group != own_group:
                os.killpg(group, signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue


def _stdout_errors(private: Path, masker: Masker) -> list[str]:
    """Error lines of the run's stdout, for a run that stopped before any event named a host."""
    lines: list[str] = []
    for stdout in sorted((private / "artifacts").glob("*/stdout")):
        with contextlib.suppress(OSError):
            text = stdout.read_text(errors="replace")
            lines.extend(line.strip() for line in text.splitlines() if _ERROR_LINE.match(line))
            if not lines:
                lines.extend(line.strip() for line in text.splitlines()[-5:] if line.strip())
    return [masker.text(_truncate(line, MAX_MESSAGE_CHARS)) for line in lines]
