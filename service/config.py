"""Configuration: the one module that reads the environment.

Every setting comes from an ``ADMINLINK_*`` variable; the README documents each one.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PREFIX = "ADMINLINK_"


class ConfigError(ValueError):
    """A setting has a value the service cannot use."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    redis_url: str | None
    smtp_url: str | None
    mail_from: str
    host: str
    port: int
    secret_key: bytes
    session_idle_seconds: int
    cookie_secure: bool
    queue_name: str
    job_poll_delay: float
    job_max_jobs: int
    job_timeout: int
    job_max_tries: int
    log_level: str

    @property
    def embedded_redis(self) -> bool:
        return self.redis_url is None


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(PREFIX + name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{PREFIX}{name} must be an integer, got {raw!r}") from exc


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(PREFIX + name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{PREFIX}{name} must be a number, got {raw!r}") from exc


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(PREFIX + name)
    if raw is None or raw == "":
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{PREFIX}{name} must be true or false, got {raw!r}")


def _secret_key(env: Mapping[str, str], data_dir: Path) -> bytes:
    """The key that encrypts secrets at rest. Never a hard-coded default: if unset, one is
    generated on first start and kept in the data dir, readable by its owner only."""
    raw = env.get(PREFIX + "SECRET_KEY")
    if raw:
        if len(raw) < 32:
            raise ConfigError(f"{PREFIX}SECRET_KEY must be at least 32 characters")
        return raw.encode()
    path = data_dir / "secret_key"
    if path.exists():
        return path.read_bytes().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


def normalise_database_url(url: str) -> str:
    """Accept the URLs people paste (postgres://, postgresql://) and pick the async driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    if url.startswith("sqlite://") and not url.startswith("sqlite+aiosqlite://"):
        return "sqlite+aiosqlite://" + url[len("sqlite://") :]
    return url


def load(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    data_dir = Path(env.get(PREFIX + "DATA_DIR") or "data").resolve()
    database_url = env.get(PREFIX + "DATABASE_URL") or f"sqlite+aiosqlite:///{data_dir / 'adminlink.db'}"
    if database_url.startswith("sqlite"):
        data_dir.mkdir(parents=True, exist_ok=True)
    return Settings(
        data_dir=data_dir,
        database_url=normalise_database_url(database_url),
        redis_url=env.get(PREFIX + "REDIS_URL") or None,
        smtp_url=env.get(PREFIX + "SMTP_URL") or None,
        mail_from=env.get(PREFIX + "MAIL_FROM") or "adminlink <no-reply@adminlink.localhost>",
        host=env.get(PREFIX + "HOST") or "127.0.0.1",
        port=_int(env, "PORT", 8080),
        secret_key=_secret_key(env, data_dir),
        session_idle_seconds=_int(env, "SESSION_IDLE_SECONDS", 3600),
        cookie_secure=_bool(env, "COOKIE_SECURE", True),
        queue_name=env.get(PREFIX + "QUEUE_NAME") or "adminlink:queue",
        job_poll_delay=_float(env, "JOB_POLL_DELAY", 0.05),
        job_max_jobs=_int(env, "JOB_MAX_JOBS", 20),
        job_timeout=_int(env, "JOB_TIMEOUT", 60),
        job_max_tries=_int(env, "JOB_MAX_TRIES", 8),
        log_level=env.get(PREFIX + "LOG_LEVEL") or "INFO",
    )
