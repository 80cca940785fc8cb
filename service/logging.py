"""Structured logs: one JSON object per line, carrying the correlation id of the request or job
that wrote it. Secrets never reach a log line: values under secret-looking keys and strings that
look like credentials are redacted before anything is written.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

REDACTED = "[redacted]"

# The correlation id of whatever this task is doing: ("request" | "job", id).
_correlation: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "adminlink_correlation", default=None
)
_batch: contextvars.ContextVar[str | None] = contextvars.ContextVar("adminlink_batch", default=None)

# Keys whose values are secrets wherever they appear (request bodies, job arguments, log extras).
SECRET_KEY_PATTERN = re.compile(
    r"pass(word)?|secret|token|api[_-]?key|totp|otp|authorization|cookie|signature|credential|private",
    re.IGNORECASE,
)
# Credentials recognisable by their shape inside free text.
SECRET_TEXT_PATTERNS = [
    (re.compile(r"\balk_[A-Za-z0-9_-]{6,}"), "alk_" + REDACTED),  # adminlink API keys
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=_-]{6,}"), "whsec_" + REDACTED),  # webhook signing secrets
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + REDACTED),
    (re.compile(r"(?i)((?:pass(?:word)?|secret|token|api[_-]?key)[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&]+"),
     r"\1" + REDACTED),
    (re.compile(r"(?i)(://[^:/@\s]+:)[^@/\s]+@"), r"\1" + REDACTED + "@"),  # URL credentials
    (re.compile(r"\bscim_[A-Za-z0-9_-]{32,}"), "scim_" + REDACTED),  # SCIM bearer tokens
    (re.compile(r"\b(adminlink_(?:user_)?session=)[^\s;,'\"]+"), r"\1" + REDACTED),  # portal session cookies
    # A raw header line, as aiohttp's parser quotes one it refuses: the rest of the line goes.
    (re.compile(r"(?i)\b((?:set-)?cookie|(?:proxy-)?authorization)(\s*:\s*)[^\r\n]+"), r"\1\2" + REDACTED),
]


def redact_text(text: str) -> str:
    for pattern, replacement in SECRET_TEXT_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact(value: Any, key: str | None = None) -> Any:
    """A copy of ``value`` with secrets replaced: by key name anywhere in nested data, by shape
    inside strings."""
    if key is not None and SECRET_KEY_PATTERN.search(key) and value not in (None, "", [], {}):
        return REDACTED
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def correlation() -> tuple[str, str] | None:
    return _correlation.get()


@contextmanager
def correlated(kind: str, ident: str) -> Iterator[None]:
    token = _correlation.set((kind, ident))
    try:
        yield
    finally:
        _correlation.reset(token)


@contextmanager
def in_batch(batch_id: str) -> Iterator[None]:
    """Marks log lines written meanwhile with the batch (of webhook events) they belong to, beside
    the job (``correlated``) of the event being applied."""
    token = _batch.set(batch_id)
    try:
        yield
    finally:
        _batch.reset(token)


def bind_job(job_id: str) -> None:
    """Marks the rest of this task (an arq job run) as the job's; its log lines carry the id."""
    _correlation.set(("job", job_id))


# Attributes every LogRecord has; anything else on a record came in through ``extra=``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


# --- database errors ---------------------------------------------------------------------------

# SQLAlchemy's and the drivers' errors quote the statement's arguments (client values: a SCIM
# filter, an Idempotency-Key, a token sent in a secret's place) in their text, and PostgreSQL's own
# messages quote the offending value: only the class, the SQLSTATE and the statement's label of
# such an error are ever written.
DATABASE_ERROR_MODULES = frozenset({"sqlalchemy", "asyncpg", "sqlite3", "aiosqlite"})
_STATEMENT_TABLE = re.compile(r"\b(?:FROM|INTO|UPDATE)\s+\"?([A-Za-z_]\w*)", re.IGNORECASE)


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and its causes (or contexts), the first raised first."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return chain[::-1]


def _is_database_class(exc: BaseException) -> bool:
    return type(exc).__module__.partition(".")[0] in DATABASE_ERROR_MODULES


def is_database_error(exc: BaseException) -> bool:
    return any(_is_database_class(each) for each in _chain(exc))


def statement_label(statement: str) -> str:
    """``INSERT users``: the statement's verb and first table, never its values."""
    verb = statement.split(None, 1)[0].upper() if statement.strip() else "?"
    table = _STATEMENT_TABLE.search(statement)
    return f"{verb} {table.group(1)}" if table else verb


def database_error_label(exc: BaseException) -> str:
    """``DBAPIError (asyncpg InvalidTextRepresentationError, sqlstate 22P02, in SELECT users)``."""
    chain = _chain(exc)
    details = []
    driver = next((each for each in chain if _is_database_class(each) and type(each) is not type(exc)), None)
    if driver is not None:
        details.append(f"{type(driver).__module__.partition('.')[0]} {type(driver).__name__}")
    codes = [code for each in chain for name in ("sqlstate", "pgcode", "sqlite_errorname")
             if isinstance(code := getattr(each, name, None), str)]
    if codes:
        details.append(f"sqlstate {codes[0]}")
    statements = [sql for each in chain if isinstance(sql := getattr(each, "statement", None), str)]
    if statements:
        details.append(f"in {statement_label(statements[-1])}")
    return type(exc).__name__ + (f" ({', '.join(details)})" if details else "")


def safe_traceback(exc: BaseException) -> str:
    """A traceback (frames and source lines) whose database errors are named by their class
    alone: no message, no arguments."""
    parts = []
    for each in _chain(exc):
        if _is_database_class(each):
            said = f"{type(each).__module__}.{type(each).__name__}"
        else:
            said = "".join(traceback.format_exception_only(type(each), each)).strip()
        parts.append("Traceback (most recent call last):\n" + "".join(traceback.format_tb(each.__traceback__)) + said)
    return "\n\nThe above exception led to the following one:\n\n".join(parts)


def log_error(logger: logging.Logger, exc: BaseException, message: str, *args: Any,
              level: int = logging.ERROR) -> None:
    """``logger.exception`` for ``exc``, except that a database error is told by its class,
    SQLSTATE and statement label, with a traceback that carries no message."""
    if not is_database_error(exc):
        logger.log(level, message, *args, exc_info=exc)
        return
    logger.log(level, message + ": %s", *args, database_error_label(exc),
               extra={"traceback": safe_traceback(exc)})


class DatabaseErrorFilter(logging.Filter):
    """The same for every other logger (arq's, aiohttp's): a database error passed as an argument
    or as the record's exception is replaced by its label and its message-free traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(database_error_label(a) if isinstance(a, BaseException) and is_database_error(a)
                                else a for a in record.args)
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and is_database_error(exc):
            record.traceback = safe_traceback(exc)
            record.exc_info, record.exc_text = None, None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact_text(record.getMessage()),
        }
        current = correlation()
        if current is not None:
            entry[f"{current[0]}_id"] = current[1]
        if (batch := _batch.get()) is not None:
            entry["batch_id"] = batch
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_"):
                entry[name] = redact(value, name)
        if record.exc_info:
            entry["exc"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(entry, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """For a terminal: the same redaction, one readable line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        current = correlation()
        line = super().format(record)
        if current is not None:
            line = f"{line} [{current[0]}={current[1]}]"
        if (batch := _batch.get()) is not None:
            line = f"{line} [batch={batch}]"
        if isinstance(told := getattr(record, "traceback", None), str):  # a database error's (log_error)
            line = f"{line}\n{told}"
        return redact_text(line)


def configure(level: str = "INFO", fmt: str = "json") -> None:
    """Routes every logger (ours, aiohttp's, arq's) through one redacting handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(DatabaseErrorFilter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())


# --- HTTP --------------------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID_HEADER = "X-Request-Id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
access_log = logging.getLogger("adminlink.access")


def request_id_for(request: web.Request) -> str:
    """A caller's own X-Request-Id is kept when it is a plain token; anything else gets a new id."""
    offered = request.headers.get(REQUEST_ID_HEADER, "")
    return offered if _VALID_REQUEST_ID.match(offered) else uuid.uuid4().hex


def route_of(request: web.Request) -> str:
    """The route's pattern (``/api/v1/users/{user_id}``), never the path with its ids."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def request_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Gives the request a correlation id (answered in ``X-Request-Id``) and writes one access
    line for it. Query strings, headers and bodies are never logged."""
    request_id = request_id_for(request)
    started = time.perf_counter()
    status = 500
    with correlated("request", request_id):
        try:
            response = await handler(request)
            status = response.status
            if not response.prepared:
                response.headers[REQUEST_ID_HEADER] = request_id
            return response
        except web.HTTPException as exc:  # redirects and the like, raised past the error middleware
            status = exc.status
            exc.headers[REQUEST_ID_HEADER] = request_id
            raise
        finally:
            if access_log.isEnabledFor(logging.INFO):  # the line costs more to build than to drop
                route = route_of(request)
                access_log.info(
                    "%s %s %s", request.method, route, status,
                    extra={"method": request.method, "route": route, "status": status,
                           "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                           "client_ip": request.remote},
                )
