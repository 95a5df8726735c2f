"""The scripts run under `set -euo pipefail`: no pipe in them may end in a reader that quits early.

A reader such as `head` or `grep -q` exits once it has what it wants; the writer before it then
dies of SIGPIPE on its next write, and pipefail fails the whole script, depending on timing. The
demo's output shaping (scripts/demo-output.sh) runs here on inputs far longer than what it prints,
so that a writer always outlives such a reader; a static check finds the pattern in every script,
and `bash -n` checks that each one parses.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fleet_testing import ROOT

SCRIPTS = ROOT / "scripts"
DEMO_OUTPUT = SCRIPTS / "demo-output.sh"
LINES = 100_000  # far more than any pipe buffer holds: the writer is still writing when a reader quits
ROUNDS = 3


def shaped(function: str, *args: str, stdin: Path | None, out: Path) -> tuple[int, list[str]]:
    """Call one function of demo-output.sh under `bash -euo pipefail`, stdout to a file as in a log.

    With `stdin`, a writer (`cat`) pipes that file into the function, as fleet does in the demo.
    Returns the exit status and the lines printed.
    """
    call = f'cat "$0" | {function} "$@"' if stdin is not None else f'{function} "$@"'
    script = f'source "{DEMO_OUTPUT}"\n{call}\n'
    argv = ["bash", "-euo", "pipefail", "-c", script, str(stdin or "bash"), *args]
    with out.open("w") as sink:
        done = subprocess.run(argv, stdout=sink, stderr=subprocess.PIPE, text=True, timeout=120)
    return done.returncode, out.read_text().splitlines()


def outcome(n: int) -> str:
    return f"  machine/host-{n:06d}  power_on: ok  " + "x" * 200


@pytest.fixture(scope="module")
def long_outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A plan, an apply, a drift report and an audit trail, each with LINES lines of the part cut short."""
    base = tmp_path_factory.mktemp("outputs")
    plan = ["fleet plan of working tree repo", "Plan: 1 to configure."]
    plan += ["    ~ machine/nyc1-r01-02  configure"]
    plan += [f"        + line {n}" for n in range(LINES)]
    plan += ["    ~ machine/nyc1-r01-03  configure", "        + other host"]
    apply = ["the plan again", *(outcome(n) for n in range(LINES)), "Run 7: succeeded (100000 actions)"]
    drift = [
        "machine/nyc1-r01-02  power: on -> off",
        *(f"config host-{n:06d}  covered" for n in range(LINES)),
    ]
    files = {"plan": plan, "apply": apply, "drift": drift}
    paths = {name: base / f"{name}.txt" for name in files}
    for name, lines in files.items():
        paths[name].write_text("\n".join(lines) + "\n")
    return paths


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_plan_host_entry_prints_40_lines_and_succeeds(
    long_outputs: dict[str, Path], tmp_path: Path, round_: int
) -> None:
    status, lines = shaped(
        "plan_host_entry", str(long_outputs["plan"]), "nyc1-r01-02", stdin=None, out=tmp_path / "out"
    )
    assert status == 0
    assert lines == ["    ~ machine/nyc1-r01-02  configure", *(f"        + line {n}" for n in range(39))]


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_apply_outcomes_prints_the_first_24_and_succeeds(
    long_outputs: dict[str, Path], tmp_path: Path, round_: int
) -> None:
    status, lines = shaped("apply_outcomes", str(long_outputs["apply"]), stdin=None, out=tmp_path / "out")
    assert status == 0
    assert lines == [
        *(outcome(n)[:150] for n in range(24)),
        f"  ... ({LINES} actions)",
        "Run 7: succeeded (100000 actions)",
    ]


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_drift_summary_prints_3_hosts_and_succeeds(
    long_outputs: dict[str, Path], tmp_path: Path, round_: int
) -> None:
    status, lines = shaped("drift_summary", str(long_outputs["drift"]), stdin=None, out=tmp_path / "out")
    assert status == 0
    assert lines == [
        "machine/nyc1-r01-02  power: on -> off",
        *(f"config host-{n:06d}  covered" for n in range(3)),
        f"... ({LINES} configured hosts)",
    ]


def test_apply_result_cuts_every_outcome(long_outputs: dict[str, Path], tmp_path: Path) -> None:
    status, lines = shaped("apply_result", stdin=long_outputs["apply"], out=tmp_path / "out")
    assert status == 0
    assert lines == [*(outcome(n)[:200] for n in range(LINES)), "Run 7: succeeded (100000 actions)"]


@pytest.mark.parametrize("function", ["apply_result"])
def test_a_failing_writer_still_fails_the_script(function: str, tmp_path: Path) -> None:
    """Shaping what fleet prints does not hide that fleet failed."""
    script = f'source "{DEMO_OUTPUT}"\n{{ echo "Run 1: failed"; exit 3; }} | {function}\n'
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 3


@pytest.mark.parametrize("script", sorted(p.name for p in SCRIPTS.glob("*.sh")))
def test_every_script_parses(script: str) -> None:
    """A syntax error in the demo would otherwise show only when someone runs it, minutes in."""
    done = subprocess.run(["bash", "-n", str(SCRIPTS / script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_demo_uses_the_functions_tested_here() -> None:
    demo = (SCRIPTS / "demo.sh").read_text()
    assert "source scripts/demo-output.sh" in demo
    for function in ("plan_host_entry", "apply_outcomes", "drift_summary", "apply_result"):
        assert re.search(rf"^[^#\n]*\b{function}\b", demo, re.M), function


# --- the static check ------------------------------------------------------------------------


@dataclass
class Pipeline:
    line: int
    commands: list[list[str]]
    then: str = ""  # the operator after it: ";", "&&", "||", "&", newline or "" at the end
    next_words: list[str] = field(default_factory=list)  # the first command after that operator


class _Shell:
    """Just enough of the shell's grammar to find pipelines: words, quotes, comments, `$(...)`,
    subshells, process substitutions and here-documents (whose bodies are text, not commands)."""

    def __init__(self, text: str) -> None:
        self.text = _without_heredoc_bodies(text)
        self.i = 0
        self.pipelines: list[Pipeline] = []

    def peek(self, offset: int = 0) -> str:
        j = self.i + offset
        return self.text[j] if j < len(self.text) else ""

    def line(self) -> int:
        return self.text.count("\n", 0, self.i) + 1

    def parse(self) -> list[Pipeline]:
        self._frame(closer="")
        return self.pipelines

    def _frame(self, closer: str) -> None:
        """Tokens up to `closer` (")" or "`"; "" for the end of the text), split into pipelines."""
        tokens: list[tuple[str, str, int]] = []  # (kind, text, line): kind "word" or "op"
        word: list[str] | None = None

        def end_word() -> None:
            nonlocal word
            if word is not None:
                tokens.append(("word", "".join(word), self.line()))
                word = None

        while self.i < len(self.text):
            c, n = self.peek(), self.peek(1)
            if closer and c == closer:
                self.i += 1
                break
            if c == "\\" and n == "\n":
                self.i += 2
            elif c == "\\":
                word = (word or []) + [n]
                self.i += 2
            elif c in " \t":
                end_word()
                self.i += 1
            elif c == "#" and word is None:
                while self.i < len(self.text) and self.peek() != "\n":
                    self.i += 1
            elif c == "'":
                end = self.text.index("'", self.i + 1)
                word = (word or []) + list(self.text[self.i + 1 : end])
                self.i = end + 1
            elif c == '"':
                self.i += 1
                word = (word or []) + self._double_quoted()
            elif c == "$" and n == "(":
                self.i += 2
                self._frame(")")
                word = (word or []) + list("$(...)")
            elif c == "`":
                self.i += 1
                self._frame("`")
                word = (word or []) + list("`...`")
            elif c == "(" and n == ")" and word is not None:  # name() { ... }
                word += ["(", ")"]
                self.i += 2
            elif c == "(":  # a subshell, or <(...) and >(...)
                self.i += 1
                self._frame(")")
                word = (word or []) + list("(...)")
            elif c in "<>" or (c == "&" and n == ">"):
                if c == "&":
                    word = (word or []) + [c]
                    self.i += 1
                while self.peek() in ("<", ">"):
                    word = (word or []) + [self.peek()]
                    self.i += 1
                if self.peek() in ("&", "|"):
                    word = (word or []) + [self.peek()]
                    self.i += 1
            elif c in "|&;\n":
                end_word()
                op = c + n if c + n in ("||", "&&", ";;", "|&") else c
                self.i += len(op)
                tokens.append(("op", "|" if op == "|&" else op, self.line()))
            else:
                word = (word or []) + [c]
                self.i += 1
        end_word()
        self._pipelines(tokens)

    def _double_quoted(self) -> list[str]:
        chars: list[str] = []
        while self.i < len(self.text):
            c, n = self.peek(), self.peek(1)
            if c == '"':
                self.i += 1
                break
            if c == "\\":  # in double quotes a backslash escapes only $ ` " \ and the newline
                chars += [n] if n in '$`"\\' else [] if n == "\n" else [c, n]
                self.i += 2
            elif c == "$" and n == "(":
                self.i += 2
                self._frame(")")
                chars += list("$(...)")
            elif c == "`":
                self.i += 1
                self._frame("`")
                chars += list("`...`")
            else:
                chars.append(c)
                self.i += 1
        return chars

    def _pipelines(self, tokens: list[tuple[str, str, int]]) -> None:
        found: list[Pipeline] = []
        commands: list[list[str]] = [[]]
        line, last = 0, "\n"
        for kind, text, at in tokens:
            if kind == "word":
                line = line or at
                commands[-1].append(text)
                last = "word"
            elif text == "\n" and last in ("|", "&&", "||", "\n"):
                continue  # a pipe or a list goes on past the end of the line
            elif text == "|":
                commands.append([])
                last = text
            else:
                last = text
                if any(commands):
                    found.append(Pipeline(line, [c for c in commands if c], then=text))
                commands, line = [[]], 0
        if any(commands):
            found.append(Pipeline(line, [c for c in commands if c]))
        for pipeline, after in itertools.pairwise(found):
            pipeline.next_words = after.commands[0]
        self.pipelines += found


def _without_heredoc_bodies(text: str) -> str:
    """The text with every here-document's body blanked (line numbers kept)."""
    lines = text.split("\n")
    out: list[str] = []
    ending: list[tuple[str, bool]] = []
    for line in lines:
        if ending:
            delimiter, tabs = ending[0]
            if (line.lstrip("\t") if tabs else line) == delimiter:
                ending.pop(0)
            out.append("")
            continue
        out.append(line)
        for dash, delimiter in re.findall(r"(?<!<)<<(-?)\s*['\"]?([A-Za-z_][A-Za-z0-9_]*)['\"]?", line):
            ending.append((delimiter, dash == "-"))
    return "\n".join(out)


_RESERVED = {"!", "{", "(", "if", "then", "elif", "else", "do", "while", "until", "time", "exec", "command"}
_SED_QUIT = re.compile(r"(?:^|[;{}\n0-9$/!])\s*[qQ]\s*\d*\s*(?:$|[;}\n])")


def _command_name(words: list[str]) -> tuple[str, list[str]]:
    rest = list(words)
    while rest and (rest[0] in _RESERVED or re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", rest[0])):
        rest.pop(0)
    if not rest:
        return "", []
    return os.path.basename(rest[0]), rest[1:]


def quits_early(words: list[str], functions: dict[str, list[str]]) -> bool:
    """Whether this command can exit before it has read all of its standard input."""
    name, args = _command_name(words)
    if name in functions:
        return quits_early(functions[name], {})
    if name in ("head", "read", "true", ":"):
        return True
    before_operands = args[: args.index("--")] if "--" in args else args
    options = [a for a in before_operands if a.startswith("-") and a != "-"]
    if name in ("grep", "egrep", "fgrep", "zgrep"):
        long = ("--quiet", "--silent", "--max-count", "--files-with-matches", "--files-without-match")
        return any(
            (o.startswith("--") and o.split("=")[0] in long)
            or (not o.startswith("--") and re.search(r"[qmlL]", o[1:].split("=")[0]) is not None)
            for o in options
        )
    if name == "sed":
        scripts = [args[k + 1] for k, a in enumerate(args[:-1]) if a in ("-e", "--expression")]
        scripts += [a.split("=", 1)[1] for a in args if a.startswith("--expression=")]
        if not scripts:
            scripts = [a for a in args if not a.startswith("-")][:1]
        return any(_SED_QUIT.search(s) for s in scripts)
    if name in ("awk", "gawk", "mawk"):
        return any(re.search(r"\bexit\b", a) for a in args if not a.startswith("-"))
    return False


def _functions(pipelines: list[Pipeline]) -> dict[str, list[str]]:
    """Shell functions by name, with the first command of their body (`name() { command ...`)."""
    functions: dict[str, list[str]] = {}
    for pipeline in pipelines:
        words = pipeline.commands[0]
        if words[:1] == ["function"]:
            words = [words[1] + "()", *words[2:]]
        if len(words) >= 2 and words[0].endswith("()") and words[1] == "{":
            functions[words[0][:-2]] = words[2:] or pipeline.next_words  # the body may start on the next line
    return functions


def pipe_problems(text: str, functions: dict[str, list[str]] | None = None) -> Iterator[str]:
    """Every pipe in a shell script that pipefail can fail for no real reason, or whose failure is hidden."""
    pipelines = _Shell(text).parse()
    functions = {**(functions or {}), **_functions(pipelines)}
    for p in pipelines:
        for reader in p.commands[1:]:
            if quits_early(reader, functions):
                yield f"line {p.line}: `{' '.join(reader)}` can quit before the writer is done (SIGPIPE)"
        if len(p.commands) > 1 and p.then == "||" and _command_name(p.next_words)[0] in ("true", ":"):
            yield f"line {p.line}: `|| {' '.join(p.next_words)}` hides a failure of the pipeline"


def script_functions() -> dict[str, list[str]]:
    functions: dict[str, list[str]] = {}
    for script in sorted(SCRIPTS.glob("*.sh")):
        functions.update(_functions(_Shell(script.read_text()).parse()))
    return functions


@pytest.mark.parametrize("script", sorted(p.name for p in SCRIPTS.glob("*.sh")))
def test_no_pipe_in_the_scripts_ends_in_an_early_reader(script: str) -> None:
    assert list(pipe_problems((SCRIPTS / script).read_text(), script_functions())) == []


@pytest.mark.parametrize(
    "text",
    [
        "grep -E x f | cut -c1-150 | head -24",
        "sed -n '/a/,/b/p' f | sed '$d' | head -40",
        'if ! dpkg-query -W -f=\'${Status}\' "$p" 2>/dev/null | grep -q "install ok installed"; then :; fi',
        "a | grep -qE x",
        "a | grep --max-count=1 x",
        "a | grep -m1 x",
        "a | sed 5q",
        "a | sed -e 's/x/y/' -e '/z/q'",
        "a | awk 'NR > 3 { exit } 1'",
        'x="$(a | head -1)"',
        'echo "n=$(a | head -n 1)"',
        "a |\n  head",
        "a 2>&1 | head",
        "a |& head",
        "{ a; b; } | head",
        "a | b || true",
        "a | b ||\n  true",
        'first() { head -n "$1"; }\na | first 3',
    ],
)
def test_the_static_check_finds_early_readers(text: str) -> None:
    assert list(pipe_problems(text)) != []


@pytest.mark.parametrize(
    "text",
    [
        "grep -m 24 -E x f | cut -c1-150",
        "grep -E x f | cut -c1-150 | sed -n '1,24p'",
        "a | tail -1",
        'grep -E "^(fleet plan|Plan:)" f',
        "echo 'a | head -1'",
        'echo "a | head -1"',
        "a # | head -1",
        "a || b",
        "a > f || true",
        "grep -q x f",
        "a | grep -c x",
        "a | sed '/x/d'",
        "a | sed -n '/quota/p'",
        "python - <<'PY'\nprint('a | head')\nPY\nb",
        "cat <<-EOF\n\ta | head\n\tEOF\nb",
        'first() { sed -n "1,${1}p"; }\na | first 3',
    ],
)
def test_the_static_check_lets_full_readers_be(text: str) -> None:
    assert list(pipe_problems(text)) == []
