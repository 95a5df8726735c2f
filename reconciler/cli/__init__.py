"""The `fleet` command.

Every command that reads a fleet repo takes it the same way: a PATH (the working tree,
uncommitted edits included) or `--repo PATH_OR_URL --rev REV` (a Git revision read without
checkout). Exit codes: 0 success, 1 the repo is invalid (or a command failed), 2 usage or
infrastructure error; `plan` and `drift` with --detailed-exitcode: 0, 2 changes, 3 incomplete,
1 any error. No traceback reaches a user: every failure ends as one clear message.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, entry_points
from importlib.metadata import version as package_version
from typing import Annotated

import typer

from reconciler import __version__
from reconciler.bounded import MESSAGE_LIMIT, shorten_lines
from reconciler.cli import pr, repo, run, serve, suspend
from reconciler.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    OutputFormat,
    OutputOpt,
    QuietOpt,
    VerboseOpt,
    app,
    closed_pipe,
    echo_data,
    err,
)

PLUGIN_GROUP = "fleet.commands"
"""Entry points of this group are typer apps added as sub-commands (the lab's `fleet lab`)."""

__all__ = ["app", "main", "pr", "repo", "run", "serve", "suspend"]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fleet {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """GitOps reconciler for physical infrastructure."""


# The SDKs fleet's providers and store drive, as `fleet version -o json` reports them.
SDKS = ("pyghmi", "libvirt-python", "kubernetes", "ansible-runner", "pygit2", "SQLAlchemy", "alembic")


def versions() -> dict[str, object]:
    from reconciler.state.migrate import head_revision

    installed: dict[str, str | None] = {}
    for name in SDKS:
        try:
            installed[name] = package_version(name)
        except PackageNotFoundError:
            installed[name] = None
    return {
        "fleet": __version__,
        "python": platform.python_version(),
        "sdks": installed,
        "stateSchema": head_revision(),
    }


@app.command()
def version(
    output: OutputOpt = OutputFormat.text, quiet: QuietOpt = False, verbose: VerboseOpt = False
) -> None:
    """Print fleet's version (`-o json`: with its providers' SDKs and the state store's schema)."""
    if output is OutputFormat.text:
        typer.echo(f"fleet {__version__}")
    else:
        echo_data(versions(), output)


def add_registered_commands(group: str = PLUGIN_GROUP) -> None:
    """Add every typer app registered in the entry point group `group` as the sub-command of its
    entry point's name (`fleet lab` is one). One that cannot be loaded is one line on stderr."""
    for entry in sorted(entry_points(group=group), key=lambda e: e.name):
        try:
            commands = entry.load()
        except Exception as exc:  # a broken plugin, whatever it raises, must not stop fleet
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            err().print(f"error: cannot load `fleet {entry.name}` from {entry.value}: {reason}")
            continue
        if not isinstance(commands, typer.Typer):
            err().print(f"error: cannot load `fleet {entry.name}`: {entry.value} is not a typer app")
            continue
        app.add_typer(commands, name=entry.name)


add_registered_commands()


# click's error for bad usage (an unknown command or option, a bad value), whichever click
# typer carries: every one of typer's own usage errors derives from it.
_USAGE_ERROR: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


_SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")


def _completion_for_the_shell_named() -> None:
    """`--show-completion zsh` prints zsh's script even from bash: typer takes the shell as the
    option's value only when it does not detect the shell it runs in (this switch says so)."""
    argv = sys.argv[1:]
    for index, argument in enumerate(argv):
        named = argument.partition("=")[2] if argument.startswith("--show-completion=") else None
        if argument == "--show-completion" and index + 1 < len(argv):
            named = argv[index + 1]
        if named in _SHELLS:
            os.environ["_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION"] = "1"


def main() -> None:
    _completion_for_the_shell_named()
    try:
        outcome = app(standalone_mode=False)
    except _USAGE_ERROR as exc:
        # It may quote what was typed (a name, a path, a value): shown bounded, as every error.
        message = shorten_lines(str(exc.message), MESSAGE_LIMIT)  # type: ignore[attr-defined]
        if any(a == "-out" or a.startswith("-out=") for a in sys.argv[1:]):
            message += " (fleet spells Terraform's `-out FILE` as `--out FILE`)"
        exc.message = message  # type: ignore[attr-defined]
        exc.show()  # type: ignore[attr-defined]
        sys.exit(exc.exit_code)  # type: ignore[attr-defined]
    except typer.Abort:
        err().print("aborted")
        sys.exit(EXIT_FAILED)
    except KeyboardInterrupt:
        err().print("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        closed_pipe()
    except SystemExit as exc:
        # click ends a write to a closed stdout with exit 1, after wrapping stdout so that
        # Python's final flush stays quiet: that end is a normal one.
        if exc.code == 1 and type(sys.stdout).__name__ == "PacifyFlushWrapper":
            closed_pipe()
        raise
    # A command that ends with typer.Exit(code) gives its code; one that returns, 0.
    code = outcome if isinstance(outcome, int) else 0
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        closed_pipe()
    sys.exit(code)
