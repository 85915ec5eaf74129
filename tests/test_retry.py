"""The retry policy: backoff growth, jitter bounds, and which answers are worth repeating."""

from __future__ import annotations

import email.utils
import random

import pytest

from voxtrace.retry import (
    compute_backoff,
    is_retryable_status,
    parse_retry_after,
)


def test_backoff_doubles_up_to_the_cap_without_jitter() -> None:
    delays = [compute_backoff(n, base_s=1.0, cap_s=30.0, jitter=0.0) for n in range(1, 8)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_backoff_survives_huge_attempt_numbers() -> None:
    assert compute_backoff(10_000, base_s=0.5, cap_s=60.0, jitter=0.0) == 60.0


@pytest.mark.parametrize("jitter", [0.2, 0.5, 1.0])
def test_jitter_stays_within_its_share_and_spreads(jitter: float) -> None:
    rng = random.Random(7)
    delays = [
        compute_backoff(4, base_s=1.0, cap_s=100.0, jitter=jitter, rng=rng) for _ in range(500)
    ]
    assert all(8.0 * (1 - jitter) <= d <= 8.0 for d in delays)
    assert max(delays) - min(delays) > 8.0 * jitter * 0.8  # really random, across the range


def test_full_jitter_is_reproducible_with_a_seeded_rng() -> None:
    first = [compute_backoff(3, 1.0, 10.0, 1.0, random.Random(1)) for _ in range(3)]
    again = [compute_backoff(3, 1.0, 10.0, 1.0, random.Random(1)) for _ in range(3)]
    assert first == again


@pytest.mark.parametrize(
    ("attempt", "base_s", "cap_s", "jitter"),
    [(0, 1.0, 10.0, 0.0), (1, -1.0, 10.0, 0.0), (1, 1.0, 10.0, 1.5)],
)
def test_backoff_rejects_nonsense(attempt: int, base_s: float, cap_s: float, jitter: float) -> None:
    with pytest.raises(ValueError):
        compute_backoff(attempt, base_s, cap_s, jitter)


@pytest.mark.parametrize("code", [500, 502, 503, 504, 599, 408, 425, 429])
def test_server_errors_timeouts_and_throttling_are_retried(code: int) -> None:
    assert is_retryable_status(code)


@pytest.mark.parametrize("code", [400, 401, 403, 404, 409, 410, 413, 422, 301, 302])
def test_a_wrong_request_is_never_retried(code: int) -> None:
    assert not is_retryable_status(code)


def test_every_other_4xx_is_final() -> None:
    final = {code for code in range(400, 500) if not is_retryable_status(code)}
    assert final == set(range(400, 500)) - {408, 425, 429}


def test_retry_after_in_seconds_and_as_a_date() -> None:
    assert parse_retry_after("120", now=0.0) == 120.0
    assert parse_retry_after(" 7 ", now=0.0) == 7.0
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 90, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(90.0, abs=1.0)
    past = email.utils.formatdate(now - 90, usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "1.5e3"])
def test_unreadable_retry_after_is_ignored(value: str | None) -> None:
    assert parse_retry_after(value, now=0.0) is None
