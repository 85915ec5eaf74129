"""Retry policy as pure functions, shared by callback delivery and job retries.

Exponential backoff with jitter (so a fleet of retries does not arrive in lockstep),
and one place that says which HTTP answers are worth repeating: a server error or an
overload may pass, a 4xx that says "your request is wrong" will not.
"""

from __future__ import annotations

import email.utils
import math
import random

__all__ = [
    "RETRYABLE_4XX_STATUSES",
    "compute_backoff",
    "is_retryable_status",
    "parse_retry_after",
]

# 408 Request Timeout, 425 Too Early and 429 Too Many Requests say "try again later";
# every other 4xx says the request itself is wrong, and repeating it cannot help.
RETRYABLE_4XX_STATUSES = frozenset({408, 425, 429})


def compute_backoff(
    attempt: int,
    base_s: float,
    cap_s: float,
    jitter: float = 1.0,
    rng: random.Random | None = None,
) -> float:
    """Delay in seconds before retry number `attempt` (1 = the first retry).

    The undisturbed delay is `base_s * 2 ** (attempt - 1)`, capped at `cap_s`.
    `jitter` in [0, 1] removes a random share of it: 0 = none (deterministic),
    1 = "full jitter" (uniform in [0, delay]), 0.2 = uniform in [0.8 delay, delay].
    """
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    if base_s < 0 or cap_s < 0:
        raise ValueError("base_s and cap_s must not be negative")
    if not 0.0 <= jitter <= 1.0:
        raise ValueError("jitter must be within [0, 1]")
    # 2 ** 1100 overflows a float; past the cap the exponent no longer matters.
    exponent = min(attempt - 1, 1000)
    delay = min(cap_s, base_s * math.pow(2.0, exponent)) if base_s > 0 else 0.0
    if jitter == 0.0 or delay == 0.0:
        return delay
    draw = (rng or random).random()
    return delay * (1.0 - jitter * draw)


def is_retryable_status(status_code: int) -> bool:
    """True for answers that may succeed later: 5xx, 408, 425 and 429.

    The one HTTP rule, for callbacks to the backend and for video downloads alike (an
    error of ours is retryable by its class: `errors.Retryable`).

    Everything else is final: 2xx is success, and 1xx/other 4xx will not change by
    asking again. Callback delivery decides 3xx itself before asking (callbacks.py:
    a 307/308 within the allowed destinations is followed, any other is retried).
    """
    return status_code >= 500 or status_code in RETRYABLE_4XX_STATUSES


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP-date).

    None when absent or unreadable; never negative. The caller caps it.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a naive one is read as such
        return None
    return max(0.0, when.timestamp() - now)
