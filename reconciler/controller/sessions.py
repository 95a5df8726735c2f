"""Sign-in sessions of the web UI: a cookie that names a token of the API, never holds it.

A session is self-contained, so that every replica accepts it without shared state: the token's
name, an expiry and a random id, signed with a key derived from the token's value (HMAC-SHA256).
Only a replica that knows the token can sign or check a session of it, and rotating the token
ends its sessions. The CSRF token of a session is derived the same way from its id. Nothing here
may log, store or echo a token's value.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import secrets
from collections.abc import Mapping

SESSION_COOKIE = "fleet_session"
LOGIN_COOKIE = "fleet_login"  # the login form's CSRF nonce, before there is a session
CSRF_HEADER = "x-csrf-token"
SESSION_SECONDS = 8 * 3600
_PURPOSE = b"fleet web UI session v1"


@dataclasses.dataclass(frozen=True)
class Session:
    """Who signed in (the token's name and its role now) and the CSRF token of the session."""

    name: str
    role: str
    csrf: str
    expires: int


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
    return cookie, Session(name, role, _csrf(key, session_id), expires)


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
            found = Session(name, role, _csrf(key, session_id), expires)
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
