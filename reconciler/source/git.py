"""Read a fleet repo from Git's object database at a revision, without a checkout, and write
commits onto branches of it (drift pull requests), again without a working tree.

A local path is opened in place; a URL (file://, https://, ssh://, user@host:path)
is cloned once into the cache and fetched on later uses. Every pygit2 error is
mapped here to fleet's errors (`SourceError` when reading, `TemporaryError` or
`PermanentError` when pushing): nothing from pygit2 reaches the caller. Credentials
are passed in as values and never appear in a message: URLs are redacted and the
secret itself is scrubbed from whatever libgit2 says.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import fcntl
import hashlib
import posixpath
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

import pygit2

from reconciler.errors import FleetError, PermanentError, SourceError, TemporaryError, UsageError
from reconciler.source.snapshot import Snapshot, SourceFile, SourceProblem, is_yaml_path, stat_named, under

_URL = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|[^/\s:]+@[^/\s:]+:)", re.I)
_MIRROR = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]
_LINK_MODE = pygit2.enums.FileMode.LINK
_TREE_MODE = pygit2.enums.FileMode.TREE
_BLOB_MODE = pygit2.enums.FileMode.BLOB
# Where a push names the commit it sends: libgit2 pushes references, not bare commit ids.
_PUSH_REF = "refs/fleet/push/"
# Words of libgit2's messages that say a remote refused who we are (HTTP 401/403, SSH auth).
_AUTH_WORDS = ("auth", "401", "403", "credential", "permission denied", "unauthorized", "forbidden")
# Words that say the remote could not be reached now: worth trying again later.
_NETWORK_WORDS = (
    "timed out",
    "timeout",
    "connection refused",
    "connection reset",
    "could not resolve",
    "failed to resolve",
    "failed to connect",
    "unreachable",
    "502",
    "503",
    "504",
    "early eof",
)


@dataclasses.dataclass(frozen=True)
class GitCredentials:
    """A user name and a password or token for an HTTPS remote, resolved by the caller from a
    `credentialsRef`. Its repr hides the secret, and no message of this module ever holds it."""

    username: str
    secret: str = dataclasses.field(repr=False)

    @classmethod
    def token(cls, token: str, forge: str = "github") -> GitCredentials:
        """A forge's access token: GitHub takes any user name with it (`x-access-token` by
        convention), GitLab a token's with `oauth2`."""
        return cls("oauth2" if forge == "gitlab" else "x-access-token", token)


class _CredentialsRefused(Exception):
    """The remote asked again after being given the credentials (or none were given)."""


class _Callbacks(pygit2.RemoteCallbacks):
    """Hands the credentials to libgit2 once (it asks again only when the remote refused them),
    and records the references the remote refused to update."""

    def __init__(self, credentials: GitCredentials | None) -> None:
        super().__init__()
        self._given = credentials
        self._asked = 0
        self.refused: dict[str, str] = {}

    def credentials(
        self, url: str, username_from_url: str | None, allowed_types: pygit2.enums.CredentialType
    ) -> pygit2.UserPass:
        self._asked += 1
        if self._given is None:
            raise _CredentialsRefused("the remote asks for credentials and none were given")
        if not allowed_types & pygit2.enums.CredentialType.USERPASS_PLAINTEXT:
            raise _CredentialsRefused("the remote asks for another kind of credentials than a user and token")
        if self._asked > 1:  # libgit2 keeps what it was given: asking again means a refusal
            raise _CredentialsRefused("the remote refused the credentials")
        return pygit2.UserPass(self._given.username, self._given.secret)

    def push_update_reference(self, refname: str, message: str | None) -> None:
        if message:
            self.refused[refname] = message


def _scrub(text: str, credentials: GitCredentials | None) -> str:
    """A message with URLs redacted and the secret (as written or URL-encoded) replaced."""
    text = _redact(text)
    if credentials is not None and credentials.secret:
        for form in {credentials.secret, quote(credentials.secret, safe="")}:
            text = text.replace(form, "***")
    return text


def _shown(location: str) -> str:
    return _redact(location) if is_url(location) else location


def _remote_error(
    action: str, location: str, exc: Exception, credentials: GitCredentials | None
) -> FleetError:
    """A libgit2 failure talking to a remote as fleet's error: refused credentials and other
    refusals are permanent, an unreachable remote temporary."""
    said = _scrub(" ".join(str(exc).split()), credentials) or type(exc).__name__
    where = _shown(location)
    lowered = said.lower()
    if isinstance(exc, _CredentialsRefused) or any(word in lowered for word in _AUTH_WORDS):
        return PermanentError(
            f"cannot {action} {where}: the remote refused the credentials ({said})",
            hint="check the user and token the credentialsRef names, and that they may push there",
        )
    if any(word in lowered for word in _NETWORK_WORDS):
        return TemporaryError(
            f"cannot {action} {where}: {said}",
            delay=30.0,
            hint="the remote could not be reached; it is tried again",
        )
    if "non-fastforward" in lowered or "not fast-forward" in lowered:
        return PermanentError(
            f"cannot {action} {where}: the branch moved on and the commit does not follow it ({said})",
            hint="push with force to replace the branch, or build the commit on the branch's head",
        )
    return PermanentError(
        f"cannot {action} {where}: {said}", hint="check the URL and the remote's rules for the branch"
    )


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


def open_repository(
    location: str, cache_dir: Path, credentials: GitCredentials | None = None
) -> pygit2.Repository:
    """Open a local repository, or clone/fetch a URL into the cache (with `credentials` when the
    remote asks for them)."""
    if is_url(location):
        return _mirror(location, cache_dir, credentials)
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


def _mirror_paths(url: str, cache_dir: Path) -> tuple[Path, Path]:
    """The bare clone of a URL in the cache, and the lock file that guards it."""
    name = hashlib.sha256(url.encode()).hexdigest()[:20]
    return cache_dir / "repos" / f"{name}.git", cache_dir / "repos" / f"{name}.lock"


def _mirror(url: str, cache_dir: Path, credentials: GitCredentials | None = None) -> pygit2.Repository:
    target, lock = _mirror_paths(url, cache_dir)
    try:
        return _fetch_into(url, target, lock, credentials)
    except OSError as exc:
        raise SourceError(
            f"cannot keep a clone of {_redact(url)} in {cache_dir / 'repos'}: {exc.strerror}",
            hint="point --cache-dir (or XDG_CACHE_HOME) at a writable directory",
        ) from None


def _fetch_into(
    url: str, target: Path, lock: Path, credentials: GitCredentials | None = None
) -> pygit2.Repository:
    with _locked(lock):
        try:
            if (target / "HEAD").exists():
                repo = pygit2.Repository(str(target))
            else:
                repo = pygit2.clone_repository(url, str(target), bare=True, callbacks=_Callbacks(credentials))
            repo.remotes["origin"].fetch(_MIRROR, callbacks=_Callbacks(credentials))
            return repo
        except (pygit2.GitError, KeyError, ValueError, OSError, _CredentialsRefused) as exc:
            raise SourceError(
                f"cannot fetch {_redact(url)}: {_scrub(str(exc), credentials)}",
                hint="check the URL, the network and the credentials",
            ) from None


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


# A tree's own entries (not its subtrees'), by the repository and the tree's id: Git's objects never
# change, so a revision that differs from the last one in one file lists again only the trees on
# that file's path, and reads the size of that file alone. Bounded by the entries it holds, the
# least recently used trees going first.
_Listed = tuple[tuple[str, pygit2.Oid, int, int], ...]  # name, id, mode, size (-1: not read)
_LISTINGS: collections.OrderedDict[tuple[str, str], _Listed] = collections.OrderedDict()
_LISTED_MAX_ENTRIES = 500_000
_listed_entries = 0
_LISTINGS_LOCK = threading.Lock()


def _listing(repo: pygit2.Repository, tree: pygit2.Tree) -> _Listed:
    """The entries of `tree`, with the size of each YAML blob (read once per blob)."""
    global _listed_entries
    key = (repo.path, str(tree.id))
    with _LISTINGS_LOCK:
        found = _LISTINGS.get(key)
        if found is not None:
            _LISTINGS.move_to_end(key)
            return found
    listed = []
    for entry in tree:
        name, mode = entry.name or "", int(entry.filemode)
        size = -1
        if mode not in (_TREE_MODE, _LINK_MODE) and is_yaml_path(name):
            with contextlib.suppress(pygit2.GitError, KeyError, ValueError):  # said with its path below
                size = repo.odb.read_header(entry.id)[1]
        listed.append((name, entry.id, mode, size))
    made = tuple(listed)
    with _LISTINGS_LOCK:
        if key not in _LISTINGS:
            _LISTINGS[key] = made
            _listed_entries += len(made)
            while _listed_entries > _LISTED_MAX_ENTRIES and len(_LISTINGS) > 1:
                _, dropped = _LISTINGS.popitem(last=False)
                _listed_entries -= len(dropped)
    return made


def _walk(
    repo: pygit2.Repository, tree: pygit2.Tree, prefix: str = ""
) -> Iterator[tuple[str, pygit2.Oid, int, int]]:
    """Every file under `tree` (hidden directories left out): path, id, mode and size (-1 when
    it is not a YAML file, or could not be read)."""
    for name, oid, mode, size in _listing(repo, tree):
        path = f"{prefix}{name}"
        if mode == _TREE_MODE:
            if not name.startswith("."):
                sub = repo[oid]
                assert isinstance(sub, pygit2.Tree)
                yield from _walk(repo, sub, f"{path}/")
        else:
            yield path, oid, mode, size


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
    by_path = {path: (oid, size) for path, oid, _, size in entries}
    for path, oid, mode, size in entries:
        if not is_yaml_path(path):
            continue
        if mode == _LINK_MODE:
            link = repo[oid]
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
            oid, size = by_path[resolved]
        if size < 0:
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
    entries: Sequence[tuple[str, pygit2.Oid, int, int]],
    by_path: Mapping[str, tuple[pygit2.Oid, int]],
    destination: Path,
    prefixes: Sequence[str],
) -> None:
    """Write the files of the commit under `prefixes` into `destination`, from Git's objects
    (never from a checkout, which may differ). A symlink becomes a copy of what it points to
    when that is a file of the repo; one leaving the repo is left out."""
    for path, oid, mode, _ in entries:
        if not under(path, prefixes):
            continue
        if mode == _LINK_MODE:
            link = repo[oid]
            assert isinstance(link, pygit2.Blob)
            target = bytes(link.data).decode("utf-8", "replace")
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
            if target.startswith("/") or resolved.startswith("..") or resolved not in by_path:
                continue
            oid = by_path[resolved][0]
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


# --- writing: a commit on a branch, without a working tree -----------------------------------


def _repo_path(directory: str, path: str) -> str:
    """A path of the fleet repo as Git names it in the whole repository (under `directory`)."""
    parts = path.replace("\\", "/").split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts) or ".git" in parts:
        raise UsageError(
            f"{path!r} is not a file path inside the fleet repo",
            hint="give paths relative to the fleet repo, as its snapshot lists them",
        )
    return f"{directory}/{path}" if directory else path


def commit_files(
    location: str,
    base: str,
    files: Mapping[str, str | None],
    message: str,
    author_name: str,
    author_email: str,
    cache_dir: Path,
    *,
    directory: str = "",
    credentials: GitCredentials | None = None,
) -> str:
    """The id of a new commit whose parent is `base` (a revision) and whose tree is base's with
    `files` replaced (text, written as UTF-8) or deleted (None). Paths are relative to the fleet
    repo, inside `directory` of the repository (a monorepo, as `snapshot_at` reads it).

    Nothing is checked out and no reference moves: the commit exists only in the object
    database (the cache's clone for a URL) until `push_branch` sends it. A file's mode is kept;
    a path that is a symlink or a directory at base is refused."""
    repo = open_repository(location, cache_dir, credentials)
    parent = resolve(repo, base)
    prefix = _directory(directory)
    where = f"{_shown(location)}@{base}"
    try:
        index = pygit2.Index()
        index.read_tree(parent.tree)
        for path, text in sorted(files.items()):
            name = _repo_path(prefix, path)
            existing = index[name] if name in index else None  # noqa: SIM401 (Index has no get)
            if existing is None and any(e.path.startswith(name + "/") for e in index):
                raise PermanentError(f"{path} is a directory at {where}", hint="write files, not directories")
            if existing is not None and existing.mode == _LINK_MODE:
                raise PermanentError(
                    f"{path} is a symlink at {where}", hint="edit the file it points to instead"
                )
            if text is None:
                if existing is None:
                    raise PermanentError(f"cannot delete {path}: there is no such file at {where}")
                index.remove(name)
                continue
            blob = repo.create_blob(text.encode("utf-8"))
            index.add(pygit2.IndexEntry(name, blob, existing.mode if existing is not None else _BLOB_MODE))
        tree = index.write_tree(repo)
        signature = pygit2.Signature(author_name, author_email)
        commit = repo.create_commit(None, signature, signature, message, tree, [parent.id])
    except (pygit2.GitError, ValueError, OSError) as exc:
        raise PermanentError(f"cannot write a commit on {where}: {exc}") from None
    return str(commit)


def push_branch(
    location: str,
    branch: str,
    commit: str,
    *,
    force: bool,
    credentials: GitCredentials | None = None,
    cache_dir: Path,
) -> None:
    """Point `refs/heads/<branch>` of the repository at `location` at `commit` (built by
    `commit_files` on the same location and cache). A URL is pushed to, with `credentials` when
    the remote asks for them; a local path (a bare repository) is updated in place. Without
    `force` only a fast-forward is allowed; with it the branch is replaced (a drift branch is
    force-updated as the drift changes). Refused credentials, a refused or non-fast-forward
    update and a protected branch are PermanentErrors; an unreachable remote a TemporaryError."""
    ref = f"refs/heads/{branch}"
    if not pygit2.reference_is_valid_name(ref):
        raise UsageError(f"{branch!r} is not a valid branch name", hint="e.g. fleet/drift/nyc1")
    if is_url(location):
        _push_remote(location, ref, commit, force, credentials, cache_dir)
    else:
        _update_local(location, ref, commit, force, cache_dir)


def _commit_in(repo: pygit2.Repository, commit: str, where: str) -> pygit2.Oid:
    try:
        found = repo[commit]
    except (KeyError, ValueError):
        found = None
    if not isinstance(found, pygit2.Commit):
        raise PermanentError(
            f"commit {commit} is not in {where}",
            hint="build it with commit_files on the same location and cache directory first",
        )
    return found.id


def _push_remote(
    url: str, ref: str, commit: str, force: bool, credentials: GitCredentials | None, cache_dir: Path
) -> None:
    target, lock = _mirror_paths(url, cache_dir)
    if not (target / "HEAD").exists():
        raise PermanentError(
            f"there is no copy of {_redact(url)} in {cache_dir / 'repos'}",
            hint="build the commit with commit_files on the same location and cache directory first",
        )
    with _locked(lock):
        try:
            repo = pygit2.Repository(str(target))
        except pygit2.GitError as exc:
            raise SourceError(f"cannot open the copy of {_redact(url)}: {exc}") from None
        oid = _commit_in(repo, commit, f"the copy of {_redact(url)}")
        source = _PUSH_REF + ref.removeprefix("refs/heads/")
        callbacks = _Callbacks(credentials)
        try:
            repo.references.create(source, oid, force=True)
            repo.remotes["origin"].push([f"{'+' if force else ''}{source}:{ref}"], callbacks=callbacks)
        except (pygit2.GitError, KeyError, ValueError, OSError, _CredentialsRefused) as exc:
            raise _remote_error(f"push {ref} to", url, exc, credentials) from None
        finally:
            with contextlib.suppress(pygit2.GitError, KeyError):
                repo.references.delete(source)
        if ref in callbacks.refused:
            raise PermanentError(
                f"{_redact(url)} refused {ref}: {_scrub(callbacks.refused[ref], credentials)}",
                hint="check the remote's rules for the branch (protection, hooks)",
            )
        repo.references.create(ref, oid, force=True)  # the copy mirrors the remote's branches


def _update_local(location: str, ref: str, commit: str, force: bool, cache_dir: Path) -> None:
    repo = open_repository(location, cache_dir)
    oid = _commit_in(repo, commit, location)
    try:
        current = repo.references.get(ref)
        if current is not None and not force:
            old = current.peel(pygit2.Commit).id
            if old != oid and not repo.descendant_of(oid, old):
                raise PermanentError(
                    f"cannot update {ref} of {location}: the branch moved on and {commit[:12]}"
                    " does not follow it",
                    hint="push with force to replace the branch, or build the commit on the branch's head",
                )
        if not repo.is_bare and not repo.head_is_unborn and repo.head.name == ref:
            raise PermanentError(
                f"cannot update {ref} of {location}: it is checked out there",
                hint="push to a bare repository, or to a branch that is not checked out",
            )
        repo.create_reference_direct(ref, oid, True, message=f"fleet: {ref} -> {commit[:12]}")
    except (pygit2.GitError, KeyError, ValueError, OSError) as exc:
        raise PermanentError(f"cannot update {ref} of {location}: {exc}") from None
