"""Download the job's video over HTTP(S), defensively.

The URL usually is an S3 presigned URL whose query string is a credential: it never
appears in an error message or a log line. Limits (size, time, redirects, schemes) are
enforced while streaming, because a server may lie about Content-Length or send none.

Every hop (the first request and each redirect) passes the same gate: https only
(plain http just for operator-named hosts), the operator's download allowlist if one is
set, and the SSRF guard of `netguard` on the resolved addresses, which are then the only
ones connected to. Hosts named in `allow_http_hosts` skip the address check: the
operator opened exactly those (a local MinIO, a test server on 127.0.0.1).
"""

from __future__ import annotations

import errno
import logging
import posixpath
import re
import socket
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from voxtrace.errors import DownloadError, DownloadUnavailable, InsufficientResources
from voxtrace.logs import redact_url
from voxtrace.pipeline import netguard
from voxtrace.pipeline.s3 import S3Options, is_presigned, object_auth, presigned_expired
from voxtrace.retry import is_retryable_status

__all__ = ["DEFAULT_FILENAME", "FetchOptions", "fetch", "filename_from_url"]

logger = logging.getLogger(__name__)

DEFAULT_FILENAME = "video.mp4"
_MAX_FILENAME_CHARS = 200
_UNSAFE_FILENAME_CHARS = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]")


# Answers that may change on a later attempt; other 4xx answers will not.
@dataclass(frozen=True)
class FetchOptions:
    max_bytes: int = 2 * 1024**3
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0  # inactivity: no byte for this long
    max_redirects: int = 5
    # The whole download, however steadily bytes trickle in; None: only the job's limit.
    total_timeout_s: float | None = None
    # Plain http, and no private-address check, only for these hosts (dev, MinIO).
    allow_http_hosts: tuple[str, ...] = ()
    # When non-empty, the only hosts downloaded from (exact, or "*.example.com").
    allow_download_hosts: tuple[str, ...] = ()
    user_agent: str = "voxtrace/0.1"
    # Optional signer; applied only to requests for the original host, never to a
    # redirect target elsewhere. Unsigned S3 object URLs get one from `s3`.
    auth: httpx.Auth | None = None
    s3: S3Options | None = None


def filename_from_url(url: str) -> str:
    """The original file name from the URL path, percent-decoded and made safe."""
    try:
        path = urlsplit(url).path
    except ValueError:
        return DEFAULT_FILENAME
    name = posixpath.basename(unquote(path))
    name = unicodedata.normalize("NFC", name)
    name = _UNSAFE_FILENAME_CHARS.sub("_", name).strip(" .")
    if not name:
        return DEFAULT_FILENAME
    if len(name) > _MAX_FILENAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        keep = _MAX_FILENAME_CHARS - len(ext) - 1
        name = f"{stem[:keep]}.{ext}" if dot and 0 < len(ext) < 10 else name[:_MAX_FILENAME_CHARS]
    return name


_NOT_ALLOWED = "Failed to download video: destination not allowed"


def _check_url(url: str, opts: FetchOptions) -> httpx.URL:
    """The URL, parsed, if its scheme and host may be downloaded from at all."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise DownloadError("Failed to download video: invalid URL") from exc
    if not parsed.host:
        raise DownloadError("Failed to download video: invalid URL")
    if not (
        parsed.scheme == "https"
        or (parsed.scheme == "http" and netguard.host_matches(parsed.host, opts.allow_http_hosts))
    ):
        raise DownloadError("Failed to download video: URL scheme not allowed")
    if opts.allow_download_hosts and not netguard.host_matches(
        parsed.host, opts.allow_download_hosts
    ):
        raise DownloadError(_NOT_ALLOWED)
    return parsed


def _pin_destination(url: httpx.URL, opts: FetchOptions, backend: netguard.PinnedBackend) -> None:
    """Resolve the host once, check every address, and pin the connection to them."""
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        addresses = netguard.resolve(url.host, port)
    except socket.gaierror as exc:
        logger.debug("Download host did not resolve: %s", type(exc).__name__)
        kind = DownloadUnavailable if exc.errno == socket.EAI_AGAIN else DownloadError
        raise kind("Failed to download video: host not found") from None
    except (OSError, UnicodeError, ValueError):
        raise DownloadError("Failed to download video: host not found") from None
    if not addresses:
        raise DownloadError("Failed to download video: host not found")
    trusted = netguard.host_matches(url.host, opts.allow_http_hosts)
    if not trusted and any(netguard.is_forbidden_address(a) for a in addresses):
        logger.warning("Refused to download from %s: not a public address", url.host)
        raise DownloadError(_NOT_ALLOWED)
    backend.pin(url.host, addresses)


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port)


def fetch(url: str, dest_dir: Path, opts: FetchOptions) -> Path:
    """Stream `url` into `dest_dir` and return the file's path.

    Redirects are followed by hand so that each hop passes the same gate.
    """
    if is_presigned(url) and presigned_expired(url):
        raise DownloadError("Failed to download video: the presigned URL has expired")
    current = _check_url(url, opts)
    origin = _origin(current)
    signer = opts.auth
    if signer is None and opts.s3 is not None:
        signer = object_auth(url, opts.s3)
    dest_dir.mkdir(parents=True, exist_ok=True)
    suffix = Path(filename_from_url(url)).suffix[:10]
    target = dest_dir / f"download{suffix}"
    timeout = httpx.Timeout(opts.read_timeout_s, connect=opts.connect_timeout_s)
    # Media is stored as sent: never ask for, nor decode, a compressed body (a 13-MB
    # gzip answer can decode to gigabytes before any size check sees them).
    headers = {"User-Agent": opts.user_agent, "Accept-Encoding": "identity"}
    deadline = None if opts.total_timeout_s is None else time.monotonic() + opts.total_timeout_s
    backend = netguard.PinnedBackend(deadline)
    try:
        with httpx.Client(
            transport=netguard.pinned_transport(backend),
            timeout=timeout,
            headers=headers,
            follow_redirects=False,
            trust_env=False,  # no proxy or .netrc from the environment
        ) as client:
            for _hop in range(opts.max_redirects + 1):
                _pin_destination(current, opts, backend)
                auth = signer if _origin(current) == origin else None
                request = client.build_request("GET", current)
                response = client.send(request, stream=True, auth=auth)
                try:
                    if response.is_redirect:
                        location = response.headers.get("location", "")
                        current = _check_url(urljoin(str(current), location), opts)
                        continue
                    if response.status_code != 200:
                        # The same rule as for callbacks: a 5xx, 408, 425 or 429 may pass.
                        kind = (
                            DownloadUnavailable
                            if is_retryable_status(response.status_code)
                            else DownloadError
                        )
                        raise kind(f"Failed to download video (HTTP {response.status_code})")
                    encoding = response.headers.get("content-encoding", "").strip().lower()
                    if encoding not in ("", "identity"):
                        raise DownloadError(
                            "Failed to download video: the server sent compressed content"
                        )
                    _stream_to_file(response, target, opts.max_bytes, deadline)
                    logger.info("Downloaded %s", redact_url(str(current)))
                    return target
                finally:
                    response.close()
            raise DownloadError("Failed to download video: too many redirects")
    except DownloadError:
        target.unlink(missing_ok=True)
        raise
    except httpx.TimeoutException as exc:
        target.unlink(missing_ok=True)
        logger.debug("Download timed out: %s", type(exc).__name__)
        raise DownloadUnavailable("Failed to download video: timed out") from None
    except httpx.HTTPError as exc:
        target.unlink(missing_ok=True)
        logger.debug("Download failed: %s", type(exc).__name__)
        raise DownloadUnavailable("Failed to download video") from None
    except OSError as exc:
        target.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InsufficientResources("Out of disk space while downloading") from None
        logger.debug("Download failed: %s", type(exc).__name__)
        raise DownloadError("Failed to download video") from None


def _stream_to_file(
    response: httpx.Response, target: Path, max_bytes: int, deadline: float | None
) -> None:
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise DownloadError("Video file exceeds the maximum allowed size")
    written = 0
    with target.open("wb") as out:
        # Raw: exactly the bytes on the wire (never content-decoded), one network read
        # at a time, each counted against the cap before it is written.
        for chunk in response.iter_raw():
            written += len(chunk)
            if written > max_bytes:
                raise DownloadError("Video file exceeds the maximum allowed size")
            if deadline is not None and time.monotonic() > deadline:
                raise DownloadUnavailable("Failed to download video: timed out")
            out.write(chunk)
    if written == 0:
        raise DownloadError("Failed to download video: empty file")
