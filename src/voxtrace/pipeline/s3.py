"""Reading S3 objects: sign plain object URLs, take presigned ones as they are.

The backend usually sends a presigned URL (its query string is the credential). When it
sends a plain object URL instead (`https://bucket.s3.region.amazonaws.com/key`, the
path style, or the operator's own endpoint such as MinIO), the request is signed here
with SigV4 and the configured credentials. Signing happens inside the guarded
downloader, per request, and only for the URL's own host: a redirect elsewhere never
carries the Authorization header.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qsl, unquote, urlsplit

import httpx

from voxtrace.errors import DownloadError

if TYPE_CHECKING:
    from botocore.credentials import Credentials

__all__ = [
    "S3Object",
    "S3Options",
    "S3SigV4",
    "is_presigned",
    "object_auth",
    "parse_object_url",
    "presigned_expired",
]

logger = logging.getLogger(__name__)

DEFAULT_REGION = "us-east-1"
# bucket.s3.region.amazonaws.com, bucket.s3-region.amazonaws.com, bucket.s3.amazonaws.com
_VIRTUAL_HOST: Final = re.compile(
    r"^(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])\.s3(?:[.-](?P<region>[a-z0-9-]+))?"
    r"\.amazonaws\.com(?:\.cn)?$"
)
# s3.region.amazonaws.com/bucket/key, s3-region..., s3.amazonaws.com/bucket/key
_PATH_HOST: Final = re.compile(r"^s3(?:[.-](?P<region>[a-z0-9-]+))?\.amazonaws\.com(?:\.cn)?$")
_SIGNED_HEADERS: Final = ("Authorization", "X-Amz-Date", "X-Amz-Content-SHA256")
_SECURITY_TOKEN: Final = "X-Amz-Security-Token"


@dataclass(frozen=True)
class S3Options:
    """Where and as whom to read unsigned S3 object URLs.

    Without explicit keys, botocore's usual chain is used (AWS_ACCESS_KEY_ID /
    AWS_SECRET_ACCESS_KEY, shared files, instance role). `endpoint_url` names a
    non-AWS S3 API (MinIO, moto) whose URLs are path style: endpoint/bucket/key.
    """

    region: str | None = None
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str
    region: str  # the signing region


def is_presigned(url: str) -> bool:
    """True when the query already carries a signature (SigV4 or SigV2)."""
    names = {name.lower() for name, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True)}
    return "x-amz-signature" in names or "signature" in names


def presigned_expired(url: str, now_s: float | None = None) -> bool:
    """True when a presigned URL's own expiry has passed.

    S3 answers such a URL with 403 anyway; checking first makes the error certain and
    saves a request. A URL without a readable expiry is left for S3 to judge.
    """
    query = {name.lower(): value for name, value in parse_qsl(urlsplit(url).query)}
    now_s = time.time() if now_s is None else now_s
    try:
        if "x-amz-date" in query and "x-amz-expires" in query:
            signed = datetime.strptime(query["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            return now_s > signed.timestamp() + int(query["x-amz-expires"])
        if "expires" in query and "signature" in query:  # SigV2: an epoch second
            return now_s > int(query["expires"])
    except ValueError:
        return False
    return False


def parse_object_url(url: str, opts: S3Options) -> S3Object | None:
    """Bucket, key and signing region of an S3 object URL; None for anything else."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    path = unquote(parts.path)
    region = opts.region or DEFAULT_REGION
    if opts.endpoint_url:
        endpoint = urlsplit(opts.endpoint_url)
        if (parts.scheme, host, parts.port) == (
            endpoint.scheme,
            (endpoint.hostname or "").lower(),
            endpoint.port,
        ):
            return _path_style(path, region)
    if match := _VIRTUAL_HOST.match(host):
        key = path.lstrip("/")
        if not key:
            return None
        return S3Object(match["bucket"], key, _region_of(match["region"], region))
    if match := _PATH_HOST.match(host):
        return _path_style(path, _region_of(match["region"], region))
    return None


def _region_of(from_host: str | None, fallback: str) -> str:
    if from_host is None:
        return fallback
    return DEFAULT_REGION if from_host == "external-1" else from_host


def _path_style(path: str, region: str) -> S3Object | None:
    bucket, _, key = path.lstrip("/").partition("/")
    if not bucket or not key:
        return None
    return S3Object(bucket, key, region)


class S3SigV4(httpx.Auth):
    """httpx auth that signs each request with AWS SigV4 for S3 (header form)."""

    def __init__(self, credentials: Credentials, region: str) -> None:
        self._credentials = credentials
        self._region = region

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.exceptions import BotoCoreError

        aws = AWSRequest(method=request.method, url=str(request.url), headers={})
        try:  # refreshable (role) credentials may fail to refresh
            frozen = self._credentials.get_frozen_credentials()
            S3SigV4Auth(frozen, "s3", self._region).add_auth(aws)
        except BotoCoreError:
            logger.warning("Could not sign the S3 request: credentials unavailable")
            raise DownloadError(
                "Failed to download video: storage credentials unavailable"
            ) from None
        for name in (*_SIGNED_HEADERS, _SECURITY_TOKEN):
            if name in aws.headers:
                request.headers[name] = str(aws.headers[name])
        yield request


def object_auth(url: str, opts: S3Options) -> httpx.Auth | None:
    """The signer for a plain S3 object URL, or None (not S3, presigned, no keys)."""
    if is_presigned(url):
        return None
    target = parse_object_url(url, opts)
    if target is None:
        return None
    from botocore.exceptions import BotoCoreError

    try:
        credentials = _credentials(opts.access_key_id, opts.secret_access_key)
    except BotoCoreError:  # e.g. a malformed ~/.aws/config
        logger.warning("Could not load S3 credentials: fetching the object URL unsigned")
        return None
    if credentials is None:
        logger.info("No S3 credentials configured: fetching the object URL unsigned")
        return None
    return S3SigV4(credentials, target.region)


@functools.lru_cache(maxsize=8)
def _credentials(access_key_id: str | None, secret_access_key: str | None) -> Credentials | None:
    """Explicit keys, else botocore's chain; looked up once per process (the chain may
    probe the instance metadata service, which takes a while where there is none)."""
    from botocore.credentials import Credentials
    from botocore.session import get_session

    if access_key_id and secret_access_key:
        return Credentials(access_key_id, secret_access_key)
    found: Credentials | None = get_session().get_credentials()
    return found
