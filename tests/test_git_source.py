"""Reading a fleet repo from Git: revisions, URLs (cloned into the cache) and changed paths.

Repositories are built with the real `git` command, an independent client, and read
back with fleet's pygit2 source.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fleet_testing import commit_all, copy_example, git, git_init, run_cli

from reconciler.errors import SourceError
from reconciler.source.git import changed_paths, read_revision


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    path = copy_example(tmp_path / "fleet")
    git_init(path)
    return path


def _break_a_machine(repo: Path) -> None:
    target = repo / "machines" / "nyc1" / "r01.yaml"
    target.write_text(target.read_text().replace("power: on", "powr: on", 1))


def _validate(*args: str) -> tuple[int, list[dict]]:
    code, output = run_cli("validate", *args, "--format", "json")
    assert code in (0, 1), output
    return code, json.loads(output)


def test_revisions_are_read_without_checkout(repo: Path, tmp_path: Path) -> None:
    good = git(repo, "rev-parse", "HEAD")
    git(repo, "tag", "v1")
    _break_a_machine(repo)
    bad = commit_all(repo, "typo")
    cache = str(tmp_path / "cache")
    for rev in ("HEAD", "main", bad, bad[:10]):
        code, diagnostics = _validate("--repo", str(repo), "--rev", rev, "--cache-dir", cache)
        assert code == 1 and [d["code"] for d in diagnostics] == ["unknown-field"], rev
    for rev in (good, "v1", "HEAD~1", "main^"):
        assert _validate("--repo", str(repo), "--rev", rev, "--cache-dir", cache) == (0, []), rev


def test_working_tree_includes_uncommitted_edits_but_a_revision_does_not(repo: Path, tmp_path: Path) -> None:
    _break_a_machine(repo)
    code, diagnostics = _validate(str(repo), "--no-cache")
    assert code == 1 and diagnostics[0]["path"] == "machines/nyc1/r01.yaml"
    assert _validate("--repo", str(repo), "--rev", "HEAD", "--cache-dir", str(tmp_path / "c")) == (0, [])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--rev", "no-such-branch"], "unknown revision 'no-such-branch'"),
        (["--rev", "0123456789abcdef0123456789abcdef01234567"], "unknown revision"),
    ],
    ids=["unknown-branch", "unknown-commit"],
)
def test_unknown_revision_is_an_infrastructure_error(
    repo: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    code, output = run_cli("validate", "--repo", str(repo), *args, "--cache-dir", str(tmp_path / "c"))
    assert code == 2 and message in output and "Traceback" not in output


def test_not_a_repository_is_an_infrastructure_error(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    for location in (str(tmp_path / "plain"), str(tmp_path / "missing")):
        code, output = run_cli("validate", "--repo", location, "--cache-dir", str(tmp_path / "c"))
        assert code == 2 and "error:" in output and "Traceback" not in output


def test_url_is_cloned_into_the_cache_and_fetched_later(repo: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    url = repo.as_uri()
    assert _validate("--repo", url, "--rev", "main", "--cache-dir", str(cache)) == (0, [])
    clones = list((cache / "repos").glob("*.git"))
    assert len(clones) == 1
    _break_a_machine(repo)
    bad = commit_all(repo, "typo")
    code, diagnostics = _validate("--repo", url, "--rev", "main", "--cache-dir", str(cache))
    assert code == 1 and diagnostics[0]["code"] == "unknown-field"
    assert list((cache / "repos").glob("*.git")) == clones
    assert read_revision(url, "main", cache).commit == bad


def test_unreachable_url_is_an_infrastructure_error(tmp_path: Path) -> None:
    code, output = run_cli(
        "validate", "--repo", (tmp_path / "nowhere").as_uri(), "--cache-dir", str(tmp_path / "c")
    )
    assert code == 2 and "cannot fetch" in output


def test_credentials_in_a_url_are_never_printed(tmp_path: Path) -> None:
    code, output = run_cli(
        "validate",
        "--repo",
        "https://user:canary-pw-77@127.0.0.1:9/fleet.git",
        "--cache-dir",
        str(tmp_path / "c"),
    )
    assert code == 2 and "canary-pw-77" not in output


def test_changed_paths_between_revisions(repo: Path, tmp_path: Path) -> None:
    first = git(repo, "rev-parse", "HEAD")
    _break_a_machine(repo)
    (repo / "clusters" / "k8s-nyc1.yaml").rename(repo / "clusters" / "k8s-nyc1-renamed.yaml")
    second = commit_all(repo, "two changes")
    assert changed_paths(str(repo), first, second, tmp_path) == {
        "machines/nyc1/r01.yaml",
        "clusters/k8s-nyc1.yaml",
        "clusters/k8s-nyc1-renamed.yaml",
    }
    assert changed_paths(str(repo), second, second, tmp_path) == set()
    with pytest.raises(SourceError):
        changed_paths(str(repo), first, "nope", tmp_path)


def test_symlink_leaving_the_repo_in_a_commit_is_refused(repo: Path, tmp_path: Path) -> None:
    (repo / "machines" / "escape.yaml").symlink_to("../../../../etc/passwd.yaml")
    (repo / "machines" / "alias.yaml").symlink_to("nyc1/r01.yaml")
    commit_all(repo, "symlinks")
    code, diagnostics = _validate("--repo", str(repo), "--cache-dir", str(tmp_path / "c"))
    assert code == 1
    codes = {(d["code"], d["path"]) for d in diagnostics}
    assert ("symlink-escape", "machines/escape.yaml") in codes
    # The in-repo symlink is read through: its machines are then defined twice.
    assert ("duplicate-name", "machines/nyc1/r01.yaml") in codes or (
        "duplicate-name",
        "machines/alias.yaml",
    ) in codes
