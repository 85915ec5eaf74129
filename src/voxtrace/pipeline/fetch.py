"""Download the job's video over HTTP(S), defensively.

The URL usually is an S3 presigned URL whose query string is a credential: it never
appears in an error message or a log line. Limits (size, time, redirects, schemes) are
enforced while streaming, because a server may lie about Content-Length or send none.
"""

from __future__ import annotations

import errno
import logging
import posixpath
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from voxtrace.errors import DownloadError, InsufficientResources

__all__ = ["DEFAULT_FILENAME", "FetchOptions", "fetch", "filename_from_url", "redact_url"]

logger = logging.getLogger(__name__)

DEFAULT_FILENAME = "video.mp4"
_CHUNK_BYTES = 1 << 16
_MAX_FILENAME_CHARS = 200
_UNSAFE_FILENAME_CHARS = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]")
# Answers that may change on a later attempt; other 4xx answers will not.
_TRANSIENT_STATUSES = frozenset({408, 425, 429, *range(500, 600)})


@dataclass(frozen=True)
class FetchOptions:
    max_bytes: int = 2 * 1024**3
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0  # inactivity: no byte for this long
    max_redirects: int = 5
    allow_http_hosts: tuple[str, ...] = ()  # plain http only for these hosts (dev, MinIO)
    user_agent: str = "voxtrace/0.1"
    # Optional signer (e.g. AWS SigV4 for unsigned S3 object URLs); applied only to
    # requests for the original host, never to a redirect target elsewhere.
    auth: httpx.Auth | None = None


def redact_url(url: str) -> str:
    """scheme://host/path only: safe for logs (query strings hold signatures)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{parts.path}"


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


def _check_scheme(url: str, opts: FetchOptions) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise DownloadError("Failed to download video: invalid URL") from exc
    if not parsed.host:
        raise DownloadError("Failed to download video: invalid URL")
    if parsed.scheme == "https":
        return parsed
    if parsed.scheme == "http" and parsed.host in opts.allow_http_hosts:
        return parsed
    raise DownloadError("Failed to download video: URL scheme not allowed")


def _transient(error: DownloadError) -> DownloadError:
    """Mark one DownloadError as worth retrying (the class default: a missing file stays
    missing, but a timeout or a 503 may not happen again)."""
    error.retryable = True
    return error


def fetch(url: str, dest_dir: Path, opts: FetchOptions) -> Path:
    """Stream `url` into `dest_dir` and return the file's path.

    Redirects are followed by hand so that each hop passes the same scheme/host rule.
    """
    current = _check_scheme(url, opts)
    origin_host = current.host
    dest_dir.mkdir(parents=True, exist_ok=True)
    suffix = Path(filename_from_url(url)).suffix[:10]
    target = dest_dir / f"download{suffix}"
    timeout = httpx.Timeout(opts.read_timeout_s, connect=opts.connect_timeout_s)
    headers = {"User-Agent": opts.user_agent}
    try:
        with httpx.Client(timeout=timeout, headers=headers, follow_redirects=False) as client:
            for _hop in range(opts.max_redirects + 1):
                auth = opts.auth if current.host == origin_host else None
                request = client.build_request("GET", current)
                response = client.send(request, stream=True, auth=auth)
                try:
                    if response.is_redirect:
                        location = response.headers.get("location", "")
                        current = _check_scheme(urljoin(str(current), location), opts)
                        continue
                    if response.status_code != 200:
                        error = DownloadError(
                            f"Failed to download video (HTTP {response.status_code})"
                        )
                        if response.status_code in _TRANSIENT_STATUSES:
                            _transient(error)
                        raise error
                    _stream_to_file(response, target, opts.max_bytes)
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
        raise _transient(DownloadError("Failed to download video: timed out")) from None
    except httpx.HTTPError as exc:
        target.unlink(missing_ok=True)
        logger.debug("Download failed: %s", type(exc).__name__)
        raise _transient(DownloadError("Failed to download video")) from None
    except OSError as exc:
        target.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InsufficientResources("Out of disk space while downloading") from None
        logger.debug("Download failed: %s", type(exc).__name__)
        raise DownloadError("Failed to download video") from None


def _stream_to_file(response: httpx.Response, target: Path, max_bytes: int) -> None:
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise DownloadError("Video file exceeds the maximum allowed size")
    written = 0
    with target.open("wb") as out:
        for chunk in response.iter_bytes(_CHUNK_BYTES):
            written += len(chunk)
            if written > max_bytes:
                raise DownloadError("Video file exceeds the maximum allowed size")
            out.write(chunk)
    if written == 0:
        raise DownloadError("Failed to download video: empty file")
