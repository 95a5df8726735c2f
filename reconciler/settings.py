"""fleet's settings: one value, built once at the edge (the CLI, the controller) from command-line
options over `FLEET_*` environment variables over defaults, and passed to the engine.

This is the only module of the product that reads the process environment; the engine, the
providers and the state store take what they need from a `Settings`.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENDPOINTS_FILE = "overrides.json"
"""The endpoint map a running lab writes into its directory."""


def _xdg(variable: str, fallback: str) -> Path:
    # The XDG spec says relative values are to be ignored.
    configured = os.environ.get(variable, "")
    if configured and os.path.isabs(configured):
        return Path(configured)
    return Path.home() / fallback


def state_directory() -> Path:
    """Where fleet keeps state on this machine: `$XDG_STATE_HOME/fleet`."""
    return _xdg("XDG_STATE_HOME", ".local/state") / "fleet"


def cache_directory() -> Path:
    """Where fleet keeps caches (validation results, clones of remote repos): `$XDG_CACHE_HOME/fleet`."""
    return _xdg("XDG_CACHE_HOME", ".cache") / "fleet"


def lab_directory() -> Path:
    """Where `fleet lab` keeps a running lab: `FLEET_LAB_DIR`, else `$XDG_STATE_HOME/fleet/lab`."""
    explicit = os.environ.get("FLEET_LAB_DIR")
    return Path(explicit) if explicit else state_directory() / "lab"


def lab_overrides_path(directory: Path | None = None) -> Path:
    """The endpoint map of the lab kept in `directory` (default: `lab_directory()`): the lab writes
    it there, and `--lab` reads it, without production code ever importing the lab."""
    return (directory if directory is not None else lab_directory()) / ENDPOINTS_FILE


class Settings(BaseSettings):
    """Everything a run needs to know about this deployment, and nothing about the fleet repo."""

    model_config = SettingsConfigDict(env_prefix="FLEET_", frozen=True, extra="forbid")

    state: str | None = Field(
        None, description="State store: a SQLite path or a PostgreSQL URL (default: STATE_DIR/state.db)."
    )
    state_dir: Path = Field(
        default_factory=state_directory, description="Where fleet keeps files of its own."
    )
    cache_dir: Path = Field(default_factory=cache_directory, description="Validation cache and repo clones.")
    lab_dir: Path = Field(default_factory=lab_directory, description="Where a running `fleet lab` lives.")
    endpoints: Path | None = Field(
        None,
        description="An endpoint map (JSON): where to really connect and which credentials to use, "
        "where it is not as the specs say. A running lab writes one.",
    )
    lab: bool = Field(False, description="Use the endpoint map of the running `fleet lab`.")
    config: bool = Field(True, description="Observe and apply operating-system configuration (Ansible).")
    lease_ttl: float = Field(
        60.0, gt=0, description="Seconds a lease lasts unless renewed; a run renews its leases every third."
    )
    workers: int = Field(0, ge=0, description="Worker processes for parsing specs (0: one per CPU).")
    operator: str = Field(default_factory=lambda: current_operator(), description="Who runs fleet (audit).")
    github_webhook_secret: SecretStr | None = Field(
        None,
        description="Secret of GitHub push webhooks (`fleet serve`); beats the Fleet's githubSecretRef.",
    )
    gitlab_webhook_token: SecretStr | None = Field(
        None,
        description="Secret token of GitLab push hooks (`fleet serve`); beats the Fleet's gitlabTokenRef.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Options given by the caller, then FLEET_* variables; no dotenv or secret files.
        return init_settings, env_settings

    vcs_token: SecretStr | None = Field(
        None,
        description="Token fleet comments on pull requests with (GitHub or GitLab, api scope);"
        " beats GITHUB_TOKEN and GITLAB_TOKEN.",
    )
    vcs_api_url: str | None = Field(
        None,
        description="The forge's API (default: the CI's, else https://api.github.com or"
        " https://gitlab.com): GitHub Enterprise's https://HOST/api/v3, a GitLab instance's URL.",
    )
    github_app_id: int | None = Field(None, description="A GitHub App to act as instead of a token.")
    github_app_key_file: Path | None = Field(None, description="The GitHub App's private key (PEM file).")
    github_installation_id: int | None = Field(None, description="The GitHub App's installation.")

    @field_validator("state", "github_webhook_secret", "gitlab_webhook_token", "vcs_token", mode="before")
    @classmethod
    def _blank_is_default(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    def endpoint_map(self) -> Path | None:
        """The endpoint map to use: the explicit one, else the lab's when `lab` is set."""
        if self.endpoints is not None:
            return self.endpoints
        if self.lab:
            return lab_overrides_path(self.lab_dir)
        return None

    def webhook_secret(self, forge: str) -> str | None:
        """The secret of `forge`'s push webhooks ("github" or "gitlab") the environment sets, which
        beats the one the Fleet refers to; None when it sets none."""
        configured = {"github": self.github_webhook_secret, "gitlab": self.gitlab_webhook_token}.get(forge)
        return configured.get_secret_value() if configured is not None else None

    def state_url(self) -> str:
        """The state store's URL (a bare path is a SQLite file)."""
        return self.state or f"sqlite:///{self.state_dir / 'state.db'}"


class ServeSettings(Settings):
    """`fleet serve`: what it follows and where it listens (every option also a FLEET_* variable)."""

    path: Path | None = Field(None, description="A working tree to follow (instead of --repo).")
    repo: str | None = Field(None, description="The Git repository (path or URL) to follow.")
    branch: str = Field("main", min_length=1, description="The branch of --repo to follow.")
    directory: str | None = Field(None, description="The fleet repo's directory inside --repo (a monorepo).")
    repository_name: str | None = Field(
        None,
        description="The forge's OWNER/NAME of the followed repository, which push webhooks name"
        " (needed when --repo is a local path or a mirror's URL).",
    )
    listen: str = Field("127.0.0.1:8080", description="HOST:PORT the HTTP API and the webhooks listen on.")
    poll_interval: float | None = Field(
        None,
        ge=1,
        description="Seconds between fetches (default: fleet.yaml's controller.pollIntervalSeconds).",
    )
    drift_interval: float | None = Field(
        None,
        ge=1,
        description="Seconds between drift passes (default: fleet.yaml's policies.drift.intervalMinutes).",
    )
    grace: float = Field(
        30.0,
        ge=0,
        description="Seconds a SIGTERM leaves running actions to finish before they are cancelled.",
    )
    operator: str = Field("fleet-controller", description="Who the controller's runs name (audit).")
    vcs: Literal["github", "gitlab"] | None = Field(
        None, description="The forge of the followed repository (--repository-name names it there)."
    )
    drift_reports: bool = Field(
        False,
        description="Keep drift pull requests (one per site) on the drift schedule; needs --vcs,"
        " --repository-name and FLEET_VCS_TOKEN.",
    )
    stalled_after: float = Field(
        30.0,
        ge=3,
        description="Seconds without a heartbeat after which another replica takes a replica's jobs"
        " (PostgreSQL); it heartbeats every third of that.",
    )
    drift_grace: float = Field(
        60.0, ge=0, description="Minutes drift must last before a drift pull request reports it."
    )

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:8080 or 0.0.0.0:8080)")
        return value

    def listen_address(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


def current_operator() -> str:
    """The OS user running fleet, for the audit trail."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def process_environment() -> Mapping[str, str]:
    """The environment credentials named `env:` are read from (never shown, logged or stored)."""
    return dict(os.environ)


def load_settings(**options: Any) -> Settings:
    """Settings from the environment, with `options` (those not None) over it."""
    return Settings(**{name: value for name, value in options.items() if value is not None})


def load_serve_settings(**options: Any) -> ServeSettings:
    """`fleet serve`'s settings from the environment, with `options` (those not None) over it."""
    return ServeSettings(**{name: value for name, value in options.items() if value is not None})
