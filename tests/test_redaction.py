"""Secrets never leak: not into logs, job records, error messages or settings dumps."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from voxtrace.config import get_settings
from voxtrace.errors import DownloadError
from voxtrace.logs import RedactingFilter, redact_url
from voxtrace.pipeline.fetch import FetchOptions, fetch

SIGNATURE = "f00dfacef00dfacef00dface"
ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
TOKEN = "FwoGZXIvYXdzEBaaTOKENxyz"
PRESIGNED_QUERY = (
    f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={ACCESS_KEY}%2F20260101%2Fus-east-1"
    f"%2Fs3%2Faws4_request&X-Amz-Date=20990101T000000Z&X-Amz-Expires=900"
    f"&X-Amz-Security-Token={TOKEN}&X-Amz-SignedHeaders=host&X-Amz-Signature={SIGNATURE}"
)
LEAKS = (SIGNATURE, ACCESS_KEY, TOKEN)


class _Missing(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Missing)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _RawMessages(logging.Filter):
    """On a logger (so it runs before any handler's filter): what was really logged."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.messages.append(record.getMessage())
        return True


def test_a_failing_presigned_fetch_leaks_nothing_into_the_logs(
    server: str, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    raw = _RawMessages()
    httpx_logger = logging.getLogger("httpx")
    httpx_logger.addFilter(raw)
    caplog.handler.addFilter(RedactingFilter())
    try:
        # An earlier in-process CLI run may have quietened httpx (configure_logging).
        with (
            caplog.at_level(logging.DEBUG),
            caplog.at_level(logging.DEBUG, logger="httpx"),
            pytest.raises(DownloadError) as info,
        ):
            fetch(
                f"{server}/videos/talk.mp4?{PRESIGNED_QUERY}",
                tmp_path,
                FetchOptions(allow_http_hosts=("127.0.0.1",)),
            )
    finally:
        httpx_logger.removeFilter(raw)
    # The leak is real: httpx itself logs the full URL, signature and all ...
    assert any(SIGNATURE in message for message in raw.messages)
    # ... and nothing of it survives the filter, nor reaches the error.
    assert "/videos/talk.mp4" in caplog.text
    for secret in LEAKS:
        assert secret not in caplog.text
        assert secret not in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        f"GET https://b.s3.amazonaws.com/v.mp4?{PRESIGNED_QUERY} 403",
        f"query was {PRESIGNED_QUERY}",  # a bare query string, no URL around it
        f"params: X-Amz-Signature={SIGNATURE}, X-Amz-Credential={ACCESS_KEY}/x",
        f"v2: Expires=1&Signature={SIGNATURE}&AWSAccessKeyId={ACCESS_KEY}",
        f"Authorization: AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20260101/us-east-1/s3/"
        f"aws4_request, SignedHeaders=host;x-amz-date, Signature={SIGNATURE}",
        f"{{'x-amz-security-token': 'a', 'url': 'X-AMZ-SECURITY-TOKEN={TOKEN}'}}",
        f"https://{ACCESS_KEY}:{SIGNATURE}@minio.local/b/v.mp4",
        f"https://{TOKEN}@minio.local/b/v.mp4",
    ],
)
def test_signing_parameters_are_redacted_wherever_they_appear(text: str) -> None:
    redacted = RedactingFilter().redact(text)
    for secret in LEAKS:
        assert secret not in redacted
    assert "<redacted>" in redacted or "minio.local/b/v.mp4" in redacted


def test_ordinary_text_is_left_alone() -> None:
    text = "Downloaded https://b.s3.amazonaws.com/videos/talk.mp4 (18 kB), signature check ok"
    assert RedactingFilter().redact(text) == text


def test_configured_secrets_are_redacted_from_messages_args_and_tracebacks() -> None:
    secret = "cb-secret-9f8e7d"
    log_filter = RedactingFilter([secret, "abc"])  # too short to redact safely: ignored
    try:
        raise RuntimeError(f"header X-Signature-Key: {secret}")
    except RuntimeError:
        import sys

        record = logging.LogRecord(
            "voxtrace.x", logging.ERROR, __file__, 1, "sending %s to %s", (secret, "abc"), None
        )
        record.exc_info = sys.exc_info()
    assert log_filter.filter(record)
    assert secret not in record.getMessage()
    assert record.getMessage() == "sending <redacted> to abc"
    assert record.exc_text is not None and "RuntimeError" in record.exc_text
    assert secret not in record.exc_text
    assert secret not in logging.Formatter().format(record)


def test_settings_never_show_their_secrets() -> None:
    settings = get_settings(
        callback_secret="cb-secret-9f8e7d",
        api_key="api-key-1a2b3c",
        s3_access_key_id=ACCESS_KEY,
        s3_secret_access_key="s3-secret-4d5e6f",
        store_url="postgresql://voxtrace:db-pass-7g8h9i@db:5432/voxtrace",
    )
    secrets = ("cb-secret-9f8e7d", "api-key-1a2b3c", "s3-secret-4d5e6f", "db-pass-7g8h9i")
    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        for secret in secrets:
            assert secret not in shown
    assert set(settings.secret_values()) == set(secrets)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            f"https://b.s3.ap-northeast-2.amazonaws.com/v/talk.mp4?{PRESIGNED_QUERY}",
            "https://b.s3.ap-northeast-2.amazonaws.com/v/talk.mp4",
        ),
        (
            f"https://user:{SIGNATURE}@minio.local:9000/b/v.mp4#frag",
            "https://minio.local:9000/b/v.mp4",
        ),
        ("https://host:99999/v.mp4", "<invalid url>"),
    ],
)
def test_job_records_show_the_url_without_secrets(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    "path_and_options",
    [
        ("/missing.mp4", {"allow_http_hosts": ("127.0.0.1",)}),  # HTTP 404
        ("/v.mp4", {"allow_http_hosts": ()}),  # plain http, not allowlisted
        ("/v.mp4", {"allow_download_hosts": ("cdn.example.com",)}),  # off the allowlist
    ],
)
def test_download_errors_never_carry_the_query(
    server: str, path_and_options: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    path, options = path_and_options
    opts = FetchOptions(**{"allow_http_hosts": ("127.0.0.1",), **options})
    with pytest.raises(DownloadError) as info:
        fetch(f"{server}{path}?{PRESIGNED_QUERY}", tmp_path, opts)
    for secret in LEAKS:
        assert secret not in str(info.value) and secret not in info.value.message
    assert "127.0.0.1" not in info.value.message


def test_an_expired_presigned_url_error_carries_no_query(tmp_path: Path) -> None:
    url = f"https://b.s3.amazonaws.com/v.mp4?{PRESIGNED_QUERY.replace('20990101', '20200101')}"
    with pytest.raises(DownloadError, match="expired") as info:
        fetch(url, tmp_path, FetchOptions())
    for secret in LEAKS:
        assert secret not in str(info.value)


def test_the_job_store_password_is_blanked_in_logs_too() -> None:
    settings = get_settings(store_url="postgresql://vox:pg-pass-7a8b@db:5432/jobs")
    assert "pg-pass-7a8b" in settings.secret_values()
    log_filter = RedactingFilter(settings.secret_values())
    assert log_filter.redact("connect postgresql://vox:pg-pass-7a8b@db") == (
        "connect postgresql://vox:<redacted>@db"
    )
