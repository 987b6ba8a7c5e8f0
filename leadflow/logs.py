"""Process-wide logging: JSON lines, one file set per instance, request ids, no secrets.

`configure_logging(settings, instance)` sends every record that reaches the root logger to
`<home>/logs/app-<instance>.log`, and ERROR and above also to `error-<instance>.log`, both
rotated by time (daily at UTC midnight by default, 30 files kept). The instance name is in the
file names so two processes (two API instances, say) never rotate the same file: a
`TimedRotatingFileHandler` assumes it is the only writer. `LEADFLOW_LOG_STDOUT=1` writes the
same JSON lines to stdout instead, for containers whose runtime collects stdout.

Every line carries `request_id` (from `request_id_var`, set by the API for each request; null
outside one) and `instance`. `RedactSecrets` replaces API keys, Authorization / X-API-Key
values, Bearer tokens, URL passwords and the configured secret settings with
`[redacted]` in the message, its arguments, extra fields and tracebacks, before any handler
formats the record.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import uuid
from collections.abc import Iterable
from contextvars import ContextVar
from logging.handlers import TimedRotatingFileHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr
from pythonjsonlogger.json import JsonFormatter

from leadflow.settings import Settings

REDACTED = "[redacted]"

request_id_var: ContextVar[str | None] = ContextVar("leadflow_request_id", default=None)
"""The current request's id; the API sets it per request, every log line carries it."""

# The API accepts a client's X-Request-ID only when it looks like an id: the value lands in
# every log line and in flow-run tags, so it must not carry newlines, markup or megabytes.
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_INSTANCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

# uvicorn configures these loggers with handlers of its own (plain text, no request id, no
# redaction); configure_logging hands their records to the root logger's handlers instead.
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")

# A secret shorter than this is not searched for: replacing every "abc" in every line would
# wreck the logs and hide nothing worth hiding.
_MIN_SECRET_LENGTH = 4

# Header, parameter and field names whose value is a credential, followed by the separators
# they appear with in logs: `name: v`, `name=v`, `"name": "v"`, `(b'name', b'v')`. An
# optional Bearer/Basic scheme stays readable.
_NAMED_CREDENTIAL = re.compile(
    r"""(?<![A-Za-z0-9])
    (?P<name>(?:proxy-)?authorization|x-api-key|api[_-]?key|apikey|access[_-]?token
        |password|passwd|secret|(?:set-)?cookie)
    (?P<sep>["']?\s*(?:[:=]|,\s*b?["'])\s*["']?)
    (?P<scheme>(?:bearer|basic)\s+)?
    (?!\[redacted\])(?P<value>[^\s"'&,;)}\]]+)""",
    re.IGNORECASE | re.VERBOSE,
)
# Only Bearer stands alone: "basic" is too common a word to redact whatever follows it (a
# Basic credential is caught next to its header name above).
_BEARER = re.compile(r"(?<![A-Za-z0-9])(bearer)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
# Leadflow API keys `lf_<key id>_<secret>`; the key id is not secret and stays for debugging.
_API_KEY = re.compile(r"(?<![A-Za-z0-9])lf_([A-Za-z0-9]+)_[A-Za-z0-9_-]+")
_URL_PASSWORD = re.compile(r"(?<=://)([^/\s:@]+):[^/\s@]+@")
# Field names (whole, or ending in one: `hunter_api_key`) whose value is a credential, for
# dicts and (name, value) pairs logged as extra fields.
_SECRET_KEYS = re.compile(
    r"(?:.*[_-])?(?:(?:proxy-)?authorization|x-api-key|api[_-]?key|apikey|access[_-]?token"
    r"|password|passwd|secret|(?:set-)?cookie)",
    re.IGNORECASE,
)

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


def accept_request_id(header: str | None) -> str:
    """The client's X-Request-ID when it looks like an id, else a fresh one."""
    if header and _REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


def secrets_from_settings(settings: Settings) -> list[str]:
    """The values of every secret setting (and the password inside a secret URL)."""
    found: set[str] = set()
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if not isinstance(value, SecretStr):
            continue
        secret = value.get_secret_value()
        found.add(secret)
        try:
            password = urlsplit(secret).password
        except ValueError:  # not a URL after all
            password = None
        if password:
            found.add(password)
    return sorted(s for s in found if len(s) >= _MIN_SECRET_LENGTH)


class RedactSecrets(logging.Filter):
    """Replaces credentials with `[redacted]` in a record before it is formatted.

    Attached to handlers, not loggers: a logger's filters see only records logged on that very
    logger, a handler's see every record that reaches it.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        # Longest first, so a secret that contains another is replaced whole.
        literal = sorted(
            {s for s in secrets if len(s) >= _MIN_SECRET_LENGTH}, key=len, reverse=True
        )
        self._literal = re.compile("|".join(map(re.escape, literal))) if literal else None

    def redact(self, text: str) -> str:
        if self._literal is not None:
            text = self._literal.sub(REDACTED, text)
        text = _NAMED_CREDENTIAL.sub(
            lambda m: f"{m['name']}{m['sep']}{m['scheme'] or ''}{REDACTED}", text
        )
        text = _API_KEY.sub(rf"lf_\1_{REDACTED}", text)
        text = _BEARER.sub(rf"\1 {REDACTED}", text)
        return _URL_PASSWORD.sub(rf"\1:{REDACTED}@", text)

    def _value(self, value: Any) -> Any:
        # New containers, never the caller's objects changed in place.
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, bytes):
            return self.redact(value.decode("utf-8", "replace"))
        if isinstance(value, dict):
            return {
                key: REDACTED
                if isinstance(key, str) and _SECRET_KEYS.fullmatch(key)
                else self._value(item)
                for key, item in value.items()
            }
        if isinstance(value, list | tuple | set | frozenset):
            items = list(value)
            # A (name, value) pair, e.g. an ASGI header: the name says whether it is secret.
            if len(items) == 2 and isinstance(items[0], str | bytes):
                name = items[0].decode("latin-1") if isinstance(items[0], bytes) else items[0]
                if _SECRET_KEYS.fullmatch(name):
                    return [name, REDACTED]
            return [self._value(item) for item in items]
        return value

    def filter(self, record: logging.LogRecord) -> bool:
        # Each handler runs its filters; the record is shared, so the work is done once.
        if getattr(record, "_leadflow_redacted", False):
            return True
        if isinstance(record.msg, dict):  # python-json-logger logs a dict message as fields
            record.msg = self._value(record.msg)
        else:
            try:
                message = record.getMessage()
            except Exception:  # wrong arguments for the format: keep both, still redacted
                message = f"{record.msg} {record.args!r}"
            record.msg = self.redact(message)
        record.args = None
        for key in set(vars(record)) - _RECORD_ATTRS:
            setattr(record, key, self._value(getattr(record, key)))
        if record.exc_info:
            # Exception messages carry connection strings and URLs with keys: render the
            # traceback now and keep only the redacted text (formatters print exc_text).
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        record._leadflow_redacted = True
        return True


class RequestContext(logging.Filter):
    """Puts `request_id` (from `request_id_var`) and `instance` on every record."""

    def __init__(self, instance: str) -> None:
        super().__init__()
        self.instance = instance

    def filter(self, record: logging.LogRecord) -> bool:
        # A record logged with an explicit `extra={"request_id": ...}` keeps it.
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        record.instance = self.instance
        return True


def log_paths(settings: Settings, instance: str) -> tuple[Path, Path]:
    """The app log and the error log of one instance."""
    if not _INSTANCE.fullmatch(instance):
        raise ValueError(
            f"instance name {instance!r}: use 1-64 letters, digits, '.', '_' or '-' "
            "(it becomes part of the log file names)"
        )
    return (
        settings.logs_dir / f"app-{instance}.log",
        settings.logs_dir / f"error-{instance}.log",
    )


def _formatter() -> JsonFormatter:
    return JsonFormatter(
        "%(levelname)s %(name)s %(message)s",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp=True,
    )


def _rotating(path: Path, settings: Settings, level: int) -> TimedRotatingFileHandler:
    handler = TimedRotatingFileHandler(
        path,
        when=settings.log_rotate_when,
        interval=settings.log_rotate_interval,
        backupCount=settings.log_backup_count,
        encoding="utf-8",
        utc=True,
    )
    handler.setLevel(level)
    return handler


_installed: list[logging.Handler] = []
_lock = threading.Lock()


def configure_logging(settings: Settings, instance: str) -> None:
    """Route all logging to this instance's JSON files (or stdout), redacted and traced.

    Idempotent: a second call replaces the handlers the first one installed.
    """
    app_log, error_log = log_paths(settings, instance)
    level = logging.getLevelNamesMapping()[settings.log_level]
    handlers: list[logging.Handler]
    if settings.log_stdout:
        stream = logging.StreamHandler(sys.stdout)
        stream.setLevel(level)
        handlers = [stream]
    else:
        settings.logs_dir.mkdir(parents=True, exist_ok=True)
        handlers = [
            _rotating(app_log, settings, level),
            _rotating(error_log, settings, logging.ERROR),
        ]
    # Secrets first, then context: the request id is added after redaction has run, so an id
    # that happens to look like a credential is never mangled.
    redactor = RedactSecrets(secrets_from_settings(settings))
    context = RequestContext(instance)
    formatter = _formatter()
    for handler in handlers:
        handler.addFilter(redactor)
        handler.addFilter(context)
        handler.setFormatter(formatter)
    root = logging.getLogger()
    with _lock:
        _remove_installed(root)
        root.setLevel(level)
        for handler in handlers:
            root.addHandler(handler)
        _installed.extend(handlers)
        for name in _UVICORN_LOGGERS:
            logger = logging.getLogger(name)
            logger.handlers.clear()
            logger.propagate = True
            # Their own levels and switches (uvicorn's `log_level`, a `dictConfig` elsewhere in
            # the process disabling existing loggers) give way to ours.
            logger.setLevel(logging.NOTSET)
            logger.disabled = False


def reset_logging() -> None:
    """Remove and close the handlers `configure_logging` installed (flushes the files)."""
    with _lock:
        _remove_installed(logging.getLogger())


def _remove_installed(root: logging.Logger) -> None:
    for handler in _installed:
        root.removeHandler(handler)
        handler.close()
    _installed.clear()
