"""Time `fleet validate` on a generated fleet repo: cold cache, warm cache, one changed file.

The repo is generated once per set of generator arguments and kept under
`--workdir`; every run first resets it to the generated commit, so runs are
comparable. Each measurement is one `fleet validate` child process, timed from
spawn to exit (interpreter start-up included) with its own peak RSS from
os.wait4. Figures are printed next to their targets; a benchmark never fails.

Run from the repo root: `python -m bench.bench_validate` or `python bench/bench_validate.py`.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pygit2

try:
    from bench.gen_fleet import commit_all, generate
except ImportError:  # run as a script: bench/ itself is on sys.path
    from gen_fleet import commit_all, generate  # type: ignore[no-redef,import-not-found]

GENERATOR_VERSION = 1  # bump when gen_fleet's output changes, so cached repos are rebuilt
BASE_TAG = "refs/tags/bench-base"
GIB = 1024**3


@dataclass(frozen=True)
class Target:
    seconds: float
    rss_bytes: int


@dataclass(frozen=True)
class Measurement:
    label: str
    seconds: float
    max_rss_bytes: int
    exit_code: int
    output_tail: str


TARGETS = {
    "cold": Target(seconds=10.0, rss_bytes=int(1.5 * GIB)),
    "warm": Target(seconds=1.0, rss_bytes=int(1.5 * GIB)),
    "one file changed": Target(seconds=0.5, rss_bytes=int(1.5 * GIB)),
}


def _repo_dir(workdir: Path, args: argparse.Namespace) -> Path:
    return workdir / (
        f"repo-g{GENERATOR_VERSION}-m{args.machines}-v{args.vms}-c{args.clusters}-s{args.spark_pools}"
        f"-r{args.machines_per_rack}-x{args.sites}-seed{args.seed}"
    )


def _ensure_repo(repo_dir: Path, args: argparse.Namespace) -> float | None:
    """Generate the repo unless a complete one is cached; return the generation seconds if generated."""
    if repo_dir.exists():
        if not args.regenerate and BASE_TAG in pygit2.Repository(str(repo_dir)).references:
            return None
        shutil.rmtree(repo_dir)  # an interrupted or unwanted earlier generation
    started = time.perf_counter()
    generate(
        repo_dir,
        machines=args.machines,
        vms=args.vms,
        clusters=args.clusters,
        spark_pools=args.spark_pools,
        machines_per_rack=args.machines_per_rack,
        seed=args.seed,
        sites=args.sites,
    )
    seconds = time.perf_counter() - started
    repo = pygit2.Repository(str(repo_dir))
    repo.references.create(BASE_TAG, repo.head.target)
    return seconds


def _reset_to_base(repo_dir: Path) -> None:
    repo = pygit2.Repository(str(repo_dir))
    repo.reset(repo.references[BASE_TAG].target, pygit2.enums.ResetMode.HARD)


def _change_one_machine_file(repo_dir: Path) -> str:
    """Change the team label of the first Machine in one rack file, commit it, return the file."""
    rack_files = sorted((repo_dir / "machines").glob("*/*.yaml"))
    path = rack_files[len(rack_files) // 2]
    text, count = re.subn(r"^    team: .*$", "    team: bench-edit", path.read_text(), count=1, flags=re.M)
    if count != 1:
        raise RuntimeError(f"{path} has no team label to change")
    path.write_text(text, encoding="utf-8")
    commit_all(repo_dir, f"bench: change one label in {path.relative_to(repo_dir)}")
    return str(path.relative_to(repo_dir))


def _measure(label: str, command: list[str], env: dict[str, str], log_dir: Path) -> Measurement:
    """Run one child and wait for it with os.wait4, which reports that child's own peak RSS."""
    log = log_dir / f"{label.replace(' ', '-')}.log"
    with log.open("wb") as output:
        started = time.perf_counter()
        child = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss is KiB on Linux and bytes on macOS.
    rss = usage.ru_maxrss if sys.platform == "darwin" else usage.ru_maxrss * 1024
    tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:])
    return Measurement(label, seconds, rss, child.returncode, tail)


def _format_bytes(size: int) -> str:
    return f"{size / GIB:.2f} GiB" if size >= GIB else f"{size / 1024**2:.0f} MiB"


def _tree_size(repo_dir: Path) -> tuple[int, int]:
    """Files and bytes of the work tree, without .git."""
    files = size = 0
    for directory, subdirs, names in os.walk(repo_dir):
        if ".git" in subdirs:
            subdirs.remove(".git")
        for name in names:
            files += 1
            size += os.path.getsize(os.path.join(directory, name))
    return files, size


def _print_table(measurements: list[Measurement]) -> None:
    header = f"{'run':<18} {'seconds':>8} {'target':>9} {'peak RSS':>10} {'target':>10}  {'exit':>4}  verdict"
    print(header)
    print("-" * len(header))
    for m in measurements:
        target = TARGETS[m.label]
        within = m.exit_code == 0 and m.seconds <= target.seconds and m.max_rss_bytes <= target.rss_bytes
        verdict = "within target" if within else ("FAILED RUN" if m.exit_code else "over target")
        print(
            f"{m.label:<18} {m.seconds:>8.2f} {'<= ' + format(target.seconds, 'g') + ' s':>9} "
            f"{_format_bytes(m.max_rss_bytes):>10} {'<= ' + _format_bytes(target.rss_bytes):>10}  "
            f"{m.exit_code:>4}  {verdict}"
        )


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--workdir", type=Path, default=Path("/tmp/fleet-bench"), help="where repos are cached"
    )
    parser.add_argument("--machines", type=int, default=110_000)
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--clusters", type=int, default=500)
    parser.add_argument("--spark-pools", type=int, default=2_000)
    parser.add_argument("--machines-per-rack", type=int, default=40)
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--regenerate", action="store_true", help="rebuild the cached repo")
    parser.add_argument(
        "--fleet", type=Path, default=None, help="the fleet executable; default: the one next to this python"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    repo_dir = _repo_dir(args.workdir, args)
    try:
        generated = _ensure_repo(repo_dir, args)
    except ValueError as exc:
        print(f"bench_validate: cannot generate the repo: {exc}", file=sys.stderr)
        return 2
    _reset_to_base(repo_dir)
    files, size = _tree_size(repo_dir)
    base = str(pygit2.Repository(str(repo_dir)).head.target)[:12]
    print(f"repo      {repo_dir} at {base}: {files} files, {_format_bytes(size)} in the work tree")
    print(f"generated {f'in {generated:.1f} s' if generated is not None else 'earlier (cached)'}")

    fleet = args.fleet or Path(sys.executable).parent / "fleet"
    if not fleet.exists():
        print(f"\n{fleet} does not exist yet; nothing to measure")
        return 0
    command = [str(fleet), "validate", "--repo", str(repo_dir), "--rev", "HEAD"]
    print(f"command   {' '.join(command)}\n")

    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as scratch:
        scratch_dir = Path(scratch)
        cache = scratch_dir / "cache"
        cache.mkdir()
        env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
        measurements = [
            _measure("cold", command, env, scratch_dir),
            _measure("warm", command, env, scratch_dir),
        ]
        changed = _change_one_machine_file(repo_dir)
        measurements.append(_measure("one file changed", command, env, scratch_dir))
        _reset_to_base(repo_dir)

    _print_table(measurements)
    print(f"\n'one file changed': one label edited in {changed}, new HEAD validated with the warm cache.")
    for m in measurements:
        if m.exit_code:
            print(f"\n--- {m.label}: fleet validate exited {m.exit_code}; its last output lines:")
            print(m.output_tail)
    return 0


if __name__ == "__main__":
    sys.exit(main())


def ensure_repo(workdir: Path) -> Path:
    """The default-size synthetic repo, generated once and cached (for the other benchmarks)."""
    args = _parse_args([f"--workdir={workdir}"])
    repo_dir = _repo_dir(workdir, args)
    _ensure_repo(repo_dir, args)
    _reset_to_base(repo_dir)
    return repo_dir
