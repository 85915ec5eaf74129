"""Running the API under uvicorn with the edge limits a public port needs.

What a hostile or broken client can no longer do:

- hold a connection open without finishing its request headers: each connection has
  `header_timeout_s` to send them (per request, on kept-alive connections too), and at
  most `max_pending_connections` may be waiting for headers at once, the oldest closed
  first, so a flood of half-open connections cannot use up the descriptors that
  `/health` and submissions need; idle kept-alive connections close after
  `keepalive_timeout_s`; `max_connections` caps the rest (503 past it);
- fake its address: `X-Forwarded-For` is believed only from `VOXTRACE_TRUSTED_PROXIES`;
- flood the log: the asyncio and uvicorn loggers say the same thing at most a few
  times a minute, then how many they left out;
- get a second, unredacted copy of a 500's traceback: `ErrorBoundary` ends an error the
  app already answered and logged, so uvicorn never prints its own.

`DataDirLock` keeps a second `voxtrace serve` off a data dir one already uses.
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import logging
import os
import resource
from pathlib import Path
from typing import IO, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from voxtrace.api.limits import error_response_bytes
from voxtrace.config import Settings
from voxtrace.logs import LogRateLimit

__all__ = [
    "DataDirLock",
    "ErrorBoundary",
    "guarded_protocol",
    "raise_fd_limit",
    "run_api",
]

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16 * 1024  # h11's limit on a request line plus headers


class _Pending:
    """The connections of one server still waiting for request headers, oldest first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.waiting: collections.OrderedDict[GuardedH11Protocol, None] = collections.OrderedDict()
        self.closed_slow = 0  # closed for taking longer than the header timeout
        self.closed_evicted = 0  # closed to make room under a flood


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's headers and a cap on
    the connections waiting for them (see the module docstring)."""

    header_timeout_s = 10.0
    pending = _Pending(256)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._seen_cycle: object = None
        self._await_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._check_started()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            return
        self._check_started()
        if self.cycle is self._seen_cycle:
            # Kept alive: the next request (and the rest of an unread body before it) has
            # its own deadline; uvicorn's keep-alive timer stops at the first byte.
            self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_arrived()
        super().connection_lost(exc)

    def _check_started(self) -> None:
        if self.cycle is not None and self.cycle is not self._seen_cycle:
            self._seen_cycle = self.cycle
            self._headers_arrived()

    def _await_headers(self) -> None:
        self._headers_arrived()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._too_slow)
        pending = self.pending
        pending.waiting[self] = None
        while len(pending.waiting) > pending.limit:
            oldest, _ = pending.waiting.popitem(last=False)
            pending.closed_evicted += 1
            oldest._close("evicted")

    def _headers_arrived(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self.pending.waiting.pop(self, None)

    def _too_slow(self) -> None:
        self._header_timer = None
        self.pending.waiting.pop(self, None)
        self.pending.closed_slow += 1
        self._close("header timeout")

    def _close(self, why: str) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        if not self.transport.is_closing():
            log.debug("closing a connection from %s: %s", self.client, why)
            self.transport.close()


def guarded_protocol(header_timeout_s: float, max_pending: int) -> type[GuardedH11Protocol]:
    """A protocol class of its own per server (its pending registry is per class)."""
    attrs = {"header_timeout_s": header_timeout_s, "pending": _Pending(max_pending)}
    return type("GuardedH11Protocol", (GuardedH11Protocol,), attrs)


class ErrorBoundary:
    """Outermost ASGI wrapper: an exception the app already answered (Starlette answers
    500 through our handler, which logs it once and redacted, then re-raises) ends here
    instead of being logged a second time, unredacted, by the server. One that escaped
    before any answer gets a 500 envelope and one log record."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            if scope["type"] != "http":
                raise
            if started:
                return  # answered (500) and logged by the app's handler
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            body = error_response_bytes("INTERNAL_ERROR", "Internal server error")
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft descriptor limit towards `wanted` (within the hard limit);
    returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


class DataDirLock:
    """An exclusive `flock` on `<data_dir>/serve.lock`, held while `voxtrace serve` runs:
    two servers on one data dir (an overlapping restart) would both deliver the same
    outbox and take back each other's jobs. Released by the kernel when the process ends,
    however it ends."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "serve.lock"
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock, or SystemExit with a message saying who holds it."""
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise SystemExit(
                f"voxtrace: the data dir {self.path.parent} is in use by another "
                f"`voxtrace serve` (pid {holder}); stop it first, or give this one its own "
                "VOXTRACE_DATA_DIR"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def run_api(app: ASGIApp, settings: Settings, log_level: str) -> None:
    """Serve `app` on the configured host and port until told to stop."""
    import uvicorn

    limiter = LogRateLimit()
    for name in ("asyncio", "uvicorn.error"):
        logging.getLogger(name).addFilter(limiter)
    have = raise_fd_limit(settings.max_connections + 256)
    if have < settings.max_connections + 64:
        log.warning(
            "only %d file descriptors allowed: fewer than VOXTRACE_MAX_CONNECTIONS (%d) needs",
            have,
            settings.max_connections,
        )
    trusted = list(settings.trusted_proxies)
    config: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": log_level.lower(),
        "log_config": None,  # ours (cli.configure_logging): one redacting handler
        "access_log": False,
        "timeout_graceful_shutdown": 5,
        "timeout_keep_alive": max(1, round(settings.keepalive_timeout_s)),
        "limit_concurrency": settings.max_connections,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        "http": guarded_protocol(settings.header_timeout_s, settings.max_pending_connections),
        "proxy_headers": bool(trusted),
        "forwarded_allow_ips": trusted or None,
    }
    uvicorn.run(ErrorBoundary(app), **config)
