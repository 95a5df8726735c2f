"""Validation results are cached by Git blob id: unchanged files are never parsed twice."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from fleet_testing import commit_all, copy_example, git_init

from reconciler.source.git import read_revision
from reconciler.source.worktree import git_blob_id, read_worktree
from reconciler.spec import loader, validate
from reconciler.spec.cache import SpecCache
from reconciler.spec.loader import load_revision


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    path = copy_example(tmp_path / "fleet")
    git_init(path)
    return path


def _spec_file_count(repo: Path) -> int:
    return sum(1 for p in repo.rglob("*.yaml") if "playbooks" not in p.parts and p.name != "fleet.yaml")


def test_blob_ids_are_gits() -> None:
    assert git_blob_id(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_cold_warm_and_one_file_change(repo: Path, tmp_path: Path) -> None:
    cache = SpecCache(tmp_path / "cache.sqlite")
    cold = load_revision(read_revision(str(repo), "HEAD", tmp_path), cache)
    assert (cold.parsed, cold.from_cache, cold.errors) == (_spec_file_count(repo), False, [])

    warm = load_revision(read_revision(str(repo), "HEAD", tmp_path), cache)
    assert (warm.parsed, warm.from_cache, warm.diagnostics) == (0, True, cold.diagnostics)
    assert warm.counts == cold.counts

    rack = repo / "machines" / "nyc1" / "r02.yaml"
    rack.write_text(rack.read_text().replace("team: ", "team: x", 1))
    commit_all(repo, "one file")
    changed = load_revision(read_revision(str(repo), "HEAD", tmp_path), cache)
    assert (changed.parsed, changed.from_cache) == (1, False)


def test_an_error_is_remembered_with_its_location(repo: Path, tmp_path: Path) -> None:
    rack = repo / "machines" / "nyc1" / "r02.yaml"
    rack.write_text(rack.read_text().replace("bootDevice: disk", "bootDevice: floppy", 1))
    cache = SpecCache(tmp_path / "cache.sqlite")
    first = load_revision(read_worktree(repo), cache)
    second = load_revision(read_worktree(repo), cache)
    assert second.from_cache and first.diagnostics == second.diagnostics
    assert [(d.code, d.path) for d in second.errors] == [("invalid-value", "machines/nyc1/r02.yaml")]
    assert second.errors[0].line > 1
    # Cross-document results are not cached per file: a change elsewhere is still seen.
    other = repo / "machines" / "nyc1" / "r01.yaml"
    other.write_text(other.read_text() + "\n" + rack.read_text().split("---", 2)[1].join(["---", ""]))
    third = load_revision(read_worktree(repo), cache)
    assert third.parsed == 1 and any(d.code == "duplicate-name" for d in third.errors)


def test_changing_the_rules_in_fleet_yaml_revalidates_everything(repo: Path, tmp_path: Path) -> None:
    cache = SpecCache(tmp_path / "cache.sqlite")
    load_revision(read_worktree(repo), cache)
    fleet = repo / "fleet.yaml"
    fleet.write_text(fleet.read_text().replace("required: [team]", "required: [team, owner]", 1))
    again = load_revision(read_worktree(repo), cache)
    assert again.parsed == _spec_file_count(repo)
    assert {d.code for d in again.errors} == {"org-rule"}


def test_results_cached_by_other_validation_rules_are_not_used(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upgrade that changes a check (same version number or not) revalidates every file:
    the cache keys carry a digest of the validation code, not only the version."""
    cache = SpecCache(tmp_path / "cache.sqlite")
    load_revision(read_worktree(repo), cache)
    assert load_revision(read_worktree(repo), cache).from_cache
    monkeypatch.setattr(validate, "rules_digest", lambda: "other rules")
    monkeypatch.setattr(loader, "rules_digest", lambda: "other rules")
    again = load_revision(read_worktree(repo), cache)
    assert (again.from_cache, again.parsed) == (False, _spec_file_count(repo))


def test_a_corrupt_cache_is_rebuilt_not_fatal(repo: Path, tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    result = load_revision(read_worktree(repo), SpecCache(path))
    assert result.errors == []
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM file_results").fetchone()[0] > 0


def test_a_tampered_cache_entry_is_ignored(repo: Path, tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    load_revision(read_worktree(repo), SpecCache(path))
    with sqlite3.connect(path) as db:
        db.execute("UPDATE file_results SET payload = 'garbage'")
        db.execute("DELETE FROM revision_results")
    result = load_revision(read_worktree(repo), SpecCache(path))
    assert result.parsed == _spec_file_count(repo) and result.errors == []


def test_parallel_workers_give_the_same_result(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rack = repo / "machines" / "ldn1" / "r01.yaml"
    rack.write_text(rack.read_text().replace("power: on", "power: maybe", 1))
    serial = load_revision(read_worktree(repo), None, workers=1)
    monkeypatch.setattr(loader, "PARALLEL_THRESHOLD", 2)
    parallel = load_revision(read_worktree(repo), None, workers=2)
    assert serial.diagnostics == parallel.diagnostics and serial.errors


def test_an_engine_loads_an_unchanged_revision_once_and_a_changed_one_again(
    repo: Path, tmp_path: Path
) -> None:
    """What the controller's passes over an unchanged revision cost: nothing; a new commit is read
    from the revision before it: even without a cache, only its changed file is parsed."""
    from providers.access import Access
    from providers.registry import ProviderPool
    from reconciler.engine import Engine, SourceRef
    from reconciler.settings import Settings

    settings = Settings(cache_dir=tmp_path / "c", state_dir=tmp_path / "s")
    engine = Engine(settings, ProviderPool(Access(), settings.state_dir), None, None)
    ref = SourceRef(repo=str(repo), rev="HEAD")
    first = engine.load(engine.open_source(ref))
    assert engine.load(engine.open_source(ref)) is first
    rack = repo / "machines" / "nyc1" / "r02.yaml"
    rack.write_text(rack.read_text().replace("team: ", "team: x", 1))
    commit_all(repo, "one file")
    changed = engine.load(engine.open_source(ref))
    assert changed is not first and changed.commit != first.commit and changed.parsed == 1
    assert changed.diagnostics == load_revision(engine.open_source(ref)).diagnostics
