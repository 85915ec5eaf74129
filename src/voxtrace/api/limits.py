"""Admission limits at the HTTP edge: per-client rate limiting and the body-size cap."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodySizeLimit", "TokenBucketLimiter", "error_response_bytes"]


class TokenBucketLimiter:
    """A token bucket per client key: `rate_per_minute` sustained, `burst` at once.

    Keeps at most `max_keys` buckets (least recently used dropped) so a flood of
    distinct addresses cannot grow memory without bound.
    """

    def __init__(
        self,
        rate_per_minute: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        self._rate_per_s = rate_per_minute / 60.0
        self._burst = float(burst)
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, key: str) -> tuple[bool, float]:
        """Take one token; returns (allowed, seconds until a token is available)."""
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.pop(key, (self._burst, now))
            tokens = min(self._burst, tokens + (now - last) * self._rate_per_s)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        wait_s = 0.0 if allowed else (1.0 - tokens) / self._rate_per_s
        return allowed, wait_s


def error_response_bytes(code: str, message: str, job_id: str | None = None) -> bytes:
    body: dict[str, Any] = {"error": {"code": code, "message": message, "job_id": job_id}}
    return json.dumps(body).encode()


class BodySizeLimit:
    """ASGI middleware: refuse a body over its route's limit (413) before the app parses
    any of it: at once when Content-Length says so, else as soon as the streamed bytes
    pass the limit (nothing is buffered here). A body that takes longer than
    `body_timeout_s` to arrive is refused with 408. Either way the connection closes.

    `route_limits` maps exact paths to their own limit (the submit route's body is a few
    hundred bytes); every other path gets `max_bytes` (the contract's ceiling).
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        route_limits: dict[str, int] | None = None,
        body_timeout_s: float | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.route_limits = dict(route_limits or {})
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.route_limits.get(scope.get("path", ""), self.max_bytes)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > limit
                except ValueError:
                    too_big = False
                if too_big:
                    await _refuse(send, 413, "PAYLOAD_TOO_LARGE", "Request body too large")
                    return

        loop = asyncio.get_running_loop()
        deadline = None if self.body_timeout_s is None else loop.time() + self.body_timeout_s
        seen = 0
        body_done = False
        answered = False  # our refusal went out: the app's own answer is dropped
        started = False

        async def guarded_receive() -> Message:
            nonlocal seen, body_done, answered
            if answered:
                return {"type": "http.disconnect"}
            if body_done or deadline is None:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                if not started:
                    answered = True
                    await _refuse(send, 408, "INVALID_REQUEST", "Request body not received in time")
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    if not started:
                        answered = True
                        await _refuse(send, 413, "PAYLOAD_TOO_LARGE", "Request body too large")
                    return {"type": "http.disconnect"}
                body_done = not message.get("more_body", False)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if answered:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, guarded_receive, guarded_send)


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    body = error_response_bytes(code, message)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
