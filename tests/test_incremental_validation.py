"""A revision loaded from the one before it (the controller's next commit) checks again only what
changed, and says exactly what a whole load of it says: random edits to a Git repository of the
example fleet (duplicate names made and resolved, dangling references, shared BMCs, deleted and
moved documents, deleted files, invalid documents and YAML, fleet.yaml edits), each committed, then
loaded both ways and compared: every diagnostic (file:line:col, message), the documents, the counts."""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fleet_testing import commit_all, copy_example, git_init
from ruamel.yaml import YAML

from providers.access import Access
from providers.registry import ProviderPool
from reconciler.apply.guards import BlastIndex
from reconciler.engine import Engine
from reconciler.kinds import referrers
from reconciler.settings import Settings
from reconciler.source.git import read_revision
from reconciler.spec.cache import SpecCache
from reconciler.spec.loader import InvalidRevision, LoadedRevision, load_revision

STEPS = 40


class Repo:
    """The example fleet in a Git repository, edited document by document."""

    def __init__(self, path: Path, rng: random.Random) -> None:
        self.path = path
        self.rng = rng
        self.originals = {p: self.read(p) for p in self.spec_files()}
        self.counter = 0
        self.parsed: dict[str, tuple[str, list[Any] | None]] = {}

    def spec_files(self) -> list[str]:
        return sorted(
            str(p.relative_to(self.path))
            for p in self.path.rglob("*.yaml")
            if "playbooks" not in p.parts and p.name != "fleet.yaml"
        )

    def read(self, path: str) -> str:
        return (self.path / path).read_text()

    def write(self, path: str, text: str) -> None:
        target = self.path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def documents(self, path: str) -> list[Any] | None:
        """The documents of a file, or None when it does not parse (an earlier edit broke it).
        Every edit of them is written at once, which is what makes keeping them by text right."""
        text = self.read(path)
        kept = self.parsed.get(path)
        if kept is not None and kept[0] == text:
            return kept[1]
        try:
            loaded: list[Any] | None = list(YAML().load_all(text))
        except Exception:  # ruamel raises many kinds; a broken file is left alone
            loaded = None
        if loaded is not None and not all(isinstance(d, dict) and "metadata" in d for d in loaded):
            loaded = None
        self.parsed[path] = (text, loaded)
        return loaded

    def dump(self, path: str, documents: list[Any]) -> None:
        if not documents:
            (self.path / path).unlink()
            return
        out = io.StringIO()
        YAML().dump_all(documents, out)
        self.write(path, out.getvalue())

    def all_documents(self) -> list[tuple[str, int, Any]]:
        found = []
        for path in self.spec_files():
            for index, document in enumerate(self.documents(path) or []):
                found.append((path, index, document))
        return found

    def names(self, kind: str) -> list[str]:
        return [d["metadata"]["name"] for _, _, d in self.all_documents() if d.get("kind") == kind]

    def fresh_name(self) -> str:
        self.counter += 1
        return f"edit-{self.counter}"

    # --- the edits ------------------------------------------------------------------------------

    def pick(self, kind: str | None = None) -> tuple[str, int, Any] | None:
        found = [d for d in self.all_documents() if kind is None or d[2].get("kind") == kind]
        return self.rng.choice(found) if found else None

    def edit(self, kind: str | None, change: Callable[[Any], None]) -> str:
        picked = self.pick(kind)
        if picked is None:
            return "nothing to edit"
        path, index, _ = picked
        documents = self.documents(path)
        assert documents is not None
        change(documents[index])
        self.dump(path, documents)
        return f"{path}[{index}]"

    def rename(self) -> str:
        kind = self.rng.choice(["Machine", "VirtualMachine", "Cluster", "SparkPool"])
        names = self.names(kind)
        new = self.rng.choice([*names, self.fresh_name()]) if names else self.fresh_name()
        return "rename " + self.edit(kind, lambda d: d["metadata"].__setitem__("name", new))

    def move(self, keep: bool) -> str:
        picked = self.pick()
        if picked is None:
            return "nothing to move"
        path, index, _ = picked
        documents = self.documents(path)
        assert documents is not None
        moved = documents[index] if keep else documents.pop(index)
        target = self.rng.choice([*self.spec_files(), f"extra/{self.fresh_name()}.yaml"])
        if target != path and not keep:
            self.dump(path, documents)
        others = self.documents(target) if (self.path / target).exists() else []
        if others is None:
            return "target broken"
        others.insert(self.rng.randrange(len(others) + 1), moved)
        self.dump(target, others)
        return f"{'copy' if keep else 'move'} {path}[{index}] to {target}"

    def delete_document(self) -> str:
        picked = self.pick()
        if picked is None:
            return "nothing to delete"
        path, index, _ = picked
        documents = self.documents(path)
        assert documents is not None
        documents.pop(index)
        self.dump(path, documents)
        return f"delete {path}[{index}]"

    def delete_file(self) -> str:
        path = self.rng.choice(self.spec_files())
        (self.path / path).unlink()
        return f"delete {path}"

    def restore(self) -> str:
        path = self.rng.choice(sorted(self.originals))
        self.write(path, self.originals[path])
        return f"restore {path}"

    def break_yaml(self) -> str:
        path = self.rng.choice(self.spec_files())
        broken = self.rng.choice(["spec: [unclosed\n", "\tpower: on\n", "metadata: {name: a, name: b}\n"])
        self.write(path, self.read(path) + "---\nkind: Machine\n" + broken)
        return f"break {path}"

    def invalid_document(self) -> str:
        return "invalid " + self.edit("Machine", lambda d: d["spec"].__setitem__("power", "maybe"))

    def host(self) -> str:
        machines = self.names("Machine")
        new = self.rng.choice([*machines, self.fresh_name()])
        return "host " + self.edit("VirtualMachine", lambda d: d["spec"].__setitem__("host", new))

    def role(self) -> str:
        role = self.rng.choice(["hypervisor", "kubernetes-node", "spark-node"])
        return "role " + self.edit("Machine", lambda d: d["spec"].__setitem__("role", role))

    def bmc(self) -> str:
        other = self.pick("Machine")
        if other is None:
            return "no Machine"
        address = other[2]["spec"]["bmc"]["address"]
        return "bmc " + self.edit("Machine", lambda d: d["spec"]["bmc"].__setitem__("address", address))

    def member(self) -> str:
        refs = [f"machine/{n}" for n in self.names("Machine")] + [
            f"virtualmachine/{n}" for n in self.names("VirtualMachine")
        ]
        ref = self.rng.choice([*refs, f"machine/{self.fresh_name()}"])

        def change(cluster: Any) -> None:
            members = cluster["spec"].setdefault("members", [])
            if members and self.rng.random() < 0.5:
                members[self.rng.randrange(len(members))]["ref"] = ref
            else:
                members.append({"ref": ref})

        return "member " + self.edit("Cluster", change)

    def pool(self) -> str:
        other = self.pick("SparkPool")
        if other is None:
            return "no SparkPool"
        field = self.rng.choice(["namespace", "cluster", "queue"])

        def change(pool: Any) -> None:
            if field == "queue":
                pool["spec"]["queue"]["name"] = other[2]["spec"]["queue"]["name"]
            elif field == "cluster":
                pool["spec"]["cluster"] = self.rng.choice([*self.names("Cluster"), self.fresh_name()])
            else:
                pool["spec"]["namespace"] = other[2]["spec"]["namespace"]

        return f"pool {field} " + self.edit("SparkPool", change)

    def fleet(self) -> str:
        """fleet.yaml changes the checks of every file: the next load is a whole one."""
        text = self.read("fleet.yaml")
        self.write("fleet.yaml", text + f"# edit {self.fresh_name()}\n")
        return "fleet.yaml"

    def random_edit(self) -> str:
        edits: list[tuple[float, Callable[[], str]]] = [
            (3, self.rename),
            (2, lambda: self.move(keep=False)),
            (2, lambda: self.move(keep=True)),
            (1, self.delete_document),
            (0.5, self.delete_file),
            (3, self.restore),
            (1, self.break_yaml),
            (1, self.invalid_document),
            (2, self.host),
            (1, self.role),
            (1.5, self.bmc),
            (2, self.member),
            (2, self.pool),
            (0.3, self.fleet),
        ]
        weights, actions = zip(*edits, strict=True)
        return self.rng.choices(actions, weights=weights)[0]()


def _shape(revision: LoadedRevision) -> dict[str, Any]:
    return {
        "diagnostics": revision.diagnostics,
        "counts": revision.counts,
        "files": revision.files,
        "fleet": revision.fleet,
        "documents": [(d.path, d.index, d.document) for d in revision.documents],
        # The maps of the documents, in order: a load from a base that had made them makes them
        # from the base's (an edit), and they must be what a walk of every document makes.
        "by_address": list(revision.by_address.items()),
        "resources": list(revision.resources.items()),
        "paths": list(revision.paths.items()),
        "machines": list(revision.machines.items()),
        # Indexes a revision loaded from a base takes over from it and updates with the edit.
        "referrers": referrers(revision),
        "racks": BlastIndex.of(revision).racks,
        "cluster nodes": BlastIndex.of(revision).clusters,
    }


@pytest.mark.parametrize("seed", [1, 2], ids=["seed-1", "seed-2"])
def test_random_edits_load_incrementally_as_a_whole_load_does(tmp_path: Path, seed: int) -> None:
    path = copy_example(tmp_path / "fleet")
    git_init(path)
    repo = Repo(path, random.Random(seed))
    settings = Settings(cache_dir=tmp_path / "cache", state_dir=tmp_path / "state", config=False, workers=1)
    cache = SpecCache(tmp_path / "cache" / "specs.sqlite")
    engine = Engine(settings, ProviderPool(Access(), settings.state_dir), None, cache)
    engine.load(read_revision(str(path), "HEAD", tmp_path))
    kinds_of_problem: set[str] = set()
    carried = 0
    for step in range(STEPS):
        what = repo.random_edit()
        commit_all(path, f"step {step}: {what}")
        snapshot = read_revision(str(path), "HEAD", tmp_path)
        incremental = engine.load(snapshot)
        carried += "by_address" in vars(incremental)  # made from the last revision's (_shape made them)
        whole = load_revision(read_revision(str(path), "HEAD", tmp_path))
        assert _shape(incremental) == _shape(whole), f"step {step}: {what}"
        kinds_of_problem.update(d.code for d in whole.diagnostics)
        if whole.errors:
            with pytest.raises(InvalidRevision):
                engine.gate(incremental)
        else:
            assert engine.gate(incremental) == ()
    # The edits made the problems the incremental checks must find and forget.
    assert {"duplicate-name", "unresolved-reference"} <= kinds_of_problem
    assert carried >= 3, "no edit kept the documents' addresses: the carried maps went untested"
    assert kinds_of_problem & {"yaml-syntax", "yaml-tab", "duplicate-key"}


def test_a_one_file_change_reads_one_file_and_takes_the_state_it_starts_from(tmp_path: Path) -> None:
    path = copy_example(tmp_path / "fleet")
    git_init(path)
    first = load_revision(read_revision(str(path), "HEAD", tmp_path))
    rack = path / "machines" / "nyc1" / "r02.yaml"
    rack.write_text(rack.read_text().replace("power: on", "power: off", 1))
    commit_all(path, "one file")
    second = load_revision(read_revision(str(path), "HEAD", tmp_path), base=first)
    assert (second.parsed, second.errors) == (1, [])
    assert _shape(second) == _shape(load_revision(read_revision(str(path), "HEAD", tmp_path)))
    # `first` was the base of `second`: a load from it again is a whole one, and still right.
    again = load_revision(read_revision(str(path), "HEAD", tmp_path), base=first)
    assert again.parsed == second.files - 1 and _shape(again) == _shape(second)


def test_valid_edits_carry_the_indexes_and_keep_them_right(tmp_path: Path) -> None:
    """A valid revision loaded from a valid one takes over its indexes (what refers to what, the
    racks, the clusters' nodes) and its maps, updated with the edited documents: each is what a
    whole load makes, after edits that power a Machine off, move a VM to another host, Machines to
    another rack and a node out of a cluster."""
    path = copy_example(tmp_path / "fleet")
    git_init(path)
    settings = Settings(cache_dir=tmp_path / "cache", state_dir=tmp_path / "state", config=False, workers=1)
    engine = Engine(
        settings, ProviderPool(Access(), settings.state_dir), None, SpecCache(tmp_path / "c.sqlite")
    )
    first = engine.load(read_revision(str(path), "HEAD", tmp_path))
    assert first.errors == [] and _shape(first)["referrers"]  # made: the next load takes them
    edits = [
        ("machines/nyc1/r02.yaml", "power: on", "power: off"),
        ("virtual-machines/k8s-nyc1-control-plane.yaml", "host: nyc1-r01-01", "host: nyc1-r02-01"),
        ("machines/nyc1/r02.yaml", "rack: r02", "rack: r04"),
        ("clusters/k8s-nyc1.yaml", "ref: machine/nyc1-r04-04", "ref: machine/nyc1-r02-05"),
    ]
    for file, old, new in edits:
        target = path / file
        assert old in target.read_text(), (file, old)
        target.write_text(target.read_text().replace(old, new, 1))
        commit_all(path, f"{file}: {new}")
        revision = engine.load(read_revision(str(path), "HEAD", tmp_path))
        whole = load_revision(read_revision(str(path), "HEAD", tmp_path))
        assert whole.errors == [], f"{file}: {old} -> {new}"
        assert revision.edit is not None and revision.edit.indexes is not None, file
        assert {"kinds.referrers", "guards.racks", "guards.cluster-nodes"} <= revision.edit.indexes.keys()
        assert "by_address" in vars(revision), f"{file}: the maps were not carried"
        assert _shape(revision) == _shape(whole), f"{file}: {old} -> {new}"
        assert "kinds.referrers" not in revision.edit.indexes  # taken over, not made again
