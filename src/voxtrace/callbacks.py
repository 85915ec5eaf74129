"""Callback delivery: drain the store's durable outbox into the backend, in order.

Workers never call the backend themselves; they queue callbacks in the store in the
same transaction that changes the job, and this dispatcher delivers them. A crash
between the two therefore cannot lose a terminal callback or send one twice for
different outcomes, and a backend outage only delays delivery.

Delivery is at-least-once: a callback that reached the backend but whose answer was
lost is sent again with the same bytes and the same `Idempotency-Key`
(`<job_id>:<seq>`), so the backend can drop the repeat.

A slow or dead backend cannot hold up anyone else's callbacks:

- every attempt has one total deadline (`timeout_s`) covering connect, sending, the
  answer's headers and body; a watchdog cuts the socket when it passes, so a peer that
  trickles a byte every few seconds cannot stretch an attempt past it;
- at most `MAX_ANSWER_BYTES` of an answer are read, then the connection is closed (the
  status code is all that matters; a 200-MB answer costs nothing);
- attempts run in a small thread pool per destination (scheme, host and port of the
  callback URL), `per_destination` at a time: one stuck destination fills only its
  own pool.

Per job, order holds: one dispatcher delivers per store, a job's next callback is only
handed out once the previous one is settled, and a job is never in flight twice.
All store writes happen on the dispatcher's own thread; the pools only do HTTP.
With SQLite (one machine) the dispatcher is `voxtrace serve`'s; with PostgreSQL every
machine runs one (`serve` and `voxtrace worker` alike) and the store elects which
delivers: the others' passes find nothing until its session ends, then one takes over.

Redirects (decided here, documented in the README): a 307/308 whose target lies on an
allowed callback destination (`BACKEND_URL` or `VOXTRACE_CALLBACK_ALLOWLIST`) is
followed with the same body, up to `MAX_REDIRECTS` hops; any other 3xx, or one to a
destination not allowed, is a retryable failure: retried within the window (an operator
can fix the backend's configuration meanwhile), never sent where it was not allowed.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import hmac
import logging
import queue
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from voxtrace import metrics
from voxtrace.contract import strict_json
from voxtrace.domain import OutboxItem
from voxtrace.logs import job_context
from voxtrace.retry import compute_backoff, is_retryable_status, parse_retry_after
from voxtrace.store.base import JobStore
from voxtrace.store.outage import STORE_UNAVAILABLE, StoreOutage

__all__ = [
    "MAX_ANSWER_BYTES",
    "USER_AGENT",
    "CallbackDispatcher",
    "destination_of",
    "encode_body",
    "new_callback_client",
    "sign_body",
]

logger = logging.getLogger(__name__)

USER_AGENT = "ML-Server/1.0"
MAX_ANSWER_BYTES = 64 * 1024  # read at most this much of an answer, then close
MAX_REDIRECTS = 3  # 307/308 hops followed within the allowed destinations
FETCH_LIMIT = 500  # due callbacks looked at per pass (one per job)


def encode_body(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed): the stored text (`contract.strict_json`), UTF-8."""
    return strict_json(payload).encode()


def sign_body(body: bytes, secret: str) -> str:
    """`X-Signature-256` value: HMAC-SHA256 of the raw body, as the backend verifies it."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def new_callback_client() -> httpx.Client:
    """The HTTP client for callbacks: no redirects followed by httpx (we decide), and no
    kept-alive connections, so every attempt's socket is its own and the deadline
    watchdog can cut it (a pooled connection would be invisible to the watchdog)."""
    return httpx.Client(follow_redirects=False, limits=httpx.Limits(max_keepalive_connections=0))


def _loggable(url: str) -> str:
    """A URL fit for logs: no query string, fragment or credentials."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def destination_of(url: str) -> str:
    """`scheme://host:port` of a URL (default ports spelled out): the unit of per-
    destination concurrency and of the redirect allowlist."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return url
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


@dataclasses.dataclass(frozen=True)
class _Outcome:
    """What one attempt came to; applied to the store on the dispatcher's thread."""

    item: OutboxItem
    where: str
    kind: str  # delivered | retry | give_up
    error: str = ""
    status_code: int | None = None
    retry_after_s: float | None = None


class _Deadline:
    """A watchdog for one attempt: when `seconds` pass, every socket the attempt opened
    is shut down, which ends whatever read or write is blocked on it."""

    def __init__(self, seconds: float) -> None:
        self._lock = threading.Lock()
        self._streams: list[Any] = []
        self.expired = False
        self._timer = threading.Timer(seconds, self.cut)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's trace hook: note each connection's network stream as it opens."""
        if not event.endswith((".connect_tcp.complete", ".start_tls.complete")):
            return
        stream = info.get("return_value")
        with self._lock:
            self._streams.append(stream)
            late = self.expired
        if late:
            self._shutdown(stream)

    def cut(self) -> None:
        with self._lock:
            self.expired = True
            streams = list(self._streams)
        for stream in streams:
            self._shutdown(stream)

    @staticmethod
    def _shutdown(stream: Any) -> None:
        try:
            sock = stream.get_extra_info("socket")
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
        except (OSError, AttributeError):
            pass  # already closed


class _Lane:
    """The thread pool of one destination and how many attempts it runs now."""

    def __init__(self, name: str, size: int) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(size, thread_name_prefix=name)
        self.size = size
        self.busy = 0


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
        per_destination: int = 4,
        redirect_destinations: Iterable[str] = (),
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
        self._per_destination = max(1, per_destination)
        self._redirect_ok = frozenset(destination_of(u) for u in redirect_destinations)
        self._lanes: dict[str, _Lane] = {}
        self._in_flight: dict[str, str] = {}  # job_id -> destination
        self._done: queue.SimpleQueue[_Outcome] = queue.SimpleQueue()
        self._deadlines: set[_Deadline] = set()
        self._deadlines_lock = threading.Lock()

    # ------------------------------------------------------------------ passes
    def deliver_due(self, limit: int = 50) -> int:
        """One pass: try every due callback once and wait for all of them to settle;
        returns how many were tried."""
        started = self._start_due(limit)
        while self._in_flight:
            self._settle(self._done.get())
        return started

    def run(self, stop_event: threading.Event, poll_s: float = 0.5) -> None:
        """Deliver until `stop_event` is set (the body of a background thread).

        Settles finished attempts and starts due ones without waiting for slow ones. A
        store outage is waited out (logged once, not per pass); any other failure of a
        pass is logged and the next pass tries again, so delivery never ends for good.
        """
        outage = StoreOutage("callback dispatcher")
        try:
            while not stop_event.is_set():
                try:
                    self._settle_finished()
                    if not self._start_due(FETCH_LIMIT):
                        self._wait_for_outcome(poll_s)
                    outage.recovered()
                except STORE_UNAVAILABLE as exc:
                    stop_event.wait(outage.failed(exc))
                except Exception:
                    logger.exception("callback delivery pass failed")
                    stop_event.wait(poll_s)
        finally:
            self.close()

    def close(self) -> None:
        """Cut attempts still running and stop the pools (at shutdown)."""
        with self._deadlines_lock:
            running = list(self._deadlines)
        for deadline in running:
            deadline.cut()
        for lane in self._lanes.values():
            lane.pool.shutdown(wait=False, cancel_futures=True)

    def _wait_for_outcome(self, timeout_s: float) -> None:
        try:
            outcome = self._done.get(timeout=timeout_s)
        except queue.Empty:
            return
        self._settle(outcome)

    def _settle_finished(self) -> None:
        while True:
            try:
                outcome = self._done.get_nowait()
            except queue.Empty:
                return
            self._settle(outcome)

    def _start_due(self, limit: int) -> int:
        """Hand each due callback to its destination's pool, unless its job already has
        one in flight or that pool is full; returns how many were started."""
        started = 0
        for item in self._store.due_callbacks(self._clock(), limit):
            if item.job_id in self._in_flight:
                continue
            destination = destination_of(item.base_url)
            lane = self._lane(destination)
            if lane.busy >= lane.size:
                continue
            lane.busy += 1
            self._in_flight[item.job_id] = destination
            future = lane.pool.submit(self._attempt, item)
            future.add_done_callback(self._collect(item))
            started += 1
        return started

    def _collect(self, item: OutboxItem) -> Callable[[concurrent.futures.Future[_Outcome]], None]:
        def done(future: concurrent.futures.Future[_Outcome]) -> None:
            if future.cancelled():
                outcome = _Outcome(item, "", "cancelled")
            elif (exc := future.exception()) is not None:
                logger.error("callback %s:%s attempt crashed: %r", item.job_id, item.seq, exc)
                outcome = _Outcome(item, "", "retry", error=type(exc).__name__)
            else:
                outcome = future.result()
            self._done.put(outcome)

        return done

    def _lane(self, destination: str) -> _Lane:
        lane = self._lanes.get(destination)
        if lane is None:
            lane = _Lane(f"callbacks-{len(self._lanes)}", self._per_destination)
            self._lanes[destination] = lane
        return lane

    def _settle(self, outcome: _Outcome) -> None:
        """Write an attempt's outcome to the store (on the dispatcher's thread)."""
        item = outcome.item
        destination = self._in_flight.get(item.job_id)
        status = str(item.payload.get("status"))
        answer = str(outcome.status_code) if outcome.status_code else outcome.error or "none"
        try:
            with job_context(item.job_id):
                if outcome.kind == "delivered":
                    metrics.count_callback(answer, status, None)
                    self._store.mark_delivered(item.id, self._clock())
                    logger.info(
                        "callback %s:%s (%s) delivered to %s: HTTP %d",
                        item.job_id,
                        item.seq,
                        status,
                        outcome.where,
                        outcome.status_code,
                    )
                elif outcome.kind == "retry":
                    action = self._failed(item, outcome.error, outcome.retry_after_s, outcome.where)
                    metrics.count_callback(answer, status, action)
                elif outcome.kind == "give_up":
                    metrics.count_callback(answer, status, "give_up")
                    self._give_up(item, outcome.error, outcome.where)
        finally:
            # Free the job only once its outcome is written (or the write failed: then
            # the callback is still pending and is tried again, at least once).
            self._in_flight.pop(item.job_id, None)
            if destination is not None and destination in self._lanes:
                self._lanes[destination].busy -= 1

    # ------------------------------------------------------------------ one attempt
    def _attempt(self, item: OutboxItem) -> _Outcome:
        """One delivery attempt, all of it within `timeout_s`; only HTTP, no store."""
        url = item.base_url.rstrip("/") + self._path
        where = _loggable(url)
        try:
            body = encode_body(item.payload)
        except ValueError:
            return _Outcome(item, where, "give_up", error="payload is not valid JSON")
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Idempotency-Key": f"{item.job_id}:{item.seq}",
        }
        if self._secret:
            headers["X-Signature-256"] = sign_body(body, self._secret)

        deadline = _Deadline(self._timeout_s)
        with self._deadlines_lock:
            self._deadlines.add(deadline)
        try:
            with deadline:
                return self._post(item, url, body, headers, deadline)
        finally:
            with self._deadlines_lock:
                self._deadlines.discard(deadline)

    def _post(
        self,
        item: OutboxItem,
        url: str,
        body: bytes,
        headers: dict[str, str],
        deadline: _Deadline,
    ) -> _Outcome:
        started = time.monotonic()
        for _hop in range(MAX_REDIRECTS + 1):
            where = _loggable(url)
            left_s = max(0.1, self._timeout_s - (time.monotonic() - started))
            try:
                request = self._http.build_request(
                    "POST",
                    url,
                    content=body,
                    headers=headers,
                    timeout=left_s,
                    extensions={"trace": deadline.trace},
                )
                response = self._http.send(request, stream=True)
                try:
                    self._drain(response)
                finally:
                    response.close()
            except httpx.UnsupportedProtocol:
                return _Outcome(item, where, "give_up", error="unsupported callback URL scheme")
            except httpx.InvalidURL:
                return _Outcome(item, where, "give_up", error="invalid callback URL")
            except httpx.HTTPError as exc:  # connection refused, timeouts, protocol errors
                error = "deadline exceeded" if deadline.expired else type(exc).__name__
                return _Outcome(item, where, "retry", error=error)
            if deadline.expired:  # the answer came, but too late to trust its end
                return _Outcome(item, where, "retry", error="deadline exceeded")

            code = response.status_code
            if 200 <= code < 300:
                return _Outcome(item, where, "delivered", status_code=code)
            if 300 <= code < 400:
                target = self._redirect_target(url, code, response.headers.get("Location"))
                if target is None:
                    return _Outcome(
                        item, where, "retry", error=f"HTTP {code} redirect not followed"
                    )
                url = target
                continue
            if is_retryable_status(code):
                retry_after = parse_retry_after(response.headers.get("Retry-After"), self._clock())
                return _Outcome(item, where, "retry", f"HTTP {code}", code, retry_after)
            return _Outcome(item, where, "give_up", error=f"HTTP {code}", status_code=code)
        return _Outcome(item, _loggable(url), "retry", error="too many redirects")

    @staticmethod
    def _drain(response: httpx.Response) -> None:
        """Read at most MAX_ANSWER_BYTES of the answer (the caller closes it)."""
        seen = 0
        try:
            for chunk in response.iter_raw():
                seen += len(chunk)
                if seen >= MAX_ANSWER_BYTES:
                    return
        except httpx.StreamConsumed:  # an answer built in memory (a mock transport)
            return

    def _redirect_target(self, url: str, code: int, location: str | None) -> str | None:
        """Where a 307/308 may be followed: a destination callbacks may go to anyway."""
        if code not in (307, 308) or not location:
            return None
        target = urljoin(url, location)
        if urlsplit(target).scheme not in ("http", "https"):
            return None
        allowed = self._redirect_ok | {destination_of(url)}
        return target if destination_of(target) in allowed else None

    # ------------------------------------------------------------------ bookkeeping
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
        if error == "payload is not valid JSON":
            logger.warning(
                "callback %s:%s (%s) dropped: not valid JSON",
                item.job_id,
                item.seq,
                item.payload.get("status"),
            )
            return
        logger.warning(
            "callback %s:%s (%s) to %s given up after %d attempt(s): %s",
            item.job_id,
            item.seq,
            item.payload.get("status"),
            where,
            item.attempts + 1,
            error,
        )
