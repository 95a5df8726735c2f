"""`fleet validate` on a corpus of bad inputs: every problem found, located, explained.

Each file of `tests/corpus/bad/` is one case. Its leading comment lines declare
what `fleet validate` must report:

    # expect: CODE line=N [path=P] [severity=warning]   (one line per diagnostic)
    # expect-hint: CODE: text      (some CODE diagnostic has a hint containing text)
    # expect-message: CODE: text   (some CODE diagnostic has a message containing text)
    # target: fleet.yaml           (where the file goes; default machines/zz-case.yaml)
    # xfail: reason                (a known bug in reconciler/: the case is expected to fail)

The case file is dropped into a fresh copy of fleet-repo-example and the real CLI
runs on it (`fleet validate --format json --no-cache`), in-process through Typer's
CliRunner and, for a few cases, as a subprocess. Cases that cannot carry a comment
(symlinks, binary, non-UTF-8 or oversized files, a missing fleet.yaml) are built by
`GENERATED` below. `tests/corpus/good/` holds files that must validate cleanly.
(tests/test_yaml_loaders_agree.py also reads every corpus file with both YAML loaders.)
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from reconciler.cli import app
from reconciler.spec.yamlload import load_yaml

TESTS = Path(__file__).resolve().parent
EXAMPLE = TESTS.parent / "fleet-repo-example"
BAD = TESTS / "corpus" / "bad"
GOOD = TESTS / "corpus" / "good"
CASE_PATH = "machines/zz-case.yaml"
FLEET_BIN = Path(sys.executable).with_name("fleet")
CANARY = "canary-s3cr3t-value-123"

# --- cases -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Expect:
    code: str  # alternatives separated by "|"
    path: str
    line: int
    severity: str = "error"

    def matches(self, d: dict[str, Any]) -> bool:
        return (
            d["code"] in self.code.split("|")
            and d["path"] == self.path
            and d["line"] == self.line
            and d["severity"] == self.severity
        )

    def __str__(self) -> str:
        return f"{self.severity}[{self.code}] at {self.path}:{self.line}"


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    expects: tuple[Expect, ...]
    files: dict[str, bytes] = dataclasses.field(default_factory=dict)
    hints: tuple[tuple[str, str], ...] = ()
    messages: tuple[tuple[str, str], ...] = ()
    xfail: str | None = None
    symlinks: dict[str, str] = dataclasses.field(default_factory=dict)  # link -> target ("{outside}" expands)
    remove: tuple[str, ...] = ()
    max_file_bytes: int | None = None  # set spec.limits.maxFileBytes of the example fleet.yaml

    @property
    def warnings_only(self) -> bool:
        return all(e.severity == "warning" for e in self.expects)


_HEADER = re.compile(r"^# (expect|expect-hint|expect-message|target|xfail):\s*(.*?)\s*$")


def parse_case(path: Path) -> Case:
    data = path.read_bytes()
    target = CASE_PATH
    raw_expects: list[tuple[str, dict[str, str]]] = []
    hints: list[tuple[str, str]] = []
    messages: list[tuple[str, str]] = []
    xfail = None
    for line in data.decode("utf-8").splitlines():
        if not line.startswith("#"):
            break
        match = _HEADER.match(line)
        if not match:
            continue
        key, value = match.groups()
        if key == "expect":
            code, *pairs = value.split()
            raw_expects.append((code, dict(p.split("=", 1) for p in pairs)))
        elif key in ("expect-hint", "expect-message"):
            code, _, text = value.partition(": ")
            (hints if key == "expect-hint" else messages).append((code, text))
        elif key == "target":
            target = value
        elif key == "xfail":
            xfail = value
    assert raw_expects, f"{path.name} declares no '# expect:' line"
    expects = tuple(
        Expect(code, attrs.get("path", target), int(attrs["line"]), attrs.get("severity", "error"))
        for code, attrs in raw_expects
    )
    return Case(path.stem, expects, {target: data}, tuple(hints), tuple(messages), xfail)


FILE_CASES = [parse_case(p) for p in sorted(BAD.glob("*.yaml"))]


def _machine(name: str, body: str = "") -> str:
    return (
        "apiVersion: fleet/v1alpha1\n"
        "kind: Machine\n"
        "metadata:\n"
        f"  name: {name}\n"
        "  labels:\n"
        "    team: platform-infra\n"
        "spec:\n"
        "  site: nyc1\n"
        "  rack: r01\n"
        "  bmc:\n"
        "    address: 10.128.9.99\n"
        "    credentialsRef: bmc-nyc1\n" + body
    )


def _big_machine(size: int) -> bytes:
    """A valid Machine padded with comment lines to `size` bytes: only its size is wrong."""
    text = _machine("zz-big")
    filler = "# padding " + "x" * 69 + "\n"
    while len(text) + len(filler) <= size:
        text += filler
    return (text + "#" * (size - len(text) - 1) + "\n").encode()


GENERATED = [
    Case("fleet-missing", (Expect("fleet-missing", "fleet.yaml", 1),), remove=("fleet.yaml",)),
    Case(
        "file-too-large",
        (Expect("file-too-large", CASE_PATH, 1),),
        {CASE_PATH: _big_machine(8192 + 1)},
        max_file_bytes=8192,
    ),
    Case(
        "file-too-large-minimum-limit",
        (Expect("file-too-large", CASE_PATH, 1), Expect("file-too-large", "machines/nyc1/r01.yaml", 1)),
        {CASE_PATH: _big_machine(1500)},
        max_file_bytes=1024,
    ),
    Case(
        "file-not-utf8",
        (Expect("file-not-utf8", CASE_PATH, 5),),
        {
            CASE_PATH: _machine("zz-not-utf8")
            .replace("  labels:", "  labels: \udcff", 1)
            .encode("utf-8", "surrogateescape")
        },
    ),
    Case(
        "file-not-utf8-latin1-comment",
        (Expect("file-not-utf8", CASE_PATH, 1),),
        {CASE_PATH: ("# Caf\u00e9 rack, owned by Ren\u00e9e\n" + _machine("zz-latin1")).encode("latin-1")},
    ),
    Case(
        "file-binary-nul",
        (Expect("file-binary", CASE_PATH, 3),),
        {CASE_PATH: b"apiVersion: fleet/v1alpha1\nkind: Machine\nmeta\x00data:\n  name: zz-nul\n"},
    ),
    Case(
        "file-binary-utf16",
        (Expect("file-binary", CASE_PATH, 1),),
        {CASE_PATH: _machine("zz-utf16").encode("utf-16")},
    ),
    Case(
        "file-binary-image",
        (Expect("file-binary", CASE_PATH, 3),),  # lines are counted by \n: the NUL follows two
        {CASE_PATH: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01"},
    ),
    Case(
        "yaml-syntax-utf8-bom-duplicate-key",
        (Expect("duplicate-key", CASE_PATH, 10),),
        {
            CASE_PATH: b"\xef\xbb\xbf"
            + _machine("zz-bom").replace("  rack: r01\n", "  rack: r01\n  rack: r02\n").encode()
        },
    ),
    Case(
        "yaml-syntax-control-character",
        (Expect("yaml-syntax", CASE_PATH, 4),),
        {CASE_PATH: _machine("zz-bell\x07").encode()},
    ),
    Case(
        "symlink-escape-absolute",
        (Expect("symlink-escape", "machines/zz-link.yaml", 1),),
        symlinks={"machines/zz-link.yaml": "{outside}"},
    ),
    Case(
        "symlink-escape-relative",
        (Expect("symlink-escape", "machines/zz-link.yaml", 1),),
        symlinks={"machines/zz-link.yaml": "../../outside.yaml"},
    ),
    Case(
        "symlink-broken",
        (Expect("symlink-broken", "machines/zz-link.yaml", 1),),
        symlinks={"machines/zz-link.yaml": "does-not-exist.yaml"},
    ),
    Case(
        "symlink-loop",
        (Expect("symlink-broken|file-unreadable", "machines/zz-loop.yaml", 1),),
        symlinks={"machines/zz-loop.yaml": "zz-loop.yaml"},
    ),
]

ALL_CASES = FILE_CASES + GENERATED
assert len({c.name for c in ALL_CASES}) == len(ALL_CASES), "case names must be unique"


def _params(cases: list[Case]) -> list[Any]:
    return [
        pytest.param(c, id=c.name, marks=[pytest.mark.xfail(reason=c.xfail, strict=True)] if c.xfail else [])
        for c in cases
    ]


# --- running the CLI ---------------------------------------------------------------------


def make_repo(tmp_path: Path, case: Case) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo, symlinks=True)
    outside = tmp_path / "outside.yaml"
    outside.write_text(_machine("zz-outside", f"  config:\n    vars:\n      note: {CANARY}\n"))
    for relative in case.remove:
        (repo / relative).unlink()
    if case.max_file_bytes is not None:
        fleet = repo / "fleet.yaml"
        fleet.write_text(fleet.read_text() + f"\n  limits:\n    maxFileBytes: {case.max_file_bytes}\n")
    for relative, data in case.files.items():
        (repo / relative).parent.mkdir(parents=True, exist_ok=True)
        (repo / relative).write_bytes(data)
    for link, target in case.symlinks.items():
        os.symlink(target.replace("{outside}", str(outside)), repo / link)
    return repo


@dataclasses.dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None

    @property
    def diagnostics(self) -> list[dict[str, Any]]:
        parsed: list[dict[str, Any]] = json.loads(self.stdout)
        return parsed


def validate(repo: Path, *extra: str, output: str = "json") -> Run:
    result = CliRunner().invoke(app, ["validate", str(repo), "--format", output, "--no-cache", *extra])
    exception = result.exception if not isinstance(result.exception, SystemExit) else None
    return Run(result.exit_code, result.stdout, result.stderr, exception)


def validate_subprocess(repo: Path, tmp_path: Path, *extra: str, output: str = "json") -> Run:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "COLUMNS": "200"}
    done = subprocess.run(
        [str(FLEET_BIN), "validate", str(repo), "--format", output, "--no-cache", *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr, None)


def _show(diagnostics: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"  {d['path']}:{d['line']}:{d['col']}: {d['severity']}[{d['code']}]: {d['message']}"
        for d in diagnostics
    )


def check_well_formed(run: Run) -> list[dict[str, Any]]:
    """No crash, no traceback, and every diagnostic says where and what to do."""
    assert run.exception is None, f"validate raised {run.exception!r}"
    assert "Traceback" not in run.stdout + run.stderr
    diagnostics = run.diagnostics
    assert isinstance(diagnostics, list)
    for d in diagnostics:
        assert set(d) == {"severity", "code", "message", "path", "line", "col", "address", "field", "hint"}, d
        assert d["severity"] in ("error", "warning"), d
        assert d["code"] and d["message"], d
        assert "\n" not in d["message"], f"a message is one line (text output prints it on one): {d}"
        assert d["path"] and not d["path"].startswith("/"), f"path must be repo-relative: {d}"
        assert isinstance(d["line"], int) and d["line"] >= 1, f"no line: {d}"
        assert isinstance(d["col"], int) and d["col"] >= 1, f"no column: {d}"
        if d["severity"] == "error":
            assert isinstance(d["hint"], str) and d["hint"].strip(), f"error without a hint: {d}"
    return diagnostics


def check_case(case: Case, run: Run) -> list[dict[str, Any]]:
    diagnostics = check_well_formed(run)
    missing = [e for e in case.expects if not any(e.matches(d) for d in diagnostics)]
    assert not missing, f"missing {', '.join(map(str, missing))}; got:\n{_show(diagnostics)}"
    for code, text in case.hints:
        hints = [d["hint"] or "" for d in diagnostics if d["code"] == code]
        assert any(text in h for h in hints), f"no {code} hint contains {text!r}: {hints}"
    for code, text in case.messages:
        found = [d["message"] for d in diagnostics if d["code"] == code]
        assert any(text in m for m in found), f"no {code} message contains {text!r}: {found}"
    return diagnostics


# --- the corpus --------------------------------------------------------------------------


def test_corpus_is_big_enough() -> None:
    assert len(ALL_CASES) >= 45
    codes = {code for case in ALL_CASES for e in case.expects for code in e.code.split("|")}
    required = (
        "yaml-syntax duplicate-key yaml-tab yaml-alias-bomb yaml-recursive-alias yaml-too-deep "
        "yaml-unknown-tag complex-key file-too-large file-not-utf8 file-binary symlink-escape "
        "symlink-broken not-a-mapping missing-kind unknown-kind bad-api-version unknown-field "
        "missing-field invalid-value secret-literal duplicate-name unknown-site unknown-rack "
        "bmc-conflict unknown-credential unresolved-reference host-not-hypervisor member-conflict "
        "selector-matches-nothing namespace-conflict org-rule fleet-missing fleet-misplaced "
        "fleet-duplicate host-overcommitted pool-taint-conflict"
    )
    for code in required.split(" "):
        assert code in codes, f"no case covers {code}"


def test_example_repo_is_valid(tmp_path: Path) -> None:
    """The base every case starts from is clean, so what a case reports comes from the case."""
    run = validate(make_repo(tmp_path, Case("none", ())))
    assert check_well_formed(run) == []
    assert run.exit_code == 0


@pytest.mark.parametrize("case", _params(ALL_CASES))
def test_bad_input(case: Case, tmp_path: Path) -> None:
    repo = make_repo(tmp_path, case)
    run = validate(repo)
    check_case(case, run)
    if case.warnings_only:
        assert run.exit_code == 0, "warnings alone must not fail validation"
        strict = validate(repo, "--strict")
        check_case(case, strict)
        assert strict.exit_code == 1, "--strict fails on warnings"
    else:
        assert run.exit_code == 1


SUBPROCESS_CASES = [
    "yaml-alias-bomb",
    "yaml-syntax-unclosed-flow",
    "secret-literal-password-in-vars",
    "symlink-escape-absolute",
    "fleet-missing",
]


@pytest.mark.parametrize("case", _params([c for c in ALL_CASES if c.name in SUBPROCESS_CASES]))
def test_bad_input_subprocess(case: Case, tmp_path: Path) -> None:
    """The installed `fleet` entry point behaves the same as the in-process app."""
    assert FLEET_BIN.exists(), f"no fleet entry point next to {sys.executable}: run scripts/bootstrap.sh"
    run = validate_subprocess(make_repo(tmp_path, case), tmp_path)
    check_case(case, run)
    assert run.exit_code == 1
    assert CANARY not in run.stdout + run.stderr


def test_subprocess_cases_exist() -> None:
    assert {c.name for c in ALL_CASES} >= set(SUBPROCESS_CASES)


@pytest.mark.parametrize("path", sorted(GOOD.glob("*.yaml")), ids=lambda p: p.stem)
def test_good_input(path: Path, tmp_path: Path) -> None:
    case = Case(path.stem, (), {CASE_PATH: path.read_bytes()})
    run = validate(make_repo(tmp_path, case))
    diagnostics = check_well_formed(run)
    assert diagnostics == [], _show(diagnostics)
    assert run.exit_code == 0


# --- output shape, secrets, completeness --------------------------------------------------

_TEXT_DIAGNOSTIC = re.compile(
    r"^(?P<path>[^\s:]+):(?P<line>[1-9][0-9]*):(?P<col>[1-9][0-9]*): (?P<severity>error|warning)"
    r"\[(?P<code>[a-z0-9-]+)\]: (?P<message>.+?)(?: \[(?P<address>[a-z]+/[a-z0-9-]+)\])?$"
)


def _case(name: str) -> Case:
    return next(c for c in ALL_CASES if c.name == name)


def test_text_output_shape(tmp_path: Path) -> None:
    """`path:line:col: error[CODE]: message [address]`, then `    = help: hint`, then a summary."""
    case = Case(
        "text",
        (),
        {
            **_case("unknown-site").files,
            "machines/zz-syntax.yaml": _case("yaml-syntax-unclosed-flow").files[CASE_PATH],
        },
    )
    run = validate(make_repo(tmp_path, case), output="text")
    assert run.exception is None and "Traceback" not in run.stdout + run.stderr
    assert run.exit_code == 1
    lines = run.stdout.splitlines()
    assert lines[-1].endswith("invalid (2 errors, 0 warnings)"), lines[-1]
    body = lines[:-1]
    assert len(body) == 4, run.stdout
    diagnostics = [_TEXT_DIAGNOSTIC.match(line) for line in body[0::2]]
    assert all(diagnostics), body
    assert all(line.startswith("    = help: ") and len(line) > len("    = help: ") for line in body[1::2]), (
        body
    )
    site, syntax = (m.groupdict() for m in diagnostics if m)
    assert (site["path"], site["line"], site["col"], site["code"], site["address"]) == (
        CASE_PATH,
        "10",
        "3",
        "unknown-site",
        "machine/zz-unknown-site",
    )
    assert site["message"] == "site 'nyc2' is not defined in fleet.yaml"
    assert (syntax["path"], syntax["line"], syntax["code"], syntax["address"]) == (
        "machines/zz-syntax.yaml",
        "8",
        "yaml-syntax",
        None,
    )


_CANARY_FILES = {
    "machines/zz-canary-vars.yaml": _machine(
        "zz-canary-vars",
        f"  config:\n    vars:\n      root_password: {CANARY}\n      nested:\n        - apiKey: {CANARY}\n",
    ),
    "machines/zz-canary-bmc.yaml": _machine("zz-canary-bmc").replace(
        "    credentialsRef: bmc-nyc1\n", f"    credentialsRef: bmc-nyc1\n    password: {CANARY}\n"
    ),
    "machines/zz-canary-kind.yaml": (
        f"apiVersion: fleet/v1alpha1\nkind: Machnie\nmetadata:\n  name: zz\nspec:\n  token: {CANARY}\n"
    ),
    "machines/zz-canary-syntax.yaml": (
        f'apiVersion: fleet/v1alpha1\nkind: Machine\nmetadata:\n  password: "{CANARY}\n'
    ),
    "machines/zz-canary-dup.yaml": _machine(
        "zz-canary-dup", f"  config:\n    vars:\n      token: {CANARY}\n      token: {CANARY}-2\n"
    ),
    "machines/zz-canary-annotation.yaml": _machine("zz-canary-annotation").replace(
        "    team: platform-infra\n",
        f"    team: platform-infra\n  annotations:\n    slack-webhook-token: {CANARY}\n",
        1,
    ),
    "clusters/zz-canary.yaml": (
        "apiVersion: fleet/v1alpha1\nkind: Cluster\nmetadata:\n  name: zz-canary\nspec:\n"
        "  apiServer: https://10.20.10.95:6443\n  credentialsRef: kubeconfig-k8s-nyc1\n"
        "  members:\n    - ref: machine/nyc1-r03-06\n  objects:\n"
        "    - apiVersion: v1\n      kind: Secret\n      metadata:\n        name: pem\n"
        f"      stringData:\n        tls.key: |\n          -----BEGIN PRIVATE KEY-----\n          {CANARY}\n"
        "          -----END PRIVATE KEY-----\n"
    ),
}


@pytest.mark.parametrize("output", ["json", "text"])
def test_secret_canary_never_printed(output: str, tmp_path: Path) -> None:
    case = Case(
        "canary",
        (),
        {k: v.encode() for k, v in _CANARY_FILES.items()},
        symlinks={"machines/zz-canary-link.yaml": "{outside}"},
    )
    repo = make_repo(tmp_path, case)
    run = validate(repo, output=output)
    assert run.exception is None and run.exit_code == 1
    assert CANARY not in run.stdout + run.stderr
    if output == "json":
        found = {(d["path"], d["code"]) for d in check_well_formed(run)}
        for path in (
            "machines/zz-canary-vars.yaml",
            "machines/zz-canary-bmc.yaml",
            "machines/zz-canary-kind.yaml",
            "machines/zz-canary-annotation.yaml",
            "clusters/zz-canary.yaml",
        ):
            assert (path, "secret-literal") in found, f"{path} was not scanned for secrets"
        assert ("machines/zz-canary-syntax.yaml", "yaml-syntax") in found
        assert ("machines/zz-canary-dup.yaml", "duplicate-key") in found
        assert ("machines/zz-canary-link.yaml", "symlink-escape") in found
    else:
        assert "secret-literal" in run.stdout


_POOL = (
    "apiVersion: fleet/v1alpha1\nkind: SparkPool\nmetadata:\n  name: zz-canary-pool\n  labels:\n"
    "    team: data-platform\nspec:\n  cluster: k8s-nyc1\n  namespace: spark-zz-canary\n"
    "  queue:\n    name: zz-canary\n  nodes:\n    selector:\n      fleet.acme.io/pool: etl\n"
)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(
            _machine("zz-echo").replace(
                "    team: platform-infra\n", f'    team: a\n    db-password: "{CANARY} x"\n'
            ),
            id="invalid-label-value",
        ),
        pytest.param(
            _machine("zz-echo").replace(
                "    team: platform-infra\n", f"    team:\n      password: {CANARY}\n"
            ),
            id="org-rule-instance",
        ),
        pytest.param(
            _POOL + f"  quota:\n    object-store-token: {CANARY}\n",
            id="quantity",
        ),
    ],
)
def test_secret_canary_not_echoed_by_other_diagnostics(text: str, tmp_path: Path) -> None:
    """A secret that is also an invalid value is not repeated by the invalid-value or org-rule message."""
    run = validate(make_repo(tmp_path, Case("echo", (), {CASE_PATH: text.encode()})))
    codes = {d["code"] for d in check_well_formed(run) if d["path"] == CASE_PATH}
    assert "secret-literal" in codes and len(codes) > 1, codes
    assert CANARY not in run.stdout + run.stderr


def test_all_problems_reported_together(tmp_path: Path) -> None:
    """Three independent mistakes in one document: three diagnostics, not the first one only."""
    case = _case("three-independent-errors")
    run = validate(make_repo(tmp_path, case))
    diagnostics = check_case(case, run)
    mine = [d for d in diagnostics if d["path"] == CASE_PATH]
    assert sorted((d["code"], d["line"]) for d in mine) == sorted((e.code, e.line) for e in case.expects)
    assert len(mine) == 3
    assert CANARY not in run.stdout


def test_problems_in_several_files_reported_together(tmp_path: Path) -> None:
    names = [
        "yaml-syntax-unclosed-flow",
        "duplicate-key-nested",
        "unknown-site",
        "secret-literal-token",
        "yaml-alias-bomb",
    ]
    files = {f"machines/zz-{i}.yaml": _case(n).files[CASE_PATH] for i, n in enumerate(names)}
    run = validate(make_repo(tmp_path, Case("several", (), files)))
    diagnostics = check_well_formed(run)
    for i, name in enumerate(names):
        for e in _case(name).expects:
            moved = dataclasses.replace(e, path=f"machines/zz-{i}.yaml")
            assert any(moved.matches(d) for d in diagnostics), (
                f"{name}: missing {moved}\n{_show(diagnostics)}"
            )
    assert run.exit_code == 1


_FAST_ELIGIBLE = _machine("zz-fast").replace("  rack: r01\n", "  rack: r01\n  power: off\n")


def test_duplicate_key_in_fast_path_file(tmp_path: Path) -> None:
    """A file the rapidyaml fast path would take still gets the duplicate-key check."""
    clean = _FAST_ELIGIBLE.encode()
    assert load_yaml("x.yaml", clean).fast, "the clean file must take the fast path, or this proves nothing"
    duplicated = _FAST_ELIGIBLE.replace("  power: off\n", "  power: off\n  power: on\n").encode()
    loaded = load_yaml("x.yaml", duplicated)
    assert [(d.code, d.line) for d in loaded.diagnostics] == [("duplicate-key", 11)]
    assert loaded.documents == []
    bmc = "    address: 10.128.9.99\n"
    nested = _FAST_ELIGIBLE.replace(bmc, bmc + "    address: 10.128.9.98\n")
    case = Case("fast-dup", (Expect("duplicate-key", CASE_PATH, 13),), {CASE_PATH: nested.encode()})
    run = validate(make_repo(tmp_path, case))
    check_case(case, run)
    assert run.exit_code == 1


def test_invalid_fleet_yaml_keeps_its_excludes(tmp_path: Path) -> None:
    """An invalid fleet.yaml is reported once; its `exclude` still keeps playbooks/ out of the specs."""
    run = validate(make_repo(tmp_path, _case("fleet-invalid-power-domain")))
    diagnostics = check_well_formed(run)
    assert [d for d in diagnostics if d["path"].startswith("playbooks/")] == []


def test_first_fleet_document_is_the_one_used(tmp_path: Path) -> None:
    """The second Fleet of fleet.yaml is the reported duplicate, so the first one is the fleet."""
    run = validate(make_repo(tmp_path, _case("fleet-duplicate-document")))
    codes = {d["code"] for d in check_well_formed(run)}
    assert codes == {"fleet-duplicate"}, codes
