"""Reading S3 objects against a real S3 API on 127.0.0.1 (moto's server mode).

moto checks header signatures (SigV4) once its IAM auth is switched on, so plain object
URLs signed with the configured keys are tested with auth on. moto accepts any presigned
URL without checking it (and fails on them with auth on), so presigned URLs are tested
with auth off; the expiry of a presigned URL is therefore enforced by voxtrace itself
(S3 would answer 403 anyway).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.config import Config

from testing.helpers import free_port
from voxtrace.config import get_settings
from voxtrace.errors import DownloadError
from voxtrace.pipeline.fetch import FetchOptions, fetch
from voxtrace.pipeline.s3 import (
    S3Object,
    S3Options,
    is_presigned,
    parse_object_url,
    presigned_expired,
)
from voxtrace.wiring import pipeline_options

BUCKET = "media"
KEY = "videos/u1/my talk.mp4"
BODY = os.urandom(50_000)


@dataclass(frozen=True)
class Moto:
    endpoint: str
    access_key_id: str
    secret_access_key: str

    @property
    def object_url(self) -> str:  # path style, percent-encoded, no signature
        return f"{self.endpoint}/{BUCKET}/videos/u1/my%20talk.mp4"

    def s3_options(self, **overrides: str) -> S3Options:
        values = {
            "endpoint_url": self.endpoint,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            **overrides,
        }
        return S3Options(**values)

    def presign(self, expires_s: int, signature_version: str = "s3v4") -> str:
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            config=Config(signature_version=signature_version),
        )
        url: str = client.generate_presigned_url(
            "get_object", Params={"Bucket": BUCKET, "Key": KEY}, ExpiresIn=expires_s
        )
        return url

    def set_auth(self, on: bool) -> None:
        """moto's IAM checks: "0" = from the next request on; "inf" = never."""
        r = httpx.post(f"{self.endpoint}/moto-api/reset-auth", content=b"0" if on else b"inf")
        r.raise_for_status()


@pytest.fixture(scope="module")
def moto() -> Iterator[Moto]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    admin = {
        "endpoint_url": endpoint,
        "region_name": "us-east-1",
        "aws_access_key_id": "admin",
        "aws_secret_access_key": "admin",
    }
    s3 = boto3.client("s3", **admin)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=BODY)
    iam = boto3.client("iam", **admin)
    iam.create_user(UserName="voxtrace")
    key = iam.create_access_key(UserName="voxtrace")["AccessKey"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}],
    }
    iam.put_user_policy(UserName="voxtrace", PolicyName="read", PolicyDocument=json.dumps(policy))
    yield Moto(endpoint, key["AccessKeyId"], key["SecretAccessKey"])
    Moto(endpoint, "", "").set_auth(False)
    server.stop()


@pytest.fixture
def authenticated(moto: Moto) -> Iterator[Moto]:
    moto.set_auth(True)
    yield moto
    moto.set_auth(False)


def _opts(moto: Moto, s3: S3Options | None) -> FetchOptions:
    # The operator opens exactly the endpoint's host (plain http on 127.0.0.1).
    return FetchOptions(
        connect_timeout_s=5, read_timeout_s=10, allow_http_hosts=("127.0.0.1",), s3=s3
    )


# --------------------------------------------------------------- plain object URLs, signed here


def test_an_unsigned_object_url_is_read_with_the_configured_keys(
    authenticated: Moto, tmp_path: Path
) -> None:
    path = fetch(
        authenticated.object_url, tmp_path, _opts(authenticated, authenticated.s3_options())
    )
    assert path.read_bytes() == BODY
    assert path.suffix == ".mp4"


def test_without_keys_the_same_url_is_refused_by_s3(authenticated: Moto, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 403") as info:
        fetch(authenticated.object_url, tmp_path, _opts(authenticated, None))
    assert info.value.retryable is False


def test_the_settings_sign_and_open_the_endpoint(authenticated: Moto, tmp_path: Path) -> None:
    """VOXTRACE_S3_* settings alone: the endpoint host needs no separate allowlisting."""
    settings = get_settings(
        data_dir=tmp_path,
        s3_endpoint_url=authenticated.endpoint,
        s3_access_key_id=authenticated.access_key_id,
        s3_secret_access_key=authenticated.secret_access_key,
    )
    opts = pipeline_options(settings).fetch
    assert fetch(authenticated.object_url, tmp_path / "w", opts).read_bytes() == BODY
    assert authenticated.secret_access_key not in repr(opts)


@pytest.mark.parametrize("which", ["access_key_id", "secret_access_key"])
def test_wrong_credentials_are_a_permanent_download_error(
    authenticated: Moto, which: str, tmp_path: Path
) -> None:
    wrong = authenticated.s3_options(**{which: "AKIAWRONGWRONGWRONG00"})
    with pytest.raises(DownloadError, match="HTTP 403") as info:
        fetch(authenticated.object_url, tmp_path, _opts(authenticated, wrong))
    assert info.value.retryable is False
    assert list(tmp_path.iterdir()) == []


def test_a_missing_object_is_a_permanent_download_error(
    authenticated: Moto, tmp_path: Path
) -> None:
    url = f"{authenticated.endpoint}/{BUCKET}/videos/u1/nothing-here.mp4"
    with pytest.raises(DownloadError, match="HTTP 404") as info:
        fetch(url, tmp_path, _opts(authenticated, authenticated.s3_options()))
    assert info.value.retryable is False


# --------------------------------------------------------------- presigned URLs, used as given


@pytest.mark.parametrize("signature_version", ["s3v4", "s3"])
def test_a_presigned_url_is_fetched_as_it_is(
    moto: Moto, signature_version: str, tmp_path: Path
) -> None:
    url = moto.presign(300, signature_version)
    assert is_presigned(url)
    # No keys configured at all: the URL is its own credential.
    assert fetch(url, tmp_path, _opts(moto, None)).read_bytes() == BODY


@pytest.mark.parametrize("signature_version", ["s3v4", "s3"])
def test_an_expired_presigned_url_is_a_permanent_download_error(
    moto: Moto, signature_version: str, tmp_path: Path
) -> None:
    url = moto.presign(1, signature_version)
    time.sleep(2.1)
    with pytest.raises(DownloadError, match="expired") as info:
        fetch(url, tmp_path, _opts(moto, moto.s3_options()))
    assert info.value.retryable is False
    assert "Signature" not in str(info.value)


# --------------------------------------------------------------- URL forms (pure logic)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://bucket.s3.ap-northeast-2.amazonaws.com/videos/u/my%20talk.mp4",
            S3Object("bucket", "videos/u/my talk.mp4", "ap-northeast-2"),
        ),
        (
            "https://s3.eu-west-1.amazonaws.com/bucket/a/b.mp4",
            S3Object("bucket", "a/b.mp4", "eu-west-1"),
        ),
        ("https://my.bucket.s3.amazonaws.com/v.mp4", S3Object("my.bucket", "v.mp4", "us-west-2")),
        (
            "https://bucket.s3-us-west-1.amazonaws.com/v.mp4",
            S3Object("bucket", "v.mp4", "us-west-1"),
        ),
        ("https://s3.amazonaws.com/bucket/v.mp4", S3Object("bucket", "v.mp4", "us-west-2")),
        ("http://minio.local:9000/bucket/k/v.mp4", S3Object("bucket", "k/v.mp4", "us-west-2")),
        ("http://minio.local:9001/bucket/k/v.mp4", None),  # another port: not the endpoint
        ("https://bucket.s3.ap-northeast-2.amazonaws.com/", None),
        ("https://s3.eu-west-1.amazonaws.com/bucket", None),
        ("https://cdn.example.com/bucket/v.mp4", None),
        ("https://bucket.s3.amazonaws.com.evil.test/v.mp4", None),
    ],
)
def test_object_urls_are_recognised(url: str, expected: S3Object | None) -> None:
    opts = S3Options(region="us-west-2", endpoint_url="http://minio.local:9000")
    assert parse_object_url(url, opts) == expected


def test_presigned_urls_are_recognised_and_their_expiry_read() -> None:
    v4 = "https://b.s3.amazonaws.com/v.mp4?X-Amz-Date=20260101T000000Z&X-Amz-Expires=60&X-Amz-Signature=x"
    v2 = "https://b.s3.amazonaws.com/v.mp4?AWSAccessKeyId=A&Expires=1767225600&Signature=x"
    assert is_presigned(v4) and is_presigned(v2)
    assert not is_presigned("https://b.s3.amazonaws.com/v.mp4?versionId=3")
    start = 1767225600.0  # 2026-01-01T00:00:00Z
    assert not presigned_expired(v4, now_s=start + 59) and presigned_expired(v4, now_s=start + 61)
    assert not presigned_expired(v2, now_s=start) and presigned_expired(v2, now_s=start + 1)
    assert not presigned_expired(
        "https://b/v.mp4?X-Amz-Signature=x&X-Amz-Date=junk&X-Amz-Expires=1"
    )


def test_the_secret_key_is_not_in_reprs() -> None:
    opts = S3Options(access_key_id="AKIAEXAMPLE", secret_access_key="very-secret-key")
    assert "very-secret-key" not in repr(opts)
    assert "very-secret-key" not in repr(FetchOptions(s3=opts))
