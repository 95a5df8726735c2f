"""Benchmark: the commit of a drift pull request, for 1,000 drifted fields across 100 files.

A synthetic fleet (`gen_fleet`: 90 rack files of 40 Machines and 10 files of 100
VirtualMachines by default) is committed and cloned bare. Ten documents of each of 100 files
drift by one field each, cycling through the fields a drift PR adopts: a Machine's power
(written `"on"` in the file), boot device, and whether the boot device persists (left at its
default, so inserted); a VM's vCPUs, memory and autostart. Timed: building the spec edits
(`adopt_drift`, which loads the edited repo again through the one loader, with the validation
cache warm from loading the base revision) and building the commit on the bare copy
(`commit_files`, no checkout), then pushing it to a branch there. Every edited file is compared
with the original line by line: the changed lines per drifted field should be 1. Figures are
printed beside their targets, never asserted.

Run from the repo root: `python bench/bench_drift_pr.py` (about 5 s on 2 cores).
"""

from __future__ import annotations

import argparse
import difflib
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pygit2

from bench.gen_fleet import generate
from reconciler.kinds.adopt import DriftedField, adopt_drift
from reconciler.source.git import commit_files, push_branch, read_revision
from reconciler.spec import models
from reconciler.spec.cache import SpecCache
from reconciler.spec.loader import LoadedRevision, load_revision
from reconciler.spec.quantity import canonical_quantity, quantity_value

TARGET_EDITS_SECONDS = 5.0
TARGET_COMMIT_SECONDS = 1.0
TARGET_LINES_PER_FIELD = 1.0


def _machine_drift(machine: models.Machine, number: int) -> DriftedField:
    field = ("power", "bootDevice", "bootPersistent")[number % 3]
    live: Any = {
        "power": "off" if machine.spec.power == "on" else "on",
        "bootDevice": "network" if machine.spec.bootDevice != "network" else "disk",
        "bootPersistent": not machine.spec.bootPersistent,
    }[field]
    return DriftedField(machine.address, field, live)


def _vm_drift(vm: models.VirtualMachine, number: int) -> DriftedField:
    field = ("vcpus", "memory", "autostart")[number % 3]
    half = quantity_value(vm.spec.memory) / 2
    live: Any = {
        "vcpus": max(1, vm.spec.vcpus - 1),
        "memory": canonical_quantity(str(int(half))),
        "autostart": not vm.spec.autostart,
    }[field]
    return DriftedField(vm.address, field, live)


def pick_drift(revision: LoadedRevision, files: int, per_file: int) -> list[DriftedField]:
    """`per_file` documents of each of `files` files (VM files first), one drifted field each."""
    by_path: dict[str, list[models.Document]] = {}
    for loaded in revision.documents:
        if isinstance(loaded.document, models.Machine | models.VirtualMachine):
            by_path.setdefault(loaded.path, []).append(loaded.document)
    paths = sorted(by_path, key=lambda p: (not p.startswith("virtual-machines/"), p))[:files]
    drifted: list[DriftedField] = []
    for path in paths:
        for number, document in enumerate(by_path[path][:per_file]):
            if isinstance(document, models.Machine):
                drifted.append(_machine_drift(document, number))
            elif isinstance(document, models.VirtualMachine):
                drifted.append(_vm_drift(document, number))
    return drifted


def changed_lines(old: str, new: str) -> int:
    """Lines changed, inserted or removed between two texts."""
    matcher = difflib.SequenceMatcher(None, old.splitlines(), new.splitlines(), autojunk=False)
    return sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal")


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--machines", type=int, default=3600, help="Machines, 40 a rack file")
    parser.add_argument("--vms", type=int, default=1000, help="VirtualMachines, 100 a file")
    parser.add_argument("--files", type=int, default=100, help="files with drift")
    parser.add_argument("--per-file", type=int, default=10, help="drifted fields per file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fleet-drift-pr-") as scratch:
        work, bare, cache_dir = Path(scratch, "fleet"), Path(scratch, "fleet.git"), Path(scratch, "cache")
        generate(work, machines=args.machines, vms=args.vms, clusters=0, spark_pools=0)
        pygit2.clone_repository(str(work), str(bare), bare=True)
        cache = SpecCache(cache_dir / "specs.sqlite")

        t0 = time.perf_counter()
        snapshot = read_revision(str(bare), "main", cache_dir)
        revision = load_revision(snapshot, cache)
        load_seconds = time.perf_counter() - t0
        drifted = pick_drift(revision, args.files, args.per_file)
        files = len(
            {d.path for d in revision.documents if d.document.address in {f.address for f in drifted}}
        )

        t0 = time.perf_counter()
        edits = adopt_drift(snapshot, revision, drifted, cache=cache)
        edits_seconds = time.perf_counter() - t0

        t0 = time.perf_counter()
        commit = commit_files(
            str(bare), "main", edits.files, "fleet: adopt drift", "fleet", "fleet@example.invalid", cache_dir
        )
        commit_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        push_branch(str(bare), "fleet/drift/all", commit, force=True, cache_dir=cache_dir)
        push_seconds = time.perf_counter() - t0

        by_path = {f.path: f for f in snapshot.files}
        lines = sum(
            changed_lines(snapshot.read(by_path[path]).decode("utf-8"), text)
            for path, text in edits.files.items()
        )
        repo = pygit2.Repository(str(bare))
        diff = repo.diff(repo.revparse_single("main"), repo.revparse_single(commit))
        per_field = lines / len(edits.adopted) if edits.adopted else float("nan")

    print(
        f"fleet: {args.machines} Machines, {args.vms} VirtualMachines; base revision loaded cold in"
        f" {load_seconds:.2f} s (not a target)"
    )
    print(
        f"drift: {len(drifted)} fields in {files} files; adopted {len(edits.adopted)},"
        f" not adopted {len(edits.not_adopted)}; the commit changes {len(diff)} files"
    )
    for reason in sorted({n.reason for n in edits.not_adopted})[:5]:
        print(f"  not adopted: {reason}")
    rows = [
        (
            "build the edits (adopt_drift, edited repo validated)",
            f"{edits_seconds:.2f} s",
            f"target <= {TARGET_EDITS_SECONDS:g} s",
        ),
        (
            "build the commit (commit_files on the bare copy)",
            f"{commit_seconds:.2f} s",
            f"target <= {TARGET_COMMIT_SECONDS:g} s",
        ),
        ("push the branch (local bare repository)", f"{push_seconds:.3f} s", "no target"),
        ("changed lines per drifted field", f"{per_field:.2f}", f"target {TARGET_LINES_PER_FIELD:g}"),
    ]
    for label, figure, target in rows:
        print(f"{label + ':':<55} {figure:>8}  ({target})")
    print(f"(whole benchmark {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
