"""Probe media and decode its audio to 16 kHz mono float32 with ffmpeg.

ffmpeg runs as a subprocess with a timeout (a thread cannot interrupt it) and a decode
cap of `max_duration_s + 1` seconds, so a file that claims to be short but decodes for
hours cannot run away. ffmpeg's stderr may contain paths: it goes to debug logs only.
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from voxtrace.errors import (
    AudioExtractionError,
    InsufficientResources,
    MediaTooLong,
    ProcessingTimeout,
)

__all__ = ["SAMPLE_RATE", "AudioOptions", "MediaInfo", "extract_audio", "probe"]

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
_PCM_FILE = "audio.s16le"
_NO_SPACE_MARKERS = ("No space left on device", "Disk quota exceeded")
_NO_STREAM_MARKERS = ("does not contain any stream", "matches no streams")


@dataclass(frozen=True)
class AudioOptions:
    """Limits of the audio stage: ffmpeg's wall time, and the longest media accepted."""

    ffmpeg_timeout_s: float = 600.0
    max_duration_s: float = 60 * 60.0


@dataclass(frozen=True)
class MediaInfo:
    duration_s: float | None  # None when the container does not say
    has_audio: bool
    format_name: str
    audio_codec: str | None


def _with_parent(cmd: list[str]) -> list[str]:
    """Have the kernel kill ffmpeg when its worker dies (kill -9, time limit, memory cap):
    the timeout below lives in the worker, so an orphan would otherwise run unbounded."""
    setpriv = shutil.which("setpriv")
    if setpriv is None or shutil.which(cmd[0]) is None:
        return cmd  # (a missing ffmpeg must still read as FileNotFoundError)
    return [setpriv, "--pdeathsig", "KILL", "--", *cmd]


def _run(cmd: list[str], timeout_s: float, what: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            _with_parent(cmd), capture_output=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        raise ProcessingTimeout(f"{what} took too long") from None
    except FileNotFoundError:
        logger.error("%s is not installed", cmd[0])
        raise AudioExtractionError("Audio extraction failed: decoder unavailable") from None


def _stderr_text(proc: subprocess.CompletedProcess[bytes]) -> str:
    return proc.stderr.decode("utf-8", errors="replace")[-4000:]


def probe(path: Path, timeout_s: float = 60.0) -> MediaInfo:
    """Read container duration and stream kinds with ffprobe."""
    cmd = [
        "ffprobe",
        "-v",
        "error",
        "-print_format",
        "json",
        "-show_format",
        "-show_streams",
        str(path),
    ]
    proc = _run(cmd, timeout_s, "Media probe")
    if proc.returncode != 0:
        logger.debug("ffprobe failed (%d): %s", proc.returncode, _stderr_text(proc))
        raise AudioExtractionError("Audio extraction failed: unreadable or unsupported file")
    try:
        info = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise AudioExtractionError("Audio extraction failed: unreadable file") from None
    streams = info.get("streams") or []
    fmt = info.get("format") or {}
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    duration = _as_duration(fmt.get("duration"))
    if duration is None and audio:
        duration = _as_duration(audio[0].get("duration"))
    return MediaInfo(
        duration_s=duration,
        has_audio=bool(audio),
        format_name=str(fmt.get("format_name", "")),
        audio_codec=str(audio[0].get("codec_name")) if audio else None,
    )


def _as_duration(value: object) -> float | None:
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return seconds if np.isfinite(seconds) and seconds >= 0 else None


def extract_audio(
    path: Path, work_dir: Path, timeout_s: float, max_duration_s: float
) -> npt.NDArray[np.float32]:
    """Decode the first audio stream to mono 16 kHz float32 samples in [-1, 1]."""
    work_dir.mkdir(parents=True, exist_ok=True)
    pcm_path = work_dir / _PCM_FILE
    cmd = [
        "ffmpeg",
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-i",
        str(path),
        "-map",
        "0:a:0",
        "-vn",
        "-sn",
        "-dn",
        "-ac",
        "1",
        "-ar",
        str(SAMPLE_RATE),
        "-t",
        f"{max_duration_s + 1:.3f}",
        "-f",
        "s16le",
        str(pcm_path),
    ]
    try:
        proc = _run(cmd, timeout_s, "Audio extraction")
        if proc.returncode != 0:
            stderr = _stderr_text(proc)
            logger.debug("ffmpeg failed (%d): %s", proc.returncode, stderr)
            if any(marker in stderr for marker in _NO_SPACE_MARKERS):
                raise InsufficientResources("Out of disk space while extracting audio")
            if any(marker in stderr for marker in _NO_STREAM_MARKERS):
                raise AudioExtractionError("Audio extraction failed: no audio stream")
            raise AudioExtractionError("Audio extraction failed: unreadable or unsupported file")
        pcm = np.fromfile(pcm_path, dtype="<i2")
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InsufficientResources("Out of disk space while extracting audio") from None
        logger.debug("Audio extraction I/O error: %s", type(exc).__name__)
        raise AudioExtractionError() from None
    finally:
        pcm_path.unlink(missing_ok=True)
    if pcm.size == 0:
        raise AudioExtractionError("Audio extraction failed: no audio decoded")
    if pcm.size > max_duration_s * SAMPLE_RATE:
        raise MediaTooLong()
    samples: npt.NDArray[np.float32] = pcm.astype(np.float32)
    samples /= 32768.0
    return samples
