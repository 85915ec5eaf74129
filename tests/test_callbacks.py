"""Callback delivery: retries, give-ups, signing, order; over a mock and a real server."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from voxtrace.callbacks import CallbackDispatcher, encode_body
from voxtrace.domain import JobOptions, NewJob
from voxtrace.payloads import completed_payload, failed_payload, progress_payload
from voxtrace.store import MemoryJobStore, SqliteJobStore
from voxtrace.store.base import JobStore

SECRET = "s3cret-callback-key"
PATH = "/api/upload-video/result"
BASE = "http://backend.test"


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Backend:
    """A scripted backend: answers in turn, records every request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = (
            self.answers.pop(0)
            if self.answers
            else httpx.Response(200, json={"status": "received"})
        )
        if isinstance(answer, Exception):
            raise answer
        return answer

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests]


def make_dispatcher(
    store: JobStore,
    handler: Callable[[httpx.Request], httpx.Response],
    clock: Clock,
    secret: str | None = SECRET,
    retry_window_s: float = 3600.0,
    path: str = PATH,
) -> CallbackDispatcher:
    return CallbackDispatcher(
        store,
        httpx.Client(transport=httpx.MockTransport(handler)),
        path=path,
        secret=secret,
        retry_window_s=retry_window_s,
        timeout_s=5.0,
        clock=clock,
        backoff_base_s=1.0,
        backoff_cap_s=60.0,
        backoff_jitter=0.0,
        rng=random.Random(0),
    )


def running_job(store: JobStore, job_id: str = "job-1", base: str = BASE) -> tuple[str, int]:
    store.submit(NewJob(job_id, f"https://bucket.test/{job_id}.mp4", base, JobOptions()), 10, 1.0)
    job = store.claim("w1", 60.0, now=2.0)
    assert job is not None
    return job.job_id, job.attempts


def finish(store: JobStore, job_id: str, attempt: int, now: float = 3.0) -> None:
    result = {"metadata": {"filename": "v.mp4", "duration": 2.5}, "segments": []}
    assert store.complete(job_id, "w1", attempt, result, completed_payload(job_id, result), now)


@pytest.fixture
def store() -> MemoryJobStore:
    return MemoryJobStore()


def test_retries_send_the_same_bytes_and_key_until_delivered(store: MemoryJobStore) -> None:
    job_id, attempt = running_job(store)
    finish(store, job_id, attempt)
    backend = Backend(httpx.Response(500), httpx.Response(500), httpx.Response(200))
    clock = Clock(100.0)
    dispatcher = make_dispatcher(store, backend, clock)

    assert dispatcher.deliver_due() == 1  # 500: next try after 1 s
    clock.now = 100.5
    assert dispatcher.deliver_due() == 0
    clock.now = 101.0
    assert dispatcher.deliver_due() == 1  # 500: next try after 2 s
    clock.now = 102.9
    assert dispatcher.deliver_due() == 0
    clock.now = 103.0
    assert dispatcher.deliver_due() == 1  # 200
    clock.now = 1000.0
    assert dispatcher.deliver_due() == 0

    assert len(backend.requests) == 3
    assert {r.headers["Idempotency-Key"] for r in backend.requests} == {f"{job_id}:1"}
    assert len({r.content for r in backend.requests}) == 1
    first = backend.requests[0]
    assert str(first.url) == BASE + PATH
    assert first.method == "POST"
    assert first.headers["Content-Type"] == "application/json"
    assert first.headers["User-Agent"] == "ML-Server/1.0"
    assert json.loads(first.content)["status"] == "completed"
    (entry,) = store.callback_log(job_id)
    assert (entry["state"], entry["attempts"], entry["delivered_at"]) == ("delivered", 3, 103.0)


def test_the_signature_covers_the_exact_body(store: MemoryJobStore) -> None:
    job_id, attempt = running_job(store)
    finish(store, job_id, attempt)
    backend = Backend()
    make_dispatcher(store, backend, Clock()).deliver_due()
    (request,) = backend.requests
    expected = hmac.new(SECRET.encode(), request.content, hashlib.sha256).hexdigest()
    assert request.headers["X-Signature-256"] == f"sha256={expected}"
    # Compact, strict JSON: what was stored is what was signed and sent.
    assert request.content == encode_body(json.loads(request.content))
    assert b": " not in request.content


def test_without_a_secret_nothing_is_signed(store: MemoryJobStore) -> None:
    job_id, attempt = running_job(store)
    finish(store, job_id, attempt)
    backend = Backend()
    make_dispatcher(store, backend, Clock(), secret=None).deliver_due()
    assert "X-Signature-256" not in backend.requests[0].headers


def test_a_rejected_callback_is_given_up_at_once(
    store: MemoryJobStore, caplog: pytest.LogCaptureFixture
) -> None:
    job_id, attempt = running_job(store)
    finish(store, job_id, attempt)
    backend = Backend(httpx.Response(404, json={"detail": "Job not found"}))
    clock = Clock()
    dispatcher = make_dispatcher(store, backend, clock)
    with caplog.at_level(logging.WARNING, logger="voxtrace.callbacks"):
        assert dispatcher.deliver_due() == 1
    clock.now += 10_000
    assert dispatcher.deliver_due() == 0
    assert len(backend.requests) == 1
    (entry,) = store.callback_log(job_id)
    assert (entry["state"], entry["attempts"], entry["last_error"]) == ("dead", 1, "HTTP 404")
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "HTTP 404" in warning.getMessage()
    assert SECRET not in caplog.text


def test_retry_after_is_honoured_within_the_cap(store: MemoryJobStore) -> None:
    job_id, attempt = running_job(store)
    finish(store, job_id, attempt)
    backend = Backend(
        httpx.Response(429, headers={"Retry-After": "30"}),
        httpx.Response(503, headers={"Retry-After": "86400"}),
        httpx.Response(200, json={"status": "received"}),
    )
    clock = Clock(100.0)
    dispatcher = make_dispatcher(store, backend, clock)
    dispatcher.deliver_due()
    clock.now = 129.9
    assert dispatcher.deliver_due() == 0  # the backoff alone would have allowed 101
    clock.now = 130.0
    assert dispatcher.deliver_due() == 1  # 503 asking for a day: capped at 60 s
    clock.now = 189.9
    assert dispatcher.deliver_due() == 0
    clock.now = 190.0
    assert dispatcher.deliver_due() == 1
    assert store.callback_log(job_id)[0]["state"] == "delivered"


def test_connection_errors_are_retried(store: MemoryJobStore) -> None:
    job_id, attempt = running_job(store)
    finish(store, job_id, attempt)
    backend = Backend(httpx.ConnectError("refused"), httpx.ReadTimeout("slow"))
    clock = Clock(100.0)
    dispatcher = make_dispatcher(store, backend, clock)
    dispatcher.deliver_due()
    assert store.callback_log(job_id)[0]["last_error"] == "ConnectError"
    clock.now = 101.0
    dispatcher.deliver_due()
    assert store.callback_log(job_id)[0]["last_error"] == "ReadTimeout"
    clock.now = 103.0
    dispatcher.deliver_due()
    assert store.callback_log(job_id)[0]["state"] == "delivered"
    assert len(backend.requests) == 3


def test_retries_stop_when_the_window_closes(
    store: MemoryJobStore, caplog: pytest.LogCaptureFixture
) -> None:
    job_id, attempt = running_job(store)
    finish(store, job_id, attempt, now=100.0)  # window closes at 110
    backend = Backend(*[httpx.Response(502) for _ in range(10)])
    clock = Clock(100.0)
    dispatcher = make_dispatcher(store, backend, clock, retry_window_s=10.0)
    sent_at = []
    with caplog.at_level(logging.WARNING, logger="voxtrace.callbacks"):
        while clock.now < 200.0:
            if dispatcher.deliver_due():
                sent_at.append(clock.now)
            clock.now += 0.5
    # 1, 2, 4 s apart, then one last try exactly when the window closes.
    assert sent_at == [100.0, 101.0, 103.0, 107.0, 110.0]
    (entry,) = store.callback_log(job_id)
    assert entry["state"] == "dead"
    assert "retry window" in entry["last_error"]
    assert "given up" in caplog.text


def test_already_completed_counts_as_delivered(store: MemoryJobStore) -> None:
    job_id, attempt = running_job(store)
    finish(store, job_id, attempt)
    backend = Backend(httpx.Response(200, json={"status": "already_completed"}))
    make_dispatcher(store, backend, Clock()).deliver_due()
    assert store.callback_log(job_id)[0]["state"] == "delivered"


def test_progress_arrives_before_the_terminal_and_nothing_after(store: MemoryJobStore) -> None:
    job_id, attempt = running_job(store)
    clock = Clock(100.0)

    def report(value: int) -> bool:
        payload = progress_payload(job_id, value, "working")
        return store.report_progress(job_id, "w1", attempt, value, "working", payload, clock.now)

    def backend(request: httpx.Request) -> httpx.Response:
        received.append(json.loads(request.content))
        if len(received) == 1:  # while the first progress is in flight, the job moves on
            assert report(40)
            assert report(60)
            finish(store, job_id, attempt, now=clock.now)
            assert not report(70)
        return httpx.Response(200, json={"status": "received"})

    received: list[dict[str, Any]] = []
    dispatcher = make_dispatcher(store, backend, clock)
    assert report(25)
    while dispatcher.deliver_due():
        clock.now += 1.0
    assert [(b["status"], b["progress"]) for b in received] == [
        ("processing", 25),
        ("completed", 100),
    ]
    assert [(e["status"], e["state"]) for e in store.callback_log(job_id)] == [
        ("processing", "delivered"),
        ("processing", "superseded"),
        ("processing", "superseded"),
        ("completed", "delivered"),
    ]


def test_a_failed_job_sends_its_error_and_where_it_stopped(store: MemoryJobStore) -> None:
    job_id, attempt = running_job(store)
    store.report_progress(job_id, "w1", attempt, 30, "audio", None, now=3.0)
    payload = failed_payload(job_id, 0, "DOWNLOAD_ERROR", "Failed to download video")
    assert store.fail(
        job_id, None, None, "DOWNLOAD_ERROR", "Failed to download video", payload, 4.0
    )
    backend = Backend()
    make_dispatcher(store, backend, Clock()).deliver_due()
    assert backend.bodies() == [
        {
            "job_id": job_id,
            "status": "failed",
            "progress": 30,
            "error_message": "Failed to download video",
            "error_code": "DOWNLOAD_ERROR",
        }
    ]


def test_logs_carry_no_secret_no_query_and_no_credentials(
    store: MemoryJobStore, caplog: pytest.LogCaptureFixture
) -> None:
    job_id, attempt = running_job(store, base="http://user:hunter2@backend.test")
    finish(store, job_id, attempt)
    backend = Backend(httpx.Response(500), httpx.Response(401))
    clock = Clock(100.0)
    dispatcher = make_dispatcher(store, backend, clock, path="/hook?token=tok-abc123")
    with caplog.at_level(logging.DEBUG):
        dispatcher.deliver_due()
        clock.now = 200.0
        dispatcher.deliver_due()
    assert str(backend.requests[0].url).endswith("/hook?token=tok-abc123")  # really sent
    # Ours only: httpx logs full URLs itself, and logs.configure_logging quietens it.
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("voxtrace"))
    assert "http://backend.test/hook" in ours
    for leak in (SECRET, "tok-abc123", "hunter2", "token="):
        assert leak not in ours
    assert store.callback_log(job_id)[0]["state"] == "dead"


# ------------------------------------------------------------------ a real HTTP server


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Verifies the signature as the deployed backend does: 401 when it does not match."""

    received: list[tuple[str, dict[str, str], bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, dict(self.headers.items()), body))
        signature = self.headers.get("X-Signature-256")
        good = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        ok = signature is None or hmac.compare_digest(signature, good)
        reply = json.dumps({"status": "received"} if ok else {"detail": "bad signature"}).encode()
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass


@pytest.fixture
def backend_server() -> Iterator[tuple[str, list[tuple[str, dict[str, str], bytes]]]]:
    received: list[tuple[str, dict[str, str], bytes]] = []
    handler = type("Recorder", (_Recorder,), {"received": received})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _wait_delivered(store: JobStore, job_id: str, count: int) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        log = store.callback_log(job_id)
        if sum(e["state"] == "delivered" for e in log) >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"not delivered: {store.callback_log(job_id)}")


@pytest.mark.parametrize("secret", [SECRET, "a-wrong-secret"])
def test_real_delivery_over_http(
    tmp_path: Path,
    backend_server: tuple[str, list[tuple[str, dict[str, str], bytes]]],
    secret: str,
) -> None:
    base, received = backend_server
    store = SqliteJobStore(tmp_path / "jobs.db")
    job_id, attempt = running_job(store, base=base)
    http = httpx.Client()
    dispatcher = CallbackDispatcher(store, http, PATH, secret, retry_window_s=60.0, timeout_s=5.0)
    stop = threading.Event()
    thread = threading.Thread(target=dispatcher.run, args=(stop,), kwargs={"poll_s": 0.02})
    thread.start()
    try:
        payload = progress_payload(job_id, 10, "Downloading")
        store.report_progress(job_id, "w1", attempt, 10, "Downloading", payload, time.time())
        if secret != SECRET:  # the backend refuses a bad signature: 401, never retried
            deadline = time.monotonic() + 15
            while store.callback_log(job_id)[0]["state"] != "dead":
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert len(received) == 1
            return
        _wait_delivered(store, job_id, 1)
        finish(store, job_id, attempt, now=time.time())
        _wait_delivered(store, job_id, 2)
    finally:
        stop.set()
        thread.join(timeout=10)
        http.close()
        store.close()

    assert not thread.is_alive()
    assert [path for path, _, _ in received] == [PATH, PATH]
    bodies = [json.loads(body) for _, _, body in received]
    assert [(b["status"], b["progress"]) for b in bodies] == [
        ("processing", 10),
        ("completed", 100),
    ]
    assert bodies[1]["result"]["metadata"]["filename"] == "v.mp4"
    headers = [h for _, h, _ in received]
    assert [h["Idempotency-Key"] for h in headers] == [f"{job_id}:1", f"{job_id}:2"]
    assert all(h["User-Agent"] == "ML-Server/1.0" for h in headers)
