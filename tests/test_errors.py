"""The exception tree against the contract: one class per error code, one rule for
"retryable?", and the HTTP status each code is answered with."""

from __future__ import annotations

import pytest

from voxtrace import errors

# The codes SPEC.md names (error envelope and `failed` callback), plus UNAUTHORIZED for
# the optional API key. NOT_FOUND and METHOD_NOT_ALLOWED are routing answers (an unknown
# path or method), made by the API's handlers, never raised.
SPEC_CODES = {
    "INVALID_REQUEST": 400,
    "UNAUTHORIZED": 401,
    "JOB_NOT_FOUND": 404,
    "JOB_CONFLICT": 409,
    "PAYLOAD_TOO_LARGE": 413,
    "RATE_LIMITED": 429,
    "INSUFFICIENT_RESOURCES": 503,
    "INTERNAL_ERROR": 500,
    "DOWNLOAD_ERROR": None,
    "AUDIO_EXTRACTION_ERROR": None,
    "MEDIA_TOO_LONG": None,
    "TRANSCRIPTION_ERROR": None,
    "PROCESSING_TIMEOUT": None,
}


def _all_classes() -> list[type[errors.VoxtraceError]]:
    found, pending = [], [errors.VoxtraceError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def test_every_spec_code_maps_to_exactly_one_class() -> None:
    assert set(errors.CODE_CLASSES) == set(SPEC_CODES)
    for code, cls in errors.CODE_CLASSES.items():
        declaring = [c for c in _all_classes() if vars(c).get("code") == code]
        declaring = [c for c in declaring if c not in (errors.VoxtraceError, errors.JobError)]
        assert declaring == [cls], code
        # every other class with this code refines the one that declares it
        for other in _all_classes():
            if other.code == code and other not in (errors.VoxtraceError, errors.JobError):
                assert issubclass(other, cls), (code, other)


@pytest.mark.parametrize("code", [c for c, status in SPEC_CODES.items() if status is not None])
def test_each_api_code_has_its_http_status(code: str) -> None:
    assert errors.CODE_CLASSES[code].http_status == SPEC_CODES[code]


def test_retryable_is_the_class_and_cannot_be_set_on_an_instance() -> None:
    retryable = {c for c in _all_classes() if issubclass(c, errors.Retryable)}
    assert retryable == {
        errors.RateLimited,
        errors.InsufficientResources,
        errors.CapacityExceeded,
        errors.StoreUnavailable,
        errors.DownloadUnavailable,
    }
    for cls in _all_classes():
        assert cls().retryable is (cls in retryable), cls
    error = errors.DownloadError()
    with pytest.raises(AttributeError):
        error.retryable = True  # type: ignore[misc]


def test_rate_limited_is_not_a_request_error() -> None:
    """A RequestError says "your request is wrong": a 429 says "later", and a client
    that reads the tree must not give up on it."""
    assert not issubclass(errors.RateLimited, errors.RequestError)
    assert errors.RateLimited().retryable


def test_a_transient_download_failure_keeps_the_download_code() -> None:
    error = errors.classify_exception(errors.DownloadUnavailable("Failed to download video"))
    assert (error.code, error.retryable) == ("DOWNLOAD_ERROR", True)
    assert isinstance(error, errors.DownloadError)
