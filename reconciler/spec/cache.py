"""A content-addressed cache of validation results, kept in one SQLite file.

File results are keyed by (settings fingerprint, blob id, path): an unchanged file
is never parsed twice. Whole-revision results are keyed by a digest of every
(path, blob id) pair, so a revision validated before is answered without parsing
anything. A file's valid documents are kept beside its result, apart, so that only
callers that need the models (plan, apply, get) pay for reading them. Entries hold
plain values only (JSON, or pickles read by an unpickler that refuses every class
but the spec's own models), so a tampered cache cannot run code. A broken or
unusable cache is rebuilt or skipped, never fatal.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from reconciler.spec import models
from reconciler.spec.diagnostics import Diagnostic, Severity
from reconciler.spec.results import FileResult

_SCHEMA = """
CREATE TABLE IF NOT EXISTS file_results (key TEXT PRIMARY KEY, payload BLOB NOT NULL, documents BLOB);
CREATE TABLE IF NOT EXISTS revision_results (key TEXT PRIMARY KEY, payload TEXT NOT NULL);
"""
_FORMAT = "7"


def _encode_diagnostic(d: Diagnostic) -> tuple[Any, ...]:
    return (
        d.severity.value,
        d.code,
        d.message,
        d.path,
        d.line,
        d.col,
        d.address,
        d.hint,
        d.doc_index,
        tuple(d.field_path),
    )


def _decode_diagnostic(row: Sequence[Any]) -> Diagnostic:
    return Diagnostic(
        Severity(row[0]), row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], tuple(row[9])
    )


class _PlainUnpickler(pickle.Unpickler):
    """Reads tuples, lists, dicts, strings and numbers; any class or function is refused."""

    def find_class(self, module: str, name: str) -> NoReturn:
        raise pickle.UnpicklingError(f"cache entries hold plain values only, not {module}.{name}")


def _load_plain(payload: bytes) -> Any:
    return _PlainUnpickler(io.BytesIO(payload)).load()


class _ModelUnpickler(pickle.Unpickler):
    """Reads plain values and the spec's models (which restore without running validators)."""

    def find_class(self, module: str, name: str) -> Any:
        if module == models.__name__ and name in models.PICKLED:
            return models.PICKLED[name]
        raise pickle.UnpicklingError(f"cache entries hold fleet documents only, not {module}.{name}")


def pack_documents(documents: Sequence[tuple[int, models.Document]]) -> bytes:
    """A file's valid documents as the cache keeps them (and worker processes hand them back)."""
    return pickle.dumps(list(documents), protocol=5)


def unpack_documents(packed: bytes) -> list[tuple[int, models.Document]]:
    documents: list[tuple[int, models.Document]] = _ModelUnpickler(io.BytesIO(packed)).load()
    return documents


class CacheUnavailable(Exception):
    """The cache directory cannot be used (not a directory, no permission): run without it."""


class SpecCache:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = self._open()
        except (OSError, sqlite3.Error) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise CacheUnavailable(f"cannot use the cache directory {path.parent} ({reason})") from None

    def _open(self) -> sqlite3.Connection:
        # Made by one thread and used by another (the controller's worker), one at a time: the
        # engine that owns the cache runs one step at a time.
        try:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._create(db)
            return db
        except sqlite3.DatabaseError:
            with contextlib.suppress(OSError):
                self.path.unlink()
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self._create(db)
            return db

    @staticmethod
    def _create(db: sqlite3.Connection) -> None:
        """The tables of this format; a cache written by another format is emptied first."""
        if db.execute("PRAGMA user_version").fetchone()[0] != int(_FORMAT):
            db.executescript("DROP TABLE IF EXISTS file_results; DROP TABLE IF EXISTS revision_results;")
            db.execute(f"PRAGMA user_version = {int(_FORMAT)}")
        db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    @staticmethod
    def file_key(settings: str, blob_id: str, path: str) -> str:
        return f"{_FORMAT}|{settings}|{blob_id}|{path}"

    def get_files(self, keys: Sequence[str]) -> dict[str, FileResult]:
        found: dict[str, FileResult] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            try:
                rows = self._db.execute(
                    f"SELECT key, payload FROM file_results WHERE key IN ({marks})", chunk
                )
                for key, payload in rows:
                    try:
                        path, diagnostics, facts = _load_plain(payload)
                        found[key] = FileResult(path, [_decode_diagnostic(d) for d in diagnostics], facts, [])
                    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError):
                        continue
            except sqlite3.DatabaseError:
                continue
        return found

    def get_documents(self, keys: Sequence[str]) -> dict[str, list[tuple[int, models.Document]]]:
        """The valid documents of each file (by file key) whose result is cached."""
        found: dict[str, list[tuple[int, models.Document]]] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            try:
                rows = self._db.execute(
                    "SELECT key, documents FROM file_results"
                    f" WHERE key IN ({marks}) AND documents IS NOT NULL",
                    chunk,
                )
                for key, payload in rows:
                    try:
                        found[key] = unpack_documents(payload)
                    except (
                        pickle.UnpicklingError,
                        EOFError,
                        ValueError,
                        TypeError,
                        IndexError,
                        AttributeError,
                    ):
                        continue
            except sqlite3.DatabaseError:
                continue
        return found

    def put_files(self, entries: Iterable[tuple[str, FileResult]]) -> None:
        rows = [
            (
                key,
                pickle.dumps((r.path, [_encode_diagnostic(d) for d in r.diagnostics], r.facts), protocol=5),
                r.packed if r.packed is not None else pack_documents(r.documents),
            )
            for key, r in entries
            if r.fleet is None
        ]
        with self._transaction() as began:
            if began:
                self._db.executemany("INSERT OR REPLACE INTO file_results VALUES (?, ?, ?)", rows)

    def get_revision(self, key: str) -> dict[str, Any] | None:
        try:
            row = self._db.execute("SELECT payload FROM revision_results WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            payload: dict[str, Any] = json.loads(row[0])
            payload["diagnostics"] = [_decode_diagnostic(d) for d in payload["diagnostics"]]
            return payload
        except (sqlite3.DatabaseError, ValueError, TypeError, KeyError, IndexError):
            return None

    def put_revision(self, key: str, payload: dict[str, Any]) -> None:
        stored = dict(payload)
        stored["diagnostics"] = [_encode_diagnostic(d) for d in payload["diagnostics"]]
        with self._transaction() as began:
            if began:
                self._db.execute(
                    "INSERT OR REPLACE INTO revision_results VALUES (?, ?)", (key, json.dumps(stored))
                )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[bool]:
        """A write transaction; yields False (write nothing) when one cannot begin (the file is
        locked or damaged): the cache only saves time, a write it skips costs the next run."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError:
            yield False
            return
        try:
            yield True
            self._db.execute("COMMIT")
        except sqlite3.DatabaseError:
            with contextlib.suppress(sqlite3.DatabaseError):
                self._db.execute("ROLLBACK")
