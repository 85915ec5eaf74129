"""The one exception tree of voxtrace, mapped onto the contract's error codes.

    VoxtraceError                     code             http  retryable
    ├── RequestError                  INVALID_REQUEST   400
    │   ├── JobConflict               JOB_CONFLICT      409
    │   └── PayloadTooLarge           PAYLOAD_TOO_LARGE 413
    ├── RateLimited                   RATE_LIMITED      429  yes (Retry-After)
    ├── Unauthorized                  UNAUTHORIZED      401
    ├── JobNotFound                   JOB_NOT_FOUND     404
    └── JobError        (a job's terminal failure, sent in the `failed` callback)
        ├── DownloadError             DOWNLOAD_ERROR
        │   └── DownloadUnavailable   (a timeout, a 5xx, DNS try-again)  yes
        ├── AudioExtractionError      AUDIO_EXTRACTION_ERROR
        │   └── MediaTooLong          MEDIA_TOO_LONG
        ├── TranscriptionError        TRANSCRIPTION_ERROR
        ├── ProcessingTimeout         PROCESSING_TIMEOUT
        ├── InsufficientResources     INSUFFICIENT_RESOURCES 503  yes
        │   ├── CapacityExceeded      (submit: the queue bound, the disk floor)
        │   └── StoreUnavailable      (the job store is out; Retry-After 5 s)
        └── InternalError             INTERNAL_ERROR

Each code is declared by exactly one class (`CODE_CLASSES`); subclasses refine it.

"Retryable?" has one rule: an error is retryable when its class derives from
`Retryable` (`error.retryable` reads that and cannot be set on an instance). A retryable
job error sends the job back to the queue while attempts remain (with a backoff); a
retryable API error is answered with `Retry-After`. The other half of the question, the
backend's answers to our callbacks, is `retry.is_retryable_status` (5xx, 408, 425, 429).

Every message here is safe to show to a client: generic, no paths, no library text.
Library errors are translated into this tree where the I/O happens (fetch, audio,
models), and `classify_exception` is the last line for anything that slipped through.
"""

from __future__ import annotations

import errno

__all__ = [
    "CODE_CLASSES",
    "AudioExtractionError",
    "CapacityExceeded",
    "DownloadError",
    "DownloadUnavailable",
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
    "Retryable",
    "StoreUnavailable",
    "TranscriptionError",
    "Unauthorized",
    "VoxtraceError",
    "classify_exception",
]


class Retryable:
    """Mixin: errors of this class may pass on their own; asking again later can work."""


class VoxtraceError(Exception):
    """Base of every error voxtrace raises on purpose."""

    code = "INTERNAL_ERROR"
    http_status = 500
    default_message = "Internal error"

    @property
    def retryable(self) -> bool:
        """The one rule: the class says it (`Retryable`), never an instance."""
        return isinstance(self, Retryable)

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


class RateLimited(Retryable, VoxtraceError):
    """Not a RequestError: the request is fine, only too soon (Retry-After)."""

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


class JobError(VoxtraceError):
    """A failure that ends a job: its code and message go into the `failed` callback.

    `retryable` errors send the job back to the queue while attempts remain; the rest
    end it at once (a missing file stays missing). Crashed workers are always retried.
    """


class DownloadError(JobError):
    code = "DOWNLOAD_ERROR"
    default_message = "Failed to download video"


class DownloadUnavailable(Retryable, DownloadError):
    """A download that may work later (a timeout, a 5xx, DNS try-again); a missing file
    stays missing, so plain DownloadError is final."""


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


class InsufficientResources(Retryable, JobError):
    code = "INSUFFICIENT_RESOURCES"
    http_status = 503
    default_message = "Not enough resources to process the job"


class CapacityExceeded(InsufficientResources):
    """Submit refused for now: the queue bound, the disk floor."""

    default_message = "Too many unfinished jobs; retry later"


class StoreUnavailable(InsufficientResources):
    """The job store cannot be reached or written (a full disk, a locked or deleted
    SQLite file, PostgreSQL down or timing out): nothing was written, asking again later
    may work. Raised by each store backend where its I/O fails."""

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


class InternalError(JobError):
    code = "INTERNAL_ERROR"
    default_message = "Internal processing error"


def _declared_codes() -> dict[str, type[VoxtraceError]]:
    """Each code and the one class that declares it (the roots excepted)."""
    found: dict[str, type[VoxtraceError]] = {}
    pending: list[type[VoxtraceError]] = [VoxtraceError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls in (VoxtraceError, JobError) or "code" not in vars(cls):
            continue
        if cls.code in found:
            raise TypeError(f"{cls.code} declared by {found[cls.code]} and {cls}")
        found[cls.code] = cls
    return found


CODE_CLASSES: dict[str, type[VoxtraceError]] = _declared_codes()


def classify_exception(exc: BaseException) -> JobError:
    """Translate any exception into a JobError with a client-safe message."""
    if isinstance(exc, JobError):
        return exc
    if isinstance(exc, MemoryError):
        return InsufficientResources("Out of memory while processing")
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientResources("Out of disk space while processing")
    return InternalError()
