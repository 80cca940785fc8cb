"""Configuration: the one module that reads the environment.

Every setting comes from an ``ADMINLINK_*`` variable; the README documents each one.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

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
    # Ops and audit (defaults here keep other constructors of Settings working).
    insights_retention_days: int = 90
    metrics_token: str | None = None
    log_format: str = "json"
    # The event loop of the long-running processes (serve, web, worker): uvloop does the same work
    # as asyncio's own loop for a fraction of its CPU.
    event_loop: str = "asyncio"
    # Where browsers reach adminlink; the WebAuthn relying party and the Duo redirect follow it.
    public_url: str = "http://localhost:8080"
    # Sign-in (docs/signin.md): WebAuthn relying party, lockout, rate limits, push, Duo.
    webauthn_rp_id: str = "localhost"
    webauthn_rp_name: str = "adminlink"
    webauthn_origins: tuple[str, ...] = ("http://localhost:8080",)
    webauthn_attestation_roots: Path | None = None
    lockout_threshold: int = 10
    # Smart lockout (docs/signin.md): the known-device cookie, the block of unfamiliar clients,
    # and the delays after failures (base * 2^(n-1) after the n-th, at most the cap).
    known_device_days: int = 90
    signin_unfamiliar_block_seconds: int = 1800
    signin_delay_base_seconds: float = 0.25
    signin_delay_cap_seconds: float = 8.0
    signin_challenge_seconds: int = 300
    signin_rate_window_seconds: int = 300
    signin_rate_per_account: int = 20
    signin_rate_per_ip: int = 100
    push_ttl_seconds: int = 60
    duo_redirect_uri: str = "http://localhost:8080/auth/duo/callback"
    duo_ca_bundle: Path | None = None
    duo_api_hosts: tuple[str, ...] = ("api-*.duosecurity.com",)
    trust_forwarded_for: bool = False
    # Webhooks (docs/webhooks.md): the Retry-After of a 503 when the database or Redis cannot take an event.
    webhook_retry_after: int = 30
    # Webhook events a worker applies in one transaction at most (docs/webhooks.md).
    webhook_batch_max: int = 100

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


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    raw = (env.get(PREFIX + name) or default).lower()
    if raw not in allowed:
        raise ConfigError(f"{PREFIX}{name} must be one of {', '.join(allowed)}, got {raw!r}")
    return raw


def _metrics_token(env: Mapping[str, str]) -> str | None:
    """The bearer token a Prometheus scraper may present instead of an ops API key."""
    raw = env.get(PREFIX + "METRICS_TOKEN") or None
    if raw is not None and len(raw) < 32:
        raise ConfigError(f"{PREFIX}METRICS_TOKEN must be at least 32 characters")
    return raw


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
    host, port = env.get(PREFIX + "HOST") or "127.0.0.1", _int(env, "PORT", 8080)
    public = _public_url(env, host, port)
    return Settings(
        data_dir=data_dir,
        database_url=normalise_database_url(database_url),
        redis_url=env.get(PREFIX + "REDIS_URL") or None,
        smtp_url=env.get(PREFIX + "SMTP_URL") or None,
        mail_from=env.get(PREFIX + "MAIL_FROM") or "adminlink <no-reply@adminlink.localhost>",
        host=host,
        port=port,
        secret_key=_secret_key(env, data_dir),
        session_idle_seconds=_int(env, "SESSION_IDLE_SECONDS", 3600),
        cookie_secure=_bool(env, "COOKIE_SECURE", True),
        queue_name=env.get(PREFIX + "QUEUE_NAME") or "adminlink:queue",
        job_poll_delay=_float(env, "JOB_POLL_DELAY", 0.05),
        job_max_jobs=_int(env, "JOB_MAX_JOBS", 20),
        job_timeout=_int(env, "JOB_TIMEOUT", 60),
        job_max_tries=_int(env, "JOB_MAX_TRIES", 8),
        log_level=env.get(PREFIX + "LOG_LEVEL") or "INFO",
        insights_retention_days=_positive(env, "INSIGHTS_RETENTION_DAYS", 90),
        metrics_token=_metrics_token(env),
        log_format=_choice(env, "LOG_FORMAT", ("json", "text"), "json"),
        event_loop=_event_loop(env),
        public_url=public.origin,
        webauthn_rp_id=env.get(PREFIX + "WEBAUTHN_RP_ID") or public.hostname,
        webauthn_rp_name=env.get(PREFIX + "WEBAUTHN_RP_NAME") or "adminlink",
        webauthn_origins=_origins(env, public.origin),
        webauthn_attestation_roots=_path(env, "WEBAUTHN_ATTESTATION_ROOTS"),
        lockout_threshold=_positive(env, "LOCKOUT_THRESHOLD", 10),
        known_device_days=_positive(env, "KNOWN_DEVICE_DAYS", 90),
        signin_unfamiliar_block_seconds=_positive(env, "SIGNIN_UNFAMILIAR_BLOCK_SECONDS", 1800),
        signin_delay_base_seconds=_seconds(env, "SIGNIN_DELAY_BASE_SECONDS", 0.25),
        signin_delay_cap_seconds=_seconds(env, "SIGNIN_DELAY_CAP_SECONDS", 8.0),
        signin_challenge_seconds=_positive(env, "SIGNIN_CHALLENGE_SECONDS", 300),
        signin_rate_window_seconds=_positive(env, "SIGNIN_RATE_WINDOW_SECONDS", 300),
        signin_rate_per_account=_positive(env, "SIGNIN_RATE_PER_ACCOUNT", 20),
        signin_rate_per_ip=_positive(env, "SIGNIN_RATE_PER_IP", 100),
        push_ttl_seconds=_positive(env, "PUSH_TTL_SECONDS", 60),
        duo_redirect_uri=env.get(PREFIX + "DUO_REDIRECT_URI") or public.origin + "/auth/duo/callback",
        duo_ca_bundle=_path(env, "DUO_CA_BUNDLE"),
        duo_api_hosts=_duo_api_hosts(env),
        trust_forwarded_for=_bool(env, "TRUST_FORWARDED_FOR", False),
        webhook_retry_after=_positive(env, "WEBHOOK_RETRY_AFTER", 30),
        webhook_batch_max=_positive(env, "WEBHOOK_BATCH_MAX", 100),
    )


def _event_loop(env: Mapping[str, str]) -> str:
    installed = importlib.util.find_spec("uvloop") is not None  # not on Windows
    chosen = _choice(env, "EVENT_LOOP", ("uvloop", "asyncio"), "uvloop" if installed else "asyncio")
    if chosen == "uvloop" and not installed:
        raise ConfigError(f"{PREFIX}EVENT_LOOP=uvloop, but uvloop is not installed")
    return chosen


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    value = _int(env, name, default)
    if value < 1:
        raise ConfigError(f"{PREFIX}{name} must be at least 1")
    return value


MAX_SIGNIN_DELAY = 60.0  # an answer held back longer would only tie up connections


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    """A sign-in delay: 0 (none) up to a minute."""
    value = _float(env, name, default)
    if not 0 <= value <= MAX_SIGNIN_DELAY:
        raise ConfigError(f"{PREFIX}{name} must be between 0 and {MAX_SIGNIN_DELAY:g} seconds")
    return value


def _path(env: Mapping[str, str], name: str) -> Path | None:
    """A file the service reads later: a wrong path is refused at start, not at the first sign-in."""
    raw = env.get(PREFIX + name)
    if not raw:
        return None
    if not Path(raw).is_file():
        raise ConfigError(f"{PREFIX}{name} names no readable file: {raw!r}")
    return Path(raw)


def _duo_api_hosts(env: Mapping[str, str]) -> tuple[str, ...]:
    """Host patterns (``*`` matches anything) a Duo API host must match, comma separated: only
    Duo's own by default, so an organization's Duo settings cannot point the server elsewhere."""
    raw = env.get(PREFIX + "DUO_API_HOSTS") or "api-*.duosecurity.com"
    return tuple(h.strip().lower() for h in raw.split(",") if h.strip())


def _origins(env: Mapping[str, str], public_origin: str) -> tuple[str, ...]:
    """WebAuthn origins the browser may report, comma separated (scheme://host[:port])."""
    raw = env.get(PREFIX + "WEBAUTHN_ORIGINS") or public_origin
    return tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())


@dataclass(frozen=True)
class PublicUrl:
    origin: str  # scheme://host[:port], as a browser reports it (no default port, no path)
    hostname: str


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _public_url(env: Mapping[str, str], host: str, port: int) -> PublicUrl:
    """Where browsers reach adminlink: ADMINLINK_PUBLIC_URL, else where it listens."""
    raw = env.get(PREFIX + "PUBLIC_URL")
    if not raw:
        name = "localhost" if _reached_as_localhost(host) else f"[{host}]" if ":" in host else host
        raw = f"http://{name}:{port}"
    try:
        parts = urlsplit(raw.strip())
        explicit_port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{PREFIX}PUBLIC_URL is not a URL: {raw!r}") from exc
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ConfigError(f"{PREFIX}PUBLIC_URL must be http(s)://host[:port], got {raw!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        # The routes live at the root: a path prefix would break the Duo callback and WebAuthn.
        raise ConfigError(f"{PREFIX}PUBLIC_URL must have no path, query or user, got {raw!r}")
    hostname = parts.hostname.lower()
    netloc = f"[{hostname}]" if ":" in hostname else hostname
    if explicit_port is not None and explicit_port != _DEFAULT_PORTS[parts.scheme]:
        netloc += f":{explicit_port}"
    return PublicUrl(f"{parts.scheme}://{netloc}", hostname)


def _reached_as_localhost(host: str) -> bool:
    """A loopback or wildcard listen address, which a browser on the same machine reaches as
    localhost. (WebAuthn refuses an IP address as relying party id, so the default names a host.)"""
    if host in ("", "localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified
