"""The one exception tree of voxtrace, mapped onto the contract's error codes.

    VoxtraceError                     code             http  retryable
    ├── RequestError                  INVALID_REQUEST   400
    │   ├── JobConflict               JOB_CONFLICT      409
    │   ├── PayloadTooLarge           PAYLOAD_TOO_LARGE 413
    │   └── RateLimited               RATE_LIMITED      429
    ├── Unauthorized                  UNAUTHORIZED      401
    ├── JobNotFound                   JOB_NOT_FOUND     404
    ├── CapacityExceeded              INSUFFICIENT_RESOURCES 503
    ├── StoreUnavailable              INSUFFICIENT_RESOURCES 503  yes (Retry-After)
    └── JobError        (a job's terminal failure, sent in the `failed` callback)
        ├── DownloadError             DOWNLOAD_ERROR
        ├── AudioExtractionError      AUDIO_EXTRACTION_ERROR
        │   └── MediaTooLong          MEDIA_TOO_LONG
        ├── TranscriptionError        TRANSCRIPTION_ERROR
        ├── ProcessingTimeout         PROCESSING_TIMEOUT
        ├── InsufficientResources     INSUFFICIENT_RESOURCES   (transient: retried)
        └── InternalError             INTERNAL_ERROR

Every message here is safe to show to a client: generic, no paths, no library text.
Library errors are translated into this tree where the I/O happens (fetch, audio,
models), and `classify_exception` is the last line for anything that slipped through.
"""

from __future__ import annotations

import errno

__all__ = [
    "AudioExtractionError",
    "CapacityExceeded",
    "DownloadError",
    "InsufficientResources",
    "InternalError",
    "JobConflict",
    "JobError",
    "JobNotFound",
    "MediaTooLong",
    "PayloadTooLarge",
    "ProcessingTimeout",
    "RateLimited",
    "RequestError",
    "StoreUnavailable",
    "TranscriptionError",
    "Unauthorized",
    "VoxtraceError",
    "classify_exception",
]


class VoxtraceError(Exception):
    """Base of every error voxtrace raises on purpose."""

    code = "INTERNAL_ERROR"
    http_status = 500
    retryable = False
    default_message = "Internal error"

    def __init__(
        self,
        message: str | None = None,
        *,
        job_id: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.job_id = job_id
        self.retry_after_s = retry_after_s  # for 429/503 answers: sent as Retry-After
        super().__init__(self.message)


class RequestError(VoxtraceError):
    code = "INVALID_REQUEST"
    http_status = 400
    default_message = "Invalid request"


class JobConflict(RequestError):
    code = "JOB_CONFLICT"
    http_status = 409
    default_message = "A job with this job_id already exists with a different video_url"


class PayloadTooLarge(RequestError):
    code = "PAYLOAD_TOO_LARGE"
    http_status = 413
    default_message = "Request body too large"


class RateLimited(RequestError):
    code = "RATE_LIMITED"
    http_status = 429
    default_message = "Too many requests"


class Unauthorized(VoxtraceError):
    code = "UNAUTHORIZED"
    http_status = 401
    default_message = "Missing or invalid API key"


class JobNotFound(VoxtraceError):
    code = "JOB_NOT_FOUND"
    http_status = 404
    default_message = "Job not found"


class CapacityExceeded(VoxtraceError):
    code = "INSUFFICIENT_RESOURCES"
    http_status = 503
    default_message = "Too many unfinished jobs; retry later"


class StoreUnavailable(VoxtraceError):
    """The job store cannot be reached or written (a full disk, a locked or deleted
    SQLite file, PostgreSQL down or timing out): nothing was written, asking again later
    may work. Raised by each store backend where its I/O fails."""

    code = "INSUFFICIENT_RESOURCES"
    http_status = 503
    retryable = True
    default_message = "Job store unavailable; retry later"
    default_retry_after_s = 5.0

    def __init__(
        self,
        message: str | None = None,
        *,
        job_id: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(
            message,
            job_id=job_id,
            retry_after_s=self.default_retry_after_s if retry_after_s is None else retry_after_s,
        )


class JobError(VoxtraceError):
    """A failure that ends a job: its code and message go into the `failed` callback.

    `retryable` errors send the job back to the queue while attempts remain; the rest
    end it at once (a missing file stays missing). Crashed workers are always retried.
    """


class DownloadError(JobError):
    code = "DOWNLOAD_ERROR"
    default_message = "Failed to download video"


class AudioExtractionError(JobError):
    code = "AUDIO_EXTRACTION_ERROR"
    default_message = "Audio extraction failed"


class MediaTooLong(AudioExtractionError):
    code = "MEDIA_TOO_LONG"
    default_message = "Media is longer than the allowed maximum"


class TranscriptionError(JobError):
    code = "TRANSCRIPTION_ERROR"
    default_message = "Speech recognition failed"


class ProcessingTimeout(JobError):
    code = "PROCESSING_TIMEOUT"
    default_message = "Processing took too long"


class InsufficientResources(JobError):
    code = "INSUFFICIENT_RESOURCES"
    retryable = True
    default_message = "Not enough resources to process the job"


class InternalError(JobError):
    code = "INTERNAL_ERROR"
    default_message = "Internal processing error"


def classify_exception(exc: BaseException) -> JobError:
    """Translate any exception into a JobError with a client-safe message."""
    if isinstance(exc, JobError):
        return exc
    if isinstance(exc, MemoryError):
        return InsufficientResources("Out of memory while processing")
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientResources("Out of disk space while processing")
    return InternalError()
