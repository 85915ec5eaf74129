"""Shared fixtures: test data paths and ONE loaded Whisper model per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers import SECRET
from voxtrace.config import get_settings
from voxtrace.devbackend import DevBackend, ServerThread
from voxtrace.models import ModelBundle, ensure_bundled_whisper_base, load_whisper

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

DATA_DIR = Path(__file__).parent / "data"


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
