"""The SSRF guard: what the downloader refuses to reach, proven with real sockets.

Servers here listen on 127.0.0.1 (and 127.0.0.2), which the guard must refuse unless the
operator allowlisted the host. Where a public answer is needed, the resolver function of
`netguard` is replaced (pure logic) and the connect is recorded instead of made.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest
from pydantic import ValidationError

from voxtrace.api.schemas import ProcessVideoRequest
from voxtrace.config import get_settings
from voxtrace.errors import DownloadError
from voxtrace.netpolicy import host_matches, ip_literal, is_forbidden_address
from voxtrace.pipeline import netguard
from voxtrace.pipeline.fetch import FetchOptions, fetch
from voxtrace.wiring import pipeline_options

from .test_api import assert_envelope, make_server

BODY_A = b"checked-address " * 64
BODY_B = b"rebound-address " * 64
NOT_ALLOWED = "destination not allowed"
PUBLIC_IP = "93.184.215.14"  # any public unicast address; never actually connected to


class _Handler(BaseHTTPRequestHandler):
    body = BODY_A

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        target = self.path.split("/redirect?to=", 1)
        if len(target) == 2:
            self.send_response(302)
            self.send_header("Location", target[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)


class _CountingServer(ThreadingHTTPServer):
    """Counts accepted TCP connections: a refused destination must see none."""

    daemon_threads = True
    connections = 0

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.connections += 1
        return True


def _serve(host: str, port: int, body: bytes) -> _CountingServer:
    handler = type("Handler", (_Handler,), {"body": body})
    httpd = _CountingServer((host, port), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[_CountingServer, _CountingServer]]:
    """Server A on 127.0.0.1:P and server B on 127.0.0.2:P (the same port)."""
    a = _serve("127.0.0.1", 0, BODY_A)
    b = _serve("127.0.0.2", a.server_address[1], BODY_B)
    yield a, b
    for httpd in (a, b):
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def server(servers: tuple[_CountingServer, _CountingServer]) -> _CountingServer:
    servers[0].connections = 0
    servers[1].connections = 0
    return servers[0]


def _opts(**overrides: Any) -> FetchOptions:
    return FetchOptions(**{"connect_timeout_s": 2, "read_timeout_s": 5, **overrides})


class _Resolver:
    """A stand-in for DNS: answers in turn, the last one repeated; counts its calls."""

    def __init__(self, *answers: tuple[str, ...]) -> None:
        self.answers = list(answers)
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> tuple[netguard.IPAddress, ...]:
        self.calls.append(host)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return tuple(ipaddress.ip_address(a) for a in answer)


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record TCP connects (and fail them) instead of reaching out."""
    seen: list[str] = []

    def record(self: object, host: str, port: int, *args: object, **kw: object) -> None:
        seen.append(host)
        raise httpcore.ConnectError("recorded, not connected")

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", record)
    return seen


# --------------------------------------------------------------- the address rule


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.255.0.9",
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "169.254.169.254",
        "169.254.0.1",
        "100.64.0.1",
        "100.127.255.254",
        "0.0.0.0",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "192.0.2.1",
        "::",
        "::1",
        "fc00::1",
        "fd12:3456::1",
        "fe80::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:10.0.0.1",
        "::ffff:100.64.0.1",
        "2002:7f00:1::1",  # 6to4 carrying 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 carrying 169.254.169.254
    ],
)
def test_non_public_addresses_are_forbidden(address: str) -> None:
    assert is_forbidden_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", PUBLIC_IP, "2606:4700:4700::1111", "1.1.1.1"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert not is_forbidden_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("[::ffff:7f00:1]", "::ffff:7f00:1"),
        ("169.254.169.254.", "169.254.169.254"),
        ("example.com", None),
        ("deadbeef", None),
        ("1.2.3.4.5", None),
    ],
)
def test_ip_literal_reads_every_numeric_spelling(host: str, expected: str | None) -> None:
    literal = ip_literal(host)
    assert (str(literal) if literal else None) == expected


def test_host_patterns() -> None:
    assert host_matches("media.example.com", ("*.example.com",))
    assert host_matches("A.B.Example.COM.", ("*.example.com",))
    assert not host_matches("example.com", ("*.example.com",))
    assert not host_matches("evilexample.com", ("*.example.com",))
    assert host_matches("cdn.test", ("other.test", "cdn.test"))
    assert not host_matches("cdn.test.evil", ("cdn.test",))


# --------------------------------------------------------------- fetching, real sockets


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "localhost", "2130706433", "0x7f.1", "127.1", "[::ffff:127.0.0.1]"],
)
def test_a_local_server_is_refused_unless_allowlisted(
    server: _CountingServer, host: str, tmp_path: Path
) -> None:
    port = server.server_address[1]
    with pytest.raises(DownloadError) as info:
        fetch(f"https://{host}:{port}/v.mp4?X-Amz-Signature=S3CRET", tmp_path, _opts())
    assert NOT_ALLOWED in info.value.message
    assert info.value.retryable is False
    assert "S3CRET" not in str(info.value) and "127.0.0.1" not in str(info.value)
    assert server.connections == 0


def test_the_operator_allowlist_opens_exactly_the_named_host(
    server: _CountingServer, tmp_path: Path
) -> None:
    port = server.server_address[1]
    opts = _opts(allow_http_hosts=("127.0.0.1",))
    assert fetch(f"http://127.0.0.1:{port}/v.mp4", tmp_path, opts).read_bytes() == BODY_A
    # The same server under another name is not opened by naming 127.0.0.1.
    with pytest.raises(DownloadError, match=NOT_ALLOWED):
        fetch(f"https://localhost:{port}/v.mp4", tmp_path, opts)
    with pytest.raises(DownloadError, match="scheme not allowed"):
        fetch(f"http://localhost:{port}/v.mp4", tmp_path, opts)
    assert server.connections == 1


@pytest.mark.parametrize(
    "target",
    [
        "https://169.254.169.254/latest/meta-data/iam/",
        "https://localhost:{port}/v.mp4",
        "https://2130706433:{port}/v.mp4",
        "https://[::ffff:127.0.0.2]:{port}/v.mp4",
        "https://127.0.0.2:{port}/v.mp4",
    ],
)
def test_a_redirect_to_a_forbidden_address_is_refused(
    servers: tuple[_CountingServer, _CountingServer], target: str, tmp_path: Path
) -> None:
    a, b = servers
    port = a.server_address[1]
    b.connections = 0
    start = f"http://127.0.0.1:{port}/redirect?to={target.format(port=port)}"
    with pytest.raises(DownloadError) as info:
        fetch(start, tmp_path, _opts(allow_http_hosts=("127.0.0.1",)))
    assert NOT_ALLOWED in info.value.message
    assert info.value.retryable is False
    assert b.connections == 0


def test_a_redirect_hop_is_checked_after_dns(
    server: _CountingServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    port = server.server_address[1]
    resolver = _Resolver(("127.0.0.1",), ("10.0.0.7",))
    monkeypatch.setattr(netguard, "resolve", resolver)
    start = f"http://127.0.0.1:{port}/redirect?to=https://internal.example.com/v.mp4"
    with pytest.raises(DownloadError, match=NOT_ALLOWED):
        fetch(start, tmp_path, _opts(allow_http_hosts=("127.0.0.1",)))
    assert resolver.calls == ["127.0.0.1", "internal.example.com"]


@pytest.mark.parametrize(
    "answer",
    [
        ("127.0.0.1",),
        ("169.254.169.254",),
        ("::ffff:127.0.0.1",),
        ("fd00::5",),
        (PUBLIC_IP, "127.0.0.1"),  # one bad address in the answer spoils it all
    ],
)
def test_a_name_resolving_to_a_forbidden_address_is_refused(
    answer: tuple[str, ...],
    connects: list[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setattr(netguard, "resolve", _Resolver(answer))
    with pytest.raises(DownloadError, match=NOT_ALLOWED) as info:
        fetch("https://videos.example.com/v.mp4?X-Amz-Signature=S3CRET", tmp_path, _opts())
    assert info.value.retryable is False
    assert "S3CRET" not in str(info.value)
    assert connects == []


def test_the_connect_goes_to_the_checked_address_only(
    connects: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """DNS rebinding: the first answer is checked, a later one would point inside."""
    resolver = _Resolver((PUBLIC_IP,), ("127.0.0.1",))
    monkeypatch.setattr(netguard, "resolve", resolver)
    with pytest.raises(DownloadError) as info:
        fetch("https://videos.example.com/v.mp4", tmp_path, _opts())
    assert info.value.retryable is True  # the (recorded) connect failed, nothing refused
    assert resolver.calls == ["videos.example.com"]
    assert connects == [PUBLIC_IP]


def test_a_rebinding_answer_never_reaches_the_other_server(
    servers: tuple[_CountingServer, _CountingServer],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """With real sockets: the name is pinned to 127.0.0.1 (server A) when checked; the
    resolver would say 127.0.0.2 (server B) if asked again, and must not be."""
    a, b = servers
    b.connections = 0
    resolver = _Resolver(("127.0.0.1",), ("127.0.0.2",))
    monkeypatch.setattr(netguard, "resolve", resolver)
    opts = _opts(allow_http_hosts=("media.test",))
    path = fetch(f"http://media.test:{a.server_address[1]}/v.mp4", tmp_path, opts)
    assert path.read_bytes() == BODY_A
    assert resolver.calls == ["media.test"]
    assert b.connections == 0


def test_the_download_allowlist_is_the_only_way_out(
    server: _CountingServer, connects: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(netguard, "resolve", _Resolver((PUBLIC_IP,)))
    opts = _opts(allow_download_hosts=("*.example.com", "cdn.test"))
    for refused in ("https://evil.test/v.mp4", "https://example.com/v.mp4"):
        with pytest.raises(DownloadError, match=NOT_ALLOWED):
            fetch(refused, tmp_path, opts)
    assert connects == []
    with pytest.raises(DownloadError, match=r"Failed to download video$"):
        fetch("https://media.example.com/v.mp4", tmp_path, opts)
    assert connects == [PUBLIC_IP]  # allowed through the gate (the connect is recorded)


def test_a_redirect_off_the_download_allowlist_is_refused(
    server: _CountingServer, tmp_path: Path
) -> None:
    port = server.server_address[1]
    opts = _opts(allow_http_hosts=("127.0.0.1",), allow_download_hosts=("127.0.0.1",))
    assert fetch(f"http://127.0.0.1:{port}/v.mp4", tmp_path, opts).read_bytes() == BODY_A
    with pytest.raises(DownloadError, match=NOT_ALLOWED):
        fetch(f"http://127.0.0.1:{port}/redirect?to=https://cdn.example.com/v", tmp_path, opts)


def test_a_host_that_does_not_resolve_is_a_download_error(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="host not found"):
        fetch("https://no-such-host.invalid/v.mp4", tmp_path, _opts())


# --------------------------------------------------------------- submit time, no DNS


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://host/v.mp4",
        "gopher://host:70/_x",
        "data:video/mp4;base64,AAAA",
        "https://user:pw@host/v.mp4",
        "https://token@host/v.mp4",
        "https://host/" + "a" * 4100,
        "https://127.0.0.1/v.mp4",
        "https://169.254.169.254/latest/meta-data/",
        "https://2130706433/v.mp4",
        "https://0x7f.1/v.mp4",
        "https://10.0.0.1/v.mp4",
        "https://100.64.0.1/v.mp4",
        "https://0.0.0.0/v.mp4",
        "https://[::1]/v.mp4",
        "https://[::ffff:127.0.0.1]/v.mp4",
    ],
)
def test_submit_refuses_urls_that_can_never_be_fetched(url: str) -> None:
    with pytest.raises(ValidationError):
        ProcessVideoRequest.model_validate({"job_id": "j1", "video_url": url})


@pytest.mark.parametrize(
    "url", ["https://169.254.169.254/latest/meta-data/", "https://2130706433/v.mp4"]
)
def test_the_api_answers_400_for_a_forbidden_literal_address(url: str, tmp_path: Path) -> None:
    server, store, _ = make_server(tmp_path)
    try:
        r = httpx.post(
            f"{server.url}/api/upload-video/process-video",
            json={"job_id": "ssrf-1", "video_url": url},
            timeout=10,
        )
        error = assert_envelope(r, 400, "INVALID_REQUEST", "ssrf-1")
        assert "video_url" in error["message"]
    finally:
        server.stop()
        store.close()


@pytest.mark.parametrize(
    "url",
    [
        "https://bucket.s3.ap-northeast-2.amazonaws.com/v.mp4?X-Amz-Signature=abc",
        "https://8.8.8.8/v.mp4",
        "https://internal.example.com/v.mp4",  # names are judged when fetching
        "http://127.0.0.1:8080/v.mp4",  # plain http: only an allowlisted host is fetched
    ],
)
def test_submit_accepts_what_the_fetcher_judges(url: str) -> None:
    assert ProcessVideoRequest.model_validate({"job_id": "j1", "video_url": url}).video_url == url


# --------------------------------------------------------------- settings


def test_settings_reach_the_fetch_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOXTRACE_ALLOW_DOWNLOAD_HOSTS", "*.Example.com, cdn.test ,")
    monkeypatch.setenv("VOXTRACE_ALLOW_HTTP_HOSTS", "127.0.0.1")
    monkeypatch.setenv("VOXTRACE_S3_ENDPOINT_URL", "http://minio.internal:9000/")
    fetch_opts = pipeline_options(get_settings()).fetch
    assert fetch_opts.allow_download_hosts == ("*.example.com", "cdn.test")
    # The S3 endpoint is a host the operator named: http and private are opened for it.
    assert fetch_opts.allow_http_hosts == ("127.0.0.1", "minio.internal")
    assert fetch_opts.s3 is not None and fetch_opts.s3.endpoint_url == "http://minio.internal:9000"


# --------------------------------------------------------------- TLS on the pinned address


def _self_signed(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A certificate for `name` that is its own CA (trusted through SSL_CERT_FILE)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.mark.parametrize(("cert_name", "ok"), [("media.test", True), ("other.test", False)])
def test_tls_to_the_pinned_address_verifies_the_original_host_name(
    cert_name: str, ok: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Connected to 127.0.0.1, but SNI, Host and the certificate check use media.test."""
    import ssl

    cert_path, key_path = _self_signed(tmp_path, cert_name)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_path))
    seen: dict[str, str | None] = {}

    class Handler(_Handler):
        def do_GET(self) -> None:
            seen["host"] = self.headers.get("Host")
            super().do_GET()

    httpd = _CountingServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)

    def record_sni(sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        seen["sni"] = name

    context.sni_callback = record_sni
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    port = httpd.server_address[1]
    monkeypatch.setattr(netguard, "resolve", _Resolver(("127.0.0.1",)))
    try:
        # media.test is named by the operator (it resolves to a private address here).
        opts = _opts(allow_http_hosts=("media.test",))
        if ok:
            path = fetch(f"https://media.test:{port}/v.mp4", tmp_path / "out", opts)
            assert path.read_bytes() == BODY_A
            assert seen == {"sni": "media.test", "host": f"media.test:{port}"}
        else:
            with pytest.raises(DownloadError):
                fetch(f"https://media.test:{port}/v.mp4", tmp_path / "out", opts)
            assert seen == {"sni": "media.test"}  # handshake refused: no request sent
    finally:
        httpd.shutdown()
        httpd.server_close()
