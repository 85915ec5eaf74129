"""Logging set-up for the entry points (cli, worker processes); library code only logs."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "JsonFormatter",
    "LogRateLimit",
    "RedactingFilter",
    "configure_logging",
    "job_context",
    "redact_url",
]

# The job a thread is working for: every line it logs meanwhile carries this job_id.
_JOB_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_id", default=None)
# Lines written before the context existed name their job as their first argument:
# "job %s: ..." and "callback %s:%s ..." (job_id, seq).
_JOB_LINE = re.compile(r"^(?:job|callback) %s\b")

# A URL's query string may hold a presigned signature or credentials: never log it.
_URL_QUERY = re.compile(r"(https?://[^\s?#\"']+)\?[^\s\"']*")
_USERINFO = re.compile(r"(https?://)[^/\s@\"'?#]+@")
# The same parameters outside a full URL (a bare query string, a header, a repr).
_SIGNING_PARAM = re.compile(
    r"(?i)\b((?:X-Amz-)?(?:Signature|Credential|Security-Token)|AWSAccessKeyId)=[^&\s\"',;]+"
)
_REDACTED = "<redacted>"
_MIN_SECRET_CHARS = 4  # shorter "secrets" would redact ordinary words


def redact_url(url: str) -> str:
    """scheme://host[:port]/path: no credentials, no query string (presigned signatures).

    Safe for logs, job records and messages; never raises (a bad port included).
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return "<invalid url>"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class RedactingFilter(logging.Filter):
    """Strip query strings, credentials and signing parameters from every log record,
    and any of the configured secret values (callback secret, API key, S3 key)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = tuple(
            sorted({s for s in secrets if len(s) >= _MIN_SECRET_CHARS}, key=len, reverse=True)
        )

    def redact(self, text: str) -> str:
        text = _USERINFO.sub(r"\1", _URL_QUERY.sub(rf"\1?{_REDACTED}", text))
        text = _SIGNING_PARAM.sub(rf"\1={_REDACTED}", text)
        for secret in self._secrets:
            text = text.replace(secret, _REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "job_id"):  # before the arguments may be folded in below
            record.job_id = record_job_id(record)
        message = record.getMessage()
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:  # tracebacks quote values too
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


class LogRateLimit(logging.Filter):
    """At most `burst` records per message template per `window_s`; then one line says
    how many were left out. For loggers a flood of connections can make repeat
    themselves (asyncio's accept errors, uvicorn's invalid requests)."""

    def __init__(
        self, burst: int = 5, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._burst = burst
        self._window_s = window_s
        self._clock = clock
        self._seen: dict[tuple[str, str], tuple[float, int, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = self._clock()
        start, count, dropped = self._seen.get(key, (now, 0, 0))
        if now - start >= self._window_s:
            if dropped:
                record.msg = f"{record.msg} [{dropped} similar records left out]"
            start, count, dropped = now, 0, 0
        count += 1
        allowed = count <= self._burst
        if not allowed:
            dropped += 1
        if len(self._seen) > 1000:  # many distinct templates: forget the old ones
            self._seen.clear()
        self._seen[key] = (start, count, dropped)
        if allowed and count == self._burst:
            record.msg = f"{record.msg} [more like this are left out for {self._window_s:.0f} s]"
        return allowed


@contextlib.contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Lines logged inside (this thread, and threads started with a copy of this
    context) carry `job_id`."""
    token = _JOB_ID.set(job_id)
    try:
        yield
    finally:
        _JOB_ID.reset(token)


def record_job_id(record: logging.LogRecord) -> str | None:
    """The job a log line is about: its `extra`, the thread's job, or its first argument
    when the line is a "job %s: ..." one."""
    given = getattr(record, "job_id", None)
    if isinstance(given, str):
        return given
    current = _JOB_ID.get()
    if current is not None:
        return current
    args, msg = record.args, record.msg
    if isinstance(args, tuple) and args and isinstance(msg, str) and _JOB_LINE.match(msg):
        return args[0] if isinstance(args[0], str) else None
    return None


class JsonFormatter(logging.Formatter):
    """One JSON object a line (`VOXTRACE_LOG_FORMAT=json`), for log collectors: time,
    level, process, logger, message, and `job_id` on every line about a job."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "process": record.processName,
            "pid": record.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        job_id = record_job_id(record)
        if job_id is not None:
            line["job_id"] = job_id
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False)


class _TextFormatter(logging.Formatter):
    """The plain format; a line about a job ends with ` job_id=...` unless the message
    names it already."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        job_id = record_job_id(record)
        if job_id is not None and job_id not in record.getMessage():
            return f"{text} job_id={job_id}"
        return text


def configure_logging(
    level: str = "INFO", secrets: Iterable[str] = (), log_format: str = "text"
) -> None:
    """Log to stderr through the redacting filter; `secrets` are values never to print
    (pass `Settings.secret_values()`); `log_format` "json" writes one object a line."""
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter
    if log_format == "json":
        formatter = JsonFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = _TextFormatter(
            "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"
        )
    handler.setFormatter(formatter)
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "faster_whisper"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
