"""One typed settings object for the API and the workers (environment prefix ``LAYERTRACER_``).

``get_settings()`` is cached; tests build ``Settings(...)`` directly and pass it to ``create_app``.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import Field, PrivateAttr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from backend.exposure import default_allowed_hosts, is_loopback_host

PLACEHOLDER_SECRET = "change-me-this-is-a-placeholder"


def normalize_database_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` -> ``postgresql+psycopg://`` (psycopg 3); others unchanged."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _split_list(value: Any) -> Any:
    # Environment values arrive as text: a JSON list, or ':'-separated (like PATH); ',' for origins.
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        if text.startswith("["):
            return json.loads(text)
        return [part for part in text.replace(",", os.pathsep).split(os.pathsep) if part]
    return value


class Settings(BaseSettings):
    """Service settings; see docs/service.md for the table of variables."""

    model_config = SettingsConfigDict(env_prefix="LAYERTRACER_", extra="ignore")

    data_dir: Path = Path("./data")
    database_url: Optional[str] = None
    broker_url: str = "filesystem://"
    host: str = "127.0.0.1"
    port: int = 8000
    auth: Literal["none", "token"] = "none"
    secret_key: str = PLACEHOLDER_SECRET
    model_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    api_url: str = "http://127.0.0.1:8000"
    max_upload_bytes: int = 10 * 1024 * 1024
    lease_seconds: int = Field(60, gt=0)
    heartbeat_seconds: int = Field(10, gt=0)
    max_attempts: int = Field(3, gt=0)
    # How often a running trace writes its partial results, so a killed worker's successor resumes.
    trace_checkpoint_seconds: float = Field(30.0, ge=0)
    # Origins allowed by CORS; empty = no cross-origin access (the dashboard is same-origin or server-side).
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Log tail kept per job (characters).
    log_tail_chars: int = 64 * 1024
    # Host names the API and dashboard answer to (Host header); empty: loopback names in local mode,
    # any ("*") in token mode. See backend/exposure.py.
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Serve a non-loopback address without auth: only behind a gateway of your own that authenticates.
    insecure_expose_without_auth: bool = False
    # Whether a model folder's own Python code may run (trust_remote_code) on this server's workers.
    # Off by default; when on, only an admin token (or the local user in local mode) may ask for it.
    allow_remote_code: bool = False
    # Whether LAYERTRACER_ALLOWED_HOSTS was given (else the allowlist is the mode's default).
    _allowed_hosts_given: bool = PrivateAttr(False)

    @field_validator("model_roots", "cors_origins", "allowed_hosts", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

    @model_validator(mode="after")
    def _derive(self) -> "Settings":
        self.data_dir = Path(self.data_dir).expanduser().resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'layertracer.db'}"
        self.database_url = normalize_database_url(self.database_url)
        if not self.model_roots:
            self.model_roots = [self.data_dir]
        self.model_roots = [Path(r).expanduser().resolve() for r in self.model_roots]
        if self.auth == "token" and (self.secret_key == PLACEHOLDER_SECRET or len(self.secret_key) < 16):
            raise ValueError(
                "LAYERTRACER_AUTH=token needs a real LAYERTRACER_SECRET_KEY (at least 16 characters, not the placeholder)"
            )
        if self.auth == "none" and not is_loopback_host(self.host) and not self.insecure_expose_without_auth:
            raise ValueError(
                f"refusing to serve {self.host or 'every address'} without authentication: set LAYERTRACER_AUTH=token "
                "and a LAYERTRACER_SECRET_KEY (tokens: python -m backend.admin create-token NAME), or bind 127.0.0.1; "
                "behind an authenticating gateway of your own, LAYERTRACER_INSECURE_EXPOSE_WITHOUT_AUTH=1"
            )
        self._allowed_hosts_given = bool(self.allowed_hosts)
        if not self.allowed_hosts:
            self.allowed_hosts = default_allowed_hosts(self.auth, self.host)
        return self

    @property
    def local_only(self) -> bool:
        """Local mode: requests from other machines are refused (see backend/exposure.py)."""
        return self.auth == "none" and not self.insecure_expose_without_auth

    def hosts_for(self, auth: str) -> list[str]:
        """The Host allowlist of a server in ``auth`` mode: LAYERTRACER_ALLOWED_HOSTS when given, else the
        mode's default (the standalone dashboard takes the mode of the API it drives)."""
        return list(self.allowed_hosts) if self._allowed_hosts_given else default_allowed_hosts(auth, self.host)

    @property
    def broker_dir(self) -> Path:
        """Folder of the embedded (filesystem) broker: ``<data_dir>/broker``."""
        return self.data_dir / "broker"

    @property
    def jobs_dir(self) -> Path:
        """Per-job working folders: ``<data_dir>/jobs/<job_id>/``."""
        return self.data_dir / "jobs"

    @property
    def corpus_cache_dir(self) -> Path:
        """Tokenized corpora, shared by every job on the same corpus: ``<data_dir>/corpora``."""
        return self.data_dir / "corpora"

    @property
    def tuned_lens_cache_dir(self) -> Path:
        """Tuned-lens translator files, one per model fingerprint (``layertracer.spec.lens``): the API
        queues a ``lens=tuned`` trace only when its model's file is here; the worker reads it from here.
        ``<data_dir>/tuned-lens``."""
        return self.data_dir / "tuned-lens"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"


def settings_problem(exc: Exception) -> str:
    """One line for a settings error (pydantic's ValidationError ends with a 'further information' URL)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            first = errors()[0]
        except (IndexError, TypeError):
            first = None
        if first:
            where = ".".join(str(p) for p in first.get("loc", ()))
            message = str(first.get("msg", exc)).removeprefix("Value error, ")
            return f"LAYERTRACER_{where.upper()}: {message}" if where else message
    return " ".join(str(exc).split())


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return Settings()
