"""What a new revision makes the controller reconcile at once: the documents that changed (not the
rest of their file), what depends on them, and every pass when fleet.yaml changed or a document
went away."""

from __future__ import annotations

from pathlib import Path

import pytest
from fleet_testing import copy_example

from reconciler.engine.changes import affected
from reconciler.source.worktree import read_worktree
from reconciler.spec.loader import LoadedRevision, load_revision

RACK = "machines/nyc1/r02.yaml"


def _load(repo: Path) -> LoadedRevision:
    return load_revision(read_worktree(repo))


@pytest.fixture()
def example(tmp_path: Path) -> Path:
    return copy_example(tmp_path / "repo")


def test_one_edited_machine_of_a_rack_file_is_the_only_one_reconciled(example: Path) -> None:
    before = _load(example)
    text = (example / RACK).read_text()
    # nyc1-r02-05 is a storage machine nothing refers to; its rack file holds several Machines.
    marker = "  name: nyc1-r02-05\n"
    assert marker in text and text.count("kind: Machine") > 1
    start = text.index(marker)
    power = text.index("  power: on", start)
    (example / RACK).write_text(text[:power] + "  power: off" + text[power + len("  power: on") :])
    after = _load(example)
    assert affected(before, after, {RACK}) == {"machine/nyc1-r02-05"}


def test_a_file_rewritten_with_the_same_values_reconciles_nothing(example: Path) -> None:
    before = _load(example)
    (example / RACK).write_text("# reformatted\n" + (example / RACK).read_text())
    assert affected(before, _load(example), {RACK}) == set()


@pytest.mark.parametrize(
    "changed",
    [pytest.param({"fleet.yaml"}, id="fleet.yaml changed: every pass")],
)
def test_fleet_yaml_asks_for_every_pass(example: Path, changed: set[str]) -> None:
    revision = _load(example)
    assert affected(revision, revision, changed) is None
