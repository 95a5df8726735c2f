"""Read a fleet repo from Git's object database at a revision, without a checkout.

A local path is opened in place; a URL (file://, https://, ssh://, user@host:path)
is cloned once into the cache and fetched on later uses. Every pygit2 error is
mapped to `SourceError` here: nothing from pygit2 reaches the caller.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import posixpath
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pygit2

from reconciler.errors import SourceError, UsageError
from reconciler.source.snapshot import Snapshot, SourceFile, SourceProblem, is_yaml_path, stat_named, under

_URL = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|[^/\s:]+@[^/\s:]+:)", re.I)
_MIRROR = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]
_LINK_MODE = pygit2.enums.FileMode.LINK
_TREE_MODE = pygit2.enums.FileMode.TREE


def is_url(location: str) -> bool:
    return bool(_URL.match(location))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _redact(url: str) -> str:
    """Never print credentials embedded in a URL."""
    return re.sub(r"//[^/@]*@", "//***@", url)


def open_repository(location: str, cache_dir: Path) -> pygit2.Repository:
    """Open a local repository, or clone/fetch a URL into the cache."""
    if is_url(location):
        return _mirror(location, cache_dir)
    path = Path(location)
    stat_named(path, f"no such repository: {location}", "pass a path to a Git repository or a URL")
    try:
        found = pygit2.discover_repository(str(path))
        if found is None:
            raise SourceError(
                f"{location} is not inside a Git repository", hint="run `git init` or pass a URL"
            )
        return pygit2.Repository(found)
    except pygit2.GitError as exc:
        raise SourceError(f"cannot open repository {location}: {exc}") from exc


def _mirror(url: str, cache_dir: Path) -> pygit2.Repository:
    name = hashlib.sha256(url.encode()).hexdigest()[:20]
    target = cache_dir / "repos" / f"{name}.git"
    try:
        return _fetch_into(url, target, cache_dir / "repos" / f"{name}.lock")
    except OSError as exc:
        raise SourceError(
            f"cannot keep a clone of {_redact(url)} in {cache_dir / 'repos'}: {exc.strerror}",
            hint="point --cache-dir (or XDG_CACHE_HOME) at a writable directory",
        ) from None


def _fetch_into(url: str, target: Path, lock: Path) -> pygit2.Repository:
    with _locked(lock):
        try:
            if (target / "HEAD").exists():
                repo = pygit2.Repository(str(target))
            else:
                repo = pygit2.clone_repository(url, str(target), bare=True)
            repo.remotes["origin"].fetch(_MIRROR)
            return repo
        except (pygit2.GitError, KeyError, ValueError, OSError) as exc:
            raise SourceError(
                f"cannot fetch {_redact(url)}: {exc}",
                hint="check the URL, the network and the credentials of your Git client",
            ) from exc


def resolve(repo: pygit2.Repository, revision: str) -> pygit2.Commit:
    """The commit a revision names: a branch, tag, commit id or an expression like HEAD~2."""
    for candidate in (revision, f"origin/{revision}", f"refs/remotes/origin/{revision}"):
        try:
            obj = repo.revparse_single(candidate)
            commit = obj.peel(pygit2.Commit)
            assert isinstance(commit, pygit2.Commit)
            return commit
        except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError):
            continue
    raise SourceError(
        f"unknown revision {revision!r}",
        hint="give a branch, tag or commit id that exists in the repository (fetch it first if it is remote)",
    )


def _walk(
    repo: pygit2.Repository, tree: pygit2.Tree, prefix: str = ""
) -> Iterator[tuple[str, pygit2.Object, int]]:
    for entry in tree:
        name = entry.name or ""
        path = f"{prefix}{name}"
        if entry.filemode == _TREE_MODE:
            if not name.startswith("."):
                sub = repo[entry.id]
                assert isinstance(sub, pygit2.Tree)
                yield from _walk(repo, sub, f"{path}/")
        else:
            yield path, entry, entry.filemode


def _directory(directory: str) -> str:
    """A directory of the repository as Git names it: `fleet`, `infra/fleet` ("" is the root)."""
    parts = [part for part in directory.replace("\\", "/").split("/") if part not in ("", ".")]
    if directory.startswith("/") or ".." in parts:
        raise UsageError(
            f"--path {directory!r} is not a directory inside the repository",
            hint="give it relative to the repository's root, e.g. --path fleet",
        )
    return "/".join(parts)


def _subtree(repo: pygit2.Repository, tree: pygit2.Tree, directory: str, where: str) -> pygit2.Tree:
    if not directory:
        return tree
    try:
        found = tree[directory]
    except KeyError:
        raise SourceError(
            f"{where} has no directory {directory}", hint="--path names the fleet repo's directory"
        ) from None
    sub = repo[found.id]
    if not isinstance(sub, pygit2.Tree):
        raise SourceError(f"{directory} is not a directory at {where}")
    return sub


def snapshot_at(repo: pygit2.Repository, revision: str, location: str, directory: str = "") -> Snapshot:
    """The YAML files of `revision`, or of its `directory` (paths then start there, and the
    fleet repo ends there: a symlink that leaves it is refused as one that leaves the repo)."""
    commit = resolve(repo, revision)
    directory = _directory(directory)
    shown = _redact(location) if is_url(location) else location
    tree = _subtree(repo, commit.tree, directory, f"{shown}@{revision}")
    blobs: dict[str, str] = {}
    files: list[SourceFile] = []
    problems: list[SourceProblem] = []
    entries = list(_walk(repo, tree))
    by_path = {path: entry for path, entry, _ in entries}
    for path, entry, mode in entries:
        if not is_yaml_path(path):
            continue
        oid = entry.id
        if mode == _LINK_MODE:
            link = repo[entry.id]
            assert isinstance(link, pygit2.Blob)
            target = bytes(link.data).decode("utf-8", "replace")
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
            if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
                problems.append(
                    SourceProblem(
                        path,
                        "symlink-escape",
                        f"symlink points outside the repo (to {target})",
                        "replace the symlink with the file itself, inside the repo",
                    )
                )
                continue
            if resolved not in by_path:
                problems.append(
                    SourceProblem(
                        path, "symlink-broken", "symlink points to nothing", "fix or remove the symlink"
                    )
                )
                continue
            oid = by_path[resolved].id
        try:
            size = repo.odb.read_header(oid)[1]
        except (pygit2.GitError, KeyError, ValueError) as exc:
            raise SourceError(f"cannot read {path} at {revision}: {exc}") from exc
        blobs[path] = str(oid)
        files.append(SourceFile(path, str(oid), size))

    def read(entry: SourceFile) -> bytes:
        try:
            blob = repo[blobs[entry.path]]
        except (KeyError, ValueError, pygit2.GitError) as exc:
            raise SourceError(f"cannot read {entry.path}: {exc}") from exc
        assert isinstance(blob, pygit2.Blob)
        return bytes(blob.data)

    def export(destination: Path, prefixes: Sequence[str]) -> None:
        _export(repo, entries, by_path, destination, prefixes)

    return Snapshot(
        f"{shown}@{revision}{':' + directory if directory else ''} ({str(commit.id)[:12]})",
        tuple(files),
        tuple(problems),
        read,
        commit=str(commit.id),
        export=export,
    )


def _export(
    repo: pygit2.Repository,
    entries: Sequence[tuple[str, pygit2.Object, int]],
    by_path: Mapping[str, pygit2.Object],
    destination: Path,
    prefixes: Sequence[str],
) -> None:
    """Write the files of the commit under `prefixes` into `destination`, from Git's objects
    (never from a checkout, which may differ). A symlink becomes a copy of what it points to
    when that is a file of the repo; one leaving the repo is left out."""
    for path, entry, mode in entries:
        if not under(path, prefixes):
            continue
        oid = entry.id
        if mode == _LINK_MODE:
            link = repo[oid]
            assert isinstance(link, pygit2.Blob)
            target = bytes(link.data).decode("utf-8", "replace")
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
            if target.startswith("/") or resolved.startswith("..") or resolved not in by_path:
                continue
            oid = by_path[resolved].id
        try:
            blob = repo[oid]
        except (KeyError, ValueError, pygit2.GitError) as exc:
            raise SourceError(f"cannot read {path}: {exc}") from exc
        if not isinstance(blob, pygit2.Blob):
            continue  # a submodule: its files are not in this repo
        target_path = destination / path
        try:
            target_path.parent.mkdir(parents=True, exist_ok=True)
            target_path.write_bytes(bytes(blob.data))
            target_path.chmod(0o755 if mode == pygit2.enums.FileMode.BLOB_EXECUTABLE else 0o644)
        except OSError as exc:
            raise SourceError(f"cannot write {target_path}: {exc.strerror}") from None


def read_revision(location: str, revision: str, cache_dir: Path, directory: str = "") -> Snapshot:
    return snapshot_at(open_repository(location, cache_dir), revision, location, directory)


def branch_head(location: str, branch: str, cache_dir: Path) -> str:
    """The commit a branch points at now (a URL is fetched first): what a controller follows."""
    return str(resolve(open_repository(location, cache_dir), branch).id)


def fetch_pull_head(location: str, vcs: str, number: int, cache_dir: Path) -> None:
    """Fetch the head of pull request `number` (GitHub's refs/pull/N/head, GitLab's
    refs/merge-requests/N/head: a fork's commits are only there) into the clone of a URL; a
    local repository must already hold it."""
    if not is_url(location):
        return
    ref = f"refs/pull/{number}/head" if vcs == "github" else f"refs/merge-requests/{number}/head"
    repo = open_repository(location, cache_dir)
    try:
        repo.remotes["origin"].fetch([f"+{ref}:{ref}"])
    except (pygit2.GitError, KeyError, ValueError) as exc:
        raise SourceError(f"cannot fetch {ref} of {_redact(location)}: {exc}") from exc


def merge_base(location: str, rev_a: str, rev_b: str, cache_dir: Path) -> str:
    """The best common ancestor of two revisions: what a pull request's changes are made on."""
    repo = open_repository(location, cache_dir)
    found = repo.merge_base(resolve(repo, rev_a).id, resolve(repo, rev_b).id)
    if found is None:
        raise SourceError(
            f"{rev_a} and {rev_b} have no common ancestor",
            hint="fetch the whole history (e.g. actions/checkout with fetch-depth: 0)",
        )
    return str(found)


def changed_paths(location: str, rev_a: str, rev_b: str, cache_dir: Path) -> set[str]:
    """Paths added, removed, modified or renamed between two revisions."""
    repo = open_repository(location, cache_dir)
    tree_a, tree_b = resolve(repo, rev_a).tree, resolve(repo, rev_b).tree
    try:
        diff = tree_a.diff_to_tree(tree_b)
    except pygit2.GitError as exc:
        raise SourceError(f"cannot diff {rev_a}..{rev_b}: {exc}") from exc
    changed: set[str] = set()
    for delta in diff.deltas:
        changed.add(delta.old_file.path)
        changed.add(delta.new_file.path)
    return changed
