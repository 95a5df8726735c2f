"""The documentation (docs/, README.md): the site builds in MkDocs' strict mode (a broken link or
anchor fails it), the generated reference pages are what the schemas and the checks make now, every
diagnostic code and unknown reason is documented, and every `fleet` command line the pages show
names commands and options the CLI has."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import typer

from providers.base import UnknownReason

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


@cache
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "fleet_docs_reference", ROOT / "scripts" / "docs_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


@cache
def emitted() -> dict[str, frozenset[str]]:
    """The diagnostic codes the product's source emits, with their severities (read once)."""
    return {code: frozenset(severities) for code, severities in generator().emitted_codes().items()}


def test_the_site_builds_in_strict_mode_and_loads_nothing_from_elsewhere(tmp_path: Path) -> None:
    site = tmp_path / "site"
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    assert "WARNING" not in built.stderr, built.stderr
    pages = list(site.rglob("*.html"))
    assert len(pages) >= 15
    remote = re.compile(r"<(?:script|link|img)\b[^>]*\b(?:src|href)=\"(?:https?:)?//", re.IGNORECASE)
    for page in pages:
        found = remote.search(page.read_text())
        assert found is None, f"{page.relative_to(site)} loads {found.group(0)!r}: the site must work offline"


def test_the_generated_reference_pages_are_what_the_schemas_and_the_checks_make() -> None:
    expected = generator().pages()
    on_disk = {p.name: p.read_text() for p in (DOCS / "reference").glob("*.md")}
    stale = sorted(name for name, text in expected.items() if on_disk.get(name) != text)
    extra = sorted(set(on_disk) - set(expected))
    assert not stale and not extra, f"run `make docs` (stale: {stale}, not generated: {extra})"


def test_every_field_of_every_kind_is_in_the_reference() -> None:
    """A field of the schema that no table row names would be a field a reader cannot find."""
    module = generator()
    for kind, schema in module.load_schemas().items():
        page = (DOCS / "reference" / f"{kind.lower()}.md").read_text()
        definitions = {"": schema, **schema.get("$defs", {})}
        for name, node in definitions.items():
            for field in node.get("properties", {}):
                assert f"| `{field}` |" in page, f"{kind}: field {field} of {name or 'the document'}"
            if name:
                assert f"\n## {name}\n" in page, f"{kind}: type {name}"


def test_every_diagnostic_code_the_checks_emit_is_documented_with_its_severity() -> None:
    module = generator()
    missing, unused = sorted(set(emitted()) - set(module.CODES)), sorted(set(module.CODES) - set(emitted()))
    assert not missing, f"codes the checks emit with no entry in scripts/docs_reference.py CODES: {missing}"
    assert not unused, f"CODES documents codes nothing emits any more: {unused}"
    page = (DOCS / "reference" / "diagnostics.md").read_text()
    for code, severities in emitted().items():
        assert f"\n### {code}\n" in page, code
        documented = module.CODES[code].severity
        shown = (
            "error or warning" if "either" in severities or len(severities) > 1 else next(iter(severities))
        )
        assert documented == shown, f"{code} is emitted as {shown}, documented as {documented}"
        assert module.CODES[code].fix.strip(), f"{code} says nothing about what to do"


def test_the_code_scan_finds_codes_wherever_the_checks_make_them() -> None:
    """The scan that keeps the list complete must see each way a code is made: error()/warning(),
    the Spark checks' Problem, the source's SourceProblem, and the (code, message, hint) the model's
    errors are mapped to."""
    found = emitted()
    for code in (
        "yaml-syntax",
        "host-overcommitted",
        "queue-order",
        "symlink-escape",
        "unknown-field",
        "org-rule",
    ):
        assert code in found, code
    assert found["host-overcommitted"] == {"warning"}
    assert found["org-rule"] == {"either"}


def test_every_unknown_reason_is_explained_in_troubleshooting() -> None:
    page = (DOCS / "troubleshooting.md").read_text()
    for reason in UnknownReason:
        assert f"| `{reason.value}` |" in page, reason.value


def test_the_readme_keeps_the_two_commands_first_then_the_tour_and_links_into_docs() -> None:
    readme = (ROOT / "README.md").read_text()
    sections = re.findall(r"^## (.+)$", readme, flags=re.MULTILINE)
    assert sections[:2] == ["The two commands", "A five-minute tour"], sections
    assert readme.index("make demo") < readme.index("make test") < readme.index("## A five-minute tour")
    linked = re.findall(r"\]\((docs/[^)#]+)(?:#[^)]*)?\)", readme)
    assert len(linked) >= 10
    for target in linked:
        assert (ROOT / target).is_file(), f"README links to {target}, which does not exist"


# --- the command lines the pages show --------------------------------------------------------------


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def _command_lines(pages: list[Path]) -> Iterator[tuple[str, str]]:
    """(file, line) of every `fleet ...` line in the shell and console blocks of `pages`."""
    fence = re.compile(r"^```(\w*)\s*$")
    for path in pages:
        language = None
        logical = ""
        for raw in path.read_text().splitlines():
            opened = fence.match(raw.strip())
            if opened:
                language = None if language is not None else opened.group(1)
                continue
            if language not in ("sh", "console"):
                continue
            line = logical + raw.strip()
            if line.endswith("\\"):
                logical = line[:-1] + " "
                continue
            logical = ""
            line = line.removeprefix("$ ")
            line = re.sub(r"^(?:export\s+|env\s+)?(?:[A-Z_][A-Z0-9_]*=\S*\s+)*", "", line)
            line = line.split(" #", 1)[0].split(" | ", 1)[0].split(" > ", 1)[0].split(" && ", 1)[0]
            if line.startswith("fleet "):
                yield path.name, line


@cache
def _cli() -> Any:
    """The `fleet` command as click sees it (typer carries its own click: no types of it here)."""
    from reconciler.cli import app

    command = typer.main.get_command(app)
    assert "validate" in command.commands
    return command


def _options(command: Any) -> set[str]:
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}


def _problems(lines: list[tuple[str, str]]) -> list[str]:
    """What in these command lines the CLI does not have: a command, or an option of it."""
    problems = []
    for where, line in lines:
        words = shlex.split(line.replace("...", "x"))[1:]
        command = _cli()
        path = ["fleet"]
        while hasattr(command, "commands") and words and not words[0].startswith("-"):
            sub = command.commands.get(words[0])
            if sub is None:
                problems.append(f"{where}: `{line}`: no command `{' '.join([*path, words[0]])}`")
                break
            path.append(words.pop(0))
            command = sub
        else:
            known = _options(command) | _options(_cli())
            for word in words:
                option = word.split("=", 1)[0]
                if option.startswith("-") and option not in known:
                    problems.append(f"{where}: `{line}`: `{' '.join(path)}` has no option {option}")
    return problems


def test_every_fleet_command_line_in_the_docs_names_real_commands_and_options() -> None:
    lines = list(_command_lines(_pages()))
    assert len(lines) >= 40
    problems = _problems(lines)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("fleet plan --lab --no-such-option", "has no option --no-such-option"),
        ("fleet pr comment --dry-run --pr 4 --no-such-option", "`fleet pr comment` has no option"),
        ("fleet no-such-command", "no command `fleet no-such-command`"),
    ],
    ids=["an invented option", "an invented option of a sub-command", "an invented command"],
)
def test_the_command_line_check_catches(line: str, problem: str, tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(f"text\n\n```sh\n$ FLEET_STATE=x {line}   # a comment\n```\n")
    problems = _problems(list(_command_lines([page])))
    assert len(problems) == 1 and problem in problems[0], problems
