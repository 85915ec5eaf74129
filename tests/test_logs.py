"""Log lines: JSON when asked, and the job they are about on every job line."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from voxtrace.logs import JsonFormatter, RedactingFilter, job_context


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter(["s3cr3t-value"]))
    logger = logging.getLogger("voxtrace.test-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def _records(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_inside_a_job_carries_its_id_though_it_does_not_name_it(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    with job_context("job-1"):
        logger.info("Found %d speech regions", 3)
    logger.info("worker %s ready", "n/1/0.1")
    first, second = _records(stream)
    assert first["job_id"] == "job-1" and first["message"] == "Found 3 speech regions"
    assert "job_id" not in second


def test_job_lines_name_their_job_even_outside_a_job_context(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.warning("job %s: lease lapsed; queued again (attempt %d done)", "job-2", 1)
    logger.info("callback %s:%s (%s) delivered", "job-3", 4, "completed")
    assert [r["job_id"] for r in _records(stream)] == ["job-2", "job-3"]


def test_redaction_still_applies_and_keeps_the_job_id(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.info("job %s: fetching %s", "job-4", "https://h/v.mp4?X-Amz-Signature=s3cr3t-value")
    (record,) = _records(stream)
    assert record["job_id"] == "job-4"
    assert "s3cr3t-value" not in json.dumps(record)


def test_the_context_belongs_to_its_thread(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    with job_context("job-5"):
        other = threading.Thread(target=logger.info, args=("from another thread",))
        other.start()
        other.join()
    (record,) = _records(stream)
    assert "job_id" not in record


def test_exceptions_are_one_field_of_one_line(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("job %s: unexpected error", "job-6")
    (record,) = _records(stream)
    assert record["job_id"] == "job-6" and "ValueError: boom" in str(record["exception"])
