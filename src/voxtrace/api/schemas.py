"""Request and response bodies of the HTTP API (SPEC.md §1, plus the operator endpoints)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from voxtrace.domain import Job, JobStatus
from voxtrace.logs import redact_url
from voxtrace.netpolicy import ip_literal, is_forbidden_address

__all__ = [
    "ErrorBody",
    "ErrorEnvelope",
    "HealthPublic",
    "JobPublic",
    "ProcessVideoAccepted",
    "ProcessVideoRequest",
    "QueuePublic",
]

JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
MAX_URL_LENGTH = 4096
# In the OpenAPI schema and enforced, so what a client reads is exactly what is accepted:
# http(s), a host name or IPv4 address (no credentials), a port in 0..65535, no spaces.
_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
VIDEO_URL_PATTERN = (
    r"^[Hh][Tt][Tt][Pp][Ss]?://[A-Za-z0-9][A-Za-z0-9.-]*(?::"
    + _PORT
    + r")?(?:[/?#][^\s\x00-\x1f\x7f-\x9f]*)?$"
)
# C0 and C1 control characters (NUL, ESC, DEL, ...): they end up in logs, terminals and
# the downloader's request line, and no real URL carries them unencoded.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# The languages Whisper knows (faster-whisper's `tokenizer._LANGUAGE_CODES`; a test
# keeps the two equal). Anything else would fail only after download and decoding.
# fmt: off
WHISPER_LANGUAGES = frozenset((
    "af", "am", "ar", "as", "az", "ba", "be", "bg", "bn", "bo", "br", "bs", "ca", "cs", "cy",
    "da", "de", "el", "en", "es", "et", "eu", "fa", "fi", "fo", "fr", "gl", "gu", "ha", "haw",
    "he", "hi", "hr", "ht", "hu", "hy", "id", "is", "it", "ja", "jw", "ka", "kk", "km", "kn",
    "ko", "la", "lb", "ln", "lo", "lt", "lv", "mg", "mi", "mk", "ml", "mn", "mr", "ms", "mt",
    "my", "ne", "nl", "nn", "no", "oc", "pa", "pl", "ps", "pt", "ro", "ru", "sa", "sd", "si",
    "sk", "sl", "sn", "so", "sq", "sr", "su", "sv", "sw", "ta", "te", "tg", "th", "tk", "tl",
    "tr", "tt", "uk", "ur", "uz", "vi", "yi", "yo", "zh", "yue",
))
# fmt: on


def _any_case(word: str) -> str:
    return "".join(f"[{c.upper()}{c}]" for c in word)


# In the OpenAPI schema and enforced: "auto", one of Whisper's codes (any case), or "".
LANGUAGE_PATTERN = (
    "^(?:" + "|".join(_any_case(w) for w in ("auto", *sorted(WHISPER_LANGUAGES))) + ")?$"
)


class ProcessVideoRequest(BaseModel):
    """What the backend POSTs. Unknown keys are accepted and ignored (SPEC part 3)."""

    model_config = ConfigDict(extra="ignore")

    job_id: str = Field(pattern=JOB_ID_PATTERN, description="Unique job id (UUID or a safe id)")
    video_url: str = Field(
        min_length=1,
        max_length=MAX_URL_LENGTH,
        pattern=VIDEO_URL_PATTERN,
        description="http(s) URL of the video (an S3 presigned or plain object URL)",
    )
    fastapi_base_url: str | None = Field(
        None, description="Backend base URL for callbacks; used only when allowlisted"
    )
    language: str | None = Field(
        None,
        pattern=LANGUAGE_PATTERN,
        description='"auto" or a Whisper language code (ISO 639-1 such as "ko")',
    )
    num_speakers: int | None = Field(None, ge=1, le=32)
    min_speakers: int | None = Field(None, ge=1, le=32)
    max_speakers: int | None = Field(None, ge=1, le=32)
    # Caption shape; each overrides the language's default (README: caption rules).
    max_chars_per_line: int | None = Field(None, ge=8, le=200)
    max_lines: int | None = Field(None, ge=1, le=4)
    max_caption_s: float | None = Field(None, ge=1.0, le=30.0)
    max_chars_per_s: float | None = Field(
        None, ge=0.0, le=100.0, description="reading speed; 0 = cues end with the speech"
    )

    @field_validator("video_url", mode="before")
    @classmethod
    def _check_url(cls, value: object) -> object:
        """Clear messages for the common mistakes; the documented pattern decides the rest."""
        if not isinstance(value, str):
            return value
        if _CONTROL.search(value):
            raise ValueError("video_url must not contain control characters")
        try:
            parts = urlsplit(value)
        except ValueError as exc:
            raise ValueError("video_url is not a valid URL") from exc
        if parts.scheme not in ("http", "https"):
            raise ValueError("video_url must be an http(s) URL")
        if "@" in parts.netloc:
            raise ValueError("video_url must not contain credentials")
        # No DNS at submit time: names are checked when fetching, on what they resolve
        # to. Plain http is fetched only from operator-allowlisted hosts, which may be
        # private on purpose, so only an https literal address can be judged here.
        literal = ip_literal(parts.hostname or "")
        if parts.scheme == "https" and literal is not None and is_forbidden_address(literal):
            raise ValueError("video_url must not point at a private or reserved address")
        return value

    @field_validator("language")
    @classmethod
    def _check_language(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().lower()
        if value in ("", "auto"):
            return None
        if value not in WHISPER_LANGUAGES:
            raise ValueError('language must be "auto" or a language code Whisper knows')
        return value

    @field_validator(
        "num_speakers",
        "min_speakers",
        "max_speakers",
        "max_chars_per_line",
        "max_lines",
        "max_caption_s",
        "max_chars_per_s",
        mode="before",
    )
    @classmethod
    def _no_booleans(cls, value: object) -> object:
        """JSON `true` is not a number (the schema says number; pydantic would take it as 1)."""
        if isinstance(value, bool):
            raise ValueError("must be a number")
        return value

    @model_validator(mode="after")
    def _check_speakers(self) -> ProcessVideoRequest:
        lo, hi = self.min_speakers, self.max_speakers
        if lo is not None and hi is not None and lo > hi:
            raise ValueError("min_speakers must not exceed max_speakers")
        return self


class ProcessVideoAccepted(BaseModel):
    job_id: str
    status: str
    message: str
    estimated_time: int = Field(description="Estimated seconds until the result")
    progress: int = 0


class ErrorBody(BaseModel):
    code: str
    message: str
    job_id: str | None = None


class ErrorEnvelope(BaseModel):
    error: ErrorBody


class JobPublic(BaseModel):
    job_id: str
    status: str
    progress: int
    message: str
    video_url: str = Field(description="Redacted: no query string, no credentials")
    attempts: int
    retry_at: float | None = Field(
        None, description="A queued retry waits until this time (epoch seconds); else null"
    )
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    result: dict[str, Any] | None
    error: ErrorBody | None
    callbacks: list[dict[str, Any]]

    @classmethod
    def from_job(cls, job: Job, callbacks: Sequence[Mapping[str, Any]]) -> JobPublic:
        error = None
        if job.error_code:
            error = ErrorBody(
                code=job.error_code, message=job.error_message or "", job_id=job.job_id
            )
        return cls(
            job_id=job.job_id,
            status=job.status.value,
            progress=job.progress,
            message=job.message,
            video_url=redact_url(job.video_url),
            attempts=job.attempts,
            retry_at=job.not_before if job.status is JobStatus.ACCEPTED else None,
            created_at=job.created_at,
            updated_at=job.updated_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            result=job.result,
            error=error,
            callbacks=[dict(c) for c in callbacks],
        )


class QueuePublic(BaseModel):
    accepted: int
    processing: int
    completed: int
    failed: int
    unfinished: int
    capacity: int = Field(description="unfinished jobs accepted before submit answers 503")
    max_concurrent: int = Field(description="jobs processed at once per node, at most")
    running_slots: int = Field(description="jobs that run at once now (live workers)")
    estimated_wait_s: int = Field(description="wait before a job submitted now starts")
    callbacks_pending: int
    workers: list[dict[str, Any]]


class HealthPublic(BaseModel):
    status: str = Field(description='"ok" when ready to process jobs, else "degraded"')
    ready: bool
    checks: dict[str, bool]
    queue: QueuePublic
    version: str
