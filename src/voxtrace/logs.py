"""Logging set-up for the entry points (cli, worker processes); library code only logs."""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit, urlunsplit

__all__ = ["LogRateLimit", "RedactingFilter", "configure_logging", "redact_url"]

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


def configure_logging(level: str = "INFO", secrets: Iterable[str] = ()) -> None:
    """Log to stderr through the redacting filter; `secrets` are values never to print
    (pass `Settings.secret_values()`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s")
    )
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "faster_whisper"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
