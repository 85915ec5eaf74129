"""Callback delivery: drain the store's durable outbox into the backend, in order.

Workers never call the backend themselves; they queue callbacks in the store in the
same transaction that changes the job, and this dispatcher delivers them. A crash
between the two therefore cannot lose a terminal callback or send one twice for
different outcomes, and a backend outage only delays delivery.

Delivery is at-least-once: a callback that reached the backend but whose answer was
lost is sent again with the same bytes and the same `Idempotency-Key`
(`<job_id>:<seq>`), so the backend can drop the repeat.

One dispatcher delivers per store at a time: order within a job holds because a job's
next callback is only handed out once the previous one is settled, and two dispatchers
could each be holding a different callback of the same job. With SQLite (one machine)
that one is `voxtrace serve`'s; with PostgreSQL every machine runs one (`serve` and
`voxtrace worker` alike) and the store elects which delivers: the others' passes find
nothing until its session ends, then one of them takes over.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from voxtrace import metrics
from voxtrace.contract import strict_json
from voxtrace.domain import OutboxItem
from voxtrace.logs import job_context
from voxtrace.retry import compute_backoff, is_retryable_status, parse_retry_after
from voxtrace.store.base import JobStore
from voxtrace.store.outage import STORE_UNAVAILABLE, StoreOutage

__all__ = ["USER_AGENT", "CallbackDispatcher", "encode_body", "sign_body"]

logger = logging.getLogger(__name__)

USER_AGENT = "ML-Server/1.0"


def encode_body(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed): the stored text (`contract.strict_json`), UTF-8."""
    return strict_json(payload).encode()


def sign_body(body: bytes, secret: str) -> str:
    """`X-Signature-256` value: HMAC-SHA256 of the raw body, as the backend verifies it."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _loggable(url: str) -> str:
    """A URL fit for logs: no query string, fragment or credentials."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class CallbackDispatcher:
    """Sends due callbacks, retries what may pass, gives up on what cannot."""

    def __init__(
        self,
        store: JobStore,
        http: httpx.Client,
        path: str,
        secret: str | None,
        retry_window_s: float,
        timeout_s: float,
        clock: Callable[[], float] = time.time,
        *,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 300.0,
        backoff_jitter: float = 0.5,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._http = http
        self._path = path if path.startswith("/") else "/" + path
        self._secret = secret
        self._retry_window_s = retry_window_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._backoff_base_s = backoff_base_s
        self._backoff_cap_s = backoff_cap_s
        self._backoff_jitter = backoff_jitter
        self._rng = rng or random.Random()

    def deliver_due(self, limit: int = 50) -> int:
        """One pass over the outbox: try every due callback once; returns how many."""
        items = self._store.due_callbacks(self._clock(), limit)
        for item in items:
            with job_context(item.job_id):
                self._deliver(item)
        return len(items)

    def run(self, stop_event: threading.Event, poll_s: float = 0.5) -> None:
        """Deliver until `stop_event` is set (the body of a background thread).

        A store outage is waited out (logged once, not per pass); any other failure of a
        pass is logged and the next pass tries again, so delivery never ends for good.
        """
        outage = StoreOutage("callback dispatcher")
        while not stop_event.is_set():
            try:
                busy = self.deliver_due() > 0
                outage.recovered()
            except STORE_UNAVAILABLE as exc:
                stop_event.wait(outage.failed(exc))
                continue
            except Exception:
                logger.exception("callback delivery pass failed")
                busy = False
            if not busy:
                stop_event.wait(poll_s)

    # ------------------------------------------------------------------ one callback
    def _deliver(self, item: OutboxItem) -> None:
        url = item.base_url.rstrip("/") + self._path
        where = _loggable(url)
        status = item.payload.get("status")
        try:
            body = encode_body(item.payload)
        except ValueError:
            self._store.mark_dead(item.id, "payload is not valid JSON", self._clock())
            logger.warning(
                "callback %s:%s (%s) dropped: not valid JSON", item.job_id, item.seq, status
            )
            return
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Idempotency-Key": f"{item.job_id}:{item.seq}",
        }
        if self._secret:
            headers["X-Signature-256"] = sign_body(body, self._secret)

        try:
            response = self._http.post(url, content=body, headers=headers, timeout=self._timeout_s)
        except httpx.UnsupportedProtocol:
            metrics.count_callback("unsupported_url", str(status), "give_up")
            self._give_up(item, "unsupported callback URL scheme", where)
            return
        except httpx.HTTPError as exc:  # connection refused, timeouts, protocol errors
            retried = self._failed(item, type(exc).__name__, retry_after_s=None, where=where)
            metrics.count_callback(type(exc).__name__, str(status), retried)
            return
        except httpx.InvalidURL:
            metrics.count_callback("invalid_url", str(status), "give_up")
            self._give_up(item, "invalid callback URL", where)
            return

        code = response.status_code
        if 200 <= code < 300:
            metrics.count_callback(str(code), str(status), None)
            self._store.mark_delivered(item.id, self._clock())
            logger.info(
                "callback %s:%s (%s) delivered to %s: HTTP %d",
                item.job_id,
                item.seq,
                status,
                where,
                code,
            )
        elif is_retryable_status(code):
            retry_after = parse_retry_after(response.headers.get("Retry-After"), self._clock())
            retried = self._failed(item, f"HTTP {code}", retry_after_s=retry_after, where=where)
            metrics.count_callback(str(code), str(status), retried)
        else:
            metrics.count_callback(str(code), str(status), "give_up")
            self._give_up(item, f"HTTP {code}", where)

    def _failed(self, item: OutboxItem, error: str, retry_after_s: float | None, where: str) -> str:
        """A failure that may pass: retry with backoff within the callback's window.

        Returns what followed, for the metrics: "retry" or "give_up"."""
        now = self._clock()
        deadline = item.created_at + self._retry_window_s
        if now >= deadline:
            self._give_up(item, f"{error}; retry window over", where)
            return "give_up"
        delay = compute_backoff(
            item.attempts + 1,
            self._backoff_base_s,
            self._backoff_cap_s,
            self._backoff_jitter,
            self._rng,
        )
        if retry_after_s is not None:  # the server said when; believe it, within reason
            delay = min(max(delay, retry_after_s), self._backoff_cap_s)
        next_at = min(now + delay, deadline)
        self._store.schedule_retry(item.id, next_at, error, now)
        logger.info(
            "callback %s:%s to %s failed (%s), attempt %d; next try in %.1f s",
            item.job_id,
            item.seq,
            where,
            error,
            item.attempts + 1,
            next_at - now,
        )
        return "retry"

    def _give_up(self, item: OutboxItem, error: str, where: str) -> None:
        self._store.mark_dead(item.id, error, self._clock())
        logger.warning(
            "callback %s:%s (%s) to %s given up after %d attempt(s): %s",
            item.job_id,
            item.seq,
            item.payload.get("status"),
            where,
            item.attempts + 1,
            error,
        )
