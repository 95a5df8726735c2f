"""Read secrets named by `credentialsRef` at the moment of use, and never show them.

A secret comes from an environment variable or a file; it is wrapped in `Secret`,
whose repr and str are masked, so it cannot reach a log, an error or a plan by
accident. Errors name the reference (the variable or the path), never the value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from providers.base import reference_key
from reconciler.errors import PermanentError
from reconciler.spec import models


class Secret:
    """A secret value; `reveal()` is the only way to read it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:
        return (Secret, (self._value,))  # worker processes need the value itself


@dataclasses.dataclass(frozen=True, slots=True)
class UserPassword:
    username: str
    password: Secret


def credential_source(
    ref: models.CredentialSource | str,
    fleet: models.Fleet,
    overrides: Mapping[str, models.CredentialSource] | None = None,
) -> models.CredentialSource:
    if overrides:
        override = overrides.get(reference_key(ref))
        if override is not None:
            return override
    if isinstance(ref, models.CredentialSource):
        return ref
    try:
        return fleet.spec.credentials[ref]
    except KeyError:
        raise PermanentError(
            f"credentialsRef {ref!r} is not defined in fleet.yaml", hint="add it under spec.credentials"
        ) from None


def describe(source: models.CredentialSource) -> str:
    if source.env is not None:
        return f"environment variable {source.env}"
    if source.file is not None:
        return f"file {source.file}"
    assert source.kubernetesSecret is not None
    return f"Kubernetes Secret {source.kubernetesSecret.namespace}/{source.kubernetesSecret.name}"


def read_secret(source: models.CredentialSource, environment: Mapping[str, str]) -> Secret:
    if source.env is not None:
        value = environment.get(source.env)
        if not value:
            raise PermanentError(
                f"environment variable {source.env} is not set",
                hint=f"export {source.env} before running fleet (it holds the credential, never the repo)",
            )
        return Secret(value.strip())
    if source.file is not None:
        try:
            return Secret(Path(source.file).read_text(encoding="utf-8").strip())
        except OSError as exc:
            raise PermanentError(
                f"cannot read credential file {source.file}: {exc.strerror}",
                hint="check the path and its mode",
            ) from None
    raise PermanentError(
        f"{describe(source)} cannot be read here", hint="use an env or file credential for this resource"
    )


def user_password(
    ref: models.CredentialSource | str,
    fleet: models.Fleet,
    environment: Mapping[str, str],
    overrides: Mapping[str, models.CredentialSource] | None = None,
) -> UserPassword:
    """A `username:password` credential, as BMCs use them."""
    source = credential_source(ref, fleet, overrides)
    value = read_secret(source, environment).reveal()
    username, sep, password = value.partition(":")
    if not sep or not username:
        raise PermanentError(
            f"the credential in {describe(source)} is not of the form username:password",
            hint="store it as `username:password` (one line)",
        )
    return UserPassword(username, Secret(password))
