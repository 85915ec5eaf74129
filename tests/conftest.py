"""Shared fixtures: test data paths and ONE loaded Whisper model per test session; and a
session-end check that no voxtrace process the suite started outlives it."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from testing.helpers import SECRET, SESSION_ENV, suite_processes
from testing.postgres import postgres_missing, scratch_schema
from voxtrace.config import get_settings
from voxtrace.devbackend import DevBackend, ServerThread
from voxtrace.models import ModelBundle, ensure_bundled_whisper_base, load_whisper

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

DATA_DIR = Path(__file__).parent / "data"
ORPHAN_GRACE_S = 10.0  # processes told to stop at teardown get this long to end


def pytest_configure(config: pytest.Config) -> None:
    """Mark every process the suite starts (they inherit the environment)."""
    os.environ.setdefault(SESSION_ENV, uuid.uuid4().hex)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when a voxtrace worker or server started by the suite is still alive
    (after a grace period), and end it: an orphan keeps a port, a store and the CPU."""
    if hasattr(session.config, "workerinput"):  # an xdist worker: the controller checks
        return
    token = os.environ[SESSION_ENV]
    deadline = time.monotonic() + ORPHAN_GRACE_S
    while (left := suite_processes(token)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if not left:
        return
    for pid, _ in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"  pid {pid}: {cmd[:200]}" for pid, cmd in left]
    message = "voxtrace processes started by the suite outlived it (now killed):\n"
    if reporter is not None:
        reporter.write_line(message + "\n".join(lines), red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA_DIR


@pytest.fixture(scope="session")
def models_path() -> Path:
    """The models `make setup` prepared (the default location, or VOXTRACE_MODEL_DIR).

    Whisper base is assembled here if missing (idempotent, about a second); the speaker
    models are exported by `make setup` (tests/test_diarize.py exports them if absent).
    """
    path = get_settings().models_path.resolve()
    ensure_bundled_whisper_base(path)
    return path


@pytest.fixture(scope="session")
def whisper_model(models_path: Path) -> WhisperModel:
    return load_whisper("base", models_path, device="cpu", compute_type="int8", cpu_threads=2)


@pytest.fixture(scope="session")
def bundle(whisper_model: WhisperModel) -> ModelBundle:
    return ModelBundle(whisper=whisper_model)


@pytest.fixture(scope="module")
def backend() -> Iterator[tuple[DevBackend, ServerThread]]:
    """A real callback receiver (the deployed backend's endpoints), one per test module."""
    receiver = DevBackend(secret=SECRET)
    thread = ServerThread(receiver.app).start()
    yield receiver, thread
    thread.stop()


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh schema of the test PostgreSQL, dropped afterwards (skips without one)."""
    missing = postgres_missing()
    if missing:
        pytest.skip(missing)
    with scratch_schema() as schema:
        yield schema
