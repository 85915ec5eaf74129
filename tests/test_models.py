"""Model location and device choice, on the real bundled Whisper model and real CTranslate2."""

from __future__ import annotations

import logging
from pathlib import Path

import ctranslate2
import pytest

from voxtrace.models import whisper


@pytest.mark.skipif(ctranslate2.get_cuda_device_count() > 0, reason="needs a machine without CUDA")
def test_auto_device_falls_back_to_cpu_when_cuda_cannot_load(
    models_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Pretend CTranslate2 saw a GPU: the real CUDA load then fails on this machine, and
    # the worker must come up on the CPU instead of crash-looping.
    monkeypatch.setattr(whisper, "pick_device", lambda device: "cuda")
    with caplog.at_level(logging.WARNING):
        model = whisper.load_whisper("base", models_path, device="auto", cpu_threads=1)
    assert model.model.device == "cpu"
    assert "falling back to the CPU" in caplog.text


@pytest.mark.skipif(ctranslate2.get_cuda_device_count() > 0, reason="needs a machine without CUDA")
def test_explicit_cuda_is_not_silently_downgraded(models_path: Path) -> None:
    with pytest.raises((RuntimeError, ValueError)):
        whisper.load_whisper("base", models_path, device="cuda", cpu_threads=1)


def test_default_compute_types() -> None:
    assert whisper.pick_compute_type("default", "cpu") == "int8"
    assert whisper.pick_compute_type("default", "cuda") == "float16"
    assert whisper.pick_compute_type("int8_float16", "cuda") == "int8_float16"
