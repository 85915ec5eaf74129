"""Settings: one validated object, built from the environment by `get_settings()`.

Nothing is read at import time; entry points call `get_settings()` once and pass the
object down. Every field maps to an environment variable `VOXTRACE_<NAME>`, except
`backend_url`, which is `BACKEND_URL` (the name the deployment already uses).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["Settings", "get_settings"]

CommaList = Annotated[tuple[str, ...], NoDecode]


def _default_workers() -> int:
    """One worker per two cores: each worker's models use two threads."""
    return max(1, (os.cpu_count() or 2) // 2)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VOXTRACE_", extra="ignore", frozen=True)

    # --- server
    host: str = "0.0.0.0"
    port: int = Field(8080, ge=1, le=65535)
    data_dir: Path = Path("data")
    # default: sqlite file in data_dir; may hold a database password: not shown or dumped
    store_url: str | None = Field(None, repr=False, exclude=True)
    node_id: str = Field(default_factory=socket.gethostname, pattern=r"^[A-Za-z0-9._-]{1,64}$")
    workers: int = Field(default_factory=_default_workers, ge=0, le=64)
    # Admission: jobs are accepted into the durable queue up to this many unfinished
    # (accepted + processing); only past it (or below the disk floor) does submit answer
    # 503. The deployed backend never retries a refused job, so the bound is large.
    max_queued_jobs: int = Field(1000, ge=1)
    # Processing: at most this many jobs run at once on this node (never more than the
    # worker processes): `workers` above it start only this many.
    max_concurrent_jobs: int = Field(10, ge=1)
    # Deprecated: read into max_queued_jobs (see `_deprecated_names`); always None here.
    max_active_jobs: int | None = Field(None, ge=1, exclude=True, repr=False)
    # A worker unseen for this long is not alive (/api/queue, /health, estimates); workers
    # report themselves at a third of it (at most every 5 s).
    worker_stale_s: float = Field(30.0, ge=0.5)
    max_body_bytes: int = Field(50 * 1024 * 1024, ge=1024)
    rate_limit_per_minute: int = Field(600, ge=1)
    rate_limit_burst: int = Field(100, ge=1)
    api_key: SecretStr | None = None  # off by default: the deployed backend sends none
    # --- the HTTP edge: what one client may hold (see api/serving.py)
    submit_max_body_bytes: int = Field(64 * 1024, ge=1024)  # ~300 B; max_body_bytes caps it
    body_timeout_s: float = Field(30, gt=0)  # a request's whole body
    header_timeout_s: float = Field(10, gt=0)  # a request's line and headers
    keepalive_timeout_s: float = Field(5, gt=0)  # an idle kept-alive connection
    max_connections: int = Field(1000, ge=16)  # open connections; 503 past it
    max_pending_connections: int = Field(256, ge=8)  # waiting for headers; oldest closed
    trusted_proxies: CommaList = ()  # addresses whose X-Forwarded-For is believed

    # --- jobs
    job_timeout_s: float = Field(30 * 60, gt=0)
    max_attempts: int = Field(3, ge=1)
    lease_s: float = Field(60, ge=5)
    heartbeat_s: float = Field(20, gt=0)  # progress callback at least this often
    worker_max_rss_mb: int = Field(6000, ge=256)
    min_free_disk_mb: int = Field(500, ge=0)
    # A retryable failure (INSUFFICIENT_RESOURCES) waits base * 2**(attempt - 1), capped,
    # less up to 20 % jitter, before the next attempt; 0 retries at once.
    job_retry_backoff_base_s: float = Field(5.0, ge=0)
    job_retry_backoff_cap_s: float = Field(120.0, ge=0)

    # --- input
    max_download_bytes: int = Field(2 * 1024**3, ge=1)
    max_media_duration_s: float = Field(60 * 60, gt=0)
    download_timeout_s: float = Field(30, gt=0)  # connect/read inactivity
    download_total_timeout_s: float = Field(15 * 60, gt=0)  # the whole download
    max_redirects: int = Field(5, ge=0)
    allow_http_hosts: CommaList = ()  # plain http + no private-address check for these
    allow_download_hosts: CommaList = ()  # when set, the only hosts downloaded from
    ffmpeg_timeout_s: float = Field(600, gt=0)

    # --- S3 (unsigned object URLs are signed with these; presigned ones used as they are)
    s3_region: str | None = None  # default: the URL's region, else us-east-1
    s3_endpoint_url: str | None = None  # a non-AWS S3 API (MinIO); its host is trusted
    s3_access_key_id: str | None = None  # default: AWS_ACCESS_KEY_ID and botocore's chain
    s3_secret_access_key: SecretStr | None = None

    # --- callbacks
    backend_url: str = Field(
        "http://localhost:8000",
        validation_alias=AliasChoices("BACKEND_URL", "VOXTRACE_BACKEND_URL"),
    )
    callback_path: str = "/api/v1/ml/ml-results"
    callback_allowlist: CommaList = ()
    callback_secret: SecretStr | None = None
    callback_timeout_s: float = Field(10, gt=0)  # one attempt, all of it (not per read)
    callback_concurrency: int = Field(4, ge=1, le=64)  # attempts at once per destination
    callback_retry_window_s: float = Field(3600, ge=0)
    callback_backoff_base_s: float = Field(1.0, gt=0)
    callback_backoff_cap_s: float = Field(300.0, gt=0)
    send_progress: bool = True

    # --- operations
    log_format: Literal["text", "json"] = "text"  # json: one object a line, with job_id
    metrics_port: int = Field(0, ge=0, le=65535)  # `voxtrace worker` serves /metrics; 0: off

    # --- models
    whisper_model: str = "base"  # "base" = bundled; or a CTranslate2 dir, or a hub name
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compute_type: str = "default"  # default: int8 on CPU, float16 on CUDA
    beam_size: int = Field(5, ge=1, le=20)
    # Auto-detection chooses only among these ISO codes (empty = any language)
    languages: CommaList = ()
    cpu_threads: int = Field(0, ge=0)  # 0 = cores / workers
    model_dir: Path | None = None  # where assembled models live; default data_dir/models
    # off (VOXTRACE_DIARIZATION=off) is the only way to run without the speaker models:
    # every word then goes to SPEAKER_00; on, missing models stop the start-up
    diarization: bool = True

    @model_validator(mode="before")
    @classmethod
    def _deprecated_names(cls, data: object) -> object:
        """VOXTRACE_MAX_ACTIVE_JOBS (before 0.2) bounded the unfinished jobs admitted:
        it is read as VOXTRACE_MAX_QUEUED_JOBS unless that is set too."""
        if isinstance(data, dict) and "max_active_jobs" in data:
            data = dict(data)
            value = data.pop("max_active_jobs")
            if value is not None:
                data.setdefault("max_queued_jobs", value)
        return data

    @field_validator(
        "allow_http_hosts",
        "allow_download_hosts",
        "callback_allowlist",
        "trusted_proxies",
        "languages",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("backend_url")
    @classmethod
    def _check_backend_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("BACKEND_URL must be an http(s) URL")
        return value.rstrip("/")

    @field_validator("allow_http_hosts", "allow_download_hosts")
    @classmethod
    def _normalise_hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(v.lower().rstrip(".") for v in value)

    @field_validator("s3_endpoint_url")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("s3_endpoint_url must be an http(s) URL")
        return value.strip().rstrip("/")

    @field_validator("callback_allowlist")
    @classmethod
    def _normalise_allowlist(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(v.rstrip("/") for v in value)

    @field_validator("callback_path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        return value if value.startswith("/") else "/" + value

    @model_validator(mode="after")
    def _check_timing(self) -> Settings:
        if self.heartbeat_s >= 30:
            raise ValueError("heartbeat_s must be below 30 s (the contract's progress interval)")
        return self

    def secret_values(self) -> tuple[str, ...]:
        """The configured secrets, for the log filter to blank out wherever they appear
        (the job store URL's password included)."""
        secrets = (self.api_key, self.callback_secret, self.s3_secret_access_key)
        values = tuple(s.get_secret_value() for s in secrets if s is not None)
        try:
            store_password = urlsplit(self.store_url).password if self.store_url else None
        except ValueError:
            store_password = None
        return (*values, store_password) if store_password else values

    @property
    def node_prefix(self) -> str:
        """What every worker id of this node starts with (ids are `node/pid/slot`): how
        a node tells its own jobs and workers from other machines' in a shared store."""
        return f"{self.node_id}/"

    @property
    def store_location(self) -> str:
        return self.store_url or str(self.data_dir / "voxtrace.db")

    @property
    def work_path(self) -> Path:
        """Per-job temporary files; everything under it is removed after each job."""
        return self.data_dir / "work"

    @property
    def models_path(self) -> Path:
        return self.model_dir or self.data_dir / "models"

    @property
    def worker_processes(self) -> int:
        """Worker processes this node runs: one job each, so never more than
        `max_concurrent_jobs`."""
        return min(self.workers, self.max_concurrent_jobs)

    @property
    def worker_report_s(self) -> float:
        """How often a worker reports itself: well inside the staleness window."""
        return min(5.0, self.worker_stale_s / 3)

    @property
    def threads_per_worker(self) -> int:
        if self.cpu_threads:
            return self.cpu_threads
        return max(1, (os.cpu_count() or 2) // max(1, self.worker_processes))

    def callback_base_for(self, requested: str | None) -> str:
        """The base URL to call back: the request's own only when it is allowlisted."""
        if requested and requested.rstrip("/") in self.callback_allowlist:
            return requested.rstrip("/")
        return self.backend_url


def get_settings(**overrides: object) -> Settings:
    """Build and validate settings from the environment (and explicit overrides)."""
    return Settings(**overrides)  # type: ignore[arg-type]
