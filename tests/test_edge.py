"""The HTTP edge of a real `voxtrace serve` under hostile clients and a broken disk.

Each test starts the server as an operator does (testing/helpers.ServeProcess, API only)
and talks to it over real sockets on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from testing.helpers import SUBMIT, ServeProcess, closed_by_peer
from voxtrace.logs import LogRateLimit

VIDEO = "https://bucket.s3.ap-northeast-2.amazonaws.com/videos/u/talk.mp4"
MB = 1024 * 1024


def _wait(check: object, timeout_s: float = 20.0, what: str = "") -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(what or "condition never held")


def _open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


@contextlib.contextmanager
def serving(tmp_path: Path, **env: str | int) -> Iterator[ServeProcess]:
    srv = ServeProcess(tmp_path / "data", **env)
    with srv:
        yield srv


# ------------------------------------------------------------------ connection flood


def test_a_flood_of_unfinished_requests_is_closed_and_the_server_keeps_answering(
    tmp_path: Path,
) -> None:
    with serving(tmp_path, VOXTRACE_HEADER_TIMEOUT_S=2, VOXTRACE_MAX_PENDING_CONNECTIONS=64) as srv:
        flood: list[socket.socket] = []
        try:
            for i in range(600):  # half send a partial request, half nothing at all
                sock = socket.create_connection(("127.0.0.1", srv.port))
                if i % 2:
                    sock.sendall(b"POST /api/upload-video/process-video HTTP/1.1\r\nHost: x\r\n")
                flood.append(sock)
            # The server still answers, at once, a client that finishes its request.
            health = httpx.get(f"{srv.url}/health", timeout=10)
            assert health.status_code == 200, health.text
            accepted = srv.submit("after-flood", VIDEO)
            assert accepted.status_code == 200, accepted.text
            # It holds at most the pending cap, not the flood: descriptors stay bounded.
            assert _open_fds(srv.pid) < 200, _open_fds(srv.pid)
            # And it closes every one of them (evicted, or past the header deadline).
            _wait(lambda: all(closed_by_peer(s) for s in flood), 30, "idle connections stay")
        finally:
            for sock in flood:
                sock.close()
        assert "Traceback" not in srv.log_tail(100_000)


def test_an_idle_kept_alive_connection_is_closed(tmp_path: Path) -> None:
    with serving(tmp_path, VOXTRACE_KEEPALIVE_TIMEOUT_S=1, VOXTRACE_HEADER_TIMEOUT_S=30) as srv:
        sock = socket.create_connection(("127.0.0.1", srv.port))
        try:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 200")
            _wait(lambda: closed_by_peer(sock), 15, "kept-alive connection never closed")
        finally:
            sock.close()


def test_a_kept_alive_connection_that_starts_a_request_and_stalls_is_closed(
    tmp_path: Path,
) -> None:
    # The keep-alive timer stops at the first byte of the next request; the header
    # deadline must take over, or one byte buys a connection for ever.
    with serving(tmp_path, VOXTRACE_KEEPALIVE_TIMEOUT_S=60, VOXTRACE_HEADER_TIMEOUT_S=1) as srv:
        sock = socket.create_connection(("127.0.0.1", srv.port))
        try:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 200")
            sock.sendall(b"GET /health HTTP/1.1\r\nHo")
            _wait(lambda: closed_by_peer(sock), 15, "a stalled second request kept its socket")
        finally:
            sock.close()


def test_the_log_rate_limit_lets_a_few_through_then_counts_the_rest() -> None:
    now = [0.0]
    limit = LogRateLimit(burst=3, window_s=60.0, clock=lambda: now[0])

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, msg, None, None)

    passed = [limit.filter(r) for r in (record("accept failed") for _ in range(10))]
    assert passed == [True] * 3 + [False] * 7
    assert limit.filter(record("another message"))  # counted per message template
    now[0] = 61.0
    later = record("accept failed")
    assert limit.filter(later)
    assert "[7 similar records left out]" in later.getMessage()


# ------------------------------------------------------------------ large bodies


def _rss_reset(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets the peak (VmHWM)


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _post_raw(port: int, body_bytes: int, chunked: bool) -> bytes:
    """POST a body of `body_bytes` zeros (declared, or chunked), as fast as the server
    takes it; returns what the server answered (its status line first)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(30)
    head = f"POST {SUBMIT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    head += "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {body_bytes}\r\n"
    block = b"0" * MB
    try:
        sock.sendall((head + "\r\n").encode())
        sent = 0
        while sent < body_bytes:
            piece = block[: min(MB, body_bytes - sent)]
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            sent += len(piece)
        if chunked:
            sock.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # the server answered and closed before taking it all: the point
    answer = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            answer += chunk
    sock.close()
    return answer


def test_big_bodies_are_refused_before_they_are_read(tmp_path: Path) -> None:
    with serving(tmp_path) as srv:
        _rss_reset(srv.pid)
        before_mb = _peak_rss_mb(srv.pid)
        answers: list[bytes] = []

        def send(chunked: bool) -> None:
            answers.append(_post_raw(srv.port, 49 * MB, chunked))

        threads = [threading.Thread(target=send, args=(i % 2 == 1,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(answers) == 8
        for answer in answers:
            assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
            assert b'"PAYLOAD_TOO_LARGE"' in answer
        growth_mb = _peak_rss_mb(srv.pid) - before_mb
        assert growth_mb < 40, growth_mb  # eight 49-MB bodies, none of them held
        assert srv.submit("small", VIDEO).status_code == 200  # a real submission passes


def test_a_body_that_never_finishes_is_refused_in_time(tmp_path: Path) -> None:
    with serving(tmp_path, VOXTRACE_BODY_TIMEOUT_S=1) as srv:
        sock = socket.create_connection(("127.0.0.1", srv.port))
        sock.settimeout(20)
        try:
            sock.sendall(
                f"POST {SUBMIT} HTTP/1.1\r\nHost: x\r\nContent-Length: 300\r\n\r\n{{".encode()
            )
            answer = sock.recv(4096)
        finally:
            sock.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer


# ------------------------------------------------------------------ client addresses


def _statuses(srv: ServeProcess, n: int) -> list[int]:
    return [
        httpx.get(
            f"{srv.url}/api/jobs/nope", headers={"X-Forwarded-For": f"10.0.{i // 250}.{i % 250}"}
        ).status_code
        for i in range(n)
    ]


def test_x_forwarded_for_counts_only_from_a_trusted_proxy(tmp_path: Path) -> None:
    limits = {"VOXTRACE_RATE_LIMIT_PER_MINUTE": 6, "VOXTRACE_RATE_LIMIT_BURST": 5}  # ~no refill
    with serving(tmp_path / "direct", **limits) as srv:
        codes = _statuses(srv, 20)
    assert codes.count(429) >= 10, codes  # 20 "clients" are one: the limit holds
    with serving(tmp_path / "proxied", VOXTRACE_TRUSTED_PROXIES="127.0.0.1", **limits) as srv:
        codes = _statuses(srv, 20)
    assert codes == [404] * 20, codes  # behind a trusted proxy each address counts alone


# ------------------------------------------------------------------ the data dir


def test_a_second_serve_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    with serving(tmp_path) as first:
        second = ServeProcess(first.data_dir)
        second.log = tmp_path / "second.log"
        second.start(wait=False)
        assert second.proc is not None
        assert second.proc.wait(60) != 0
        said = second.log.read_text()
        assert "in use by another `voxtrace serve`" in said, said
        assert f"pid {first.pid}" in said
        assert httpx.get(f"{first.url}/health").json()["ready"]
    # once the first has stopped, the data dir is free again
    with serving(tmp_path) as again:
        assert httpx.get(f"{again.url}/health").json()["ready"]


def test_a_deleted_data_dir_is_noticed(tmp_path: Path) -> None:
    with serving(tmp_path) as srv:
        srv.log = tmp_path / "serve.log"  # kept outside what gets deleted
        shutil.rmtree(srv.data_dir)
        health = httpx.get(f"{srv.url}/health", timeout=10)
        assert health.status_code == 503
        assert health.json()["ready"] is False
        assert health.json()["checks"]["data_dir_present"] is False
        r = srv.submit("into-the-void", VIDEO)
        assert r.status_code == 503
        assert r.json()["error"] == {
            "code": "INSUFFICIENT_RESOURCES",
            "message": "Job store unavailable; retry later",
            "job_id": "into-the-void",
        }
        assert int(r.headers["Retry-After"]) >= 1


def test_a_store_that_stays_locked_answers_503_with_the_job_id(tmp_path: Path) -> None:
    with serving(tmp_path) as srv:
        other = sqlite3.connect(srv.store_path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")  # e.g. a backup tool; past the 10-s busy timeout
        try:
            r = httpx.post(
                f"{srv.url}{SUBMIT}", json={"job_id": "locked-out", "video_url": VIDEO}, timeout=30
            )
        finally:
            other.execute("COMMIT")
            other.close()
        assert r.status_code == 503, r.text
        assert r.json()["error"]["job_id"] == "locked-out"
        assert r.json()["error"]["code"] == "INSUFFICIENT_RESOURCES"
        assert "Retry-After" in r.headers
        assert srv.submit("locked-out", VIDEO).status_code == 200  # and it went nowhere
        said = srv.log_tail(100_000)
        assert "answered 503: job store unavailable (database is locked)" in said, said
        assert "Traceback" not in said  # an outage is an operating condition, not a bug


def test_an_unexpected_error_is_logged_once_and_redacted(tmp_path: Path) -> None:
    secret = "sig-0123456789abcdef"
    with serving(tmp_path, VOXTRACE_API_KEY=secret) as srv:
        headers = {"X-API-Key": secret}
        body = {"job_id": "some-job", "video_url": f"{VIDEO}?X-Amz-Signature={secret}"}
        assert httpx.post(f"{srv.url}{SUBMIT}", json=body, headers=headers).status_code == 200
        other = sqlite3.connect(srv.store_path)  # schema drift: reading a job is a bug now
        other.execute("ALTER TABLE jobs RENAME COLUMN options TO options_renamed")
        other.close()
        r = httpx.get(
            f"{srv.url}/api/jobs/some-job",
            params={"X-Amz-Signature": secret},
            headers={"X-API-Key": secret},
        )
        assert r.status_code == 500, r.text
        assert r.json()["error"]["code"] == "INTERNAL_ERROR"
        time.sleep(0.5)  # let the log line land
        log = srv.log_tail(200_000)
    assert log.count("Traceback") == 1, log
    assert "Exception in ASGI application" not in log
    assert secret not in log
