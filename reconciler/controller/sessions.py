"""Sign-in sessions of the web UI: a cookie that names a token of the API, never holds it.

A session is self-contained, so that every replica can check it alone: the token's name, an
expiry and a random id, signed with a key derived from the token's value (HMAC-SHA256). Only a
replica that knows the token can sign or check a session of it, and rotating the token ends its
sessions. The CSRF token of a session is derived the same way from its id. Signing out ends a
session before it expires: a digest of its id goes into the store, which every replica reads
(`SessionBook`). Nothing here may log, store or echo a token's value.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from reconciler.errors import FleetError
from reconciler.state import StateStore

SESSION_COOKIE = "fleet_session"
LOGIN_COOKIE = "fleet_login"  # the login form's CSRF nonce, before there is a session
CSRF_HEADER = "x-csrf-token"
SESSION_SECONDS = 8 * 3600
_PURPOSE = b"fleet web UI session v1"
VERIFIED_KEPT = 10_000  # cookies kept as checked (then forgotten all at once and checked again)


@dataclasses.dataclass(frozen=True)
class Session:
    """Who signed in (the token's name and its role now) and the CSRF token of the session."""

    name: str
    role: str
    csrf: str
    expires: int
    digest: str  # of the session's id: what the store keeps of a session that ended


def _key(token: str) -> bytes:
    return hmac.new(token.encode(), _PURPOSE, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())


def _csrf(key: bytes, session_id: str) -> str:
    return _sign(key, f"csrf|{session_id}")[:32]


def _digest(session_id: str) -> str:
    return hashlib.sha256(f"fleet session|{session_id}".encode()).hexdigest()


def caller_of_token(tokens: Mapping[str, tuple[str, str]], given: str) -> tuple[str, str] | None:
    """(name, role) of the token `given`, or None. Every configured token is compared in constant
    time, so the time taken says nothing about which matched."""
    found: tuple[str, str] | None = None
    for value, caller in tokens.items():
        if hmac.compare_digest(value.encode(), given.strip().encode()) and found is None:
            found = caller
    return found


def open_session(tokens: Mapping[str, tuple[str, str]], given: str, now: float) -> tuple[str, Session] | None:
    """A session for the token `given` (the cookie's value, and the session), or None when the
    token is not one of the API's."""
    if not given.strip():
        return None
    caller = caller_of_token(tokens, given)
    if caller is None:
        return None
    name, role = caller
    expires = int(now) + SESSION_SECONDS
    session_id = secrets.token_urlsafe(18)
    key = _key(given.strip())
    payload = _b64(f"{name}|{expires}|{session_id}".encode())
    cookie = f"{payload}.{_sign(key, payload)}"
    return cookie, Session(name, role, _csrf(key, session_id), expires, _digest(session_id))


def read_session(tokens: Mapping[str, tuple[str, str]], cookie: str, now: float) -> Session | None:
    """The session a cookie carries, when its signature holds for a token of that name and it
    has not expired; else None."""
    payload, _, signature = cookie.partition(".")
    try:
        name, expires_text, session_id = _unb64(payload).decode().split("|")
        expires = int(expires_text)
    except (ValueError, UnicodeDecodeError):
        return None
    found: Session | None = None
    for value, (token_name, role) in tokens.items():
        if token_name != name:
            continue
        key = _key(value)
        if hmac.compare_digest(_sign(key, payload), signature) and found is None:
            found = Session(name, role, _csrf(key, session_id), expires, _digest(session_id))
    if found is None or expires <= now:
        return None
    return found


def new_nonce() -> str:
    return secrets.token_urlsafe(24)


def same(given: str | None, expected: str | None) -> bool:
    """Constant-time equality of two CSRF tokens; a missing one is never equal."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


class SessionBook:
    """The sessions the controller accepts: signed for a token it has now, not expired, and not
    ended by signing out.

    Which sessions ended is kept in the store, shared by every replica. Each replica reads it again
    at most every `every` seconds, in a thread of its own, because a check runs on the event loop
    and must not read the store. A session ended on this replica is refused here at once. Another
    replica refuses it from its next read. If the store cannot be read, the last read set stays in
    force.
    """

    def __init__(
        self,
        tokens: Callable[[], Mapping[str, tuple[str, str]]],
        store: StateStore,
        *,
        every: float = 1.0,
    ) -> None:
        self._tokens, self._store, self._every = tokens, store, every
        self._lock = threading.Lock()
        self._ended: frozenset[str] = frozenset()
        self._ended_here: dict[str, int] = {}  # digest -> when it would have expired
        # Cookies whose signature was checked, with the tokens it was checked against: a page
        # costs no HMAC again until the tokens are read again (every minute, or rotated).
        self._verified: dict[str, tuple[Mapping[str, tuple[str, str]], Session]] = {}
        self._read_at = -float("inf")
        self._reading = False
        self._read()

    def read(self, cookie: str | None) -> Session | None:
        """The session `cookie` carries, or None: not signed for a current token, expired, or ended."""
        if not cookie:
            return None
        tokens, now = self._tokens(), time.time()
        verified = self._verified.get(cookie)
        if verified is not None and verified[0] is tokens:  # checked already, with these tokens
            session = verified[1]
            if session.expires <= now:
                return None
        else:
            found = read_session(tokens, cookie, now)
            if found is None:
                return None
            if len(self._verified) >= VERIFIED_KEPT:
                self._verified.clear()
            self._verified[cookie] = (tokens, found)
            session = found
        self._read_again_if_due()
        if session.digest in self._ended or session.digest in self._ended_here:
            return None
        return session

    def end(self, session: Session) -> None:
        """End `session` on every replica (writes the store: call it from a worker thread).
        Raises the store's error when it cannot be recorded. The session is refused here anyway."""
        now = time.time()
        with self._lock:
            self._ended_here = {d: e for d, e in self._ended_here.items() if e > now}
            self._ended_here[session.digest] = session.expires
        self._store.end_session(session.digest, datetime.fromtimestamp(session.expires, UTC))

    def _read_again_if_due(self) -> None:
        if self._reading or time.monotonic() - self._read_at < self._every:
            return
        with self._lock:
            if self._reading:
                return
            self._reading = True
        threading.Thread(target=self._read, name="fleet-ended-sessions", daemon=True).start()

    def _read(self) -> None:
        ended: frozenset[str] | None
        try:
            ended = frozenset(self._store.ended_sessions())
        except FleetError:
            ended = None
        with self._lock:
            if ended is not None:
                self._ended = ended
            self._read_at, self._reading = time.monotonic(), False
