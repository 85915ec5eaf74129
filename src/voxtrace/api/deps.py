"""The API's request dependencies, typed with `Annotated` so a route names what it needs:

    def get_job(job_id: str, store: Store, settings: AppSettings) -> JobPublic

Everything a route needs comes from `app.state`, set once by `create_app`: the routes
hold no closure over the factory's arguments and can be read (and tested) on their own.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from voxtrace.api.limits import TokenBucketLimiter
from voxtrace.config import Settings
from voxtrace.errors import RateLimited, Unauthorized
from voxtrace.store.base import JobStore

__all__ = [
    "AppSettings",
    "Authorized",
    "DataDir",
    "DataDirGuard",
    "HasApiKey",
    "Limited",
    "Store",
    "has_api_key",
]


def get_store(request: Request) -> JobStore:
    store: JobStore = request.app.state.store
    return store


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


Store = Annotated[JobStore, Depends(get_store)]
AppSettings = Annotated[Settings, Depends(get_settings)]


def rate_limit(request: Request) -> None:
    """One token bucket per client address (`app.state.limiter`)."""
    limiter: TokenBucketLimiter = request.app.state.limiter
    client = request.client.host if request.client else "unknown"
    allowed, wait_s = limiter.allow(client)
    if not allowed:
        raise RateLimited(retry_after_s=wait_s)


def has_api_key(request: Request, settings: AppSettings) -> bool:
    """Constant-time check of `X-API-Key` (or `Authorization: Bearer`); True when no
    key is configured."""
    if settings.api_key is None:
        return True
    given = request.headers.get("x-api-key", "")
    auth = request.headers.get("authorization", "")
    if not given and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    expected = settings.api_key.get_secret_value()
    return hmac.compare_digest(given.encode(), expected.encode())


HasApiKey = Annotated[bool, Depends(has_api_key)]


def require_api_key(has_key: HasApiKey) -> None:
    if not has_key:
        raise Unauthorized()


class DataDirGuard:
    """Notices the data dir being deleted or replaced under a running server (the
    SQLite file and the jobs' work files live there): from then on the server is not
    ready and refuses submissions, instead of writing into files nobody can see."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._identity = self._stat()  # None: there was none at start; nothing to watch

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.data_dir)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def ok(self) -> bool:
        return self._identity is None or self._stat() == self._identity


def get_data_dir(request: Request) -> DataDirGuard:
    guard: DataDirGuard = request.app.state.data_dir
    return guard


DataDir = Annotated[DataDirGuard, Depends(get_data_dir)]


Limited = Depends(rate_limit)
Authorized = Depends(require_api_key)
