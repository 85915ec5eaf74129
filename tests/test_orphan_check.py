"""The session-end orphan check finds what the suite started and left running."""

from __future__ import annotations

import multiprocessing
import os
import time

from testing.helpers import SESSION_ENV, suite_processes


def _sleep() -> None:
    time.sleep(60)


def test_a_spawned_child_of_this_session_is_found_until_it_ends() -> None:
    token = os.environ[SESSION_ENV]
    child = multiprocessing.get_context("spawn").Process(target=_sleep, daemon=True)
    child.start()
    try:
        deadline = time.monotonic() + 30
        while child.pid not in [pid for pid, _ in suite_processes(token)]:
            assert time.monotonic() < deadline, "the child was not found"
            time.sleep(0.1)
        assert os.getpid() not in [pid for pid, _ in suite_processes(token)]
        assert suite_processes("another-session") == []
    finally:
        child.kill()
        child.join(10)
    assert child.pid not in [pid for pid, _ in suite_processes(token)]
