"""The `fleet` command.

Every command that reads a fleet repo takes it the same way: a PATH (the working tree,
uncommitted edits included) or `--repo PATH_OR_URL --rev REV` (a Git revision read without
checkout). Exit codes: 0 success, 1 the repo is invalid (or a command failed), 2 usage or
infrastructure error; `plan` and `drift` with --detailed-exitcode: 0, 2 changes, 3 incomplete,
1 any error. No traceback reaches a user: every failure ends as one clear message.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points
from typing import Annotated

import typer

from reconciler import __version__
from reconciler.bounded import MESSAGE_LIMIT, shorten_lines
from reconciler.cli import repo, run
from reconciler.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, app, err

PLUGIN_GROUP = "fleet.commands"
"""Entry points of this group are typer apps added as sub-commands (the lab's `fleet lab`)."""

__all__ = ["app", "main", "repo", "run"]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fleet {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """GitOps reconciler for physical infrastructure."""


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


def main() -> None:
    try:
        outcome = app(standalone_mode=False)
    except _USAGE_ERROR as exc:
        # It may quote what was typed (a name, a path, a value): shown bounded, as every error.
        exc.message = shorten_lines(str(exc.message), MESSAGE_LIMIT)  # type: ignore[attr-defined]
        exc.show()  # type: ignore[attr-defined]
        sys.exit(exc.exit_code)  # type: ignore[attr-defined]
    except typer.Abort:
        err().print("aborted")
        sys.exit(EXIT_FAILED)
    except KeyboardInterrupt:
        err().print("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        sys.exit(EXIT_FAILED)
    # A command that ends with typer.Exit(code) gives its code; one that returns, 0.
    sys.exit(outcome if isinstance(outcome, int) else 0)
