"""fetch() against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from voxtrace.errors import DownloadError
from voxtrace.logs import redact_url
from voxtrace.pipeline.fetch import FetchOptions, fetch, filename_from_url

BODY = b"\x00\x01fake-video-bytes" * 1000  # 18 kB


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if body:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        port = self.server.server_address[1]
        if path == "/video.mp4":
            self._send(200, BODY)
        elif path == "/missing.mp4":
            self._send(404, b"not found")
        elif path == "/endless":  # no Content-Length: body until the connection closes
            self.send_response(200)
            self.end_headers()
            for _ in range(200):
                self.wfile.write(b"x" * 1024)
        elif path == "/loop":
            self._send(302, headers={"Location": "/loop"})
        elif path == "/hop":
            self._send(301, headers={"Location": "/video.mp4"})
        elif path == "/elsewhere":
            self._send(302, headers={"Location": f"http://localhost:{port}/video.mp4"})
        elif path == "/slow":
            time.sleep(1.5)
            self._send(200, BODY)
        else:
            self._send(500)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def opts() -> FetchOptions:
    return FetchOptions(
        max_bytes=100_000,
        connect_timeout_s=2,
        read_timeout_s=5,
        max_redirects=3,
        allow_http_hosts=("127.0.0.1",),
    )


def test_downloads_the_file(server: str, opts: FetchOptions, tmp_path: Path) -> None:
    path = fetch(f"{server}/video.mp4?X-Amz-Signature=abc", tmp_path, opts)
    assert path.read_bytes() == BODY
    assert path.parent == tmp_path
    assert path.suffix == ".mp4"


def test_follows_a_redirect_on_an_allowed_host(
    server: str, opts: FetchOptions, tmp_path: Path
) -> None:
    assert fetch(f"{server}/hop", tmp_path, opts).read_bytes() == BODY


def test_404_is_a_permanent_download_error_without_the_query(
    server: str, opts: FetchOptions, tmp_path: Path
) -> None:
    with pytest.raises(DownloadError) as info:
        fetch(f"{server}/missing.mp4?X-Amz-Signature=SECRET123", tmp_path, opts)
    assert "404" in info.value.message
    assert "SECRET123" not in str(info.value)
    assert "127.0.0.1" not in str(info.value)
    assert info.value.retryable is False
    assert list(tmp_path.iterdir()) == []


def test_oversize_without_content_length_is_cut_off(
    server: str, opts: FetchOptions, tmp_path: Path
) -> None:
    with pytest.raises(DownloadError, match="maximum allowed size"):
        fetch(f"{server}/endless", tmp_path, opts)
    assert list(tmp_path.iterdir()) == []  # the partial file is removed


def test_redirect_loop_is_bounded(server: str, opts: FetchOptions, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="too many redirects"):
        fetch(f"{server}/loop", tmp_path, opts)


def test_plain_http_host_not_allowed(server: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="scheme not allowed"):
        fetch(f"{server}/video.mp4", tmp_path, FetchOptions(allow_http_hosts=()))


def test_redirect_to_a_host_not_allowed_is_refused(
    server: str, opts: FetchOptions, tmp_path: Path
) -> None:
    with pytest.raises(DownloadError, match="scheme not allowed"):
        fetch(f"{server}/elsewhere", tmp_path, opts)


def test_read_timeout(server: str, tmp_path: Path) -> None:
    opts = FetchOptions(read_timeout_s=0.3, allow_http_hosts=("127.0.0.1",))
    with pytest.raises(DownloadError, match="timed out") as info:
        fetch(f"{server}/slow", tmp_path, opts)
    assert info.value.retryable is True


def test_connection_refused_is_a_generic_download_error(tmp_path: Path) -> None:
    opts = FetchOptions(connect_timeout_s=2, allow_http_hosts=("127.0.0.1",))
    with pytest.raises(DownloadError) as info:
        fetch("http://127.0.0.1:1/v.mp4?sig=SECRET", tmp_path, opts)
    assert info.value.message == "Failed to download video"
    assert info.value.retryable is True


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://b.s3.amazonaws.com/videos/u/my%20talk.mp4?X-Amz-Signature=x", "my talk.mp4"),
        ("https://b.s3.amazonaws.com/videos/%ED%9A%8C%EC%9D%98.mov", "회의.mov"),
        ("https://host/", "video.mp4"),
        ("https://host", "video.mp4"),
        ("https://host/a/..%2F..%2Fetc%2Fpasswd", "passwd"),
        ("https://host/a/%2e%2e", "video.mp4"),
        ("https://host/evil%0Aname%00.mp4", "evil_name_.mp4"),
    ],
)
def test_filename_from_url(url: str, expected: str) -> None:
    assert filename_from_url(url) == expected


def test_redact_url_drops_the_query() -> None:
    url = "https://user:pw@b.s3.amazonaws.com/v.mp4?X-Amz-Signature=abc"
    assert redact_url(url) == "https://b.s3.amazonaws.com/v.mp4"
