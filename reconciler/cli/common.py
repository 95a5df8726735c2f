"""What every `fleet` command shares: the app, its consoles, the options that read a repo and reach
live state, the settings they build, and the one place errors become a line and an exit code."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, NoReturn, TypeVar

import typer
import typer.core
from pydantic import ValidationError
from rich.console import Console
from rich.text import Text
from ruamel.yaml import YAML

from providers.access import load_access
from providers.registry import ProviderPool
from reconciler.apply.cancel import CancelToken
from reconciler.bounded import MESSAGE_LIMIT, shorten
from reconciler.cli import complete
from reconciler.engine import Engine, open_engine
from reconciler.errors import FleetError, SourceError, StoreError, UsageError
from reconciler.report.diagnostics import render_diagnostics
from reconciler.settings import Settings, load_settings, process_environment
from reconciler.spec.cache import CacheUnavailable, SpecCache
from reconciler.spec.loader import InvalidRevision
from reconciler.state import StateStore, open_store


def _no_type_beside_a_metavar(display: Callable[[Any, Any], str | None]) -> Callable[[Any, Any], str | None]:
    """typer prints an argument's Python type beside it (`PATH <path>`, `<list[str]>`); an
    argument whose metavar already says what it is shows only that."""

    def shown(argument: Any, ctx: Any) -> str | None:
        return None if argument.metavar else display(argument, ctx)

    return shown


typer.core.TyperArgument.display_type_rich = _no_type_beside_a_metavar(  # type: ignore[method-assign,assignment]
    typer.core.TyperArgument.display_type_rich
)

app = typer.Typer(
    name="fleet",
    help="GitOps reconciler for physical infrastructure: machines, VMs, Kubernetes clusters and Spark pools.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_CHANGES, EXIT_INCOMPLETE, EXIT_INTERRUPTED = 2, 3, 130
"""With --detailed-exitcode: 0 nothing differs and everything was observed, 2 changes or drift,
3 nothing differs but some resources are unknown, 1 any error."""


def _plain() -> bool:
    """NO_COLOR (no-color.org) set to anything: no escape codes at all, bold and dim included."""
    return bool(os.environ.get("NO_COLOR"))


def closed_pipe() -> NoReturn:
    """The reader of stdout went away (`fleet get | head`): a normal end, as for kubectl. Exit 0
    with stdout pointed at /dev/null, so that nothing complains when it is flushed at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    raise SystemExit(EXIT_OK)


class _Stdout(Console):
    def on_broken_pipe(self) -> None:
        closed_pipe()


# How much a command says on stderr besides errors: -1 (--quiet) nothing more, 0 notes (the
# store used, counts), 1 (--verbose) also what it does and how long that took.
_VERBOSITY = [0]


def _quiet(value: bool) -> bool:
    if value:
        _VERBOSITY[0] = -1
    return value


def _verbose(value: bool) -> bool:
    if value:
        _VERBOSITY[0] = 1
    return value


QuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        help="Say nothing on stderr but errors and warnings (no store, endpoints or counts).",
        callback=_quiet,
        expose_value=False,
        is_eager=True,
    ),
]
VerboseOpt = Annotated[
    bool,
    typer.Option(
        "--verbose",
        "-v",
        help="Also say on stderr what fleet does: its settings, and how long each step took.",
        callback=_verbose,
        expose_value=False,
        is_eager=True,
    ),
]


def note(text: str, style: str = "dim") -> None:
    """Something for the person at the terminal (the store used, a count): on stderr, unless
    --quiet."""
    if _VERBOSITY[0] >= 0:
        err().print(Text(text, style=style), soft_wrap=True)


def debug(text: str) -> None:
    """What fleet does, with --verbose only; never a secret (settings and timings)."""
    if _VERBOSITY[0] > 0:
        err().print(Text(f"debug: {text}", style="dim"), soft_wrap=True)


def out() -> Console:
    return _Stdout(highlight=False, soft_wrap=True, color_system=None if _plain() else "auto")


def err() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True, color_system=None if _plain() else "auto")


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print `error: MESSAGE` (shortened when long: it may quote what a user typed) and exit."""
    err().print(Text(f"error: {shorten(message, MESSAGE_LIMIT)}", style="bold red"))
    raise typer.Exit(code)


T = TypeVar("T")


def guard(action: Callable[[], T], *, detailed: bool = False) -> T:
    """Run a command's work; fleet's own errors become one line and an exit code (1 for every
    error under --detailed-exitcode, where 2 means changes). A revision refused by the
    validation gate prints its diagnostics as `fleet validate` does."""
    started = time.monotonic()
    try:
        result = action()
        debug(f"done in {time.monotonic() - started:.2f} s")
        return result
    except InvalidRevision as exc:
        render_diagnostics(exc.revision.diagnostics, err())
        fail(str(exc), EXIT_FAILED)
    except (UsageError, SourceError, StoreError) as exc:
        # Usage, and infrastructure that is not there: the path, the revision, the state store.
        fail(str(exc), EXIT_FAILED if detailed else EXIT_USAGE)
    except FleetError as exc:
        fail(str(exc), EXIT_FAILED)
    except OSError as exc:  # a file fleet was pointed at and could not use, not caught nearer
        where = f": {exc.filename}" if exc.filename else ""
        fail(f"{exc.strerror or type(exc).__name__}{where}", EXIT_FAILED if detailed else EXIT_USAGE)
    except ValidationError as exc:  # a FLEET_* variable that is not a valid setting
        problems = "; ".join(
            f"FLEET_{'_'.join(map(str, e['loc'])).upper()}: {str(e['msg']).removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        fail(f"invalid setting: {problems}", EXIT_FAILED if detailed else EXIT_USAGE)


class OutputFormat(StrEnum):
    text = "text"
    json = "json"
    yaml = "yaml"


class ListFormat(StrEnum):
    """What commands that list things print: a table (`wide`: more columns), one address per
    line (`name`), or the same fields as JSON or YAML."""

    text = "text"
    wide = "wide"
    name = "name"
    json = "json"
    yaml = "yaml"


OUTPUT_NAMES = ("--output", "-o", "--format")
"""One option everywhere: `-o`/`--output`, with `--format` kept as an alias."""

OutputOpt = Annotated[OutputFormat, typer.Option(*OUTPUT_NAMES, help="Output format.")]
ListOutputOpt = Annotated[
    ListFormat,
    typer.Option(*OUTPUT_NAMES, help="text (a table), wide (more columns), name (addresses), json or yaml."),
]
NoHeadersOpt = Annotated[bool, typer.Option("--no-headers", help="Print table rows without the header.")]


_DURATION = re.compile(r"^([0-9]+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime) -> datetime:
    """`30m`, `1h`, `7d`, `2w` back from `now`, or an ISO 8601 time (UTC unless it says)."""
    match = _DURATION.match(text.strip())
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{shorten(text)!r} is neither a duration (30m, 1h, 7d, 2w) nor an ISO 8601 time",
            param_hint="--since",
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def echo_data(data: object, output: OutputFormat | ListFormat) -> None:
    """JSON or YAML of the same value, so both carry the same fields."""
    if output.value == "yaml":
        typer.echo(yaml_text(data), nl=False)
    else:
        typer.echo(json.dumps(data, indent=2, default=str))


def yaml_text(data: object) -> str:
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    buffer = io.StringIO()
    yaml.dump(json.loads(json.dumps(data, default=str)), buffer)
    return buffer.getvalue()


PathArg = Annotated[
    Path | None,
    typer.Argument(
        metavar="PATH", help="Fleet repo working tree (default: the current directory).", show_default=False
    ),
]
RepoOpt = Annotated[
    str | None,
    typer.Option(
        "--repo",
        metavar="PATH_OR_URL",
        help="Read a Git repository (path or URL) at --rev instead of a working tree.",
    ),
]
RevOpt = Annotated[
    str | None, typer.Option("--rev", metavar="REV", help="Revision to read with --repo (default: HEAD).")
]
DirOpt = Annotated[
    str | None,
    typer.Option(
        "--path",
        metavar="DIR",
        help="With --repo: the fleet repo's directory inside the repository (a monorepo), e.g. fleet.",
        show_default=False,
    ),
]
CacheOpt = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        metavar="DIR",
        help="Cache directory (default: $XDG_CACHE_HOME/fleet).",
        show_default=False,
    ),
]
LabOpt = Annotated[
    bool,
    typer.Option(
        "--lab", help="Talk to the simulators of the running `fleet lab` instead of real endpoints."
    ),
]
ConfigCheckOpt = Annotated[
    bool | None,
    typer.Option(
        "--config/--no-config",
        help="Also check the operating-system configuration of Machines and VirtualMachines in Ansible's "
        "check mode (it changes nothing; default: on; FLEET_CONFIG).",
        show_default=False,
    ),
]
ConfigOpt = Annotated[
    bool | None,
    typer.Option(
        "--config/--no-config",
        help="Check (Ansible check mode) and apply the operating-system configuration of Machines "
        "and VirtualMachines (default: on; FLEET_CONFIG).",
        show_default=False,
    ),
]
StateOpt = Annotated[
    str | None,
    typer.Option(
        "--state",
        metavar="PATH_OR_URL",
        help="State store: a SQLite path or a PostgreSQL URL (default: $XDG_STATE_HOME/fleet/state.db; "
        "FLEET_STATE).",
        show_default=False,
    ),
]
SelectorOpt = Annotated[
    str | None,
    typer.Option(
        "--selector",
        "-l",
        metavar="SELECTOR",
        help="Label selector, e.g. 'role=hypervisor,site in (nyc1)'.",
        autocompletion=complete.label_keys,
    ),
]
YesOpt = Annotated[
    bool,
    typer.Option(
        "--yes", "-y", "--auto-approve", help="Do not ask for confirmation (Terraform: --auto-approve)."
    ),
]
KindOpt = Annotated[
    str | None,
    typer.Option(
        "--kind",
        "-k",
        metavar="KIND",
        help="Only this kind (Machine, vm, sp, ...; default: every kind).",
        autocompletion=complete.kinds,
    ),
]
TargetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--target",
        "-t",
        metavar="ADDRESS",
        help="Only this address (repeatable), e.g. machine/nyc1-r01-02.",
        autocompletion=complete.addresses,
    ),
]


def settings_of(
    *,
    cache_dir: Path | None = None,
    state: str | None = None,
    lab: bool = False,
    config: bool | None = None,
    workers: int | None = None,
) -> Settings:
    return load_settings(cache_dir=cache_dir, state=state, lab=lab or None, config=config, workers=workers)


def open_cache(settings: Settings) -> SpecCache | None:
    """The validation cache, or None (with a warning) when its directory cannot be used."""
    try:
        return SpecCache(settings.cache_dir / "specs.sqlite")
    except CacheUnavailable as exc:
        err().print(
            Text(
                f"warning: {shorten(str(exc), MESSAGE_LIMIT)}: going on without the validation cache; "
                "point --cache-dir or XDG_CACHE_HOME at a writable directory",
                style="yellow",
            )
        )
        return None


def announce_store(store: StateStore) -> None:
    """Which state store a command uses, once, on stderr; whether it was just made, or is read-only."""
    if store.created:
        suffix = " (created: a new, empty store; nothing applied is recorded in it yet)"
    elif store.read_only:
        suffix = " (read-only: this command records nothing in it)"
    else:
        suffix = ""
    note(f"state: {shorten(store.url)}{suffix}", "yellow" if suffix else "dim")


@contextlib.contextmanager
def engine_for(settings: Settings, *, store: bool = False, cache: bool = True) -> Iterator[Engine]:
    """An engine with what a command needs: the validation cache, a provider pool over the
    deployment's endpoint map (the lab's with --lab), and the state store when `store`."""
    debug(
        f"settings: cache {settings.cache_dir}, state dir {settings.state_dir}, workers"
        f" {settings.workers or 'one per CPU'}, configuration {'on' if settings.config else 'off'}"
    )
    endpoints = settings.endpoint_map()
    if endpoints is not None:
        if settings.lab and settings.endpoints is None and not endpoints.exists():
            raise UsageError("no lab is running", hint="start one with `fleet lab up`")
        note(f"using lab endpoints from {shorten(str(endpoints))}", "yellow")
    access = load_access(endpoints, process_environment())
    spec_cache = open_cache(settings) if cache else None
    try:
        with contextlib.ExitStack() as stack:
            pool = stack.enter_context(ProviderPool(access, settings.state_dir))
            state: StateStore | None = (
                stack.enter_context(open_store(settings.state_url())) if store else None
            )
            if state is not None:
                announce_store(state)
            yield stack.enter_context(open_engine(settings, pool, state, spec_cache))
    finally:
        if spec_cache is not None:
            spec_cache.close()


@contextlib.contextmanager
def ctrl_c_cancels(cancel: CancelToken) -> Iterator[None]:
    """The first Ctrl-C cancels the run (running actions finish, the rest are recorded as
    interrupted); further ones are ignored, so the audit record stays complete."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread receives signals
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        cancel.cancel("interrupted (Ctrl-C)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
