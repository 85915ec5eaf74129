"""Logging set-up for the entry points (cli, worker processes); library code only logs."""

from __future__ import annotations

import logging
import re
import sys

__all__ = ["RedactingFilter", "configure_logging"]

# A URL's query string may hold a presigned signature or credentials: never log it.
_URL_QUERY = re.compile(r"(https?://[^\s?#\"']+)\?[^\s\"']*")
_USERINFO = re.compile(r"(https?://)[^/\s:@\"']+:[^/\s@\"']+@")


class RedactingFilter(logging.Filter):
    """Strip query strings and credentials from URLs in every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _USERINFO.sub(r"\1", _URL_QUERY.sub(r"\1?<redacted>", message))
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s")
    )
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "faster_whisper"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
