"""Model loading and caching: everything that touches weights lives here.

Pipeline stages never load models; they are handed the objects of a `ModelBundle`.
The settings object is only a type here (duck-typed at run time), so importing this
package does not pull in the configuration layer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from voxtrace.models.whisper import (
    ensure_bundled_whisper_base,
    load_whisper,
    resolve_whisper_model,
)

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

    from voxtrace.config import Settings
    from voxtrace.models.emotion import EmotionModel
    from voxtrace.models.speaker import SpeakerModels
    from voxtrace.pipeline.runner import PipelineOptions

__all__ = [
    "SPEAKER_MODELS_DIR",
    "ModelBundle",
    "ensure_bundled_whisper_base",
    "load_models",
    "load_whisper",
    "pipeline_options",
    "prepare_models",
    "resolve_whisper_model",
]

logger = logging.getLogger(__name__)

SPEAKER_MODELS_DIR = "speaker"  # under models_path; scripts/export_speaker_models.py


@dataclass(frozen=True)
class ModelBundle:
    """The loaded models one worker uses; optional stages are skipped when None."""

    whisper: WhisperModel
    diarizer: SpeakerModels | None = None
    emotion: EmotionModel | None = None


def prepare_models(models_path: Path) -> dict[str, Path]:
    """Assemble the bundled models on disk (idempotent); returns name -> directory."""
    return {"whisper-base": ensure_bundled_whisper_base(models_path)}


def load_models(settings: Settings) -> ModelBundle:
    """Load every model a worker needs, once per process.

    Diarization and emotion are optional: when their weights are absent the worker still
    runs (one speaker, no emotion) and says so in the log.
    """
    threads = settings.threads_per_worker
    whisper = load_whisper(
        settings.whisper_model,
        settings.models_path,
        settings.device,
        settings.compute_type,
        threads,
    )
    return ModelBundle(
        whisper=whisper,
        diarizer=_load_diarizer(settings.models_path / SPEAKER_MODELS_DIR),
        emotion=_load_emotion(),
    )


def _load_diarizer(model_dir: Path) -> SpeakerModels | None:
    from voxtrace.models.speaker import SpeakerModelsMissing, load_speaker_models

    try:
        # One thread: diarization runs beside ASR on a worker's two cores.
        return load_speaker_models(model_dir, threads=1)
    except SpeakerModelsMissing:
        logger.warning("Speaker models not found: every word is attributed to SPEAKER_00")
        return None


def _load_emotion() -> EmotionModel:
    from voxtrace.models.emotion import load_emotion_model

    return load_emotion_model()


def pipeline_options(settings: Settings) -> PipelineOptions:
    """The pipeline's option records, built once from the settings."""
    from urllib.parse import urlsplit

    from voxtrace.pipeline.fetch import FetchOptions
    from voxtrace.pipeline.runner import AudioOptions, PipelineOptions
    from voxtrace.pipeline.s3 import S3Options
    from voxtrace.pipeline.transcribe import TranscribeOptions

    # The S3 endpoint is a host the operator named: it may be plain http and private.
    trusted = tuple(settings.allow_http_hosts)
    endpoint_host = urlsplit(settings.s3_endpoint_url or "").hostname
    if endpoint_host and endpoint_host not in trusted:
        trusted += (endpoint_host,)
    secret = settings.s3_secret_access_key
    return PipelineOptions(
        fetch=FetchOptions(
            max_bytes=settings.max_download_bytes,
            connect_timeout_s=min(10.0, settings.download_timeout_s),
            read_timeout_s=settings.download_timeout_s,
            total_timeout_s=settings.download_total_timeout_s,
            max_redirects=settings.max_redirects,
            allow_http_hosts=trusted,
            allow_download_hosts=tuple(settings.allow_download_hosts),
            s3=S3Options(
                region=settings.s3_region,
                endpoint_url=settings.s3_endpoint_url,
                access_key_id=settings.s3_access_key_id,
                secret_access_key=secret.get_secret_value() if secret else None,
            ),
        ),
        audio=AudioOptions(
            ffmpeg_timeout_s=settings.ffmpeg_timeout_s,
            max_duration_s=settings.max_media_duration_s,
        ),
        transcribe=TranscribeOptions(
            beam_size=settings.beam_size,
            candidate_languages=tuple(code.lower() for code in settings.languages),
        ),
    )
